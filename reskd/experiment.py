"""Profiles and the glue the chapters call: load the data, get trained models (load, resume or train them).

A :class:`Profile` is the explicit, torchdistill-style configuration of one chapter's runs on one data set:

* ``smoke``: tiny models on a small subset, seconds on a CPU (for CI);
* ``cpu``: the real run two CPU cores can afford (hours, resumable, artifacts committed);
* ``paper``: paper-scale settings for a GPU (deeper teacher, 240 epochs).

:class:`Experiment` turns a profile into trained models through :mod:`reskd.artifacts` (one folder per run, keyed by
the whole configuration, including the training data's content fingerprint), so a chapter loads what exists and
trains what is missing.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import data as rdata
from .artifacts import artifacts_root, run_dir
from .distill import CE, KD, Distiller
from .models import create_model
from .train import FitResult, TrainConfig, fit
from .utils import resolve_device, seed_everything

PROFILE_NAMES = ("smoke", "cpu", "paper")
EVAL_BATCH_SIZE = 500


@dataclass(frozen=True)
class Arch:
    """An architecture by registry name and width multiplier."""

    name: str
    width: float = 1.0

    @property
    def label(self) -> str:
        return self.name if self.width == 1.0 else f"{self.name}x{self.width:g}"


@dataclass(frozen=True)
class Profile:
    """Every setting of one chapter's runs on one data set."""

    name: str
    dataset: str
    teacher: Arch
    student: Arch
    res_students: tuple[Arch, ...]
    teacher_train: TrainConfig
    student_train: TrainConfig
    seeds: tuple[int, ...] = (0, 1, 2)
    temperature: float = 4.0
    val_size: int | None = None  # None: the data set's default (5,000 on CIFAR)
    split_seed: int = 0
    train_subset: int | None = None
    test_subset: int | None = None
    notes: str = ""

    def replace(self, **changes: Any) -> "Profile":
        return dataclasses.replace(self, **changes)


_CIFAR_TEACHER_CPU = TrainConfig(epochs=30, batch_size=128, lr=0.1, schedule="cosine", weight_decay=5e-4)
_CIFAR_STUDENT_CPU = TrainConfig(epochs=30, batch_size=128, lr=0.1, schedule="cosine", weight_decay=5e-4)
_CIFAR_PAPER = TrainConfig(epochs=240, batch_size=64, lr=0.05, schedule="multistep", milestones=(0.625, 0.75, 0.875),
                           weight_decay=5e-4)
_SMOKE = TrainConfig(epochs=2, batch_size=64, lr=0.05, schedule="cosine", weight_decay=5e-4)


def _cifar_profiles(dataset: str) -> dict[str, Profile]:
    res = (Arch("resnet8", 0.5), Arch("resnet8", 0.5), Arch("resnet8", 0.5))
    return {
        "smoke": Profile("smoke", dataset, Arch("resnet8", 0.5), Arch("resnet8", 0.25), (Arch("resnet8", 0.25),),
                         _SMOKE, _SMOKE, seeds=(0,), val_size=500, train_subset=1000, test_subset=500,
                         notes="tiny models on 1,000 training images, 2 epochs: checks that the chapter runs, "
                               "its numbers mean nothing"),
        "cpu": Profile("cpu", dataset, Arch("resnet56"), Arch("resnet8"), res, _CIFAR_TEACHER_CPU, _CIFAR_STUDENT_CPU,
                       notes="resnet56 teacher and resnet8 students, 30 epochs each, on two CPU cores"),
        "paper": Profile("paper", dataset, Arch("resnet110"), Arch("resnet8"), res, _CIFAR_PAPER, _CIFAR_PAPER,
                         notes="paper-scale settings for a GPU (240 epochs, CRD/mdistiller recipe)"),
    }


PROFILES: dict[str, dict[str, Profile]] = {"cifar10": _cifar_profiles("cifar10"),
                                           "cifar100": _cifar_profiles("cifar100")}


def get_profile(dataset: str, profile: str) -> Profile:
    """The profile ``profile`` (smoke, cpu, paper) of ``dataset``."""
    if dataset not in PROFILES:
        raise ValueError(f"no profiles for data set {dataset!r}; available: {', '.join(PROFILES)}.")
    if profile not in PROFILES[dataset]:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES[dataset])}.")
    return PROFILES[dataset][profile]


@dataclass
class Experiment:
    """A profile bound to a data root, an artifacts root and a device; hands out trained models."""

    profile: Profile
    data_root: str | os.PathLike | None = None
    artifacts: str | os.PathLike | None = None
    device: str | torch.device | None = "auto"
    retrain: bool = False
    progress: bool = True
    download: bool = False
    results: dict[str, FitResult] = field(default_factory=dict)

    def __post_init__(self):
        self.device = resolve_device(self.device)

    @cached_property
    def data(self) -> rdata.DataSplits:
        p = self.profile
        return rdata.load_dataset(p.dataset, self.data_root, val_size=p.val_size, split_seed=p.split_seed,
                                  download=self.download, train_subset=p.train_subset, test_subset=p.test_subset)

    @property
    def num_classes(self) -> int:
        return self.data.spec.num_classes

    @property
    def input_size(self) -> tuple[int, int, int]:
        return (3, self.data.spec.crop_size, self.data.spec.crop_size)

    def train_loader(self, config: TrainConfig) -> rdata.Loader:
        return rdata.Loader(self.data.train, self.data.spec, config.batch_size, train=True, seed=config.data_seed,
                            device=self.device)

    def eval_loader(self, split: str) -> rdata.Loader:
        splits = {"train": self.data.train, "val": self.data.val, "test": self.data.test}
        if split not in splits:
            raise ValueError(f"unknown split {split!r}; choose one of {', '.join(splits)}.")
        return rdata.Loader(splits[split], self.data.spec, EVAL_BATCH_SIZE, train=False, device=self.device)

    @property
    def output_cache(self) -> Path:
        """Where frozen models' outputs on each training view are cached."""
        return rdata.cache_dir() / "outputs"

    def build(self, arch: Arch, seed: int) -> nn.Module:
        seed_everything(seed)
        return create_model(arch.name, self.num_classes, width=arch.width)

    def _spec(self, role: str, arch: Arch, seed: int, config: TrainConfig, **extra: Any) -> dict[str, Any]:
        return {"dataset": self.profile.dataset, "data": self.data.train.fingerprint, "role": role,
                "arch": arch.name, "width": arch.width, "seed": seed, "train": config.to_dict(), **extra}

    def run(self, name: str, distiller: Distiller, spec: dict[str, Any], config: TrainConfig) -> FitResult:
        """Train (or load, or resume) one run described by ``spec``."""
        folder = run_dir(spec, name, root=self.artifacts)
        result = fit(distiller, self.train_loader(config), config,
                     eval_loaders={"val": self.eval_loader("val"), "test": self.eval_loader("test")},
                     run_dir=folder, device=self.device, progress=self.progress, retrain=self.retrain,
                     run_info=spec)
        self.results[name] = result
        return result

    def teacher(self, seed: int = 0) -> nn.Module:
        """The trained teacher (cross-entropy from scratch)."""
        p = self.profile
        spec = self._spec("teacher", p.teacher, seed, p.teacher_train, loss="ce")
        return self.run(f"teacher-{p.teacher.label}-s{seed}", CE(self.build(p.teacher, seed)), spec,
                        p.teacher_train).model

    def student(self, kind: str = "kd", arch: Arch | None = None, seed: int = 0) -> nn.Module:
        """A student trained from scratch (``kind="scratch"``) or with Hinton KD from the teacher (``"kd"``)."""
        p = self.profile
        arch = arch or p.student
        if kind == "scratch":
            spec = self._spec("scratch", arch, seed, p.student_train, loss="ce")
            distiller: Distiller = CE(self.build(arch, seed))
        elif kind == "kd":
            teacher = self.teacher()
            spec = self._spec("kd", arch, seed, p.student_train, loss="kd", temperature=p.temperature,
                              teacher=self.run_key_of("teacher"))
            distiller = KD(self.build(arch, seed), teacher, temperature=p.temperature, cache_root=self.output_cache)
        else:
            raise ValueError(f"unknown student kind {kind!r}; choose 'scratch' or 'kd'.")
        return self.run(f"{kind}-{arch.label}-s{seed}", distiller, spec, p.student_train).model

    def run_key_of(self, role: str, seed: int = 0) -> str:
        """The key of the teacher run (students record it, so a new teacher means new students)."""
        p = self.profile
        from .artifacts import run_key
        return run_key(self._spec(role, p.teacher, seed, p.teacher_train, loss="ce"))


def main(argv: list[str] | None = None) -> None:
    """Train (or resume) a profile's runs from the command line, e.g. in the background before a chapter is run:

        python -m reskd.experiment cifar10 cpu teacher
        python -m reskd.experiment cifar10 cpu kd --seed 1
    """
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=sorted(PROFILES))
    parser.add_argument("profile", choices=PROFILE_NAMES)
    parser.add_argument("what", choices=("teacher", "scratch", "kd"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--retrain", action="store_true")
    args = parser.parse_args(argv)
    exp = Experiment(get_profile(args.dataset, args.profile), data_root=args.data_root, device=args.device,
                     retrain=args.retrain)
    if args.what == "teacher":
        exp.teacher(args.seed)
    else:
        exp.student(args.what, seed=args.seed)
    for name, result in exp.results.items():
        print(name, result.summary.get("final"))


if __name__ == "__main__":
    main()
