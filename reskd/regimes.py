"""The regime map: ways to build ResKD's res-students, each held against the cascade to the teacher and the
equal-cost KD student at the same mean MACs per test image.

A :class:`Regime` fixes the four axes the book varies: what a stage reads (the image, S0's last or an earlier feature
map), its size against S0 (lighter, as heavy, heavier), its objective (regression of the residual, or
*decision-focused*: a loss on the combined logits taken only over the samples the previous ensemble is least sure of,
the ones an exit rule sends on) and S0 itself (the profile's student, or a stronger one from the same teacher).
Only the first regime is the paper's reading (lighter res-students on the residual); the others are ours, and say so.

:func:`regime_budgets` evaluates one trained regime at matched budgets (thresholds calibrated on val, test only
reported), :func:`cascade_budgets` the cascade to the teacher, both through :func:`reskd.adaptive.at_budgets`, and
:func:`screen` tabulates them all. :func:`chain_to_teacher_rows` puts a regime's res-students inside the cascade, as
middle exits before the teacher (S0 -> S0 + S1 -> T, :func:`reskd.adaptive.cascade`), beside the two-tier cascade
at the same budgets and seeds; :func:`paired_verdicts` holds the two against each other seed by seed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import pandas as pd

from .adaptive import (Policy, StagedOutputs, at_budgets, calibrate, calibrate_per_stage, cascade, confidence,
                       evaluate_policy, exit_stages)
from .experiment import Experiment, MissingRunError, ResKDRuns, stage_input
from .metrics import correct, residual_energy, top1
from .profiles import Arch, Profile
from .registry import Registry
from .report import chain_to_teacher_name, model_record, paired_difference, reskd_records
from .reskd import ResKDEnsemble
from .studies import grow, reskd_runs
from .theory import sample_energy

#: Budgets of mean MACs per test image (% of the teacher's) at which regimes are compared: below, at and above the
#: paper's CIFAR-10 figure (18.04%).
BUDGETS_PCT = (12.5, 18.04, 25.0)
PROFILE_CHAIN = "chain"  # the name of a profile's own res-students as a regime (profile_chain)
SCREEN_SEEDS = (0,)  # regimes are screened on val with one seed; the best and every baseline then get three


@dataclass(frozen=True)
class Regime:
    """One way to build the res-students on top of S0 (``None`` fields: the profile's setting)."""

    name: str
    stages: tuple[Arch, ...]
    description: str
    reading: str  # "paper" (our reading of the paper) or "ours" (an alternative we test)
    student: Arch | None = None  # S0's architecture; None: the profile's student
    loss: str | None = None  # a residual loss; None: the profile's ("auto": chosen on val)
    focus: float | None = None  # train each stage on this least confident fraction of each batch
    feature_index: int = -1  # which of S0's feature maps a feature head reads

    def runs(self, exp: Experiment) -> ResKDRuns:
        """The :class:`reskd.experiment.ResKDRuns` that train (or load) this regime's stages."""
        return reskd_runs(exp, loss=self.loss, feature_index=self.feature_index, student=self.student,
                          focus=self.focus)

    def fields(self, exp: Experiment) -> dict[str, str]:
        """The regime's four axes in words, for the results file's ``regime`` field."""
        p = exp.profile
        student = self.student or p.student
        inputs = {stage_input(a) for a in self.stages}
        where = ("S0's last feature map" if self.feature_index == -1
                 else f"S0's feature map {self.feature_index} (counted from the last)")
        objective = ("residual regression" if self.focus is None else
                     f"decision-focused (loss on the combined logits over the {self.focus:.0%} least confident)")
        return {"input": " + ".join(sorted(where if i == "features" else "image" for i in inputs)),
                "size": ", ".join(a.label for a in self.stages), "objective": objective, "student": student.label}

    def label(self, exp: Experiment) -> str:
        f = self.fields(exp)
        where = f["input"] if f["input"].startswith("S0") else f"the {f['input']}"
        return f"{self.name}: S0={f['student']}; stages {f['size']} on {where}; {f['objective']}"


#: The CIFAR-10 regimes of the map, by name (screened on val with one seed).
CIFAR_REGIMES: Registry[Regime] = Registry("regime")


def _register(regime: Regime) -> None:
    CIFAR_REGIMES.register(regime.name, regime.description)(regime)


_LIGHT, _EQUAL, _HEAVY = Arch("resnet8", 0.5), Arch("resnet8"), Arch("resnet20")
_register(Regime("light-image", (_LIGHT, _LIGHT, _LIGHT),
                 "three res-students lighter than S0, on the image (the paper's reading)", "paper"))
_register(Regime("equal-image", (_EQUAL,), "one res-student as heavy as S0, on the image", "ours"))
_register(Regime("heavy-image", (_HEAVY,), "one res-student heavier than S0 (resnet20), on the image", "ours"))
_register(Regime("features-last", (Arch("feature_head"),), "a light head on S0's last feature map", "ours"))
_register(Regime("features-deep", (Arch("feature_head3"),), "a three-block head on S0's last feature map", "ours"))
_register(Regime("features-mid", (Arch("feature_head"),), "a light head on S0's middle feature map", "ours",
                 feature_index=-2))
_register(Regime("features-chain", (Arch("feature_head"),) * 3, "three light heads on S0's last feature map, chained",
                 "ours"))
_register(Regime("focus-equal", (_EQUAL,), "as heavy as S0, decision-focused on the 30% least confident", "ours",
                 loss="kd", focus=0.3))
_register(Regime("focus-heavy", (_HEAVY,), "resnet20, decision-focused on the 25% least confident", "ours",
                 loss="kd", focus=0.25))
_register(Regime("strong-s0", (_EQUAL,), "a stronger S0 (KD resnet14) with a resnet8 res-student", "ours",
                 student=Arch("resnet14")))


def profile_chain(profile: Profile) -> Regime:
    """A profile's own res-students (``profile.res_students``, on the image with the profile's loss) as a regime:
    our reading of the paper, as CIFAR-10's ``light-image``."""
    stages = ", ".join(a.label for a in profile.res_students)
    return Regime(PROFILE_CHAIN, tuple(profile.res_students), f"the profile's res-students ({stages}), on the image",
                  "paper")


def budgets_for(profile: Profile) -> tuple[float, ...]:
    """The budgets (% of the teacher's MACs) at which ``profile`` compares adaptive models: its own, else
    :data:`BUDGETS_PCT` (CIFAR-10's)."""
    return tuple(profile.budgets_pct) or BUDGETS_PCT


def regime_staged(exp: Experiment, regime: Regime, seed: int) -> dict[str, StagedOutputs]:
    """The regime's trained chain for ``seed`` (trained now when missing, unless ``exp.train_missing`` is False),
    as cumulative stage outputs on val and test."""
    runs = regime.runs(exp)
    ens: ResKDEnsemble = runs.ensemble(list(regime.stages), seed)
    return {split: runs.staged(ens, split) for split in ("val", "test")}


def static_rows(staged: dict[str, StagedOutputs], teacher_macs: int) -> pd.DataFrame:
    """Every static prefix S0..Sk of a chain (or of the cascade: S0, then the teacher for every sample): its MACs as %
    of the teacher's and its val and test top-1."""
    val, test = staged["val"], staged["test"]
    return pd.DataFrame([{"policy": f"static, {k + 1} stage(s)", "budget_pct": None,
                          "val_pct_teacher": 100.0 * val.cumulative_macs[k] / teacher_macs,
                          "test_pct_teacher": 100.0 * test.cumulative_macs[k] / teacher_macs,
                          "val_top1": top1(val.logits[k], val.labels), "test_top1": top1(test.logits[k], test.labels)}
                         for k in range(val.num_stages)])


def _budget_table(name: str, seed: int, staged: dict[str, StagedOutputs], teacher_macs: int,
                  budgets_pct: Sequence[float], criterion: str) -> pd.DataFrame:
    adaptive = at_budgets(staged["val"], staged["test"], budgets_pct, teacher_macs, criterion=criterion)
    adaptive.insert(0, "policy", [f"adaptive, {b:g}% budget" for b in adaptive["budget_pct"]])
    frame = pd.concat([static_rows(staged, teacher_macs), adaptive], ignore_index=True)
    frame.insert(0, "seed", seed)
    frame.insert(0, "regime", name)
    return frame


def regime_budgets(exp: Experiment, regime: Regime, seed: int, *, budgets_pct: Sequence[float] = BUDGETS_PCT,
                   criterion: str = "max_prob") -> pd.DataFrame:
    """One regime and seed: every static prefix of its chain, and at each budget the adaptive policy calibrated on
    val (its val and test top-1 and mean MACs; test is only reported)."""
    teacher_macs = exp.teacher_macs
    return _budget_table(regime.name, seed, regime_staged(exp, regime, seed), teacher_macs, budgets_pct, criterion)


CASCADE = "cascade"


def is_cascade(name: str) -> bool:
    """Whether a row of a budget table is a cascade to the teacher (from S0, or from another student), not a
    regime."""
    return name == CASCADE or name.startswith(f"{CASCADE} from ")


def cascade_staged(exp: Experiment, seed: int, *, student: Arch | None = None) -> dict[str, StagedOutputs]:
    """The cascade from the KD student of ``seed`` (default: the profile's S0) to the teacher, as staged outputs on
    val and test (:func:`reskd.adaptive.cascade`)."""
    runs = ResKDRuns(exp, loss="mse", student=student)  # the loss is unused: no res-student is built
    ens = runs.ensemble([], seed)
    teacher_macs = exp.teacher_macs
    return {split: cascade(runs.staged(ens, split), exp.teacher_logits(split), teacher_macs)
            for split in ("val", "test")}


def cascade_budgets(exp: Experiment, seed: int, *, student: Arch | None = None,
                    budgets_pct: Sequence[float] = BUDGETS_PCT, criterion: str = "max_prob",
                    staged: dict[str, StagedOutputs] | None = None) -> pd.DataFrame:
    """The cascade to the teacher, tabulated as :func:`regime_budgets` tabulates a regime (``staged``: its
    :func:`cascade_staged` outputs where the caller holds them already)."""
    teacher_macs = exp.teacher_macs
    label = CASCADE if student is None else f"{CASCADE} from {student.label}"
    staged = cascade_staged(exp, seed, student=student) if staged is None else staged
    return _budget_table(label, seed, staged, teacher_macs, budgets_pct, criterion)


CHAIN_TO_TEACHER = "chain-to-teacher"
#: The budgets (% of the teacher's MACs) at which CIFAR-10's chain-to-teacher is held against the two-tier cascade:
#: the map's three and two between, around the paper's 18.04%.
CHAIN_TEACHER_BUDGETS_PCT = (12.5, 15.0, 18.04, 22.0, 25.0)
THRESHOLD_MODES = ("shared", "per-stage")  # one threshold for every stage (calibrate), one each (calibrate_per_stage)


def chain_to_teacher_staged(exp: Experiment, regime: Regime, seed: int, *, stages: int | None = None,
                            chain: dict[str, StagedOutputs] | None = None) -> dict[str, StagedOutputs]:
    """The regime's chain (its first ``stages`` stages, default all) followed by the teacher, as staged outputs on
    val and test (:func:`reskd.adaptive.cascade`; ``chain``: the regime's :func:`regime_staged` outputs where the
    caller holds them)."""
    chain = regime_staged(exp, regime, seed) if chain is None else chain
    return {split: cascade(st, exp.teacher_logits(split), exp.teacher_macs, stages=stages)
            for split, st in chain.items()}


def routing(chain_t: StagedOutputs, chain_exits, two_tier: StagedOutputs, cascade_exits,
            teacher_macs: float) -> dict[str, float]:
    """Where a chain-to-teacher's gain over the two-tier cascade comes from, on one split (both policies at the same
    budget; exits as :func:`reskd.adaptive.exit_stages` gives them): the share of the samples each stops at S0 and
    sends to the teacher, the share the middle exits (S0 + S1, ...) stop and, of those, the share the cascade sent to
    the teacher (which is also the teacher's MACs each spends, in % of the teacher's per sample); top-1 on the
    middle-exit samples under both; the teacher spared (samples the cascade sends to the
    teacher that the chain stops earlier, in % of all) and taken on (the reverse); the MACs the chain spends on its middle
    stages (% of the teacher's, per sample on average; ``middle_stage_macs_pct``: what they cost one sample that
    runs them all); the samples one gets right and
    the other wrong (% of all)."""
    n = chain_t.num_samples
    last = chain_t.num_stages - 1
    rows = list(range(n))
    right_chain = chain_t.logits[chain_exits, rows].argmax(1) == chain_t.labels
    right_cascade = two_tier.logits[cascade_exits, rows].argmax(1) == two_tier.labels
    middle = (chain_exits > 0) & (chain_exits < last)
    to_teacher_chain, to_teacher_cascade = chain_exits == last, cascade_exits == two_tier.num_stages - 1
    pct = lambda mask: 100.0 * mask.float().mean().item()  # noqa: E731
    within = lambda mask, part: (100.0 * (mask & part).float().sum().item() / part.sum().item()  # noqa: E731
                                 if part.any() else float("nan"))
    middle_macs = sum(chain_t.stage_macs[1:last])  # what a sample that reaches the teacher paid for the middle
    cum = chain_t.cumulative_macs
    spent_middle = sum(float(cum[min(k, last - 1)] - cum[0]) * (chain_exits == k).sum().item()
                       for k in range(1, last + 1)) / n
    return {"s0_exit_pct": pct(chain_exits == 0), "cascade_s0_exit_pct": pct(cascade_exits == 0),
            "middle_exit_pct": pct(middle), "middle_sent_to_teacher_by_cascade_pct": within(to_teacher_cascade, middle),
            "middle_top1": within(right_chain, middle), "middle_top1_cascade": within(right_cascade, middle),
            "teacher_pct": pct(to_teacher_chain), "cascade_teacher_pct": pct(to_teacher_cascade),
            "teacher_spared_pct": pct(to_teacher_cascade & ~to_teacher_chain),
            "teacher_taken_on_pct": pct(to_teacher_chain & ~to_teacher_cascade),
            "middle_macs_pct": 100.0 * spent_middle / teacher_macs,
            "middle_stage_macs_pct": 100.0 * middle_macs / teacher_macs,
            "fixed_vs_cascade_pct": pct(right_chain & ~right_cascade),
            "broken_vs_cascade_pct": pct(right_cascade & ~right_chain),
            **routes(chain_exits, cascade_exits, last, right_chain, right_cascade)}


#: The routes a sample can take in the two policies: the cascade's exit (S0 or T) then the chain's (S0, a middle
#: exit, T); :func:`routes` gives each one's share of the samples and its share of the top-1 difference.
ROUTES = tuple((c, r) for c in ("S0", "T") for r in ("S0", "mid", "T"))


def routes(chain_exits, cascade_exits, last: int, right_chain, right_cascade) -> dict[str, float]:
    """For each route of :data:`ROUTES` (where the cascade stops a sample, where the chain-to-teacher does): its share
    of the samples (``route_<c>_<r>_pct``) and what it adds to the chain-to-teacher's top-1 lead over the cascade
    (``gain_<c>_<r>``, points of top-1 on all samples; the gains sum to the difference)."""
    n = len(chain_exits)
    chain_at = {"S0": chain_exits == 0, "mid": (chain_exits > 0) & (chain_exits < last), "T": chain_exits == last}
    cascade_at = {"S0": cascade_exits == 0, "T": cascade_exits > 0}
    out = {}
    for c, r in ROUTES:
        group = cascade_at[c] & chain_at[r]
        out[f"route_{c}_{r}_pct"] = 100.0 * group.sum().item() / n
        out[f"gain_{c}_{r}"] = 100.0 * (right_chain[group].sum().item() - right_cascade[group].sum().item()) / n
    return out


def chain_to_teacher_rows(exp: Experiment, regime: Regime, seeds: Sequence[int], *,
                          budgets_pct: Sequence[float] = CHAIN_TEACHER_BUDGETS_PCT, criterion: str = "max_prob",
                          modes: Sequence[str] = THRESHOLD_MODES, points: int = 200,
                          cascades: Mapping[int, dict[str, StagedOutputs]] | None = None,
                          chains: Mapping[int, dict[str, StagedOutputs]] | None = None) -> pd.DataFrame:
    """The regime's chain-to-teacher beside the two-tier cascade from the same S0, seed by seed and budget by
    budget: one row per (seed, budget, threshold mode). Both are calibrated on val to the budget
    (:func:`reskd.adaptive.calibrate` for the cascade; the chain-to-teacher with one shared threshold or one per
    stage, ``modes``, and, when the regime has several res-students, the number of them before the teacher chosen
    on val too: the most accurate on val within the budget); test is only reported. Columns: the chain-to-teacher's
    val and test top-1, realised cost and agreement with the teacher, the cascade's (``cascade_*``), their test and
    val differences, whether both meet the budget on val (``fits``), and on test where the gain comes from
    (:func:`routing`). ``cascades``: the cascade's staged outputs per seed where the caller holds them (they must be
    from the regime's S0), and ``chains`` the regime's (:func:`regime_staged`'s); ``points``: the candidate thresholds per stage, as in :func:`reskd.adaptive.calibrate`. A
    seed whose runs are missing raises :class:`reskd.experiment.MissingRunError`."""
    teacher_macs = exp.teacher_macs
    rows = []
    for seed in seeds:
        chain = chains[seed] if chains is not None and seed in chains else regime_staged(exp, regime, seed)
        two = (cascades[seed] if cascades is not None and seed in cascades
               else cascade_staged(exp, seed, student=regime.student))
        options = {k: chain_to_teacher_staged(exp, regime, seed, stages=k, chain=chain)
                   for k in range(2, chain["val"].num_stages + 1)}
        for budget in budgets_pct:
            target = budget / 100.0 * teacher_macs
            c_policy = calibrate(two["val"], criterion, target_macs=target, points=points)
            c_val = evaluate_policy(two["val"], c_policy, teacher_macs=teacher_macs)
            c_test = evaluate_policy(two["test"], c_policy, teacher_macs=teacher_macs)
            for mode in modes:
                find = calibrate_per_stage if mode == "per-stage" else calibrate
                best = None
                for k, st in options.items():
                    policy = find(st["val"], criterion, target_macs=target, points=points)
                    on_val = evaluate_policy(st["val"], policy, teacher_macs=teacher_macs)
                    key = (on_val["pct_teacher"] > budget + 1e-9, -on_val["top1"], on_val["avg_macs"])
                    if best is None or key < best[0]:
                        best = (key, k, policy, on_val)
                _, k, policy, on_val = best
                st = options[k]
                on_test = evaluate_policy(st["test"], policy, teacher_macs=teacher_macs)
                row = {"regime": regime.name, "seed": seed, "budget_pct": float(budget), "thresholds_mode": mode,
                       "chain_stages": k, "thresholds": list(policy.thresholds),
                       "cascade_threshold": c_policy.thresholds[0],
                       "fits": bool(on_val["pct_teacher"] <= budget + 1e-9 and c_val["pct_teacher"] <= budget + 1e-9),
                       "val_top1": on_val["top1"], "test_top1": on_test["top1"],
                       "val_pct_teacher": on_val["pct_teacher"], "test_pct_teacher": on_test["pct_teacher"],
                       "test_avg_macs": on_test["avg_macs"], "test_agreement_teacher": on_test["agreement_teacher"],
                       "cascade_val_top1": c_val["top1"], "cascade_test_top1": c_test["top1"],
                       "cascade_test_pct_teacher": c_test["pct_teacher"],
                       "val_diff": on_val["top1"] - c_val["top1"], "test_diff": on_test["top1"] - c_test["top1"]}
                row.update(routing(st["test"], exit_stages(st["test"], policy), two["test"],
                                   exit_stages(two["test"], c_policy), teacher_macs))
                rows.append(row)
    return pd.DataFrame(rows)


def paired_verdicts(rows: pd.DataFrame, *, z: float = 2.0) -> pd.DataFrame:
    """Per regime, threshold mode and budget of :func:`chain_to_teacher_rows`: the chain-to-teacher minus the
    two-tier cascade on test, paired by seed (:func:`reskd.report.paired_difference`: mean, standard error, verdict
    at ``z`` standard errors), the same difference on val (what a choice may read), and the means of the routing
    columns. A budget some seed cannot meet on val gives no verdict (``fits`` False)."""
    out = []
    for (name, mode, budget), part in rows.groupby(["regime", "thresholds_mode", "budget_pct"], sort=False):
        part = part.sort_values("seed")
        verdict = paired_difference(list(part["test_top1"]), list(part["cascade_test_top1"]), z=z,
                                    names=("chain-to-teacher", "cascade"))
        fits = bool(part["fits"].all())
        if not fits:
            verdict["verdict"] = "does not meet the budget on val"
        out.append({"regime": name, "thresholds_mode": mode, "budget_pct": budget, "seeds": verdict["seeds"],
                    "chain-to-teacher test top-1": part["test_top1"].mean(),
                    "cascade test top-1": part["cascade_test_top1"].mean(),
                    "difference": verdict["difference"], "std. error": verdict["std. error"],
                    "verdict": verdict["verdict"], "val difference": part["val_diff"].mean(),
                    "test % of teacher": part["test_pct_teacher"].mean(),
                    "cascade test % of teacher": part["cascade_test_pct_teacher"].mean(),
                    "res-students before T": ", ".join(str(k - 1) for k in sorted(set(part["chain_stages"]))),
                    "fits": fits})
    return pd.DataFrame(out)


def chain_at_cost_rows(verdicts: pd.DataFrame, teacher_macs: float) -> pd.DataFrame:
    """Rows of :func:`reskd.report.compare_at_cost`'s table for :func:`paired_verdicts` entries (a chapter passes
    those at its paper budget): each chain-to-teacher against the two-tier cascade at the same budget, with the
    paired difference, its standard error and verdict, so that a chapter's comparisons at equal cost list them."""
    mmacs = teacher_macs / 1e8  # % of the teacher's MACs -> millions of MACs
    return pd.DataFrame([{
        "ResKD": chain_to_teacher_name(v["regime"], v["thresholds_mode"], v["budget_pct"]),
        "ResKD MMACs": v["test % of teacher"] * mmacs, "ResKD top-1": v["chain-to-teacher test top-1"],
        "versus": f"cascade (adaptive, {v['budget_pct']:g}% budget), paired over seeds",
        "versus MMACs": v["cascade test % of teacher"] * mmacs, "versus top-1": v["cascade test top-1"],
        "difference": v["difference"], "std. error": v["std. error"], "verdict": v["verdict"]}
        for _, v in verdicts.iterrows()], columns=["ResKD", "ResKD MMACs", "ResKD top-1", "versus", "versus MMACs",
                                                   "versus top-1", "difference", "std. error", "verdict"])


#: The routing columns of :func:`chain_to_teacher_rows`, in a reader's order (means over seeds in a chapter).
ROUTING_COLUMNS = ("s0_exit_pct", "cascade_s0_exit_pct", "middle_exit_pct", "middle_sent_to_teacher_by_cascade_pct",
                   "middle_top1", "middle_top1_cascade", "teacher_pct", "cascade_teacher_pct", "teacher_spared_pct",
                   "teacher_taken_on_pct", "middle_macs_pct", "fixed_vs_cascade_pct", "broken_vs_cascade_pct")


#: Short headers for :func:`paired_verdicts`' columns, so that a page's table fits its text column.
VERDICT_HEADERS = {"chain-to-teacher test top-1": "chain top-1", "cascade test top-1": "cascade top-1",
                   "difference": "diff.", "std. error": "s.e.", "val difference": "val diff.",
                   "test % of teacher": "chain % of T", "cascade test % of teacher": "cascade % of T",
                   "res-students before T": "res-students", "budget_pct": "budget (%)",
                   "thresholds_mode": "thresholds"}


def verdicts_table(verdicts: pd.DataFrame, index: Sequence[str] = ("regime", "budget_pct")) -> pd.DataFrame:
    """:func:`paired_verdicts` as a page shows it: indexed by ``index``, short headers, without the seed count and
    the ``fits`` flag (a caption says the seeds; a budget not met on val says so in its verdict)."""
    shown = verdicts.drop(columns=["seeds", "fits"], errors="ignore").set_index(list(index))
    return shown.rename(columns=VERDICT_HEADERS).rename_axis(index=[VERDICT_HEADERS.get(i, i) for i in index])


#: Headers of :data:`ROUTING_COLUMNS` for a page, and the two tables they are shown in (one text column wide each):
#: what the middle exits do, and how the teacher's load moves.
ROUTING_HEADERS = {"s0_exit_pct": "stop at S0 (%)", "cascade_s0_exit_pct": "cascade: stop at S0 (%)",
                   "middle_exit_pct": "stop at a middle exit (%)",
                   "middle_sent_to_teacher_by_cascade_pct": "of those, cascade sent to T (%)",
                   "middle_top1": "top-1 there", "middle_top1_cascade": "cascade top-1 there",
                   "middle_macs_pct": "middle stages (% of T's MACs)", "teacher_pct": "reach T (%)",
                   "cascade_teacher_pct": "cascade: reach T (%)", "teacher_spared_pct": "T spared (%)",
                   "teacher_taken_on_pct": "T taken on (%)", "fixed_vs_cascade_pct": "right, cascade wrong (%)",
                   "broken_vs_cascade_pct": "wrong, cascade right (%)", "budget_pct": "budget (%)"}
MIDDLE_COLUMNS = ("middle_exit_pct", "middle_sent_to_teacher_by_cascade_pct", "middle_top1", "middle_top1_cascade",
                  "middle_macs_pct")
TEACHER_COLUMNS = ("teacher_pct", "cascade_teacher_pct", "teacher_spared_pct", "teacher_taken_on_pct",
                   "fixed_vs_cascade_pct", "broken_vs_cascade_pct")


def routing_tables(routing_means: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The routing means of :func:`chain_to_teacher_rows` (one row per regime and budget, columns of
    :data:`ROUTING_COLUMNS`) as two page tables: the middle exits (:data:`MIDDLE_COLUMNS`) and the teacher's load
    (:data:`TEACHER_COLUMNS`), with :data:`ROUTING_HEADERS`."""
    def table(columns: Sequence[str]) -> pd.DataFrame:
        shown = routing_means[[c for c in columns if c in routing_means.columns]].rename(columns=ROUTING_HEADERS)
        return shown.rename_axis(index=[ROUTING_HEADERS.get(n, n) for n in shown.index.names])
    return table(MIDDLE_COLUMNS), table(TEACHER_COLUMNS)


def chain_to_teacher_records(rows: pd.DataFrame, teacher_macs: int, *, labels: Mapping[str, str],
                             mode: str = "per-stage") -> list[dict]:
    """Model entries (kind "chain-to-teacher") of :func:`chain_to_teacher_rows` in threshold mode ``mode``: one per
    regime and budget met on val by every seed, with the regime's description (``labels``), the budget, the mean
    val top-1, the stages a sample may run (the chain's and the teacher) and the regime's name."""
    records = []
    for (name, budget), part in rows[rows["thresholds_mode"] == mode].groupby(["regime", "budget_pct"], sort=False):
        if not part["fits"].all():
            continue
        record = model_record(chain_to_teacher_name(name, mode, budget), CHAIN_TO_TEACHER,
                              stages=int(part["chain_stages"].max()) + 1, macs=part["test_avg_macs"].mean(),
                              teacher_macs=teacher_macs, top1=list(part["test_top1"]), seeds=list(part["seed"]),
                              agreement_teacher=list(part["test_agreement_teacher"]))
        record.update(budget_pct=float(budget), val_top1_mean=float(part["val_top1"].mean()),
                      regime=labels.get(name, name), regime_name=name)
        records.append(record)
    return records


def cascade_records(exp: Experiment, seeds: Sequence[int], *, budgets_pct: Sequence[float] | None = None,
                    criterion: str = "max_prob"
                    ) -> tuple[list[dict], pd.DataFrame, dict[int, dict[str, StagedOutputs]]]:
    """The cascade to the teacher over ``seeds``, as :func:`regime_records` gives a regime: its entries at each
    budget (kind "cascade", calibrated on val), the budget rows they come from (one block per seed) and the staged
    outputs per seed (:func:`cascade_staged`'s), for a figure's sweeps."""
    budgets_pct = budgets_for(exp.profile) if budgets_pct is None else tuple(budgets_pct)
    staged = {seed: cascade_staged(exp, seed) for seed in seeds}
    rows = pd.concat([cascade_budgets(exp, seed, budgets_pct=budgets_pct, criterion=criterion, staged=staged[seed])
                      for seed in seeds], ignore_index=True)
    return budget_records(rows, exp.teacher_macs, kind="cascade", budgets_pct=budgets_pct), rows, staged


def screen(exp: Experiment, regimes: Sequence[Regime] | None = None, *, seeds: Sequence[int] = SCREEN_SEEDS,
           budgets_pct: Sequence[float] = BUDGETS_PCT) -> pd.DataFrame:
    """The cascade and every regime (default: all of :data:`CIFAR_REGIMES`), static and at every budget."""
    regimes = list(regimes) if regimes is not None else [CIFAR_REGIMES[n] for n in CIFAR_REGIMES]
    frames = [cascade_budgets(exp, s, budgets_pct=budgets_pct) for s in seeds]
    frames += [regime_budgets(exp, r, s, budgets_pct=budgets_pct) for r in regimes for s in seeds]
    return pd.concat(frames, ignore_index=True)


def energy_by_outcome(staged: StagedOutputs, stage: int = 1) -> pd.DataFrame:
    """Where the residual energy stage ``stage`` removes sits, and what it does to top-1: samples grouped by whether
    the ensemble before the stage was right, with each group's share of the samples, its share of the energy removed
    (``sum_x e_{k-1}(x) - e_k(x)`` over the group, over the total; None when the stage removed none), and how many of its predictions the stage fixed
    (wrong to right) and broke (right to wrong), in % of all samples."""
    if staged.teacher_logits is None or not 1 <= stage < staged.num_stages:
        raise ValueError(f"need the teacher's logits and a stage in 1..{staged.num_stages - 1}, got stage {stage}.")
    before, after, t = staged.logits[stage - 1], staged.logits[stage], staged.teacher_logits
    removed = sample_energy(t, before) - sample_energy(t, after)
    right_before, right_after = correct(before, staged.labels), correct(after, staged.labels)
    total, n = removed.sum().item(), staged.num_samples
    rows = []
    for name, group in (("right before the stage", right_before), ("wrong before the stage", ~right_before)):
        rows.append({"samples": name, "share_of_samples_pct": 100.0 * group.float().mean().item(),
                     "share_of_energy_removed_pct": 100.0 * removed[group].sum().item() / total if total > 0 else None,
                     "fixed_pct": 100.0 * (group & ~right_before & right_after).sum().item() / n,
                     "broken_pct": 100.0 * (group & right_before & ~right_after).sum().item() / n})
    return pd.DataFrame(rows)


def screen_available(exp: Experiment, names: Sequence[str], *, seeds: Sequence[int] = SCREEN_SEEDS,
                     budgets_pct: Sequence[float] = BUDGETS_PCT) -> tuple[pd.DataFrame, list[str]]:
    """:func:`screen` over the regimes ``names`` whose runs exist (an experiment with ``train_missing=False`` skips
    the others instead of training them), and the names of the regimes skipped."""
    frames, missing = [], []
    for name in names:
        try:
            frames += [regime_budgets(exp, CIFAR_REGIMES[name], s, budgets_pct=budgets_pct) for s in seeds]
        except MissingRunError:
            missing.append(name)
    columns = ["regime", "seed", "policy", "budget_pct"]
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)), missing


def budgets_over_seeds(exp: Experiment, name: str, seeds: Sequence[int], *,
                       budgets_pct: Sequence[float] = BUDGETS_PCT) -> tuple[pd.DataFrame, list[int]]:
    """:func:`regime_budgets` of regime ``name`` for each of ``seeds`` whose runs exist (the others are skipped when
    ``exp.train_missing`` is False), and the seeds it found: the three-seed rows a verdict needs."""
    frames, found = [], []
    for seed in seeds:
        try:
            frames.append(regime_budgets(exp, CIFAR_REGIMES[name], seed, budgets_pct=budgets_pct))
            found.append(seed)
        except MissingRunError:
            continue
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()), found


def stages_paid_for(exp: Experiment, regime: Regime, seed: int, *, min_gain_per_mmac: float,
                    macs_budget: float | None = None) -> pd.DataFrame:
    """How many of the regime's trained stages :func:`reskd.studies.grow` keeps: a stage stays only while its
    **validation** top-1 gain per added million MACs is at least ``min_gain_per_mmac`` (and the chain stays within
    ``macs_budget``, a fraction of the teacher's MACs). Candidates are the regime's own stages, so nothing new is
    trained; its log, one row per decision."""
    if len(set(regime.stages)) != 1:
        raise ValueError(f"regime {regime.name!r} mixes stage architectures {[a.label for a in regime.stages]}; "
                         "stages_paid_for grows one architecture at a time.")
    _, log = grow(regime.runs(exp), [regime.stages[0]], max_stages=len(regime.stages), macs_budget=macs_budget,
                  min_gain_per_mmac=min_gain_per_mmac, seed=seed)
    return log.assign(regime=regime.name, seed=seed)


def map_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The regime map as a reader wants it: one row per regime (mean over its seeds), the full static chain's cost
    and top-1, then at each budget the adaptive policy's test top-1 with its val top-1 (what chose it) and its
    realised test cost; blank where the regime cannot meet the budget on val."""
    full = frame[frame["policy"].str.startswith("static")].groupby(["regime", "seed"]).tail(1)
    table = full.groupby("regime", sort=False)[["test_pct_teacher", "val_top1", "test_top1"]].mean()
    table.columns = pd.MultiIndex.from_tuples([("all stages", "% of T"), ("all stages", "val"),
                                               ("all stages", "test")])
    adaptive = frame[frame["policy"].str.startswith("adaptive")]
    if "fits" in adaptive:  # a policy dearer than its budget on val (S0 alone costs more) was never at that budget
        adaptive = adaptive[adaptive["fits"].astype(bool)]
    for budget, rows in adaptive.groupby("budget_pct", sort=True):
        means = rows.groupby("regime", sort=False)[["test_pct_teacher", "val_top1", "test_top1"]].mean()
        for column, label in (("test_pct_teacher", "% of T"), ("val_top1", "val"), ("test_top1", "test")):
            table[(f"≤{budget:g}%", label)] = means[column]
    return table


def budget_records(frame: pd.DataFrame, teacher_macs: int, *, kind: str, labels: dict[str, str] | None = None,
                   budgets_pct: Sequence[float] = BUDGETS_PCT) -> list[dict]:
    """Model entries of the results file from :func:`regime_budgets` / :func:`cascade_budgets` rows: one per regime
    and budget (top-1 over the seeds, mean realised test MACs), of ``kind`` ("reskd-adaptive" or "cascade"), with a
    ``regime_name`` field and a ``regime`` field from ``labels`` (regime name to description) when given. A budget that some seed's policy does
    not meet on val (``fits``: its first stage alone costs more) gives no entry: it was never at that budget."""
    records = []
    static = frame[frame["policy"].str.startswith("static")]
    for (name, budget), rows in frame[frame["budget_pct"].isin(list(budgets_pct))].groupby(
            ["regime", "budget_pct"], sort=False):
        if "fits" in rows and not rows["fits"].astype(bool).all():
            continue
        stages = int(static[static["regime"] == name].groupby("seed").size().max())
        record = model_record(f"{name} (adaptive, {budget:g}% budget)", kind, stages=stages,
                              macs=rows["test_avg_macs"].mean(), teacher_macs=teacher_macs,
                              top1=list(rows["test_top1"]), seeds=list(rows["seed"]),
                              agreement_teacher=list(rows["test_agreement_teacher"]))
        record["budget_pct"] = float(budget)
        record["val_top1_mean"] = float(rows["val_top1"].mean())
        record["regime_name"] = name
        if labels and name in labels:
            record["regime"] = labels[name]
        records.append(record)
    return records


def first_stage_energy(staged_by_regime: Mapping[str, dict[str, StagedOutputs]]) -> pd.DataFrame:
    """For each regime's first res-student (``staged_by_regime``: a regime's name to its :func:`regime_staged`
    outputs), on val and test: the share of the residual energy it removed, the top-1 it gained, the share of the
    removed energy that sat on images S0 already got right, and the predictions it fixed and broke (% of all
    images)."""
    rows = []
    for name, staged in staged_by_regime.items():
        for split, st in staged.items():
            before = residual_energy(st.teacher_logits, st.logits[0]).item()
            after = residual_energy(st.teacher_logits, st.logits[1]).item()
            outcome = energy_by_outcome(st).set_index("samples")
            rows.append({"regime": name, "split": split, "energy removed (%)": 100.0 * (1.0 - after / before),
                         "top-1 gain": top1(st.logits[1], st.labels) - top1(st.logits[0], st.labels),
                         "energy removed on images S0 had right (%)":
                             outcome.loc["right before the stage", "share_of_energy_removed_pct"],
                         "fixed (%)": outcome["fixed_pct"].sum(), "broken (%)": outcome["broken_pct"].sum()})
    return pd.DataFrame(rows).set_index(["regime", "split"])


#: The share of the images :func:`hard_images` looks at: about what an exit rule at the paper's budget sends on from
#: S0 in the cascade (9% at 18.04%, 15% at 25%), and what the decision-focused regimes train on (25-30%).
HARD_FRACTION = 0.25


def hard_images(staged_by_regime: Mapping[str, dict[str, StagedOutputs]], *, fraction: float = HARD_FRACTION,
                criterion: str = "max_prob") -> pd.DataFrame:
    """What each regime's first res-student (``staged_by_regime`` as in :func:`first_stage_energy`) does on the
    images an exit rule sends on: the test images whose S0 confidence (``criterion``) is at or below its ``fraction``
    quantile on **val** (the cut is set on val). Top-1 there of S0, of S0 plus the stage and of the teacher, the
    stage's fixes and breaks (% of those images), and its top-1 change on the other test images."""
    rows = []
    for name, staged in staged_by_regime.items():
        cut = confidence(staged["val"].logits[0], criterion).quantile(fraction)
        test = staged["test"]
        hard = confidence(test.logits[0], criterion) <= cut
        before, after = correct(test.logits[0], test.labels), correct(test.logits[1], test.labels)
        rows.append({"regime": name, "hard images (% of test)": 100.0 * hard.float().mean().item(),
                     "S0 top-1": 100.0 * before[hard].float().mean().item(),
                     "S0 + stage top-1": 100.0 * after[hard].float().mean().item(),
                     "teacher top-1": top1(test.teacher_logits[hard], test.labels[hard]),
                     "fixed (%)": 100.0 * (after & ~before)[hard].float().mean().item(),
                     "broken (%)": 100.0 * (before & ~after)[hard].float().mean().item(),
                     "top-1 change on the rest": 100.0 * (after[~hard].float().mean()
                                                          - before[~hard].float().mean()).item()})
    return pd.DataFrame(rows).set_index("regime")


def hard_images_reading(hard: pd.DataFrame) -> str:
    """One sentence on a :func:`hard_images` table: what the stage that gains most on the hard images does there,
    against the teacher (what the cascade pays its full MACs for on those images)."""
    gain = hard["S0 + stage top-1"] - hard["S0 top-1"]
    best = gain.idxmax()
    row = hard.loc[best]
    gap = row["teacher top-1"] - row["S0 top-1"]
    closed = (f"it closes {gain[best] / gap:.0%} of the gap" if gap > 0
              else "the teacher does no better than $S_0$")
    return (f"On the {row['hard images (% of test)']:.0f}% of the test images its $S_0$ is least sure of, the stage "
            f"that gains most there, {best}, takes top-1 from {row['S0 top-1']:.1f}% to "
            f"{row['S0 + stage top-1']:.1f}%, against the teacher's {row['teacher top-1']:.1f}%: {closed} on the "
            "images where the cascade pays the teacher's MACs.")


def best_at_budget(frame: pd.DataFrame, budget_pct: float) -> tuple[pd.Series, pd.Series] | None:
    """The regime row with the best **validation** top-1 at ``budget_pct`` (adaptive, among the policies that meet
    the budget on val), and the cascade's row at the same budget and seed; None when no regime row is there."""
    at = frame[(frame["budget_pct"] == budget_pct) & ~frame["regime"].map(is_cascade)]
    if "fits" in at:
        at = at[at["fits"].astype(bool)]
    if at.empty:
        return None
    best = at.loc[at["val_top1"].idxmax()]
    cascades = frame[(frame["regime"] == CASCADE) & (frame["budget_pct"] == budget_pct)
                     & (frame["seed"] == best["seed"])]
    return best, cascades.iloc[0]


def regime_records(exp: Experiment, regime: Regime, seeds: Sequence[int], *,
                   budgets_pct: Sequence[float] | None = None,
                   criterion: str = "max_prob"
                   ) -> tuple[list[dict], pd.DataFrame, dict[int, dict[str, StagedOutputs]]]:
    """Model entries of one regime over ``seeds``, for a chapter's table and results file: each static prefix
    S0..Sk with k >= 1 (kind "reskd-stage"; S0 alone is the KD student, listed once as such) and the adaptive policy
    at each budget (kind "reskd-adaptive", calibrated on val), every entry named after the regime and carrying its
    description; the budget rows they come from (:func:`regime_budgets`'s, one block per seed); and the staged
    outputs per seed (:func:`regime_staged`'s), for a figure's sweeps."""
    budgets_pct = budgets_for(exp.profile) if budgets_pct is None else tuple(budgets_pct)
    teacher_macs, label = exp.teacher_macs, regime.label(exp)
    staged = {seed: regime_staged(exp, regime, seed) for seed in seeds}
    static = [{**record, "name": f"{regime.name}: {record['name'].removeprefix('ResKD ')}", "regime": label}
              for record in reskd_records(staged, teacher_macs, drops=()) if record["stages"] > 1]
    rows = pd.concat([_budget_table(regime.name, seed, staged[seed], teacher_macs, budgets_pct, criterion)
                      for seed in seeds], ignore_index=True)
    adaptive = budget_records(rows, teacher_macs, kind="reskd-adaptive", labels={regime.name: label},
                              budgets_pct=budgets_pct)
    return static + adaptive, rows, staged


#: How the adaptive-inference chapter picks its regimes, on the validation split only (the test split chooses
#: nothing): among the map's regimes trained for every seed of the profile, the **main regime** is the one whose
#: res-students raise validation top-1 most over S0 alone (mean over seeds of all stages' top-1 minus S0's), so that
#: adaptive inference has the most to trade; the **counterexample** is the one whose res-students raise it least.
ADAPTIVE_RULE = ("among the regimes of the map trained for every seed, the main regime is the one whose res-students "
                 "raise validation top-1 most over S0 alone (mean over seeds), the counterexample the one whose "
                 "res-students raise it least")


def stage_gains(staged_by_regime: Mapping[str, Mapping[int, dict[str, StagedOutputs]]], *,
                split: str = "val") -> pd.DataFrame:
    """One row per regime and seed: ``split``'s top-1 of S0 alone and of all the regime's stages, the gain (points)
    and the share of samples whose prediction the later stages change (%)."""
    rows = []
    for name, by_seed in staged_by_regime.items():
        for seed, staged in by_seed.items():
            st = staged[split]
            first, last = st.logits[0].argmax(1), st.logits[-1].argmax(1)
            s0, full = top1(st.logits[0], st.labels), top1(st.logits[-1], st.labels)
            rows.append({"regime": name, "seed": seed, "s0_top1": s0, "all_top1": full, "gain": full - s0,
                         "changed_pct": 100.0 * (first != last).double().mean().item()})
    return pd.DataFrame(rows, columns=["regime", "seed", "s0_top1", "all_top1", "gain", "changed_pct"])


def choose_adaptive(gains: pd.DataFrame, seeds: Sequence[int]) -> tuple[str, str | None, pd.DataFrame]:
    """:data:`ADAPTIVE_RULE` on :func:`stage_gains` rows (validation): the main regime, the counterexample (None when
    only one regime is eligible) and the table per eligible regime (means over seeds, sorted by gain, largest
    first). Ties keep the order of ``gains``. A regime missing one of ``seeds`` is not eligible; none eligible is an
    error."""
    seeds = sorted(set(seeds))
    eligible = [name for name, rows in gains.groupby("regime", sort=False) if sorted(set(rows["seed"])) == seeds]
    if not eligible:
        raise ValueError(f"no regime has every seed {seeds}; train the seeds of one regime of the map first.")
    order = {name: i for i, name in enumerate(eligible)}
    table = (gains[gains["regime"].isin(eligible) & gains["seed"].isin(seeds)]
             .groupby("regime", sort=False)[["s0_top1", "all_top1", "gain", "changed_pct"]].mean())
    table = table.assign(order=[order[n] for n in table.index]).sort_values(["gain", "order"],
                                                                            ascending=[False, True],
                                                                            kind="stable").drop(columns="order")
    main = table.index[0]
    counter = table.index[-1] if len(table) > 1 else None
    return main, counter, table


def adaptive_candidates(exp: Experiment, names: Sequence[str], seeds: Sequence[int]
                        ) -> tuple[pd.DataFrame, dict[str, dict[int, dict[str, StagedOutputs]]]]:
    """The staged outputs of every regime of ``names`` for each of ``seeds`` whose runs exist (the others are
    skipped when ``exp.train_missing`` is False), and their :func:`stage_gains` on val: what
    :func:`choose_adaptive` chooses from."""
    staged: dict[str, dict[int, dict[str, StagedOutputs]]] = {}
    for name in names:
        for seed in seeds:
            try:
                staged.setdefault(name, {})[seed] = regime_staged(exp, CIFAR_REGIMES[name], seed)
            except MissingRunError:
                continue
    return stage_gains(staged, split="val"), staged
