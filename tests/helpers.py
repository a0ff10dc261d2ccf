"""Tiny synthetic data and models shared by the training tests, and valid results records."""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from reskd import results
from reskd.data import SPECS, DatasetSpec, ImageTensors

NUM_CLASSES = 4
IMAGE_SIZE = 8


def tiny_spec(size: int = IMAGE_SIZE) -> DatasetSpec:
    """A CIFAR-like spec for ``size`` x ``size`` images and 4 classes."""
    return dataclasses.replace(SPECS["cifar10"], name="tiny-test", num_classes=NUM_CLASSES, image_size=size,
                               crop_size=size, pad=1, val_size=8, display_name="tiny test")


def tiny_images(n: int = 96, seed: int = 0, size: int = IMAGE_SIZE) -> ImageTensors:
    """A learnable problem: the class sets the mean colour of each image, plus noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % NUM_CLASSES
    colours = torch.tensor([[200, 40, 40], [40, 200, 40], [40, 40, 200], [200, 200, 40]], dtype=torch.float32)
    images = colours[labels][:, :, None, None] + 40 * torch.randn(n, 3, size, size, generator=g)
    images = images.clamp(0, 255).to(torch.uint8)
    return ImageTensors(images=images, labels=labels, classes=[f"c{i}" for i in range(NUM_CLASSES)],
                        source="synthetic", fingerprint=f"synthetic-{n}-{seed}")


class TinyNet(nn.Module):
    """A two-layer conv net, small enough to train in a fraction of a second."""

    def __init__(self, num_classes: int = NUM_CLASSES, width: int = 8):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(width, num_classes)
        self.num_classes = num_classes

    def forward(self, x):
        return self.fc(self.body(x))


def results_model(name="KD student", kind="kd", **changes):
    """A valid ``models`` entry of a results record, with ``changes`` applied."""
    model = {"name": name, "kind": kind, "stages": 1, "macs": 1.5e6, "pct_teacher": 25.0, "top1_mean": 61.5,
             "top1_std": 0.4, "seeds": [0, 1], "agreement_teacher": 70.0}
    model.update(changes)
    return model


def write_results(root, dataset="cifar10", models=None, **kw):
    """Write a valid results record (a teacher and a KD student unless ``models``) under ``root``."""
    models = models if models is not None else [results_model("teacher", "teacher", stages=0, pct_teacher=100.0,
                                                               agreement_teacher=None), results_model()]
    args = dict(chapter="02_cifar", dataset=dataset, data_source="CIFAR-10 JPEG copy", profile="smoke",
                device="cpu", models=models, root=root)
    args.update(kw)
    return results.write_results(**args)
