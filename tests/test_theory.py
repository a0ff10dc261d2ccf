"""The residual statements of chapter 01 on random logits and small constructed cases."""
import json
import math

import numpy as np

import pytest
import torch

from reskd.adaptive import StagedOutputs
from reskd.distill import kd_loss
from reskd.reskd import residual_energy
from reskd.theory import (BOUNDS, MARGIN_Z, STAGE_TOLERANCE, disagreement_bound, disagreement_rate, energy_by_confidence, explained_variance,
                          json_ready, kd_limit, ks_distance, logprob_gap, logprob_gap_bound, oscillation, sample_energy,
                          stage_explained_variance, stage_explained_variance_se, stage_theory_records,
                          stall_verdict, top1_margin)

SCALES = (1e-3, 0.1, 1.0, 10.0, 100.0, 1e4)  # logit magnitudes, from nearly uniform to saturated softmax


def random_pairs(seed: int = 0):
    """(teacher, ensemble) logits over many shapes and scales, with residuals from tiny to larger than the logits."""
    g = torch.Generator().manual_seed(seed)
    for classes in (2, 3, 10, 100):
        for scale in SCALES:
            for residual_scale in (1e-3, 0.3, 3.0):
                teacher = scale * torch.randn(64, classes, generator=g)
                shift = scale * torch.randn(64, 1, generator=g)  # a per-sample shift, invisible to softmax
                yield teacher, teacher - residual_scale * scale * torch.randn(64, classes, generator=g) + shift


def staged(teacher: torch.Tensor, cumulative: list[torch.Tensor]) -> StagedOutputs:
    return StagedOutputs(torch.stack(cumulative), torch.zeros(len(teacher), dtype=torch.long), [1] * len(cumulative),
                         teacher)


def own(cumulative: list[torch.Tensor]) -> torch.Tensor:
    """Each stage's own output when the ensemble is exactly the running sum of the stages (constructed cases)."""
    return torch.stack([cumulative[0]] + [b - a for a, b in zip(cumulative, cumulative[1:])])


def records(splits: dict[str, list[torch.Tensor]], teacher: torch.Tensor, **kw):
    """stage_theory_records of constructed cumulative logits per split, their stages' outputs their differences."""
    return stage_theory_records({split: staged(teacher[:len(cum[0])], cum) for split, cum in splits.items()},
                                {split: own(cum) for split, cum in splits.items()}, **kw)


def test_gap_never_exceeds_any_bound_on_random_logits():
    checked = 0
    for teacher, logits in random_pairs():
        gap = logprob_gap(teacher, logits)
        osc = logprob_gap_bound(teacher, logits)
        assert (gap <= osc * (1 + 1e-9) + 1e-12).all()
        for kind in BOUNDS:
            assert (osc <= logprob_gap_bound(teacher, logits, kind=kind) * (1 + 1e-12) + 1e-12).all(), kind
        checked += len(gap)
    assert checked == 4 * len(SCALES) * 3 * 64


def test_oscillation_bound_is_tight():
    """Z puts nearly all its mass on class 0 and the residual is (a, b, ..., b): the gap of class 1 is a - b."""
    a, b, peak = 3.0, -1.0, 60.0
    logits = torch.tensor([[peak, 0.0, 0.0, 0.0]])
    teacher = logits + torch.tensor([[a, b, b, b]])
    assert logprob_gap(teacher, logits).item() == pytest.approx(a - b, rel=1e-12)
    assert logprob_gap_bound(teacher, logits).item() == pytest.approx(a - b)


def test_two_max_norms_are_needed_and_attained():
    """With the residual (a, -a, -a) the gap reaches 2 ||r||_inf: ||r||_inf alone is not a bound."""
    a = 2.5
    logits = torch.tensor([[60.0, 0.0, 0.0]])
    teacher = logits + torch.tensor([[a, -a, -a]])
    gap = logprob_gap(teacher, logits).item()
    assert gap == pytest.approx(2 * a, rel=1e-12)
    assert gap > (teacher - logits).abs().max().item()
    assert logprob_gap_bound(teacher, logits, kind="max_norm").item() == pytest.approx(2 * a)


def test_bounds_ignore_or_see_a_per_sample_shift():
    teacher, logits = torch.tensor([[1.0, 0.0, -2.0]]), torch.tensor([[0.5, 0.5, -1.0]])
    shifted = logits + 7.0
    torch.testing.assert_close(logprob_gap(teacher, shifted), logprob_gap(teacher, logits))
    for kind in ("oscillation", "centered_max_norm"):
        torch.testing.assert_close(logprob_gap_bound(teacher, shifted, kind=kind),
                                   logprob_gap_bound(teacher, logits, kind=kind))
    assert logprob_gap_bound(teacher, shifted, kind="max_norm").item() > 14.0  # the raw max-norm pays for the shift
    torch.testing.assert_close(oscillation(torch.tensor([[1.0, -2.0, 0.5]])), torch.tensor([3.0]))


def test_top1_margin():
    margin = top1_margin(torch.tensor([[3.0, 1.0, 2.5], [1.0, 1.0, 0.0]]))
    torch.testing.assert_close(margin, torch.tensor([0.5, 0.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="at least 2 classes"):
        top1_margin(torch.zeros(4, 1))


def test_disagreement_bound_on_a_small_case():
    teacher = torch.tensor([[1.0, 0.0], [10.0, 0.0], [0.0, 4.0], [2.0, 0.0]])
    logits = torch.tensor([[0.0, 1.0],  # margin 1 <= osc 2: counted, and the prediction flips
                           [9.0, 0.5],  # margin 10 > osc 1.5: safe
                           [0.0, 1.0],  # margin 4 > osc 3: safe
                           [0.0, 0.0]])  # margin 2 <= osc 2: counted, and argmax picks class 0 on the tie
    assert disagreement_rate(teacher, logits) == pytest.approx(0.25)
    assert disagreement_bound(teacher, logits) == pytest.approx(0.5)
    assert disagreement_bound(teacher, logits, kind="max_norm") == pytest.approx(0.75)


def test_disagreement_bound_covers_measured_disagreement():
    for teacher, logits in random_pairs(seed=1):
        rate = disagreement_rate(teacher, logits)
        for kind in BOUNDS:
            assert rate <= disagreement_bound(teacher, logits, kind=kind), kind
    teacher = torch.randn(500, 10)
    assert disagreement_bound(teacher, teacher + 0.5) == 0.0  # a pure shift never changes the prediction


def test_statement1_on_constructed_stages():
    """Stage 1 fits half the residual (energy falls to a quarter), stage 2 overshoots three-fold (energy rises)."""
    g = torch.Generator().manual_seed(0)
    teacher = 4 * torch.randn(200, 5, generator=g)
    z0 = teacher + torch.randn(200, 5, generator=g)
    z1 = z0 + 0.5 * (teacher - z0)
    z2 = z1 + 3.0 * (teacher - z1)
    rows = records({"train": [z0, z1, z2], "test": [z0[:50], z1[:50], z2[:50]]}, teacher)
    assert list(rows["split"]) == ["train"] * 3 + ["test"] * 3 and list(rows["stage"]) == [0, 1, 2] * 2
    train = rows[rows["split"] == "train"].set_index("stage")
    assert train.loc[0, "energy_before"] == pytest.approx(residual_energy(teacher, torch.zeros_like(teacher)).item())
    assert train.loc[1, "energy_after"] == pytest.approx(0.25 * train.loc[1, "energy_before"])
    assert train.loc[2, "energy_after"] == pytest.approx(4.0 * train.loc[2, "energy_before"])
    assert list(train["lowers_energy"]) == [True, True, False]
    assert list(train["stage_mse"] < train["energy_before"]) == list(train["lowers_energy"])
    assert train["statement1_holds"].all() and rows["statement2_holds"].all()
    assert train.loc[1, "step"] == pytest.approx(2.0) and train.loc[2, "step"] == pytest.approx(1 / 3)
    assert train.loc[2, "energy_after"] == pytest.approx(residual_energy(teacher, z2).item())


def test_statement1_is_measured_from_each_stages_own_output():
    """Statement 1 compares the ensemble's residual energy after stage k with the stage's own squared error on its
    target: it holds, up to float32 rounding, when the ensemble adds the stage's output, and fails when the ensemble's
    logits are not the sum of what its stages output (computed as Z_k - Z_(k-1), it could not fail)."""
    g = torch.Generator().manual_seed(2)
    teacher = 10 * torch.randn(500, 10, generator=g)  # logits of a trained network's size: float32 rounding shows
    z0 = teacher + 3 * torch.randn(500, 10, generator=g)
    s1 = 0.6 * (teacher - z0) + torch.randn(500, 10, generator=g)  # stage 1's own output, fitting part of r_1
    summed = StagedOutputs(torch.stack([z0, z0 + s1]), torch.zeros(500, dtype=torch.long), [1, 1], teacher)
    rows = stage_theory_records({"test": summed}, {"test": [z0, s1]}).set_index("stage")
    r1 = teacher.double() - z0.double()
    assert rows.loc[1, "stage_mse"] == pytest.approx((r1 - s1.double()).pow(2).sum(1).mean().item(), rel=1e-12)
    assert rows["statement1_holds"].all() and rows["statement1_gap"].max() < 1e-6
    # an ensemble that does not add the stage as the stage outputs it: it scales it, or adds another sample's output
    for wrong in (z0 + 0.9 * s1, z0 + s1.roll(1, 0)):
        broken = StagedOutputs(torch.stack([z0, wrong]), summed.labels, [1, 1], teacher)
        rows = stage_theory_records({"test": broken}, {"test": [z0, s1]}).set_index("stage")
        assert rows.loc[0, "statement1_holds"] and not rows.loc[1, "statement1_holds"]
        assert rows.loc[1, "statement1_gap"] > 100 * STAGE_TOLERANCE
        assert rows.loc[1, "energy_after"] == pytest.approx(residual_energy(teacher, wrong).item(), rel=1e-6)
    # S0's own output against the ensemble's first stage: checked the same way
    rows = stage_theory_records({"test": summed}, {"test": [z0 + 0.5, s1]})
    assert list(rows["statement1_holds"]) == [False, True]


def test_stage_records_report_the_bounds():
    g = torch.Generator().manual_seed(1)
    teacher = 3 * torch.randn(300, 10, generator=g)
    z0 = teacher + 2 * torch.randn(300, 10, generator=g)
    rows = records({"test": [z0]}, teacher)
    row = rows.iloc[0]
    assert row["gap_max"] <= row["bound_max"] and row["gap_mean"] <= row["bound_mean"]
    assert row["disagreement_pct"] == pytest.approx(100 * disagreement_rate(teacher, z0))
    assert row["disagreement_pct"] <= row["disagreement_bound_pct"] and bool(row["bound_holds"])
    json.dumps(json_ready(rows), allow_nan=False)


def test_stage_with_zero_output_has_step_zero():
    teacher, z0 = torch.randn(20, 3), torch.randn(20, 3)
    row = records({"val": [z0, z0.clone()]}, teacher).iloc[1]
    assert row["step"] == 0.0 and not row["lowers_energy"] and row["energy_after"] == row["energy_before"]


def test_kd_tends_to_centered_logit_regression():
    g = torch.Generator().manual_seed(0)
    teacher, student = 3 * torch.randn(100, 10, generator=g).double(), 3 * torch.randn(100, 10, generator=g).double()
    limit = kd_limit(student, teacher).item()
    errors = [abs(kd_loss(student, teacher, temperature).item() / limit - 1) for temperature in (4.0, 64.0, 1024.0)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-3
    assert kd_limit(student + 5.0, teacher).item() == pytest.approx(limit)  # centered: the shift drops out


def test_energy_by_confidence_bins():
    g = torch.Generator().manual_seed(0)
    teacher = torch.zeros(100, 4)
    teacher[:, 0] = 10.0
    confident = torch.arange(100) >= 50
    logits = torch.where(confident[:, None], teacher, 0.1 * torch.randn(100, 4, generator=g))
    labels = torch.zeros(100, dtype=torch.long)
    table = energy_by_confidence(teacher, logits, labels, bins=2)
    assert list(table["samples"]) == [50, 50]
    assert table["energy_share_pct"].sum() == pytest.approx(100.0)
    assert table.loc[0, "energy_share_pct"] == pytest.approx(100.0)  # the unsure half carries the whole residual
    assert table.loc[1, "top1_pct"] == 100.0 and table.loc[0, "confidence_high"] < table.loc[1, "confidence_low"]
    assert sample_energy(teacher, logits).mean().item() == pytest.approx(residual_energy(teacher, logits).item())


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match=r"\(4, 3\).*\(4, 5\)"):
        logprob_gap(torch.zeros(4, 3), torch.zeros(4, 5))
    with pytest.raises(ValueError, match=r"\(4,\).*\(4,\)"):
        logprob_gap(torch.zeros(4), torch.zeros(4))
    with pytest.raises(ValueError, match="unknown bound 'l2'"):
        logprob_gap_bound(torch.zeros(2, 3), torch.zeros(2, 3), kind="l2")
    with pytest.raises(ValueError, match="no samples"):
        disagreement_bound(torch.zeros(0, 3), torch.zeros(0, 3))
    with pytest.raises(ValueError, match="one per sample"):
        energy_by_confidence(torch.zeros(4, 3), torch.zeros(4, 3), torch.zeros(3, dtype=torch.long))
    no_teacher = StagedOutputs(torch.zeros(1, 4, 3), torch.zeros(4, dtype=torch.long), [1])
    with pytest.raises(ValueError, match="'test' have no teacher logits"):
        stage_theory_records({"test": no_teacher}, {"test": torch.zeros(1, 4, 3)})
    t = torch.zeros(4, 3)
    with pytest.raises(ValueError, match="different numbers of stages"):
        stage_theory_records({"a": staged(t, [t]), "b": staged(t, [t, t])}, {"a": [t], "b": [t, t]})
    with pytest.raises(ValueError, match="no stage logits for split 'b'.*identity"):
        stage_theory_records({"a": staged(t, [t]), "b": staged(t, [t])}, {"a": [t]})
    with pytest.raises(ValueError, match=r"split 'a' have shape \(2, 4, 3\) but its staged outputs \(1, 4, 3\)"):
        stage_theory_records({"a": staged(t, [t])}, {"a": [t, t]})


def test_json_ready_gives_plain_json():
    import pandas as pd

    rows = json_ready(pd.DataFrame({"x": [1.0, math.nan], "ok": [True, False], "n": [1, 2]}))
    assert rows == [{"x": 1.0, "ok": True, "n": 1}, {"x": None, "ok": False, "n": 2}]
    json.dumps(rows, allow_nan=False)


def test_ks_distance_of_same_shifted_and_disjoint_samples():
    rng = np.random.default_rng(0)
    a = rng.normal(size=2000)
    assert ks_distance(a, rng.permutation(a)) == 0.0  # the same values in another order
    assert ks_distance(a, a + 100.0) == 1.0  # no overlap at all
    shifted = ks_distance(a, a + 0.5)  # N(0,1) against N(0.5,1): about 0.2 (2 * Phi(0.25) - 1)
    assert 0.15 < shifted < 0.25
    with pytest.raises(ValueError, match="at least one value"):
        ks_distance([], a)


def test_explained_variance_of_perfect_mean_and_partial_fits():
    g = torch.Generator().manual_seed(0)
    target = torch.randn(200, 10, generator=g, dtype=torch.float64)
    shift = torch.randn(200, 1, generator=g, dtype=torch.float64)
    assert explained_variance(target, target + shift) == pytest.approx(1.0)  # a per-sample shift is invisible
    assert explained_variance(target, target.mean(0, keepdim=True).expand_as(target)) == pytest.approx(0.0, abs=1e-12)
    assert explained_variance(target, 0.5 * target) == pytest.approx(0.75, abs=0.03)  # error 0.25 of the variance
    assert explained_variance(target, -target) < 0  # worse than the mean
    with pytest.raises(ValueError, match="constant"):
        explained_variance(torch.ones(5, 3), torch.zeros(5, 3))


def test_stage_explained_variance_reads_each_stage_against_its_residual():
    g = torch.Generator().manual_seed(1)
    teacher = torch.randn(400, 5, generator=g)
    s0 = torch.randn(400, 5, generator=g)
    first = s0 + 0.5 * (teacher - s0)  # stage 1 fits half of its residual: error 0.25 of its variance
    second = teacher + 1e-3 * torch.randn(400, 5, generator=g)  # stage 2 fits what is left, nearly exactly
    fractions = stage_explained_variance(staged(teacher, [s0, first, second]))
    assert fractions[0] == pytest.approx(0.75, abs=0.02) and fractions[1] == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(ValueError, match="no teacher logits"):
        stage_explained_variance(StagedOutputs(torch.stack([s0, first]), torch.zeros(400, dtype=torch.long), [1, 1]))


def test_stall_verdict_decides_with_a_margin_not_a_strict_order():
    """Claim 3 of chapter 01 with the chain's numbers (0.092 -> -0.000 -> -0.001): the first step falls beyond its
    margin, the second is level below zero (stalled), so the claim holds; the same fractions with a wider spread, a
    level step with something explained, a rise within the margin and one beyond it."""
    fractions = [0.092, -0.0002, -0.0011]
    assert stall_verdict(fractions, [0.002, 0.0002, 0.0003], [0.0015, 0.0006]) == ("holds", ["falls", "stalled"])
    # a strict < would call 0.30 -> 0.29 a fall; within a margin of 2 x 0.02 it is level, and something is explained
    assert stall_verdict([0.30, 0.29], [0.01, 0.01], [0.02]) == ("undecided", ["level"])
    assert stall_verdict([0.30, 0.31], [0.01, 0.01], [0.02]) == ("undecided", ["level"])  # a rise within the margin
    assert stall_verdict([0.26, 0.36, 0.24], [0.02] * 3, [0.037, 0.045]) == ("does not hold", ["rises", "falls"])
    assert stall_verdict([0.20, 0.10], [0.01, 0.01], [0.01], z=MARGIN_Z) == ("holds", ["falls"])
    assert stall_verdict([0.20, 0.19], [0.01, 0.01], [0.001]) == ("holds", ["falls"])  # a small but certain fall
    assert stall_verdict([0.01, 0.02], [0.01, 0.01], [0.01]) == ("holds", ["stalled"])  # both within 2 se of 0
    with pytest.raises(ValueError, match="one fewer"):
        stall_verdict([0.1, 0.0], [0.01, 0.01], [0.01, 0.01])


def test_bootstrap_standard_errors_of_the_chain_fractions():
    """The spread of each stage's explained fraction over resampled samples: seeded, and shrinking as 1 / sqrt(N)."""
    g = torch.Generator().manual_seed(3)

    def chain(n):
        teacher = torch.randn(n, 5, generator=g)
        s0 = torch.randn(n, 5, generator=g)
        first = s0 + 0.5 * (teacher - s0) + 0.1 * torch.randn(n, 5, generator=g)
        second = first + 0.5 * (teacher - first) + 0.1 * torch.randn(n, 5, generator=g)
        return staged(teacher, [s0, first, second])

    small, large = chain(400), chain(6400)
    se_small, diff_small = stage_explained_variance_se(small, resamples=100)
    se_large, diff_large = stage_explained_variance_se(large, resamples=100)
    assert stage_explained_variance_se(small, resamples=100) == (se_small, diff_small)  # seeded: the same numbers
    assert stage_explained_variance_se(small, resamples=100, seed=1) != (se_small, diff_small)
    assert len(se_small) == 2 and len(diff_small) == 1
    for a, b in zip(se_small, se_large):  # 16 x the samples: a quarter of the spread, within the bootstrap's noise
        assert 2.5 < a / b < 6.5
    assert 0.001 < se_small[0] < 0.01
    with pytest.raises(ValueError, match="at least 2"):
        stage_explained_variance_se(small, resamples=1)
