"""Checkable facts about the logit residual (the book's first chapter proves them; these functions measure them).

Notation as in :mod:`reskd.reskd`: ``z_T`` the teacher's logits, ``Z`` an ensemble's (cumulative) logits and
``r = z_T - Z`` the residual, all ``(N, C)`` tensors (N samples, C classes). The two statements:

1. *Energy.* A stage ``z_k`` added to ``Z_{k-1}`` leaves the residual ``r_{k+1} = r_k - z_k``, so the new residual
   energy equals the stage's squared error on the old residual, ``E_{k+1} = mean ||r_k - z_k||^2``: the energy falls
   exactly when that error is below ``E_k`` (the error of predicting zero). The same holds for centered residuals.
   Given ``z_k = Z_k - Z_{k-1}`` this is an identity; :func:`stage_theory_records` measures it instead from each
   stage's *own* logits (the res-student's network run alone) against the ensemble's logits ``Z_k`` (the ensemble's
   forward pass), so it checks that the trained ensemble is the sum of its stages, up to float32 rounding.
2. *Predictions.* For every sample and class, ``|log softmax(z_T)_c - log softmax(Z)_c| <= max_c r_c - min_c r_c``
   (the residual's *oscillation*, which is ``<= 2 ||r||_inf`` and ``<= 2 ||centered(r)||_inf``); and where the
   teacher's top-1 margin exceeds the oscillation, ``Z`` predicts the teacher's class. So the top-1 disagreement
   rate is at most the fraction of samples with ``margin(z_T) <= osc(r)`` (:func:`disagreement_bound`).

Everything is computed in float64, so a measured violation would be a real one, not rounding.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from .adaptive import StagedOutputs
from .metrics import centered, correct, residual_energy
from .results import plain_json

#: The per-sample bounds of the log-probability gap: ``oscillation`` (the tightest), ``max_norm`` (2 ||r||_inf) and
#: ``centered_max_norm`` (2 ||r - mean_c r||_inf).
BOUNDS = ("oscillation", "max_norm", "centered_max_norm")
#: Relative slack when a check compares two float64 quantities that are equal or ordered in exact arithmetic.
TOLERANCE = 1e-9
#: Relative slack (of ``E_k``) of statement 1's check: ``E_{k+1}`` and the stage's loss come from float32 logits
#: computed along two paths (the ensemble's forward pass and each stage's network alone), which agree only up to
#: float32 rounding (about 1e-7 of a logit); a stage that is not what the ensemble adds misses it by far more.
STAGE_TOLERANCE = 1e-5
DEFAULT_BINS = 5
#: Resamples of the bootstrap over samples (:func:`stage_explained_variance_se`) and the margin, in standard errors,
#: within which two explained fractions are not told apart (:func:`stall_verdict`).
BOOTSTRAP_RESAMPLES, MARGIN_Z = 200, 2.0


def _check_logits(teacher_logits: Tensor, logits: Tensor) -> tuple[Tensor, Tensor]:
    """Both as float64 ``(N, C)`` tensors of the same shape, or a ValueError naming both shapes."""
    if teacher_logits.dim() != 2 or teacher_logits.shape != logits.shape:
        raise ValueError(f"teacher logits {tuple(teacher_logits.shape)} and logits {tuple(logits.shape)} must both "
                         "be (samples, classes) with the same shape; pass the two models' outputs on the same inputs.")
    return teacher_logits.double(), logits.double()


def oscillation(residual: Tensor) -> Tensor:
    """``max_c r_c - min_c r_c`` per sample of an ``(N, C)`` residual (invariant to a per-sample shift)."""
    if residual.dim() != 2:
        raise ValueError(f"the residual must be (samples, classes), got shape {tuple(residual.shape)}.")
    return residual.amax(1) - residual.amin(1)


def sample_energy(teacher_logits: Tensor, logits: Tensor, *, center: bool = False) -> Tensor:
    """``||z_T(x) - Z(x)||^2`` per sample (optionally of the centered residual); its mean is the residual energy."""
    t, z = _check_logits(teacher_logits, logits)
    r = t - z
    return (centered(r) if center else r).pow(2).sum(1)


def ks_distance(a: Sequence[float], b: Sequence[float]) -> float:
    """The two-sample Kolmogorov-Smirnov distance: the largest gap between the empirical CDFs of ``a`` and ``b``
    (0: the same distribution of values; 1: no overlap), to say when two plotted CDFs lie on top of each other."""
    a, b = np.sort(np.asarray(a, dtype=float)), np.sort(np.asarray(b, dtype=float))
    if a.size == 0 or b.size == 0:
        raise ValueError("ks_distance needs at least one value in each sample.")
    points = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, points, side="right") / a.size
    cdf_b = np.searchsorted(b, points, side="right") / b.size
    return float(np.abs(cdf_a - cdf_b).max())


def explained_variance(target: Tensor, prediction: Tensor) -> float:
    """The fraction of ``target``'s variance over samples that ``prediction`` explains, both ``(N, C)`` logits centered
    over classes first (softmax ignores a per-sample shift): ``1 - SSE / SST`` with the squared errors and the
    target's squared deviations from its mean over samples summed over samples and classes. 1: a perfect fit;
    0: no better than predicting the target's mean; negative: worse than that."""
    t, z = _check_logits(target, prediction)
    t, z = centered(t), centered(z)
    total = (t - t.mean(0, keepdim=True)).pow(2).sum()
    if total.item() <= 0:
        raise ValueError("the target is constant over the samples (after centering): its variance is 0, so the "
                         "explained fraction is undefined; pass a target that varies.")
    return 1.0 - ((t - z).pow(2).sum() / total).item()


def stage_explained_variance(st: StagedOutputs) -> list[float]:
    """Per res-student ``k = 1, 2, ...``: the fraction of its target ``r_k = z_T - Z_{k-1}`` that its output
    ``z_k = Z_k - Z_{k-1}`` explains (:func:`explained_variance`); needs the teacher's logits in ``st``."""
    if st.teacher_logits is None:
        raise ValueError("the staged outputs carry no teacher logits; the residual targets need them.")
    return [explained_variance(st.teacher_logits - st.logits[k - 1], st.logits[k] - st.logits[k - 1])
            for k in range(1, st.num_stages)]


def stage_explained_variance_se(st: StagedOutputs, *, resamples: int = BOOTSTRAP_RESAMPLES,
                                seed: int = 0) -> tuple[list[float], list[float]]:
    """Bootstrap standard errors over ``st``'s samples (``resamples`` draws with replacement, seeded): of each
    res-student's explained fraction (:func:`stage_explained_variance`), and of each difference between consecutive
    ones (stage ``k+1``'s minus stage ``k``'s, both on the same drawn samples)."""
    if st.teacher_logits is None:
        raise ValueError("the staged outputs carry no teacher logits; the residual targets need them.")
    if resamples < 2:
        raise ValueError(f"resamples must be at least 2 to estimate a spread, got {resamples!r}.")
    pairs = [(st.teacher_logits - st.logits[k - 1], st.logits[k] - st.logits[k - 1]) for k in range(1, st.num_stages)]
    g = torch.Generator().manual_seed(seed)
    draws = []
    for _ in range(resamples):
        rows = torch.randint(0, st.num_samples, (st.num_samples,), generator=g)
        draws.append([explained_variance(target[rows], prediction[rows]) for target, prediction in pairs])
    values = np.asarray(draws, dtype=float).reshape(resamples, len(pairs))
    return (values.std(0, ddof=1).tolist(), np.diff(values, axis=1).std(0, ddof=1).tolist())


def stall_verdict(fractions: Sequence[float], fraction_se: Sequence[float], difference_se: Sequence[float], *,
                  z: float = MARGIN_Z) -> tuple[str, list[str]]:
    """Whether a chain's explained fractions fall stage by stage until they stall, decided with a margin of ``z``
    standard errors (:func:`stage_explained_variance_se`), never by a strict ``<`` between values at noise level.

    Each step ``a -> b`` is ``"falls"`` (``b < a - z * se(b - a)``), ``"rises"`` (``b > a + z * se(b - a)``),
    ``"stalled"`` (neither, and neither fraction is above 0 by more than ``z`` of its standard errors: both stages
    explain nothing of their residual, or less than nothing, so there is nothing left to fall) or ``"level"``
    (neither, with something explained). The verdict: ``"does not hold"`` if a step rises, ``"holds"`` if every step
    falls or is stalled, else ``"undecided"``. Returns the verdict and the steps' words."""
    if not len(fractions) == len(fraction_se) == len(difference_se) + 1:
        raise ValueError(f"{len(fractions)} fractions need as many standard errors and one fewer of the differences; "
                         f"got {len(fraction_se)} and {len(difference_se)}.")
    steps = []
    for a, b, se_a, se_b, se in zip(fractions, fractions[1:], fraction_se, fraction_se[1:], difference_se):
        if b < a - z * se:
            steps.append("falls")
        elif b > a + z * se:
            steps.append("rises")
        elif a <= z * se_a and b <= z * se_b:
            steps.append("stalled")
        else:
            steps.append("level")
    if "rises" in steps:
        return "does not hold", steps
    return ("holds" if all(step in ("falls", "stalled") for step in steps) else "undecided"), steps


def logprob_gap(teacher_logits: Tensor, logits: Tensor) -> Tensor:
    """``max_c |log softmax(z_T)_c - log softmax(Z)_c|`` per sample."""
    t, z = _check_logits(teacher_logits, logits)
    return (torch.log_softmax(t, 1) - torch.log_softmax(z, 1)).abs().amax(1)


def logprob_gap_bound(teacher_logits: Tensor, logits: Tensor, *, kind: str = "oscillation") -> Tensor:
    """A per-sample upper bound of :func:`logprob_gap` from the residual ``r = z_T - Z`` alone (see :data:`BOUNDS`):
    ``max r - min r``, ``2 max|r|`` or ``2 max|r - mean r|``."""
    t, z = _check_logits(teacher_logits, logits)
    r = t - z
    if kind == "oscillation":
        return oscillation(r)
    if kind == "max_norm":
        return 2 * r.abs().amax(1)
    if kind == "centered_max_norm":
        return 2 * centered(r).abs().amax(1)
    raise ValueError(f"unknown bound {kind!r}; choose one of {', '.join(BOUNDS)}.")


def top1_margin(logits: Tensor) -> Tensor:
    """Largest minus second-largest logit per sample (0 where the top two tie)."""
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ValueError(f"logits must be (samples, classes) with at least 2 classes, got {tuple(logits.shape)}.")
    top2 = logits.double().topk(2, dim=1).values
    return top2[:, 0] - top2[:, 1]


def _check_samples(t: Tensor) -> None:
    if t.shape[0] == 0:
        raise ValueError("no samples: a rate over zero samples is undefined; pass at least one sample's logits.")


def disagreement_rate(teacher_logits: Tensor, logits: Tensor) -> float:
    """The fraction of samples whose top-1 class differs from the teacher's (in [0, 1]): the complement of
    :func:`reskd.metrics.agreement`, from the same per-sample test (:func:`reskd.metrics.correct` against the teacher's
    classes), averaged in float64 so that it compares exactly with :func:`disagreement_bound`."""
    t, z = _check_logits(teacher_logits, logits)
    _check_samples(t)
    return (~correct(z, t.argmax(1))).double().mean().item()


def disagreement_bound(teacher_logits: Tensor, logits: Tensor, *, kind: str = "oscillation") -> float:
    """The fraction of samples whose teacher margin is ``<=`` the residual's bound (:func:`logprob_gap_bound`): an
    upper bound of :func:`disagreement_rate`, since a larger margin forces the teacher's class."""
    t, z = _check_logits(teacher_logits, logits)
    _check_samples(t)
    return (top1_margin(t) <= logprob_gap_bound(t, z, kind=kind)).double().mean().item()


def kd_limit(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """``mean_x ||centered(z_S) - centered(z_T)||^2 / (2C)``: the limit of Hinton's ``T^2``-scaled KD loss
    (:func:`reskd.distill.kd_loss`) as the temperature ``T`` grows."""
    t, s = _check_logits(teacher_logits, student_logits)
    return (centered(s) - centered(t)).pow(2).sum(1).mean() / (2 * t.shape[1])


def energy_by_confidence(teacher_logits: Tensor, logits: Tensor, labels: Tensor, *, bins: int = DEFAULT_BINS,
                         center: bool = False) -> pd.DataFrame:
    """Samples binned into ``bins`` equal-count groups by the max softmax probability of ``logits``: per bin the
    confidence range, the mean residual energy ``||z_T - Z||^2``, the bin's share of the total energy (%), and the
    top-1 accuracy (%) of ``logits``."""
    t, z = (x.cpu() for x in _check_logits(teacher_logits, logits))
    _check_samples(t)
    if labels.shape != (t.shape[0],):
        raise ValueError(f"labels {tuple(labels.shape)} must be one per sample ({t.shape[0]},).")
    if bins < 1:
        raise ValueError(f"bins must be a positive number of groups, got {bins}.")
    frame = pd.DataFrame({"confidence": torch.softmax(z, 1).amax(1).numpy(),
                          "energy": sample_energy(t, z, center=center).numpy(),
                          "correct": correct(z, labels.cpu()).numpy()})
    frame["bin"] = pd.qcut(frame["confidence"].rank(method="first"), min(bins, len(frame)), labels=False)
    total = frame["energy"].sum()
    table = frame.groupby("bin").agg(samples=("energy", "size"), confidence_low=("confidence", "min"),
                                     confidence_high=("confidence", "max"), energy_mean=("energy", "mean"),
                                     energy_sum=("energy", "sum"), top1_pct=("correct", "mean"))
    table["energy_share_pct"] = 100.0 * table.pop("energy_sum") / total if total > 0 else 0.0
    table["top1_pct"] *= 100.0
    return table.reset_index(drop=True)


def _own_logits(split: str, st: StagedOutputs, own: Tensor | Sequence[Tensor] | None) -> Tensor:
    """A split's per-stage own logits as one float64 ``(K, N, C)`` tensor matching ``st``, or a ValueError."""
    if own is None:
        raise ValueError(f"no stage logits for split {split!r}: statement 1 is checked against each stage's own "
                         "output (its network run alone; ResKDRuns.stage_outputs), not Z_k - Z_(k-1), which would "
                         "make it an identity.")
    own = torch.stack(list(own)) if not isinstance(own, Tensor) else own
    if tuple(own.shape) != tuple(st.logits.shape):
        raise ValueError(f"the stage logits of split {split!r} have shape {tuple(own.shape)} but its staged outputs "
                         f"{tuple(st.logits.shape)}; give one (samples, classes) output per stage, same samples.")
    return own.double()


def stage_theory_records(staged_by_split: Mapping[str, StagedOutputs],
                         stage_logits: Mapping[str, Tensor | Sequence[Tensor]], *,
                         bound: str = "oscillation") -> pd.DataFrame:
    """One row per (split, stage ``k``) with the numbers behind the two statements.

    ``staged_by_split[split].logits[k]`` is the ensemble's ``Z_k`` (its forward pass); ``stage_logits[split][k]`` is
    stage ``k``'s own output ``z_k`` (its network run alone, e.g. :meth:`reskd.experiment.ResKDRuns.stage_outputs`).
    Energies (raw and centered): ``energy_before`` ``E_k`` of ``r_k = z_T - Z_{k-1}`` (``Z_{-1} = 0``),
    ``energy_after`` ``E_{k+1}`` (from ``Z_k``), ``stage_mse`` the stage's own squared error ``mean ||r_k - z_k||^2``;
    ``step`` the least-squares scale of the stage's centered output against the centered ``r_k`` (1: right size, 0:
    unrelated to the residual; 0 also for a stage that outputs zero); ``lowers_energy`` whether ``E_{k+1} < E_k``;
    ``statement1_gap`` ``|E_{k+1} - stage_mse| / (1 + E_k)`` (the larger of raw and centered) and
    ``statement1_holds`` whether it is within :data:`STAGE_TOLERANCE` (float32 rounding): false when the ensemble's
    logits are not the sum of its stages' own outputs. Predictions after stage ``k``: the log-probability gap and its
    bound (mean, max), ``bound_holds`` on every sample, the top-1 disagreement with the teacher and its bound (%),
    and ``statement2_holds`` (both bounds hold).
    """
    if not staged_by_split:
        raise ValueError("no splits given; pass e.g. {'train': staged, 'test': staged} from ResKDRuns.staged.")
    stages = {split: st.num_stages for split, st in staged_by_split.items()}
    if len(set(stages.values())) != 1:
        raise ValueError(f"the splits have different numbers of stages {stages}; stage them with the same ensemble.")
    rows = []
    for split, st in staged_by_split.items():
        if st.teacher_logits is None:
            raise ValueError(f"the staged outputs of split {split!r} have no teacher logits; get them with "
                             "ResKDRuns.staged, or set teacher_logits.")
        own = _own_logits(split, st, stage_logits.get(split))
        t = st.teacher_logits.double()
        previous = torch.zeros_like(t)
        for k in range(st.num_stages):
            total = st.logits[k].double()
            t, total = _check_logits(t, total)
            r, z_k = t - previous, own[k]
            before, after = residual_energy(t, previous).item(), residual_energy(t, total).item()
            before_c, after_c = (residual_energy(t, previous, center=True).item(),
                                 residual_energy(t, total, center=True).item())
            mse, mse_c = (r - z_k).pow(2).sum(1).mean().item(), (centered(r) - centered(z_k)).pow(2).sum(1).mean().item()
            size = centered(z_k).pow(2).sum().item()
            step = (centered(r) * centered(z_k)).sum().item() / size if size > 0 else 0.0
            gap, limit = logprob_gap(t, total), logprob_gap_bound(t, total, kind=bound)
            bound_holds = bool((gap <= limit + TOLERANCE * (1.0 + limit)).all())
            disagreement, disagreement_limit = disagreement_rate(t, total), disagreement_bound(t, total, kind=bound)
            statement1_gap = max(abs(after - mse) / (1.0 + before), abs(after_c - mse_c) / (1.0 + before_c))
            rows.append({
                "split": split, "stage": k, "samples": st.num_samples,
                "energy_before": before, "energy_after": after, "stage_mse": mse,
                "energy_before_centered": before_c, "energy_after_centered": after_c, "stage_mse_centered": mse_c,
                "step": step, "lowers_energy": after < before, "statement1_gap": statement1_gap,
                "statement1_holds": statement1_gap <= STAGE_TOLERANCE,
                "gap_mean": gap.mean().item(), "gap_max": gap.max().item(),
                "bound_mean": limit.mean().item(), "bound_max": limit.max().item(), "bound_holds": bound_holds,
                "disagreement_pct": 100.0 * disagreement, "disagreement_bound_pct": 100.0 * disagreement_limit,
                "statement2_holds": bound_holds and disagreement <= disagreement_limit,
            })
            previous = total
    return pd.DataFrame(rows)


def json_ready(frame: pd.DataFrame) -> list[dict]:
    """``frame``'s rows as plain-JSON dicts (numpy scalars to Python, NaN and inf to None; see
    :func:`reskd.results.plain_json`)."""
    return plain_json(frame.to_dict(orient="records"))
