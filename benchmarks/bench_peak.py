"""How close the CIFAR models train to this CPU's peak: images/s of a training step against the cores' FMA peak.

For each model, one SGD step (forward, cross-entropy, backward, update) on a synthetic batch in the trainer's
``channels_last`` layout gives training images/s; a step costs about 3x the forward MACs (forward, and a backward that
computes gradients of inputs and of weights), and a MAC is 2 FLOPs, so the achieved rate is
``images/s x MACs x 3 x 2`` FLOP/s. It is set against two peaks:

* the nominal peak, from ``/proc/cpuinfo``: threads x clock x FP32 lanes of the FMA datapath x 2 FMA units a core x
  2 FLOPs an FMA. The lanes are 8 with AVX2, and with AVX-512 16 on Intel but 8 on AMD (Zen 4 runs a 512-bit FMA
  over two cycles on its 256-bit units). The clock is the one the kernel reports (a virtual machine reports its base
  clock; turbo may run higher), and two FMA units a core is what current AMD EPYC and Intel Xeon Gold/Platinum cores
  have (an assumption the script cannot check);
* the attainable peak: the best FP32 matrix product (``torch.mm``, 2048 x 2048) the same threads reach, which is
  what a well-blocked kernel gets on this machine. Where it exceeds the nominal peak, the cores run above the clock
  the kernel reports (boost), and the attainable peak is the one to read.

A feature head (``feature_head``, ``feature_head3``: a res-student of the feature regimes) is timed on what it reads,
the last feature map of the KD student S0 (resnet8), and its MACs are its own: S0's forward pass, which the head's
training also runs, is the cost of S0, not of the head.

Nothing is trained for real and no data is read. Run from the repository root, alone on the machine:

    python benchmarks/bench_peak.py [--models resnet56 resnet8 resnet8x1.35 resnet8x0.5 feature_head3]
                                    [--out benchmarks/out/peak.json]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from reskd.experiment import FEATURE_HEADS, feature_head
from reskd.flops import count_macs
from reskd.models import create_model
from reskd.profiles import Arch
from reskd.reskd import ResKDEnsemble
from reskd.utils import cpuinfo_field, machine_info

INPUT_SIZE = (3, 32, 32)
FLOPS_PER_MAC = 2
TRAIN_STEP_MACS = 3  # forward + backward (input and weight gradients), in forward MACs
FMA_UNITS_PER_CORE = 2
MATMUL_SIZE = 2048


def nominal_peak(threads: int) -> dict[str, float | str]:
    """Threads x clock x lanes x FMA units x 2, from the CPU's flags and reported clock."""
    flags = set((cpuinfo_field("flags") or "").split())
    amd = cpuinfo_field("vendor_id") == "AuthenticAMD"
    isa = "avx512" if "avx512f" in flags else "avx2+fma" if {"avx2", "fma"} <= flags else "sse"
    lanes = {"avx512": 8 if amd else 16, "avx2+fma": 8, "sse": 4}[isa]
    ghz = float(cpuinfo_field("cpu MHz") or "nan") / 1000
    return {"isa": isa, "vendor": cpuinfo_field("vendor_id"), "fp32_lanes": lanes, "clock_ghz": ghz,
            "gflops": threads * ghz * lanes * FMA_UNITS_PER_CORE * 2}


def matmul_gflops(repeats: int = 10) -> float:
    """The best FP32 GFLOP/s of a 2048 x 2048 matrix product over ``repeats``."""
    a, b = torch.randn(MATMUL_SIZE, MATMUL_SIZE), torch.randn(MATMUL_SIZE, MATMUL_SIZE)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * MATMUL_SIZE**3 / best / 1e9


def sgd_step(model: torch.nn.Module, batch_size: int,
             input_size: tuple[int, ...] = INPUT_SIZE) -> Callable[[], None]:
    """One SGD step (forward, cross-entropy, backward, update) of ``model`` on a fixed synthetic batch, laid out
    ``channels_last`` as the trainer lays out its batches."""
    model = model.to(memory_format=torch.channels_last).train()
    images = torch.randn(batch_size, *input_size).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (batch_size,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()

    return step


def train_images_per_s(model: torch.nn.Module, batch_size: int, steps: int,
                       input_size: tuple[int, ...] = INPUT_SIZE) -> float:
    """Best-of-two mean images/s of ``steps`` SGD steps on a synthetic batch (channels_last), after a warm-up."""
    step = sgd_step(model, batch_size, input_size)
    step()
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        best = min(best, (time.perf_counter() - start) / steps)
    return batch_size / best


def parse_model(label: str) -> tuple[str, float]:
    name, _, width = label.partition("x")
    return name, float(width) if width else 1.0


S0 = "resnet8"  # the KD student whose last feature map a feature head reads


def build(label: str) -> tuple[torch.nn.Module, tuple[int, ...]]:
    """The model ``label`` names and the input it is timed on: the image, or S0's last feature map for a head."""
    name, width = parse_model(label)
    if name not in FEATURE_HEADS:
        return create_model(name, 10, width=width), INPUT_SIZE
    shape = ResKDEnsemble(create_model(S0, 10)).feature_shape(INPUT_SIZE)  # S0's last feature map, (C, H, W)
    return feature_head(Arch(name, width), shape[0], 10), shape


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+",
                        default=["resnet56", "resnet8", "resnet8x1.35", "resnet8x0.5", "feature_head3"])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--out", default="benchmarks/out/peak.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    nominal, attainable = nominal_peak(threads), matmul_gflops()
    rows = []
    for label in args.models:
        model, input_size = build(label)
        macs = count_macs(model, input_size)
        ips = train_images_per_s(model, args.batch_size, args.steps, input_size)
        gflops = ips * macs * TRAIN_STEP_MACS * FLOPS_PER_MAC / 1e9
        rows.append({"model": label, "input": list(input_size), "mmacs": macs / 1e6, "train_images_per_s": ips,
                     "achieved_gflops": gflops,
                     "pct_nominal_peak": 100 * gflops / nominal["gflops"],
                     "pct_attainable_peak": 100 * gflops / attainable})
        print(f"{label:>14}: {macs / 1e6:7.1f} MMACs, {ips:7.0f} images/s, {gflops:6.1f} GFLOP/s = "
              f"{rows[-1]['pct_nominal_peak']:.1f}% of nominal, {rows[-1]['pct_attainable_peak']:.1f}% of matmul")
    print(f"peak at {threads} threads: nominal {nominal['gflops']:.0f} GFLOP/s ({nominal['isa']}, "
          f"{nominal['clock_ghz']:.2f} GHz), matmul {attainable:.0f} GFLOP/s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine_info("cpu"), "batch_size": args.batch_size,
                               "nominal_peak": nominal, "matmul_gflops": attainable, "models": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
