"""The glue the chapters call: load the data, get trained models (load, resume or train them).

:class:`Experiment` turns a profile (:mod:`reskd.profiles`) into trained models through :mod:`reskd.artifacts` (one
folder per run, keyed by the whole configuration, including the training data's content fingerprint), so a chapter
loads what exists and trains what is missing.
"""
from __future__ import annotations

import dataclasses
import math
import os
import pickle
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd
import torch
from torch import Tensor, nn

from . import data as rdata
from .artifacts import run_dir, run_key, run_path

from .adaptive import Policy, StagedOutputs, collect, evaluate_policy
from .cache import TEACHER_CACHE_NAME, OutputCache
from .distill import CE, KD, Distiller
from .flops import count_macs
from .models import create_model
from .profiles import PROFILE_NAMES, PROFILES, Arch, Profile, get_profile, profile_banner  # noqa: F401 (re-exported)
from .metrics import agreement, residual_energy, top1
from .reskd import RESIDUAL_LOSSES, FeatureHead, ResidualDistiller, ResKDEnsemble, cumulative_sums
from .train import FitResult, TrainConfig, fit, is_finished, predict
from .utils import (RunLockedError, atomic_torch_save, progress, resolve_device, seed_everything, stable_hash,
                    state_dict_hash)

EVAL_BATCH_SIZE = 500
TRAIN_SAMPLE, TRAIN_SAMPLE_SIZE = "train-sample", 10_000  # statistics on training images use a fixed subset
EVAL_CACHE = "eval"


def cached_eval(model: nn.Module, loader: rdata.Loader, compute: Callable[[], Any]) -> Any:
    """``compute()`` (a frozen model's outputs on an evaluation loader), stored under the cache folder keyed by a hash
    of the model's weights and the loader's images, so chapters that evaluate the same models share the work."""
    wiring = [loader.view_key(0), getattr(model, "inputs", None), getattr(model, "feature_index", None)]
    path = rdata.cache_dir() / EVAL_CACHE / f"{state_dict_hash(model)}-{stable_hash(wiring)}.pt"
    if path.exists():
        try:
            return torch.load(path, weights_only=False)
        except (OSError, RuntimeError, EOFError, pickle.UnpicklingError):
            path.unlink(missing_ok=True)  # a damaged entry is recomputed
    value = compute()
    atomic_torch_save(value, path)
    return value


class MissingRunError(RuntimeError):
    """A run an :class:`Experiment` with ``train_missing=False`` needs is not trained."""


@dataclass
class Experiment:
    """A profile bound to a data root, an artifacts root and a device; hands out trained models."""

    profile: Profile
    data_root: str | os.PathLike | None = None
    artifacts: str | os.PathLike | None = None
    device: str | torch.device | None = "auto"
    retrain: bool = False
    progress: bool = True
    download: bool = False
    train_missing: bool = True  # False: a run that is not finished raises MissingRunError instead of training
    results: dict[str, FitResult] = field(default_factory=dict)
    specs: dict[str, dict[str, Any]] = field(default_factory=dict)
    _teachers: dict[int, nn.Module] = field(default_factory=dict, repr=False)
    _teacher_logits: dict[str, Tensor] = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.device = resolve_device(self.device)

    @cached_property
    def data(self) -> rdata.DataSplits:
        p = self.profile
        return rdata.load_dataset(p.dataset, self.data_root, val_size=p.val_size, split_seed=p.split_seed,
                                  download=self.download, train_subset=p.train_subset, test_subset=p.test_subset)

    @property
    def num_classes(self) -> int:
        return self.data.spec.num_classes

    @property
    def input_size(self) -> tuple[int, int, int]:
        return (3, self.data.spec.crop_size, self.data.spec.crop_size)

    def train_loader(self, config: TrainConfig) -> rdata.Loader:
        return rdata.Loader(self.data.train, self.data.spec, config.batch_size, train=True, seed=config.data_seed,
                            device=self.device)

    def eval_loader(self, split: str) -> rdata.Loader:
        """Un-augmented batches of ``split``: "train", "val", "test", or "train-sample" (a fixed random
        :data:`TRAIN_SAMPLE_SIZE`-image subset of the training split, for statistics on training data)."""
        splits = {"train": self.data.train, "val": self.data.val, "test": self.data.test}
        if split == TRAIN_SAMPLE:
            return rdata.Loader(self.train_sample, self.data.spec, EVAL_BATCH_SIZE, train=False, device=self.device)
        if split not in splits:
            raise ValueError(f"unknown split {split!r}; choose one of {', '.join([*splits, TRAIN_SAMPLE])}.")
        return rdata.Loader(splits[split], self.data.spec, EVAL_BATCH_SIZE, train=False, device=self.device)

    @cached_property
    def train_sample(self) -> rdata.ImageTensors:
        n = len(self.data.train)
        if n <= TRAIN_SAMPLE_SIZE:
            return self.data.train
        generator = torch.Generator().manual_seed(self.profile.split_seed)
        return self.data.train.subset(torch.randperm(n, generator=generator)[:TRAIN_SAMPLE_SIZE].sort().values)

    @property
    def output_cache(self) -> Path:
        """Where frozen models' outputs on each training view are cached."""
        return rdata.cache_dir() / "outputs"

    def build(self, arch: Arch, seed: int) -> nn.Module:
        seed_everything(seed)
        return create_model(arch.name, self.num_classes, width=arch.width)

    def _spec(self, role: str, arch: Arch, seed: int, config: TrainConfig, **extra: Any) -> dict[str, Any]:
        return {"dataset": self.profile.dataset, "data": self.data.train.fingerprint, "role": role,
                "arch": arch.name, "width": arch.width, "seed": seed, "train": config.to_dict(), **extra}

    def run(self, name: str, distiller: Distiller, spec: dict[str, Any], config: TrainConfig) -> FitResult:
        """Train (or load, or resume) one run described by ``spec``."""
        folder = run_path(spec, name, root=self.artifacts)
        if not self.train_missing and (self.retrain or not is_finished(folder)):
            raise MissingRunError(
                f"the run {folder.name} is not trained (and train_missing=False). Train it in the background with "
                f"`python -m reskd.experiment {self.profile.dataset} {self.profile.name} <jobs>` (see the README), "
                f"or pass train_missing=True to train it here.")
        folder = run_dir(spec, name, root=self.artifacts)
        result = fit(distiller, self.train_loader(config), config,
                     eval_loaders={"val": self.eval_loader("val"), "test": self.eval_loader("test")},
                     run_dir=folder, device=self.device, progress=self.progress, retrain=self.retrain,
                     run_info=spec)
        self.results[name], self.specs[name] = result, spec
        return result

    def training_table(self) -> pd.DataFrame:
        """One row per run this experiment trained or loaded: its role, architecture, seed, epochs, the validation
        and test top-1 of the last epoch beside the best epoch's (the best is the max over epochs: optimistic), and
        ``train_hours``, the wall-clock time its epochs took (training plus the per-epoch evaluation, as measured
        where it ran, on whatever else shared the machine)."""
        rows = []
        for name, result in self.results.items():
            spec, final, best = self.specs[name], result.summary.get("final", {}), result.summary.get("best", {})
            seconds = result.history["epoch_s"].sum() if "epoch_s" in result.history else float("nan")
            rows.append({"run": name, "role": spec["role"], "arch": Arch(spec["arch"], spec["width"]).label,
                         "loss": spec.get("loss"), "seed": spec["seed"], "epochs": spec["train"]["epochs"],
                         "val_top1": final.get("val_top1"), "test_top1": final.get("test_top1"),
                         "best_test_top1": best.get("test", {}).get("top1"),
                         "best_test_epoch": best.get("test", {}).get("epoch"), "train_hours": seconds / 3600})
        return pd.DataFrame(rows)

    def warm_teacher_cache(self, epochs: Sequence[int] | None = None) -> int:
        """Compute the teacher's outputs on the students' training views ahead of the students (each epoch of the
        student recipe is one view) and store them in the output cache that every KD student and res-student reads.

        Views already cached are skipped, and a view another process is computing right now is left to it, so two
        workers calling this split the views between them. Returns the number of views computed by this call."""
        p = self.profile
        loader = self.train_loader(p.student_train)
        cache = OutputCache(self.teacher(), self.output_cache, name=TEACHER_CACHE_NAME)
        cache.model.to(self.device)
        computed = 0
        for epoch in range(p.student_train.epochs) if epochs is None else epochs:
            key, num_samples = loader.view_key(epoch), len(loader.data)
            try:
                with cache.view_lock(key, wait=False):
                    if cache.is_stored(key, num_samples):
                        continue
                    loader.set_epoch(epoch)
                    for x, _, index in progress(loader, desc=f"teacher outputs, view {epoch + 1}", leave=False,
                                                enabled=self.progress):
                        cache(x.to(self.device), index, key, num_samples)
                    cache.flush()
                    computed += 1
            except RunLockedError:
                continue
        return computed

    def teacher_spec(self, seed: int = 0) -> dict[str, Any]:
        p = self.profile
        return self._spec("teacher", p.teacher, seed, p.teacher_train, loss="ce")

    def teacher(self, seed: int = 0) -> nn.Module:
        """The trained teacher (cross-entropy from scratch), loaded or trained once per experiment."""
        if seed not in self._teachers:
            p = self.profile
            self._teachers[seed] = self.run(f"teacher-{p.teacher.label}-s{seed}", CE(self.build(p.teacher, seed)),
                                            self.teacher_spec(seed), p.teacher_train).model
        return self._teachers[seed]

    def logits(self, model: nn.Module, split: str) -> tuple[Tensor, Tensor]:
        """``model``'s logits and the labels on an evaluation split, through the evaluation cache: every network a
        chapter compares is predicted once per split, however many tables and ensembles it appears in."""
        loader = self.eval_loader(split)
        return cached_eval(model, loader, lambda: predict(model, loader, device=self.device))

    def teacher_logits(self, split: str) -> Tensor:
        """The teacher's logits on an evaluation split, computed once (then read from the evaluation cache)."""
        if split not in self._teacher_logits:
            self._teacher_logits[split] = self.logits(self.teacher(), split)[0]
        return self._teacher_logits[split]

    def student_spec(self, kind: str, arch: Arch | None = None, seed: int = 0) -> dict[str, Any]:
        p = self.profile
        arch = arch or p.student
        if kind == "scratch":
            return self._spec("scratch", arch, seed, p.student_train, loss="ce")
        if kind == "kd":
            return self._spec("kd", arch, seed, p.student_train, loss="kd", temperature=p.temperature,
                              teacher=run_key(self.teacher_spec()))
        raise ValueError(f"unknown student kind {kind!r}; choose 'scratch' or 'kd'.")

    def student(self, kind: str = "kd", arch: Arch | None = None, seed: int = 0) -> nn.Module:
        """A student trained from scratch (``kind="scratch"``) or with Hinton KD from the teacher (``"kd"``)."""
        p = self.profile
        arch = arch or p.student
        spec = self.student_spec(kind, arch, seed)
        if kind == "kd":
            distiller: Distiller = KD(self.build(arch, seed), self.teacher(), temperature=p.temperature,
                                      cache_root=self.output_cache)
        else:
            distiller = CE(self.build(arch, seed))
        return self.run(f"{kind}-{arch.label}-s{seed}", distiller, spec, p.student_train).model


# ----------------------------------------------------------------------------------------------- ResKD
PLAIN_SEED_OFFSET = 100  # plain-ensemble member i of seed s has weight seed s + 100 * i
FEATURE_HEAD = "feature_head"  # Arch(FEATURE_HEAD, w): a FeatureHead with round(64 * w) channels on S0's features
FEATURE_HEAD_BASE_CHANNELS = 64


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    t = torch.tensor(values, dtype=torch.float64)
    return t.mean().item(), (t.std().item() if len(t) > 1 else 0.0)


class ResKDRuns:
    """ResKD stages and their baselines for one :class:`Experiment` (all through the artifact store).

    ``loss`` and ``input`` default to the profile's; ``loss="auto"`` means the loss with the best validation top-1
    in the first-stage ablation (:func:`ablate_losses`, seed ``AUTO_SEED``), trained on demand. ``train`` overrides
    the res-students' training recipe (default: the profile's student recipe).
    """

    def __init__(self, exp: Experiment, *, loss: str | None = None, input: str | None = None,
                 feature_index: int = -1, train: TrainConfig | None = None):
        self.exp, self.feature_index = exp, feature_index
        self.input = input or exp.profile.residual_input
        self.train = train or exp.profile.student_train
        loss = loss or exp.profile.residual_loss
        RESIDUAL_LOSSES.check(loss, extra=(AUTO,))
        self._loss = loss

    @property
    def loss(self) -> str:
        """The res-students' loss (``"auto"`` resolved by the validation ablation on first use)."""
        if self._loss == AUTO:
            self._loss = pick_best(ablate_losses(self.exp, seed=AUTO_SEED, input=self.input), "loss")
        return self._loss

    def _res_student(self, arch: Arch, s0: nn.Module, seed: int) -> nn.Module:
        seed_everything(seed)
        if arch.name == FEATURE_HEAD:
            channels = max(1, round(FEATURE_HEAD_BASE_CHANNELS * arch.width))
            return FeatureHead(s0.feature_channels[self.feature_index], self.exp.num_classes, channels=channels)
        return create_model(arch.name, self.exp.num_classes, width=arch.width)

    def ensemble(self, res_archs: Sequence[Arch], seed: int = 0) -> ResKDEnsemble:
        """S0 (the KD student of ``seed``) plus res-students ``res_archs``, each trained on the residual of the
        frozen ensemble before it (trained now when missing)."""
        exp, p = self.exp, self.exp.profile
        s0 = exp.student("kd", seed=seed)
        ens = ResKDEnsemble(s0, feature_index=self.feature_index)
        chain = [run_key(exp.student_spec("kd", seed=seed))]
        teacher = exp.teacher()
        for k, arch in enumerate(res_archs, start=1):
            kind = "features" if arch.name == FEATURE_HEAD else self.input
            spec = exp._spec(f"res{k}", arch, seed, self.train, loss=self.loss, input=kind,
                             temperature=p.temperature, teacher=run_key(exp.teacher_spec()), previous=list(chain),
                             feature_index=self.feature_index)
            distiller = ResidualDistiller(self._res_student(arch, s0, seed + 1000 * k), teacher, ens, loss=self.loss,
                                          input=kind, temperature=p.temperature, cache_root=exp.output_cache)
            epochs = "" if self.train == p.student_train else f"-e{self.train.epochs}"
            name = f"res{k}-{arch.label}-{self.loss}-{kind}{epochs}-s{seed}"
            stage = exp.run(name, distiller, spec, self.train).model
            ens = ResKDEnsemble(s0, list(ens.stages)[1:] + [stage], ens.inputs[1:] + [kind],
                                feature_index=self.feature_index)
            chain.append(run_key(spec))
        return ens.eval()

    def staged(self, ens: ResKDEnsemble, split: str) -> StagedOutputs:
        """Cumulative stage logits on ``split`` with the teacher's logits (for agreement and residual energy)."""
        if all(kind == "image" for kind in ens.inputs[1:]):
            # stages that read the image are predicted one network at a time, so S0 (the KD student, shared by every
            # ablation option and the plain ensemble) and each res-student run once per split; same sums as collect()
            outs = [self.exp.logits(stage, split) for stage in ens.stages]
            staged = StagedOutputs(torch.stack(cumulative_sums([z for z, _ in outs])), outs[0][1],
                                   ens.stage_macs(self.exp.input_size))
        else:
            loader = self.exp.eval_loader(split)
            staged = cached_eval(ens, loader, lambda: collect(ens, loader, device=self.exp.device))
        staged.teacher_logits = self.exp.teacher_logits(split)
        return staged


# ------------------------------------------------------------------------------------------- the ablation
AUTO = "auto"
AUTO_SEED = 0
ABLATION_SPLITS = (TRAIN_SAMPLE, "val", "test")


@dataclass(frozen=True)
class StageOption:
    """One way to train the first res-student: its architecture, loss and epochs (None: the profile's)."""

    arch: Arch
    loss: str
    epochs: int | None = None

    @property
    def input(self) -> str:
        return "features" if self.arch.name == FEATURE_HEAD else "image"

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
    records = stage_records({split: runs.staged(ens, split) for split in ABLATION_SPLITS},
                            count_macs(exp.teacher(), exp.input_size))
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
            StageOption(Arch(base.name, base.width / 2), loss),
            StageOption(Arch(base.name, base.width * 2), loss),
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
    teacher_macs = count_macs(exp.teacher(), exp.input_size)
    chosen: list[Arch] = []
    ens = runs.ensemble(chosen, seed)
    val = runs.staged(ens, "val")
    log = [{"stage": 0, "arch": exp.profile.student.label, "val_top1": evaluate_policy(val, _all_stages(val))["top1"],
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
                        "decision": f"stop: gain {gain:.3f} points/MMAC < {min_gain_per_mmac}"})
            break
        chosen.append(arch)
        ens, val = trial, st
        log.append({"stage": len(chosen), "arch": arch.label, "val_top1": top1, "macs": st.cumulative_macs[-1],
                    "decision": f"added ({gain:.3f} points/MMAC)"})
    return ens, pd.DataFrame(log)


def _all_stages(st: StagedOutputs) -> Policy:
    return Policy("max_prob", [math.inf] * (st.num_stages - 1))


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


JOBS = ("teacher", "teacher-cache", "scratch", "kd", "ablation", "reskd", "equal-cost", "plain")


def run_jobs(exp: Experiment, jobs: Sequence[str], seeds: Sequence[int] | None = None) -> None:
    """Train (or load) the runs behind ``jobs`` (see :data:`JOBS`) for ``seeds`` (default: the profile's), in the
    order given; every run is resumable, so an interrupted call picks up where it stopped."""
    p = exp.profile
    seeds = list(seeds) if seeds is not None else list(p.seeds)
    unknown = sorted(set(jobs) - set(JOBS))
    if unknown:
        raise ValueError(f"unknown job(s) {unknown}; choose from {', '.join(JOBS)}.")
    for job in jobs:
        if job == "teacher":
            exp.teacher()
        elif job == "teacher-cache":
            exp.warm_teacher_cache()
        elif job in ("scratch", "kd"):
            for seed in seeds:
                exp.student(job, seed=seed)
        elif job == "ablation":
            runs = ResKDRuns(exp)
            for option in other_options(p, runs.loss):
                ablate(exp, [option])
        elif job == "reskd":
            runs = ResKDRuns(exp)
            for seed in seeds:
                runs.ensemble(list(p.res_students), seed)
        elif job == "equal-cost":
            if p.equal_cost is None:
                raise ValueError(f"profile {p.name!r} has no equal-cost architecture.")
            for seed in seeds:
                exp.student("kd", arch=p.equal_cost, seed=seed)
        elif job == "plain":
            for seed in seeds:
                plain_members(exp, [p.student, *p.res_students], seed)


def main(argv: list[str] | None = None) -> None:
    """Train (or resume) a profile's runs from the command line, e.g. in the background before a chapter is run:

        python -m reskd.experiment cifar10 cpu teacher
        python -m reskd.experiment cifar10 cpu kd ablation reskd --seeds 0 1 2
        python -m reskd.experiment cifar10 cpu scratch equal-cost plain   # a second worker, on the other core
    """
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=sorted(PROFILES))
    parser.add_argument("profile", choices=PROFILE_NAMES)
    parser.add_argument("jobs", nargs="+", choices=JOBS, metavar="job", help=f"any of: {', '.join(JOBS)}")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default: the profile's seeds")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--retrain", action="store_true")
    args = parser.parse_args(argv)
    exp = Experiment(get_profile(args.dataset, args.profile), data_root=args.data_root, device=args.device,
                     retrain=args.retrain)
    run_jobs(exp, args.jobs, args.seeds)
    for name, result in exp.results.items():
        print(name, result.summary.get("final"))


if __name__ == "__main__":
    main()
