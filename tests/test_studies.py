"""reskd.studies around the method: the first-stage ablation and loss="auto", greedy growth, per-stage records, the
plain-ensemble baseline, on a fixture CIFAR-10 (the ``exp`` fixture of conftest.py)."""
import pytest
import torch
from torch import nn

from reskd.experiment import FEATURE_HEAD, ResKDRuns
from reskd.metrics import top1
from reskd.profiles import Arch
from reskd.reskd import RESIDUAL_LOSSES
from reskd.studies import (StageOption, ablate, ablate_losses, fit_member_weights, grow, learnability, pick_best,
                           plain_ensemble_logits, reskd_runs, resolve_loss, stage_records)
from reskd.theory import explained_variance


def test_reskd_stages_records_and_baselines(exp):
    e = exp()
    runs = ResKDRuns(e, loss="mse")
    ens = runs.ensemble([Arch("resnet8", 0.5)])
    assert ens.num_stages == 2
    staged = {split: runs.staged(ens, split) for split in ("val", "test")}
    records = stage_records(staged, teacher_macs=10 * staged["val"].cumulative_macs[-1])
    assert list(records["stage"]) == [0, 1]
    assert records["macs"].is_monotonic_increasing
    assert {"val_top1", "test_agreement_teacher", "test_residual_energy"} <= set(records.columns)
    # a different loss is a different run
    other = ResKDRuns(e, loss="kd").ensemble([Arch("resnet8", 0.5)])
    assert not torch.equal(other.stages[1].fc.weight, ens.stages[1].fc.weight)
    logits, labels = plain_ensemble_logits(e, [Arch("resnet8", 0.5), Arch("resnet8", 0.5)], "test")
    assert logits.shape == (len(e.data.test), 10) and len(labels) == len(e.data.test)
    weighted, _ = plain_ensemble_logits(e, [Arch("resnet8", 0.5), Arch("resnet8", 0.5)], "test", weighting="val")
    assert weighted.shape == logits.shape and not torch.allclose(weighted, logits)
    with pytest.raises(ValueError, match="unknown weighting 'best'"):
        plain_ensemble_logits(e, [Arch("resnet8", 0.5)], "test", weighting="best")


def test_member_weights_follow_the_better_member_and_never_lose_to_averaging():

    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (2000,), generator=gen)
    good = 4.0 * nn.functional.one_hot(labels, 10).float() + torch.randn(2000, 10, generator=gen)
    noise = 4.0 * torch.randn(2000, 10, generator=gen)
    weights = fit_member_weights([good, noise], labels)
    assert (weights >= 0).all() and weights[0] > 5 * weights[1]

    def ce(w):
        return nn.functional.cross_entropy(w[0] * good + w[1] * noise, labels).item()

    assert ce(weights) <= ce(torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="no member logits"):
        fit_member_weights([], labels)


def test_grow_stops_on_budget_and_uses_feature_heads(exp):
    e = exp()
    runs = ResKDRuns(e, loss="kd")
    ens, log = grow(runs, [Arch("resnet8", 0.5)], max_stages=2, macs_budget=0.01)
    assert ens.num_stages == 1 and "budget" in log["decision"].iloc[-1]
    ens, log = grow(runs, [Arch(FEATURE_HEAD, 0.25)], max_stages=1)
    assert ens.num_stages == 2 and ens.inputs[1] == "features"
    assert log["decision"].iloc[-1].startswith("added")


def test_auto_loss_is_the_validation_winner_of_the_ablation(exp):
    e = exp()
    table = ablate_losses(e)
    assert sorted(table["loss"]) == sorted(RESIDUAL_LOSSES)
    assert {"train_energy", "test_energy", "val_gain", "test_gain", "added_mmacs"} <= set(table.columns)
    best = table.loc[table["val_top1"].idxmax(), "loss"]
    assert reskd_runs(e).loss == best == resolve_loss(e)  # "auto": the validation winner (the runs are loaded now)
    with pytest.raises(ValueError, match=r"loss='auto' is chosen by the first-stage ablation.*reskd_runs\(exp\)"):
        ResKDRuns(e)  # an explicit call resolves it; reading an attribute never trains
    with pytest.raises(ValueError, match="validation"):
        pick_best(table, "loss", by="test_top1")
    with pytest.raises(ValueError, match="unknown residual loss"):
        ResKDRuns(e, loss="huber")


def test_ablation_options_are_distinct_runs(exp):
    e = exp()
    options = [StageOption(Arch("resnet8", 0.5), "mse"), StageOption(Arch("resnet8", 0.5), "mse", epochs=2),
               StageOption(Arch(FEATURE_HEAD, 0.25), "mse")]
    table = ablate(e, options)
    assert list(table["epochs"]) == [1, 2, 1] and list(table["input"]) == ["image", "image", "features"]
    assert table["added_mmacs"].iloc[2] < table["added_mmacs"].iloc[0]  # a head on S0's features is cheaper
    names = [name for name in e.results if name.startswith("res1")]
    assert len(names) == 3 and any(name.endswith("-e2-s0") for name in names)


def test_learnability_fits_each_target_with_one_recipe(exp, monkeypatch):
    import reskd.studies as studies

    e = exp()
    arch = Arch("resnet8", 0.5)
    scored = []  # the logits each row's top-1 is taken of (the fixture's one-epoch models all score alike)
    monkeypatch.setattr(studies, "top1", lambda logits, labels: scored.append(logits) or top1(logits, labels))
    frame = learnability(e, arch, seed=0)
    assert len(frame) == 8 and set(frame["split"]) == {"val", "test"}
    test = frame[frame["split"] == "test"].set_index(["target", "input"])
    assert test.loc[("residual z_T - z_S0", "S0's last feature map"), "network"] == Arch(FEATURE_HEAD).label
    assert set(test["top1_of"]) == {"it alone", "S0 + it"}
    # every row against the value recomputed from the networks themselves: the target, the prediction, the top-1 of
    # the prediction alone (logits) or added to S0 (residual)
    s0, labels = e.student("kd", seed=0), e.logits(e.student("kd", seed=0), "test")[1]
    teacher, s0_logits = e.teacher_logits("test"), e.logits(s0, "test")[0]
    runs = ResKDRuns(e, loss="mse", input="image")
    image_stage = runs.ensemble([arch], 0).stages[1]
    feature_ens = runs.ensemble([Arch(FEATURE_HEAD)], 0)
    head = e.logits(feature_ens.stage_model(1), "test")[0]
    expected = {("teacher's logits z_T", "image"): (teacher, e.logits(e.regressor("teacher", arch, 0), "test")[0], False),
                ("S0's logits z_S0", "image"): (s0_logits, e.logits(e.regressor("s0", arch, 0), "test")[0], False),
                ("residual z_T - z_S0", "image"): (teacher - s0_logits, e.logits(image_stage, "test")[0], True),
                ("residual z_T - z_S0", "S0's last feature map"): (teacher - s0_logits, head, True)}
    assert set(test.index) == set(expected)
    for key, (target, prediction, added) in expected.items():
        assert test.loc[key, "explained_variance"] == pytest.approx(explained_variance(target, prediction),
                                                                   rel=1e-4, abs=1e-5), key
        assert test.loc[key, "top1"] == pytest.approx(top1(s0_logits + prediction if added else prediction, labels)), key
    assert len(scored) == len(frame) == 8
    for (key, (_, prediction, added)), logits in zip(expected.items(), scored[4:]):  # the test split's rows, in order
        torch.testing.assert_close(logits, s0_logits + prediction if added else prediction, rtol=1e-4, atol=1e-4)
    assert test["explained_variance"].nunique() == 4  # four different fits, not one number copied
    # the regressors start from the first res-student's weights and differ only in their target
    teacher_fit, s0_fit = e.regressor("teacher", arch, 0), e.regressor("s0", arch, 0)
    assert not torch.equal(teacher_fit.fc.weight, s0_fit.fc.weight)
    assert e.specs["regress-teacher-resnet8x0.5-s0"]["target"] == "teacher"
    with pytest.raises(ValueError, match="unknown regression target 'labels'"):
        e.regressor("labels", arch, 0)
