"""Sample-adaptive inference: exits, costs, calibration on validation data, masked execution and its latency."""
import math
import time

import pandas as pd
import pytest
import torch
from torch import Tensor

from reskd.adaptive import (CRITERIA, DECISION_TOLERANCE, AdaptiveEnsemble, LearnedGate, Policy, StagedOutputs, calibrate,
                            calibrate_per_stage, candidate_thresholds, collect, compare_latency, confidence, evaluate_exits, evaluate_policy,
                            exit_stages, measure_latency, sweep)
from reskd.data import Loader
from reskd.reskd import ResKDEnsemble

from helpers import tiny_images, tiny_spec

MACS = [100, 30, 20]


def staged(n=200, seed=0, K=3, C=5):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, C, (n,), generator=g)
    logits, z = [], torch.zeros(n, C)
    for k in range(K):  # each stage adds signal towards the label
        z = z + torch.randn(n, C, generator=g) + 1.5 * torch.nn.functional.one_hot(labels, C)
        logits.append(z.clone())
    return StagedOutputs(torch.stack(logits), labels, MACS[:K], teacher_logits=logits[-1] * 2)


def test_stop_everyone_after_s0_costs_s0():
    s = staged()
    m = evaluate_policy(s, Policy("max_prob", [-math.inf, -math.inf]), teacher_macs=1000)
    assert m["avg_macs"] == MACS[0] and m["pct_teacher"] == pytest.approx(10.0)
    assert m["top1"] == pytest.approx(100 * (s.logits[0].argmax(1) == s.labels).float().mean().item())
    assert m["exit_frac_0"] == 1.0


def test_stop_no_one_costs_all_stages():
    s = staged()
    m = evaluate_policy(s, Policy("margin", [math.inf, math.inf]))
    assert m["avg_macs"] == sum(MACS) and m["exit_frac_2"] == 1.0
    assert m["top1"] == pytest.approx(100 * (s.logits[-1].argmax(1) == s.labels).float().mean().item())


def test_average_macs_match_a_hand_count():
    logits = torch.tensor([[[5.0, 0.0]], [[0.0, 0.0]], [[0.0, 0.0]]]).repeat(1, 4, 1)
    logits[0, 1] = torch.tensor([0.1, 0.0])  # unsure after S0
    logits[0, 2] = torch.tensor([0.2, 0.0])
    logits[1, 2] = torch.tensor([9.0, 0.0])  # sure after S1
    logits[0, 3] = torch.tensor([0.0, 0.1])
    s = StagedOutputs(logits, torch.zeros(4, dtype=torch.long), MACS)
    exits = exit_stages(s, Policy("max_prob", [0.9, 0.9]))
    assert exits.tolist() == [0, 2, 1, 2]
    m = evaluate_policy(s, Policy("max_prob", [0.9, 0.9]))
    assert m["avg_macs"] == pytest.approx((100 + 150 + 130 + 150) / 4)


@pytest.mark.parametrize("criterion", CRITERIA)
def test_sweep_traces_a_monotone_cost_curve_from_validation(criterion):
    val, test = staged(seed=1), staged(seed=2)
    curve = sweep(val, criterion, test=test, teacher_macs=1000, points=20)
    assert curve["val_avg_macs"].iloc[0] == MACS[0] and curve["val_avg_macs"].iloc[-1] == sum(MACS)
    assert curve["val_avg_macs"].is_monotonic_increasing
    assert {"test_top1", "test_avg_macs", "test_pct_teacher"} <= set(curve.columns)


def _search_on(split: StagedOutputs, criterion: str, *, target_top1=None, target_macs=None, points=200) -> float:
    """The shared threshold an exhaustive search picks from ``split``'s candidates and metrics alone: the cheapest
    meeting an accuracy target, or the most accurate within a MACs budget (ties: the other quantity)."""
    best = None
    for tau in candidate_thresholds(split, criterion, points=points):
        m = evaluate_policy(split, Policy(criterion, [tau] * (split.num_stages - 1)))
        if target_top1 is not None:
            key = None if m["top1"] < target_top1 else (m["avg_macs"], -m["top1"])
        else:
            key = None if m["avg_macs"] > target_macs else (-m["top1"], m["avg_macs"])
        if key is not None and (best is None or key < best[0]):
            best = (key, tau)
    return best[1]


def test_calibrate_uses_only_validation():
    """calibrate's thresholds are what a search over the validation split's own candidates and metrics picks, and
    they are not what the same search on the test split picks: the test split can only be evaluated afterwards."""
    val, test = staged(seed=1), staged(seed=2)
    full = evaluate_policy(val, Policy("max_prob", [math.inf, math.inf]))["top1"]
    policy = calibrate(val, "max_prob", target_top1=full - 2.0)
    assert policy.thresholds == [_search_on(val, "max_prob", target_top1=full - 2.0)] * 2
    m = evaluate_policy(val, policy)
    assert m["top1"] >= full - 2.0 and m["avg_macs"] < sum(MACS)
    budget = calibrate(val, "neg_entropy", target_macs=120)
    assert budget.thresholds == [_search_on(val, "neg_entropy", target_macs=120)] * 2
    assert evaluate_policy(val, budget)["avg_macs"] <= 120
    # the same search on test gives other thresholds, so a calibration that read test would be told apart
    assert [_search_on(test, "max_prob", target_top1=full - 2.0)] * 2 != policy.thresholds
    assert [_search_on(test, "neg_entropy", target_macs=120)] * 2 != budget.thresholds
    with pytest.raises(ValueError, match="exactly one"):
        calibrate(val, "max_prob")


def test_sweep_chooses_its_thresholds_from_validation_and_only_reports_test():
    """sweep's thresholds and val columns are the same with and without a test split, and with the test split's
    labels shuffled; its test columns are the val-chosen policies evaluated on test."""
    val, test = staged(seed=1), staged(seed=2)
    perm = torch.randperm(test.num_samples, generator=torch.Generator().manual_seed(0))
    shuffled = StagedOutputs(test.logits, test.labels[perm], test.stage_macs, test.teacher_logits)
    alone = sweep(val, "max_prob", points=20)
    with_test, with_shuffled = sweep(val, "max_prob", test=test, points=20), sweep(val, "max_prob", test=shuffled,
                                                                                    points=20)
    assert alone["threshold"].tolist() == candidate_thresholds(val, "max_prob", points=20)
    assert alone["threshold"].tolist() != candidate_thresholds(test, "max_prob", points=20)
    for curve in (with_test, with_shuffled):
        pd.testing.assert_frame_equal(curve[alone.columns], alone)
    pd.testing.assert_series_equal(with_test["test_avg_macs"], with_shuffled["test_avg_macs"])
    for i in (0, 7, 19):
        policy = Policy("max_prob", [with_test["threshold"].iloc[i]] * 2)
        assert with_test["test_top1"].iloc[i] == evaluate_policy(test, policy)["top1"]
        assert with_shuffled["test_top1"].iloc[i] == evaluate_policy(shuffled, policy)["top1"]


def test_learned_gate_predicts_changes():
    val = staged(n=400, seed=3)
    gate = LearnedGate.fit(val)
    conf = gate.confidence(val.logits[0], 0)
    changed = val.logits[0].argmax(1) != val.logits[-1].argmax(1)
    assert conf[~changed].mean() > conf[changed].mean()
    assert 0 <= conf.min() and conf.max() <= 1


def test_bad_input_is_rejected():
    s = staged()
    with pytest.raises(ValueError, match="outside the range"):
        exit_stages(s, Policy("max_prob", [1.5, 0.5]))
    with pytest.raises(ValueError, match="outside the range"):
        exit_stages(s, Policy("neg_entropy", [0.5, -0.1]))
    with pytest.raises(ValueError, match="one per stage"):
        exit_stages(s, Policy("max_prob", [0.5]))
    with pytest.raises(ValueError, match="unknown criterion"):
        confidence(s.logits[0], "variance")
    with pytest.raises(ValueError, match="unknown criterion"):
        exit_stages(s, Policy("variance", [0.5, 0.5]))
    with pytest.raises(ValueError, match="LearnedGate"):
        exit_stages(s, Policy("gate", [0.5, 0.5]))
    empty = StagedOutputs(torch.zeros(3, 0, 5), torch.zeros(0, dtype=torch.long), MACS)
    with pytest.raises(ValueError, match="validation split is empty"):
        sweep(empty, "max_prob")
    with pytest.raises(ValueError, match="validation split is empty"):
        calibrate(empty, "max_prob", target_top1=50)
    with pytest.raises(ValueError, match="validation split is empty"):
        LearnedGate.fit(empty)


def threshold_in_a_gap(conf: Tensor, *, min_gap: float = 100 * DECISION_TOLERANCE) -> float:
    """A threshold halfway across the widest gap between neighbouring confidences in their middle half, so that
    every sample is at least ``min_gap / 2`` away from it: no decision can hinge on float rounding."""
    values = conf.flatten().double().sort().values
    lo, hi = len(values) // 4, 3 * len(values) // 4
    gaps = values[lo + 1:hi + 1] - values[lo:hi]
    i = int(gaps.argmax())
    assert gaps[i] > min_gap, f"no gap wider than {min_gap} in the middle half of the confidences"
    return float((values[lo + i] + values[lo + i + 1]) / 2)


def _ensemble(input_kind: str, feature_index: int = -1) -> ResKDEnsemble:
    """S0 and two res-students reading the image, or S0's feature map ``feature_index`` ("features")."""
    from reskd.models import create_model
    from reskd.reskd import FeatureHead

    torch.manual_seed(0)
    s0 = create_model("resnet8", 4, width=0.5)
    if input_kind == "image":
        stages = [create_model("resnet8", 4, width=0.5), create_model("resnet8", 4, width=0.5)]
    else:
        channels = s0.feature_channels[feature_index]
        stages = [FeatureHead(channels, 4, channels=8), FeatureHead(channels, 4)]
    return ResKDEnsemble(s0, stages, [input_kind] * 2, feature_index=feature_index).eval()


#: The ensembles the masked-execution tests run: res-students on the image, on S0's last and on its second-last map.
KINDS = [("image", -1), ("features", -1), ("features", -2)]
KIND_IDS = ["image", "features-last", "features-second-last"]


def _tiny_loader(batch_size: int = 64) -> Loader:
    return Loader(tiny_images(64, size=16), tiny_spec(16), batch_size, train=False)


@pytest.mark.parametrize("input_kind,feature_index", KINDS, ids=KIND_IDS)
def test_masked_execution_matches_full_execution(input_kind, feature_index):
    """Away from ties, running each stage on the still-active samples only decides exactly as running every stage on
    every sample does, and returns the same logits up to float rounding."""
    ens, loader = _ensemble(input_kind, feature_index), _tiny_loader()
    full = collect(ens, loader, device="cpu")
    assert not full.logits.is_inference()  # usable outside inference mode (thresholds, plots, training a gate)
    conf = torch.stack([confidence(full.logits[k], "max_prob") for k in range(2)])
    policy = Policy("max_prob", [threshold_in_a_gap(conf[0]), threshold_in_a_gap(conf[1])])
    exits = exit_stages(full, policy)
    assert 0 < (exits == 0).sum() < len(exits)  # some samples stop early, some do not
    x = next(iter(loader))[0]
    adaptive = AdaptiveEnsemble(ens, policy)
    out = adaptive(x)
    assert torch.equal(adaptive.last_exits, exits)
    expected = full.logits[exits, torch.arange(len(exits))]
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("input_kind,feature_index", KINDS, ids=KIND_IDS)
def test_masked_execution_at_a_tie_differs_only_within_the_tolerance(input_kind, feature_index):
    """At a threshold equal to a sample's own confidence (a median), masked and full execution may decide that one
    sample differently: the stage ran on a sub-batch, whose float rounding differs by CPU and thread count. Every
    sample they disagree on lies within ``DECISION_TOLERANCE`` of a threshold; all others agree."""
    ens, loader = _ensemble(input_kind, feature_index), _tiny_loader()
    full = collect(ens, loader, device="cpu")
    conf = torch.stack([confidence(full.logits[k], "max_prob") for k in range(2)])
    thresholds = [float(conf[0].median()), float(conf[1].median())]
    exits = exit_stages(full, Policy("max_prob", thresholds))
    adaptive = AdaptiveEnsemble(ens, Policy("max_prob", thresholds))
    adaptive(next(iter(loader))[0])
    differ = adaptive.last_exits != exits
    near = ((conf - torch.tensor(thresholds)[:, None]).abs() <= DECISION_TOLERANCE).any(0)
    assert not (differ & ~near).any(), "a sample away from every threshold was decided differently"
    assert near.any()  # the medians are ties by construction: the case this test is about


@pytest.mark.parametrize("batch_size", [7, 33])
def test_full_execution_is_batch_size_independent_up_to_the_tolerance(batch_size):
    """The stated tolerance covers what batch size does to the confidences (the reason ties are not exact): the 64
    images in one batch against batches of 7 or 33 (the last one partial)."""
    ens = _ensemble("image")
    other = _tiny_loader(batch_size)
    assert len(list(other)) == -(-64 // batch_size) > 1
    a, b = collect(ens, _tiny_loader(64), device="cpu"), collect(ens, other, device="cpu")
    assert torch.equal(a.labels, b.labels)
    for k in range(2):
        gap = (confidence(a.logits[k], "max_prob") - confidence(b.logits[k], "max_prob")).abs().max()
        assert gap <= DECISION_TOLERANCE


@pytest.mark.parametrize("criterion", CRITERIA)
def test_per_stage_calibration_meets_its_target_and_beats_the_shared_threshold(criterion):
    val = staged(n=400, seed=0)
    full = evaluate_policy(val, Policy("max_prob", [math.inf, math.inf]))["top1"]
    gate = LearnedGate.fit(val) if criterion == "gate" else None
    shared = evaluate_policy(val, calibrate(val, criterion, target_top1=full - 1.0, gate=gate))
    per_stage = evaluate_policy(val, calibrate_per_stage(val, criterion, target_top1=full - 1.0, gate=gate))
    assert per_stage["top1"] >= full - 1.0 and per_stage["avg_macs"] <= shared["avg_macs"]
    shared = evaluate_policy(val, calibrate(val, criterion, target_macs=125, gate=gate))
    per_stage = evaluate_policy(val, calibrate_per_stage(val, criterion, target_macs=125, gate=gate))
    assert per_stage["avg_macs"] <= 125 and per_stage["top1"] >= shared["top1"]


def test_per_stage_thresholds_can_be_strictly_cheaper():
    val = staged(n=400, seed=0)
    full = evaluate_policy(val, Policy("max_prob", [math.inf, math.inf]))["top1"]
    shared = calibrate(val, "max_prob", target_top1=full - 1.0)
    per_stage = calibrate_per_stage(val, "max_prob", target_top1=full - 1.0)
    assert per_stage.thresholds[0] != per_stage.thresholds[1]
    assert evaluate_policy(val, per_stage)["avg_macs"] < evaluate_policy(val, shared)["avg_macs"]
    with pytest.raises(ValueError, match="rounds"):
        calibrate_per_stage(val, "max_prob", target_top1=50, rounds=0)
    with pytest.raises(ValueError, match="exactly one"):
        calibrate_per_stage(val, "max_prob")


class Sleeper(torch.nn.Module):
    """Takes ``seconds`` per call whatever the batch: its latency per image is known."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds

    def forward(self, x):
        time.sleep(self.seconds)
        return x


def test_latency_is_seconds_per_image():
    x = torch.zeros(4, 3, 8, 8)
    per_call = 0.01
    one = measure_latency(Sleeper(per_call), x, batch_size=1, repeats=2, warmup=0)
    four = measure_latency(Sleeper(per_call), x, batch_size=4, repeats=2, warmup=0)
    assert math.isfinite(one) and per_call <= one < 5 * per_call
    assert per_call / 4 <= four < 5 * per_call / 4
    times = compare_latency({"fast": torch.nn.Identity(), "slow": Sleeper(per_call)}, x, batch_size=2, repeats=1)
    assert set(times) == {"fast", "slow"} and 0 < times["fast"] < times["slow"]


@pytest.mark.parametrize("kwargs, match", [
    ({"batch_size": 0}, "batch_size"), ({"batch_size": 5}, "batch_size"), ({"batch_size": 2.0}, "batch_size"),
    ({"batch_size": 1, "repeats": 0}, "repeats"), ({"batch_size": 1, "warmup": -1}, "warmup"),
])
def test_latency_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        measure_latency(torch.nn.Identity(), torch.zeros(4, 3, 8, 8), **kwargs)


def test_latency_rejects_empty_inputs():
    with pytest.raises(ValueError, match="non-empty"):
        measure_latency(torch.nn.Identity(), torch.zeros(0, 3, 8, 8), batch_size=1)
    with pytest.raises(ValueError, match="models is empty"):
        compare_latency({}, torch.zeros(4, 3, 8, 8), batch_size=1)


def test_masked_execution_with_the_learned_gate():
    from reskd.models import create_model

    torch.manual_seed(0)
    ens = ResKDEnsemble(create_model("resnet8", 4, width=0.5), [create_model("resnet8", 4, width=0.5)]).eval()
    loader = _tiny_loader()
    full = collect(ens, loader, device="cpu")
    full.logits[1] = full.logits[1] + torch.randn_like(full.logits[1])  # make later stages change some predictions
    gate = LearnedGate.fit(full)
    tau = threshold_in_a_gap(gate.confidence(full.logits[0], 0), min_gap=10 * DECISION_TOLERANCE)
    adaptive = AdaptiveEnsemble(ens, Policy("gate", [tau], gate))
    assert adaptive.gate is gate  # registered: moves with the ensemble to the device
    adaptive(next(iter(loader))[0])
    exits = exit_stages(full, Policy("gate", [tau], gate))
    assert 0 < (exits == 0).sum() < len(exits)
    assert torch.equal(adaptive.last_exits, exits)


def test_cascade_module_matches_the_staged_cascade():
    """Executing the cascade (S0, then the teacher on the unsure samples only) predicts as cascade()'s staged outputs
    with the same policy, away from threshold ties."""
    from reskd.adaptive import Cascade, cascade
    from reskd.models import create_model

    torch.manual_seed(0)
    s0, teacher = create_model("resnet8", 4, width=0.5).eval(), create_model("resnet8", 4).eval()
    loader = _tiny_loader()
    first = collect(ResKDEnsemble(s0).eval(), loader, device="cpu", teacher=teacher)
    staged_cascade = cascade(first, first.teacher_logits, teacher_macs=1000)
    policy = Policy("max_prob", [threshold_in_a_gap(confidence(first.logits[0], "max_prob"))])
    exits = exit_stages(staged_cascade, policy)
    assert 0 < (exits == 0).sum() < len(exits)
    run = Cascade(s0, teacher, policy)
    out = run(next(iter(loader))[0])
    assert torch.equal(run.last_exits, exits)
    expected = staged_cascade.logits[exits, torch.arange(len(exits))]
    assert torch.equal(out.argmax(1), expected.argmax(1))
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="thresholds for 2 stages"):
        Cascade(s0, teacher, Policy("max_prob", [0.5, 0.5]))


def test_a_chain_to_teacher_pays_every_stage_a_sample_ran():
    """S0 -> S0 + S1 -> T: a sample that stops after S0 pays S0, after S0 + S1 pays both, and one that reaches the
    teacher pays S0 + S1 + T (the teacher's full MACs on top of the chain it ran first)."""
    from reskd.adaptive import cascade

    logits = torch.zeros(2, 3, 2)
    logits[0, 0] = torch.tensor([5.0, 0.0])  # sure after S0
    logits[1, 1] = torch.tensor([5.0, 0.0])  # unsure after S0, sure after S0 + S1
    teacher = torch.tensor([[0.0, 5.0]] * 3)  # the teacher says class 1 everywhere
    chain = StagedOutputs(logits, torch.tensor([0, 0, 1]), [10, 3])
    c = cascade(chain, teacher, teacher_macs=100)
    assert c.num_stages == 3 and c.stage_macs == [10, 3, 100] and c.cumulative_macs == [10, 13, 113]
    policy = Policy("max_prob", [0.9, 0.9])
    assert exit_stages(c, policy).tolist() == [0, 1, 2]
    m = evaluate_policy(c, policy, teacher_macs=100)
    assert m["avg_macs"] == pytest.approx((10 + 13 + 113) / 3) and m["top1"] == pytest.approx(100.0)
    assert m["exit_frac_2"] == pytest.approx(1 / 3)
    assert cascade(chain, teacher, 100, stages=1).cumulative_macs == [10, 110]  # S1 skipped: S0 + T
    with pytest.raises(ValueError, match="stages must be"):
        cascade(chain, teacher, 100, stages=3)


@pytest.mark.parametrize("per_stage", [False, True])
def test_a_chain_to_teacher_calibrated_on_val_meets_each_budget_there(per_stage):
    from reskd.adaptive import at_budgets, cascade

    val, test = staged(n=400, seed=3, K=2), staged(n=400, seed=4, K=2)
    teacher_macs = 400
    val_c, test_c = (cascade(s, s.teacher_logits, teacher_macs) for s in (val, test))
    assert val_c.cumulative_macs == [100, 130, 530]
    budgets = [30.0, 40.0, 60.0, 100.0]
    rows = at_budgets(val_c, test_c, budgets, teacher_macs, per_stage=per_stage)
    assert rows["fits"].all() and (rows["val_pct_teacher"] <= rows["budget_pct"] + 1e-9).all()
    assert rows["val_top1"].is_monotonic_increasing  # more budget never buys less on val
    assert all(len(t) == 2 for t in rows["thresholds"])  # one threshold per stage but the last
    assert (rows[["val_exit_frac_1", "val_exit_frac_2"]].sum(axis=1) > 0).all()  # some go past S0


def test_a_chain_of_one_stage_plus_the_teacher_is_the_two_tier_cascade():
    """cascade(chain, stages=1) is today's cascade from S0 (the same outputs and MACs, so the same calibrated policies
    and numbers), and so is Cascade(chain, teacher, stages=1) executed against Cascade(S0, teacher)."""
    from reskd.adaptive import Cascade, at_budgets, cascade

    val, test = staged(n=300, seed=5), staged(n=300, seed=6)
    two_tier = {n: cascade(StagedOutputs(s.logits[:1], s.labels, s.stage_macs[:1], s.teacher_logits),
                           s.teacher_logits, 500) for n, s in (("val", val), ("test", test))}
    prefix = {n: cascade(s, s.teacher_logits, 500, stages=1) for n, s in (("val", val), ("test", test))}
    for n in ("val", "test"):
        assert torch.equal(two_tier[n].logits, prefix[n].logits) and two_tier[n].stage_macs == prefix[n].stage_macs
    a = at_budgets(two_tier["val"], two_tier["test"], [25.0, 30.0], 500)
    b = at_budgets(prefix["val"], prefix["test"], [25.0, 30.0], 500)
    assert a.drop(columns="thresholds").equals(b.drop(columns="thresholds")) and list(a["thresholds"]) == list(
        b["thresholds"])

    ens, loader = _ensemble("image"), _tiny_loader()
    torch.manual_seed(1)
    from reskd.models import create_model
    teacher = create_model("resnet8", 4).eval()
    x = next(iter(loader))[0]
    with torch.no_grad():
        conf = confidence(ens.stages[0](x), "max_prob")
    policy = Policy("max_prob", [threshold_in_a_gap(conf)])
    one, today = Cascade(ens, teacher, policy, stages=1), Cascade(ens.stages[0], teacher, policy)
    assert torch.equal(one(x), today(x)) and torch.equal(one.last_exits, today.last_exits)
    assert 0 < (today.last_exits == 0).sum() < len(x)


@pytest.mark.parametrize("input_kind", ["image", "features"])
def test_the_executed_chain_to_teacher_matches_its_staged_outputs(input_kind):
    """Masked execution of S0 -> S0 + S1 -> S0 + S1 + S2 -> T (the chain's stages on the still-active samples, the
    teacher on those still unsure after the chain) exits and predicts as the staged outputs, away from ties; with
    the chain cut to one res-student (stages=2) as well."""
    from reskd.adaptive import Cascade, cascade
    from reskd.models import create_model

    ens, loader = _ensemble(input_kind), _tiny_loader()
    torch.manual_seed(2)
    teacher = create_model("resnet8", 4).eval()
    full = collect(ens, loader, device="cpu", teacher=teacher)
    x = next(iter(loader))[0]
    for stages in (3, 2):
        staged_c = cascade(full, full.teacher_logits, teacher_macs=10 ** 6, stages=stages)
        thresholds, active = [], torch.ones(staged_c.num_samples, dtype=torch.bool)
        for k in range(stages):  # each threshold splits the samples still active at its stage
            conf = confidence(staged_c.logits[k], "max_prob")
            thresholds.append(threshold_in_a_gap(conf[active], min_gap=10 * DECISION_TOLERANCE))
            active &= conf < thresholds[-1]
        policy = Policy("max_prob", thresholds)
        exits = exit_stages(staged_c, policy)
        assert (exits == 0).any() and (exits == stages).any()  # some stop at S0, some reach the teacher
        assert ((exits > 0) & (exits < stages)).any()  # and some at a middle exit
        run = Cascade(ens, teacher, policy, stages=stages)
        out = run(x)
        assert run.num_stages == stages + 1 and torch.equal(run.last_exits, exits)
        expected = staged_c.logits[exits, torch.arange(len(exits))]
        assert torch.equal(out.argmax(1), expected.argmax(1))
        torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="thresholds for 4 stages"):
        Cascade(ens, teacher, Policy("max_prob", [0.5]))
    with pytest.raises(ValueError, match="stages must be"):
        Cascade(ens, teacher, Policy("max_prob", [0.5]), stages=0)


def test_speedup_verdict_refuses_a_trivial_policy():
    from reskd.adaptive import speedup_verdict, trivial_exit

    all_s0 = torch.zeros(10, dtype=torch.long)
    verdict = speedup_verdict(all_s0, realized=3.3, macs_speedup=3.4)
    assert verdict["trivial"] and verdict["ratio"] is None and verdict["meets"] is None
    assert verdict["verdict"].startswith("trivial policy") and "S0" in verdict["verdict"]
    mixed = torch.tensor([0, 0, 1, 2])
    assert trivial_exit(mixed) is None and trivial_exit(torch.full((3,), 2)) == 2
    good, poor = speedup_verdict(mixed, 1.8, 2.0), speedup_verdict(mixed, 1.0, 2.0)
    assert good["meets"] and "meets" in good["verdict"] and good["ratio"] > 0.8
    assert not poor["meets"] and "misses" in poor["verdict"] and poor["ratio"] < 0.8
    near = speedup_verdict(mixed, 1.592, 2.0)  # ratio 0.796: printed so that a miss never reads as "0.80"
    assert not near["meets"] and "ratio 0.796, misses" in near["verdict"]
    with pytest.raises(ValueError, match="positive"):
        speedup_verdict(mixed, 0.0, 2.0)
    with pytest.raises(ValueError, match="no exits"):
        trivial_exit(torch.zeros(0, dtype=torch.long))


def test_budget_range_spans_s0_to_the_chain_or_a_cap():
    from reskd.adaptive import budget_range

    s = staged()
    budgets = budget_range(s, teacher_macs=1000, points=5)
    assert len(budgets) == 5 and budgets[0] == pytest.approx(10.0) and budgets[-1] == pytest.approx(15.0)
    assert all(a < b for a, b in zip(budgets, budgets[1:]))
    assert budget_range(s, 1000, points=3, max_pct=12.0)[-1] == pytest.approx(12.0)
    with pytest.raises(ValueError, match="not above S0"):
        budget_range(s, 1000, max_pct=5.0)
    with pytest.raises(ValueError, match="points"):
        budget_range(s, 1000, points=1)


@pytest.mark.parametrize("target", [90, 100, 115, 135, 150, 170])
def test_random_exits_pay_the_budget(target):
    from reskd.adaptive import random_exits, random_fractions

    s = staged(n=1000)
    fractions = random_fractions(s.cumulative_macs, target)
    assert sum(fractions) == pytest.approx(1.0) and min(fractions) >= 0
    macs = evaluate_exits(s, random_exits(s, fractions, seed=3))["avg_macs"]
    expected = min(max(target, MACS[0]), sum(MACS))
    assert macs == pytest.approx(expected, abs=0.01 * sum(MACS))  # within the rounding of counts to samples
    with pytest.raises(ValueError, match="finite"):
        random_fractions(s.cumulative_macs, math.nan)


def test_budget_curves_calibrate_on_val_and_hold_random_to_the_budget():
    from reskd.adaptive import budget_curves
    from reskd.report import calibration_gap

    val, test = staged(n=400, seed=1), staged(n=400, seed=2)
    budgets = [11.0, 13.0, 14.5]
    curves = budget_curves(val, test, budgets, teacher_macs=1000, criteria=("max_prob", "gate"))
    assert set(curves["method"]) == {"max_prob", "gate", "random"} and len(curves) == 3 * len(budgets)
    calibrated = curves[curves["method"] != "random"]
    assert (calibrated["val_pct_teacher"] <= calibrated["budget_pct"] + 1e-9).all()  # chosen within it on val
    random = curves[curves["method"] == "random"]
    assert (random["test_pct_teacher"] - random["budget_pct"]).abs().max() < 0.2
    gap = calibration_gap(curves.assign(seed=0))
    assert len(gap) == 3 * len(budgets)
    assert (gap["top1_gap"] - (gap["test_top1"] - gap["val_top1"])).abs().max() < 1e-9
    with pytest.raises(ValueError, match="lack the columns"):
        calibration_gap(curves.drop(columns=["val_top1"]))


def test_exit_fractions_by_class_sum_to_one_per_class():
    from reskd.adaptive import exit_fractions_by_class

    exits, labels = torch.tensor([0, 1, 1, 2, 0]), torch.tensor([0, 0, 1, 1, 1])
    by_class = exit_fractions_by_class(exits, labels, num_stages=3, num_classes=3)
    assert by_class.shape == (3, 3)
    assert by_class[0].tolist() == [0.5, 0.5, 0.0] and by_class[:2].sum(1).tolist() == [1.0, 1.0]
    assert torch.isnan(by_class[2]).all()  # a class without samples
    with pytest.raises(ValueError, match="one exit stage per label"):
        exit_fractions_by_class(exits[:3], labels, 3, 3)


@pytest.mark.parametrize("feature_index", [-1, -2])
def test_stage_call_times_cover_every_stage_and_the_decision(feature_index):
    from reskd.adaptive import stage_call_times

    ens = _ensemble("features", feature_index)
    x = next(iter(_tiny_loader()))[0][:8]
    times = stage_call_times(ens, Policy("max_prob", [0.5, 0.5]), x, batch_size=4, repeats=1, warmup=0)
    assert set(times) == {"S0", "S1", "S2", "decision"} and all(t > 0 for t in times.values())
    with pytest.raises(ValueError, match="batch_size"):
        stage_call_times(ens, Policy("max_prob", [0.5, 0.5]), x, batch_size=9)


@pytest.mark.parametrize("target", [0.9, 0.5, 1])
def test_a_fractional_accuracy_target_is_named(target, recwarn):
    """target_top1 is in percent: 0.9 (a fraction) would calibrate to a 0.9% target, i.e. S0 alone, silently."""
    for calibration in (calibrate, calibrate_per_stage):
        with pytest.warns(UserWarning, match=f"target_top1={target!r} looks like a fraction.*percent.*give "
                                             f"target_top1={100 * target:g} for {100 * target:g}%"):
            calibration(staged(), "max_prob", target_top1=target)
    recwarn.clear()
    calibrate(staged(), "max_prob", target_top1=0)  # the cheapest policy: a legitimate target
    calibrate(staged(), "max_prob", target_top1=90)
    assert not [w for w in recwarn if "fraction" in str(w.message)]


def test_evaluating_a_policy_on_an_empty_split_is_an_error():
    empty = staged(n=0)
    with pytest.raises(ValueError, match="the split is empty"):
        evaluate_policy(empty, Policy("max_prob", [0.5, 0.5]))


def test_a_cascade_of_models_with_different_class_counts_is_refused_when_built():
    from reskd.adaptive import Cascade
    from reskd.models import create_model

    s0, teacher = create_model("resnet8", 10, width=0.5), create_model("resnet8", 100, width=0.5)
    with pytest.raises(ValueError, match="the student predicts 10 classes but the teacher 100"):
        Cascade(s0, teacher, Policy("max_prob", [0.5]))
