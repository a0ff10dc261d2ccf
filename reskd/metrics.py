"""The measures every chapter and module reports, each defined once: top-1, agreement with the teacher, residual
energy. Percentages are in 0-100; each is computed in float32 on the given tensors, so every caller gets the same
number for the same logits."""
from __future__ import annotations

from torch import Tensor


def correct(logits: Tensor, labels: Tensor) -> Tensor:
    """Per sample, whether the top-scoring class of ``logits`` (N x C) is ``labels`` (N) (a bool tensor)."""
    return logits.argmax(1) == labels


def accuracy(predictions: Tensor, targets: Tensor) -> float:
    """How often the predicted classes equal the targets (%), both given as class indices (N)."""
    return 100.0 * (predictions == targets).float().mean().item()


def top1(logits: Tensor, labels: Tensor) -> float:
    """Top-1 accuracy (%) of ``logits`` (N x C) against ``labels`` (N)."""
    return accuracy(logits.argmax(1), labels)


def agreement(logits: Tensor, teacher_logits: Tensor) -> float:
    """Top-1 agreement with the teacher (%): how often both models predict the same class."""
    return accuracy(logits.argmax(1), teacher_logits.argmax(1))


def centered(z: Tensor) -> Tensor:
    """Logits minus their per-sample mean over classes (softmax ignores that mean)."""
    return z - z.mean(dim=1, keepdim=True)


def residual_energy(teacher_logits: Tensor, ensemble_logits: Tensor, *, center: bool = False) -> Tensor:
    """``E = mean_x ||z_T(x) - Z(x)||^2`` (optionally of the centered residual)."""
    r = teacher_logits - ensemble_logits
    return (centered(r) if center else r).pow(2).sum(1).mean()
