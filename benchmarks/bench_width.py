"""Training throughput of Tiny-ImageNet's ResNet-18s (64px stem) against their width, on the CPU.

Tiny-ImageNet's equal-cost KD student (x0.28) costs 26% more MACs than S0 (x0.25) but trained at about half its
images/s. This measures why: for each width, one SGD step (forward, cross-entropy, backward, update) on a synthetic
batch of 64x64 images, in the ``channels_last`` layout the trainer uses and in the contiguous one, interleaved after
a warm-up, in ``--rounds`` rounds over all widths (the best round counts: the first one also warms the process up); it
reports images/s, MACs per image (fvcore, ``reskd.flops``) and the MAC throughput. Nothing is
trained for real and no data is read. Run from the repository root:

    python benchmarks/bench_width.py [--widths 0.25 0.28 0.3125 0.375] [--steps 6] [--rounds 2] [--out benchmarks/out/width.json]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from reskd.flops import count_macs
from reskd.models import create_model
from reskd.utils import machine_info

NUM_CLASSES = 200
INPUT_SIZE = (3, 64, 64)
LAYOUTS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}
WARMUP_STEPS = 2


def step_seconds(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, steps: int) -> float:
    """Mean seconds of one SGD step over ``steps``, after ``WARMUP_STEPS`` uncounted ones."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()

    for _ in range(WARMUP_STEPS):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=float, nargs="+", default=[0.25, 0.28, 0.3125, 0.375])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/out/width.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    images = torch.randn(args.batch_size, *INPUT_SIZE)
    labels = torch.randint(0, NUM_CLASSES, (args.batch_size,))
    models = {f"resnet18x{w:g}-64pxstem": create_model("resnet18", NUM_CLASSES, width=w, stem="64px")
              for w in args.widths}
    best = {(name, layout): float("inf") for name in models for layout in LAYOUTS}
    for _ in range(args.rounds):
        for name, model in models.items():
            for layout, fmt in LAYOUTS.items():
                model.to(memory_format=fmt)
                seconds = step_seconds(model, images.contiguous(memory_format=fmt), labels, args.steps)
                best[name, layout] = min(best[name, layout], seconds)
    rows = {}
    for name, model in models.items():
        macs = count_macs(model, INPUT_SIZE)
        row: dict[str, object] = {
            "conv_channels": sorted({m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)}),
            "mmacs": round(macs / 1e6, 2)}
        for layout in LAYOUTS:
            row[f"{layout}_images_per_s"] = round(args.batch_size / best[name, layout])
            row[f"{layout}_gmacs_per_s"] = round(3 * macs * args.batch_size / best[name, layout] / 1e9, 1)
        rows[name] = row
        print(name, row, flush=True)
    report = {"what": f"one SGD step on a synthetic batch of {args.batch_size} images {INPUT_SIZE}, mean of "
                      f"{args.steps} after {WARMUP_STEPS} warm-up, best of {args.rounds} rounds; gmacs_per_s counts "
                      "the backward pass as twice the forward",
              "machine": machine_info("cpu"),
              "models": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
