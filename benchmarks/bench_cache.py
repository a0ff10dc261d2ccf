"""Student training with the teacher-output cache cold vs warm.

A KD student (resnet8) learns from a resnet56 teacher on a subset of CIFAR-10 (JPEG copy). The first run computes the
teacher's logits on every augmented view and stores them (cold); the second run, another weight seed seeing the same
views, reads them (warm). The teacher's weights do not matter for timing, so it is not trained here. Run from the
repository root:

    python benchmarks/bench_cache.py [--images 5000] [--epochs 1] [--out benchmarks/out/cache.json]
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from reskd.data import Loader, load_dataset
from reskd.distill import KD
from reskd.models import create_model
from reskd.train import TrainConfig, fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000, help="training images used (a stratified subset)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--teacher", default="resnet56")
    parser.add_argument("--student", default="resnet8")
    parser.add_argument("--out", default="benchmarks/out/cache.json")
    args = parser.parse_args()

    data = load_dataset("cifar10", train_subset=args.images)
    torch.manual_seed(0)
    teacher = create_model(args.teacher, num_classes=data.spec.num_classes)
    config = TrainConfig(epochs=args.epochs, batch_size=128)
    times = {}
    with tempfile.TemporaryDirectory() as cache_root:
        for name, seed in (("cold", 1), ("warm", 2)):
            torch.manual_seed(seed)
            distiller = KD(create_model(args.student, num_classes=data.spec.num_classes), teacher,
                           cache_root=cache_root)
            loader = Loader(data.train, data.spec, config.batch_size, train=True, seed=config.data_seed)
            t0 = time.perf_counter()
            fit(distiller, loader, config, device="cpu", progress=False)
            times[name] = time.perf_counter() - t0
            times[f"{name}_hit_rate"] = distiller.teacher_outputs.stats.hit_rate
    report = {
        "what": f"KD training of {args.student} from {args.teacher}, {len(data.train)} CIFAR-10 (JPEG copy) images, "
                f"{args.epochs} epoch(s), batch {config.batch_size}",
        "device": f"CPU ({platform.processor() or platform.machine()}), {torch.get_num_threads()} threads",
        "cold_s": round(times["cold"], 1), "warm_s": round(times["warm"], 1),
        "cold_hit_rate": times["cold_hit_rate"], "warm_hit_rate": times["warm_hit_rate"],
        "speedup": round(times["cold"] / times["warm"], 2),
    }
    print(json.dumps(report, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
