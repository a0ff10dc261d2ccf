"""Would float16 weights change a reported number? Predictions of stored runs in float32 against float16 weights.

Each model is loaded from ``artifacts/`` (``train_missing=False``: a missing run is an error, not hours of training)
and predicts the validation and test splits twice, in float32: with its stored weights, and with every floating
tensor of its state rounded to float16 and back (what storing the weights in float16 would do; integer buffers stay).
It counts the images whose predicted class changes and the top-1 before and after. Any flip means float16 storage
would move a reported number, which is why runs are stored packed, losslessly (``reskd.runstore.pack_weights``).
Run from the repository root, with the data root set, alone on the machine:

    python benchmarks/bench_half.py [--dataset cifar10] [--profile cpu] [--models teacher kd equal-cost]
                                    [--seed 0] [--out benchmarks/out/half-cifar10-cpu.json]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn

from reskd.experiment import Experiment
from reskd.metrics import top1
from reskd.profiles import get_profile
from reskd.train import predict
from reskd.utils import machine_info

MODELS = ("teacher", "kd", "equal-cost")
SPLITS = ("val", "test")


def load(exp: Experiment, which: str, seed: int) -> nn.Module:
    """The stored model ``which`` (one of :data:`MODELS`) of ``exp``'s profile."""
    if which == "teacher":
        return exp.teacher(seed)
    if which == "kd":
        return exp.student("kd", seed=seed)
    if which == "equal-cost":
        if exp.profile.equal_cost is None:
            raise ValueError(f"profile {exp.profile.name!r} has no equal-cost student; leave out 'equal-cost'.")
        return exp.student("kd", arch=exp.profile.equal_cost, seed=seed)
    raise ValueError(f"unknown model {which!r}; choose from {', '.join(MODELS)}.")


def rounded_to_half(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s state with every floating tensor rounded to float16 and back to its own dtype."""
    return {k: v.half().to(v.dtype) if v.is_floating_point() else v.clone() for k, v in model.state_dict().items()}


def compare(exp: Experiment, model: nn.Module) -> list[dict]:
    """Per split: images, predictions that change with float16 weights, and top-1 (%) before and after."""
    stored = {k: v.clone() for k, v in model.state_dict().items()}
    predicted = {}
    for weights, state in (("fp32", stored), ("fp16", rounded_to_half(model))):
        model.load_state_dict(state)  # each state loaded once, for every split
        predicted[weights] = {split: predict(model, exp.eval_loader(split), device=exp.device) for split in SPLITS}
    model.load_state_dict(stored)
    rows = []
    for split in SPLITS:
        (full, labels), (half, _) = predicted["fp32"][split], predicted["fp16"][split]
        rows.append({"split": split, "images": len(labels),
                     "flipped": int((full.argmax(1) != half.argmax(1)).sum()),
                     "top1_fp32_weights": top1(full, labels), "top1_fp16_weights": top1(half, labels),
                     "max_abs_logit_change": float((full - half).abs().max())})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="default: benchmarks/out/half-<dataset>-<profile>.json")
    args = parser.parse_args()
    exp = Experiment(get_profile(args.dataset, args.profile), train_missing=False, progress=False)
    start, results = time.perf_counter(), []
    for which in args.models:
        model = load(exp, which, args.seed)
        for row in compare(exp, model):
            results.append({"model": which, "seed": args.seed, **row})
            print(f"{which:>10} {row['split']:>4}: {row['flipped']:3d} of {row['images']} predictions flip; top-1 "
                  f"{row['top1_fp32_weights']:.2f} -> {row['top1_fp16_weights']:.2f}")
    out = Path(args.out or f"benchmarks/out/half-{args.dataset}-{args.profile}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine_info(exp.device), "dataset": args.dataset, "profile": args.profile,
                               "seconds": time.perf_counter() - start, "results": results}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
