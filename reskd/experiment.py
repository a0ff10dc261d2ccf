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
import math
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import torch
from torch import Tensor, nn

from . import data as rdata
from .artifacts import run_dir, run_key

from .adaptive import Policy, StagedOutputs, collect, evaluate_policy
from .distill import CE, KD, Distiller
from .flops import count_macs
from .models import create_model
from .reskd import FeatureHead, ResidualDistiller, ResKDEnsemble, residual_energy
from .train import FitResult, TrainConfig, fit, predict
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
    equal_cost: Arch | None = None  # a single KD student about as costly as S0 plus all res-students
    seeds: tuple[int, ...] = (0, 1, 2)
    temperature: float = 4.0
    residual_loss: str = "kd"  # the res-students' loss (reskd.reskd.RESIDUAL_LOSSES); ablated in the book
    residual_input: str = "image"  # "image" or "features"
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
                         _SMOKE, _SMOKE, equal_cost=Arch("resnet8", 0.35), seeds=(0,), val_size=500, train_subset=1000, test_subset=500,
                         notes="tiny models on 1,000 training images, 2 epochs: checks that the chapter runs, "
                               "its numbers mean nothing"),
        "cpu": Profile("cpu", dataset, Arch("resnet56"), Arch("resnet8"), res, _CIFAR_TEACHER_CPU, _CIFAR_STUDENT_CPU,
                       equal_cost=Arch("resnet8", 1.35),
                       notes="resnet56 teacher and resnet8 students, 30 epochs each, on two CPU cores"),
        "paper": Profile("paper", dataset, Arch("resnet110"), Arch("resnet8"), res, _CIFAR_PAPER, _CIFAR_PAPER,
                         equal_cost=Arch("resnet8", 1.35),
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
    _teachers: dict[int, nn.Module] = field(default_factory=dict, repr=False)
    _teacher_logits: dict[str, Tensor] = field(default_factory=dict, repr=False)

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

    def teacher_spec(self, seed: int = 0) -> dict[str, Any]:
        p = self.profile
        return self._spec("teacher", p.teacher, seed, p.teacher_train, loss="ce")

    def teacher(self, seed: int = 0) -> nn.Module:
        """The trained teacher (cross-entropy from scratch), loaded or trained once per experiment."""
        if seed not in self._teachers:
            p = self.profile
            self._teachers[seed] = self.run(f"teacher-{p.teacher.label}-s{seed}", CE(self.build(p.teacher, seed)),
                                            self.teacher_spec(seed), p.teacher_train).model
        return self._teachers[seed]

    def teacher_logits(self, split: str) -> Tensor:
        """The teacher's logits on an evaluation split, computed once per experiment."""
        if split not in self._teacher_logits:
            self._teacher_logits[split] = predict(self.teacher(), self.eval_loader(split), device=self.device)[0]
        return self._teacher_logits[split]

    def student_spec(self, kind: str, arch: Arch | None = None, seed: int = 0) -> dict[str, Any]:
        p = self.profile
        arch = arch or p.student
        if kind == "scratch":
            return self._spec("scratch", arch, seed, p.student_train, loss="ce")
        if kind == "kd":
            return self._spec("kd", arch, seed, p.student_train, loss="kd", temperature=p.temperature,
                              teacher=run_key(self.teacher_spec()))
        raise ValueError(f"unknown student kind {kind!r}; choose 'scratch' or 'kd'.")

    def student(self, kind: str = "kd", arch: Arch | None = None, seed: int = 0) -> nn.Module:
        """A student trained from scratch (``kind="scratch"``) or with Hinton KD from the teacher (``"kd"``)."""
        p = self.profile
        arch = arch or p.student
        spec = self.student_spec(kind, arch, seed)
        if kind == "kd":
            distiller: Distiller = KD(self.build(arch, seed), self.teacher(), temperature=p.temperature,
                                      cache_root=self.output_cache)
        else:
            distiller = CE(self.build(arch, seed))
        return self.run(f"{kind}-{arch.label}-s{seed}", distiller, spec, p.student_train).model


# ----------------------------------------------------------------------------------------------- ResKD
FEATURE_HEAD = "feature_head"  # Arch(FEATURE_HEAD, w): a FeatureHead with round(64 * w) channels on S0's features
FEATURE_HEAD_BASE_CHANNELS = 64


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    t = torch.tensor(values, dtype=torch.float64)
    return t.mean().item(), (t.std().item() if len(t) > 1 else 0.0)


class ResKDRuns:
    """ResKD stages and their baselines for one :class:`Experiment` (all through the artifact store)."""

    def __init__(self, exp: Experiment, *, loss: str | None = None, input: str | None = None,
                 feature_index: int = -1):
        self.exp, self.feature_index = exp, feature_index
        self.loss = loss or exp.profile.residual_loss
        self.input = input or exp.profile.residual_input

    def _res_student(self, arch: Arch, s0: nn.Module, seed: int) -> nn.Module:
        seed_everything(seed)
        if arch.name == FEATURE_HEAD:
            channels = max(1, round(FEATURE_HEAD_BASE_CHANNELS * arch.width))
            return FeatureHead(s0.feature_channels[self.feature_index], self.exp.num_classes, channels=channels)
        return create_model(arch.name, self.exp.num_classes, width=arch.width)

    def ensemble(self, res_archs: Sequence[Arch], seed: int = 0) -> ResKDEnsemble:
        """S0 (the KD student of ``seed``) plus res-students ``res_archs``, each trained on the residual of the
        frozen ensemble before it (trained now when missing)."""
        exp, p = self.exp, self.exp.profile
        s0 = exp.student("kd", seed=seed)
        ens = ResKDEnsemble(s0, feature_index=self.feature_index)
        chain = [run_key(exp.student_spec("kd", seed=seed))]
        teacher = exp.teacher()
        for k, arch in enumerate(res_archs, start=1):
            kind = "features" if arch.name == FEATURE_HEAD else self.input
            spec = exp._spec(f"res{k}", arch, seed, p.student_train, loss=self.loss, input=kind,
                             temperature=p.temperature, teacher=run_key(exp.teacher_spec()), previous=list(chain),
                             feature_index=self.feature_index)
            distiller = ResidualDistiller(self._res_student(arch, s0, seed + 1000 * k), teacher, ens, loss=self.loss,
                                          input=kind, temperature=p.temperature, cache_root=exp.output_cache)
            name = f"res{k}-{arch.label}-{self.loss}-{kind}-s{seed}"
            stage = exp.run(name, distiller, spec, p.student_train).model
            ens = ResKDEnsemble(s0, list(ens.stages)[1:] + [stage], ens.inputs[1:] + [kind],
                                feature_index=self.feature_index)
            chain.append(run_key(spec))
        return ens.eval()

    def staged(self, ens: ResKDEnsemble, split: str) -> StagedOutputs:
        """Cumulative stage logits on ``split`` with the teacher's logits (for agreement and residual energy)."""
        staged = collect(ens, self.exp.eval_loader(split), device=self.exp.device)
        staged.teacher_logits = self.exp.teacher_logits(split)
        return staged


def stage_records(staged_by_split: dict[str, StagedOutputs], teacher_macs: int) -> pd.DataFrame:
    """Per stage: top-1 and teacher agreement on each split, residual energy E_k (after stage k), cumulative MACs."""
    rows = []
    first = next(iter(staged_by_split.values()))
    for k in range(first.num_stages):
        row: dict[str, Any] = {"stage": k, "macs": first.cumulative_macs[k],
                               "pct_teacher": 100.0 * first.cumulative_macs[k] / teacher_macs}
        for split, st in staged_by_split.items():
            z = st.logits[k]
            row[f"{split}_top1"] = 100.0 * (z.argmax(1) == st.labels).float().mean().item()
            if st.teacher_logits is not None:
                row[f"{split}_agreement_teacher"] = 100.0 * (z.argmax(1) == st.teacher_logits.argmax(1)).float().mean().item()
                row[f"{split}_residual_energy"] = residual_energy(st.teacher_logits, z).item()
        rows.append(row)
    return pd.DataFrame(rows)


def grow(runs: ResKDRuns, candidates: Sequence[Arch], *, max_stages: int = 3, macs_budget: float | None = None,
         min_gain_per_mmac: float | None = None, seed: int = 0) -> tuple[ResKDEnsemble, pd.DataFrame]:
    """Add res-students greedily, each the candidate with the best validation gain per added MAC, until a rule fires:
    ``max_stages``, the cumulative MACs passing ``macs_budget`` (a fraction of the teacher's), or the validation
    top-1 gain per added million MACs falling below ``min_gain_per_mmac``. Only validation data is used to decide."""
    exp = runs.exp
    teacher_macs = count_macs(exp.teacher(), exp.input_size)
    chosen: list[Arch] = []
    ens = runs.ensemble(chosen, seed)
    val = runs.staged(ens, "val")
    log = [{"stage": 0, "arch": exp.profile.student.label, "val_top1": evaluate_policy(val, _all_stages(val))["top1"],
            "macs": val.cumulative_macs[-1], "decision": "student"}]
    while len(chosen) < max_stages:
        best = None
        for arch in candidates:
            trial = runs.ensemble(chosen + [arch], seed)
            st = runs.staged(trial, "val")
            top1 = evaluate_policy(st, _all_stages(st))["top1"]
            added = st.cumulative_macs[-1] - val.cumulative_macs[-1]
            gain = (top1 - log[-1]["val_top1"]) / max(added / 1e6, 1e-9)
            if macs_budget is not None and st.cumulative_macs[-1] > macs_budget * teacher_macs:
                continue
            if best is None or gain > best[0]:
                best = (gain, arch, trial, st, top1)
        if best is None:
            log.append({"stage": len(chosen) + 1, "decision": "stop: every candidate exceeds the MACs budget"})
            break
        gain, arch, trial, st, top1 = best
        if min_gain_per_mmac is not None and gain < min_gain_per_mmac:
            log.append({"stage": len(chosen) + 1, "arch": arch.label, "val_top1": top1, "macs": st.cumulative_macs[-1],
                        "decision": f"stop: gain {gain:.3f} points/MMAC < {min_gain_per_mmac}"})
            break
        chosen.append(arch)
        ens, val = trial, st
        log.append({"stage": len(chosen), "arch": arch.label, "val_top1": top1, "macs": st.cumulative_macs[-1],
                    "decision": f"added ({gain:.3f} points/MMAC)"})
    return ens, pd.DataFrame(log)


def _all_stages(st: StagedOutputs) -> Policy:
    return Policy("max_prob", [math.inf] * (st.num_stages - 1))


def plain_ensemble_logits(exp: Experiment, archs: Sequence[Arch], split: str, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Averaged logits of independently trained KD students with the architectures ``archs`` (the equal-cost
    ensemble baseline); the i-th member uses weight seed ``seed + 100 * i``."""
    members = [exp.student("kd", arch=a, seed=seed + 100 * i) for i, a in enumerate(archs)]
    loader = exp.eval_loader(split)
    outs = [predict(m, loader, device=exp.device) for m in members]
    return torch.stack([o[0] for o in outs]).mean(0), outs[0][1]


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
