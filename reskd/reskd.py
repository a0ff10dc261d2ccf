"""The residual-guided ensemble of ResKD (Li et al., IEEE TIP 2021) and the losses that train its res-students.

Notation (used throughout the book): ``z_T(x)`` the teacher's logits, ``z_k(x)`` the logits of stage ``k`` (stage 0
is the KD student S0, stages 1, 2, ... the res-students), ``Z_k = z_0 + ... + z_k`` the ensemble after stage ``k``.
The residual that stage ``k`` learns is

    r_k(x) = z_T(x) - Z_{k-1}(x),

computed with the teacher and the earlier stages frozen. From the paper: the residual in logit space as the target of
a lighter res-student, the sum of the stages as the new student, and the repetition until the user's balance of
accuracy and cost. Our choices, exposed as parameters and ablated in the book (the paper's text with the exact losses
and architectures was not available to us): the loss (:data:`RESIDUAL_LOSSES`), the res-student's input (the image,
or the frozen student's feature maps), the zero-initialised last layer, so that a new stage starts from the
previous ensemble's predictions, and the optional *focus* (:func:`focus_index`): a stage trained only on the samples
of each batch the previous ensemble is least sure of, the ones an exit rule would send on to it.
"""
from __future__ import annotations

import math
import os
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .cache import TEACHER_CACHE_NAME, OutputCache
from .distill import DEFAULT_CE_WEIGHT, DEFAULT_KD_WEIGHT, DEFAULT_TEMPERATURE, Distiller, View, frozen, kd_loss
from .flops import count_macs
from .metrics import centered, residual_energy  # noqa: F401 (residual_energy re-exported)
from .registry import Registry
from .utils import model_memory_format

ResidualLoss = Callable[..., "dict[str, Tensor]"]
#: The res-student losses, each ``loss(s, previous, teacher, y, *, temperature, ce_weight, kd_weight)`` returning its
#: named terms. ``s`` is the new stage's output, ``r = z_T - Z_{k-1}`` the residual, ``Z = Z_{k-1} + s``.
RESIDUAL_LOSSES: Registry[ResidualLoss] = Registry("residual loss")
INPUTS = ("image", "features")


@RESIDUAL_LOSSES.register("mse", "mean squared error between s and r (regression of the raw logit residual)")
def _mse(s: Tensor, previous: Tensor, teacher: Tensor, y: Tensor, **_: float) -> dict[str, Tensor]:
    return {"mse": F.mse_loss(s, teacher - previous)}


@RESIDUAL_LOSSES.register("mse_centered", "MSE between s and r after removing each sample's mean over classes "
                                          "(softmax ignores a shift)")
def _mse_centered(s: Tensor, previous: Tensor, teacher: Tensor, y: Tensor, **_: float) -> dict[str, Tensor]:
    return {"mse": F.mse_loss(centered(s), centered(teacher - previous))}


@RESIDUAL_LOSSES.register("logprob", "T^2 * MSE between log-softmax(Z/T) and log-softmax(z_T/T): the residual of "
                                     "log-probabilities")
def _logprob(s: Tensor, previous: Tensor, teacher: Tensor, y: Tensor, *, temperature: float,
             **_: float) -> dict[str, Tensor]:
    T = temperature
    return {"logprob": T * T * F.mse_loss(F.log_softmax((previous + s) / T, 1), F.log_softmax(teacher / T, 1))}


@RESIDUAL_LOSSES.register("kd", "Hinton KD between the teacher and the combined logits Z (plus weighted CE on Z)")
def _kd(s: Tensor, previous: Tensor, teacher: Tensor, y: Tensor, *, temperature: float, ce_weight: float,
        kd_weight: float) -> dict[str, Tensor]:
    combined = previous + s
    return {"kd": kd_weight * kd_loss(combined, teacher, temperature), "ce": ce_weight * F.cross_entropy(combined, y)}


@RESIDUAL_LOSSES.register("mse+ce", "MSE between s and r plus weighted cross-entropy on the combined logits Z")
def _mse_ce(s: Tensor, previous: Tensor, teacher: Tensor, y: Tensor, *, ce_weight: float,
            **_: float) -> dict[str, Tensor]:
    return {"mse": F.mse_loss(s, teacher - previous), "ce": ce_weight * F.cross_entropy(previous + s, y)}


def focus_index(previous: Tensor, fraction: float) -> Tensor:
    """The rows of a batch a focused stage trains on: the ``ceil(fraction * n)`` samples whose previous-ensemble
    logits ``previous`` have the lowest largest softmax probability (the ``max_prob`` exit criterion; ranked within the batch, so the fraction holds
    on training images, on which S0 is more confident than on held-out ones)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"focus must be a fraction in (0, 1] of each batch, got {fraction!r}.")
    k = max(1, math.ceil(fraction * len(previous)))
    confidence = F.softmax(previous.float(), 1).max(1).values
    return confidence.topk(k, largest=False).indices


def residual_loss(kind: str, s: Tensor, previous: Tensor, teacher: Tensor, y: Tensor, *,
                  temperature: float = DEFAULT_TEMPERATURE, ce_weight: float = DEFAULT_CE_WEIGHT,
                  kd_weight: float = DEFAULT_KD_WEIGHT) -> dict[str, Tensor]:
    """The named loss terms that train a res-student's output ``s`` on top of the frozen ensemble's ``previous``
    (``kind`` is a name of :data:`RESIDUAL_LOSSES`)."""
    return RESIDUAL_LOSSES[kind](s, previous, teacher, y, temperature=temperature, ce_weight=ce_weight,
                                 kd_weight=kd_weight)


class FeatureHead(nn.Module):
    """A light res-student on the frozen student's feature map: ``blocks`` conv-BN-ReLU layers, pool, ``fc``."""

    def __init__(self, in_channels: int, num_classes: int, *, channels: int = 32, blocks: int = 1):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for _ in range(blocks):
            layers += [nn.Conv2d(c, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(True)]
            c = channels
        self.body = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)
        self.num_classes = num_classes

    def forward(self, feature_map: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.pool(self.body(feature_map)), 1))


def num_classes_of(model: nn.Module) -> int | None:
    """A model's number of classes: its ``num_classes`` attribute, else its ``fc`` layer's outputs, else None."""
    n = getattr(model, "num_classes", None)
    if n is None and isinstance(getattr(model, "fc", None), nn.Linear):
        n = model.fc.out_features
    return n


def zero_last_layer(model: nn.Module) -> nn.Module:
    """Zero the final linear layer (``model.fc``), so the stage outputs 0 and the ensemble starts where it was."""
    fc = getattr(model, "fc", None)
    if not isinstance(fc, nn.Linear):
        raise ValueError(f"{type(model).__name__} has no linear layer `fc` to zero; res-students need one.")
    nn.init.zeros_(fc.weight)
    nn.init.zeros_(fc.bias)
    return model


def cumulative_sums(stage_logits: Sequence[Tensor]) -> list[Tensor]:
    """``[z_0, z_0 + z_1, ...]``: the ensemble's logits after each stage, from each stage's own logits (summed in
    stage order, so every caller gets the same floats)."""
    out, total = [], None
    for z in stage_logits:
        total = z if total is None else total + z
        out.append(total)
    return out


class ResKDEnsemble(nn.Module):
    """The student S0 followed by res-students S1..Sk; the output is the sum of the stages' logits.

    ``inputs[k]`` says what stage ``k >= 1`` reads: ``"image"`` (an independent light network) or ``"features"``
    (a :class:`FeatureHead` on S0's feature map number ``feature_index``, so the res-student sees what S0 saw).
    """

    def __init__(self, student: nn.Module, res_students: Sequence[nn.Module] = (), inputs: Sequence[str] = (),
                 *, feature_index: int = -1):
        super().__init__()
        self.stages = nn.ModuleList([student])
        self.inputs: list[str] = ["image"]
        self.feature_index = feature_index
        inputs = list(inputs) or ["image"] * len(res_students)
        if len(inputs) != len(res_students):
            raise ValueError(f"{len(res_students)} res-students but {len(inputs)} inputs; give one input per stage.")
        for module, kind in zip(res_students, inputs):
            self.add_stage(module, kind)

    @property
    def num_classes(self) -> int:
        return num_classes_of(self.stages[0])

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    def add_stage(self, module: nn.Module, input: str = "image") -> "ResKDEnsemble":
        """Append a res-student (reading ``input``: ``"image"`` or ``"features"``)."""
        if input not in INPUTS:
            raise ValueError(f"unknown res-student input {input!r}; choose one of {INPUTS}.")
        n = num_classes_of(module)
        if n is not None and n != self.num_classes:
            raise ValueError(f"the res-student predicts {n} classes but the student {self.num_classes}; "
                             f"build it with num_classes={self.num_classes}.")
        if input == "features" and not hasattr(self.stages[0], "forward_features"):
            raise ValueError("feature-input res-students need a student with forward_features (see reskd.models).")
        self.stages.append(module)
        self.inputs.append(input)
        return self

    def _needs_features(self, upto: int) -> bool:
        return any(kind == "features" for kind in self.inputs[1:upto])

    def stage_logits(self, x: Tensor, upto: int | None = None) -> list[Tensor]:
        """The logits of stages ``0 .. upto-1`` (all by default) on ``x``."""
        upto = self.num_stages if upto is None else upto
        s0 = self.stages[0]
        features = None
        if self._needs_features(upto):
            features = s0.forward_features(x)
            outputs = [s0.head(features[-1])]
        else:
            outputs = [s0(x)]
        for stage, kind in zip(list(self.stages)[1:upto], self.inputs[1:upto]):
            stage_input = features[self.feature_index] if kind == "features" else x
            # each stage reads its input in its own memory format (a narrow one must not get channels_last)
            outputs.append(stage(stage_input.contiguous(memory_format=model_memory_format(stage))))
        return outputs

    def stage_model(self, k: int) -> nn.Module:
        """A module that computes stage ``k``'s own logits from the image, apart from the ensemble: the stage itself
        when it reads the image, else S0's feature map ``feature_index`` fed to its head (:class:`FeatureStage`)."""
        if not 0 <= k < self.num_stages:
            raise ValueError(f"stage {k} is not among the ensemble's stages 0..{self.num_stages - 1}.")
        if self.inputs[k] == "features":
            return FeatureStage(self.stages[0], self.stages[k], self.feature_index)
        return self.stages[k]

    def cumulative_logits(self, x: Tensor) -> list[Tensor]:
        """``[Z_0, Z_1, ...]``: the ensemble's logits after each stage."""
        return cumulative_sums(self.stage_logits(x))

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack(self.stage_logits(x)).sum(0)

    def feature_shape(self, input_size: tuple[int, int, int]) -> tuple[int, ...]:
        """The shape (C, H, W) of the feature map feature-input stages read."""
        s0 = self.stages[0]
        was = s0.training
        s0.eval()
        param = next(s0.parameters())
        with torch.no_grad():
            f = s0.forward_features(torch.zeros(1, *input_size, device=param.device))[self.feature_index]
        s0.train(was)
        return tuple(f.shape[1:])

    def stage_macs(self, input_size: tuple[int, int, int]) -> list[int]:
        """The MACs each stage adds (a feature-input stage costs only its head: S0's features are already paid)."""
        macs = []
        for stage, kind in zip(self.stages, self.inputs):
            size = self.feature_shape(input_size) if kind == "features" else input_size
            macs.append(count_macs(stage, size))
        return macs


class FeatureStage(nn.Module):
    """A feature-input res-student on its own: ``head(student.forward_features(x)[feature_index])``, its logits alone
    (not added to S0's)."""

    def __init__(self, student: nn.Module, head: nn.Module, feature_index: int = -1):
        super().__init__()
        self.student, self.head, self.feature_index = student, head, feature_index

    def forward(self, x: Tensor) -> Tensor:
        features = self.student.forward_features(x)[self.feature_index]
        return self.head(features.contiguous(memory_format=model_memory_format(self.head)))


class _Combined(nn.Module):
    """Frozen earlier stages plus the stage being trained: what a res-student's training is evaluated on."""

    def __init__(self, previous: ResKDEnsemble, res_student: nn.Module, input: str):
        super().__init__()
        self.previous, self.res_student, self.input = previous, res_student, input

    def train(self, mode: bool = True):
        super().train(mode)
        self.previous.eval()  # frozen stages never leave eval mode
        return self

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            prev = self.previous(x)
            feats = (self.previous.stages[0].forward_features(x)[self.previous.feature_index]
                     if self.input == "features" else None)
        return prev + self.res_student(feats if feats is not None else x)


class ResidualDistiller(Distiller):
    """Trains one res-student on the residual of the frozen ensemble ``previous`` w.r.t. the frozen ``teacher``.

    Teacher and previous-ensemble logits come through :class:`reskd.cache.OutputCache`, so every stage, seed and
    ablation that sees the same augmented view reuses them. ``loss`` is one of :data:`RESIDUAL_LOSSES`. With
    ``focus`` (a fraction), the loss of each batch is taken only over the samples :func:`focus_index` picks.
    """

    def __init__(self, res_student: nn.Module, teacher: nn.Module, previous: ResKDEnsemble, *, loss: str = "kd",
                 input: str = "image", temperature: float = DEFAULT_TEMPERATURE,
                 ce_weight: float = DEFAULT_CE_WEIGHT, kd_weight: float = DEFAULT_KD_WEIGHT,
                 cache_root: str | os.PathLike | None = None, zero_init: bool = True, focus: float | None = None,
                 precision: str = "fp32"):
        super().__init__(res_student)
        RESIDUAL_LOSSES.check(loss)
        if focus is not None:
            focus_index(torch.zeros(1, 2), focus)  # the fraction is checked here, before any training
        if input not in INPUTS:
            raise ValueError(f"unknown res-student input {input!r}; choose one of {INPUTS}.")
        t_classes = num_classes_of(teacher)
        if t_classes is not None and t_classes != previous.num_classes:
            raise ValueError(f"the teacher predicts {t_classes} classes but the ensemble {previous.num_classes}; "
                             "teacher and stages must share the label space.")
        if zero_init:
            zero_last_layer(res_student)
        self.teacher, self.previous = frozen(teacher), frozen(previous)
        self.loss_kind, self.input, self.focus = loss, input, focus
        self.temperature, self.ce_weight, self.kd_weight = temperature, ce_weight, kd_weight
        self.teacher_outputs = OutputCache(self.teacher, cache_root, name=TEACHER_CACHE_NAME, precision=precision)
        self.previous_outputs = OutputCache(self.previous, cache_root, name="ensemble", precision=precision)

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()
        self.previous.eval()
        return self

    def loss(self, x, y, index, view: View):
        teacher = self.teacher_outputs(x, index, view.key, view.num_samples)
        previous = self.previous_outputs(x, index, view.key, view.num_samples)
        if self.input == "features":
            with torch.no_grad():
                inp = self.previous.stages[0].forward_features(x)[self.previous.feature_index]
        else:
            inp = x
        s = self.student(inp)
        rows = slice(None) if self.focus is None else focus_index(previous, self.focus)
        losses = residual_loss(self.loss_kind, s[rows], previous[rows], teacher[rows], y[rows],
                               temperature=self.temperature, ce_weight=self.ce_weight, kd_weight=self.kd_weight)
        return previous + s.detach(), losses

    def eval_model(self) -> nn.Module:
        return _Combined(self.previous, self.student, self.input)

    def frozen_addend(self) -> nn.Module | None:
        """The frozen earlier stages, when the res-student reads the image (a features-input res-student needs
        S0's feature maps on every evaluation, so then the whole combined model is evaluated)."""
        return self.previous if self.input == "image" else None

    def output_caches(self) -> list[OutputCache]:
        return [self.teacher_outputs, self.previous_outputs]  # always in this order, so two claims never deadlock
