"""Evaluating trained models in the contiguous memory format (how a run used to load) against ``channels_last`` (how
a run is laid out now when it is trained or loaded: ``reskd.train``), on the CPU.

For each model the CIFAR chapter evaluates most (the teacher, the KD student, the equal-cost student, a
plain-ensemble member) both layouts predict the test split, interleaved after a warm-up pass each, from the
committed cpu-profile artifacts (nothing is trained). Run from the repository root, with the data root set:

    python benchmarks/bench_layout.py [--repeats 1] [--out benchmarks/out/layout.json]
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from reskd.experiment import Experiment
from reskd.profiles import get_profile
from reskd.studies import PLAIN_SEED_OFFSET
from reskd.train import predict

LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/out/layout.json")
    args = parser.parse_args()
    exp = Experiment(get_profile("cifar10", "cpu"), train_missing=False, progress=False)
    p, loader = exp.profile, exp.eval_loader("test")
    models = {"teacher " + p.teacher.label: exp.teacher(), "KD student " + p.student.label: exp.student("kd"),
              "equal-cost " + p.equal_cost.label: exp.student("kd", arch=p.equal_cost),
              "plain member " + p.res_students[0].label: exp.student("kd", arch=p.res_students[0],
                                                                     seed=PLAIN_SEED_OFFSET)}
    rows = {}
    for name, model in models.items():
        seconds: dict[str, list[float]] = {layout: [] for layout in LAYOUTS}
        outputs = {}
        for _ in range(args.repeats + 1):  # the first round warms each layout up and is not counted
            for layout, fmt in LAYOUTS.items():
                model.to(memory_format=fmt)
                t0 = time.perf_counter()
                outputs[layout] = predict(model, loader, device="cpu")[0]
                seconds[layout].append(time.perf_counter() - t0)
        best = {layout: min(s[1:]) for layout, s in seconds.items()}
        rows[name] = {**{f"{k}_s": round(v, 2) for k, v in best.items()},
                      "speedup": round(best["contiguous"] / best["channels_last"], 2),
                      "max_abs_logit_diff": float((outputs["contiguous"] - outputs["channels_last"]).abs().max())}
        print(name, rows[name], flush=True)
    report = {"what": f"predict {len(loader.data):,} test images ({exp.data.source}), best of {args.repeats}",
              "device": f"cpu ({platform.processor() or platform.machine()}), {torch.get_num_threads()} threads",
              "models": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
