"""A disk cache of a frozen model's outputs on each input view.

Distillation runs a frozen teacher on every training batch. Because ``reskd.data.Loader`` makes each augmented view a
pure function of (data, augmentation settings, data seed, epoch, sample index), the teacher's logits on a view can be
computed once and reused by every later training that sees the same view: other weight seeds, later ResKD stages,
ablations. Entries are keyed by

* the model's weights (:func:`reskd.utils.state_dict_hash`),
* the view (:meth:`reskd.data.Loader.view_key`: data fingerprint, augmentation, data seed, epoch),

and stored in float16. Outputs are *always* rounded through float16, also when freshly computed, so a run with a
warm cache is bit-for-bit the run with a cold one.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .precision import autocast, check_precision
from .runstore import RunLockedError, folder_lock
from .utils import atomic_torch_save, memory_format_for, state_dict_hash, stable_hash

CACHE_DTYPE = torch.float16
WRITE_LOCK_SUFFIX = "-write"  # the lock held while a view's file is merged and written
TEACHER_CACHE_NAME = "teacher"  # the name the teacher's outputs are cached under (shared by KD and ResKD runs)


@dataclass
class _ViewOutputs:
    outputs: torch.Tensor  # (N, C) float16
    filled: torch.Tensor  # (N,) bool
    path: Path | None
    dirty: bool = False


@dataclass
class CacheStats:
    """How many samples were served from the cache and how many were computed."""

    hits: int = 0
    misses: int = 0

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class OutputCache:
    """Outputs of a frozen ``model``, cached per input view on disk under ``root``.

    Call it like the model, adding the sample indices and the view: ``cache(x, index, view_key, num_samples)``.
    ``root=None`` keeps the cache in memory only.
    """

    def __init__(self, model: nn.Module, root: str | os.PathLike | None, *, name: str = "model",
                 precision: str = "fp32"):
        self.model = model.eval().requires_grad_(False)
        self.precision = check_precision(precision)
        # fp32 outputs keep the key they always had; other precisions are stored apart
        self.model_key = f"{name}-{state_dict_hash(model)}" + ("" if precision == "fp32" else f"-{precision}")
        self.root = Path(root) / self.model_key if root is not None else None
        self.stats = CacheStats()
        self._views: dict[str, _ViewOutputs] = {}
        self._memory_format: torch.memory_format | None = None

    def _path(self, view_key: str) -> Path | None:
        return self.root / f"{stable_hash(view_key)}.pt" if self.root is not None else None

    def _load(self, view_key: str, num_samples: int) -> _ViewOutputs | None:
        """The view's outputs from memory or disk, or ``None`` when nothing is stored yet."""
        if view_key in self._views:
            return self._views[view_key]
        path = self._path(view_key)
        if path is None or not path.exists():
            return None
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a damaged cache file only costs a recomputation
            return None
        if saved.get("view_key") != view_key or saved["outputs"].shape[0] != num_samples:
            return None
        self._views[view_key] = _ViewOutputs(saved["outputs"], saved["filled"], path)
        return self._views[view_key]

    def is_stored(self, view_key: str, num_samples: int) -> bool:
        """Whether the view's outputs are stored. Views are written after a whole pass over the loader (a training
        epoch, or :meth:`reskd.experiment.Experiment.warm_teacher_cache`), so a stored view has every sample the
        loader yields (a loader that drops its last partial batch never yields some samples of a view)."""
        return self._load(view_key, num_samples) is not None

    def view_lock(self, view_key: str, *, wait: bool = True, announce: bool = True):
        """An exclusive lock on one view (see :func:`reskd.runstore.folder_lock`), so that two processes filling the
        cache split the views between them instead of computing the same ones."""
        if self.root is None:
            return contextlib.nullcontext()
        return folder_lock(self.root / "locks" / stable_hash(view_key), wait=wait, announce=announce)

    @contextlib.contextmanager
    def claim(self, view_key: str, num_samples: int) -> Iterator[None]:
        """Hold the view's lock while this process computes the view's outputs (a training epoch on it), so that
        another process needing the same view waits for them and then reads them instead of computing them again.

        A view another process is computing is waited for here: its outputs are usually ready within an epoch, and
        computing them twice costs the machine the teacher's work twice. Once they are stored the lock is let go at
        once; if the other process stopped without storing them, this one keeps the lock and computes them. A view
        already stored, or a cache kept in memory only, claims nothing."""
        if self.root is None or self.is_stored(view_key, num_samples):
            yield
            return
        with contextlib.ExitStack() as held:
            if self.view_busy(view_key):
                print(f"{self.model_key}: another process is computing the outputs of this view; waiting for them "
                      "...", flush=True)
            held.enter_context(self.view_lock(view_key, announce=False))
            if self.is_stored(view_key, num_samples):  # the other process stored them meanwhile
                held.close()
            yield

    def view_busy(self, view_key: str) -> bool:
        """Whether another process holds the lock of this view (it is computing it now)."""
        try:
            with self.view_lock(view_key, wait=False):
                return False
        except RunLockedError:
            return True

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, index: torch.Tensor, view_key: str, num_samples: int) -> torch.Tensor:
        """The model's outputs on the batch ``x`` (rows ``index`` of a view with ``num_samples`` samples), float32."""
        index = index.cpu()
        entry = self._load(view_key, num_samples)
        if entry is not None and bool(entry.filled[index].all()):
            self.stats.hits += len(index)
            return entry.outputs[index].to(x.device, torch.float32)
        if self._memory_format is None:  # channels_last where it is safe (see reskd.train.memory_format_for)
            self._memory_format = memory_format_for(self.model, x.device)
            self.model.to(memory_format=self._memory_format)
        with autocast(self.precision, x.device, force=True):
            out = self.model(x.contiguous(memory_format=self._memory_format)).to(CACHE_DTYPE)
        if entry is None:
            entry = _ViewOutputs(torch.zeros(num_samples, out.shape[1], dtype=CACHE_DTYPE),
                                 torch.zeros(num_samples, dtype=torch.bool), self._path(view_key))
            self._views[view_key] = entry
        self.stats.misses += len(index)
        entry.outputs[index] = out.cpu()
        entry.filled[index] = True
        entry.dirty = True
        return out.float()

    def flush(self) -> None:
        """Write every view that gained outputs to disk, and drop them from memory.

        Several processes may fill one view (the ranks of a data-parallel run each compute their slice of every
        batch): under the view's lock, the rows another writer stored meanwhile are merged in before the view is
        written (atomically), so every writer's rows end up on disk. (The write lock is not :meth:`view_lock`, which
        a process may hold around the whole pass, e.g. :meth:`reskd.experiment.Experiment.warm_teacher_cache`.)"""
        for key, entry in list(self._views.items()):
            if entry.dirty and entry.path is not None:
                with folder_lock(self.root / "locks" / f"{stable_hash(key)}{WRITE_LOCK_SUFFIX}", announce=False):
                    _merge_stored(entry, key)
                    atomic_torch_save({"view_key": key, "outputs": entry.outputs, "filled": entry.filled},
                                      entry.path)
            del self._views[key]


def _merge_stored(entry: _ViewOutputs, view_key: str) -> None:
    """Add to ``entry`` the rows that its file on disk has and it lacks (a damaged or foreign file adds none)."""
    if entry.path is None or not entry.path.exists():
        return
    try:
        saved = torch.load(entry.path, map_location="cpu", weights_only=True)
    except Exception:  # a damaged file is overwritten
        return
    if saved.get("view_key") != view_key or saved["outputs"].shape != entry.outputs.shape:
        return
    new = saved["filled"] & ~entry.filled
    entry.outputs[new] = saved["outputs"][new]
    entry.filled |= new
