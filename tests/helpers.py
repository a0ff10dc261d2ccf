"""Tiny synthetic data and models shared by the training tests."""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

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
