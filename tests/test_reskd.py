"""The residual-guided ensemble on a synthetic problem: a fixed random teacher and Gaussian-noise images."""
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


def test_feature_stage_reads_student_features_and_costs_only_its_head():
    torch.manual_seed(0)
    s0 = create_model("resnet8", 10, width=0.5)
    head = FeatureHead(s0.feature_channels[-1], 10, channels=8)
    ens = ResKDEnsemble(s0, [head], ["features"]).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ens(x), s0(x) + head(s0.forward_features(x)[-1]))
    macs = ens.stage_macs((3, 32, 32))
    feature_map = s0.feature_channels[-1] * 8 * 8
    assert macs[1] == 8 * 8 * s0.feature_channels[-1] * 8 * 9 + 8 * 10  # one 3x3 conv on the 8x8 map + the fc
    assert macs[1] < macs[0] and feature_map > 0


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
