"""How to spend two cores on many small runs: one 2-thread job, or two 1-thread jobs side by side?

For each model, a training step on a synthetic batch (as ``bench_peak.py`` times it: ``channels_last``, SGD,
cross-entropy) runs for a fixed time in fresh processes, first as one job with ``--threads`` threads alone, then as
``--threads`` jobs of one thread each at once; the figure to read is the summed images/s of the side-by-side jobs
over the one job's (above 1: split the cores between workers; below 1: run one job at a time). The two set-ups
alternate for ``--rounds`` rounds and the best round of each counts. Real training adds data loading and the
per-epoch evaluation, which this leaves out.

Run from the repository root, alone on the machine:

    python benchmarks/bench_workers.py [--models resnet56 resnet8 resnet8x1.35 resnet8x0.5 feature_head3]
                                       [--seconds 15] [--rounds 2] [--out benchmarks/out/workers.json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_MODELS = ["resnet56", "resnet8", "resnet8x1.35", "resnet8x0.5", "feature_head3"]


def worker(label: str, batch_size: int, seconds: float) -> float:
    """Images/s of training steps of ``label`` over ``seconds`` (after two warm-up steps), in this process."""
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_peak import build, sgd_step

    torch.manual_seed(0)
    model, input_size = build(label)
    step = sgd_step(model, batch_size, input_size)
    for _ in range(2):
        step()
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        steps += 1
    return steps * batch_size / (time.perf_counter() - start)


def launch(label: str, threads: int, batch_size: int, seconds: float) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    return subprocess.Popen([sys.executable, __file__, "--worker", label, "--batch-size", str(batch_size),
                             "--seconds", str(seconds)], env=env, stdout=subprocess.PIPE, text=True)


def images_per_s(jobs: list[subprocess.Popen]) -> list[float]:
    outs = [job.communicate()[0] for job in jobs]
    if any(job.returncode for job in jobs):
        raise RuntimeError(f"a worker failed: {outs}")
    return [float(out.strip().splitlines()[-1]) for out in outs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--threads", type=int, default=2, help="the cores to share")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="benchmarks/out/workers.json")
    args = parser.parse_args()
    if args.worker:
        print(worker(args.worker, args.batch_size, args.seconds))
        return
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from reskd.utils import machine_info

    rows = []
    for label in args.models:
        one, side_by_side = 0.0, 0.0
        for _ in range(args.rounds):
            one = max(one, *images_per_s([launch(label, args.threads, args.batch_size, args.seconds)]))
            split = images_per_s([launch(label, 1, args.batch_size, args.seconds) for _ in range(args.threads)])
            side_by_side = max(side_by_side, sum(split))
        rows.append({"model": label, f"one_{args.threads}_thread_job_images_per_s": one,
                     f"{args.threads}_one_thread_jobs_images_per_s": side_by_side, "ratio": side_by_side / one})
        print(f"{label:>14}: one {args.threads}-thread job {one:7.0f} images/s, {args.threads} one-thread jobs "
              f"{side_by_side:7.0f} images/s in all: x{side_by_side / one:.2f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine_info("cpu"), "threads": args.threads,
                               "batch_size": args.batch_size, "seconds": args.seconds, "rounds": args.rounds,
                               "models": rows}, indent=2) + "\n")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
