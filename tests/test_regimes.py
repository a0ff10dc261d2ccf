"""The regime map: focused res-students, a stronger S0, deeper feature heads, the cascade to the teacher and the
budgeted evaluation, on a fixture CIFAR-10 (and on hand-made logits where the answer is known)."""
import math

import pandas as pd

import pytest
import torch

from reskd.adaptive import Policy, StagedOutputs, at_budgets, candidate_thresholds, cascade, evaluate_policy
from reskd.cli import JOBS
from reskd.experiment import FEATURE_HEADS, Experiment, ResKDRuns
from reskd.models import create_model
from reskd.profiles import Arch, get_profile
from reskd.regimes import CIFAR_REGIMES, Regime, cascade_budgets, regime_budgets, regime_staged, screen
from reskd.reskd import ResidualDistiller, ResKDEnsemble, focus_index, residual_loss
from reskd.train import TrainConfig

TINY = TrainConfig(epochs=1, batch_size=16, lr=0.05)
LIGHT = Arch("resnet8", 0.25)


@pytest.fixture
def exp(make_cifar_pickles, tmp_path, monkeypatch):
    monkeypatch.setenv("RESKD_CACHE", str(tmp_path / "cache"))
    data = make_cifar_pickles("cifar10")
    profile = get_profile("cifar10", "smoke").replace(
        teacher=Arch("resnet8", 0.5), student=LIGHT, res_students=(LIGHT,), teacher_train=TINY, student_train=TINY,
        val_size=10, train_subset=None, test_subset=None, residual_loss="mse")
    return Experiment(profile, data_root=data.root, artifacts=tmp_path / "artifacts", device="cpu", progress=False)


def test_focus_index_picks_the_least_confident_fraction():
    previous = torch.tensor([[5.0, 0.0], [0.1, 0.0], [2.0, 0.0], [0.0, 0.0]])  # confidences: high, low, mid, lowest
    assert sorted(focus_index(previous, 0.5).tolist()) == [1, 3]
    assert focus_index(previous, 0.01).tolist() == [3]  # at least one sample
    assert len(focus_index(previous, 1.0)) == 4
    for bad in (0.0, 1.5, -0.2):
        with pytest.raises(ValueError, match="focus must be a fraction"):
            focus_index(previous, bad)


def test_a_focused_stage_learns_only_from_the_samples_it_is_sent():
    torch.manual_seed(0)
    s0, stage, teacher = create_model("resnet8", 10, width=0.25), create_model("resnet8", 10, width=0.25), \
        create_model("resnet8", 10, width=0.25)
    distiller = ResidualDistiller(stage, teacher, ResKDEnsemble(s0.eval()), loss="kd", focus=0.25)
    distiller.train()
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))

    class View:
        key, num_samples = "v", 8

    _, losses = distiller.loss(x, y, torch.arange(8), View())
    with torch.no_grad():
        previous, t = s0(x), teacher(x)
    rows = focus_index(previous, 0.25)
    s = stage(x)
    expected = residual_loss("kd", s[rows], previous[rows], t[rows], y[rows])
    for name in expected:
        assert torch.allclose(losses[name], expected[name], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="focus must be a fraction"):
        ResidualDistiller(create_model("resnet8", 10, width=0.25), teacher, ResKDEnsemble(s0), focus=2.0)


def test_new_options_enter_keys_and_names_only_when_set(exp):
    default = ResKDRuns(exp, loss="mse").ensemble([LIGHT])
    focused = ResKDRuns(exp, loss="mse", focus=0.5).ensemble([LIGHT])
    stronger = ResKDRuns(exp, loss="mse", student=Arch("resnet8", 0.5)).ensemble([LIGHT])
    names = {name: spec for name, spec in exp.specs.items() if name.startswith("res1")}
    plain = next(spec for name, spec in names.items() if "focus" not in name and "-on" not in name)
    assert "focus" not in plain  # runs trained before the option existed keep their keys
    assert any(spec.get("focus") == 0.5 for name, spec in names.items() if "-focus0.5" in name)
    assert any("-onresnet8x0.5" in name for name in names)
    assert stronger.stages[0].fc.in_features != default.stages[0].fc.in_features  # a different S0
    assert focused.num_stages == default.num_stages == 2


def test_a_deep_feature_head_has_its_blocks(exp):
    runs = ResKDRuns(exp, loss="mse")
    ens = runs.ensemble([Arch("feature_head3", 0.25)])
    head = ens.stages[1]
    assert ens.inputs == ["image", "features"] and len(head.body) == 3 * FEATURE_HEADS["feature_head3"]


def _staged(correct_first: list[bool], confidence: list[float], macs: list[int]) -> StagedOutputs:
    """Two stages on hand-made logits: stage 0 right where ``correct_first``, with max-prob rising with
    ``confidence``; stage 1 always right."""
    n = len(correct_first)
    labels = torch.zeros(n, dtype=torch.long)
    first = torch.zeros(n, 2)
    for i, (ok, c) in enumerate(zip(correct_first, confidence)):
        first[i, 0 if ok else 1] = c
    second = torch.tensor([[9.0, 0.0]] * n)
    return StagedOutputs(torch.stack([first, second]), labels, macs, teacher_logits=second)


def test_the_cascade_replaces_s0_by_the_teacher_and_pays_both():
    s0 = _staged([True, False, True, False], [3.0, 0.5, 2.0, 0.1], [10, 5])
    teacher = torch.tensor([[9.0, 0.0]] * 4)
    c = cascade(StagedOutputs(s0.logits[:1], s0.labels, [10]), teacher, teacher_macs=100)
    assert c.cumulative_macs == [10, 110]
    none = evaluate_policy(c, Policy("max_prob", [-math.inf]))
    assert none["top1"] == pytest.approx(50.0) and none["avg_macs"] == pytest.approx(10.0)
    everyone = evaluate_policy(c, Policy("max_prob", [math.inf]))
    assert everyone["top1"] == pytest.approx(100.0) and everyone["avg_macs"] == pytest.approx(110.0)
    with pytest.raises(ValueError, match="do not match"):
        cascade(c, torch.zeros(3, 2), teacher_macs=100)


def test_budgets_are_met_on_val_and_a_budget_below_s0_does_not_fit():
    # the two wrong samples are the least confident: a budget that sends the two least confident on fixes them
    val = _staged([True, False, True, False], [3.0, 0.5, 2.0, 0.1], [10, 100])
    test = _staged([False, True, True, True], [0.2, 3.0, 2.0, 1.0], [10, 100])
    rows = at_budgets(val, test, [5.0, 60.0, 200.0], teacher_macs=100)
    assert list(rows["fits"]) == [False, True, True]
    assert rows.loc[1, "val_pct_teacher"] <= 60.0 and rows.loc[1, "val_top1"] == pytest.approx(100.0)
    assert rows.loc[1, "val_exit_frac_1"] == pytest.approx(0.5)
    assert rows.loc[2, "val_top1"] == pytest.approx(100.0)
    assert rows.loc[0, "val_pct_teacher"] == pytest.approx(10.0)  # the cheapest policy: S0 alone


def test_regime_and_cascade_tables_on_a_fixture(exp):
    regime = Regime("tiny", (LIGHT,), "a test regime", "ours", loss="mse", focus=0.5)
    frame = regime_budgets(exp, regime, 0, budgets_pct=(10.0, 200.0))
    assert list(frame["policy"]) == ["static, 1 stage(s)", "static, 2 stage(s)", "adaptive, 10% budget",
                                     "adaptive, 200% budget"]
    rows = frame.set_index("policy")
    s0_pct = rows.loc["static, 1 stage(s)", "val_pct_teacher"]
    assert 10.0 < s0_pct < 200.0 and rows.loc["static, 2 stage(s)", "val_pct_teacher"] < 200.0
    # a budget below S0's cost: the cheapest policy, S0 alone, i.e. the first static row, on val and on test
    low = rows.loc["adaptive, 10% budget"]
    assert not low["fits"] and low["val_exit_frac_0"] == 1.0
    for column in ("val_top1", "test_top1", "val_pct_teacher", "test_pct_teacher"):
        assert low[column] == pytest.approx(rows.loc["static, 1 stage(s)", column]), column
    # a budget above the whole chain's cost: every policy fits, and the most accurate on val is chosen
    staged = regime_staged(exp, regime, 0)
    best_val = max(evaluate_policy(staged["val"], Policy("max_prob", [t]))["top1"]
                   for t in candidate_thresholds(staged["val"], "max_prob", points=200))
    high = rows.loc["adaptive, 200% budget"]
    assert high["fits"] and high["val_top1"] == pytest.approx(best_val)
    assert high["val_top1"] >= rows.loc["static, 2 stage(s)", "val_top1"]
    chosen = Policy("max_prob", list(high["thresholds"]))
    assert high["test_top1"] == pytest.approx(evaluate_policy(staged["test"], chosen)["top1"])
    from reskd.flops import count_macs

    assert exp.teacher_macs == count_macs(exp.teacher(), exp.input_size)  # counted once per experiment
    cas = cascade_budgets(exp, 0, budgets_pct=(200.0,))
    assert cas["regime"].iloc[0] == "cascade"
    assert cas.loc[1, "val_pct_teacher"] > 100.0  # S0 plus the teacher for everyone
    both = screen(exp, [regime], budgets_pct=(200.0,))
    assert set(both["regime"]) == {"cascade", "tiny"}


def test_every_map_regime_is_buildable_and_has_a_job():
    for name in CIFAR_REGIMES:
        regime = CIFAR_REGIMES[name]
        assert regime.reading in ("paper", "ours") and regime.stages
        assert f"regime:{name}" in JOBS
        for arch in regime.stages:
            if arch.name not in FEATURE_HEADS:
                create_model(arch.name, 10, width=arch.width)
    assert [CIFAR_REGIMES[n].reading for n in CIFAR_REGIMES].count("paper") == 1


def test_the_oracle_stops_where_the_prediction_is_final_and_random_exits_keep_the_cost():
    from reskd.adaptive import evaluate_exits, oracle_exits, random_exits

    st = _staged([True, False, True, False], [3.0, 0.5, 2.0, 0.1], [10, 100])
    assert oracle_exits(st).tolist() == [0, 1, 0, 1]
    assert evaluate_exits(st, oracle_exits(st))["top1"] == pytest.approx(100.0)
    exits = random_exits(st, [0.5, 0.5], seed=3)
    assert sorted(exits.tolist()) == [0, 0, 1, 1]
    assert evaluate_exits(st, exits)["avg_macs"] == pytest.approx(60.0)
    with pytest.raises(ValueError, match="summing to 1"):
        random_exits(st, [0.5, 0.6])


def test_energy_by_outcome_splits_the_removed_energy_by_what_s0_got_right():
    from reskd.regimes import energy_by_outcome

    labels = torch.tensor([0, 0])
    teacher = torch.tensor([[4.0, 0.0], [4.0, 0.0]])
    before = torch.tensor([[2.0, 0.0], [0.0, 1.0]])  # sample 0 right, sample 1 wrong
    after = torch.tensor([[4.0, 0.0], [0.0, 1.0]])  # the stage removes energy only where S0 was right
    st = StagedOutputs(torch.stack([before, after]), labels, [1, 1], teacher_logits=teacher)
    frame = energy_by_outcome(st).set_index("samples")
    assert frame.loc["right before the stage", "share_of_energy_removed_pct"] == pytest.approx(100.0)
    assert frame.loc["wrong before the stage", "fixed_pct"] == 0.0
    with pytest.raises(ValueError, match="stage in 1..1"):
        energy_by_outcome(st, stage=2)


def test_profiles_name_only_known_regimes():
    from reskd.profiles import PROFILES

    for dataset, profiles in PROFILES.items():
        for profile in profiles.values():
            assert all(name in CIFAR_REGIMES for name in profile.regimes), (dataset, profile.name)
            assert all(name in CIFAR_REGIMES for name in profile.adaptive_regimes), (dataset, profile.name)
    assert set(get_profile("cifar10", "cpu").regimes) == set(CIFAR_REGIMES)


def test_map_table_and_records_from_a_fixture_screen(exp):
    from reskd import results
    from reskd.regimes import budget_records, map_table, screen_available

    e = Experiment(exp.profile, data_root=exp.data_root, artifacts=exp.artifacts, device="cpu", progress=False,
                   train_missing=False)
    frame, missing = screen_available(e, ["light-image"], budgets_pct=(50.0,))
    assert frame.empty and missing == ["light-image"]  # nothing trained: skipped, not trained
    regime = Regime("tiny", (LIGHT,), "a test regime", "ours", loss="mse")
    frame = regime_budgets(exp, regime, 0, budgets_pct=(50.0,))
    table = map_table(frame)
    assert list(table.index) == ["tiny"] and ("≤50%", "test") in table.columns
    records = budget_records(frame, 10**9, kind="reskd-adaptive", labels={"tiny": "S0 + a light stage"},
                             budgets_pct=(50.0,))
    assert len(records) == 1 and records[0]["regime"] == "S0 + a light stage" and records[0]["stages"] == 2
    results.validate({"chapter": "c", "dataset": "cifar10", "data_source": "fixture", "profile": "smoke",
                      "device": "cpu", "status": results.STATUS_RUN, "models": records})
    below_s0 = regime_budgets(exp, regime, 0, budgets_pct=(1.0, 50.0))  # S0 alone is dearer than 1% of T
    assert not below_s0.loc[below_s0["budget_pct"] == 1.0, "fits"].any()
    kept = budget_records(below_s0, 10**9, kind="reskd-adaptive", budgets_pct=(1.0, 50.0))
    assert [r["budget_pct"] for r in kept] == [50.0]  # never at 1%: no entry claims it
    shown = map_table(below_s0)  # nor does the map show a number at 1%
    assert ("≤1%", "test") not in shown.columns or shown[("≤1%", "test")].isna().all()
    assert shown[("≤50%", "test")].notna().all()


def test_first_stage_energy_and_the_best_regime_on_val(exp, monkeypatch):
    from reskd import regimes as R

    tiny = Regime("tiny", (LIGHT,), "a test regime", "ours", loss="mse")
    monkeypatch.setattr(R, "CIFAR_REGIMES", {"tiny": tiny})
    energy = R.first_stage_energy({"tiny": R.regime_staged(exp, tiny, 0)})
    assert list(energy.index) == [("tiny", "val"), ("tiny", "test")]
    assert energy["energy removed on images S0 had right (%)"].notna().all()
    frame = pd.concat([cascade_budgets(exp, 0, budgets_pct=(50.0,)), regime_budgets(exp, tiny, 0, budgets_pct=(50.0,))])
    best, cascade_row = R.best_at_budget(frame, 50.0)
    assert best["regime"] == "tiny" and cascade_row["regime"] == "cascade"
    assert R.best_at_budget(frame, 7.0) is None
    assert R.best_at_budget(frame.assign(fits=False), 50.0) is None  # a policy dearer than the budget is not chosen
    other = frame[frame["regime"] == "cascade"].assign(regime="cascade from resnet14", val_top1=101.0)
    best, _ = R.best_at_budget(pd.concat([frame, other]), 50.0)  # a cascade is a baseline, never the chosen regime
    assert best["regime"] == "tiny" and R.is_cascade("cascade from resnet14") and not R.is_cascade("tiny")


def test_hard_images_sets_the_cut_on_val_and_scores_the_stage_against_the_teacher_there():
    """Hand-made logits: two unsure test images (the stage fixes one, breaks the other; the teacher has both right)
    and two sure ones (the stage breaks one)."""
    from reskd import regimes as R

    s0 = torch.tensor([[0.1, 0.0], [0.0, 0.1], [5.0, 0.0], [0.0, 5.0]])
    staged = {"val": StagedOutputs(torch.stack([s0, s0]), torch.tensor([0, 1, 0, 1]), [1, 1], s0),
              "test": StagedOutputs(torch.stack([s0, torch.tensor([[0.0, 1.0], [0.1, 0.0], [5.0, 0.0], [5.0, 0.0]])]),
                                    torch.tensor([1, 1, 0, 1]), [1, 1],
                                    torch.tensor([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]]))}
    row = R.hard_images({"made": staged}, fraction=0.5).loc["made"]
    assert row["hard images (% of test)"] == pytest.approx(50.0)
    assert row["S0 top-1"] == pytest.approx(50.0) and row["S0 + stage top-1"] == pytest.approx(50.0)
    assert row["teacher top-1"] == pytest.approx(100.0)
    assert row["fixed (%)"] == pytest.approx(50.0) and row["broken (%)"] == pytest.approx(50.0)
    assert row["top-1 change on the rest"] == pytest.approx(-50.0)
    unsure = torch.zeros_like(s0)  # on val S0 is surer of nothing: the cut falls below every test image
    staged["val"] = StagedOutputs(torch.stack([unsure, unsure]), staged["val"].labels, [1, 1], s0)
    assert R.hard_images({"made": staged}, fraction=0.5).loc["made", "hard images (% of test)"] == 0.0  # val's cut


def test_hard_images_reading_names_the_stage_that_gains_most_and_the_share_of_the_gap_it_closes():
    from reskd.regimes import hard_images_reading

    hard = pd.DataFrame({"hard images (% of test)": [25.0, 25.0], "S0 top-1": [15.0, 15.0],
                         "S0 + stage top-1": [15.5, 17.0], "teacher top-1": [23.0, 23.0]}, index=["a", "b"])
    reading = hard_images_reading(hard)
    assert "b, takes top-1 from 15.0% to 17.0%" in reading and "closes 25% of the gap" in reading
    hard["teacher top-1"] = 15.0  # a teacher no better than S0 there (a smoke run): no share of a gap to divide by
    assert "the teacher does no better than $S_0$ on the images" in hard_images_reading(hard)


def test_budgets_over_seeds_skips_untrained_seeds_and_grow_keeps_only_stages_that_pay(exp, monkeypatch):
    from reskd import regimes as R

    tiny = Regime("tiny", (LIGHT, LIGHT), "a test regime", "ours", loss="mse")
    monkeypatch.setattr(R, "CIFAR_REGIMES", {"tiny": tiny})
    R.regime_budgets(exp, tiny, 0, budgets_pct=(50.0,))  # trains seed 0 only
    frozen = Experiment(exp.profile, data_root=exp.data_root, artifacts=exp.artifacts, device="cpu", progress=False,
                        train_missing=False)
    frame, found = R.budgets_over_seeds(frozen, "tiny", [0, 1], budgets_pct=(50.0,))
    assert found == [0] and set(frame["seed"]) == {0}
    assert R.budgets_over_seeds(frozen, "tiny", [5], budgets_pct=(50.0,))[1] == []
    # an impossible bar stops before the first stage; no bar keeps every trained stage
    strict = R.stages_paid_for(frozen, tiny, 0, min_gain_per_mmac=1e9)
    assert strict["decision"].iloc[-1].startswith("stop: gain") and len(strict) == 2
    lenient = R.stages_paid_for(frozen, tiny, 0, min_gain_per_mmac=-1e9)
    assert list(lenient["stage"]) == [0, 1, 2] and lenient["decision"].str.startswith("added").sum() == 2
    mixed = Regime("mixed", (LIGHT, Arch("feature_head")), "two kinds", "ours")
    with pytest.raises(ValueError, match="mixes stage architectures"):
        R.stages_paid_for(frozen, mixed, 0, min_gain_per_mmac=0.0)


def test_a_regime_label_reads_as_a_sentence(exp):
    assert "on the image;" in CIFAR_REGIMES["light-image"].label(exp)
    assert "on S0's last feature map;" in CIFAR_REGIMES["features-deep"].label(exp)
    assert "S0's feature map -2 (counted from the last)" in CIFAR_REGIMES["features-mid"].label(exp)


def test_regime_records_name_each_regime_and_skip_s0_alone(exp):
    from reskd import results
    from reskd.regimes import PROFILE_CHAIN, budgets_for, profile_chain, regime_records

    chain = profile_chain(exp.profile)
    assert chain.name == PROFILE_CHAIN and chain.stages == exp.profile.res_students and chain.reading == "paper"
    assert budgets_for(exp.profile) == (12.5, 18.04, 25.0)  # CIFAR-10's budgets where a profile sets none
    assert budgets_for(exp.profile.replace(budgets_pct=(50.0,))) == (50.0,)
    records, rows, staged = regime_records(exp, chain, [0], budgets_pct=(50.0, 200.0))
    assert set(staged) == {0} and set(staged[0]) == {"val", "test"}  # seed 0's outputs, for a figure's sweep
    static = [r for r in records if r["kind"] == "reskd-stage"]
    assert [r["name"] for r in static] == ["chain: S0..S1"] and static[0]["stages"] == 2  # S0 alone is the KD student
    adaptive = [r for r in records if r["kind"] == "reskd-adaptive"]
    assert {r["budget_pct"] for r in adaptive} <= {50.0, 200.0} and 200.0 in {r["budget_pct"] for r in adaptive}
    assert {r["regime_name"] for r in adaptive} == {PROFILE_CHAIN}  # the name a later profile may take over
    assert all(r["regime"] == chain.label(exp) for r in records)
    assert set(rows["regime"]) == {PROFILE_CHAIN} and set(rows["seed"]) == {0}
    results.validate({"chapter": "c", "dataset": "cifar10", "data_source": "fixture", "profile": "smoke",
                      "device": "cpu", "status": results.STATUS_RUN, "models": records})


def test_cascade_records_match_the_per_seed_tables(exp):
    from reskd.regimes import CASCADE, cascade_budgets, cascade_records

    records, rows, staged = cascade_records(exp, [0], budgets_pct=(200.0,))
    assert set(staged) == {0} and set(staged[0]) == {"val", "test"}
    assert {r["kind"] for r in records} == {"cascade"} and [r["budget_pct"] for r in records] == [200.0]
    assert set(rows["regime"]) == {CASCADE} and set(rows["seed"]) == {0}
    alone = cascade_budgets(exp, 0, budgets_pct=(200.0,))  # built from scratch, not from the staged outputs
    pd.testing.assert_frame_equal(rows.drop(columns=["thresholds"], errors="ignore"),
                                  alone.drop(columns=["thresholds"], errors="ignore"))
    assert records[0]["top1_mean"] == pytest.approx(float(alone.loc[alone["budget_pct"] == 200.0, "test_top1"].iloc[0]))


def test_a_stem_enters_a_runs_key_only_when_set(exp):
    plain = exp.spec("kd", Arch("resnet18", 0.25), 0, TINY)
    stemmed = exp.spec("kd", Arch("resnet18", 0.25, stem="64px"), 0, TINY)
    assert "stem" not in plain and stemmed["stem"] == "64px"  # older runs keep their keys
    assert exp.build(Arch("resnet18", 0.25, stem="64px"), 0).stem_name == "64px"


def test_routing_says_what_the_middle_exit_stops_and_what_the_teacher_is_spared():
    from reskd.regimes import routing

    labels = torch.tensor([0, 0, 0, 1])
    s0 = torch.tensor([[5.0, 0.0], [0.1, 0.0], [0.0, 0.1], [0.1, 0.0]])  # right, right, wrong, wrong
    s01 = torch.tensor([[5.0, 0.0], [5.0, 0.0], [5.0, 0.0], [0.1, 0.0]])  # S1 fixes sample 2
    teacher = torch.tensor([[9.0, 0.0], [9.0, 0.0], [9.0, 0.0], [0.0, 9.0]])
    chain_t = cascade(StagedOutputs(torch.stack([s0, s01]), labels, [10, 2]), teacher, teacher_macs=100)
    two = cascade(StagedOutputs(s0[None], labels, [10]), teacher, teacher_macs=100)
    chain_exits, cascade_exits = torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 1, 1])
    r = routing(chain_t, chain_exits, two, cascade_exits, 100)
    assert r["middle_exit_pct"] == 50.0 and r["middle_sent_to_teacher_by_cascade_pct"] == 100.0
    assert r["middle_top1"] == 100.0 and r["middle_top1_cascade"] == 100.0  # the teacher was right there too
    assert r["teacher_pct"] == 25.0 and r["cascade_teacher_pct"] == 75.0 and r["teacher_spared_pct"] == 50.0
    assert r["teacher_taken_on_pct"] == 0.0 and r["middle_macs_pct"] == pytest.approx(2 * 3 / 4)
    assert r["fixed_vs_cascade_pct"] == 0.0 and r["broken_vs_cascade_pct"] == 0.0


def test_paired_verdicts_and_chain_to_teacher_records():
    from reskd.regimes import (CHAIN_TO_TEACHER, MIDDLE_COLUMNS, ROUTING_COLUMNS, ROUTING_HEADERS, TEACHER_COLUMNS,
                                chain_at_cost_rows, chain_to_teacher_records, paired_verdicts, routing_tables,
                                verdicts_table)
    from reskd.report import paired_difference
    from reskd.results import validate

    assert paired_difference([1.0, 2.0, 3.0], [0.0, 1.0, 2.0])["std. error"] == 0.0  # the same lead every seed
    d = paired_difference([1.0, 2.0, 3.5], [0.5, 1.4, 3.0], names=("X", "Y"))
    assert d["difference"] == pytest.approx(0.5333, abs=1e-4) and d["verdict"] == "X ahead"
    assert paired_difference([1.0], [2.0])["verdict"].startswith("one seed")
    assert paired_difference([1.0, 2.0], [2.0, 0.0])["verdict"] == "within seed noise"
    rows = pd.DataFrame([{"regime": "r", "seed": s, "budget_pct": 18.04, "thresholds_mode": "per-stage",
                          "chain_stages": 2, "fits": True, "test_top1": 80.0 + s + 0.5, "cascade_test_top1": 80.0 + s,
                          "val_diff": 0.4, "val_top1": 81.0, "test_pct_teacher": 18.0,
                          "cascade_test_pct_teacher": 18.1, "test_avg_macs": 18.0,
                          "test_agreement_teacher": 90.0} for s in range(3)])
    verdict = paired_verdicts(rows).iloc[0]
    assert verdict["difference"] == pytest.approx(0.5) and verdict["verdict"] == "chain-to-teacher ahead"
    assert verdict["res-students before T"] == "1"
    records = chain_to_teacher_records(rows, 100, labels={"r": "a regime"})
    assert len(records) == 1 and records[0]["kind"] == CHAIN_TO_TEACHER and records[0]["stages"] == 3
    assert records[0]["regime"] == "a regime" and records[0]["regime_name"] == "r" and records[0]["budget_pct"] == 18.04
    assert records[0]["val_top1_mean"] == 81.0
    header = {"chapter": "02_cifar", "dataset": "cifar10", "data_source": "fixture", "profile": "smoke",
              "device": "cpu"}
    validate({**header, "models": records})
    with pytest.raises(ValueError, match="needs regime"):
        validate({**header, "models": [{k: v for k, v in records[0].items() if k != "regime"}]})
    assert chain_to_teacher_records(rows.assign(fits=[True, False, True]), 100, labels={}) == []
    assert paired_verdicts(rows.assign(fits=[True, False, True])).iloc[0]["verdict"].startswith("does not meet")
    shown = verdicts_table(paired_verdicts(rows))
    assert list(shown.index.names) == ["regime", "budget (%)"] and "seeds" not in shown and "fits" not in shown
    assert shown.loc[("r", 18.04), "diff."] == pytest.approx(0.5) and shown.loc[("r", 18.04), "res-students"] == "1"
    means = pd.DataFrame([{"regime": "r", "budget_pct": 18.04, **{c: float(i) for i, c in enumerate(ROUTING_COLUMNS)}}]
                         ).set_index(["regime", "budget_pct"])
    middle, load = routing_tables(means)
    assert list(middle.columns) == [ROUTING_HEADERS[c] for c in MIDDLE_COLUMNS]
    assert list(load.columns) == [ROUTING_HEADERS[c] for c in TEACHER_COLUMNS]
    assert set(MIDDLE_COLUMNS) | set(TEACHER_COLUMNS) <= set(ROUTING_COLUMNS)
    assert middle.loc[("r", 18.04), "top-1 there"] == ROUTING_COLUMNS.index("middle_top1")
    at_cost = chain_at_cost_rows(paired_verdicts(rows), 2e8)  # a teacher of 200 MMACs
    assert list(at_cost["ResKD"]) == ["r -> teacher (per-stage thresholds, 18.04% budget)"]
    assert at_cost["ResKD MMACs"].iloc[0] == pytest.approx(36.0) and at_cost["versus MMACs"].iloc[0] == pytest.approx(36.2)
    assert at_cost["difference"].iloc[0] == pytest.approx(0.5) and at_cost["verdict"].iloc[0] == "chain-to-teacher ahead"


def test_chain_to_teacher_rows_on_a_fixture(exp):
    from reskd.regimes import chain_to_teacher_rows, chain_to_teacher_staged, profile_chain

    regime = profile_chain(exp.profile)
    staged = chain_to_teacher_staged(exp, regime, 0)
    assert staged["val"].num_stages == 3 and staged["val"].stage_macs[-1] == exp.teacher_macs
    rows = chain_to_teacher_rows(exp, regime, [0], budgets_pct=(150.0,))
    assert list(rows["thresholds_mode"]) == ["shared", "per-stage"] and rows["fits"].all()
    assert (rows["val_pct_teacher"] <= 150.0 + 1e-9).all()
    # per-stage starts from the shared threshold and moves only when val improves
    assert rows.loc[1, "val_top1"] >= rows.loc[0, "val_top1"]
    assert rows["test_diff"].tolist() == pytest.approx((rows["test_top1"] - rows["cascade_test_top1"]).tolist())


def test_routes_split_the_difference_by_where_each_policy_stops_a_sample():
    from reskd.regimes import ROUTES, routes

    chain_exits, cascade_exits = torch.tensor([0, 1, 1, 2, 0]), torch.tensor([0, 0, 1, 1, 1])
    right_chain = torch.tensor([True, True, False, True, False])
    right_cascade = torch.tensor([True, False, True, True, True])
    r = routes(chain_exits, cascade_exits, 2, right_chain, right_cascade)
    assert sum(r[f"route_{c}_{x}_pct"] for c, x in ROUTES) == pytest.approx(100.0)
    assert r["route_S0_mid_pct"] == 20.0 and r["gain_S0_mid"] == 20.0  # S1 fixed what S0 got wrong
    assert r["gain_T_mid"] == -20.0 and r["gain_T_S0"] == -20.0 and r["gain_T_T"] == 0.0
    assert sum(r[f"gain_{c}_{x}"] for c, x in ROUTES) == pytest.approx(100.0 * (right_chain.float().mean()
                                                                                - right_cascade.float().mean()).item())


def _two_stage(s0_right: int, all_right: int, n: int = 10) -> dict[str, StagedOutputs]:
    """Two stages on ``n`` two-class samples (label 0): S0 right on the first ``s0_right``, all stages on the first
    ``all_right``."""
    logits = torch.zeros(2, n, 2)
    for k, right in enumerate((s0_right, all_right)):
        logits[k, :right, 0], logits[k, right:, 1] = 1.0, 1.0
    st = StagedOutputs(logits, torch.zeros(n, dtype=torch.long), [10, 5])
    return {"val": st, "test": st}


def test_adaptive_rule_chooses_on_val_among_regimes_with_every_seed():
    from reskd.regimes import ADAPTIVE_RULE, choose_adaptive, stage_gains

    staged = {"flat": {0: _two_stage(5, 5), 1: _two_stage(6, 6)},  # the stages change nothing: gain 0
              "some": {0: _two_stage(5, 6), 1: _two_stage(6, 7)},  # +10 points
              "most": {0: _two_stage(5, 8), 1: _two_stage(6, 8)},  # +25 points on average
              "one-seed": {0: _two_stage(0, 10)}}  # +100 points, but one seed of two: not eligible
    gains = stage_gains(staged)
    assert gains.loc[gains["regime"] == "most", "gain"].tolist() == pytest.approx([30.0, 20.0])
    assert gains.loc[gains["regime"] == "some", "changed_pct"].tolist() == pytest.approx([10.0, 10.0])
    main, counter, table = choose_adaptive(gains, seeds=(0, 1))
    assert (main, counter) == ("most", "flat")
    assert list(table.index) == ["most", "some", "flat"]
    assert table.loc["most", "gain"] == pytest.approx(25.0)
    # the test split plays no part: another test split, the same choice
    other = {name: {s: {"val": st["val"], "test": _two_stage(0, 0)["test"]} for s, st in by.items()}
             for name, by in staged.items()}
    assert choose_adaptive(stage_gains(other), seeds=(0, 1))[:2] == ("most", "flat")
    # one seed asked: every regime is eligible, and the one-seed regime wins; one eligible regime: no counterexample
    assert choose_adaptive(gains, seeds=(0,))[0] == "one-seed"
    assert choose_adaptive(stage_gains({"most": staged["most"]}), seeds=(0, 1))[1] is None
    with pytest.raises(ValueError, match="no regime has every seed"):
        choose_adaptive(gains, seeds=(0, 1, 2))
    assert "validation" in ADAPTIVE_RULE


def test_cifar_profiles_leave_the_adaptive_regimes_to_the_validation_rule():
    for name in ("smoke", "cpu", "converged"):
        profile = get_profile("cifar10", name)
        assert profile.adaptive_regimes == ()  # chosen on val by reskd.regimes.choose_adaptive, from the map
        assert len(profile.regimes) >= 2
