"""Distillers: one class per training objective, in the spirit of mdistiller.

A distiller wraps the trainable ``student`` (and any frozen models it learns from) and defines the training loss;
``reskd.train.fit`` only calls :meth:`Distiller.loss`, :meth:`Distiller.claim_view` and :meth:`Distiller.end_epoch`.
At inference a distiller is the student: ``distiller(x) == distiller.student(x)``.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from .cache import TEACHER_CACHE_NAME, OutputCache
from .metrics import centered

#: Hinton et al.'s temperature commonly used on CIFAR (CRD, mdistiller).
DEFAULT_TEMPERATURE = 4.0
#: Loss weights of the CIFAR KD benchmarks (CRD ``-r 0.1 -a 0.9``, mdistiller ``CE_WEIGHT 0.1, KD_WEIGHT 0.9``).
DEFAULT_CE_WEIGHT = 0.1
DEFAULT_KD_WEIGHT = 0.9


@dataclass(frozen=True)
class View:
    """What a batch belongs to: the key of its input stream and the number of samples in it (for output caches)."""

    key: str
    num_samples: int


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = DEFAULT_TEMPERATURE) -> Tensor:
    """Hinton et al.'s soft-target loss: ``T^2 * KL(softmax(t/T) || softmax(s/T))``, averaged over the batch.

    The ``T^2`` factor keeps the gradient scale independent of the temperature (Hinton et al., 2015, section 2).
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} differ: both models need the same number of classes.")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}.")
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * temperature**2


def frozen(model: nn.Module) -> nn.Module:
    """Put ``model`` in eval mode without gradients (a teacher, or an earlier ResKD stage)."""
    return model.eval().requires_grad_(False)


class Distiller(nn.Module):
    """Base class: the trainable ``student`` plus the loss that trains it."""

    def __init__(self, student: nn.Module):
        super().__init__()
        self.student = student

    def forward(self, x: Tensor) -> Tensor:
        return self.student(x)

    def loss(self, x: Tensor, y: Tensor, index: Tensor, view: View) -> tuple[Tensor, dict[str, Tensor]]:
        """Return the student's logits on ``x`` and the named loss terms (their sum is minimised)."""
        raise NotImplementedError

    def trainable_parameters(self):
        """The parameters the optimiser updates: the student's."""
        return self.student.parameters()

    def eval_model(self) -> nn.Module:
        """The model whose accuracy the training loop reports on evaluation splits: the student."""
        return self.student

    def frozen_addend(self) -> nn.Module | None:
        """The frozen part of :meth:`eval_model` whose logits are added to the student's, or ``None``.

        When there is one, the training loop predicts it once per evaluation split and then only the student each
        epoch (the sum is the same numbers as evaluating :meth:`eval_model`)."""
        return None

    def output_caches(self) -> list[OutputCache]:
        """The caches of frozen models' outputs that the loss reads (the teacher's, earlier stages'), in the order
        their views are claimed (:meth:`claim_view`); none by default."""
        return []

    @contextlib.contextmanager
    def claim_view(self, view: View) -> Iterator[None]:
        """Held by the training loop around an epoch on ``view``: each output cache's claim on the view
        (:meth:`reskd.cache.OutputCache.claim`), so that processes training on the same views at once compute each
        frozen model's outputs on a view once, and the others wait for them."""
        with contextlib.ExitStack() as claims:
            for cache in self.output_caches():
                claims.enter_context(cache.claim(view.key, view.num_samples))
            yield

    def end_epoch(self) -> None:
        """Called after every training epoch: the output caches write the outputs they computed to disk."""
        for cache in self.output_caches():
            cache.flush()


class CE(Distiller):
    """Plain supervised training with cross-entropy: the "student from scratch" baseline."""

    def loss(self, x, y, index, view):
        logits = self.student(x)
        return logits, {"ce": F.cross_entropy(logits, y)}


class KD(Distiller):
    """Hinton knowledge distillation: ``ce_weight * CE(s, y) + kd_weight * T^2 KL(p_t^T || p_s^T)``.

    Frameworks differ in which weight ``alpha`` multiplies: Hinton et al. weight the soft term, mdistiller/CRD use two
    independent weights (0.1 CE, 0.9 KD on CIFAR), some codes use ``(1 - alpha) CE + alpha KD``. Here both weights are
    explicit. The teacher is frozen (eval mode, no gradients) and its logits come through an :class:`OutputCache`
    (``cache_root=None``: recomputed every time, still rounded through float16 so runs are comparable).
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, *, temperature: float = DEFAULT_TEMPERATURE,
                 ce_weight: float = DEFAULT_CE_WEIGHT, kd_weight: float = DEFAULT_KD_WEIGHT,
                 cache_root: str | os.PathLike | None = None, teacher_name: str = TEACHER_CACHE_NAME,
                 precision: str = "fp32"):
        super().__init__(student)
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}.")
        self.teacher = frozen(teacher)
        self.temperature, self.ce_weight, self.kd_weight = temperature, ce_weight, kd_weight
        self.teacher_outputs = OutputCache(self.teacher, cache_root, name=teacher_name, precision=precision)

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # the teacher never leaves eval mode
        return self

    def loss(self, x, y, index, view):
        logits = self.student(x)
        teacher_logits = self.teacher_outputs(x, index, view.key, view.num_samples)
        return logits, {"ce": self.ce_weight * F.cross_entropy(logits, y),
                        "kd": self.kd_weight * kd_loss(logits, teacher_logits, self.temperature)}

    def output_caches(self) -> list[OutputCache]:
        return [self.teacher_outputs]


class Regress(Distiller):
    """Logit regression: MSE between the student's logits and a frozen ``target`` model's (the teacher, or S0), both
    centered over classes when ``center`` (softmax ignores a per-sample shift). The theory chapter's learnability
    study trains it with a res-student's recipe (zeroed last layer, :func:`reskd.reskd.zero_last_layer`) to compare
    how much of each target's variance one network can fit: the teacher's logits, S0's, or their difference."""

    def __init__(self, student: nn.Module, target: nn.Module, *, target_name: str = TEACHER_CACHE_NAME,
                 center: bool = False, cache_root: str | os.PathLike | None = None, precision: str = "fp32"):
        super().__init__(student)
        self.target, self.center = frozen(target), center
        self.target_outputs = OutputCache(self.target, cache_root, name=target_name, precision=precision)

    def train(self, mode: bool = True):
        super().train(mode)
        self.target.eval()
        return self

    def loss(self, x, y, index, view):
        logits = self.student(x)
        target = self.target_outputs(x, index, view.key, view.num_samples)
        if self.center:
            return logits, {"mse": F.mse_loss(centered(logits), centered(target))}
        return logits, {"mse": F.mse_loss(logits, target)}

    def output_caches(self) -> list[OutputCache]:
        return [self.target_outputs]
