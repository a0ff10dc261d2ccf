"""A res-student's per-epoch evaluation: the whole combined model against the frozen earlier stages predicted once.

During a res-student's training the loop reports validation and test top-1 after every epoch. Evaluating the
combined model runs every frozen earlier stage again each epoch; with ``Distiller.frozen_addend`` the loop predicts
them once per split and then runs only the res-student (the same numbers). This times both on the last stage of a
profile's committed ResKD chain (loaded from ``artifacts/``; nothing is trained), interleaved so that both see the
same machine load, and checks that they report the same metrics. Run from the repository root, with the data root set:

    python benchmarks/bench_eval.py [--dataset cifar10] [--profile cpu] [--seed 0] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from reskd.experiment import Experiment
from reskd.profiles import get_profile
from reskd.studies import reskd_runs
from reskd.reskd import ResidualDistiller, ResKDEnsemble
from reskd.train import evaluate, evaluate_distiller

SPLITS = ("val", "test")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs of evaluation per method")
    parser.add_argument("--out", default="benchmarks/out/eval.json")
    args = parser.parse_args()

    exp = Experiment(get_profile(args.dataset, args.profile), train_missing=False, progress=False)
    chain = reskd_runs(exp).ensemble(list(exp.profile.res_students), seed=args.seed)
    stages = list(chain.stages)
    previous = ResKDEnsemble(stages[0], stages[1:-1], chain.inputs[1:-1], feature_index=chain.feature_index)
    distiller = ResidualDistiller(stages[-1], exp.teacher(), previous, loss="mse", input=chain.inputs[-1],
                                  zero_init=False).to(exp.device)
    loaders = {split: exp.eval_loader(split) for split in SPLITS}

    def whole() -> dict:
        return {s: evaluate(distiller.eval_model(), loader, device=exp.device) for s, loader in loaders.items()}

    memo: dict = {}

    def addend_once() -> dict:
        return {s: evaluate_distiller(distiller, loader, device=exp.device, frozen_logits=memo)
                for s, loader in loaders.items()}

    t0 = time.perf_counter()
    first = addend_once()  # predicts the frozen stages once per split, plus the res-student
    first_s = time.perf_counter() - t0
    times: dict[str, list[float]] = {"whole model": [], "frozen stages cached": []}
    for _ in range(args.repeats):  # interleaved: both methods see the same load
        for name, fn in (("whole model", whole), ("frozen stages cached", addend_once)):
            t0 = time.perf_counter()
            metrics = fn()
            times[name].append(time.perf_counter() - t0)
            if metrics != first:
                raise AssertionError(f"{name} reports {metrics}, the cached path {first}: they must be equal")
    per_epoch = {name: statistics.median(t) for name, t in times.items()}
    epochs = exp.profile.student_train.epochs
    report = {
        "what": f"per-epoch evaluation on {' and '.join(SPLITS)} of stage {len(stages) - 1} of the {args.profile}-profile "
                f"ResKD chain, seed {args.seed} ({len(stages)} stages); data: {exp.data.source}",
        "device": f"{exp.device.type} ({platform.processor() or platform.machine()}), {torch.get_num_threads()} threads",
        "metrics_equal": True,
        "seconds_per_epoch": {k: round(v, 2) for k, v in per_epoch.items()},
        "first_epoch_cached_s": round(first_s, 2),
        "speedup": round(per_epoch["whole model"] / per_epoch["frozen stages cached"], 2),
        f"saved_per_run_s ({epochs} epochs)": round(
            epochs * per_epoch["whole model"] - (first_s + (epochs - 1) * per_epoch["frozen stages cached"]), 1),
    }
    print(json.dumps(report, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
