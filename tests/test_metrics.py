"""The measures every module and chapter reports, each with one definition."""
import pytest
import torch

from reskd import adaptive, metrics, results, theory, train
from reskd.metrics import accuracy, agreement, centered, correct, residual_energy, top1


def test_top1_and_agreement_on_a_small_case():
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1, 1, 1])
    teacher = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert correct(logits, labels).tolist() == [True, True, False, True]
    assert top1(logits, labels) == 75.0 == accuracy(logits.argmax(1), labels)
    assert agreement(logits, teacher) == 75.0 and agreement(teacher, teacher) == 100.0


def test_residual_energy_and_its_centered_part():
    teacher, ensemble = torch.tensor([[3.0, 1.0]]), torch.tensor([[1.0, 1.0]])
    assert residual_energy(teacher, ensemble).item() == pytest.approx(4.0)
    assert residual_energy(teacher, ensemble, center=True).item() == pytest.approx(2.0)
    assert torch.allclose(centered(teacher), torch.tensor([[1.0, -1.0]]))
    assert residual_energy(teacher, teacher + 5.0, center=True).item() == 0.0  # a shift is no residual


def test_one_home():
    assert train.top1 is metrics.top1
    assert not hasattr(results, "agreement")
    staged = adaptive.StagedOutputs(torch.randn(2, 50, 3), torch.randint(0, 3, (50,)), [1, 2], torch.randn(50, 3))
    out = adaptive.evaluate_policy(staged, adaptive.Policy("max_prob", [float("inf")]))
    assert out["top1"] == top1(staged.logits[-1], staged.labels)
    assert out["agreement_teacher"] == agreement(staged.logits[-1], staged.teacher_logits)
    teacher = torch.randn(50, 3)
    assert theory.disagreement_rate(teacher, staged.logits[-1]) == pytest.approx(
        1 - agreement(staged.logits[-1], teacher) / 100, abs=1e-6)
