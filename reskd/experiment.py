"""Runs by spec: load the data, get trained models (load, resume or train them).

:class:`Experiment` turns a profile (:mod:`reskd.profiles`) into trained models through :mod:`reskd.runstore` (one
folder per run, keyed by the whole configuration, including the training data's content fingerprint), so a chapter
loads what exists and trains what is missing; :class:`ResKDRuns` builds the chain of res-students on top of it.
Studies around the method (ablation, growth, baselines) are in :mod:`reskd.studies`, the job CLI in :mod:`reskd.cli`.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd
import torch
from torch import Tensor, nn

from . import data as rdata
from . import distributed
from .runstore import (HISTORY, RETIRED, SNAPSHOT, SUMMARY, RetiredRunError, RunLockedError, is_retired, run_dir, run_key, run_path,
                       run_status)

from .adaptive import StagedOutputs, collect
from .cache import TEACHER_CACHE_NAME, OutputCache
from .distill import CE, KD, Distiller, Regress
from .flops import count_macs
from .models import create_model
from .profiles import Arch, Profile
from .reskd import (RESIDUAL_LOSSES, FeatureHead, ResidualDistiller, ResKDEnsemble, cumulative_sums,
                    zero_last_layer)
from .train import FitResult, TrainConfig, TurnOver, fit, is_finished, predict
from .utils import atomic_torch_save, progress, resolve_device, seed_everything, stable_hash, state_dict_hash

def retired_result(folder: Path) -> FitResult:
    """A retired run (:func:`reskd.runstore.retire`) as a result: its history and summary, and no model."""
    return FitResult(None, pd.read_csv(folder / HISTORY), json.loads((folder / SUMMARY).read_text()))


EVAL_BATCH_SIZE = 500
RES_STUDENT_SEED_STRIDE = 1000  # res-student k of seed s draws its initial weights with seed s + 1000 k
TRAIN_SAMPLE, TRAIN_SAMPLE_SIZE = "train-sample", 10_000  # statistics on training images use a fixed subset
EVAL_CACHE = "eval"


EVAL_CACHE_FORMAT = 1  # what an entry of the evaluation cache holds (see _encode): tensors and plain types only


def _encode(value: Any, num_samples: int) -> dict[str, Any]:
    """An evaluation as an entry of the cache: tensors and plain types only, so it loads with ``weights_only=True``
    (a :class:`StagedOutputs` is stored as its fields)."""
    if isinstance(value, StagedOutputs):
        kind, payload = "staged", {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        payload["stage_macs"] = [int(m) for m in value.stage_macs]
    elif isinstance(value, Tensor):
        kind, payload = "tensor", value
    elif isinstance(value, tuple) and all(isinstance(v, Tensor) for v in value):
        kind, payload = "tuple", list(value)
    elif isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in value.items()):
        kind, payload = "dict", dict(value)
    else:
        raise TypeError(f"the evaluation cache stores a tensor, a tuple or dict of tensors or StagedOutputs, not a "
                        f"{type(value).__name__}.")
    return {"format": EVAL_CACHE_FORMAT, "kind": kind, "num_samples": num_samples, "value": payload}


class _Unexpected(ValueError):
    """An entry of the evaluation cache that is not what this loader's evaluation gives."""


def _decode(entry: Any, num_samples: int) -> Any:
    """The evaluation an entry of the cache holds, checked: its form and the number of samples of every tensor
    (one row per sample of the loader); raises :class:`_Unexpected` on anything else."""
    if not isinstance(entry, dict) or entry.get("format") != EVAL_CACHE_FORMAT or \
            entry.get("num_samples") != num_samples:
        raise _Unexpected("not an entry of this format for this loader")
    kind, value = entry.get("kind"), entry.get("value")

    def rows(t: Any, dim: int = 0) -> Tensor:
        if not isinstance(t, Tensor) or t.dim() <= dim or t.shape[dim] != num_samples:
            raise _Unexpected(f"expected a tensor with {num_samples} samples, found {type(t).__name__}")
        return t

    if kind == "tensor":
        return rows(value)
    if kind == "tuple" and isinstance(value, list):
        return tuple(rows(v) for v in value)
    if kind == "dict" and isinstance(value, dict):
        return {str(k): rows(v) for k, v in value.items()}
    if kind == "staged" and isinstance(value, dict):
        macs = value.get("stage_macs")
        if not isinstance(macs, list) or not all(isinstance(m, int) for m in macs):
            raise _Unexpected("stage MACs are not a list of ints")
        teacher = value.get("teacher_logits")
        staged = StagedOutputs(rows(value.get("logits"), 1), rows(value.get("labels")), macs,
                               None if teacher is None else rows(teacher))  # checks that the shapes agree
        return staged
    raise _Unexpected(f"unknown kind {kind!r}")


def cached_eval(model: nn.Module, loader: rdata.Loader, compute: Callable[[], Any], precision: str = "fp32") -> Any:
    """``compute()`` (a frozen model's outputs on an evaluation loader, in ``precision``: a tensor, a tuple or dict
    of tensors, or :class:`StagedOutputs`, one row per sample), stored under the cache folder keyed by a hash of the
    model's weights and the loader's images, so chapters that evaluate the same models share the work.

    An entry is read with ``weights_only=True`` (a file that pickles anything but tensors and plain types runs no
    code) and checked (its form, one row per sample of the loader); anything else is computed again and replaced."""
    wiring = [loader.view_key(0), getattr(model, "inputs", None), getattr(model, "feature_index", None)]
    if precision != "fp32":  # fp32 entries keep the keys they always had
        wiring.append(precision)
    path = rdata.cache_dir() / EVAL_CACHE / f"{state_dict_hash(model)}-{stable_hash(wiring)}.pt"
    num_samples = len(loader.data)
    if path.exists():
        try:
            return _decode(torch.load(path, map_location="cpu", weights_only=True), num_samples)
        except Exception:  # damaged, foreign, of an older format or not this evaluation: computed again
            path.unlink(missing_ok=True)
    value = compute()
    atomic_torch_save(_encode(value, num_samples), path)
    return value


def _shard() -> dict[str, int]:
    """This process's place among the data-parallel ranks, for :class:`reskd.data.Loader`."""
    return {"rank": distributed.rank(), "world_size": distributed.world_size()}


class MissingRunError(RuntimeError):
    """A run an :class:`Experiment` with ``train_missing=False`` needs is not trained."""


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
    train_missing: bool = True  # False: a run that is not finished raises MissingRunError instead of training
    precision: str | None = None  # overrides the profile's recipes' precision ("fp32", "bf16", "auto")
    plan: bool = False  # True: train nothing; list each run asked for in `planned`, a missing one handed out untrained
    pause_at: float | None = None  # a time.time() at which training pauses at an epoch boundary (reskd.train.fit)
    turn: int | None = None  # epochs a run trains per turn of a round-robin (reskd.cli.run_round_robin); None: all
    results: dict[str, FitResult] = field(default_factory=dict)
    planned: list[dict[str, Any]] = field(default_factory=list)  # with plan=True: runstore.run_status of each run
    plan_notes: list[str] = field(default_factory=list)  # with plan=True: what the plan could not know
    specs: dict[str, dict[str, Any]] = field(default_factory=dict)
    _teachers: dict[int, nn.Module] = field(default_factory=dict, repr=False)
    _teacher_logits: dict[str, Tensor] = field(default_factory=dict, repr=False)
    _turns_taken: set[str] = field(default_factory=set, repr=False)  # runs that had their turn in this round

    def __post_init__(self):
        self.device = resolve_device(self.device)
        if self.precision is not None:  # every recipe of the profile in that precision (a part of each run's key)
            p = self.profile
            self.profile = p.replace(teacher_train=dataclasses.replace(p.teacher_train, precision=self.precision),
                                     student_train=dataclasses.replace(p.student_train, precision=self.precision))

    @property
    def plan_has_untrained(self) -> bool:
        """Whether this is a plan and a run it listed so far is not trained (a stand-in), so nothing built on it can
        be evaluated yet."""
        return self.plan and any(row["state"] != "finished" for row in self.planned if row["role"] != "teacher-cache")

    @property
    def inference_precision(self) -> str:
        """The precision frozen models are evaluated and cached in: that of the profile's student recipe."""
        return self.profile.student_train.precision

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

    def train_loader(self, config: TrainConfig, *, sharded: bool = True) -> rdata.Loader:
        """The training batches of ``config``; data-parallel, this rank's slice of each (unless ``sharded=False``)."""
        shard = _shard() if sharded else {}
        return rdata.Loader(self.data.train, self.data.spec, config.batch_size, train=True, seed=config.data_seed,
                            device=self.device, **shard)

    def eval_loader(self, split: str, *, sharded: bool = True) -> rdata.Loader:
        """Un-augmented batches of ``split``: "train", "val", "test", or "train-sample" (a fixed random
        :data:`TRAIN_SAMPLE_SIZE`-image subset of the training split, for statistics on training data). Data-parallel,
        each rank gets its share of the batches (``reskd.train.predict`` gathers them) unless ``sharded=False``."""
        splits = {"train": self.data.train, "val": self.data.val, "test": self.data.test}
        shard = _shard() if sharded else {}
        if split == TRAIN_SAMPLE:
            return rdata.Loader(self.train_sample, self.data.spec, EVAL_BATCH_SIZE, train=False, device=self.device,
                                **shard)
        if split not in splits:
            raise ValueError(f"unknown split {split!r}; choose one of {', '.join([*splits, TRAIN_SAMPLE])}.")
        return rdata.Loader(splits[split], self.data.spec, EVAL_BATCH_SIZE, train=False, device=self.device,
                            **shard)

    @cached_property
    def train_sample(self) -> rdata.ImageTensors:
        n = len(self.data.train)
        if n <= TRAIN_SAMPLE_SIZE:
            return self.data.train
        generator = torch.Generator().manual_seed(self.profile.split_seed)
        return self.data.train.subset(torch.randperm(n, generator=generator)[:TRAIN_SAMPLE_SIZE].sort().values)

    @property
    def output_cache(self) -> Path:
        """Where frozen models' outputs on each training view are cached."""
        return rdata.cache_dir() / "outputs"

    def build(self, arch: Arch, seed: int) -> nn.Module:
        seed_everything(seed)
        return create_model(arch.name, self.num_classes, width=arch.width, **arch.options)

    def spec(self, role: str, arch: Arch, seed: int, config: TrainConfig, **extra: Any) -> dict[str, Any]:
        """A run's identity; a data-parallel run's also records its processes and batches (a one-process run's does
        not, so its key is what it always was)."""
        processes = distributed.run_identity(config.batch_size)
        return {"dataset": self.profile.dataset, "data": self.data.train.fingerprint, "role": role,
                "arch": arch.name, "width": arch.width, **arch.options, "seed": seed, "train": config.to_dict(), **extra,
                **({"distributed": processes} if processes else {})}

    def run(self, name: str, distiller: Distiller, spec: dict[str, Any], config: TrainConfig, *,
            fork_from: Path | None = None, release_fork: bool = False) -> FitResult:
        """Train (or load, or resume) one run described by ``spec``; a run this experiment already has is handed out
        again, not loaded (nor, with ``retrain``, trained) a second time. ``fork_from``: the ``stable.pt`` of a
        shorter run of the same wsd recipe to start from, deleted once this run has its own with ``release_fork``
        (:func:`reskd.train.fit`)."""
        if self.specs.get(name) == spec:
            return self.results[name]
        folder = run_path(spec, name, root=self.artifacts)
        if self.plan:
            self.planned.append({"role": spec["role"], **run_status(folder, spec)})
            if self.retrain or not is_finished(folder):  # a stand-in, so that the runs built on it can be listed
                self.results[name], self.specs[name] = FitResult(distiller.student.cpu(), pd.DataFrame()), spec
                return self.results[name]
        if is_retired(folder) and not self.retrain:
            reason = json.loads((folder / RETIRED).read_text()).get("reason", "")
            raise RetiredRunError(f"the run {folder.name} was retired: its weights were dropped ({reason}); only its "
                                  "history and summary remain. retrain=True trains it again.")
        if not self.train_missing and (self.retrain or not is_finished(folder)):
            raise MissingRunError(
                f"the run {folder.name} is not trained (and train_missing=False). Train it in the background with "
                f"`python -m reskd.cli {self.profile.dataset} {self.profile.name} <jobs>` (see the README), "
                f"or pass train_missing=True to train it here.")
        if self.turn is not None and name in self._turns_taken and not is_finished(folder):
            raise TurnOver(f"{name} had its turn in this round; it trains again in the next one.")
        folder = run_dir(spec, name, root=self.artifacts)
        (folder / RETIRED).unlink(missing_ok=True)  # trained again: no longer retired
        self._turns_taken.add(name)
        result = fit(distiller, self.train_loader(config), config,
                     eval_loaders={"val": self.eval_loader("val"), "test": self.eval_loader("test")},
                     run_dir=folder, device=self.device, progress=self.progress, retrain=self.retrain,
                     run_info=spec, fork_from=fork_from, release_fork=release_fork, pause_at=self.pause_at,
                     turn=self.turn)
        self.results[name], self.specs[name] = result, spec
        return result

    def new_round(self) -> None:
        """Start a new round of a round-robin (:attr:`turn`): every unfinished run may train one more turn."""
        self._turns_taken.clear()

    def training_table(self) -> pd.DataFrame:
        """One row per run this experiment trained or loaded: its role, architecture, seed, epochs, the validation
        and test top-1 of the last epoch beside the best epoch's (the best is the max over epochs: optimistic), and
        ``train_hours``, the wall-clock time its epochs took (training plus the per-epoch evaluation, as measured
        where it ran, on whatever else shared the machine)."""
        rows = []
        for name, result in self.results.items():
            spec, final, best = self.specs[name], result.summary.get("final", {}), result.summary.get("best", {})
            seconds = result.history["epoch_s"].sum() if "epoch_s" in result.history else float("nan")
            rows.append({"run": name, "role": spec["role"], "arch": Arch(spec["arch"], spec["width"],
                                                                          spec.get("stem")).label,
                         "loss": spec.get("loss"), "seed": spec["seed"], "epochs": spec["train"]["epochs"],
                         "val_top1": final.get("val_top1"), "test_top1": final.get("test_top1"),
                         "best_test_top1": best.get("test", {}).get("top1"),
                         "best_test_epoch": best.get("test", {}).get("epoch"), "train_hours": seconds / 3600})
        return pd.DataFrame(rows)

    def warm_teacher_cache(self, epochs: Sequence[int] | None = None) -> int:
        """Compute the teacher's outputs on the students' training views ahead of the students (each epoch of the
        student recipe is one view) and store them in the output cache that every KD student and res-student reads.

        Views already cached are skipped, and a view another process is computing right now is left to it, so two
        workers calling this split the views between them. By default the views go last to first: a student trained
        beside this call fills its views on the fly from the first, so the two meet once instead of racing for the
        same views. Returns the number of views computed by this call (with
        ``plan``: none; one row in :attr:`planned` says how many views are stored, each view counted as an epoch)."""
        p = self.profile
        loader = self.train_loader(p.student_train, sharded=False)  # data-parallel, the ranks split the views
        cache = OutputCache(self.teacher(), self.output_cache, name=TEACHER_CACHE_NAME,
                            precision=p.student_train.precision)
        views = list(reversed(range(p.student_train.epochs)) if epochs is None else epochs)
        if self.plan:
            keys = [loader.view_key(epoch) for epoch in views]
            stored = sum(cache.is_stored(key, len(loader.data)) for key in keys)
            state = ("finished" if stored == len(views) else "training now" if any(map(cache.view_busy, keys))
                     else "interrupted" if stored else "not started")
            self.planned.append({"role": "teacher-cache", "dataset": p.dataset, "run": "teacher outputs (views)",
                                 "state": state, "epochs_done": stored, "epochs": len(views), "val_top1": None,
                                 "hours": 0.0})
            return 0
        cache.model.to(self.device)
        computed = 0
        for epoch in views:
            key, num_samples = loader.view_key(epoch), len(loader.data)
            try:
                with cache.view_lock(key, wait=False):
                    if cache.is_stored(key, num_samples):
                        continue
                    loader.set_epoch(epoch)
                    for x, _, index in progress(loader, desc=f"teacher outputs, view {epoch + 1}", leave=False,
                                                enabled=self.progress):
                        cache(x.to(self.device), index, key, num_samples)
                    cache.flush()
                    computed += 1
            except RunLockedError:
                continue
        return computed

    def teacher_spec(self, seed: int = 0) -> dict[str, Any]:
        p = self.profile
        return self.spec("teacher", p.teacher, seed, p.teacher_train, loss="ce")

    def teacher_name(self, seed: int = 0) -> str:
        """The name of the teacher run of ``seed`` (its folder name, before the key)."""
        return f"teacher-{self.profile.teacher.label}-s{seed}"

    def teacher_path(self, seed: int = 0) -> Path:
        """The teacher's run folder under this experiment's artifacts root (nothing is created)."""
        return run_path(self.teacher_spec(seed), self.teacher_name(seed), root=self.artifacts)

    def teacher(self, seed: int = 0) -> nn.Module:
        """The trained teacher (cross-entropy from scratch), loaded or trained once per experiment."""
        if seed not in self._teachers:
            p = self.profile
            self._teachers[seed] = self.run(self.teacher_name(seed), CE(self.build(p.teacher, seed)),
                                            self.teacher_spec(seed), p.teacher_train).model
        return self._teachers[seed]

    def length_ladder(self, role: str, lengths: Sequence[int] | None = None, seed: int = 0) -> dict[int, FitResult]:
        """``role`` ("teacher", or "kd" for the KD student S0) trained for each of ``lengths`` epochs (default: the
        profile's ``teacher_lengths`` / ``student_lengths``), shortest first; each run forks from the stable phase of
        the longest finished run before it (:func:`reskd.train.fit`), so the ladder costs its longest rung plus the
        decays of the others. A rung's ``stable.pt`` is removed once the next rung has written its own (so the
        committed training state holds one snapshot at a time); the longest rung's stays, for a longer rung to come. Returns each length's run."""
        p = self.profile
        lengths = sorted(lengths or (p.teacher_lengths if role == "teacher" else p.student_lengths))
        if not lengths:
            raise ValueError(f"profile {p.name!r} has no {role} length ladder (teacher_lengths / student_lengths).")
        base = p.teacher_train if role == "teacher" else p.student_train
        if base.schedule != "wsd":
            raise ValueError(f"a length ladder needs the wsd schedule, whose runs share their stable phase; the "
                             f"{role} recipe of profile {p.name!r} uses {base.schedule!r}.")
        own = self.teacher_spec(seed) if role == "teacher" else self.student_spec("kd", seed=seed)
        out, source, previous = {}, None, None
        for epochs in lengths:
            config = dataclasses.replace(base, epochs=epochs)
            if role == "teacher":
                spec, name = self.spec("teacher", p.teacher, seed, config, loss="ce"), self.teacher_name(seed)
                distiller: Distiller = CE(self.build(p.teacher, seed))
            elif role == "kd":
                spec = self.spec("kd", p.student, seed, config, loss="kd", temperature=p.temperature,
                                 teacher=run_key(self.teacher_spec()))
                name = f"kd-{p.student.label}-s{seed}"
                distiller = KD(self.build(p.student, seed), self.teacher(), temperature=p.temperature,
                               cache_root=self.output_cache, precision=config.precision)
            else:
                raise ValueError(f"unknown ladder role {role!r}; choose 'teacher' or 'kd'.")
            folder = run_path(spec, name, root=self.artifacts)
            if is_retired(folder) and not self.retrain:  # a rung not chosen: its numbers stay, its weights went
                if self.plan:
                    self.planned.append({"role": spec["role"], **run_status(folder, spec)})
                out[epochs] = retired_result(folder)
                previous = config
                continue
            registered = (self.results.get(name), self.specs.get(name))
            out[epochs] = self.run(name, distiller, spec, config, fork_from=source, release_fork=True)
            if spec != own and not self.plan:  # a rung of another length shares the run's name: it must not stand in
                # for the profile's own run (its recipe's length) in this experiment's results and training table
                if registered[1] is None:
                    del self.results[name], self.specs[name]
                else:
                    self.results[name], self.specs[name] = registered
            if self.plan and previous is not None and self.planned[-1]["state"] == "not started":
                # a rung forks from the one before: its first epochs are that rung's stable phase, not trained again
                self.planned[-1]["epochs_done"] = previous.stable_epochs
                self.plan_notes.append(f"{self.planned[-1]['run']} ({epochs} epochs) will fork from the "
                                       f"{previous.epochs}-epoch rung at epoch {previous.stable_epochs}.")
            previous = config
            snapshot = folder / SNAPSHOT
            if snapshot.exists() and not self.plan:
                if source is not None:  # this rung has its own stable phase: the shorter one's is no longer needed
                    source.unlink(missing_ok=True)
                source = snapshot
        return out

    @cached_property
    def teacher_macs(self) -> int:
        """MACs of one forward pass of the teacher (seed 0) on one image: the unit of every "% of the teacher"."""
        return count_macs(self.teacher(), self.input_size)

    def logits(self, model: nn.Module, split: str) -> tuple[Tensor, Tensor]:
        """``model``'s logits and the labels on an evaluation split, through the evaluation cache: every network a
        chapter compares is predicted once per split, however many tables and ensembles it appears in."""
        loader, precision = self.eval_loader(split), self.inference_precision
        return cached_eval(model, loader, lambda: predict(model, loader, device=self.device, precision=precision),
                           precision)

    def teacher_logits(self, split: str) -> Tensor:
        """The teacher's logits on an evaluation split, computed once (then read from the evaluation cache)."""
        if split not in self._teacher_logits:
            self._teacher_logits[split] = self.logits(self.teacher(), split)[0]
        return self._teacher_logits[split]

    def student_spec(self, kind: str, arch: Arch | None = None, seed: int = 0) -> dict[str, Any]:
        p = self.profile
        arch = arch or p.student
        if kind == "scratch":
            return self.spec("scratch", arch, seed, p.student_train, loss="ce")
        if kind == "kd":
            return self.spec("kd", arch, seed, p.student_train, loss="kd", temperature=p.temperature,
                              teacher=run_key(self.teacher_spec()))
        raise ValueError(f"unknown student kind {kind!r}; choose 'scratch' or 'kd'.")

    def student(self, kind: str = "kd", arch: Arch | None = None, seed: int = 0) -> nn.Module:
        """A student trained from scratch (``kind="scratch"``) or with Hinton KD from the teacher (``"kd"``)."""
        p = self.profile
        arch = arch or p.student
        spec = self.student_spec(kind, arch, seed)
        if kind == "kd":
            distiller: Distiller = KD(self.build(arch, seed), self.teacher(), temperature=p.temperature,
                                      cache_root=self.output_cache, precision=p.student_train.precision)
        else:
            distiller = CE(self.build(arch, seed))
        return self.run(f"{kind}-{arch.label}-s{seed}", distiller, spec, p.student_train).model

    #: What :meth:`regressor` can regress: the teacher's logits, or S0's (the profile's KD student of the same seed).
    REGRESSION_TARGETS = ("teacher", "s0")

    def regressor(self, target: str, arch: Arch, seed: int = 0) -> nn.Module:
        """A network of ``arch`` trained with MSE to regress ``target``'s logits from the image (the theory chapter's
        learnability study). Its recipe is a first res-student's: the student recipe, initial weights drawn with
        seed ``seed + 1000`` and a zeroed last layer, so that it differs from the res-student of the same
        architecture and seed only in what it regresses (the residual ``z_T - z_S0``, for the res-student)."""
        if target not in self.REGRESSION_TARGETS:
            raise ValueError(f"unknown regression target {target!r}; choose one of {self.REGRESSION_TARGETS}.")
        p = self.profile
        source = self.teacher() if target == "teacher" else self.student("kd", seed=seed)
        source_key = run_key(self.teacher_spec() if target == "teacher" else self.student_spec("kd", seed=seed))
        spec = self.spec("regress", arch, seed, p.student_train, loss="mse", target=target, source=source_key)
        model = zero_last_layer(self.build(arch, seed + RES_STUDENT_SEED_STRIDE))
        distiller = Regress(model, source, target_name=TEACHER_CACHE_NAME if target == "teacher" else "student",
                            cache_root=self.output_cache, precision=p.student_train.precision)
        return self.run(f"regress-{target}-{arch.label}-s{seed}", distiller, spec, p.student_train).model


# ----------------------------------------------------------------------------------------------- ResKD
AUTO = "auto"  # a profile's residual_loss: the loss the first-stage ablation picks on validation (reskd.studies)
FEATURE_HEAD = "feature_head"  # Arch(FEATURE_HEAD, w): a FeatureHead with round(64 * w) channels on S0's features
FEATURE_HEAD_BASE_CHANNELS = 64
#: Res-student architectures that read S0's feature maps, by name: the number of conv-BN-ReLU blocks of the head.
FEATURE_HEADS = {FEATURE_HEAD: 1, "feature_head3": 3}


def feature_head(arch: Arch, in_channels: int, num_classes: int) -> FeatureHead:
    """The :class:`FeatureHead` a feature-head architecture names (:data:`FEATURE_HEADS`), on a feature map of
    ``in_channels`` channels: ``round(64 * width)`` channels a block."""
    return FeatureHead(in_channels, num_classes, channels=max(1, round(FEATURE_HEAD_BASE_CHANNELS * arch.width)),
                       blocks=FEATURE_HEADS[arch.name])


def stage_input(arch: Arch) -> str:
    """What a res-student of architecture ``arch`` reads: ``"features"`` for a feature head, else ``"image"``."""
    return "features" if arch.name in FEATURE_HEADS else "image"


class ResKDRuns:
    """ResKD stages and their baselines for one :class:`Experiment` (all through the artifact store).

    ``loss`` and ``input`` default to the profile's. ``loss`` must be a name of :data:`reskd.reskd.RESIDUAL_LOSSES`:
    a profile's ``"auto"`` (the loss the first-stage ablation picks on validation) is resolved first, by
    :func:`reskd.studies.reskd_runs`. ``train`` overrides the res-students' training recipe (default: the profile's
    student recipe). ``student`` replaces S0's architecture (a KD student of the profile's recipe; default the
    profile's), and ``focus`` trains every stage on the least confident fraction of each batch
    (:func:`reskd.reskd.focus_index`).
    """

    def __init__(self, exp: Experiment, *, loss: str | None = None, input: str | None = None,
                 feature_index: int = -1, train: TrainConfig | None = None, student: Arch | None = None,
                 focus: float | None = None):
        self.exp, self.feature_index, self.focus = exp, feature_index, focus
        self.student = student or exp.profile.student
        self.input = input or exp.profile.residual_input
        self.train = train or exp.profile.student_train
        loss = loss or exp.profile.residual_loss
        if loss == AUTO:
            raise ValueError(f"loss={AUTO!r} is chosen by the first-stage ablation on validation; resolve it first "
                             f"with reskd.studies.reskd_runs(exp), or give a loss: one of {', '.join(RESIDUAL_LOSSES)}.")
        self.loss: str = RESIDUAL_LOSSES.check(loss)

    def _res_student(self, arch: Arch, s0: nn.Module, seed: int) -> nn.Module:
        if arch.name not in FEATURE_HEADS:
            return self.exp.build(arch, seed)
        seed_everything(seed)
        return feature_head(arch, s0.feature_channels[self.feature_index], self.exp.num_classes)

    def ensemble(self, res_archs: Sequence[Arch], seed: int = 0) -> ResKDEnsemble:
        """S0 (the KD student of ``seed``) plus res-students ``res_archs``, each trained on the residual of the
        frozen ensemble before it (trained now when missing)."""
        exp, p = self.exp, self.exp.profile
        s0 = exp.student("kd", arch=self.student, seed=seed)
        ens = ResKDEnsemble(s0, feature_index=self.feature_index)
        chain = [run_key(exp.student_spec("kd", self.student, seed=seed))]
        teacher = exp.teacher()
        # options away from the profile's defaults enter the spec (and the name) only when set, so the runs trained
        # before they existed keep their keys
        extra: dict[str, Any] = {} if self.focus is None else {"focus": self.focus}
        tag = "" if self.student == p.student else f"-on{self.student.label}"
        tag += "" if self.focus is None else f"-focus{self.focus:g}"
        for k, arch in enumerate(res_archs, start=1):
            kind = "features" if stage_input(arch) == "features" else self.input
            spec = exp.spec(f"res{k}", arch, seed, self.train, loss=self.loss, input=kind,
                             temperature=p.temperature, teacher=run_key(exp.teacher_spec()), previous=list(chain),
                             feature_index=self.feature_index, **extra)
            res_student = self._res_student(arch, s0, seed + RES_STUDENT_SEED_STRIDE * k)
            distiller = ResidualDistiller(res_student, teacher, ens, loss=self.loss,
                                          input=kind, temperature=p.temperature, cache_root=exp.output_cache,
                                          focus=self.focus, precision=self.train.precision)
            epochs = "" if self.train == p.student_train else f"-e{self.train.epochs}"
            name = f"res{k}-{arch.label}-{self.loss}-{kind}{epochs}{tag}-s{seed}"
            stage = exp.run(name, distiller, spec, self.train).model
            ens = ResKDEnsemble(s0, list(ens.stages)[1:] + [stage], ens.inputs[1:] + [kind],
                                feature_index=self.feature_index)
            chain.append(run_key(spec))
        return ens.eval()

    def staged(self, ens: ResKDEnsemble, split: str, *, joint: bool = False) -> StagedOutputs:
        """Cumulative stage logits on ``split`` with the teacher's logits (for agreement and residual energy).
        ``joint=True`` always takes them from the ensemble's own forward pass (:func:`reskd.adaptive.collect`), never
        from sums of the stages' separate predictions: what a check against :meth:`stage_outputs` needs."""
        if not joint and all(kind == "image" for kind in ens.inputs[1:]):
            # stages that read the image are predicted one network at a time, so S0 (the KD student, shared by every
            # ablation option and the plain ensemble) and each res-student run once per split; same sums as collect()
            outs = [self.exp.logits(stage, split) for stage in ens.stages]
            staged = StagedOutputs(torch.stack(cumulative_sums([z for z, _ in outs])), outs[0][1],
                                   ens.stage_macs(self.exp.input_size))
        else:
            loader = self.exp.eval_loader(split, sharded=False)  # collect() reads every batch on every rank
            staged = cached_eval(ens, loader, lambda: collect(ens, loader, device=self.exp.device,
                                                              precision=self.exp.inference_precision),
                                 self.exp.inference_precision)
        staged.teacher_logits = self.exp.teacher_logits(split)
        return staged

    def stage_outputs(self, ens: ResKDEnsemble, split: str) -> Tensor:
        """Each stage's own logits on ``split``, ``(stages, samples, classes)``: every stage's network predicted alone
        (:meth:`reskd.reskd.ResKDEnsemble.stage_model`; a feature-input stage reads S0's feature map computed for
        it), not through the ensemble, so that statement 1 (:func:`reskd.theory.stage_theory_records`) compares the
        ensemble's residuals with what each stage outputs."""
        return torch.stack([self.exp.logits(ens.stage_model(k), split)[0] for k in range(ens.num_stages)])


if __name__ == "__main__":  # the job CLI's old address: python -m reskd.experiment ... (see reskd.cli)
    from reskd.cli import main

    main()
