"""Sample-adaptive inference: after each stage, decide per sample whether the remaining res-students are needed.

After stage ``k`` a sample stops when the confidence of the ensemble's logits ``Z_k`` reaches the stage's threshold
``tau_k`` (the last stage always stops). Criteria (:data:`CRITERIA`), all "higher = more confident":

* ``max_prob``: the largest softmax probability, in [0, 1];
* ``margin``: top-1 minus top-2 probability, in [0, 1];
* ``neg_entropy``: minus the entropy of the softmax, in [-log C, 0];
* ``gate``: 1 - P(a later stage changes the prediction), from a tiny logistic classifier on the above features,
  trained on the validation split (:class:`LearnedGate`), in [0, 1].

A threshold of ``-inf`` stops every sample, ``+inf`` none. The paper proposes a sample-adaptive strategy; the
criteria, the gate and the calibration below are our choices. Thresholds are calibrated only on the validation split
(:func:`calibrate` with one shared threshold, :func:`calibrate_per_stage` with one per stage, :func:`sweep`); test
data is only evaluated. The cost of a sample is the sum of the MACs of the stages it ran; the reported cost is the
mean over samples. :class:`AdaptiveEnsemble` really skips the work, and :func:`measure_latency` /
:func:`compare_latency` time it; :class:`Cascade` executes any cascade the same way (the chain, the two-tier
cascade to the teacher of :func:`cascade`, the chain-to-teacher with res-students as middle exits), and
:func:`stage_call_times` splits masked execution's time into its stage calls and its decision step. Budgeted
evaluation (:func:`budget_range`, :func:`budget_curves`) holds every criterion and random exits
(:func:`random_fractions`) to the same mean MACs; :func:`speedup_verdict` refuses a verdict for a trivial policy
(every exit at one stage).
"""
from __future__ import annotations

import math
import numbers
import statistics
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .metrics import accuracy
from .precision import autocast
from .registry import Registry
from .reskd import ResKDEnsemble
from .utils import model_memory_format, model_num_classes, resolve_device



@dataclass(frozen=True)
class Criterion:
    """An exit criterion: ``score(p)`` maps softmax probabilities (N x C) to a per-sample confidence (None: the
    learned gate's), ``range(C)`` the values it can take."""

    score: Callable[[Tensor], Tensor] | None
    range: Callable[[int], tuple[float, float]] = lambda num_classes: (0.0, 1.0)


#: The exit criteria by name (iterating gives the names); adding one is one :func:`register_criterion` definition.
CRITERIA: Registry[Criterion] = Registry("criterion")


def register_criterion(name: str, description: str, *,
                       range: Callable[[int], tuple[float, float]] = lambda num_classes: (0.0, 1.0)):
    """Decorator registering ``score(p) -> confidence`` as the exit criterion ``name`` (higher = more confident)."""

    def decorator(score: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
        CRITERIA.register(name, description)(Criterion(score, range))
        return score

    return decorator


@register_criterion("max_prob", "the largest softmax probability")
def _max_prob(p: Tensor) -> Tensor:
    return p.max(1).values


@register_criterion("margin", "top-1 minus top-2 probability")
def _margin(p: Tensor) -> Tensor:
    top2 = p.topk(2, dim=1).values
    return top2[:, 0] - top2[:, 1]


@register_criterion("neg_entropy", "minus the entropy of the softmax", range=lambda c: (-math.log(c), 0.0))
def _neg_entropy(p: Tensor) -> Tensor:
    return (p * torch.log(p.clamp_min(1e-12))).sum(1)


CRITERIA.register("gate", "1 - P(a later stage changes the prediction), from a LearnedGate fit on val")(
    Criterion(None))
# How far a sample's confidence may move with the batch it was computed in (batch size, thread count, CPU kernels):
# masked execution runs later stages on sub-batches, so it decides exactly as full execution does for every sample
# whose confidence is farther than this from a threshold, and may decide either way within it.
DECISION_TOLERANCE = 1e-5
GATE_FEATURES = ("max_prob", "margin", "neg_entropy")


def confidence(logits: Tensor, criterion: str, *, gate: "LearnedGate | None" = None, stage: int = 0) -> Tensor:
    """Per-sample confidence of ``logits`` under ``criterion`` (higher means more confident)."""
    score = CRITERIA[criterion].score
    if score is None:
        if gate is None:
            raise ValueError(f"criterion {criterion!r} needs a trained LearnedGate (fit one with LearnedGate.fit on "
                             f"val).")
        return gate.confidence(logits, stage)
    return score(F.softmax(logits.float(), dim=1))


def criterion_range(criterion: str, num_classes: int) -> tuple[float, float]:
    """The values a criterion's confidence can take."""
    return CRITERIA[criterion].range(num_classes)


def _features(logits: Tensor) -> Tensor:
    return torch.stack([confidence(logits, c) for c in GATE_FEATURES], dim=1)


class LearnedGate(nn.Module):
    """Logistic regression per stage on (max prob, margin, neg entropy) of ``Z_k``, predicting whether the final
    prediction differs from stage ``k``'s (i.e. whether running the later stages changes the answer)."""

    def __init__(self, num_stages: int):
        super().__init__()
        self.linear = nn.ModuleList([nn.Linear(len(GATE_FEATURES), 1) for _ in range(max(num_stages - 1, 1))])

    def confidence(self, logits: Tensor, stage: int) -> Tensor:
        with torch.no_grad():
            return 1 - torch.sigmoid(self.linear[stage](_features(logits)).squeeze(1))

    @classmethod
    def fit(cls, staged: "StagedOutputs", *, steps: int = 200, weight_decay: float = 1e-3) -> "LearnedGate":
        """Train on ``staged`` (the validation split's outputs) with full-batch L-BFGS."""
        if staged.num_samples == 0:
            raise ValueError("the validation split is empty: the gate needs validation samples to learn from.")
        gate = cls(staged.num_stages)
        final = staged.logits[-1].argmax(1)
        for k in range(staged.num_stages - 1):
            x = _features(staged.logits[k])
            target = (staged.logits[k].argmax(1) != final).float()
            layer = gate.linear[k]
            opt = torch.optim.LBFGS(layer.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

            def closure():
                opt.zero_grad()
                loss = F.binary_cross_entropy_with_logits(layer(x).squeeze(1), target)
                loss = loss + weight_decay * layer.weight.pow(2).sum()
                loss.backward()
                return loss

            opt.step(closure)
        return gate.eval().requires_grad_(False)


@dataclass
class StagedOutputs:
    """The cumulative logits ``Z_k`` of every stage on one split, with labels and each stage's MACs."""

    logits: Tensor  # (K, N, C)
    labels: Tensor  # (N,)
    stage_macs: list[int]  # MACs each stage adds
    teacher_logits: Tensor | None = None

    def __post_init__(self):
        if self.logits.dim() != 3 or self.logits.shape[0] != len(self.stage_macs):
            raise ValueError(f"logits must be (stages, samples, classes) with one MACs entry per stage; got "
                             f"{tuple(self.logits.shape)} and {len(self.stage_macs)} MACs entries.")
        if self.logits.shape[1] != len(self.labels):
            raise ValueError(f"{self.logits.shape[1]} samples of logits but {len(self.labels)} labels.")

    @property
    def num_stages(self) -> int:
        return self.logits.shape[0]

    @property
    def num_samples(self) -> int:
        return self.logits.shape[1]

    @property
    def num_classes(self) -> int:
        return self.logits.shape[2]

    @property
    def cumulative_macs(self) -> list[int]:
        return list(np.cumsum(self.stage_macs).tolist())


def _is_number(x) -> bool:
    """A real number (a bool is not one), or a one-element tensor of one."""
    if isinstance(x, Tensor):
        return x.dim() == 0 and x.dtype != torch.bool
    return isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_))


@dataclass
class Policy:
    """A criterion and one threshold per stage but the last (which always stops)."""

    criterion: str
    thresholds: list[float]
    gate: LearnedGate | None = field(default=None, repr=False)

    def check(self, num_stages: int, num_classes: int) -> None:
        CRITERIA.check(self.criterion)
        listed = isinstance(self.thresholds, (Sequence, np.ndarray, Tensor)) and not isinstance(self.thresholds, str)
        if not listed or not all(_is_number(t) for t in self.thresholds):
            raise ValueError(f"thresholds must be a list of numbers, one per stage but the last ({num_stages - 1}), "
                             f"got {self.thresholds!r}; e.g. Policy({self.criterion!r}, [0.9] * {num_stages - 1}).")
        if len(self.thresholds) != num_stages - 1:
            raise ValueError(f"{len(self.thresholds)} thresholds for {num_stages} stages; give one per stage but the "
                             f"last ({num_stages - 1}).")
        lo, hi = criterion_range(self.criterion, num_classes)
        for t in self.thresholds:
            if math.isfinite(t) and not lo <= t <= hi:
                raise ValueError(f"threshold {t} is outside the range [{lo:.4g}, {hi:.4g}] of {self.criterion!r}; use "
                                 f"a value inside it, or -inf (stop everyone) / +inf (stop no one).")
            if math.isnan(t):
                raise ValueError("a threshold is NaN; use a number, -inf or +inf.")
        if self.criterion == "gate" and self.gate is None:
            raise ValueError("criterion 'gate' needs a trained LearnedGate (LearnedGate.fit on the validation split).")


def _stage_confidences(staged: StagedOutputs, criterion: str, gate: LearnedGate | None) -> Tensor:
    """``(K-1, N)``: the confidence of every sample after every stage but the last."""
    if staged.num_stages == 1:
        return torch.zeros(0, staged.num_samples)
    return torch.stack([confidence(staged.logits[k], criterion, gate=gate, stage=k)
                        for k in range(staged.num_stages - 1)])


def _exits(conf: Tensor, thresholds: Sequence[float]) -> Tensor:
    """The first stage whose confidence reaches its threshold (the last stage when none does)."""
    exits = torch.full((conf.shape[1],), len(thresholds), dtype=torch.long)
    active = torch.ones(conf.shape[1], dtype=torch.bool)
    for k, tau in enumerate(thresholds):
        stop = active & (conf[k] >= tau)
        exits[stop] = k
        active &= ~stop
    return exits


def exit_stages(staged: StagedOutputs, policy: Policy) -> Tensor:
    """The stage (0-based) at which each sample stops."""
    policy.check(staged.num_stages, staged.num_classes)
    return _exits(_stage_confidences(staged, policy.criterion, policy.gate), policy.thresholds)


def evaluate_policy(staged: StagedOutputs, policy: Policy, *, teacher_macs: int | None = None) -> dict[str, float]:
    """Top-1, mean MACs per sample (each pays for the stages it ran), % of the teacher, and the exit fractions."""
    return evaluate_exits(staged, exit_stages(staged, policy), teacher_macs=teacher_macs)


def oracle_exits(staged: StagedOutputs, reference: Tensor | None = None) -> Tensor:
    """The upper bound of any exit rule: each sample stops at the first stage whose prediction equals ``reference``'s
    (class indices; default the full ensemble's prediction, or pass the teacher's ``argmax``), else at the last."""
    reference = staged.logits[-1].argmax(1) if reference is None else reference
    same = staged.logits.argmax(2) == reference  # (K, N)
    same[-1] = True
    return same.float().argmax(0)  # the first True


def random_exits(staged: StagedOutputs, fractions: Sequence[float], *, seed: int = 0) -> Tensor:
    """A random exit rule at the cost of another: samples drawn at random stop at stage ``k`` in the proportions
    ``fractions`` (e.g. a calibrated policy's ``exit_frac_k``), so both pay the same mean MACs."""
    if len(fractions) != staged.num_stages or any(f < 0 for f in fractions) or not math.isclose(sum(fractions), 1.0,
                                                                                                  abs_tol=1e-6):
        raise ValueError(f"give {staged.num_stages} non-negative exit fractions summing to 1, got {list(fractions)}.")
    n = staged.num_samples
    counts = [round(f * n) for f in fractions]
    counts[-1] = n - sum(counts[:-1])
    exits = torch.repeat_interleave(torch.arange(staged.num_stages), torch.tensor(counts))
    return exits[torch.randperm(n, generator=torch.Generator().manual_seed(seed))]


def evaluate_exits(staged: StagedOutputs, exits: Tensor, *, teacher_macs: int | None = None) -> dict[str, float]:
    """:func:`evaluate_policy` for given exit stages (one per sample)."""
    if staged.num_samples == 0:
        raise ValueError("the split is empty (no samples): a policy is evaluated on the samples of a split; give the "
                         "staged outputs of a split that has some.")
    if exits.shape != (staged.num_samples,):
        raise ValueError(f"give one exit stage per sample: {staged.num_samples} samples, exits of shape "
                         f"{tuple(exits.shape)}.")
    preds = staged.logits[exits, torch.arange(staged.num_samples)].argmax(1)
    cum = torch.tensor(staged.cumulative_macs, dtype=torch.float64)
    avg_macs = cum[exits].mean().item()
    out = {"top1": accuracy(preds, staged.labels), "avg_macs": avg_macs,
           "pct_teacher": 100.0 * avg_macs / teacher_macs if teacher_macs else float("nan")}
    if staged.teacher_logits is not None:
        out["agreement_teacher"] = accuracy(preds, staged.teacher_logits.argmax(1))
    for k in range(staged.num_stages):
        out[f"exit_frac_{k}"] = (exits == k).float().mean().item()
    return out


def _shared(policy_criterion: str, tau: float, num_stages: int, gate) -> Policy:
    return Policy(policy_criterion, [tau] * (num_stages - 1), gate)


def candidate_thresholds(staged: StagedOutputs, criterion: str, *, gate: LearnedGate | None = None,
                         points: int = 50) -> list[float]:
    """Thresholds at quantiles of the criterion on ``staged`` (the validation split), plus -inf and +inf."""
    conf = torch.cat([confidence(staged.logits[k], criterion, gate=gate, stage=k)
                      for k in range(staged.num_stages - 1)]) if staged.num_stages > 1 else torch.zeros(0)
    qs = torch.quantile(conf.double(), torch.linspace(0, 1, points, dtype=torch.float64)).tolist() if len(conf) else []
    return [-math.inf] + sorted(set(qs)) + [math.inf]


def sweep(val: StagedOutputs, criterion: str, *, test: StagedOutputs | None = None, gate: LearnedGate | None = None,
          teacher_macs: int | None = None, points: int = 50) -> pd.DataFrame:
    """The accuracy-vs-average-MACs curve: thresholds chosen from the validation split, each evaluated on val (and
    on ``test`` when given: its numbers are reported, never used to choose)."""
    if val.num_samples == 0:
        raise ValueError("the validation split is empty: thresholds must be calibrated on validation data.")
    if criterion == "gate" and gate is None:
        gate = LearnedGate.fit(val)
    rows = []
    for tau in candidate_thresholds(val, criterion, gate=gate, points=points):
        policy = _shared(criterion, tau, val.num_stages, gate)
        row = {"criterion": criterion, "threshold": tau}
        row.update({f"val_{k}": v for k, v in evaluate_policy(val, policy, teacher_macs=teacher_macs).items()})
        if test is not None:
            row.update({f"test_{k}": v for k, v in evaluate_policy(test, policy, teacher_macs=teacher_macs).items()})
        rows.append(row)
    return pd.DataFrame(rows)


def _scorer(val: StagedOutputs, criterion: str, gate: LearnedGate | None):
    """A function from thresholds to (val top-1 in %, mean MACs), computed as :func:`evaluate_policy` does, with the
    confidences computed once."""
    conf = _stage_confidences(val, criterion, gate)
    correct = (val.logits.argmax(2) == val.labels).float()  # (K, N)
    cum = torch.tensor(val.cumulative_macs, dtype=torch.float64)
    rows = torch.arange(val.num_samples)

    def score(thresholds: Sequence[float]) -> tuple[float, float]:
        exits = _exits(conf, thresholds)
        return 100.0 * correct[exits, rows].mean().item(), cum[exits].mean().item()

    return score


def _ranker(target_top1: float | None, target_macs: float | None):
    """A sort key on (top-1, MACs), better first: policies meeting the target, then the objective (lower MACs for an
    accuracy target, higher top-1 for a MACs budget), then the other quantity."""
    if target_top1 is not None:
        return lambda top1, macs: (top1 < target_top1, macs, -top1)
    return lambda top1, macs: (macs > target_macs, -top1, macs)


def _check_calibration(val: StagedOutputs, target_top1: float | None, target_macs: float | None) -> None:
    if (target_top1 is None) == (target_macs is None):
        raise ValueError("give exactly one of target_top1 (percent) or target_macs (mean MACs per sample).")
    target, value = ("target_top1", target_top1) if target_top1 is not None else ("target_macs", target_macs)
    if not _is_number(value) or not math.isfinite(value):
        raise ValueError(f"{target} must be a finite number, got {value!r}.")
    if target_top1 is not None and not 0 <= target_top1 <= 100:
        raise ValueError(f"target_top1 is a top-1 accuracy in percent, from 0 to 100; got {target_top1!r}.")
    if target_top1 is not None and 0 < target_top1 <= 1:  # a warning: a model that bad may truly be the target
        warnings.warn(f"target_top1={target_top1!r} looks like a fraction, but it is a top-1 accuracy in percent "
                      f"(this asks for {float(target_top1):g}%, which S0 alone almost surely meets): give "
                      f"target_top1={100 * float(target_top1):g} for {100 * float(target_top1):g}%.", stacklevel=3)
    if target_macs is not None and target_macs <= 0:
        raise ValueError(f"target_macs is a budget of mean MACs per sample and must be positive; got {target_macs!r}.")
    if val.num_samples == 0:
        raise ValueError("the validation split is empty: thresholds must be calibrated on validation data.")


def calibrate(val: StagedOutputs, criterion: str, *, target_top1: float | None = None,
              target_macs: float | None = None, gate: LearnedGate | None = None, points: int = 200) -> Policy:
    """Thresholds from the validation split only: the cheapest policy whose val top-1 reaches ``target_top1``, or the
    most accurate whose mean MACs stay within ``target_macs``. One threshold shared by all stages (our choice: a
    1-D family that is cheap to calibrate and hard to overfit; :func:`calibrate_per_stage` frees them). An
    unreachable target gives the most accurate policy (all stages) or the cheapest (S0 alone)."""
    _check_calibration(val, target_top1, target_macs)
    if criterion == "gate" and gate is None:
        gate = LearnedGate.fit(val)
    score, rank = _scorer(val, criterion, gate), _ranker(target_top1, target_macs)
    best: tuple[tuple, float] | None = None
    for tau in candidate_thresholds(val, criterion, gate=gate, points=points):
        key = rank(*score([tau] * (val.num_stages - 1)))
        if not key[0] and (best is None or key < best[0]):
            best = (key, tau)
    if best is None:
        tau = math.inf if target_top1 is not None else -math.inf
    else:
        tau = best[1]
    return _shared(criterion, tau, val.num_stages, gate)


def calibrate_per_stage(val: StagedOutputs, criterion: str, *, target_top1: float | None = None,
                        target_macs: float | None = None, gate: LearnedGate | None = None, points: int = 200,
                        rounds: int = 3) -> Policy:
    """One threshold per stage, from the validation split only, by coordinate search: start at the shared-threshold
    policy of :func:`calibrate`, then set one stage's threshold at a time to the candidate (a quantile of that stage's
    confidence on val, or +-inf) that best improves the objective while meeting the target (lower mean MACs for
    ``target_top1``, higher top-1 for ``target_macs``); stop after ``rounds`` passes over the stages or when no move
    helps. Moves are accepted only when they improve, so on val the result is never worse than :func:`calibrate`'s.
    With more free thresholds it may overfit val more: report its test numbers next to the shared policy's."""
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be an int >= 1 (passes of the coordinate search), got {rounds!r}.")
    start = calibrate(val, criterion, target_top1=target_top1, target_macs=target_macs, gate=gate, points=points)
    score, rank = _scorer(val, criterion, start.gate), _ranker(target_top1, target_macs)
    qs = torch.linspace(0, 1, points, dtype=torch.float64)
    candidates = [[-math.inf, *sorted(set(torch.quantile(c.double(), qs).tolist())), math.inf]
                  for c in _stage_confidences(val, criterion, start.gate)]
    thresholds = list(start.thresholds)
    best = rank(*score(thresholds))
    for _ in range(rounds):
        improved = False
        for k, stage_candidates in enumerate(candidates):
            for tau in stage_candidates:
                trial = thresholds[:k] + [tau] + thresholds[k + 1:]
                key = rank(*score(trial))
                if not key[0] and key < best:  # a move must meet the target (an unreachable one keeps the start)
                    thresholds, best, improved = trial, key, True
        if not improved:
            break
    return Policy(criterion, thresholds, start.gate)


def cascade(chain: StagedOutputs, teacher_logits: Tensor, teacher_macs: int, *,
            stages: int | None = None) -> StagedOutputs:
    """A cascade that ends at the teacher, as staged outputs: the first ``stages`` stages of ``chain`` (default all:
    S0, S0 + S1, ...), then the teacher itself, whose prediction replaces the chain's and whose full MACs a sample
    that reaches it pays on top of every chain stage it ran. One definition for the two-tier cascade (a chain of S0
    alone, or ``stages=1``: S0 -> T) and the chain-to-teacher (S0 -> S0 + S1 -> ... -> T, the res-students as middle
    exits); the result is an ordinary :class:`StagedOutputs`, so :func:`calibrate`, :func:`calibrate_per_stage`,
    :func:`at_budgets` and :func:`evaluate_policy` (the cost: each sample's stages actually run) serve all of them,
    and :class:`Cascade` executes them. It needs no training beyond the chain's: the two-tier cascade is what a
    practitioner with the teacher at hand would deploy, the baseline every ResKD regime is held against at the same
    mean MACs."""
    stages = chain.num_stages if stages is None else stages
    if isinstance(stages, bool) or not isinstance(stages, int) or not 1 <= stages <= chain.num_stages:
        raise ValueError(f"stages must be an int from 1 to the chain's {chain.num_stages} stages (how many of them "
                         f"precede the teacher), got {stages!r}.")
    if teacher_logits.shape != chain.logits.shape[1:]:
        raise ValueError(f"teacher logits {tuple(teacher_logits.shape)} do not match the student's "
                         f"{tuple(chain.logits.shape[1:])}: give the teacher's logits on the same split.")
    return StagedOutputs(torch.cat([chain.logits[:stages], teacher_logits[None]]), chain.labels,
                         [*chain.stage_macs[:stages], int(teacher_macs)], teacher_logits)


def at_budgets(val: StagedOutputs, test: StagedOutputs, budgets_pct: Sequence[float], teacher_macs: int, *,
               criterion: str = "max_prob", per_stage: bool = False, gate: LearnedGate | None = None) -> pd.DataFrame:
    """Budgeted evaluation (as MSDNet reports it): for each budget of mean MACs per image (% of the teacher's), the
    most accurate policy on val whose mean MACs stay within it (:func:`calibrate`, or :func:`calibrate_per_stage`),
    evaluated on val and on test. ``fits`` says whether the policy meets the budget on val (a first stage dearer than
    the budget cannot); test is only reported. ``gate``: the :class:`LearnedGate` of criterion "gate" (fit on val
    when None)."""
    rows = []
    if criterion == "gate" and gate is None:
        gate = LearnedGate.fit(val)  # once for every budget
    for budget in budgets_pct:
        find = calibrate_per_stage if per_stage else calibrate
        policy = find(val, criterion, target_macs=budget / 100.0 * teacher_macs, gate=gate)
        on_val = evaluate_policy(val, policy, teacher_macs=teacher_macs)
        on_test = evaluate_policy(test, policy, teacher_macs=teacher_macs)
        row = {"budget_pct": float(budget), "criterion": criterion, "thresholds": list(policy.thresholds),
               "fits": on_val["pct_teacher"] <= budget}
        row.update({f"val_{k}": v for k, v in on_val.items()})
        row.update({f"test_{k}": v for k, v in on_test.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def budget_range(staged: StagedOutputs, teacher_macs: int, *, points: int = 10,
                 max_pct: float | None = None) -> list[float]:
    """``points`` budgets of mean MACs per image (% of the teacher's), evenly spaced from S0's cost to the full
    chain's (or to ``max_pct`` when it is lower: a cap, e.g. for the cascade, whose full chain is dearer than the
    teacher)."""
    if isinstance(points, bool) or not isinstance(points, int) or points < 2:
        raise ValueError(f"points must be an int >= 2 (the cheapest and the dearest budget at least), got {points!r}.")
    if staged.num_stages < 2:
        raise ValueError("a single stage has nothing to skip: budgets need S0 plus at least one later stage.")
    lo, hi = (100.0 * staged.cumulative_macs[k] / teacher_macs for k in (0, -1))
    if max_pct is not None:
        if max_pct <= lo:
            raise ValueError(f"max_pct {max_pct}% is not above S0's cost ({lo:.2f}% of the teacher): give a larger "
                             f"cap or none.")
        hi = min(hi, float(max_pct))
    return np.linspace(lo, hi, points).tolist()


def random_fractions(cumulative_macs: Sequence[float], target_macs: float) -> list[float]:
    """Exit fractions whose mean MACs equal ``target_macs``: samples split between the two adjacent stages whose
    cumulative MACs bracket it (all at S0 below S0's cost, all at the last stage above the full chain's)."""
    cum = [float(m) for m in cumulative_macs]
    if not _is_number(target_macs) or not math.isfinite(target_macs):
        raise ValueError(f"target_macs must be a finite number of mean MACs per sample, got {target_macs!r}.")
    fractions = [0.0] * len(cum)
    if target_macs <= cum[0]:
        fractions[0] = 1.0
    elif target_macs >= cum[-1]:
        fractions[-1] = 1.0
    else:
        k = next(i for i in range(len(cum) - 1) if cum[i] <= target_macs < cum[i + 1])
        upper = (target_macs - cum[k]) / (cum[k + 1] - cum[k])
        fractions[k], fractions[k + 1] = 1.0 - upper, upper
    return fractions


def budget_curves(val: StagedOutputs, test: StagedOutputs, budgets_pct: Sequence[float], teacher_macs: int, *,
                  criteria: Sequence[str] = tuple(CRITERIA), gate: LearnedGate | None = None,
                  seed: int = 0) -> pd.DataFrame:
    """Budgeted evaluation of every criterion of ``criteria`` (:func:`at_budgets`: thresholds from val, test only
    reported) and of random exits at the same mean MACs (``method`` "random": :func:`random_fractions` of each
    budget, drawn with ``seed`` on each split). One row per (method, budget), with val and test columns."""
    if val.num_samples == 0:
        raise ValueError("the validation split is empty: thresholds must be calibrated on validation data.")
    if "gate" in criteria and gate is None:
        gate = LearnedGate.fit(val)
    frames = [at_budgets(val, test, budgets_pct, teacher_macs, criterion=c,
                         gate=gate if c == "gate" else None).rename(
        columns={"criterion": "method"}) for c in criteria]
    rows = []
    for budget in budgets_pct:
        fractions = random_fractions(val.cumulative_macs, budget / 100.0 * teacher_macs)
        row = {"budget_pct": float(budget), "method": "random", "thresholds": None}
        for split, st in (("val", val), ("test", test)):
            out = evaluate_exits(st, random_exits(st, fractions, seed=seed), teacher_macs=teacher_macs)
            row.update({f"{split}_{k}": v for k, v in out.items()})
        row["fits"] = row["val_pct_teacher"] <= budget + 1e-9
        rows.append(row)
    return pd.concat(frames + [pd.DataFrame(rows)], ignore_index=True)


def exit_fractions_by_class(exits: Tensor, labels: Tensor, num_stages: int, num_classes: int) -> Tensor:
    """``(classes, stages)``: for each class, the fraction of its samples that stop after each stage (a class with
    no sample gets a row of NaN)."""
    if exits.shape != labels.shape or exits.dim() != 1:
        raise ValueError(f"give one exit stage per label: exits {tuple(exits.shape)}, labels {tuple(labels.shape)}.")
    counts = torch.zeros(num_classes, num_stages, dtype=torch.float64)
    counts.index_put_((labels.long(), exits.long()), torch.ones(len(labels), dtype=torch.float64), accumulate=True)
    return counts / counts.sum(1, keepdim=True)


def trivial_exit(exits: Tensor) -> int | None:
    """The stage every sample exits at when all exit at one (a trivial policy: a static model), else None."""
    if len(exits) == 0:
        raise ValueError("no exits: give the exit stage of at least one sample.")
    stages = torch.unique(exits)
    return int(stages[0]) if len(stages) == 1 else None


def speedup_verdict(exits: Tensor, realized: float, macs_speedup: float, *, target: float = 0.8) -> dict:
    """Whether masked execution delivered the speedup its MACs promise: ``ratio`` = realized / MACs speedup against
    ``target``. A trivial policy (:func:`trivial_exit`) gets no ratio and no verdict, only the reason: it runs a
    static prefix of the chain, so its "speedup" measures a smaller model, not adaptive inference."""
    stage = trivial_exit(exits)
    if stage is not None:
        reason = (f"trivial policy: every sample exits after stage S{stage}, so it runs a static model and measures "
                  f"no adaptive skipping; no verdict on the {target:g} target")
        return {"trivial": True, "ratio": None, "target": target, "meets": None, "verdict": reason}
    if not (_is_number(realized) and _is_number(macs_speedup)) or realized <= 0 or macs_speedup <= 0:
        raise ValueError(f"speedups must be positive numbers, got realized={realized!r}, macs={macs_speedup!r}.")
    ratio = float(realized) / float(macs_speedup)
    meets = ratio >= target
    verdict = (f"realized {realized:.2f}x of a promised {macs_speedup:.2f}x: ratio {ratio:.3f}, "
               f"{'meets' if meets else 'misses'} the target {target:g}")
    return {"trivial": False, "ratio": ratio, "target": target, "meets": meets, "verdict": verdict}


class Cascade(nn.Module):
    """Any cascade, executed with masked execution: the first ``stages`` stages of ``chain`` (a
    :class:`reskd.reskd.ResKDEnsemble`, default all its stages; a plain student counts as a chain of one), then the
    ``teacher`` when given. Stage ``k`` runs only on the samples still active after stage ``k - 1`` (gather, run,
    scatter back): a chain stage adds its logits to theirs, the teacher replaces them. ``policy`` has one threshold
    per stage but the last (:func:`cascade`'s staged outputs are what it is calibrated on): the two-tier cascade
    S0 -> T, the chain S0 -> S0 + S1 -> ..., and the chain-to-teacher S0 -> S0 + S1 -> T are all this one module.
    Returns the logits each sample stopped with; ``last_exits`` holds the exit stages (the teacher's is the last).

    Its exits equal :func:`exit_stages` on the staged outputs for every sample whose confidence is more than
    :data:`DECISION_TOLERANCE` away from the threshold it meets; at a tie, the sub-batch's float rounding decides."""

    def __init__(self, chain: nn.Module, teacher: nn.Module | None, policy: Policy, *, stages: int | None = None):
        super().__init__()
        ensemble = chain if isinstance(chain, ResKDEnsemble) else ResKDEnsemble(chain)
        stages = ensemble.num_stages if stages is None else stages
        if isinstance(stages, bool) or not isinstance(stages, int) or not 1 <= stages <= ensemble.num_stages:
            raise ValueError(f"stages must be an int from 1 to the chain's {ensemble.num_stages} stages, got "
                             f"{stages!r}.")
        classes = _num_classes(ensemble)
        if teacher is not None and _num_classes(teacher, "teacher") != classes:
            raise ValueError(f"the student predicts {classes} classes but the teacher "
                             f"{_num_classes(teacher, 'teacher')}: a cascade needs both trained on the same data "
                             f"set's classes.")
        policy.check(stages + (teacher is not None), classes)
        self.ensemble, self.teacher, self.policy, self.chain_stages = ensemble, teacher, policy, stages
        self.gate = policy.gate  # a registered submodule, so that .to(device) moves the gate with the models
        self.last_exits: Tensor | None = None

    @property
    def num_stages(self) -> int:
        """The cascade's stages: the chain's kept stages, and the teacher when there is one."""
        return self.chain_stages + (self.teacher is not None)

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        ens, upto = self.ensemble, self.chain_stages
        s0 = ens.stages[0]
        features = None
        if ens._needs_features(upto):
            maps = s0.forward_features(x)
            features, logits = maps[ens.feature_index], s0.head(maps[-1])
        else:
            logits = s0(x)
        logits = logits.float().clone()
        exits = torch.full((len(x),), self.num_stages - 1, dtype=torch.long, device=x.device)
        active = torch.arange(len(x), device=x.device)
        for k in range(1, self.num_stages):
            conf = confidence(logits[active], self.policy.criterion, gate=self.policy.gate, stage=k - 1)
            stop = conf >= self.policy.thresholds[k - 1]
            exits[active[stop]] = k - 1
            active = active[~stop]
            if len(active) == 0:
                break
            if k < upto:  # a res-student: its logits add to the chain's
                stage = ens.stages[k]
                inp = features[active] if ens.inputs[k] == "features" else x[active]
                inp = inp.contiguous(memory_format=model_memory_format(stage))
                logits[active] = logits[active] + stage(inp).float()
            else:  # the teacher: its prediction replaces the chain's
                inp = x[active].contiguous(memory_format=model_memory_format(self.teacher))
                logits[active] = self.teacher(inp).float()
        self.last_exits = exits
        return logits


class AdaptiveEnsemble(Cascade):
    """A :class:`reskd.reskd.ResKDEnsemble` that really skips work: the :class:`Cascade` of its stages with no
    teacher (``ensemble``: the chain, ``policy``: one threshold per stage but the last)."""

    def __init__(self, ensemble: nn.Module, policy: Policy):
        super().__init__(ensemble, None, policy)


def _num_classes(model: nn.Module, role: str = "student") -> int:
    """The classes a classifier predicts (its ``num_classes``, else its last linear layer's outputs)."""
    n = model_num_classes(model)
    if n is None:
        raise ValueError(f"cannot tell how many classes the {role} predicts: give it a num_classes attribute.")
    return n


def stage_call_times(ensemble: nn.Module, policy: Policy, inputs: Tensor, *, batch_size: int, repeats: int = 5,
                     warmup: int = 1) -> dict[str, float]:
    """Where masked execution's time goes: seconds per image of each stage alone on every input (``S0``, ``S1``,
    ...; a feature stage on S0's precomputed feature map) and of the decision step after S0 (``decision``: the
    confidence, the threshold, and the gather of the samples sent on and the scatter of their logits back), each
    the median of ``repeats`` passes in batches of ``batch_size``."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= len(inputs):
        raise ValueError(f"batch_size must be an int from 1 to the number of inputs ({len(inputs)}), got "
                         f"{batch_size!r}.")
    policy.check(ensemble.num_stages, ensemble.num_classes)
    batches = list(inputs.split(batch_size))
    with torch.inference_mode():
        s0 = ensemble.stages[0]
        feats = [s0.forward_features(x)[ensemble.feature_index] if ensemble._needs_features(ensemble.num_stages)
                 else None for x in batches]
        z0 = [s0(x) for x in batches]
    calls: dict[str, Callable[[int], object]] = {"S0": lambda i: s0(batches[i])}
    for k in range(1, ensemble.num_stages):
        stage, kind = ensemble.stages[k], ensemble.inputs[k]
        calls[f"S{k}"] = (lambda i, stage=stage, kind=kind:
                          stage(feats[i] if kind == "features" else batches[i]))

    def decide(i: int) -> None:
        logits = z0[i].clone()
        conf = confidence(logits, policy.criterion, gate=policy.gate, stage=0)
        active = (conf < policy.thresholds[0]).nonzero().flatten()
        logits[active] = logits[active] + logits[active]  # the scatter back of a stage's output
        batches[i][active]  # the gather of the active samples

    calls["decision"] = decide
    passes = {name: (lambda call=call: [call(i) for i in range(len(batches))]) for name, call in calls.items()}
    return _time_in_turns(passes, inputs, repeats=repeats, warmup=warmup)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_in_turns(passes: Mapping[str, Callable[[], object]], inputs: Tensor, *, repeats: int,
                   warmup: int) -> dict[str, float]:
    """Seconds per image of each pass over ``inputs``: the median of ``repeats`` timed runs after ``warmup`` untimed
    ones, the passes taking turns run by run (so that drift in the machine's load hits all of them alike)."""
    times: dict[str, list[float]] = {name: [] for name in passes}
    with torch.inference_mode():
        for r in range(warmup + repeats):
            for name, run in passes.items():
                _sync(inputs.device)
                start = time.perf_counter()
                run()
                _sync(inputs.device)
                if r >= warmup:
                    times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) / len(inputs) for name, t in times.items()}


def compare_latency(models: Mapping[str, nn.Module], inputs: Tensor, *, batch_size: int, repeats: int = 5,
                    warmup: int = 1) -> dict[str, float]:
    """Seconds per image of each model on ``inputs`` (already on the models' device and in their memory format),
    run in batches of ``batch_size``: the median over ``repeats`` timed passes, after ``warmup`` untimed ones. The
    models take turns pass by pass (each pass runs uninterrupted, with warm caches), so that drift in the machine's
    load hits all of them alike. A model whose cost depends on the sample (:class:`AdaptiveEnsemble`) pays, at batch
    1, the mean of its samples' costs."""
    if not models:
        raise ValueError("models is empty: pass a dict of name -> model to time.")
    if not isinstance(inputs, Tensor) or inputs.dim() == 0 or len(inputs) == 0:
        raise ValueError("inputs must be a non-empty batch of images (a tensor of shape (N, C, H, W)).")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= len(inputs):
        raise ValueError(f"batch_size must be an int from 1 to the number of inputs ({len(inputs)}), got "
                         f"{batch_size!r}; pass more inputs or a smaller batch_size.")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1 (timed passes), got {repeats!r}.")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an int >= 0 (untimed passes), got {warmup!r}.")
    batches = list(inputs.split(batch_size))
    passes = {name: (lambda model=model: [model(x) for x in batches]) for name, model in models.items()}
    return _time_in_turns(passes, inputs, repeats=repeats, warmup=warmup)


def measure_latency(model: nn.Module, inputs: Tensor, *, batch_size: int, repeats: int = 5, warmup: int = 1) -> float:
    """Seconds per image of ``model`` on ``inputs`` in batches of ``batch_size`` (see :func:`compare_latency`)."""
    return compare_latency({"model": model}, inputs, batch_size=batch_size, repeats=repeats, warmup=warmup)["model"]


@torch.no_grad()
def collect(ensemble: nn.Module, loader, *, teacher: nn.Module | None = None,
            device: str | torch.device | None = "auto", precision: str = "fp32") -> StagedOutputs:
    """Run every stage of ``ensemble`` (and the ``teacher``) on an evaluation ``loader``: the cumulative logits of
    each stage in sample order, the labels, and each stage's MACs on the loader's input size."""
    device = resolve_device(device)
    ensemble.eval().to(device)
    if teacher is not None:
        teacher.eval().to(device)
    n = len(loader.data)
    K, C = ensemble.num_stages, ensemble.num_classes
    logits = torch.empty(K, n, C)
    t_logits = torch.empty(n, C) if teacher is not None else None
    labels = torch.empty(n, dtype=torch.long)
    fmt = model_memory_format(ensemble.stages[0])
    for x, y, index in loader:
        x = x.to(device).contiguous(memory_format=fmt)
        # inference_mode is faster than no_grad alone; the buffers filled below stay ordinary tensors
        with torch.inference_mode(), autocast(precision, device, force=True):
            stage_logits = torch.stack(ensemble.cumulative_logits(x)).float().cpu()
            teacher_out = (teacher(x.contiguous(memory_format=model_memory_format(teacher))).float().cpu()
                           if teacher is not None else None)
        logits[:, index] = stage_logits
        labels[index] = y.cpu()
        if teacher_out is not None:
            t_logits[index] = teacher_out
    size = (3, loader.spec.crop_size, loader.spec.crop_size)
    macs = ensemble.stage_macs(size)
    return StagedOutputs(logits, labels, macs, t_logits)
