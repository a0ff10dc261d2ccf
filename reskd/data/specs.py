"""What a data set is (:class:`DatasetSpec`, :data:`SPECS`) and what a loaded one holds (:class:`ImageTensors`,
:class:`DataSplits`), with the digest and seed helpers the rest of :mod:`reskd.data` derives its keys from."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
import torchvision

from ..utils import HASH_CHARS

SPLITS = ("train", "test")  # "test" is the labelled evaluation split: CIFAR test, Tiny-ImageNet val, ImageNet val


@dataclass(frozen=True)
class DatasetSpec:
    """What a data set is and how its images are augmented and normalised."""

    name: str
    num_classes: int
    image_size: int  # square size the images are stored at
    crop_size: int  # model input size
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    augment: str  # "crop_flip": zero-padded random crop + flip; "rrc_flip": random-resized crop + flip
    pad: int  # padding of crop_flip
    val_size: int  # validation images carved from the training set by default
    display_name: str
    # images per class in the complete train / test split, checked on every load (None: not checked)
    train_per_class: int | None = None
    test_per_class: int | None = None


SPECS: dict[str, DatasetSpec] = {
    "cifar10": DatasetSpec("cifar10", 10, 32, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
                           "crop_flip", 4, 5000, "CIFAR-10", 5000, 1000),
    "cifar100": DatasetSpec("cifar100", 100, 32, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
                            "crop_flip", 4, 5000, "CIFAR-100", 500, 100),
    "tiny-imagenet": DatasetSpec("tiny-imagenet", 200, 64, 64, (0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821),
                                 "crop_flip", 8, 10000, "Tiny-ImageNet-200", 500, 50),
    "imagenet": DatasetSpec("imagenet", 1000, 144, 128, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
                            "rrc_flip", 0, 10000, "ImageNet-1k", None, 50),  # train: 732-1300 per class
}

@dataclass(frozen=True)
class Download:
    """Where a data set that torchvision does not ship is published: its canonical URL, the md5 the archive is checked
    against before anything is unpacked, and the folder it unpacks to under the data root (d2l's DATA_HUB and
    torchvision's md5 lists are the conventions)."""

    url: str
    md5: str
    folder: str


#: The data sets download=True fetches from their canonical URL (torchvision's downloader; the md5 checked first).
DOWNLOADS = {"tiny-imagenet": Download("http://cs231n.stanford.edu/tiny-imagenet-200.zip",
                                       "90528d7ca1a48142e341f4ef8d21d0de", "tiny-imagenet-200")}

# The data sets torchvision ships (in its original pickle folders, which download=True fetches), by name.
_TORCHVISION = {"cifar10": torchvision.datasets.CIFAR10, "cifar100": torchvision.datasets.CIFAR100}

def get_spec(name: str | DatasetSpec) -> DatasetSpec:
    """The :class:`DatasetSpec` called ``name`` (a spec passes through unchanged)."""
    if isinstance(name, DatasetSpec):
        return name
    if name not in SPECS:
        raise ValueError(f"unknown data set {name!r}; known data sets: {', '.join(SPECS)}.")
    return SPECS[name]

def _split_dir(spec: DatasetSpec, split: str) -> str:
    """The folder of ``split`` in the on-disk layout."""
    return split if split == "train" or spec.name in _TORCHVISION else "val"

def _digest(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
    return h.hexdigest()[:HASH_CHARS]


def _derive_seed(*parts) -> int:
    """A 60-bit seed for one purpose (shuffle, augment, ...), so that the random streams are independent."""
    return int(_digest(repr(parts)), 16) >> 4

@dataclass(repr=False)
class ImageTensors:
    """Images (uint8, N x 3 x H x W, RGB) with their labels (int64, N), class names and provenance."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    source: str  # human-readable origin, e.g. "CIFAR-10 (JPEG copy, cifar10-jpeg.tar.gz)"
    fingerprint: str  # short hex hash of the content; the cache key of anything computed from it

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(f"images must be uint8 N x 3 x H x W, got {self.images.dtype} {tuple(self.images.shape)}.")
        if self.labels.shape != (len(self.images),):
            raise ValueError(f"need one label per image: {len(self.images)} images, labels {tuple(self.labels.shape)}.")

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return (f"ImageTensors({len(self)} images of {'x'.join(map(str, self.images.shape[1:]))}, "
                f"{len(self.classes)} classes, source={self.source!r}, fingerprint={self.fingerprint!r})")

    def subset(self, indices) -> ImageTensors:
        """The samples at ``indices`` (indices or a boolean mask), with a fingerprint derived from this one's."""
        index = torch.as_tensor(indices)
        if index.dtype == torch.bool:
            index = index.nonzero().flatten()
        index = index.to(torch.int64)
        fingerprint = _digest(self.fingerprint, index.numpy().tobytes())
        return ImageTensors(self.images[index].contiguous(), self.labels[index].contiguous(), list(self.classes),
                            self.source, fingerprint)


@dataclass
class DataSplits:
    """A data set's training, validation (carved from the training set) and test splits."""

    spec: DatasetSpec
    train: ImageTensors
    val: ImageTensors
    test: ImageTensors

    @property
    def source(self) -> str:
        return self.train.source
