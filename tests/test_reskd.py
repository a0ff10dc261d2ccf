"""The residual-guided ensemble on a synthetic problem: a fixed random teacher and Gaussian-noise images."""
import math

import pytest
import torch

from reskd.data import Loader
from reskd.distill import View
from reskd.models import create_model
from reskd.reskd import (RESIDUAL_LOSSES, FeatureHead, ResidualDistiller, ResKDEnsemble, residual_energy,
                         residual_loss, zero_last_layer)
from reskd.train import TrainConfig, evaluate, evaluate_distiller, fit, predict

from helpers import NUM_CLASSES, TinyNet, tiny_images, tiny_spec


def test_ensemble_output_is_sum_of_stages():
    torch.manual_seed(0)
    s0, s1, s2 = TinyNet(), TinyNet(width=4), TinyNet(width=2)
    ens = ResKDEnsemble(s0, [s1, s2]).eval()
    x = torch.randn(5, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(ens(x), s0(x) + s1(x) + s2(x))
        cum = ens.cumulative_logits(x)
        torch.testing.assert_close(cum[0], s0(x))
        torch.testing.assert_close(cum[1], s0(x) + s1(x))
        torch.testing.assert_close(cum[2], ens(x))


@pytest.mark.parametrize("feature_index,side", [(-1, 8), (-2, 16)], ids=["last-map", "second-last-map"])
def test_feature_stage_reads_student_features_and_costs_only_its_head(feature_index, side):
    """A head on S0's feature map ``feature_index`` (resnet8 on 32x32: the last map is 8x8, the one before 16x16):
    its logits, the map's shape, its MACs and the stage alone all read that map, not the last one."""
    torch.manual_seed(0)
    s0 = create_model("resnet8", 10, width=0.5)
    channels = s0.feature_channels[feature_index]
    assert channels != s0.feature_channels[-1] or feature_index == -1  # the maps differ in channels, too
    head = FeatureHead(channels, 10, channels=8)
    ens = ResKDEnsemble(s0, [head], ["features"], feature_index=feature_index).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        features = s0.forward_features(x)[feature_index]
        assert tuple(features.shape[1:]) == (channels, side, side)
        torch.testing.assert_close(ens(x), s0(x) + head(features))
        own = ens.stage_logits(x)
        torch.testing.assert_close(own[1], head(features))
        torch.testing.assert_close(ens.stage_model(1)(x), head(features))  # the stage alone, from the image
        assert ens.stage_model(0) is s0
    assert ens.feature_shape((3, 32, 32)) == (channels, side, side)
    macs = ens.stage_macs((3, 32, 32))
    assert macs[1] == side * side * channels * 8 * 9 + 8 * 10  # one 3x3 conv on the side x side map + the fc
    assert macs[1] < macs[0]


def test_zero_initialised_stage_starts_at_previous_predictions():
    torch.manual_seed(0)
    s0, s1 = TinyNet(), zero_last_layer(TinyNet(width=4))
    x = torch.randn(4, 3, 8, 8)
    ens = ResKDEnsemble(s0, [s1]).eval()
    with torch.no_grad():
        torch.testing.assert_close(ens(x), s0(x))


def test_residual_losses():
    torch.manual_seed(0)
    prev, teacher = torch.randn(6, 5), torch.randn(6, 5)
    y = torch.randint(0, 5, (6,))
    exact = teacher - prev
    for kind in RESIDUAL_LOSSES:
        losses = residual_loss(kind, exact, prev, teacher, y)
        if kind in ("mse", "mse_centered", "logprob"):
            assert sum(losses.values()).item() == pytest.approx(0.0, abs=1e-6), kind
    shifted = exact + 3.0  # a per-sample shift: invisible to softmax, so to the centered and log-prob losses
    assert residual_loss("mse", shifted, prev, teacher, y)["mse"].item() == pytest.approx(9.0, rel=1e-5)
    assert residual_loss("mse_centered", shifted, prev, teacher, y)["mse"].item() == pytest.approx(0.0, abs=1e-6)
    assert residual_loss("logprob", shifted, prev, teacher, y)["logprob"].item() == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(ValueError, match="unknown residual loss"):
        residual_loss("l1", exact, prev, teacher, y)


def _log_softmax(row: list[float]) -> list[float]:
    top = max(row)
    lse = top + math.log(sum(math.exp(v - top) for v in row))
    return [v - lse for v in row]


def _hand_kd(student: list[list[float]], teacher: list[list[float]], T: float) -> float:
    """T^2 * KL(softmax(t/T) || softmax(s/T)), averaged over the rows, by hand."""
    total = 0.0
    for s_row, t_row in zip(student, teacher):
        log_p, log_q = _log_softmax([v / T for v in t_row]), _log_softmax([v / T for v in s_row])
        total += sum(math.exp(lp) * (lp - lq) for lp, lq in zip(log_p, log_q))
    return T * T * total / len(student)


def _hand_ce(logits: list[list[float]], labels: list[int]) -> float:
    return -sum(_log_softmax(row)[y] for row, y in zip(logits, labels)) / len(logits)


PREV = [[1.0, 0.0, -1.0], [0.5, 2.0, 0.0]]
TEACHER = [[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]]
LABELS = [0, 2]
STAGE = [[0.5, -0.5, 0.25], [1.0, 0.0, -2.0]]  # a res-student's output, away from the exact residual


def _plus(a, b):
    return [[x + y for x, y in zip(ra, rb)] for ra, rb in zip(a, b)]


def _minus(a, b):
    return [[x - y for x, y in zip(ra, rb)] for ra, rb in zip(a, b)]


@pytest.mark.parametrize("weights", [{}, {"temperature": 2.0, "ce_weight": 0.3, "kd_weight": 0.7}],
                         ids=["defaults", "other-weights"])
def test_kd_and_mse_ce_residual_losses_by_hand(weights):
    """The two losses the committed chains use, on 2 samples of 3 classes against values computed by hand: ``kd`` is
    the weighted KD loss of the combined logits Z = previous + s against the teacher plus the weighted cross-entropy of
    Z; ``mse+ce`` the mean squared error of s against r = z_T - previous plus the weighted cross-entropy of Z."""
    T = weights.get("temperature", 4.0)
    ce_w, kd_w = weights.get("ce_weight", 0.1), weights.get("kd_weight", 0.9)
    prev, teacher, y = torch.tensor(PREV), torch.tensor(TEACHER), torch.tensor(LABELS)
    residual = _minus(TEACHER, PREV)
    for stage in (residual, STAGE):  # at the exact residual, and away from it
        combined = _plus(PREV, stage)
        s = torch.tensor(stage)
        kd = residual_loss("kd", s, prev, teacher, y, **weights)
        assert set(kd) == {"kd", "ce"}
        assert kd["kd"].item() == pytest.approx(kd_w * _hand_kd(combined, TEACHER, T), rel=1e-5, abs=1e-7)
        assert kd["ce"].item() == pytest.approx(ce_w * _hand_ce(combined, LABELS), rel=1e-5)
        mse_ce = residual_loss("mse+ce", s, prev, teacher, y, **weights)
        assert set(mse_ce) == {"mse", "ce"}
        squared = [(a - b) ** 2 for ra, rb in zip(stage, residual) for a, b in zip(ra, rb)]
        assert mse_ce["mse"].item() == pytest.approx(sum(squared) / len(squared), rel=1e-5, abs=1e-7)
        assert mse_ce["ce"].item() == pytest.approx(ce_w * _hand_ce(combined, LABELS), rel=1e-5)
    # at the exact residual the combined logits are the teacher's: no KD or MSE term is left, and the cross-entropy
    # is the teacher's own (2.0, 0.5, -1.0 -> class 0; 0.0, 1.0, 3.0 -> class 2)
    exact = torch.tensor(residual)
    teacher_ce = -(_log_softmax(TEACHER[0])[0] + _log_softmax(TEACHER[1])[2]) / 2
    assert teacher_ce == pytest.approx((0.2413 + 0.1700) / 2, abs=1e-4)  # log(9.4056) - 2, log(23.8038) - 3
    at_exact = residual_loss("kd", exact, prev, teacher, y, **weights)
    assert at_exact["kd"].item() == pytest.approx(0.0, abs=1e-6)
    assert at_exact["ce"].item() == pytest.approx(ce_w * teacher_ce, rel=1e-5)
    at_exact = residual_loss("mse+ce", exact, prev, teacher, y, **weights)
    assert at_exact["mse"].item() == 0.0 and at_exact["ce"].item() == pytest.approx(ce_w * teacher_ce, rel=1e-5)


def test_fitting_a_res_student_lowers_residual_energy():
    """A res-student trained on the residual of a frozen random student w.r.t. a fixed random teacher."""
    torch.manual_seed(0)
    spec, data = tiny_spec(), tiny_images(128)
    teacher = TinyNet(width=16).eval()
    student = TinyNet(width=4).eval()
    ensemble = ResKDEnsemble(student)
    eval_loader = Loader(data, spec, 128, train=False)
    t_logits, _ = predict(teacher, eval_loader, device="cpu")
    before = residual_energy(t_logits, predict(ensemble, eval_loader, device="cpu")[0])

    distiller = ResidualDistiller(TinyNet(width=16), teacher, ensemble, loss="mse")
    train = Loader(data, spec, 32, train=True)
    fit(distiller, train, TrainConfig(epochs=15, batch_size=32, lr=0.05, weight_decay=0.0), device="cpu",
        progress=False)
    grown = ResKDEnsemble(student, [distiller.student]).eval()
    after = residual_energy(t_logits, predict(grown, eval_loader, device="cpu")[0])
    assert after < 0.7 * before
    assert all(not p.requires_grad for p in teacher.parameters())


def test_residual_distiller_trains_only_the_res_student_and_reports_combined_logits():
    torch.manual_seed(0)
    teacher, student = TinyNet(width=8), TinyNet(width=4)
    ensemble = ResKDEnsemble(student)
    d = ResidualDistiller(TinyNet(width=2), teacher, ensemble, loss="kd")
    d.train()
    assert not student.training and not teacher.training
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, NUM_CLASSES, (4,))
    logits, losses = d.loss(x, y, torch.arange(4), View("v", 4))
    sum(losses.values()).backward()
    assert all(p.grad is None for p in student.parameters())
    assert d.student.fc.weight.grad is not None
    with torch.no_grad():
        torch.testing.assert_close(d.eval_model()(x), student(x), atol=0, rtol=0)  # zero-initialised last layer
    assert not student.training


@pytest.mark.parametrize("feature_index", [-1, -2])
def test_a_feature_distiller_trains_and_evaluates_on_the_chosen_map(feature_index):
    """The distiller of a feature-input res-student feeds it S0's map ``feature_index`` in training (its loss) and in
    evaluation (the combined model)."""
    torch.manual_seed(0)
    s0, teacher = create_model("resnet8", 10, width=0.5).eval(), create_model("resnet8", 10, width=0.5)
    previous = ResKDEnsemble(s0, feature_index=feature_index)
    head = FeatureHead(s0.feature_channels[feature_index], 10, channels=8)
    d = ResidualDistiller(head, teacher, previous, loss="mse", input="features", zero_init=False)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    d.eval()  # the head's BatchNorm on its running statistics, so that its output is the same in both places
    with torch.no_grad():
        logits, losses = d.loss(x, y, torch.arange(4), View("v", 4))
        own = head(s0.forward_features(x)[feature_index])
        t = teacher.eval()(x)
        torch.testing.assert_close(d.eval_model()(x), s0(x) + own)
        # the teacher's and S0's logits come through the output caches (float rounding of about 1e-4)
        torch.testing.assert_close(losses["mse"], torch.nn.functional.mse_loss(own, t - s0(x)), rtol=1e-3, atol=1e-3)
        torch.testing.assert_close(logits, s0(x) + own, rtol=1e-3, atol=1e-3)


def test_mismatched_classes_are_rejected():
    teacher = TinyNet(num_classes=7)
    student = TinyNet()
    ensemble = ResKDEnsemble(student)
    with pytest.raises(ValueError, match="share the label space"):
        ResidualDistiller(TinyNet(), teacher, ensemble)
    wrong = TinyNet(num_classes=3)
    with pytest.raises(ValueError, match="num_classes=4"):
        ensemble.add_stage(wrong)
    with pytest.raises(ValueError, match="unknown res-student input"):
        ensemble.add_stage(TinyNet(), "logits")


def test_training_loop_evaluates_earlier_stages_once_with_the_same_numbers():
    """fit's evaluation predicts a res-student's frozen earlier stages once per split, then only the res-student;
    the metrics equal those of evaluating the whole combined model."""
    torch.manual_seed(0)
    spec, data = tiny_spec(), tiny_images(96)
    teacher, student = TinyNet(width=8), TinyNet(width=4)
    ensemble = ResKDEnsemble(student, [TinyNet(width=2)])
    d = ResidualDistiller(TinyNet(width=2), teacher, ensemble, loss="mse", zero_init=False)
    loader = Loader(data, spec, 40, train=False)
    calls = []
    handle = ensemble.register_forward_hook(lambda *_: calls.append(1))
    memo = {}
    for _ in range(2):
        fast = evaluate_distiller(d, loader, device="cpu", frozen_logits=memo)
    assert len(calls) == 3  # the 3 batches of the split, on the first evaluation only
    handle.remove()
    assert fast == evaluate(d.eval_model(), loader, device="cpu")
    with torch.no_grad():
        d.student.fc.weight.add_(1.0)  # the res-student changes between epochs: the memo must not hide that
    assert evaluate_distiller(d, loader, device="cpu", frozen_logits=memo) == evaluate(d.eval_model(), loader,
                                                                                        device="cpu")
    features = ResidualDistiller(FeatureHead(4, NUM_CLASSES), teacher, ensemble, input="features")
    assert d.frozen_addend() is ensemble and features.frozen_addend() is None


def test_each_stage_reads_its_input_in_its_own_memory_format():
    """S0 laid out channels_last must not hand channels_last images to a stage too narrow for it (a crash in oneDNN)."""
    torch.manual_seed(0)
    s0 = create_model("resnet8", NUM_CLASSES).to(memory_format=torch.channels_last)
    narrow = create_model("resnet8", NUM_CLASSES, width=0.25)  # 4 channels: stays contiguous
    seen = []
    narrow.register_forward_pre_hook(lambda module, args: seen.append(args[0].is_contiguous()))
    ens = ResKDEnsemble(s0, [narrow], ["image"]).eval()
    x = torch.randn(2, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        together = ens.cumulative_logits(x)[-1]
        apart = s0(x) + narrow(x.contiguous())
    assert seen == [True, True]
    torch.testing.assert_close(together, apart)
