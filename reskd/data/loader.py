"""The batch loader: :class:`Loader` shuffles and augments an in-memory :class:`~reskd.data.ImageTensors` in
whole batches, a pure function of ``(seed, epoch)``, and names each view it yields (:meth:`Loader.view_key`)."""
from __future__ import annotations

import math
from typing import Iterator

import torch

from ..utils import resolve_device, stable_hash
from .augment import (AUGMENT_VERSION, FLIP_PROB, RRC_RATIO, RRC_SCALE, augment_batch, augment_params,
                      eval_transform, normalize)
from .specs import DatasetSpec, ImageTensors, _derive_seed


class Loader:
    """Batches from an :class:`ImageTensors` held in memory.

    ``train=True``: shuffled and augmented; the order and the views are a pure function of ``(seed, epoch)``, so runs
    are reproducible and a frozen model's outputs on a view can be cached. ``train=False``: in order, centre-cropped.
    Yields ``(x, y, index)``: ``x`` float32 normalised on ``device`` (channels-last when ``channels_last``), ``y``
    int64 on ``device``, ``index`` the int64 CPU indices of the samples in ``data``.

    Data-parallel (``world_size`` > 1, see :mod:`reskd.distributed`): ``batch_size`` is the global batch. Training,
    rank ``rank`` takes the ``rank``-th of ``world_size`` equal slices of every global batch, so the ranks together
    see exactly the samples and views of a one-process run (``batch_size`` must divide by ``world_size``);
    evaluation, each rank takes every ``world_size``-th batch. ``len(loader)`` counts global batches.
    """

    def __init__(self, data: ImageTensors, spec: DatasetSpec, batch_size: int, *, train: bool, seed: int = 0,
                 device: str | torch.device = "cpu", drop_last: bool | None = None, channels_last: bool = True,
                 rank: int = 0, world_size: int = 1):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank must be in 0 .. world_size - 1 with world_size >= 1, got rank={rank}, "
                             f"world_size={world_size}.")
        if train and batch_size % world_size:
            raise ValueError(f"the global batch_size={batch_size} does not divide by the {world_size} processes; "
                             f"choose a batch_size that is a multiple of {world_size} (or another process count).")
        if train and world_size > 1 and drop_last is False:
            raise ValueError("a training loader split over several processes needs drop_last=True (a last partial "
                             "batch would give the ranks unequal slices); leave drop_last at its default.")
        self.rank, self.world_size = rank, world_size
        self.data, self.spec, self.batch_size = data, spec, batch_size
        self.train, self.seed, self.channels_last = train, seed, channels_last
        self.device = resolve_device(device)
        self.drop_last = train if drop_last is None else drop_last
        self.epoch = 0
        if self.drop_last and len(data) < batch_size:
            raise ValueError(f"batch_size={batch_size} exceeds the {len(data)} samples, so drop_last would yield no "
                             f"batch; use a smaller batch_size or drop_last=False.")

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffle order and augmentation of ``epoch``."""
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.data)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        n = len(self.data)
        if self.train:
            generator = torch.Generator().manual_seed(_derive_seed("shuffle", self.seed, self.epoch))
            order = torch.randperm(n, generator=generator)
            params = augment_params(self.spec, n, self.seed, self.epoch)
        else:
            order = torch.arange(n)
        cuda = self.device.type == "cuda"
        share = self.batch_size // self.world_size  # a rank's slice of a training batch
        for b in range(len(self)):
            index = order[b * self.batch_size:(b + 1) * self.batch_size]
            if self.world_size > 1 and self.train:
                index = index[self.rank * share:(self.rank + 1) * share]
            elif b % self.world_size != self.rank:  # evaluation: every world_size-th batch
                continue
            images, labels = self.data.images[index], self.data.labels[index]
            if cuda:  # augment on the GPU: move the compact uint8 batch
                images, labels = images.pin_memory(), labels.pin_memory()
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            if self.train:
                x = augment_batch(images, {k: v[index] for k, v in params.items()}, self.spec)
            else:
                x = eval_transform(images, self.spec)
            x = normalize(x, self.spec)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, labels, index

    def view_key(self, epoch: int | None = None) -> str:
        """The identity of the inputs this loader yields (for caching model outputs): the data's fingerprint, the
        transform settings and, for training, ``seed`` and ``epoch`` (default: the current one)."""
        s = self.spec
        transform = {"crop": s.crop_size, "mean": s.mean, "std": s.std}
        if not self.train:
            return f"{self.data.fingerprint}-eval-{stable_hash(transform, 8)}"
        transform.update(augment=s.augment, size=s.image_size, pad=s.pad, version=AUGMENT_VERSION, flip=FLIP_PROB,
                         scale=RRC_SCALE, ratio=RRC_RATIO)
        epoch = self.epoch if epoch is None else epoch
        return f"{self.data.fingerprint}-{s.augment}-{stable_hash(transform, 8)}-seed{self.seed}-epoch{epoch}"
