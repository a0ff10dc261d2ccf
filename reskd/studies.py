"""Studies around the method, each built from an :class:`reskd.experiment.Experiment`'s runs: the first-stage
ablation (loss, input, size, epochs) and the validation choice of ``loss="auto"``, greedy growth of the chain, the
per-stage records, and the plain-ensemble baseline (equal weights, or stacking weights fit on validation).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Sequence

import pandas as pd
import torch
from torch import Tensor, nn

from .adaptive import Policy, StagedOutputs, evaluate_policy
from .experiment import AUTO, FEATURE_HEAD, TRAIN_SAMPLE, Experiment, ResKDRuns, stage_input
from .theory import explained_variance
from .metrics import agreement, residual_energy, top1
from .profiles import Arch, Profile
from .reskd import RESIDUAL_LOSSES, ResKDEnsemble
from .train import TrainConfig

AUTO_SEED = 0
PLAN_STAND_IN_LOSS = "mse"  # what a plan (Experiment.plan) lists the runs after an untrained loss ablation with
ABLATION_SPLITS = (TRAIN_SAMPLE, "val", "test")


@dataclass(frozen=True)
class StageOption:
    """One way to train the first res-student: its architecture, loss and epochs (None: the profile's)."""

    arch: Arch
    loss: str
    epochs: int | None = None

    @property
    def input(self) -> str:
        return stage_input(self.arch)

    @property
    def label(self) -> str:
        epochs = "" if self.epochs is None else f", {self.epochs} epochs"
        return f"{self.arch.label} on the {self.input}, {self.loss}{epochs}"


def _option_row(exp: Experiment, option: StageOption, seed: int, input: str | None) -> dict[str, Any]:
    train = exp.profile.student_train
    if option.epochs is not None:
        train = dataclasses.replace(train, epochs=option.epochs)
    runs = ResKDRuns(exp, loss=option.loss, input=input, train=train)
    ens = runs.ensemble([option.arch], seed)
    if exp.plan_has_untrained:  # a plan evaluates nothing that is not trained
        return {"option": option.label, "loss": option.loss, "seed": seed}
    records = stage_records({split: runs.staged(ens, split) for split in ABLATION_SPLITS}, exp.teacher_macs)
    before, after = records.iloc[0], records.iloc[1]
    row: dict[str, Any] = {"option": option.label, "arch": option.arch.label, "input": option.input,
                           "loss": option.loss, "epochs": option.epochs or train.epochs, "seed": seed,
                           "added_mmacs": (after["macs"] - before["macs"]) / 1e6}
    for split in ABLATION_SPLITS:
        tag = "train" if split == TRAIN_SAMPLE else split
        row[f"{tag}_top1_s0"], row[f"{tag}_top1"] = before[f"{split}_top1"], after[f"{split}_top1"]
        row[f"{tag}_gain"] = after[f"{split}_top1"] - before[f"{split}_top1"]
        row[f"{tag}_energy_s0"] = before[f"{split}_residual_energy"]
        row[f"{tag}_energy"] = after[f"{split}_residual_energy"]
        row[f"{tag}_energy_change_pct"] = 100.0 * (after[f"{split}_residual_energy"] / before[f"{split}_residual_energy"] - 1)
    return row


def ablate(exp: Experiment, options: Sequence[StageOption], *, seed: int = AUTO_SEED,
           input: str | None = None) -> pd.DataFrame:
    """Train (or load) S0 + S1 for every option and tabulate, on training images (a fixed sample), validation and
    test: S0's and S0+S1's top-1, the gain, the residual energy before and after, and S1's MACs."""
    return pd.DataFrame([_option_row(exp, option, seed, input) for option in options])


def ablate_losses(exp: Experiment, *, seed: int = AUTO_SEED, input: str | None = None) -> pd.DataFrame:
    """The first-stage ablation of every residual loss, with the profile's first res-student architecture."""
    arch = exp.profile.res_students[0]
    return ablate(exp, [StageOption(arch, loss) for loss in RESIDUAL_LOSSES], seed=seed, input=input)


def resolve_loss(exp: Experiment, loss: str | None = None, *, input: str | None = None) -> str:
    """``loss`` (default: the profile's), with ``"auto"`` resolved: the loss with the best validation top-1 in the
    first-stage ablation (:func:`ablate_losses`, seed :data:`AUTO_SEED`; its runs are loaded, or trained now)."""
    loss = loss or exp.profile.residual_loss
    if loss != AUTO:
        return loss
    table = ablate_losses(exp, seed=AUTO_SEED, input=input)
    if exp.plan_has_untrained:  # the pick is not known before the ablation is trained
        note = (f"the residual loss is picked on val after the loss ablation, once it (and the runs listed before "
                f"it) are trained; until then the runs after it are listed with {PLAN_STAND_IN_LOSS!r} in its place")
        if note not in exp.plan_notes:
            exp.plan_notes.append(note)
        return PLAN_STAND_IN_LOSS
    return pick_best(table, "loss")


def reskd_runs(exp: Experiment, *, loss: str | None = None, input: str | None = None, feature_index: int = -1,
               train: TrainConfig | None = None, student: Arch | None = None,
               focus: float | None = None) -> ResKDRuns:
    """:class:`reskd.experiment.ResKDRuns` with the loss resolved by :func:`resolve_loss` (``"auto"``: on
    validation)."""
    return ResKDRuns(exp, loss=resolve_loss(exp, loss, input=input), input=input, feature_index=feature_index,
                     train=train, student=student, focus=focus)


def pick_best(frame: pd.DataFrame, column: str, *, by: str = "val_top1") -> Any:
    """The value of ``column`` in the row with the highest ``by`` (validation top-1: never the test split)."""
    if by.startswith("test"):
        raise ValueError(f"choices are made on validation data; pick by a val_* column, not {by!r}.")
    if frame.empty:
        raise ValueError("nothing to pick from: the ablation table is empty.")
    return frame.loc[frame[by].idxmax(), column]


def other_options(profile: Profile, loss: str) -> list[StageOption]:
    """The ablation around the first res-student with loss ``loss``: the input (a light head on S0's last feature
    maps instead of the image), the size (half and twice the width) and the training length (twice the epochs)."""
    base = profile.res_students[0]
    return [StageOption(Arch(FEATURE_HEAD, 1.0), loss),
            StageOption(dataclasses.replace(base, width=base.width / 2), loss),
            StageOption(dataclasses.replace(base, width=base.width * 2), loss),
            StageOption(base, loss, epochs=2 * profile.student_train.epochs)]


def stage_records(staged_by_split: dict[str, StagedOutputs], teacher_macs: int) -> pd.DataFrame:
    """Per stage: top-1 and teacher agreement on each split, residual energy E_k (after stage k), cumulative MACs."""
    rows = []
    first = next(iter(staged_by_split.values()))
    for k in range(first.num_stages):
        row: dict[str, Any] = {"stage": k, "macs": first.cumulative_macs[k],
                               "pct_teacher": 100.0 * first.cumulative_macs[k] / teacher_macs}
        for split, st in staged_by_split.items():
            z = st.logits[k]
            row[f"{split}_top1"] = top1(z, st.labels)
            if st.teacher_logits is not None:
                row[f"{split}_agreement_teacher"] = agreement(z, st.teacher_logits)
                row[f"{split}_residual_energy"] = residual_energy(st.teacher_logits, z).item()
        rows.append(row)
    return pd.DataFrame(rows)


def grow(runs: ResKDRuns, candidates: Sequence[Arch], *, max_stages: int = 3, macs_budget: float | None = None,
         min_gain_per_mmac: float | None = None, seed: int = 0) -> tuple[ResKDEnsemble, pd.DataFrame]:
    """Add res-students greedily, each the candidate with the best validation gain per added MAC, until a rule fires:
    ``max_stages``, the cumulative MACs passing ``macs_budget`` (a fraction of the teacher's), or the validation
    top-1 gain per added million MACs falling below ``min_gain_per_mmac``. Only validation data is used to decide."""
    exp = runs.exp
    teacher_macs = exp.teacher_macs
    chosen: list[Arch] = []
    ens = runs.ensemble(chosen, seed)
    val = runs.staged(ens, "val")
    log = [{"stage": 0, "arch": runs.student.label, "val_top1": evaluate_policy(val, _all_stages(val))["top1"],
            "macs": val.cumulative_macs[-1], "decision": "student"}]
    while len(chosen) < max_stages:
        best = None
        for arch in candidates:
            trial = runs.ensemble(chosen + [arch], seed)
            st = runs.staged(trial, "val")
            top1 = evaluate_policy(st, _all_stages(st))["top1"]
            added = st.cumulative_macs[-1] - val.cumulative_macs[-1]
            gain = (top1 - log[-1]["val_top1"]) / max(added / 1e6, 1e-9)
            if macs_budget is not None and st.cumulative_macs[-1] > macs_budget * teacher_macs:
                continue
            if best is None or gain > best[0]:
                best = (gain, arch, trial, st, top1)
        if best is None:
            log.append({"stage": len(chosen) + 1, "decision": "stop: every candidate exceeds the MACs budget"})
            break
        gain, arch, trial, st, top1 = best
        if min_gain_per_mmac is not None and gain < min_gain_per_mmac:
            log.append({"stage": len(chosen) + 1, "arch": arch.label, "val_top1": top1, "macs": st.cumulative_macs[-1],
                        "decision": f"stop: gain {gain:.3f} points/MMAC < {min_gain_per_mmac:.3f}"})
            break
        chosen.append(arch)
        ens, val = trial, st
        log.append({"stage": len(chosen), "arch": arch.label, "val_top1": top1, "macs": st.cumulative_macs[-1],
                    "decision": f"added ({gain:.3f} points/MMAC)"})
    return ens, pd.DataFrame(log)


LEARNABILITY_LOSS = "mse"  # one recipe for every target of the learnability study: plain regression of the logits


def learnability(exp: Experiment, arch: Arch, *, seed: int = 0, feature_arch: Arch = Arch(FEATURE_HEAD),
                 splits: Sequence[str] = ("val", "test")) -> pd.DataFrame:
    """How much of each target one recipe fits (the theory chapter's learnability study): networks of ``arch``
    trained with MSE from the image to regress (a) the teacher's logits, (b) S0's, (c) the residual
    ``r = z_T - z_S0`` (a first res-student), and (c) again by ``feature_arch`` reading S0's last feature map.

    One row per target, input and split: ``explained_variance`` of the target's centered logits
    (:func:`reskd.theory.explained_variance`) and ``top1`` of what the prediction is used as: alone for (a) and (b),
    added to S0 for (c). Every network starts from the same seed's weights (see
    :meth:`reskd.experiment.Experiment.regressor`), so the rows differ in what they fit, not in luck."""
    s0 = exp.student("kd", seed=seed)
    runs = ResKDRuns(exp, loss=LEARNABILITY_LOSS, input="image")
    fitted = {"teacher": exp.regressor("teacher", arch, seed), "s0": exp.regressor("s0", arch, seed)}
    image_stage = runs.ensemble([arch], seed)
    feature_stage = runs.ensemble([feature_arch], seed)
    if exp.plan_has_untrained:  # a plan evaluates nothing that is not trained
        return pd.DataFrame()
    rows = []
    for split in splits:
        teacher = exp.teacher_logits(split)
        s0_logits, labels = exp.logits(s0, split)
        residual = teacher - s0_logits
        features = runs.staged(feature_stage, split)
        cases = [("teacher's logits z_T", "image", arch, teacher, exp.logits(fitted["teacher"], split)[0], False),
                 ("S0's logits z_S0", "image", arch, s0_logits, exp.logits(fitted["s0"], split)[0], False),
                 ("residual z_T - z_S0", "image", arch, residual, exp.logits(image_stage.stages[1], split)[0], True),
                 ("residual z_T - z_S0", "S0's last feature map", feature_arch, residual,
                  features.logits[1] - features.logits[0], True)]
        for target, input, network, y, prediction, added in cases:
            rows.append({"target": target, "input": input, "network": network.label, "split": split,
                         "explained_variance": explained_variance(y, prediction),
                         "top1": top1(s0_logits + prediction if added else prediction, labels),
                         "top1_of": "S0 + it" if added else "it alone"})
    return pd.DataFrame(rows)


def _all_stages(st: StagedOutputs) -> Policy:
    return Policy("max_prob", [math.inf] * (st.num_stages - 1))


PLAIN_SEED_OFFSET = 100  # plain-ensemble member i of seed s has weight seed s + 100 * i


def plain_members(exp: Experiment, archs: Sequence[Arch], seed: int = 0) -> list[nn.Module]:
    """Independently trained KD students with the architectures ``archs``; the i-th uses weight seed
    ``seed + PLAIN_SEED_OFFSET * i`` (so member 0 is the ResKD chain's own S0)."""
    return [exp.student("kd", arch=a, seed=seed + PLAIN_SEED_OFFSET * i) for i, a in enumerate(archs)]


PLAIN_WEIGHTINGS = ("equal", "val")
MEMBER_WEIGHT_STEPS = 50  # L-BFGS iterations; a handful of weights converge long before


def fit_member_weights(logits: Sequence[Tensor], labels: Tensor, steps: int = MEMBER_WEIGHT_STEPS) -> Tensor:
    """Non-negative weights ``w`` (one per member) that minimise the cross-entropy of ``sum_i w_i * logits[i]`` on
    held-out images (stacking); they start from equal averaging, and the test split must never be given here."""
    if not logits:
        raise ValueError("no member logits: give at least one member's (N x C) logits.")
    stacked = torch.stack([z.detach().float() for z in logits])
    raw = torch.full((len(logits),), math.log(math.expm1(1.0 / len(logits))), requires_grad=True)
    optimizer = torch.optim.LBFGS([raw], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        weights = nn.functional.softplus(raw)
        loss = nn.functional.cross_entropy(torch.einsum("m,mnc->nc", weights, stacked), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    return nn.functional.softplus(raw).detach()


def plain_ensemble_logits(exp: Experiment, archs: Sequence[Arch], split: str, seed: int = 0,
                          weighting: str = "equal") -> tuple[Tensor, Tensor]:
    """Combined logits of independently trained KD students with the architectures ``archs`` (the equal-cost
    ensemble baseline, members from :func:`plain_members`): averaged (``weighting="equal"``), or weighted by
    :func:`fit_member_weights` on the validation split (``"val"``), so that weak members cannot drag a strong one
    down."""
    if weighting not in PLAIN_WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}; choose one of {', '.join(PLAIN_WEIGHTINGS)}.")
    members = plain_members(exp, archs, seed)

    def member_logits(name: str) -> tuple[list[Tensor], Tensor]:
        """Each member's logits and the labels on ``name``, through the evaluation cache (so both weightings, and
        the validation pass that fits the weights, predict every member once)."""
        outs = [exp.logits(m, name) for m in members]
        return [o[0] for o in outs], outs[0][1]

    logits, labels = member_logits(split)
    if weighting == "equal":
        return torch.stack(logits).mean(0), labels
    weights = fit_member_weights(*member_logits("val"))
    return torch.einsum("m,mnc->nc", weights, torch.stack(logits)), labels
