import math

import pytest
import torch
import torch.nn.functional as F

from reskd.distill import CE, KD, Regress, View, kd_loss

from helpers import TinyNet


def test_kd_loss_matches_definition():
    torch.manual_seed(0)
    s, t = torch.randn(5, 7), torch.randn(5, 7)
    T = 3.0
    p_t = F.softmax(t / T, 1)
    expected = (p_t * (p_t.log() - F.log_softmax(s / T, 1))).sum(1).mean() * T * T
    torch.testing.assert_close(kd_loss(s, t, T), expected)


def test_kd_loss_zero_iff_same_distribution():
    z = torch.randn(4, 10)
    assert kd_loss(z, z).item() == pytest.approx(0.0, abs=1e-6)
    assert kd_loss(z, z + 3.0).item() == pytest.approx(0.0, abs=1e-5)  # softmax ignores a per-sample shift
    assert kd_loss(z, 2 * z).item() > 0


def test_kd_loss_gradient_scale_is_temperature_free():
    """With the T^2 factor, the gradient magnitude stays of the same order as T grows (Hinton et al.)."""
    torch.manual_seed(0)
    t = torch.randn(64, 10)
    norms = []
    for T in (8.0, 16.0, 32.0):
        s = torch.randn(64, 10, generator=torch.Generator().manual_seed(1)).requires_grad_()
        kd_loss(s, t, T).backward()
        norms.append(s.grad.norm().item())  # high-T limit: grad ~ (s - t) / (N C), free of T
    assert max(norms) / min(norms) < 1.2


def test_kd_loss_rejects_mismatched_classes_and_bad_temperature():
    with pytest.raises(ValueError, match="same number of classes"):
        kd_loss(torch.randn(2, 10), torch.randn(2, 100))
    with pytest.raises(ValueError, match="temperature"):
        kd_loss(torch.randn(2, 10), torch.randn(2, 10), temperature=0)


def test_kd_weights_and_teacher_frozen():
    torch.manual_seed(0)
    student, teacher = TinyNet(), TinyNet(width=4)
    x, y = torch.randn(6, 3, 8, 8), torch.randint(0, 4, (6,))
    d = KD(student, teacher, temperature=2.0, ce_weight=0.25, kd_weight=0.75)
    d.train()
    assert student.training and not teacher.training
    logits, losses = d.loss(x, y, torch.arange(6), View("v", 6))
    with torch.no_grad():
        t_logits = teacher(x).half().float()  # teacher outputs go through float16, always
    torch.testing.assert_close(losses["ce"], 0.25 * F.cross_entropy(logits, y))
    torch.testing.assert_close(losses["kd"], 0.75 * kd_loss(logits, t_logits, 2.0))
    sum(losses.values()).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in student.parameters())
    assert list(d.trainable_parameters()) == list(student.parameters())


def test_ce_distiller_is_the_student_at_inference():
    student = TinyNet().eval()
    x = torch.randn(3, 3, 8, 8)
    torch.testing.assert_close(CE(student)(x), student(x))
    logits, losses = CE(student).loss(x, torch.zeros(3, dtype=torch.long), torch.arange(3), View("v", 3))
    assert set(losses) == {"ce"} and math.isfinite(losses["ce"].item())


def test_regress_fits_the_frozen_target_logits_and_can_ignore_their_shift():
    torch.manual_seed(0)
    student, target = TinyNet(), TinyNet(width=4)
    x = torch.randn(6, 3, 8, 8)
    d = Regress(student, target)
    d.train()
    assert student.training and not target.training
    logits, losses = d.loss(x, torch.zeros(6, dtype=torch.long), torch.arange(6), View("v", 6))
    with torch.no_grad():
        t_logits = target(x).half().float()  # frozen outputs go through float16, as the teacher's do
    torch.testing.assert_close(losses["mse"], F.mse_loss(logits, t_logits))
    losses["mse"].backward()
    assert all(p.grad is None for p in target.parameters())
    # centered: a per-sample shift of the student's logits costs nothing
    centered = Regress(student, target, center=True)
    shifted = centered.loss(x, None, torch.arange(6), View("v", 6))[1]["mse"]
    student.fc.bias.data += 5.0
    assert torch.isclose(centered.loss(x, None, torch.arange(6), View("v", 6))[1]["mse"], shifted, rtol=1e-4)
    assert not torch.isclose(d.loss(x, None, torch.arange(6), View("v", 6))[1]["mse"], losses["mse"], rtol=1e-2)
