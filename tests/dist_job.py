"""A tiny KD training job for ``tests/test_distributed.py``, run under torchrun or as one plain process:

    python -m torch.distributed.run --nproc_per_node 2 tests/dist_job.py DATA_ROOT CACHE RUN_DIR OUT [--kill E B]

It distils an untrained resnet8x0.5 teacher into a resnet8x0.25 student on the ImageNet-layout folder under
``DATA_ROOT`` (:data:`SPEC`: 4 classes at 32x32), with the teacher-output cache under ``CACHE``, and saves each
rank's final weights and history to ``OUT/rank<r>.pt``. ``--kill E B``: rank :data:`KILLED_RANK` kills itself with
SIGKILL at batch ``B`` of epoch ``E`` (0-based), before that batch's step.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import signal
from pathlib import Path

import torch

from reskd import distributed
from reskd.data import SPECS, Loader, load_dataset
from reskd.distill import KD
from reskd.models import create_model
from reskd.train import TIMING_COLUMNS, TrainConfig, fit

SPEC = dataclasses.replace(SPECS["imagenet"], num_classes=4, image_size=36, crop_size=32, val_size=8,
                           train_per_class=None, test_per_class=None)
CONFIG = TrainConfig(epochs=2, batch_size=8, lr=0.05, schedule="cosine")
EVAL_BATCH = 4  # small, so that the evaluation is shared between the ranks
KILLED_RANK = 1


class KillingLoader(Loader):
    """A training loader whose process dies at one batch of one epoch (``kill_at``)."""

    kill_at: tuple[int, int] | None = None

    def __iter__(self):
        for b, batch in enumerate(super().__iter__()):
            if (self.epoch, b) == self.kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            yield batch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data_root", type=Path)
    parser.add_argument("cache", type=Path)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--kill", type=int, nargs=2, default=None, metavar=("EPOCH", "BATCH"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    distributed.init_from_env("cpu")
    rank, world = distributed.rank(), distributed.world_size()
    data = load_dataset(SPEC, args.data_root, cache=args.cache)
    train = KillingLoader(data.train, SPEC, CONFIG.batch_size, train=True, seed=CONFIG.data_seed, rank=rank,
                          world_size=world)
    if args.kill is not None and rank == KILLED_RANK:
        train.kill_at = tuple(args.kill)
    val = Loader(data.val, SPEC, EVAL_BATCH, train=False, rank=rank, world_size=world)
    torch.manual_seed(0)
    teacher, student = create_model("resnet8", SPEC.num_classes, width=0.5), create_model("resnet8", SPEC.num_classes,
                                                                                          width=0.25)
    initial = {k: v.detach().clone() for k, v in student.state_dict().items()}  # what the training moved from
    result = fit(KD(student, teacher, cache_root=args.cache / "outputs"), train, CONFIG, eval_loaders={"val": val},
                 run_dir=args.run_dir, device="cpu", progress=False)
    args.out.mkdir(parents=True, exist_ok=True)
    history = result.history.drop(columns=list(TIMING_COLUMNS)).to_dict("list")
    torch.save({"state": result.model.state_dict(), "initial": initial, "history": history,
                "identity": result.summary["identity"]}, args.out / f"rank{rank}.pt")
    distributed.shutdown()


if __name__ == "__main__":
    main()
