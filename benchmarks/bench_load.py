"""Loading a profile's committed artifacts and evaluating them, from cold (an empty evaluation cache).

Every run of the profile (teacher, students, baselines, res-students, plain-ensemble members, ablation options) is
loaded from ``artifacts/`` with ``train_missing=False``, so a missing run is an error rather than hours of training.
Then the models the CIFAR chapter compares are evaluated on the validation and test splits the way the chapter does
it (``Experiment.logits`` and ``ResKDRuns.staged``: each distinct network once per split), with the evaluation cache
pointed at an empty temporary folder (the decoded data is linked in, so only evaluation is timed): the teacher,
every single-network student and baseline, and every seed's ResKD ensemble stage by stage. With ``--whole`` each
ensemble is run as one model on every split instead (``reskd.adaptive.collect``: S0 again inside every ensemble),
the way the chapters evaluated before, for the ratio. Run from the repository root, with the data root set:

    python benchmarks/bench_load.py [--dataset cifar10] [--profile cpu] [--whole] [--out benchmarks/out/load.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from reskd import data as rdata
from reskd.adaptive import collect
from reskd.cli import run_jobs
from reskd.experiment import Experiment
from reskd.profiles import get_profile
from reskd.studies import reskd_runs

LOAD_JOBS = ("teacher", "scratch", "kd", "ablation", "reskd", "equal-cost", "plain")
SPLITS = ("val", "test")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--out", default="benchmarks/out/load.json")
    parser.add_argument("--whole", action="store_true", help="run each ensemble as one model (the old way)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cold:
        for entry in rdata.cache_dir().iterdir():  # the decoded data sets, not the evaluation cache
            if entry.is_file():
                (Path(cold) / entry.name).symlink_to(entry)
        os.environ[rdata.CACHE_ENV] = cold
        measure(args)


def measure(args: argparse.Namespace) -> None:
    times: dict[str, float] = {}
    start = time.perf_counter()
    exp = Experiment(get_profile(args.dataset, args.profile), train_missing=False, progress=False)
    exp.data  # decoded arrays, from the data cache after the first time
    times["data_s"] = time.perf_counter() - start

    t0 = time.perf_counter()
    run_jobs(exp, LOAD_JOBS)
    runs = reskd_runs(exp)
    ensembles = [runs.ensemble(list(exp.profile.res_students), seed) for seed in exp.profile.seeds]
    times["load_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    singles = [name for name, spec in exp.specs.items() if not spec["role"].startswith("res")]
    images = 0
    for split in SPLITS:
        loader = exp.eval_loader(split)
        for name in singles:
            exp.logits(exp.results[name].model, split)
        for ensemble in ensembles:
            if args.whole:
                collect(ensemble, loader, device=exp.device)
            else:
                runs.staged(ensemble, split)
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
        "ensembles": "whole (collect)" if args.whole else "one network at a time (ResKDRuns.staged)",
    }
    print(json.dumps(report, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
