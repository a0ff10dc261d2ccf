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
(:func:`calibrate`, :func:`sweep`); test data is only evaluated. The cost of a sample is the sum of the MACs of the
stages it ran; the reported cost is the mean over samples.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .utils import model_memory_format, resolve_device

CRITERIA = ("max_prob", "margin", "neg_entropy", "gate")
GATE_FEATURES = ("max_prob", "margin", "neg_entropy")


def confidence(logits: Tensor, criterion: str, *, gate: "LearnedGate | None" = None, stage: int = 0) -> Tensor:
    """Per-sample confidence of ``logits`` under ``criterion`` (higher means more confident)."""
    p = F.softmax(logits.float(), dim=1)
    if criterion == "max_prob":
        return p.max(1).values
    if criterion == "margin":
        top2 = p.topk(2, dim=1).values
        return top2[:, 0] - top2[:, 1]
    if criterion == "neg_entropy":
        return (p * torch.log(p.clamp_min(1e-12))).sum(1)
    if criterion == "gate":
        if gate is None:
            raise ValueError("criterion 'gate' needs a trained LearnedGate (fit one with LearnedGate.fit on val).")
        return gate.confidence(logits, stage)
    raise ValueError(f"unknown criterion {criterion!r}; choose one of {', '.join(CRITERIA)}.")


def criterion_range(criterion: str, num_classes: int) -> tuple[float, float]:
    """The values a criterion's confidence can take."""
    if criterion == "neg_entropy":
        return (-math.log(num_classes), 0.0)
    if criterion in CRITERIA:
        return (0.0, 1.0)
    raise ValueError(f"unknown criterion {criterion!r}; choose one of {', '.join(CRITERIA)}.")


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


@dataclass
class Policy:
    """A criterion and one threshold per stage but the last (which always stops)."""

    criterion: str
    thresholds: list[float]
    gate: LearnedGate | None = field(default=None, repr=False)

    def check(self, num_stages: int, num_classes: int) -> None:
        if self.criterion not in CRITERIA:
            raise ValueError(f"unknown criterion {self.criterion!r}; choose one of {', '.join(CRITERIA)}.")
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


def exit_stages(staged: StagedOutputs, policy: Policy) -> Tensor:
    """The stage (0-based) at which each sample stops."""
    policy.check(staged.num_stages, staged.num_classes)
    exits = torch.full((staged.num_samples,), staged.num_stages - 1, dtype=torch.long)
    active = torch.ones(staged.num_samples, dtype=torch.bool)
    for k, tau in enumerate(policy.thresholds):
        conf = confidence(staged.logits[k], policy.criterion, gate=policy.gate, stage=k)
        stop = active & (conf >= tau)
        exits[stop] = k
        active &= ~stop
    return exits


def evaluate_policy(staged: StagedOutputs, policy: Policy, *, teacher_macs: int | None = None) -> dict[str, float]:
    """Top-1, mean MACs per sample (each pays for the stages it ran), % of the teacher, and the exit fractions."""
    exits = exit_stages(staged, policy)
    preds = staged.logits[exits, torch.arange(staged.num_samples)].argmax(1)
    cum = torch.tensor(staged.cumulative_macs, dtype=torch.float64)
    avg_macs = cum[exits].mean().item()
    out = {"top1": 100.0 * (preds == staged.labels).float().mean().item(), "avg_macs": avg_macs,
           "pct_teacher": 100.0 * avg_macs / teacher_macs if teacher_macs else float("nan")}
    if staged.teacher_logits is not None:
        out["agreement_teacher"] = 100.0 * (preds == staged.teacher_logits.argmax(1)).float().mean().item()
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


def calibrate(val: StagedOutputs, criterion: str, *, target_top1: float | None = None,
              target_macs: float | None = None, gate: LearnedGate | None = None, points: int = 200) -> Policy:
    """Thresholds from the validation split only: the cheapest policy whose val top-1 reaches ``target_top1``, or the
    most accurate whose mean MACs stay within ``target_macs``. One threshold shared by all stages (our choice: a
    1-D family that is cheap to calibrate and hard to overfit)."""
    if (target_top1 is None) == (target_macs is None):
        raise ValueError("give exactly one of target_top1 (percent) or target_macs (mean MACs per sample).")
    if val.num_samples == 0:
        raise ValueError("the validation split is empty: thresholds must be calibrated on validation data.")
    if criterion == "gate" and gate is None:
        gate = LearnedGate.fit(val)
    best: tuple[float, Policy] | None = None
    for tau in candidate_thresholds(val, criterion, gate=gate, points=points):
        policy = _shared(criterion, tau, val.num_stages, gate)
        m = evaluate_policy(val, policy)
        if target_top1 is not None and m["top1"] >= target_top1:
            key = m["avg_macs"]
        elif target_macs is not None and m["avg_macs"] <= target_macs:
            key = -m["top1"]
        else:
            continue
        if best is None or key < best[0]:
            best = (key, policy)
    if best is None:  # unreachable target: the most accurate / the cheapest policy, with the reason
        fallback = math.inf if target_top1 is not None else -math.inf
        return _shared(criterion, fallback, val.num_stages, gate)
    return best[1]


class AdaptiveEnsemble(nn.Module):
    """A :class:`reskd.reskd.ResKDEnsemble` that really skips work: stage ``k`` runs only on the samples still active
    (gather, run, scatter). Returns the logits each sample stopped with; ``last_exits`` holds the exit stages."""

    def __init__(self, ensemble: nn.Module, policy: Policy):
        super().__init__()
        policy.check(ensemble.num_stages, ensemble.num_classes)
        self.ensemble, self.policy = ensemble, policy
        self.last_exits: Tensor | None = None

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        ens = self.ensemble
        s0 = ens.stages[0]
        features = None
        if ens._needs_features(ens.num_stages):
            maps = s0.forward_features(x)
            features, logits = maps[ens.feature_index], s0.head(maps[-1])
        else:
            logits = s0(x)
        logits = logits.clone()
        exits = torch.full((len(x),), ens.num_stages - 1, dtype=torch.long, device=x.device)
        active = torch.arange(len(x), device=x.device)
        for k in range(1, ens.num_stages):
            conf = confidence(logits[active], self.policy.criterion, gate=self.policy.gate, stage=k - 1)
            stop = conf >= self.policy.thresholds[k - 1]
            exits[active[stop]] = k - 1
            active = active[~stop]
            if len(active) == 0:
                break
            inp = features[active] if ens.inputs[k] == "features" else x[active]
            logits[active] = logits[active] + ens.stages[k](inp)
        self.last_exits = exits
        return logits


@torch.no_grad()
def collect(ensemble: nn.Module, loader, *, teacher: nn.Module | None = None,
            device: str | torch.device | None = "auto") -> StagedOutputs:
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
        logits[:, index] = torch.stack(ensemble.cumulative_logits(x)).float().cpu()
        labels[index] = y.cpu()
        if teacher is not None:
            t_logits[index] = teacher(x.contiguous(memory_format=model_memory_format(teacher))).float().cpu()
    size = (3, loader.spec.crop_size, loader.spec.crop_size)
    macs = ensemble.stage_macs(size)
    return StagedOutputs(logits, labels, macs, t_logits)
