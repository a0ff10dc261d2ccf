"""Batched, seeded augmentation (:data:`AUGMENTATIONS`: zero-padded random crop + flip, random-resized crop +
flip), the evaluation view and normalisation, all as tensor operations on whole batches."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as tvF
from torchvision.ops import roi_align

from ..registry import Registry
from .specs import DatasetSpec, _derive_seed

AUGMENT_VERSION = 1  # bump when the augmentation would change, to invalidate cached model outputs
FLIP_PROB = 0.5
RRC_SCALE = (0.08, 1.0)  # torchvision.transforms.RandomResizedCrop's defaults
RRC_RATIO = (3 / 4, 4 / 3)
RRC_ATTEMPTS = 10

def _rrc_boxes(size: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """Random-resized-crop boxes (x0, y0, x1, y1) in a ``size`` x ``size`` image, drawn like
    ``torchvision.transforms.RandomResizedCrop.get_params`` (up to 10 tries, else the centre crop), for n samples."""
    area = size * size
    scale = torch.empty(n, RRC_ATTEMPTS).uniform_(*RRC_SCALE, generator=generator)
    log_ratio = torch.empty(n, RRC_ATTEMPTS).uniform_(math.log(RRC_RATIO[0]), math.log(RRC_RATIO[1]),
                                                      generator=generator)
    w = torch.round(torch.sqrt(area * scale * torch.exp(log_ratio)))
    h = torch.round(torch.sqrt(area * scale / torch.exp(log_ratio)))
    fits = (w > 0) & (w <= size) & (h > 0) & (h <= size)
    first = fits.int().argmax(1, keepdim=True)  # the first try that fits
    found = fits.any(1)
    # the fallback, torchvision's centre crop, is the whole image for a square image, whose ratio 1 is in RRC_RATIO
    w = torch.where(found, w.gather(1, first).squeeze(1), torch.tensor(float(size)))
    h = torch.where(found, h.gather(1, first).squeeze(1), torch.tensor(float(size)))
    position = torch.rand(n, 2, generator=generator)
    x0 = torch.floor(position[:, 0] * (size - w + 1))
    y0 = torch.floor(position[:, 1] * (size - h + 1))
    return torch.stack([x0, y0, x0 + w, y0 + h], 1)


def _crop_flip_params(spec: DatasetSpec, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    max_offset = spec.image_size + 2 * spec.pad - spec.crop_size
    dx = torch.randint(0, max_offset + 1, (n,), generator=generator)
    dy = torch.randint(0, max_offset + 1, (n,), generator=generator)
    return {"dx": dx, "dy": dy}


def _crop_flip(images: torch.Tensor, params: dict[str, torch.Tensor], flip: torch.Tensor,
               spec: DatasetSpec) -> torch.Tensor:
    device = images.device
    padded = F.pad(images, (spec.pad,) * 4)  # zeros
    steps = torch.arange(spec.crop_size, device=device)
    rows = params["dy"].to(device)[:, None] + steps
    cols = params["dx"].to(device)[:, None] + torch.where(flip[:, None], steps.flip(0), steps)  # mirrored = flip
    n = torch.arange(len(images), device=device)[:, None, None, None]
    c = torch.arange(images.shape[1], device=device)[None, :, None, None]
    return padded[n, c, rows[:, None, :, None], cols[:, None, None, :]].float()


def _rrc_flip(images: torch.Tensor, params: dict[str, torch.Tensor], flip: torch.Tensor,
              spec: DatasetSpec) -> torch.Tensor:
    # roi_align resizes every box bilinearly at once; aligned=True samples at pixel centres like
    # torchvision's resize, and adaptive sampling averages a few points per output pixel when shrinking
    device = images.device
    index = torch.arange(len(images), device=device, dtype=torch.float32)[:, None]
    rois = torch.cat([index, params["boxes"].to(device, torch.float32)], 1)
    out = roi_align(images.float(), rois, spec.crop_size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    return torch.where(flip[:, None, None, None], out.flip(-1), out)


@dataclass(frozen=True)
class Augmentation:
    """A training augmentation: ``params(spec, n, generator)`` draws each sample's parameters (after the shared
    ``flip``), ``apply(images, params, flip, spec)`` augments a uint8 batch with them."""

    params: Callable[[DatasetSpec, int, torch.Generator], dict[str, torch.Tensor]]
    apply: Callable[[torch.Tensor, dict[str, torch.Tensor], torch.Tensor, DatasetSpec], torch.Tensor]


#: Augmentations by the name a :class:`DatasetSpec` gives in ``augment``.
AUGMENTATIONS: Registry[Augmentation] = Registry("augmentation")
AUGMENTATIONS.register("crop_flip", "zero-padded random crop + horizontal flip")(
    Augmentation(_crop_flip_params, _crop_flip))
AUGMENTATIONS.register("rrc_flip", "random-resized crop + horizontal flip")(
    Augmentation(lambda spec, n, generator: {"boxes": _rrc_boxes(spec.image_size, n, generator)}, _rrc_flip))


def augment_params(spec: DatasetSpec, n: int, seed: int, epoch: int) -> dict[str, torch.Tensor]:
    """The random augmentation of epoch ``epoch`` for samples ``0 .. n-1``, a pure function of ``(seed, epoch)``.

    crop_flip: ``dx``, ``dy`` (crop offsets in the padded image) and ``flip``; rrc_flip: ``boxes`` (N x 4 float,
    x0 y0 x1 y1 in stored-image pixels) and ``flip``.
    """
    augmentation = AUGMENTATIONS[spec.augment]
    generator = torch.Generator().manual_seed(_derive_seed("augment", seed, epoch))
    flip = torch.rand(n, generator=generator) < FLIP_PROB
    return {**augmentation.params(spec, n, generator), "flip": flip}


def augment_batch(images: torch.Tensor, params: dict[str, torch.Tensor], spec: DatasetSpec) -> torch.Tensor:
    """Augment a uint8 N x 3 x H x W batch with its samples' ``params`` (rows of :func:`augment_params`).

    Returns float32 N x 3 x crop x crop in [0, 255], on the images' device.
    """
    augmentation = AUGMENTATIONS[spec.augment]
    return augmentation.apply(images, params, params["flip"].to(images.device), spec)


def eval_transform(images: torch.Tensor, spec: DatasetSpec) -> torch.Tensor:
    """The evaluation view: the centre ``crop_size`` square (all of a CIFAR or Tiny-ImageNet image), float32 in
    [0, 255]."""
    return tvF.center_crop(images, [spec.crop_size, spec.crop_size]).float()


def normalize(x: torch.Tensor, spec: DatasetSpec) -> torch.Tensor:
    """``(x / 255 - mean) / std`` per channel, on ``x``'s device."""
    x = x if x.is_floating_point() else x.float()
    mean = torch.tensor(spec.mean, device=x.device, dtype=x.dtype).view(-1, 1, 1)
    std = torch.tensor(spec.std, device=x.device, dtype=x.dtype).view(-1, 1, 1)
    return (x - 255 * mean) / (255 * std)
