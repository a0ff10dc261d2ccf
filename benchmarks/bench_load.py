"""Loading a profile's committed artifacts and evaluating them, from cold (no evaluation cache).

Every run of the profile (teacher, students, baselines, res-students, plain-ensemble members, ablation options) is
loaded from ``artifacts/`` with ``train_missing=False``, so a missing run is an error rather than hours of training.
Then the models the CIFAR chapter compares are evaluated on the validation and test splits with plain forward passes
(the chapters' evaluation cache is bypassed): the teacher, every single-network student and baseline, and every
seed's ResKD ensemble stage by stage. Run from the repository root, with the data root set:

    python benchmarks/bench_load.py [--dataset cifar10] [--profile cpu] [--out benchmarks/out/load.json]
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from reskd.adaptive import collect
from reskd.experiment import Experiment, ResKDRuns, get_profile, run_jobs
from reskd.train import predict

LOAD_JOBS = ("teacher", "scratch", "kd", "ablation", "reskd", "equal-cost", "plain")
SPLITS = ("val", "test")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--out", default="benchmarks/out/load.json")
    args = parser.parse_args()

    times: dict[str, float] = {}
    start = time.perf_counter()
    exp = Experiment(get_profile(args.dataset, args.profile), train_missing=False, progress=False)
    exp.data  # decoded arrays, from the data cache after the first time
    times["data_s"] = time.perf_counter() - start

    t0 = time.perf_counter()
    run_jobs(exp, LOAD_JOBS)
    runs = ResKDRuns(exp)
    ensembles = [runs.ensemble(list(exp.profile.res_students), seed) for seed in exp.profile.seeds]
    times["load_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    singles = [name for name, spec in exp.specs.items() if not spec["role"].startswith("res")]
    images = 0
    for split in SPLITS:
        loader = exp.eval_loader(split)
        for name in singles:
            predict(exp.results[name].model, loader, device=exp.device)
        for ensemble in ensembles:
            collect(ensemble, loader, device=exp.device)
        images += len(loader.data) * (len(singles) + len(ensembles))
    times["evaluate_s"] = time.perf_counter() - t0
    times["total_s"] = time.perf_counter() - start

    report = {
        "what": f"load every {args.profile}-profile run of {args.dataset} ({len(exp.results)} runs) and evaluate "
                f"{len(singles)} single networks and {len(ensembles)} ResKD ensembles (every stage) on "
                f"{' and '.join(SPLITS)} from cold; data: {exp.data.source}",
        "device": f"{exp.device.type} ({platform.processor() or platform.machine()}), {torch.get_num_threads()} threads",
        **{k: round(v, 1) for k, v in times.items()},
        "images_evaluated": images,
    }
    print(json.dumps(report, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
