"""Model cost: multiply-accumulates (MACs) and parameters, counted with fvcore.

Unit: the book reports **MACs**. One MAC is one fused multiply-add, i.e. **1 MAC = 2 FLOPs**. fvcore's
``FlopCountAnalysis`` counts one multiply-add as one "flop", so its numbers are MACs, whereas
``torch.utils.flop_counter.FlopCounterMode`` counts 2 FLOPs per MAC.

Convention: only the layers that multiply-accumulate are counted: convolutions and linear layers (also
``matmul``/``bmm``/``einsum``). BatchNorm, activations, pooling and residual additions are *not* counted:
BatchNorm folds into the preceding convolution at inference, and the element-wise ops are negligible. This
is the convention of the knowledge-distillation literature (CRD, mdistiller tables) and gives e.g. 40.81M MACs
for the CIFAR ResNet-20 on a 32x32 image, and exactly half of ``FlopCounterMode``'s total.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

with warnings.catch_warnings():  # fvcore.nn scripts a loss at import, which recent torch flags as deprecated
    warnings.simplefilter("ignore", FutureWarning)
    from fvcore.nn import FlopCountAnalysis
    from fvcore.nn.jit_handles import (
        addmm_flop_jit,
        bmm_flop_jit,
        conv_flop_jit,
        einsum_flop_jit,
        linear_flop_jit,
        matmul_flop_jit,
    )

__all__ = ["MAC_OP_HANDLES", "ModelCost", "count_macs", "count_params", "model_cost", "cost_table"]

CIFAR_INPUT_SIZE = (3, 32, 32)  # (channels, height, width)
MEGA = 1e6
GIGA = 1e9

# The TorchScript ops that do multiply-accumulates, with fvcore's handles (each returns MACs).
MAC_OP_HANDLES = {
    "aten::_convolution": conv_flop_jit,
    "aten::addmm": addmm_flop_jit,
    "aten::linear": linear_flop_jit,
    "aten::mm": matmul_flop_jit,
    "aten::matmul": matmul_flop_jit,
    "aten::bmm": bmm_flop_jit,
    "aten::einsum": einsum_flop_jit,
}


def _check_input_size(input_size: Sequence[int]) -> tuple[int, ...]:
    size = tuple(input_size)
    if len(size) != 3 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ValueError(
            f"input_size must be (channels, height, width) of positive ints, got {input_size!r}; "
            "e.g. (3, 32, 32) for CIFAR or (3, 64, 64) for Tiny-ImageNet (no batch dimension)"
        )
    return size


def _model_device(model: nn.Module) -> torch.device:
    tensor = next(model.parameters(), None)
    if tensor is None:
        tensor = next(model.buffers(), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def count_macs(
    model: nn.Module, input_size: Sequence[int] = CIFAR_INPUT_SIZE, *, device: torch.device | str | None = None
) -> int:
    """MACs of one forward pass on a single image of shape ``input_size`` (C, H, W).

    The model runs in eval mode on a zero batch of one, created on ``device`` (default: the model's device);
    its training mode is restored afterwards. See the module docstring for what is counted.
    """
    size = _check_input_size(input_size)
    device = _model_device(model) if device is None else torch.device(device)
    inputs = torch.zeros(1, *size, device=device)
    was_training = model.training
    model.eval()
    try:
        analysis = FlopCountAnalysis(model, inputs)
        analysis.clear_op_handles().set_op_handle(**MAC_OP_HANDLES)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        with torch.no_grad():
            return int(analysis.total())
    finally:
        model.train(was_training)


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not; each shared tensor counted once)."""
    return sum(p.numel() for p in model.parameters())


@dataclass(frozen=True)
class ModelCost:
    """MACs of one forward pass on one image, and parameter count."""

    macs: int
    params: int

    @property
    def mmacs(self) -> float:
        """MACs in millions."""
        return self.macs / MEGA

    @property
    def gmacs(self) -> float:
        """MACs in billions."""
        return self.macs / GIGA

    @property
    def mparams(self) -> float:
        """Parameters in millions."""
        return self.params / MEGA


def model_cost(model: nn.Module, input_size: Sequence[int] = CIFAR_INPUT_SIZE) -> ModelCost:
    """:class:`ModelCost` of ``model`` on one image of shape ``input_size`` (C, H, W)."""
    return ModelCost(macs=count_macs(model, input_size), params=count_params(model))


def cost_table(
    models: dict[str, nn.Module], input_size: Sequence[int] = CIFAR_INPUT_SIZE, reference: str | None = None
) -> pd.DataFrame:
    """One row per model: ``name``, ``params``, ``MACs`` and, given a ``reference`` name, ``% of reference MACs``.

    Example: ``cost_table({"teacher": t, "student": s}, (3, 32, 32), reference="teacher")``.
    """
    if reference is not None and reference not in models:
        raise ValueError(f"reference {reference!r} is not one of the models: {list(models)}; pass one of them or None")
    costs = {name: model_cost(model, input_size) for name, model in models.items()}
    table = pd.DataFrame(
        {"name": list(costs), "params": [c.params for c in costs.values()], "MACs": [c.macs for c in costs.values()]}
    )
    if reference is not None:
        table["% of reference MACs"] = 100.0 * table["MACs"] / costs[reference].macs
        table.attrs["reference"] = reference
    return table
