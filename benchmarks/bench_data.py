"""One training epoch of resnet20 on CIFAR-10: reskd's input pipeline vs a torchvision DataLoader with PIL transforms.

Three timings on the same images and the same model, side by side:

* ``reskd``: ``reskd.data.Loader`` (uint8 tensors in memory, batched tensor augmentation) feeding SGD steps;
* ``pil``: a torchvision ``DataLoader`` over the same uint8 images with PIL transforms (RandomCrop(32, padding=4),
  RandomHorizontalFlip, ToTensor, Normalize), as torchvision's CIFAR10 data set does it;
* ``compute``: the model's forward/backward/step alone on pre-made batches (the floor no pipeline can beat).

The data overhead of a pipeline is (its time - compute) / compute. Times are for ``--batches`` batches and
extrapolated to a full epoch of the 45,000 training images. Run from the repository root:

    python benchmarks/bench_data.py [--batches 60] [--workers 0 2] [--out benchmarks/out/data.json]
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from reskd.data import Loader, load_dataset
from reskd.models import create_model


class PILDataset(Dataset):
    """The same uint8 images served the torchvision way: one PIL image and one transform call per sample."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        self.images = images.permute(0, 2, 3, 1).contiguous().numpy()  # N x H x W x 3, like torchvision's CIFAR10
        self.labels = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


def train_steps(model, optimizer, batches, n: int, channels_last: bool) -> float:
    """Seconds for ``n`` SGD steps on the batches an iterator yields (data time included)."""
    model.train()
    it = iter(batches)
    t0 = time.perf_counter()
    for _ in range(n):
        x, y = next(it)[:2]
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - t0


def data_only(batches, n: int) -> float:
    it = iter(batches)
    t0 = time.perf_counter()
    for _ in range(n):
        next(it)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=60, help="batches timed per pipeline")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader workers to try")
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--out", default="benchmarks/out/data.json")
    args = parser.parse_args()

    t0 = time.perf_counter()
    data = load_dataset("cifar10")
    load_s = time.perf_counter() - t0
    spec, train = data.spec, data.train
    steps_per_epoch = len(train) // args.batch_size
    n = min(args.batches, steps_per_epoch)
    torch.manual_seed(0)
    model = create_model(args.model, num_classes=spec.num_classes).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    reskd_loader = Loader(train, spec, args.batch_size, train=True, seed=0)
    pil_transform = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                        transforms.ToTensor(), transforms.Normalize(spec.mean, spec.std)])
    pil_set = PILDataset(train.images, train.labels, pil_transform)

    # warm-up (allocator, oneDNN kernels) so the first pipeline timed is not penalised
    train_steps(model, optimizer, reskd_loader, 5, True)
    fixed = [next(iter(reskd_loader))[:2] for _ in range(4)]
    results = {"compute": train_steps(model, optimizer, (fixed[i % 4] for i in range(n)), n, True),
               "reskd": train_steps(model, optimizer, reskd_loader, n, True)}
    data_times = {"reskd": data_only(reskd_loader, n)}
    for w in args.workers:
        dl = DataLoader(pil_set, batch_size=args.batch_size, shuffle=True, num_workers=w, drop_last=True,
                        persistent_workers=w > 0)
        results[f"pil_workers{w}"] = train_steps(model, optimizer, dl, n, True)
        data_times[f"pil_workers{w}"] = data_only(dl, n)

    scale = steps_per_epoch / n
    compute = results["compute"]
    best_pil = min((k for k in results if k.startswith("pil")), key=results.get)
    report = {
        "what": f"one epoch of {args.model} on CIFAR-10 (JPEG copy), {len(train)} training images, batch "
                f"{args.batch_size}, extrapolated from {n} batches",
        "device": f"CPU ({platform.processor() or platform.machine()}), {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "dataset_load_s": round(load_s, 2),
        "epoch_s": {k: round(v * scale, 1) for k, v in results.items()},
        "data_only_epoch_s": {k: round(v * scale, 1) for k, v in data_times.items()},
        "reskd_data_overhead_pct": round(100 * (results["reskd"] - compute) / compute, 1),
        "pil_data_overhead_pct": round(100 * (results[best_pil] - compute) / compute, 1),
        "best_pil": best_pil,
        "speedup_vs_pil": round(results[best_pil] / results["reskd"], 2),
        "data_only_speedup_vs_pil": round(min(v for k, v in data_times.items() if k.startswith("pil"))
                                          / data_times["reskd"], 1),
    }
    print(json.dumps(report, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
