"""One training loop for teachers, students and res-students.

``fit`` trains a :class:`reskd.distill.Distiller` with SGD (momentum, optional Nesterov, weight decay) under a cosine,
multi-step or one-cycle schedule stepped every batch, shows tqdm progress per epoch and batch, evaluates after every
epoch, and writes to ``run_dir``:

* ``checkpoint.pt`` every epoch, atomically: student, optimiser, scheduler and RNG state, and the history so far.
  Re-running ``fit`` with the same ``run_dir`` resumes from it; because the data stream is a pure function of
  (data seed, epoch), a resumed run ends with bit-for-bit the weights of an uninterrupted one.
* ``history.csv``: one row of metrics per epoch.
* ``summary.json`` and then ``model.pt`` when training is complete (the checkpoint is then removed); a later call
  loads them instead of training again. ``model.pt`` is written last, so a run is finished when it is there: a kill
  at any point leaves a run that loads, or one that resumes from its checkpoint. Temporary files a kill left behind
  are removed when the run next starts.

The checkpoint and the summary record the student's architecture (class and parameter count); weights whose tensor
names or shapes differ from the student's are an error that names the architectures before any weight is loaded.
"""
from __future__ import annotations

import collections
import contextlib
import copy
import dataclasses
import json
import os
import pickle
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import distributed
from .distill import Distiller, View
from .metrics import top1  # noqa: F401 (re-exported: reskd.train.top1)
from .precision import autocast, resolve_precision
from .registry import Registry
from .runstore import (CHECKPOINT, FINAL_MODEL, HISTORY, SNAPSHOT, SUMMARY, folder_lock, is_finished,  # noqa: F401
                       remove_temporary_files, unpack_state)
from .utils import (MIN_CHANNELS_LAST_CHANNELS, atomic_json_dump, atomic_torch_save, atomic_write,  # noqa: F401
                    machine_info, memory_format_for, model_memory_format, model_num_classes, resolve_device, rng_state,
                    set_rng_state)
from .utils import progress as progress_bar

Schedule = Callable[..., Any]
#: Learning-rate schedules by name, each ``schedule(optimizer, config, total_steps)`` -> a scheduler stepped per batch.
SCHEDULES: Registry[Schedule] = Registry("schedule")


class CheckpointError(RuntimeError):
    """A checkpoint or trained artifact that cannot be read or does not belong to this run."""


class TrainingPaused(Exception):
    """Training stopped at an epoch boundary because the next epoch would end after ``fit``'s ``pause_at``; the
    run's checkpoint holds every epoch done, and running it again resumes it."""


class TurnOver(TrainingPaused):
    """Training stopped at an epoch boundary because this call trained the ``turn`` epochs ``fit`` was given (a turn
    of a round-robin over several runs, :func:`reskd.cli.run_round_robin`); running it again resumes it."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run besides the model, the data and the loss (torchdistill-style)."""

    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    milestones: tuple[float, ...] = (0.5, 0.75)  # multistep: fractions of the run where the lr drops
    gamma: float = 0.1  # multistep: the factor of each drop
    onecycle_pct_start: float = 0.25  # onecycle: share of the run spent warming up
    warmup_epochs: int = 0  # wsd: epochs of linear warm-up from lr / steps to lr
    decay_fraction: float = 0.2  # wsd: the last share of the run, where lr decays linearly to 0
    data_seed: int = 0  # the augmentation stream and batch order; shared across weight seeds so caches are reused
    channels_last: bool = True
    precision: str = "fp32"  # "fp32", "bf16" (autocast), or "auto": bf16 where this machine runs it fast (resolved here)

    def __post_init__(self):
        SCHEDULES.check(self.schedule)
        # "auto" is resolved now, so a config (and the key of a run trained with it) names the precision that ran
        object.__setattr__(self, "precision", resolve_precision(self.precision, resolve_device("auto")))
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs} and {self.batch_size}.")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}.")
        if any(not 0 < m < 1 for m in self.milestones):
            raise ValueError(f"milestones are fractions of the run in (0, 1), got {self.milestones}.")
        if not 0 < self.decay_fraction <= 1 or self.warmup_epochs < 0:
            raise ValueError(f"decay_fraction must be in (0, 1] and warmup_epochs >= 0, got {self.decay_fraction} "
                             f"and {self.warmup_epochs}.")
        if self.schedule == "wsd" and self.warmup_epochs > self.stable_epochs:
            raise ValueError(f"the warm-up ({self.warmup_epochs} epochs) runs past the stable phase, which ends after "
                             f"epoch {self.stable_epochs} of {self.epochs}; shorten it or lengthen the run.")

    @property
    def stable_epochs(self) -> int:
        """wsd: the epochs before the decay (warm-up included). Two wsd runs that differ only in ``epochs`` follow the
        same trajectory up to the shorter one's ``stable_epochs``, so a longer run can start from there
        (``fit(..., fork_from=...)``). Other schedules: all epochs (no stable phase is shared)."""
        if self.schedule != "wsd":
            return self.epochs
        return self.epochs - max(1, round(self.decay_fraction * self.epochs))

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON; the options added after runs were first trained (:data:`LATER_OPTIONS`) only when
        they differ from their defaults, so those runs keep their keys."""
        d = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}
        for name, default in LATER_OPTIONS.items():
            if d[name] == default:
                del d[name]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        d = dict(d)
        if "milestones" in d:
            d["milestones"] = tuple(d["milestones"])
        return cls(**d)


#: Options of :class:`TrainConfig` that a run's key names only when they differ from these defaults.
LATER_OPTIONS: dict[str, Any] = {"precision": "fp32", "warmup_epochs": 0, "decay_fraction": 0.2}


def make_optimizer(params, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD with the config's momentum, Nesterov flag and weight decay."""
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov,
                           weight_decay=config.weight_decay)


@SCHEDULES.register("cosine", "cosine annealing from lr to 0 over the run")
def _cosine(optimizer: torch.optim.Optimizer, config: TrainConfig, total: int):
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)


@SCHEDULES.register("multistep", "lr times gamma at each milestone (fractions of the run)")
def _multistep(optimizer: torch.optim.Optimizer, config: TrainConfig, total: int):
    milestones = [round(m * total) for m in config.milestones]
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=config.gamma)


@SCHEDULES.register("onecycle", "one cycle: warm up to lr over onecycle_pct_start of the run, then anneal")
def _onecycle(optimizer: torch.optim.Optimizer, config: TrainConfig, total: int):
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total,
                                               pct_start=config.onecycle_pct_start)


@SCHEDULES.register("constant", "lr throughout")
def _constant(optimizer: torch.optim.Optimizer, config: TrainConfig, total: int):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


@SCHEDULES.register("wsd", "warm-up, stable, decay: linear warm-up over warmup_epochs, lr until stable_epochs, then "
                          "linear decay to 0 over the last decay_fraction of the run (Hagele et al., 2024)")
def _wsd(optimizer: torch.optim.Optimizer, config: TrainConfig, total: int):
    steps_per_epoch = total // config.epochs
    warmup, decay_start = config.warmup_epochs * steps_per_epoch, config.stable_epochs * steps_per_epoch

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if step < decay_start:
            return 1.0
        return max(0.0, (total - step) / (total - decay_start))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int):
    """A learning-rate schedule stepped once per batch (``config.schedule``, a name of :data:`SCHEDULES`)."""
    return SCHEDULES[config.schedule](optimizer, config, config.epochs * steps_per_epoch)


def _loader_view(loader, epoch: int | None) -> View:
    return View(loader.view_key(epoch), len(loader.data))


@torch.no_grad()
def predict(model: nn.Module, loader, *, device: str | torch.device | None = "auto",
            progress: bool = False, desc: str = "predict",
            memory_format: torch.memory_format | None = None, precision: str = "fp32") -> tuple[Tensor, Tensor]:
    """Logits of ``model`` on every sample of an evaluation ``loader``, in sample order, with the labels (CPU).

    Inputs are laid out in ``memory_format`` (default: that of the model's first convolution). Forward passes run
    under :func:`torch.inference_mode` (faster than ``no_grad`` alone) in ``precision`` (logits returned in fp32);
    the returned tensors are ordinary ones, so they can serve as targets of a loss that is back-propagated."""
    device = resolve_device(device)
    was_training = model.training
    model.eval().to(device)
    n = len(loader.data)
    logits: Tensor | None = None
    labels = torch.zeros(n, dtype=torch.long)
    memory_format = model_memory_format(model) if memory_format is None else memory_format
    for x, y, index in progress_bar(loader, desc=desc, leave=False, enabled=progress):
        with torch.inference_mode(), autocast(precision, device, force=True):
            out = model(x.to(device).contiguous(memory_format=memory_format)).float().cpu()
        if logits is None:
            logits = torch.zeros(n, out.shape[1])
        logits[index] = out
        labels[index] = y.cpu()
    model.train(was_training)
    if getattr(loader, "world_size", 1) > 1:  # each rank predicted its share of the batches: gather them
        logits, labels = _gather_predictions(logits, labels)
    if logits is None:
        raise ValueError("the loader yielded no batches: the evaluation split is empty.")
    return logits, labels


def _gather_predictions(logits: Tensor | None, labels: Tensor) -> tuple[Tensor | None, Tensor]:
    """Every rank's rows of a sharded evaluation, on every rank: each row was filled by exactly one rank and is
    zero elsewhere, so the sum over the ranks is the whole evaluation (exactly)."""
    classes = int(distributed.all_reduce_tensor(torch.tensor(0 if logits is None else logits.shape[1]), "max"))
    if classes == 0:
        return None, labels
    if logits is None:  # this rank had no batch
        logits = torch.zeros(len(labels), classes)
        labels.zero_()
    return distributed.all_reduce_tensor(logits), distributed.all_reduce_tensor(labels)


def evaluate(model: nn.Module, loader, *, device: str | torch.device | None = "auto",
             precision: str = "fp32") -> dict[str, float]:
    """Top-1 (%) and mean cross-entropy of ``model`` on ``loader``."""
    return _metrics(*predict(model, loader, device=device, precision=precision))


def _metrics(logits: Tensor, labels: Tensor) -> dict[str, float]:
    return {"top1": top1(logits, labels), "loss": F.cross_entropy(logits, labels).item()}


def evaluate_distiller(distiller: Distiller, loader, *, device: str | torch.device | None = "auto",
                       frozen_logits: dict[Any, tuple[Tensor, Tensor]] | None = None,
                       precision: str = "fp32") -> dict[str, float]:
    """Top-1 (%) and mean cross-entropy of ``distiller.eval_model()`` on ``loader``.

    When the distiller has a frozen addend (a res-student's earlier stages), its logits are predicted once per loader
    and kept in ``frozen_logits``, keyed by the loader object itself (the memo keeps it alive, so no other loader can
    take its key). Later epochs then run only the student: the same numbers as evaluating the whole model, at the
    student's cost."""
    model, addend = distiller.eval_model(), distiller.frozen_addend()
    if addend is None:
        return evaluate(model, loader, device=device, precision=precision)
    memory_format = model_memory_format(model)  # the layout the whole model would see
    memo = {} if frozen_logits is None else frozen_logits
    if loader not in memo:
        memo[loader] = predict(addend, loader, device=device, memory_format=memory_format, precision=precision)
    fixed, labels = memo[loader]
    logits, _ = predict(distiller.student, loader, device=device, memory_format=memory_format, precision=precision)
    return _metrics(fixed + logits, labels)


@dataclass
class FitResult:
    """What :func:`fit` returns: the trained student (on CPU; None for a retired run, whose weights were dropped),
    its per-epoch history and final metrics."""

    model: nn.Module | None
    history: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)


def architecture(model: nn.Module) -> dict[str, Any]:
    """What a run records of its student's architecture (beside its identity, so that older runs still load)."""
    return {"class": type(model).__name__, "parameters": sum(p.numel() for p in model.parameters())}


def _describe(arch: Mapping[str, Any]) -> str:
    return f"{arch.get('class')} with {arch.get('parameters', 0):,} parameters"


def _check_architecture(path: Path, state: Mapping[str, Tensor], model: nn.Module,
                        recorded: Mapping[str, Any] | None) -> None:
    """That ``state`` (from ``path``) has exactly ``model``'s tensor names and shapes; else say what differs."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if not (missing or extra or shapes):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} of the model's tensors are not in the file (e.g. {missing[0]})")
    if extra:
        parts.append(f"{len(extra)} tensors of the file are not in the model (e.g. {extra[0]})")
    if shapes:
        k = shapes[0]
        parts.append(f"{len(shapes)} differ in shape (e.g. {k}: {tuple(state[k].shape)} in the file, "
                     f"{tuple(own[k].shape)} in the model)")
    trained = f"it was trained as {_describe(recorded)}, " if recorded else ""
    raise CheckpointError(
        f"{path} holds the weights of another architecture: {trained}the model given is "
        f"{_describe(architecture(model))}; {'; '.join(parts)}. Build the model this run was trained with, or use "
        f"another run_dir (retrain=True would discard this run).")


#: The only non-tensor class a checkpoint may hold besides plain types: MultiStepLR's milestones.
CHECKPOINT_SAFE_GLOBALS = [collections.Counter]


def _load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint read with ``weights_only=True``: tensors and plain types only, so a checkpoint from elsewhere
    cannot run code. One written before RNG states were stored as tensors (it pickles a NumPy array) is refused with
    what to do."""
    try:
        with torch.serialization.safe_globals(CHECKPOINT_SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # a global that weights_only refuses: an old format, or a foreign pickle
        raise CheckpointError(
            f"{path} is not a plain-tensor checkpoint (it pickles {_refused_global(e)}), so it is not loaded: "
            f"unpickling it could run any code it holds. Delete it to retrain this run from scratch (or pass "
            f"retrain=True); if it is a checkpoint of an older reskd that you trust, convert it once with "
            f"reskd.train.convert_checkpoint(path)."
        ) from e
    except Exception as e:  # truncated, corrupt or not a checkpoint at all
        raise CheckpointError(
            f"cannot read {path}: it is truncated or corrupt ({type(e).__name__}: {e}). Delete it to restart this "
            f"run from scratch (or pass retrain=True)."
        ) from e


def _refused_global(error: Exception) -> str:
    words = str(error).split("GLOBAL ")
    return words[1].split()[0] if len(words) > 1 else "objects other than tensors and plain types"


def convert_checkpoint(path: str | os.PathLike) -> Path:
    """Rewrite a checkpoint of an older reskd (its NumPy RNG state pickled as an array) in the plain-tensor format
    that :func:`fit` loads. This unpickles the file freely: call it only on a file you trust."""
    path = Path(path)
    ckpt = torch.load(path, map_location="cpu", weights_only=False)  # trusted by the caller, as documented
    numpy_state = ckpt["rng"]["numpy"]
    kind, keys, pos, has_gauss, cached = numpy_state
    ckpt["rng"]["numpy"] = [str(kind), torch.from_numpy(np.asarray(keys).astype(np.int64)), int(pos),
                            int(has_gauss), float(cached)]
    return atomic_torch_save(ckpt, path)


def _lay_out_for_cpu(student: nn.Module, config: TrainConfig) -> None:
    """Put ``student`` on the CPU in the memory format a CPU runs it fastest in (``channels_last`` unless the config
    turns it off or the model is too narrow for it): the CIFAR ResNets predict 1.4-1.6x faster this way than in the
    contiguous format (``benchmarks/bench_layout.py``). A trained run and the same run loaded later are laid out
    alike (:func:`fit` lays out a student it loads the same way), so they agree bit for bit."""
    student.to("cpu", memory_format=memory_format_for(student, torch.device("cpu"), config.channels_last))


#: History columns that time an epoch where it ran (wall-clock; the wait for another process's outputs): they differ
#: between runs that are otherwise bit for bit the same.
TIMING_COLUMNS = ("epoch_s", "view_wait_s")


def fit(distiller: Distiller, train_loader, config: TrainConfig, *, eval_loaders: Mapping[str, Any] | None = None,
        run_dir: str | os.PathLike | None = None, device: str | torch.device | None = "auto",
        progress: bool = True, retrain: bool = False, run_info: Mapping[str, Any] | None = None,
        fork_from: str | os.PathLike | None = None, release_fork: bool = False,
        pause_at: float | None = None, turn: int | None = None) -> FitResult:
    """Train ``distiller.student`` on ``train_loader`` (a ``reskd.data.Loader``) for ``config.epochs`` epochs.

    ``eval_loaders`` (e.g. ``{"val": ..., "test": ...}``) are evaluated after every epoch; their top-1 goes to the
    history as ``<name>_top1``; ``epoch_s`` is an epoch's wall-clock (training and evaluation), ``view_wait_s`` the
    part of it spent waiting for another process to compute the frozen models' outputs on the epoch's view (see
    :meth:`reskd.distill.Distiller.claim_view`). With a ``run_dir`` the run is checkpointed every epoch and resumed
    when re-run; ``retrain=True`` discards what is there. ``run_info`` (JSON) is stored with the run and must match on
    resume. A process that finds the run being trained by another one waits for it and then loads the result.

    A ``wsd`` run also keeps its checkpoint at the end of its stable phase (``stable.pt``). ``fork_from`` (such a
    file, of a run that differs from this one only in its number of epochs, at an epoch no later than this run's
    stable phase ends) starts a run that has no checkpoint of its own from there instead of from scratch: up to that
    epoch the two runs follow the same trajectory, so the result is that of training from scratch (bit for bit on
    the same machine and thread count) for the epochs that remain. The summary records the fork. With
    ``release_fork``, the ``fork_from`` file is deleted once this run has a ``stable.pt`` of its own (it resumes from
    its own checkpoints, and a longer run forks from its snapshot): a length ladder keeps one snapshot at a time.

    ``pause_at`` (a ``time.time()``; needs a ``run_dir``) ends a session's share of a long run cleanly: after each
    epoch's checkpoint, when another epoch (as long as the median epoch so far) would end after it, training stops
    with :class:`TrainingPaused`, losing no work; running it again resumes. ``turn`` (epochs, >= 1) stops this
    call the same way, with :class:`TurnOver`, once it has trained that many epochs (the last one ends the run).
    """
    device = resolve_device(device)
    eval_loaders = dict(eval_loaders or {})
    run_dir = Path(run_dir) if run_dir is not None else None
    if pause_at is not None and run_dir is None:
        raise ValueError("pause_at needs a run_dir: a paused run resumes from its checkpoint, which only a run "
                         "folder keeps.")
    if turn is not None and (run_dir is None or isinstance(turn, bool) or not isinstance(turn, int) or turn < 1):
        raise ValueError(f"turn must be a number of epochs >= 1 with a run_dir (a run resumes from its checkpoint, "
                         f"which only a run folder keeps), got turn={turn!r}, run_dir={run_dir}.")
    if getattr(train_loader, "world_size", 1) != distributed.world_size():
        raise ValueError(f"the training loader is split over {getattr(train_loader, 'world_size', 1)} process(es) but "
                         f"{distributed.world_size()} are training; build it with reskd.data.Loader(..., "
                         f"rank=reskd.distributed.rank(), world_size=reskd.distributed.world_size()).")
    _check_num_classes(distiller.student, train_loader)
    processes = distributed.run_identity(train_loader.batch_size)  # {} for one process: its identity is unchanged
    identity = json.loads(json.dumps({"config": config.to_dict(), "run_info": dict(run_info or {}),
                                      "batch_size": train_loader.batch_size,
                                      **({"distributed": processes} if processes else {})}, default=str))
    main = distributed.is_main()  # only rank 0 locks the run folder and writes its files
    student = distiller.student
    _lay_out_for_cpu(student, config)  # a loaded run comes back laid out as a trained one (training re-lays it out)

    if run_dir is not None and not retrain and is_finished(run_dir) and not (run_dir / CHECKPOINT).exists():
        return load_run(run_dir, student, identity)  # finished: loading needs no lock
    with contextlib.ExitStack() as stack:
        if run_dir is not None and main:  # one job per run: a second one waits, then loads what the first trained
            stack.enter_context(folder_lock(run_dir))
            remove_temporary_files(run_dir)
        if run_dir is not None and retrain and main:
            for name in (FINAL_MODEL, CHECKPOINT, SUMMARY, HISTORY):  # the finished marker first
                (run_dir / name).unlink(missing_ok=True)
        distributed.barrier()  # the other ranks look at the folder once rank 0 holds it
        if run_dir is not None and is_finished(run_dir):
            result = load_run(run_dir, student, identity)
            distributed.barrier()
            if main:
                (run_dir / CHECKPOINT).unlink(missing_ok=True)  # left by a kill just before its removal
            return result

        memory_format = memory_format_for(student, device, config.channels_last)
        distiller.to(device)
        student.to(memory_format=memory_format)
        optimizer = make_optimizer(distiller.trainable_parameters(), config)
        scheduler = make_scheduler(optimizer, config, len(train_loader))
        history, start_epoch, forked = _resume(run_dir, student, optimizer, scheduler, identity, config,
                                               None if fork_from is None else Path(fork_from))  # on every rank
        release = release_fork and fork_from is not None and run_dir is not None and main

        def release_spent_fork() -> None:  # this run's own stable phase is on disk: the file it forked from is spent
            if release and (run_dir / SNAPSHOT).exists():
                Path(fork_from).unlink(missing_ok=True)

        release_spent_fork()  # a run resumed past its stable phase
        if start_epoch < config.epochs:  # resumed or forked: its epochs so far tell whether another one fits
            _pause_if_late(pause_at, history, config)
        wrapped = distributed.wrap_student(student, device)  # DDP for several ranks: only the student
        frozen_logits: dict[Any, tuple[Tensor, Tensor]] = {}  # a frozen addend's evaluation logits, per loader

        epochs = progress_bar(range(start_epoch, config.epochs), desc="epochs", initial=start_epoch, total=config.epochs,
                              enabled=progress and main, leave=True)
        for epoch in epochs:
            t0 = time.perf_counter()
            with distributed.student_swapped(distiller, wrapped):
                row = _train_epoch(distiller, train_loader, optimizer, scheduler, epoch, device=device,
                                   memory_format=memory_format, progress=progress and main,
                                   precision=config.precision)
            distributed.average_buffers(student)  # the ranks' BatchNorm statistics agree before evaluation
            row.update(_evaluate(distiller, eval_loaders, device=device, frozen_logits=frozen_logits,
                                 precision=config.precision))
            row["epoch_s"] = time.perf_counter() - t0
            history.append(row)
            epochs.set_postfix({k: f"{v:.2f}" for k, v in row.items() if k.endswith("_top1")}, refresh=False)
            if run_dir is not None and main:
                snapshot = config.schedule == "wsd" and epoch + 1 == config.stable_epochs < config.epochs
                _write_checkpoint(run_dir, student, optimizer, scheduler, epoch, history, identity, forked,
                                  snapshot=snapshot)
                release_spent_fork()
            distributed.barrier()
            if epoch + 1 < config.epochs:
                if turn is not None and epoch + 1 - start_epoch >= turn:
                    raise TurnOver(f"paused after epoch {epoch + 1} of {config.epochs}: this turn's {turn} "
                                   f"epoch{'' if turn == 1 else 's'} are trained; run it again to resume.")
                _pause_if_late(pause_at, history, config)
        result = _finish(student, config, history, eval_loaders, identity, run_dir if main else None,
                         machine={**machine_info(device), "train_samples": len(train_loader.data)}, forked=forked)
        distributed.barrier()
        return result


def _check_num_classes(student: nn.Module, train_loader) -> None:
    """That the student predicts as many classes as the training data has (where both can be told)."""
    spec = getattr(train_loader, "spec", None)
    expected = getattr(spec, "num_classes", None)
    predicted = model_num_classes(student)
    if expected is None or predicted is None or predicted == expected:
        return
    name = getattr(spec, "display_name", None) or getattr(spec, "name", "the training data")
    raise ValueError(f"the student predicts {predicted} classes but {name} has {expected}: build it with "
                     f"num_classes={expected} (e.g. create_model(name, num_classes={expected})).")


def _resume(run_dir: Path | None, student: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
            identity: dict[str, Any], config: TrainConfig,
            fork_from: Path | None = None) -> tuple[list[dict[str, Any]], int, dict[str, Any] | None]:
    """The history so far, the epoch to start at and the fork this run started from (or None): from ``run_dir``'s
    checkpoint (after checking that it is this run's, with this student's architecture, and restoring the student,
    optimiser, scheduler and RNG state), else from ``fork_from`` (checked to share this run's trajectory), else an
    empty history and epoch 0."""
    if run_dir is not None and (run_dir / CHECKPOINT).exists():
        path = run_dir / CHECKPOINT
        ckpt = _load_checkpoint(path)
        _check_identity(path, ckpt.get("identity"), identity)
    elif fork_from is not None:
        path = fork_from
        ckpt = _load_checkpoint(path)
        _check_fork(path, ckpt, identity, config)
        ckpt["forked_from"] = {"file": f"{path.parent.name}/{path.name}", "epoch": ckpt["epoch"] + 1}
    else:
        return [], 0, None
    _check_architecture(path, ckpt["student"], student, ckpt.get("architecture"))
    student.load_state_dict(ckpt["student"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    set_rng_state(ckpt["rng"])
    return ckpt["history"], ckpt["epoch"] + 1, ckpt.get("forked_from")


def _without_length(identity: Mapping[str, Any]) -> dict[str, Any]:
    """A run's identity with its number of epochs left out (wherever its training config appears)."""
    identity = copy.deepcopy(dict(identity))
    identity.get("config", {}).pop("epochs", None)
    identity.get("run_info", {}).get("train", {}).pop("epochs", None)
    return identity


def _pause_if_late(pause_at: float | None, history: list[dict[str, Any]], config: TrainConfig) -> None:
    """Raise :class:`TrainingPaused` when another epoch, as long as the median one in ``history``, would end after
    ``pause_at`` (on every rank alike); nothing when no pause is set or no epoch has been timed yet."""
    timed = [row["epoch_s"] for row in history if "epoch_s" in row]
    if pause_at is None or not timed:
        return
    typical = statistics.median(timed)
    late = torch.tensor([float(time.time() + typical > pause_at)])
    if distributed.all_reduce_tensor(late, op="max").item():  # every rank stops at the same epoch
        raise TrainingPaused(f"paused after epoch {len(history)} of {config.epochs} (another epoch, about "
                             f"{typical / 60:.1f} min, would end after the pause time); its checkpoint is written: "
                             "run it again to resume.")


def _check_fork(path: Path, ckpt: Mapping[str, Any], identity: dict[str, Any], config: TrainConfig) -> None:
    """That ``ckpt`` (from ``path``) can start this run: a wsd run that differs from it only in length, taken no
    later than this run's stable phase ends (after that, the two trajectories part)."""
    found = ckpt.get("identity") or {}
    if config.schedule != "wsd" or _without_length(found) != _without_length(identity):
        raise CheckpointError(f"{path} cannot start this run: only a wsd run that differs from it in nothing but its "
                              f"number of epochs can (found {found}, expected {identity}).")
    if ckpt["epoch"] + 1 > config.stable_epochs:
        raise CheckpointError(f"{path} was taken after epoch {ckpt['epoch'] + 1}, past the end of this run's stable "
                              f"phase (epoch {config.stable_epochs} of {config.epochs}): the runs differ from there.")


def _train_epoch(distiller: Distiller, train_loader, optimizer: torch.optim.Optimizer, scheduler: Any, epoch: int, *,
                 device: torch.device, memory_format: torch.memory_format, progress: bool,
                 precision: str = "fp32") -> dict[str, Any]:
    """One pass over ``train_loader`` (its augmentation seeded by ``epoch``), stepping the optimiser and the
    schedule every batch, the forward pass and the loss in ``precision`` (weights and gradients stay fp32); returns
    the epoch's history row so far: epoch, learning rate, training loss (and each loss term), top-1, and the seconds
    spent waiting for another process's outputs on the view."""
    train_loader.set_epoch(epoch)
    view = _loader_view(train_loader, epoch)
    distiller.train()
    sums: dict[str, float] = {}
    correct = seen = 0
    # one process claims a view whose outputs it computes, and others on the same view wait for them; the ranks of a
    # data-parallel run compute their slices of every view together, so they claim nothing (each would wait for all)
    claim = distiller.claim_view(view) if distributed.world_size() == 1 else contextlib.nullcontext()
    claimed_at = time.perf_counter()
    with claim:
        waited = time.perf_counter() - claimed_at
        batches = progress_bar(train_loader, desc=f"epoch {epoch + 1}", leave=False, enabled=progress)
        for x, y, index in batches:
            x = x.to(device, non_blocking=True).contiguous(memory_format=memory_format)
            y = y.to(device, non_blocking=True)
            with autocast(precision, device):
                logits, losses = distiller.loss(x, y, index, view)
                loss = sum(losses.values())
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the loss became {loss.item()} at epoch {epoch + 1}; lower the learning "
                                         f"rate (now {scheduler.get_last_lr()[0]:.4g}).")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            n = len(y)
            seen += n
            correct += (logits.detach().argmax(1) == y).sum().item()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v.item() * n
            batches.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        distiller.end_epoch()
    totals = distributed.all_reduce_sums({**sums, "correct": correct, "seen": seen})  # every rank's samples
    correct, seen = totals.pop("correct"), totals.pop("seen")
    sums = totals
    row: dict[str, Any] = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"],
                           "train_loss": sum(sums.values()) / max(seen, 1),
                           "train_top1": 100.0 * correct / max(seen, 1)}
    row.update({f"train_{k}": v / max(seen, 1) for k, v in sums.items()})
    row["view_wait_s"] = waited  # spent waiting for outputs another process was computing (part of epoch_s)
    return row


def _evaluate(distiller: Distiller, eval_loaders: Mapping[str, Any], *, device: torch.device,
              frozen_logits: dict[Any, tuple[Tensor, Tensor]], precision: str = "fp32") -> dict[str, float]:
    """The per-epoch evaluation columns: ``<name>_top1`` and ``<name>_loss`` of every loader in ``eval_loaders``."""
    row: dict[str, float] = {}
    for name, loader in eval_loaders.items():
        metrics = evaluate_distiller(distiller, loader, device=device, frozen_logits=frozen_logits,
                                     precision=precision)
        row.update({f"{name}_top1": metrics["top1"], f"{name}_loss": metrics["loss"]})
    return row


def _write_checkpoint(run_dir: Path, student: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, epoch: int,
                      history: list[dict[str, Any]], identity: dict[str, Any], forked: dict[str, Any] | None = None,
                      *, snapshot: bool = False) -> None:
    """The end-of-epoch checkpoint (everything a bit-exact resume needs; tensors and plain types only), then the
    history so far; with ``snapshot``, the same state kept as ``stable.pt`` too."""
    state = {"student": student.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "rng": rng_state(), "epoch": epoch, "history": history,
             "identity": identity, "architecture": architecture(student),
             **({"forked_from": forked} if forked else {})}
    atomic_torch_save(state, run_dir / CHECKPOINT)
    if snapshot:
        atomic_torch_save(state, run_dir / SNAPSHOT)
    _write_history(history, run_dir)


def _finish(student: nn.Module, config: TrainConfig, history: list[dict[str, Any]], eval_loaders: Mapping[str, Any],
            identity: dict[str, Any], run_dir: Path | None, machine: dict[str, Any] | None = None,
            forked: dict[str, Any] | None = None) -> FitResult:
    """The trained run: the student laid out for the CPU, its summary (last and best epochs) and, with a
    ``run_dir``, history -> summary -> ``model.pt`` written in that order (``model.pt`` marks the run finished), and
    the checkpoint removed. ``machine`` (where the last epoch ran, and the training-set size) goes to the summary, for
    cost tables."""
    student.eval()
    _lay_out_for_cpu(student, config)
    frame = pd.DataFrame(history)
    summary = {"identity": identity, "final": history[-1] if history else {},
               "best": _best(frame, eval_loaders), "architecture": architecture(student), "machine": machine or {},
               **({"forked_from": forked} if forked else {})}
    if run_dir is not None:  # model.pt last: it marks the run finished, and all it needs is then in place
        _write_history(history, run_dir)  # (a kill after the last checkpoint may have kept the previous one)
        atomic_json_dump(summary, run_dir / SUMMARY)
        atomic_torch_save(student.state_dict(), run_dir / FINAL_MODEL)
        (run_dir / CHECKPOINT).unlink(missing_ok=True)
    return FitResult(student, frame, summary)


def _best(frame: pd.DataFrame, eval_loaders: Mapping[str, Any]) -> dict[str, Any]:
    """The epoch with the best top-1 on each evaluation split (reported beside the last epoch, never selected on)."""
    best = {}
    for name in eval_loaders:
        col = f"{name}_top1"
        if col in frame:
            i = int(frame[col].idxmax())
            best[name] = {"epoch": int(frame.loc[i, "epoch"]), "top1": float(frame.loc[i, col])}
    return best


def _write_history(history: list[dict[str, Any]], run_dir: Path) -> None:
    atomic_write(run_dir / HISTORY, lambda f: pd.DataFrame(history).to_csv(f, index=False), "w")


def _check_identity(path: Path, found: Any, expected: dict[str, Any]) -> None:
    if found != expected:
        raise CheckpointError(
            f"{path} belongs to a different run (its settings differ from this call's: found {found}, expected "
            f"{expected}). Use another run_dir, or pass retrain=True to discard it."
        )


def load_run(run_dir: str | os.PathLike, student: nn.Module, identity: Mapping[str, Any] | None = None) -> FitResult:
    """Load a finished run's weights into ``student`` and return it with its history and summary."""
    run_dir = Path(run_dir)
    if not is_finished(run_dir):
        resume = " from its checkpoint" if (run_dir / CHECKPOINT).exists() else ""
        raise CheckpointError(f"{run_dir} holds no finished run (it lacks {FINAL_MODEL} or {SUMMARY}, written when "
                              f"training ends); run fit with this run_dir to finish it{resume}.")
    readers = {FINAL_MODEL: lambda path: unpack_state(torch.load(path, map_location="cpu", weights_only=True)),
               SUMMARY: lambda path: json.loads(path.read_text()), HISTORY: pd.read_csv}
    loaded = {}
    for name, read in readers.items():
        try:
            loaded[name] = read(run_dir / name)
        except Exception as e:
            raise CheckpointError(f"cannot read {run_dir / name} ({type(e).__name__}: {e}), part of the finished run "
                                  f"in {run_dir}: it is missing or corrupt. Delete the folder or pass retrain=True to "
                                  f"train the run again.") from e
    state, summary, history = loaded[FINAL_MODEL], loaded[SUMMARY], loaded[HISTORY]
    if identity is not None:
        _check_identity(run_dir / SUMMARY, summary.get("identity"), json.loads(json.dumps(identity, default=str)))
    _check_architecture(run_dir / FINAL_MODEL, state, student, summary.get("architecture"))
    student.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return FitResult(student.eval(), history, summary)
