"""reskd.report: model entries, tables and verdicts built on the results schema."""
import json
import math

import pandas as pd
import pytest
import torch

from helpers import results_model as _model, write_results as _write
from reskd import report as R
from reskd import results
from reskd.adaptive import StagedOutputs
from reskd.metrics import agreement, top1


def test_summary_table_says_what_was_not_run(tmp_path):
    _write(tmp_path)
    results.write_not_run("03_imagenet", "imagenet", "ImageNet is not available here", "smoke", root=tmp_path)
    table = R.results_table(results.load_results(tmp_path), datasets=["cifar10", "cifar100", "imagenet"])
    assert list(table["dataset"]) == ["cifar10", "cifar10", "cifar100", "imagenet"]
    assert table.loc[1, "% of teacher"] == 25.0 and table.loc[1, "MMACs"] == 1.5
    assert table.loc[2, "model"] == "not run: no results file"
    assert table.loc[3, "model"] == "ImageNet is not available here"
    assert table.loc[3, "top-1 (%)"] != table.loc[3, "top-1 (%)"]  # NaN: no number for a data set not run


def test_model_record_averages_seeds():
    record = R.model_record("KD", "kd", stages=1, macs=2e6, teacher_macs=8e6, top1=[60.0, 62.0], seeds=[0, 1],
                            agreement_teacher=[70.0, 72.0])
    assert record["pct_teacher"] == 25.0 and record["top1_mean"] == 61.0 and record["agreement_teacher"] == 71.0
    assert abs(record["top1_std"] - 2 ** 0.5) < 1e-12
    with pytest.raises(results.ResultsError, match="one value per seed"):
        R.model_record("KD", "kd", stages=1, macs=1, teacher_macs=1, top1=[60.0], seeds=[0, 1])


def test_models_frame_is_readable():
    frame = R.models_frame([_model()])
    assert list(frame.columns) == ["model", "kind", "stages", "MMACs", "% of teacher", "top-1 (%)", "± (std)",
                                   "agreement (%)"]
    assert frame.loc[0, "MMACs"] == 1.5


def test_models_table_labels_kinds_counts_seeds_and_has_no_spread_for_one_run():
    teacher = _model("teacher", "teacher", stages=0, seeds=[0], top1_std=0.0, agreement_teacher=None)
    table = R.models_table([teacher, _model(top1_std=0.4)], kind_labels={"kd": "KD student (S0)"})
    assert list(table.index) == ["teacher", "KD student"]
    assert list(table["kind"]) == ["teacher", "KD student (S0)"]  # a kind without a label keeps its name
    assert list(table["seeds"]) == [1, 2]
    assert list(table["± (std over seeds)"]) == ["–", 0.4]  # one run has no spread: not a 0.0 that reads as one
    assert list(table["stages"]) == [0, 1]


def test_for_display_rounds_and_marks_what_is_missing():
    frame = pd.DataFrame({"top1": [81.2345, 80.0], "std": [0.1234, float("nan")]})
    shown = R.for_display(frame, digits=1, missing="–")
    assert shown["top1"].tolist() == [81.2, 80.0]
    assert shown.loc[0, "std"] == 0.1 and shown.loc[1, "std"] == "–"
    assert R.for_display(frame).loc[1, "std"] == ""


def test_readable_renames_known_columns_and_index_levels_only():
    frame = pd.DataFrame({"method": ["cascade"], "budget_pct": [18.04], "val_top1": [84.2], "mine": [1]})
    shown = R.readable(frame.set_index(["method", "budget_pct"]))
    assert list(shown.columns) == ["val top-1 (%)", "mine"]
    assert list(shown.index.names) == ["rule", "budget (% of teacher)"]
    assert shown.iloc[0, 0] == 84.2
    assert R.readable(frame).index.names == [None]


def test_check_target_names_what_is_missing():
    seeds = dict(seeds=[0, 1, 2], top1_std=0.2)
    teacher = _model("teacher", "teacher", stages=0, pct_teacher=100.0, top1_mean=90.0, agreement_teacher=None)
    equal = _model("equal-cost KD", "kd-equal-cost", pct_teacher=18.2, top1_mean=86.0, **seeds)
    cascade = _model("cascade", "cascade", pct_teacher=18.0, top1_mean=89.0, **seeds)
    dear_cascade = _model("dear cascade", "cascade", pct_teacher=25.0, top1_mean=99.0, **seeds)
    stage = _model("ResKD S0..S2", "reskd-stage", stages=3, pct_teacher=17.0, top1_mean=89.5, **seeds)
    dear = _model("ResKD S0..S3", "reskd-stage", stages=4, pct_teacher=30.0, top1_mean=95.0, **seeds)
    verdict = R.check_target([teacher, equal, cascade, dear_cascade, stage, dear], max_pct_teacher=18.04, max_drop=1.0)
    assert verdict["reached"] and verdict["reskd"] == "ResKD S0..S2" and verdict["drop"] == pytest.approx(0.5)
    assert set(verdict["beats"]) == {"equal-cost KD", "cascade"}  # a cascade dearer than the budget is no bar
    close = dict(cascade, top1_mean=89.3)  # 0.2 points behind the stage: within two standard errors (0.33)
    verdict = R.check_target([teacher, equal, close, stage], max_pct_teacher=18.04, max_drop=1.0)
    assert not verdict["reached"] and "not ahead of cascade by more than 2 standard errors" in verdict["why"]
    weak = dict(stage, top1_mean=85.0)
    verdict = R.check_target([teacher, equal, weak], max_pct_teacher=18.04, max_drop=1.0)
    assert not verdict["reached"] and "5.00 points below" in verdict["why"] and "equal-cost KD" in verdict["why"]
    calibrated = dict(cascade, pct_teacher=18.3, budget_pct=18.04)  # calibrated on val to the budget: it counts
    verdict = R.check_target([teacher, equal, calibrated, stage], max_pct_teacher=18.04, max_drop=1.0)
    assert "cascade" in verdict["beats"]
    single = dict(stage, seeds=[0], top1_std=0.0)
    assert "one seed" in R.check_target([teacher, equal, single], max_pct_teacher=18.04, max_drop=1.0)["why"]
    assert "no ResKD entry" in R.check_target([teacher, dear], max_pct_teacher=18.04, max_drop=1.0)["why"]
    with pytest.raises(results.ResultsError, match="no teacher"):
        R.check_target([stage], max_pct_teacher=18.04, max_drop=1.0)
    # an entry chosen on validation is held to the target even where another one has the better test top-1
    chosen = _model("ResKD chosen on val", "reskd-adaptive", stages=2, pct_teacher=12.0, top1_mean=88.0, **seeds)
    verdict = R.check_target([teacher, equal, cascade, stage, chosen], max_pct_teacher=18.04, max_drop=1.0,
                             reskd="ResKD chosen on val")
    assert verdict["reskd"] == "ResKD chosen on val" and not verdict["reached"]
    with pytest.raises(results.ResultsError, match="no ResKD entry named 'ResKD S0..S3'"):
        R.check_target([teacher, stage, dear], max_pct_teacher=18.04, max_drop=1.0, reskd="ResKD S0..S3")



def test_check_target_judges_a_named_chain_to_teacher_with_its_paired_difference():
    seeds = dict(seeds=[0, 1, 2], top1_std=0.2)
    teacher = _model("teacher", "teacher", stages=0, pct_teacher=100.0, top1_mean=90.0, agreement_teacher=None)
    equal = _model("equal-cost KD", "kd-equal-cost", pct_teacher=18.2, top1_mean=86.0, **seeds)
    cascade = _model("cascade", "cascade", pct_teacher=18.0, top1_mean=89.2, **seeds)
    chain = dict(_model("deep -> teacher", "chain-to-teacher", stages=3, pct_teacher=18.0, top1_mean=89.5, **seeds),
                 budget_pct=18.04)
    models = [teacher, equal, cascade, chain]
    assert "reskd" not in R.check_target(models, max_pct_teacher=18.04, max_drop=1.0)  # only when it is named
    unpaired = R.check_target(models, max_pct_teacher=18.04, max_drop=1.0, reskd="deep -> teacher")
    assert unpaired["reskd"] == "deep -> teacher" and not unpaired["beats"]["cascade"]  # 0.3 < 2 x 0.16
    paired = R.check_target(models, max_pct_teacher=18.04, max_drop=1.0, reskd="deep -> teacher",
                            paired={"cascade": {"difference": 0.3, "std. error": 0.05}})
    assert paired["beats"] == {"equal-cost KD": True, "cascade": True} and paired["reached"]
    noisy = R.check_target(models, max_pct_teacher=18.04, max_drop=1.0, reskd="deep -> teacher",
                           paired={"cascade": {"difference": 0.3, "std. error": 0.2}})
    assert "paired s.e. 0.20" in noisy["why"]

def test_check_target_judges_a_chain_to_teacher_only_when_it_is_named():
    seeds = dict(seeds=[0, 1, 2], top1_std=0.2)
    teacher = _model("teacher", "teacher", stages=0, pct_teacher=100.0, top1_mean=90.0, agreement_teacher=None)
    stage = _model("ResKD S0..S1", "reskd-stage", stages=2, pct_teacher=17.0, top1_mean=85.0, **seeds)
    chain = dict(_model("S0 -> S0+S1 -> T", "chain-to-teacher", stages=3, pct_teacher=18.2, top1_mean=89.5, **seeds),
                 budget_pct=18.04)
    assert R.check_target([teacher, stage, chain], max_pct_teacher=18.04, max_drop=1.0)["reskd"] == "ResKD S0..S1"
    verdict = R.check_target([teacher, stage, chain], max_pct_teacher=18.04, max_drop=1.0, reskd="S0 -> S0+S1 -> T")
    assert verdict["reskd"] == "S0 -> S0+S1 -> T" and verdict["drop"] == pytest.approx(0.5)


def test_compare_at_cost_uses_the_longest_chain_and_the_seed_noise():
    kd = _model("KD student", "kd", top1_mean=80.0, top1_std=0.5, seeds=[0, 1, 2])
    equal = _model("equal-cost KD", "kd-equal-cost", top1_mean=81.0, top1_std=0.2, seeds=[0, 1, 2])
    short = _model("ResKD S0..S1", "reskd-stage", stages=2, top1_mean=90.0, seeds=[0, 1, 2])
    chain = _model("ResKD S0..S2", "reskd-stage", stages=3, top1_mean=81.2, top1_std=0.3, seeds=[0, 1, 2])
    table = R.compare_at_cost([kd, equal, short, chain]).set_index("versus")
    assert set(table["ResKD"]) == {"ResKD S0..S2"}
    assert table.loc["KD student", "difference"] == pytest.approx(1.2)
    assert table.loc["KD student", "verdict"] == "ResKD ahead"  # 1.2 > 2 * sqrt((0.09 + 0.25) / 3) = 0.67
    assert table.loc["equal-cost KD", "verdict"] == "within seed noise"  # 0.2 < 2 * sqrt((0.09 + 0.04) / 3) = 0.42
    behind = R.compare_at_cost([dict(equal, top1_mean=83.0), chain])
    assert behind["verdict"].item() == "ResKD behind"
    single = R.compare_at_cost([dict(equal, seeds=[0], top1_std=0.0), chain])
    assert single["verdict"].item() == "one seed: no noise estimate" and single["std. error"].item() is None
    with pytest.raises(results.ResultsError, match="no 'reskd-stage'"):
        R.compare_at_cost([kd, equal])
    named = R.compare_at_cost([kd, equal, short, chain], reskd="ResKD S0..S1")
    assert set(named["ResKD"]) == {"ResKD S0..S1"} and len(named) == 2
    with pytest.raises(results.ResultsError, match="no ResKD entry named 'KD student'"):
        R.compare_at_cost([kd, chain], reskd="KD student")


def test_frame_records_are_plain_json():
    rows = R.frame_records(pd.DataFrame({"a": [1.23456, float("nan")], "b": ["x", None]}), digits=2)
    assert rows == [{"a": 1.23, "b": "x"}, {"a": None, "b": None}]
    json.dumps(rows, allow_nan=False)


def _staged(seed):
    """Two stages on 200 samples of 5 classes: a noisy S0, and a stage that moves it halfway to the teacher."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 5, (200,), generator=g)
    teacher = torch.nn.functional.one_hot(labels, 5).float() * 6
    s0 = teacher + 4 * torch.randn(200, 5, generator=g)
    logits = torch.stack([s0, 0.5 * (s0 + teacher)])
    return StagedOutputs(logits, labels, [100, 40], teacher_logits=teacher)


def test_reskd_records_stages_and_adaptive_points():
    staged = _staged
    by_seed = {seed: {"val": staged(10 + seed), "test": staged(20 + seed)} for seed in (0, 1)}
    entries = R.reskd_records(by_seed, teacher_macs=1000, drops=(0.5, 100.0))
    assert [e["name"] for e in entries] == ["ResKD S0", "ResKD S0..S1", "ResKD adaptive (val -0.5 pt)",
                                            "ResKD adaptive (val -100 pt)"]
    assert entries[0]["macs"] == 100 and entries[1]["macs"] == 140 and entries[1]["pct_teacher"] == 14.0
    assert entries[1]["top1_mean"] > entries[0]["top1_mean"] and entries[1]["seeds"] == [0, 1]
    loose = entries[3]  # allowed to lose 100 points: everybody stops after S0
    assert loose["macs"] == 100 and loose["top1_mean"] == entries[0]["top1_mean"]
    assert 100 <= entries[2]["macs"] <= 140
    with pytest.raises(results.ResultsError, match="no staged outputs"):
        R.reskd_records({}, teacher_macs=1000)


def _shuffled_labels(st: StagedOutputs, seed: int) -> StagedOutputs:
    perm = torch.randperm(st.num_samples, generator=torch.Generator().manual_seed(seed))
    return StagedOutputs(st.logits, st.labels[perm], st.stage_macs, teacher_logits=st.teacher_logits)


def test_reskd_records_adaptive_entries_are_val_calibrated_and_blind_to_test_labels():
    """Each adaptive entry is the policy calibrated on val (top-1 within the drop of the full ensemble's, on val)
    evaluated on test; shuffling the test split's labels leaves the policy, so the entry's MACs, unchanged (its top-1
    is then the same val policy's on the shuffled labels), where a policy calibrated on test would move."""
    from reskd.adaptive import calibrate, evaluate_policy

    drops = (0.5, 3.0, 8.0)
    by_seed = {seed: {"val": _staged(10 + seed), "test": _staged(20 + seed)} for seed in (0, 1)}
    shuffled = {seed: {"val": st["val"], "test": _shuffled_labels(st["test"], seed)} for seed, st in by_seed.items()}
    entries, blind = (R.reskd_records(b, teacher_macs=1000, drops=drops)[2:] for b in (by_seed, shuffled))
    moved = False
    for drop, entry, blind_entry in zip(drops, entries, blind):
        policies, runs, blind_runs, on_test = [], [], [], []
        for seed, splits in by_seed.items():
            val = splits["val"]
            policy = calibrate(val, "max_prob", target_top1=top1(val.logits[-1], val.labels) - drop)
            runs.append(evaluate_policy(splits["test"], policy, teacher_macs=1000))
            blind_runs.append(evaluate_policy(shuffled[seed]["test"], policy, teacher_macs=1000))
            test = shuffled[seed]["test"]  # what calibrating on the (shuffled) test split would give
            wrong = calibrate(test, "max_prob", target_top1=top1(test.logits[-1], test.labels) - drop)
            on_test.append(evaluate_policy(test, wrong, teacher_macs=1000)["avg_macs"])
        assert entry["macs"] == pytest.approx(sum(r["avg_macs"] for r in runs) / 2, rel=1e-12), drop
        assert entry["top1_mean"] == pytest.approx(sum(r["top1"] for r in runs) / 2, abs=1e-9), drop
        assert entry["agreement_teacher"] == pytest.approx(sum(r["agreement_teacher"] for r in runs) / 2), drop
        assert blind_entry["macs"] == entry["macs"], drop  # the test labels never reach the calibration
        assert blind_entry["top1_mean"] == pytest.approx(sum(r["top1"] for r in blind_runs) / 2, abs=1e-9), drop
        moved |= sum(on_test) / 2 != pytest.approx(entry["macs"])
    assert moved  # calibrating on the shuffled test split would have given other entries: the check has teeth
    assert entries[0]["macs"] > entries[-1]["macs"]  # a larger allowed drop stops more samples after S0


def test_logits_record_scores_every_seed():
    teacher = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [0.0, 2.0]])
    labels = torch.tensor([0, 1, 1, 1])
    logits = {3: teacher, 5: -teacher}
    entry = R.logits_record("KD", "kd", logits, labels, stages=1, macs=2e6, teacher_macs=8e6, teacher_logits=teacher)
    assert entry["seeds"] == [3, 5] and entry["pct_teacher"] == 25.0
    assert entry["top1_mean"] == (top1(teacher, labels) + top1(-teacher, labels)) / 2 == 50.0
    assert entry["agreement_teacher"] == (agreement(teacher, teacher) + agreement(-teacher, teacher)) / 2 == 50.0
    alone = R.logits_record("teacher", "teacher", {0: teacher}, labels, stages=0, macs=8e6, teacher_macs=8e6)
    assert alone["agreement_teacher"] is None and alone["top1_std"] == 0.0 and alone["top1_mean"] == 75.0


def test_adaptive_analysis_is_plain_json_per_regime():
    from reskd.adaptive import budget_curves

    val, test = _staged(10), _staged(20)
    curves = budget_curves(val, test, [10.5, 12.0], teacher_macs=1000, criteria=("max_prob",)).assign(seed=0)
    static = pd.DataFrame([{"stages": 1, "pct_teacher": 10.0, "test_top1": 50.0},
                           {"stages": 2, "pct_teacher": 14.0, "test_top1": 60.0}])
    regime = {"label": "features-deep", "seeds": [0], "stage_macs": [100, 40], "static": static,
              "budget_curves": curves, "calibration_gap": R.calibration_gap(curves),
              "exit_fractions": {"per_stage": [0.75, 0.25], "per_class": {"cat": [1.0, 0.0]}}}
    trivial = {"ratio": None, "reason": "trivial policy: every sample exits after S0"}
    analysis = R.adaptive_analysis(
        teacher_macs=1000, teacher_top1=70.0, regimes={"features-deep": regime},
        wallclock={"device": "cpu", "latency_ms": {"teacher": 2.0, "adaptive": 1.0}},
        speedup_realized_over_macs={"batch 1": trivial}, baselines={"kd_equal_cost": None})
    stored = analysis["regimes"]["features-deep"]
    assert stored["static"][1] == {"stages": 2, "pct_teacher": 14.0, "test_top1": 60.0}
    assert analysis["baselines"] == {"kd_equal_cost": None}
    assert len(stored["budget_curves"]) == len(curves) and analysis["wallclock"]["latency_ms"]["adaptive"] == 1.0
    assert all(t is None or isinstance(t, float) for t in stored["budget_curves"][0]["thresholds"])  # inf: None
    results.validate_analysis({"chapter": "04_adaptive", "dataset": "cifar10", "data_source": "x", "profile": "smoke",
                               "device": "cpu", "analysis": analysis})
    with pytest.raises(results.ResultsError, match="lacks"):
        R.adaptive_analysis(teacher_macs=1000, teacher_top1=70.0, regimes={"x": {"label": "x"}}, wallclock={},
                            speedup_realized_over_macs={})
    with pytest.raises(results.ResultsError, match="no ratio and no reason"):
        R.adaptive_analysis(teacher_macs=1000, teacher_top1=70.0, regimes={"features-deep": regime}, wallclock={},
                            speedup_realized_over_macs={"batch 1": {"ratio": None}})


def test_choose_on_val_reads_validation_top1_only_and_the_unpaired_verdict():
    from reskd.report import choose_on_val, unpaired_verdict

    def entry(name, kind, val, test, budget=18.04, std=0.1):
        return {"name": name, "kind": kind, "budget_pct": budget, "val_top1_mean": val, "top1_mean": test,
                "top1_std": std, "seeds": [0, 1, 2]}

    models = [entry("a", "reskd-adaptive", 80.0, 90.0), entry("b", "chain-to-teacher", 81.0, 70.0),
              entry("c", "cascade", 79.0, 95.0), entry("d", "chain-to-teacher", 99.0, 99.0, budget=25.0),
              {"name": "e", "kind": "kd-equal-cost", "top1_mean": 80.0, "top1_std": 0.1, "seeds": [0, 1, 2]}]
    assert choose_on_val(models, 18.04)["name"] == "b"  # the best on val, though worst on test
    models[2]["val_top1_mean"] = 85.0  # the cascade is what the ResKD model is held against, never the choice
    assert choose_on_val(models, 18.04)["name"] == "b"
    assert choose_on_val(models, 18.04, kinds=("cascade",))["name"] == "c"
    assert choose_on_val(models, 12.5) is None
    v = unpaired_verdict(models[1], models[4])
    assert v["difference"] == -10.0 and v["verdict"] == "behind"


def _verdict_record(dataset="cifar10", profile="cpu", reskd=84.0, equal=83.0, cascade=83.9, chain_paired=None):
    """A small results record: a teacher (87%), the equal-cost KD student, the cascade and two ResKD entries at the
    18.04% budget (the one with the better val top-1 is the worse on test: the rule must pick it anyway)."""
    def entry(name, kind, test, val=None, budget=None, stages=2, std=0.1):
        m = _model(name, kind, stages=stages, pct_teacher=budget or 18.0, top1_mean=test, top1_std=std,
                   seeds=[0, 1, 2])
        return {**m, **({} if budget is None else {"budget_pct": budget, "val_top1_mean": val})}

    models = [entry("teacher", "teacher", 87.0, stages=1, std=0.0) | {"pct_teacher": 100.0, "seeds": [0]},
              entry("wide KD student (equal cost)", "kd-equal-cost", equal, stages=1),
              entry("plain KD ensemble (equal cost)", "kd-equal-cost", 60.0, stages=4),
              entry("cascade (18.04% budget)", "cascade", cascade, val=99.0, budget=18.04),
              entry("adaptive chain (18.04% budget)", "reskd-adaptive", 99.0, val=80.0, budget=18.04),
              entry("deep -> teacher (per-stage thresholds, 18.04% budget)", "chain-to-teacher", reskd, val=85.0,
                    budget=18.04)]
    extra = {"target": {"max_drop": 1.0}}
    if chain_paired is not None:
        extra["chain_to_teacher"] = {"verdicts": [{"regime": "deep", "thresholds_mode": "per-stage",
                                                   "budget_pct": 18.04, "difference": chain_paired[0],
                                                   "std. error": chain_paired[1], "verdict": "(recorded)"}]}
    return {"dataset": dataset, "profile": profile, "status": "run", "models": models, "extra": extra}


def test_judged_at_budget_takes_the_rules_model_and_the_paired_verdict_against_the_cascade():
    judged = R.judged_at_budget(_verdict_record(chain_paired=(0.5, 0.1)), 18.04)
    assert judged["model"]["name"].startswith("deep -> teacher")  # best on val, not on test
    assert judged["gap"] == pytest.approx(-3.0) and not judged["competitive"]
    versus = {v["against"]: v for v in judged["versus"]}
    assert set(versus) == {"equal-cost KD student", "cascade to the teacher"}  # the ensemble is not the student
    assert versus["equal-cost KD student"]["verdict"] == "ahead"  # +1.0, s.e. 0.08
    assert versus["cascade to the teacher"]["s.e. from"] == "paired over seeds"
    cascade = versus["cascade to the teacher"]
    assert cascade["difference"] == 0.5 and cascade["verdict"] == "ahead"
    assert R.judged_at_budget(_verdict_record(), 25.0) is None


def test_judged_at_budget_takes_a_chapters_paired_verdicts_and_says_when_a_budget_is_not_met():
    record = _verdict_record()  # no paired verdicts recorded: the chapter passes its own frame
    row = {"regime": "deep", "thresholds_mode": "per-stage", "budget_pct": 18.04, "difference": 0.123456,
           "std. error": 0.01, "verdict": "chain-to-teacher ahead", "fits": True}
    judged = R.judged_at_budget(record, 18.04, chain_verdicts=pd.DataFrame([row]))
    cascade = {v["against"]: v for v in judged["versus"]}["cascade to the teacher"]
    assert cascade["difference"] == 0.123456 and cascade["verdict"] == "ahead"  # exact, read by noise_verdict
    assert judged["paired"] == {"cascade (18.04% budget)": {"difference": 0.123456, "std. error": 0.01,
                                                            "verdict": "ahead", "fits": True}}
    one_seed = R.judged_at_budget(record, 18.04, chain_verdicts=pd.DataFrame([{**row, "std. error": math.nan}]))
    assert one_seed["paired"]["cascade (18.04% budget)"]["std. error"] is None
    assert one_seed["paired"]["cascade (18.04% budget)"]["verdict"] == "one seed: no noise estimate"
    unmet = R.judged_at_budget(record, 18.04, chain_verdicts=[{**row, "fits": False}])
    assert {v["against"]: v for v in unmet["versus"]}["cascade to the teacher"]["verdict"] == R.NOT_MET_ON_VAL
    # check_target reads the same paired difference for the same model, and no lead where the budget is not met
    name = judged["model"]["name"]
    held = R.check_target(record["models"], max_pct_teacher=18.04, max_drop=1.0, reskd=name, paired=judged["paired"])
    assert held["beats"]["cascade (18.04% budget)"]  # +0.12 paired (s.e. 0.01); unpaired it is +0.10, s.e. 0.08
    unmet_target = R.check_target(record["models"], max_pct_teacher=18.04, max_drop=1.0, reskd=name,
                                  paired=unmet["paired"])
    assert not unmet_target["beats"]["cascade (18.04% budget)"] and "not met on val" in unmet_target["why"]


def test_book_verdict_is_phrased_from_the_verdicts():
    records = {"cifar10": _verdict_record(), "tiny": _verdict_record("tiny-imagenet", profile="smoke"),
               "imagenet": {"dataset": "imagenet", "profile": "cpu", "status": results.STATUS_NOT_RUN, "models": []}}
    text = R.book_verdict(records)
    assert "**CIFAR-10** (cpu profile; the paper's budget: 18.04% of the teacher's MACs)" in text
    assert "3.00 points below the teacher's 87.00%: not competitive" in text
    assert "equal-cost KD student +1.00 points (ahead by more than 2 standard errors)" in text
    assert "cascade to the teacher 0.10 points" not in text and "+0.10 points (within seed noise)" in text
    assert "held on none" in text and "do not pay: on no data set is the ResKD model ahead of the cascade" in text
    assert "(it is ahead of the equal-cost KD student on CIFAR-10)" in text
    assert "Tiny-ImageNet-200 ran only in the smoke profile" in text and "we ran (CIFAR-10)" in text
    assert text.startswith("The paper's claim") and "\n\n**CIFAR-10**" in text  # the conclusion, then the details
    assert "CIFAR-100 and ImageNet-1k were not run" in text  # CIFAR-100 has no record at all: not run either
    ahead = R.book_verdict({"c": _verdict_record(reskd=86.5, cascade=84.0)}, budgets={"cifar10": 18.04})
    assert "competitive with the teacher by our bar" in ahead and "not competitive" not in ahead
    assert "The paper's claim held on CIFAR-10" in ahead and "The residual stages pay" in ahead
    behind = R.book_verdict({"c": _verdict_record(equal=86.0)}, budgets={"cifar10": 18.04})
    assert "-2.00 points (behind by more than 2 standard errors)" in behind
    assert "on CIFAR-10 the equal-cost KD student uses them better" in behind
    assert R._signed(-0.001) == "0.00" and R._signed(0.5) == "+0.50"


def test_verdict_gaps_read_the_judged_model_against_s0_the_baselines_and_the_teacher(tmp_path):
    from reskd.report import gaps_by_length, gaps_table, length_reading, verdict_gaps
    from reskd.results import ResultsError, load_gaps, write_gaps

    seeds = dict(seeds=[0, 1, 2], top1_std=0.1)
    teacher = _model("teacher", "teacher", stages=0, pct_teacher=100.0, top1_mean=90.0, agreement_teacher=None)
    kd = _model("KD S0", "kd", pct_teacher=10.0, top1_mean=85.0, **seeds)
    equal = _model("equal-cost KD", "kd-equal-cost", pct_teacher=18.2, top1_mean=86.0, **seeds)
    cascade = dict(_model("cascade", "cascade", pct_teacher=18.0, top1_mean=86.9, **seeds), budget_pct=18.04)
    chain = dict(_model("deep -> teacher (per-stage thresholds, 18.04% budget)", "chain-to-teacher", stages=3,
                        pct_teacher=18.0, top1_mean=87.0, **seeds), budget_pct=18.04, val_top1_mean=88.0,
                 regime="deep")
    record = {"models": [teacher, kd, equal, cascade, chain], "extra": {"target": {"max_drop": 1.0}, "chain_to_teacher": {
        "verdicts": [{"regime": "deep", "thresholds_mode": "per-stage", "budget_pct": 18.04, "difference": 0.3,
                      "std. error": 0.01}]}}}
    gaps = {g["gap"]: g for g in verdict_gaps(record, 18.04)}
    assert gaps["over_s0"]["difference"] == pytest.approx(2.0) and gaps["over_s0"]["verdict"] == "ahead"
    assert gaps["equal_cost"]["difference"] == pytest.approx(-1.0) and gaps["equal_cost"]["verdict"] == "behind"
    assert gaps["cascade"]["difference"] == pytest.approx(-0.3)  # the paired difference (unpaired: -0.1)
    assert gaps["cascade"]["std. error"] == pytest.approx(0.01) and gaps["cascade"]["verdict"] == "behind"
    assert gaps["teacher"]["difference"] == pytest.approx(3.0) and gaps["teacher"]["verdict"].endswith("target missed")
    assert verdict_gaps(record, 12.5) == []  # nothing calibrated to that budget
    unmet = {**record, "extra": {**record["extra"], "chain_to_teacher": {"verdicts": [
        {**record["extra"]["chain_to_teacher"]["verdicts"][0], "fits": False}]}}}
    assert {g["gap"]: g for g in verdict_gaps(unmet, 18.04)}["cascade"]["verdict"] == "does not meet the budget on val"
    close = dict(chain, top1_mean=89.5)
    record["models"][-1] = close
    assert {g["gap"]: g for g in verdict_gaps(record, 18.04)}["teacher"]["verdict"].endswith("target met")

    write_gaps("cifar10", "converged", teacher_epochs=120, student_epochs=120, gaps=verdict_gaps(record, 18.04),
               root=tmp_path)
    write_gaps("cifar10", "cpu", teacher_epochs=30, student_epochs=15, gaps=[], choices={"residual_loss": "mse"},
               root=tmp_path)  # keeps converged's
    entries = load_gaps("cifar10", tmp_path)
    assert set(entries) == {"cpu", "converged"}
    assert entries["cpu"]["choices"] == {"residual_loss": "mse"} and entries["converged"]["choices"] == {}
    side = gaps_by_length(entries)
    assert list(side["profile"].unique()) == ["converged"]  # cpu recorded no gaps
    assert side["gap_name"].iloc[0] == "ResKD over its KD S0"
    write_gaps("cifar10", "cpu", teacher_epochs=30, student_epochs=15, gaps=verdict_gaps(record, 18.04)[:1],
               root=tmp_path)
    table = gaps_table(gaps_by_length(load_gaps("cifar10", tmp_path)))
    assert list(table.columns) == ["cpu (teacher 30, students 15 epochs)", "converged (teacher 120, students 120 epochs)"]
    assert table.loc["ResKD over its KD S0"].iloc[1] == "+4.50 (s.e. 0.08): ahead"  # the model at 89.5%
    assert table.loc["teacher over ResKD"].iloc[0] == "–"  # cpu recorded only the first gap here
    reading = length_reading(gaps_by_length(load_gaps("cifar10", tmp_path)))
    assert reading.startswith("The verdict does not change with training length: ResKD over its KD S0: +4.50 (ahead)")
    assert length_reading(gaps_by_length({"cpu": load_gaps("cifar10", tmp_path)["cpu"]})).startswith("Only one")
    moved = load_gaps("cifar10", tmp_path)
    moved["converged"]["gaps"][0] = {**moved["converged"]["gaps"][0], "verdict": "within seed noise"}
    assert length_reading(gaps_by_length(moved)).startswith("The verdict changes with training length on 1 of 1 gaps")
    (tmp_path / "lengths" / "cifar10.json").write_text('{"cpu": {"gaps": []}}')
    with pytest.raises(ResultsError, match="teacher_epochs"):
        load_gaps("cifar10", tmp_path)


def test_page_table_rounds_without_negative_zero_and_marks_what_does_not_exist():
    frame = pd.DataFrame({"val_top1": [81.234, -0.001], "count": [3, 4], "std": [0.5, float("nan")]},
                         index=pd.Index(["a", "b"], name="budget_pct"))
    shown = R.page_table(frame)
    assert list(shown.columns) == ["val top-1 (%)", "count", "std"] and shown.index.name == "budget (% of teacher)"
    assert shown.loc["a", "val top-1 (%)"] == 81.23 and str(shown.loc["b", "val top-1 (%)"]) == "0.0"
    assert shown.loc["b", "std"] == "–" and shown.loc["a", "count"] == 3


def test_late_gain_reads_the_last_fifth_of_a_run_in_either_order():
    history = pd.DataFrame({"epoch": range(1, 11), "val_top1": [10, 20, 30, 40, 50, 60, 70, 80, 84, 85.5]})
    assert R.late_gain(history) == (2, pytest.approx(85.5 - 80))  # the last fifth of 10 epochs: 2, from epoch 8
    assert R.late_gain(history.iloc[::-1]) == (2, pytest.approx(5.5))  # rows out of order: epochs decide
    assert R.late_gain(history, fraction=0.5) == (5, pytest.approx(85.5 - 50))
    n, gain = R.late_gain(history.head(1))  # one epoch has no epoch before its last fifth
    assert n == 1 and math.isnan(gain)
    with pytest.raises(ValueError, match="fraction"):
        R.late_gain(history, fraction=1.0)


def test_targets_reading_says_which_target_each_model_reached():
    models = [{"name": "teacher r56", "kind": "teacher", "top1_mean": 90.25, "seeds": [0]},
              {"name": "student r8 (KD)", "kind": "kd", "top1_mean": 83.5, "seeds": [0, 1, 2]}]
    assert R.targets_reading(models, (("teacher", 90.0), ("kd", 84.0))) == (
        "Test top-1 against the targets fixed before this profile's runs: teacher r56 90.25% against 90%: **reached** "
        "(+0.25); student r8 (KD) 83.50% (mean of 3 seeds) against 84%: **missed** by 0.50 points.")
    with pytest.raises(ValueError, match="no model entry of kind 'scratch'"):
        R.targets_reading(models, (("scratch", 80.0),))


def test_ladder_sentence_says_what_each_doubling_added_and_what_the_rule_picks():
    curve = pd.DataFrame({"epochs": [60, 30, 120], "val_top1": [89.5, 88.0, 89.7]})
    assert R.ladder_sentence("teacher", curve, 0.3) == (
        "teacher: val top-1 88.00% after 30 epochs, 89.50% after 60 epochs (+1.50 for doubling), 89.70% after 120 "
        "epochs (+0.20 for doubling); the rule (the shortest length whose doubling gains under 0.3 points) picks "
        "**60 epochs**.")
    assert R.ladder_sentence("teacher", curve.assign(val_top1=[89.5, 88.0, 90.0]), 0.3).endswith(
        "a longer rung is needed.")
    assert R.ladder_sentence("S0", curve.assign(val_top1=[89.5, 88.0, 90.0]), 0.3, cap=60).endswith(
        "no length up to 60 epochs qualifies under the rule (the shortest length whose doubling gains under 0.3 "
        "points), so the profile's budget sets the length: **60 epochs, its cap**, where doubling it still gained "
        "+0.50; the model was still gaining.")
    noisy = R.ladder_sentence("teacher", curve, 0.3, val_size=5000)  # sqrt(0.897 * 0.103 / 5000) = 0.43 points
    assert "binomial standard error of 0.43 points, and a doubling's gain at most 0.61" in noisy
    assert R.top1_std_error(50.0, 100) == pytest.approx(5.0)
