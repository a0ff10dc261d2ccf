"""fp32 against bf16 autocast (and ``torch.compile`` on fp32), side by side in one run: a training step of SGD with
cross-entropy (batch 128, channels_last, the cpu profile's recipe) for resnet8, resnet8x0.5 and resnet56, and
inference at the evaluation batch size (what evaluation and the teacher-output cache do).

Each configuration is timed for ``--steps`` steps after a warm-up, in interleaved rounds (so a load that comes and
goes on the machine hits every configuration alike); images/s are the median over rounds, and ratios are against fp32
of the same model. The kernels that ran are the top operators of a profiled step. Synthetic CIFAR-sized batches
(speed does not depend on pixel values). Run from the repository root:

    python benchmarks/bench_precision.py [--steps 20] [--rounds 3] [--out benchmarks/results/precision.json]

``precision.json`` holds a run on a CPU with bf16 units, ``precision-no-bf16.json`` one on a CPU without (where
``"auto"`` falls back to fp32 and bf16 is an emulation).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from reskd.models import create_model
from reskd.precision import autocast, cpu_flags, fast_bf16
from reskd.utils import cpuinfo_field, memory_format_for

MODELS = (("resnet8", 1.0), ("resnet8", 0.5), ("resnet56", 1.0))
TRAIN_BATCH, EVAL_BATCH = 128, 500
LR, MOMENTUM, WEIGHT_DECAY = 0.1, 0.9, 5e-4
TOP_KERNELS = 6


def _model(name: str, width: float) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model(name, 10, width=width)
    return model.to(memory_format=memory_format_for(model, torch.device("cpu")))


def _train_step(model, optimizer, x, y, precision: str) -> None:
    with autocast(precision, "cpu"):
        loss = F.cross_entropy(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def _configs(name: str, width: float, compile_too: bool):
    """(label, precision, model, step-callable factory) for each configuration of one model."""
    configs = [("fp32", "fp32", _model(name, width)), ("bf16", "bf16", _model(name, width))]
    if compile_too:
        configs.append(("fp32+compile", "fp32", torch.compile(_model(name, width))))
    return configs


def _kernels(fn) -> list[str]:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    return [e.key for e in events[:TOP_KERNELS]]


def bench_model(name: str, width: float, *, steps: int, rounds: int, compile_too: bool) -> dict:
    fmt = torch.channels_last
    x = torch.randn(TRAIN_BATCH, 3, 32, 32).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (TRAIN_BATCH,))
    xe = torch.randn(EVAL_BATCH, 3, 32, 32).contiguous(memory_format=fmt)
    configs = _configs(name, width, compile_too)
    train_fns, eval_fns = {}, {}
    for label, precision, model in configs:
        optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
        train_fns[label] = (lambda m=model, o=optimizer, p=precision: _train_step(m.train(), o, x, y, p))

        def infer(m=model, p=precision):
            m.eval()
            with torch.inference_mode(), autocast(p, "cpu"):
                m(xe)
        eval_fns[label] = infer
    results: dict = {}
    for kind, fns, batch in (("train", train_fns, TRAIN_BATCH), ("eval", eval_fns, EVAL_BATCH)):
        for fn in fns.values():  # warm-up (and compilation)
            fn(), fn()
        times: dict[str, list[float]] = {label: [] for label in fns}
        for _ in range(rounds):
            for label, fn in fns.items():
                t0 = time.perf_counter()
                for _ in range(steps):
                    fn()
                times[label].append(time.perf_counter() - t0)
        base = statistics.median(times["fp32"])
        for label, fn in fns.items():
            med = statistics.median(times[label])
            results[f"{kind}/{label}"] = {"images_per_s": steps * batch / med, "speedup_vs_fp32": base / med,
                                          "kernels": _kernels(fn) if "compile" not in label else None}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (it takes a minute per model)")
    parser.add_argument("--out", default="benchmarks/results/precision.json")
    args = parser.parse_args()
    out = {"cpu": cpuinfo_field("model name") or platform.processor() or platform.machine(), "torch": torch.__version__,
           "threads": torch.get_num_threads(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
           "bf16_units": sorted(cpu_flags() & {"avx512_bf16", "amx_bf16"}), "fast_bf16": fast_bf16("cpu"),
           "steps": args.steps, "rounds": args.rounds, "models": {}}
    for name, width in MODELS:
        label = name if width == 1.0 else f"{name}x{width:g}"
        out["models"][label] = bench_model(name, width, steps=args.steps, rounds=args.rounds,
                                           compile_too=not args.no_compile)
        for key, row in out["models"][label].items():
            print(f"{label:12s} {key:20s} {row['images_per_s']:8.0f} images/s  x{row['speedup_vs_fp32']:.2f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
