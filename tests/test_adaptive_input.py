"""Bad inputs to adaptive inference: thresholds that are not a list of numbers, calibration targets out of range."""
import math

import numpy as np
import pytest
import torch

from reskd.adaptive import (Policy, StagedOutputs, calibrate, calibrate_per_stage, candidate_thresholds, evaluate_policy,
                            exit_stages)


def staged(n: int = 60, stages: int = 3, classes: int = 4) -> StagedOutputs:
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, classes, (n,), generator=g)
    z = torch.randn(stages, n, classes, generator=g).cumsum(0) + torch.nn.functional.one_hot(labels, classes)
    return StagedOutputs(z, labels, [100, 30, 20][:stages])


@pytest.mark.parametrize("thresholds", ["0.5", "0.5 0.5", 0.5, 1, None, ["0.5", "0.5"], [0.5, None], [True, 0.5]],
                         ids=["string", "string-of-two", "float", "int", "none", "strings", "a-none", "a-bool"])
def test_thresholds_that_are_not_a_list_of_numbers_are_named(thresholds):
    with pytest.raises(ValueError, match=r"thresholds must be a list of numbers, one per stage but the last \(2\), "
                                         r"got .*; e\.g\. Policy\('max_prob', \[0\.9\] \* 2\)"):
        exit_stages(staged(), Policy("max_prob", thresholds))


@pytest.mark.parametrize("thresholds", [[0.5, 0.9], (0.5, math.inf), np.array([0.5, 0.9]), torch.tensor([0.5, 0.9]),
                                        [np.float32(0.5), torch.tensor(0.9)]],
                         ids=["list", "tuple", "numpy", "tensor", "mixed"])
def test_thresholds_as_any_sequence_of_numbers_still_work(thresholds):
    s = staged()
    expected = exit_stages(s, Policy("max_prob", [float(t) for t in thresholds]))
    assert torch.equal(exit_stages(s, Policy("max_prob", thresholds)), expected)
    m = evaluate_policy(s, Policy("max_prob", thresholds))
    stopped_with = s.logits[expected, torch.arange(s.num_samples)]  # each sample's logits at its exit
    assert m["top1"] == pytest.approx(100 * (stopped_with.argmax(1) == s.labels).double().mean().item())
    assert m["avg_macs"] == pytest.approx(torch.tensor(s.cumulative_macs, dtype=torch.float64)[expected].mean().item())
    m_teacher = evaluate_policy(s, Policy("max_prob", thresholds), teacher_macs=1000)
    assert m_teacher["pct_teacher"] == pytest.approx(m["avg_macs"] / 10)


@pytest.mark.parametrize("calibration", [calibrate, calibrate_per_stage])
@pytest.mark.parametrize("target,value,problem", [
    ("target_top1", 150, "from 0 to 100"), ("target_top1", -1, "from 0 to 100"),
    ("target_top1", math.nan, "finite number"), ("target_top1", "90", "finite number"),
    ("target_macs", 0, "must be positive"), ("target_macs", -5, "must be positive"),
    ("target_macs", math.inf, "finite number"), ("target_macs", True, "finite number"),
])
def test_calibration_targets_out_of_range_are_named(calibration, target, value, problem):
    with pytest.raises(ValueError, match=f"{target} .*{problem}.*{value!r}".replace("(", r"\(")):
        calibration(staged(), "max_prob", **{target: value})


@pytest.mark.parametrize("calibration", [calibrate, calibrate_per_stage])
@pytest.mark.parametrize("target,exit_at", [({"target_top1": 0}, 0), ({"target_top1": 100}, 2),
                                            ({"target_macs": 1}, 0), ({"target_macs": 10 ** 12}, None),
                                            ({"target_top1": np.float64(30)}, None)],
                         ids=["top1-0", "top1-100", "macs-1", "macs-huge", "top1-numpy"])
def test_calibration_targets_at_the_ends_of_their_range_are_accepted(calibration, target, exit_at):
    """The ends of each target's range give the known policies: a top-1 of 0 (met by anything) and a budget below S0's
    cost stop everyone after S0; an unreachable top-1 of 100 runs every stage; an unlimited budget gives the most
    accurate policy on val; a numpy target the same policy as the Python number. (The fixture's full chain reaches
    35% top-1.)"""
    s = staged()
    assert max(evaluate_policy(s, Policy("max_prob", [t, t]))["top1"] for t in (-math.inf, math.inf)) < 100
    policy = calibration(s, "max_prob", **target)
    exits = exit_stages(s, policy)
    if exit_at is not None:
        assert (exits == exit_at).all(), exits.bincount()
    m = evaluate_policy(s, policy)
    if "target_macs" in target and exit_at is None:  # every policy fits: the best val top-1 any candidate reaches
        best = max(evaluate_policy(s, Policy("max_prob", [t, t]))["top1"]
                   for t in candidate_thresholds(s, "max_prob", points=200))
        assert m["top1"] >= best if calibration is calibrate_per_stage else m["top1"] == best
    if "target_top1" in target and exit_at is None:
        assert policy.thresholds == calibration(s, "max_prob", target_top1=30.0).thresholds and m["top1"] >= 30
        assert m["avg_macs"] < sum(s.stage_macs)  # reachable below the full chain's cost
