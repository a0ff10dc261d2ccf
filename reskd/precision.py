"""Numerical precision of training and of frozen-model inference: fp32, or bf16 autocast.

``"auto"`` picks bf16 where the device runs it fast (a CUDA GPU with bf16 support; a CPU with AVX512-BF16 or AMX
units), else fp32: on a CPU without bf16 units PyTorch emulates bf16 and it is slower than fp32
(``benchmarks/bench_precision.py`` measures both on the machine at hand). Weights, optimizer state and the loss stay
fp32 under autocast; only the matrix products and convolutions run in bf16. The precision a run was trained in is
part of its identity (:mod:`reskd.experiment`), so fp32 and bf16 runs never stand in for each other.
"""
from __future__ import annotations

import contextlib
import torch

from .utils import cpuinfo_field

PRECISIONS = ("fp32", "bf16")
AUTO = "auto"
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of CPUs with native bf16 arithmetic


def cpu_flags() -> set[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty where it cannot be read, e.g. not on Linux)."""
    return set((cpuinfo_field("flags") or "").split())


def fast_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` has bf16 arithmetic units (not an emulation slower than fp32)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(cpu_flags() & set(CPU_BF16_FLAGS))
    return False


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``precision`` with ``"auto"`` resolved for ``device``: ``"bf16"`` where :func:`fast_bf16`, else ``"fp32"``."""
    if precision == AUTO:
        return "bf16" if fast_bf16(device) else "fp32"
    return check_precision(precision)


def autocast(precision: str, device: torch.device | str, *, force: bool = False):
    """A context that runs forward passes in ``precision`` (resolved already): bf16 autocast, or nothing. With
    ``force``, fp32 also switches off an enclosing autocast (a frozen model's cached outputs must be computed in the
    precision they are stored under, whatever the training around them runs in)."""
    device_type = torch.device(device).type
    if precision == "fp32":
        return torch.autocast(device_type=device_type, enabled=False) if force else contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(device_type=device_type, dtype=torch.bfloat16)
    raise ValueError(f"unknown precision {precision!r}; resolve it first with resolve_precision().")


def check_precision(precision: str) -> str:
    """``precision`` if it is a resolved one (fp32, bf16), else a clear error."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)} (or {AUTO!r} where "
                         f"a configuration is made).")
    return precision
