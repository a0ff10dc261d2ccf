"""Image data sets as uint8 tensors in memory, and a seeded, augmenting batch loader.

Four data sets, found under the data root (:func:`data_root`) in any of these forms, tried in this order:

=============  ==========================================================================================
cifar10        ``cifar-10-batches-py/`` (torchvision's original), ``cifar10-jpeg/``, ``cifar10-jpeg.tar.gz``
cifar100       ``cifar-100-python/`` (torchvision's original), ``cifar100-jpeg/``, ``cifar100-jpeg.tar.gz``
tiny-imagenet  ``tiny-imagenet-200/``, ``tiny-imagenet-200.tar.gz`` (the standard archive layout)
imagenet       ``imagenet/`` with ``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG``, or a flat ``val/`` plus
               Kaggle's ``LOC_val_solution.csv`` in ``imagenet/``
=============  ==========================================================================================

The ``-jpeg`` copies use the ImageFolder layout ``train/<class>/<image>`` and ``test/<class>/<image>``. Tarballs
are streamed, never extracted. Images are decoded once, squared to ``spec.image_size`` (short side resized, then
centre-cropped: ImageNet) and kept in a disk cache (:func:`cache_dir`) that later loads memory-map in well under a
second. Every array carries a ``fingerprint`` of its content, the key under which model outputs can be cached.

:class:`Loader` shuffles and augments whole batches with tensor operations (no per-sample Python loop, no worker
processes). The order and the augmentation of every sample are pure functions of ``(seed, epoch)``, so a run is
reproducible and a frozen teacher's outputs on an epoch's views can be cached (:meth:`Loader.view_key`).

A custom :class:`DatasetSpec` may be passed wherever a data set name is accepted, e.g.
``dataclasses.replace(SPECS["imagenet"], image_size=160)`` to store ImageNet at another size; the layout is chosen
by ``spec.name`` (:data:`LAYOUTS`), the augmentation by ``spec.augment`` (:data:`AUGMENTATIONS`), the class count
is checked against ``spec.num_classes`` and, where the spec gives them, the images of each class against
``spec.train_per_class`` / ``spec.test_per_class`` (the real data sets' counts; ``None`` for a deliberate subset).
A damaged or cut-short archive (gzip's CRC included), a CIFAR pickle that fails torchvision's published md5
(checked before it is unpickled), a truncated pickle, an undecodable image or one outside any class folder is an
error naming the file.
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import math
import os
import pickle
import tarfile
import tempfile
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
import torchvision.transforms.v2.functional as tvF
from torchvision.io import ImageReadMode, decode_image
from torchvision.ops import roi_align

from .registry import Registry
from .utils import HASH_CHARS, atomic_json_dump, progress, project_root, resolve_device, stable_hash

DATA_ENV = "RESKD_DATA"
CACHE_ENV = "RESKD_CACHE"
DEFAULT_DATA_DIR = "data"
DEFAULT_CACHE_DIR = Path("~/.cache/reskd")

SPLITS = ("train", "test")  # "test" is the labelled evaluation split: CIFAR test, Tiny-ImageNet val, ImageNet val
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
CACHE_VERSION = 1  # bump when the decoded arrays would change, to invalidate old caches
AUGMENT_VERSION = 1  # bump when the augmentation would change, to invalidate cached model outputs
FLIP_PROB = 0.5
RRC_SCALE = (0.08, 1.0)  # torchvision.transforms.RandomResizedCrop's defaults
RRC_RATIO = (3 / 4, 4 / 3)
RRC_ATTEMPTS = 10
HASH_CHUNK = 4096  # images hashed at a time when fingerprinting
CACHE_FILE_MODE = 0o644  # cache files are readable by others sharing the cache folder


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

# Where each data set may live under the data root, in order of preference.
_LOCATIONS = {
    "cifar10": ("cifar-10-batches-py", "cifar10-jpeg", "cifar10-jpeg.tar.gz"),
    "cifar100": ("cifar-100-python", "cifar100-jpeg", "cifar100-jpeg.tar.gz"),
    "tiny-imagenet": ("tiny-imagenet-200", "tiny-imagenet-200.tar.gz"),
    "imagenet": ("imagenet",),
}
_TORCHVISION = {"cifar10": torchvision.datasets.CIFAR10, "cifar100": torchvision.datasets.CIFAR100}
_TAR_SUFFIX = ".tar.gz"
_GZIP_CHUNK = 1 << 20


def get_spec(name: str | DatasetSpec) -> DatasetSpec:
    """The :class:`DatasetSpec` called ``name`` (a spec passes through unchanged)."""
    if isinstance(name, DatasetSpec):
        return name
    if name not in SPECS:
        raise ValueError(f"unknown data set {name!r}; known data sets: {', '.join(SPECS)}.")
    return SPECS[name]


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The folder holding the data sets: ``root``, else ``$RESKD_DATA``, else the project's ``data/`` folder."""
    if root is None and not os.environ.get(DATA_ENV):
        return project_root() / DEFAULT_DATA_DIR
    return Path(root if root is not None else os.environ[DATA_ENV]).expanduser()


def cache_dir(cache: str | os.PathLike | None = None) -> Path:
    """The folder of decoded data (created): ``cache``, else ``$RESKD_CACHE``, else ``~/.cache/reskd``."""
    path = Path(cache if cache is not None else os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


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


# ----------------------------------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class _Source:
    path: Path
    kind: str  # "pickle" (torchvision's original), "folder" or "tar"

    def describe(self, spec: DatasetSpec) -> str:
        if self.kind == "pickle":
            return f"{spec.display_name} (torchvision original, {self.path.name})"
        copy = "JPEG copy, " if spec.name in _TORCHVISION else ""
        size = f", stored at {spec.image_size} px" if spec.name == "imagenet" else ""
        return f"{spec.display_name} ({copy}{self.path.name}{size})"


def _find_source(spec: DatasetSpec, root: Path, download: bool) -> _Source:
    if spec.name not in _LOCATIONS:
        raise ValueError(f"no on-disk layout is known for data set {spec.name!r}; "
                         f"name a spec after one of: {', '.join(_LOCATIONS)}.")
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(
            f"the data root {root} is a file, not a folder; point the `root` argument or the {DATA_ENV} environment "
            f"variable at the folder that holds the data sets (e.g. {root.parent}).")
    candidates = [root / name for name in _LOCATIONS[spec.name]]
    for path in candidates:
        if path.exists():
            kind = "tar" if path.name.endswith(_TAR_SUFFIX) else "folder" if path.is_dir() else None
            if kind == "folder" and spec.name in _TORCHVISION and path == candidates[0]:
                kind = "pickle"
            if kind is not None:
                return _Source(path, kind)
    if download and spec.name in _TORCHVISION:
        root.mkdir(parents=True, exist_ok=True)
        _TORCHVISION[spec.name](root=str(root), train=True, download=True)  # fetches and unpacks both splits
        return _Source(candidates[0], "pickle")
    where = "does not exist; looked for" if not root.is_dir() else "holds none of"
    looked = "\n".join(f"  {path}" for path in candidates)
    fetch = " or pass download=True to let torchvision fetch it" if spec.name in _TORCHVISION else ""
    raise FileNotFoundError(
        f"{spec.display_name} not found: the data root {root} {where}:\n{looked}\n"
        f"Put the data set there, or point to another data root with the `root` argument or the {DATA_ENV} "
        f"environment variable{fetch}.")


def is_available(name: str | DatasetSpec, root: str | os.PathLike | None = None) -> bool:
    """Whether data set ``name`` is on disk under the data root (no download is attempted)."""
    try:
        _find_source(get_spec(name), data_root(root), download=False)
    except (FileNotFoundError, NotADirectoryError):
        return False
    return True


def _stat_identity(path: Path, name: str) -> list:
    st = path.stat()
    return [name, st.st_size, st.st_mtime_ns]


class _DirTree:
    """The files of ``parts`` (top-level files or folders) of a directory, read from disk on demand."""

    def __init__(self, root: Path, parts: tuple[str, ...]):
        self.root = root
        self.dirs: set[str] = set()
        self.identity: list = []
        for part in parts:
            path = root / part
            if path.is_file():
                self.identity.append(_stat_identity(path, part))
            elif path.is_dir():
                self.dirs.add(part)
                for folder, subdirs, files in os.walk(path, followlinks=True):
                    rel = Path(folder).relative_to(root).as_posix()
                    self.dirs.update(f"{rel}/{d}" for d in subdirs)
                    self.identity += [_stat_identity(Path(folder) / f, f"{rel}/{f}") for f in files]
        self.identity.sort()
        self.files = [entry[0] for entry in self.identity]

    def read(self, rel: str) -> bytes:
        return (self.root / rel).read_bytes()

    def where(self, rel: str) -> str:
        return str(self.root / rel)


class _BrokenHeader(Exception):
    """A tar header that is damaged, or missing where the archive was cut short."""


class _StrictTarInfo(tarfile.TarInfo):
    """Tar headers read strictly: ``tarfile`` ends a stream silently at a damaged header, or where the data stops
    before the end-of-archive marker; here both raise :class:`_BrokenHeader`."""

    @classmethod
    def fromtarfile(cls, tar: tarfile.TarFile) -> tarfile.TarInfo:
        try:
            return super().fromtarfile(tar)
        except tarfile.EOFHeaderError:  # the end-of-archive marker
            raise
        except (tarfile.InvalidHeaderError, tarfile.TruncatedHeaderError, tarfile.EmptyHeaderError) as err:
            raise _BrokenHeader(str(err) or type(err).__name__) from None


class _TarTree:
    """The members below ``parts`` of a ``.tar.gz``, read into memory by one streaming pass when first needed."""

    def __init__(self, path: Path, parts: tuple[str, ...]):
        self.path, self.parts = path, parts
        self.identity = [_stat_identity(path, path.name)]
        self._members: dict[str, bytes] | None = None
        self._dirs: set[str] = set()

    def _relative(self, name: str) -> str:
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if parts and parts[0] == self.path.name[: -len(_TAR_SUFFIX)]:
            parts = parts[1:]  # the archive's top folder
        return "/".join(parts)

    def _wanted(self, rel: str) -> bool:
        return any(rel == part or rel.startswith(part + "/") for part in self.parts)

    def _load(self) -> dict[str, bytes]:
        if self._members is None:
            members: dict[str, bytes] = {}
            last, count = None, 0
            try:
                # gzip (not tarfile's "r|gz") decompresses, and the stream is read to its end after the tar's
                # end-of-archive marker, so that gzip checks the CRC and length of every byte it holds
                with gzip.open(self.path, "rb") as stream, \
                        tarfile.open(fileobj=stream, mode="r|", tarinfo=_StrictTarInfo) as tar:
                    for member in progress(tar, desc=f"reading {self.path.name}", unit=" files", leave=False):
                        last, count = member.name, count + 1
                        rel = self._relative(member.name)
                        if not rel or not self._wanted(rel):
                            continue
                        if member.isdir():
                            self._dirs.add(rel)
                        elif member.isfile():
                            members[rel] = tar.extractfile(member).read()
                            parent = rel.rsplit("/", 1)[0] if "/" in rel else ""
                            while parent:  # archives need not list folders
                                self._dirs.add(parent)
                                parent = parent.rsplit("/", 1)[0] if "/" in parent else ""
                    while stream.read(_GZIP_CHUNK):  # the rest of the stream: gzip verifies its CRC at the end
                        pass
            except (tarfile.TarError, _BrokenHeader, EOFError, gzip.BadGzipFile, zlib.error) as err:
                where = f"after {count} entries (the last one read: {last})" if count else "at its start"
                raise ValueError(
                    f"cannot read the archive {self.path}: it is damaged, cut short or not a gzip-compressed tar file "
                    f"({type(err).__name__}: {err}; {where}). Download it again, or re-create it from the original "
                    f"folder (tar czf {self.path.name} {self.path.name[:-len(_TAR_SUFFIX)]}).") from None
            self._members = members
        return self._members

    @property
    def files(self) -> list[str]:
        return sorted(self._load())

    @property
    def dirs(self) -> set[str]:
        self._load()
        return self._dirs

    def read(self, rel: str) -> bytes:
        return self._load()[rel]

    def where(self, rel: str) -> str:
        return f"{rel} inside {self.path}"


# ----------------------------------------------------------------------------------------------------- layouts


def _is_image(rel: str) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")  # skips macOS "._*" files


def _split_dir(spec: DatasetSpec, split: str) -> str:
    """The folder of ``split`` in the on-disk layout."""
    return split if split == "train" or spec.name in _TORCHVISION else "val"


Parsed = tuple[list[str], list[int], list[str]]  # files, labels, sorted class names


@dataclass(frozen=True)
class Layout:
    """How a data set's images are laid out on disk: ``parts(folder, split)`` the top-level entries a split needs
    (``folder`` is the split's folder), ``parse(tree, folder, split)`` its files, labels and class names."""

    parts: Callable[[str, str], tuple[str, ...]]
    parse: Callable[[Any, str, str], Parsed]


#: Layouts by data set name; a data set not listed uses :data:`IMAGE_FOLDER` (``<split>/<class>/<image>``).
LAYOUTS: Registry[Layout] = Registry("layout")


def _tree_parts(spec: DatasetSpec, split: str) -> tuple[str, ...]:
    """The top-level entries that ``split`` needs."""
    return _layout(spec).parts(_split_dir(spec, split), split)


def _layout(spec: DatasetSpec) -> Layout:
    return LAYOUTS[spec.name] if spec.name in LAYOUTS else IMAGE_FOLDER


def _layout_error(tree, expected: str) -> ValueError:
    root = tree.root if isinstance(tree, _DirTree) else tree.path
    return ValueError(f"unknown layout in {root}: expected {expected}. Rearrange the files, or point to another data "
                      f"root with the `root` argument or the {DATA_ENV} environment variable.")


def _empty_class_error(tree, folder: str) -> ValueError:
    return ValueError(f"class folder {tree.where(folder)} holds no images (looked for {', '.join(IMAGE_EXTENSIONS)}); "
                      f"add its images or remove the folder.")


def _unlabelled_error(tree, rel: str, where: str) -> ValueError:
    return ValueError(f"the image {tree.where(rel)} is outside any class folder, so it has no label; move it into "
                      f"its class folder ({where}) or remove it.")


def _image_folder(tree, folder: str) -> tuple[list[str], list[int], list[str]]:
    """``folder/<class>/<image>`` (torchvision's ImageFolder layout): files, labels, sorted class names."""
    if folder not in tree.dirs:
        raise _layout_error(tree, f"a '{folder}/' folder with one sub-folder of images per class")
    classes = sorted(d.split("/")[1] for d in tree.dirs if d.startswith(folder + "/") and d.count("/") == 1)
    by_class: dict[str, list[str]] = {c: [] for c in classes}
    for rel in tree.files:
        parts = rel.split("/")
        if parts[0] != folder or not _is_image(rel):
            continue
        if len(parts) == 2:  # an image beside the class folders has no label
            raise _unlabelled_error(tree, rel, f"{folder}/<class>/")
        by_class[parts[1]].append(rel)
    for c, files in by_class.items():
        if not files:
            raise _empty_class_error(tree, f"{folder}/{c}")
    files = [rel for c in classes for rel in by_class[c]]
    labels = [i for i, c in enumerate(classes) for _ in by_class[c]]
    return files, labels, classes


def _read_text(tree, rel: str, expected: str) -> str:
    if rel not in tree.files:
        raise _layout_error(tree, expected)
    return tree.read(rel).decode()


def _tiny_imagenet(tree, split: str) -> tuple[list[str], list[int], list[str]]:
    """Tiny-ImageNet-200: classes from wnids.txt, train/<wnid>/images/*, val/images/* labelled by
    val/val_annotations.txt."""
    layout = "wnids.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG and val/val_annotations.txt"
    classes = sorted(_read_text(tree, "wnids.txt", layout).split())
    label_of = {wnid: i for i, wnid in enumerate(classes)}
    if split == "train":
        if "train" not in tree.dirs:
            raise _layout_error(tree, layout)
        files = [rel for rel in tree.files if rel.startswith("train/") and _is_image(rel)]
        for rel in files:
            if rel.count("/") == 1:
                raise _unlabelled_error(tree, rel, "train/<wnid>/images/")
            if rel.split("/")[1] not in label_of:
                raise ValueError(f"{tree.where(rel)} is in a class folder that wnids.txt does not list; "
                                 f"add the class to wnids.txt or remove the folder.")
        for wnid in sorted(set(classes) - {rel.split("/")[1] for rel in files}):
            raise _empty_class_error(tree, f"train/{wnid}/images")
        return files, [label_of[rel.split("/")[1]] for rel in files], classes
    annotations = _read_text(tree, "val/val_annotations.txt", layout)
    wnid_of = dict(line.split("\t")[:2] for line in annotations.splitlines() if "\t" in line)
    files = [rel for rel in tree.files if rel.startswith("val/images/") and _is_image(rel)]
    if not files:
        raise _layout_error(tree, layout)
    labels = []
    for rel in files:
        wnid = wnid_of.get(rel.rsplit("/", 1)[1])
        if wnid not in label_of:
            raise ValueError(f"{tree.where(rel)} has no valid label in val/val_annotations.txt (found {wnid!r}); "
                             f"fix the annotation file or remove the image.")
        labels.append(label_of[wnid])
    return files, labels, classes


def _imagenet(tree, split: str) -> tuple[list[str], list[int], list[str]]:
    """ImageNet in ImageFolder layout; a flat val/ folder is labelled by Kaggle's LOC_val_solution.csv."""
    if split == "train" or any(d.startswith("val/") for d in tree.dirs):
        return _image_folder(tree, "train" if split == "train" else "val")
    layout = "val/<wnid>/*.JPEG, or val/*.JPEG with LOC_val_solution.csv (ImageId,PredictionString) beside val/"
    rows = csv.DictReader(io.StringIO(_read_text(tree, "LOC_val_solution.csv", layout)))
    wnid_of = {row["ImageId"]: row["PredictionString"].split()[0] for row in rows}
    classes = sorted(set(wnid_of.values()))
    label_of = {wnid: i for i, wnid in enumerate(classes)}
    files = [rel for rel in tree.files if rel.startswith("val/") and _is_image(rel)]
    if not files:
        raise _layout_error(tree, layout)
    labels = []
    for rel in files:
        image_id = rel.rsplit("/", 1)[1].rsplit(".", 1)[0]
        if image_id not in wnid_of:
            raise ValueError(f"{tree.where(rel)} has no row in LOC_val_solution.csv; add it or remove the image.")
        labels.append(label_of[wnid_of[image_id]])
    return files, labels, classes


IMAGE_FOLDER = Layout(parts=lambda folder, split: (folder,),
                      parse=lambda tree, folder, split: _image_folder(tree, folder))
LAYOUTS.register("tiny-imagenet", "wnids.txt, train/<wnid>/images/, val/images/ with val_annotations.txt")(Layout(
    parts=lambda folder, split: ("wnids.txt", folder), parse=lambda tree, folder, split: _tiny_imagenet(tree, split)))
LAYOUTS.register("imagenet", "ImageFolder; a flat val/ labelled by LOC_val_solution.csv")(Layout(
    parts=lambda folder, split: (folder, "LOC_val_solution.csv") if split == "test" else (folder,),
    parse=lambda tree, folder, split: _imagenet(tree, split)))


def _parse_layout(tree, spec: DatasetSpec, split: str) -> Parsed:
    return _layout(spec).parse(tree, _split_dir(spec, split), split)


def _pickle_files(spec: DatasetSpec, split: str, folder: Path) -> tuple[list[Path], Path]:
    """torchvision's CIFAR pickles of ``split``, and the meta file with the class names."""
    dataset = _TORCHVISION[spec.name]
    names = [name for name, _md5 in (dataset.train_list if split == "train" else dataset.test_list)]
    paths = [folder / name for name in names] + [folder / dataset.meta["filename"]]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} is incomplete, missing: {', '.join(missing)}. Re-download it (delete the "
                                f"folder and pass download=True) or point to another data root with the `root` "
                                f"argument or the {DATA_ENV} environment variable.")
    return paths[:-1], paths[-1]


def _redownload(folder: Path) -> str:
    return f"Download the data set again (delete {folder} and pass download=True)."


#: torchvision's published md5 of every file of its CIFAR folders, by data set, then file name (read from
#: torchvision's dataset classes); each file is checked against it before it is unpickled.
PUBLISHED_MD5: dict[str, dict[str, str]] = {
    name: {**dict(dataset.train_list), **dict(dataset.test_list), dataset.meta["filename"]: dataset.meta["md5"]}
    for name, dataset in _TORCHVISION.items()}


def _check_md5(spec: DatasetSpec, path: Path) -> None:
    """That ``path`` has torchvision's published md5 (a damaged or altered pickle is never unpickled)."""
    expected = PUBLISHED_MD5.get(spec.name, {}).get(path.name)
    if expected is None:
        return
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_GZIP_CHUNK), b""):
            h.update(block)
    if h.hexdigest() != expected:
        raise ValueError(f"{path} fails its checksum: md5 {h.hexdigest()}, but torchvision publishes {expected} for "
                         f"{path.name} of {spec.display_name}; the file is damaged or not the original, and is not "
                         f"unpickled. {_redownload(path.parent)}")


def _unpickle(path: Path, spec: DatasetSpec) -> dict:
    _check_md5(spec, path)
    with open(path, "rb") as f:
        try:
            entry = pickle.load(f, encoding="latin1")
        except Exception as err:  # a truncated or garbled pickle raises any of many types
            raise ValueError(f"cannot read {path} ({type(err).__name__}: {err}): the file is truncated or corrupt. "
                             f"{_redownload(path.parent)}") from None
    if not isinstance(entry, dict):
        raise ValueError(f"{path} holds a {type(entry).__name__}, not a CIFAR batch. {_redownload(path.parent)}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}


def _read_pickles(spec: DatasetSpec, files: list[Path], meta: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images (N x 3 x 32 x 32: the rows are already RGB planes), labels and class names of CIFAR pickles."""
    images, labels = [], []
    for path in files:
        entry = _unpickle(path, spec)
        try:
            images.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels += list(entry["labels"] if "labels" in entry else entry["fine_labels"])
        except (KeyError, ValueError, TypeError) as err:
            raise ValueError(f"{path} is not a CIFAR batch ({type(err).__name__}: {err}). "
                             f"{_redownload(path.parent)}") from None
    key = _TORCHVISION[spec.name].meta["key"]
    names = _unpickle(meta, spec).get(key)
    if names is None:
        raise ValueError(f"{meta} has no {key!r} entry (the class names). {_redownload(meta.parent)}")
    classes = [n.decode() if isinstance(n, bytes) else n for n in names]
    return np.concatenate(images), np.asarray(labels, dtype=np.int64), classes


# ---------------------------------------------------------------------------------------------- decoding, cache


def _fit(image: torch.Tensor, size: int) -> torch.Tensor:
    """Resize the short side to ``size`` and centre-crop to a square (a no-op when already ``size`` x ``size``)."""
    if image.shape[-2:] == (size, size):
        return image
    return tvF.center_crop(tvF.resize(image, [size], antialias=True), [size, size])


def _decode_with_pil(data: bytes) -> torch.Tensor:
    """A BMP (which torchvision.io does not decode) -> uint8 3 x H x W RGB, with Pillow (torchvision's dependency)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).contiguous()


def _decode(data: bytes, size: int, where: str) -> torch.Tensor:
    """One encoded image -> uint8 3 x size x size (grayscale and RGBA become RGB)."""
    try:
        if data[:2] == b"BM":
            image = _decode_with_pil(data)
        else:
            image = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError, OSError) as err:
        reason = (str(err).splitlines() or [type(err).__name__])[0]
        raise ValueError(f"cannot decode the image {where} ({reason}): the file is corrupt or not an image; replace "
                         f"or remove it.") from None
    if image.dtype != torch.uint8:  # 16-bit PNG
        image = tvF.to_dtype(image, torch.uint8, scale=True)
    return _fit(image, size)


def _check_classes(spec: DatasetSpec, classes: list[str], where: str) -> None:
    if len(classes) != spec.num_classes:
        raise ValueError(f"found {len(classes)} classes in {where}, but {spec.display_name} has {spec.num_classes}; "
                         f"the data set is incomplete or not {spec.display_name}: fix or replace it.")


def _check_counts(spec: DatasetSpec, split: str, labels, classes: list[str], where: Path) -> None:
    """The images per class of a complete split (``spec.train_per_class`` / ``test_per_class``), when known."""
    expected = spec.train_per_class if split == "train" else spec.test_per_class
    if expected is None:
        return
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(classes))
    wrong = [f"{classes[c]} has {n:,} of {expected:,}" for c, n in enumerate(counts.tolist()) if n != expected]
    if not wrong:
        return
    shown = "; ".join(wrong[:5]) + (f"; and {len(wrong) - 5} more classes" if len(wrong) > 5 else "")
    folder = _split_dir(spec, split)
    split = split if folder == split else f"{split} ({folder})"
    raise ValueError(
        f"{where} is incomplete or damaged: its {split} split holds {int(counts.sum()):,} images, but "
        f"{spec.display_name} has {expected * spec.num_classes:,} ({expected:,} per class); {shown}. "
        f"Download the data set again or re-create the archive from the original. For a deliberate subset, pass a "
        f"spec without the counts: dataclasses.replace(get_spec({spec.name!r}), train_per_class=None, "
        f"test_per_class=None).")


def _fingerprint(images: np.ndarray, labels: np.ndarray) -> str:
    h = hashlib.sha256(f"{images.shape}".encode())
    h.update(labels.tobytes())
    for start in range(0, len(images), HASH_CHUNK):
        h.update(np.ascontiguousarray(images[start:start + HASH_CHUNK]).data)
    return h.hexdigest()[:HASH_CHARS]


def _cache_paths(stem: Path) -> tuple[Path, Path, Path]:
    return stem.with_name(stem.name + ".images.npy"), stem.with_name(stem.name + ".labels.npy"), \
        stem.with_name(stem.name + ".json")


def _read_cache(stem: Path, spec: DatasetSpec) -> ImageTensors | None:
    """The cached split, or ``None`` when absent or damaged (with a warning)."""
    images_path, labels_path, meta_path = _cache_paths(stem)
    if not meta_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        images = np.load(images_path, mmap_mode="c")  # copy-on-write: pages load lazily, the file stays intact
        labels = np.load(labels_path)
        n, size = meta["num_images"], spec.image_size
        if images.shape != (n, 3, size, size) or images.dtype != np.uint8:
            raise ValueError(f"images of shape {images.shape}, expected {(n, 3, size, size)}")
        if labels.shape != (n,) or labels.dtype != np.int64 or (n and not 0 <= labels.min() <= labels.max()
                                                                 < len(meta["classes"])):
            raise ValueError("labels do not match the images")
        return ImageTensors(torch.from_numpy(images), torch.from_numpy(labels), list(meta["classes"]),
                            meta["source"], meta["fingerprint"])
    except Exception as err:  # a damaged cache only costs decoding again
        warnings.warn(f"the data cache {meta_path.name} in {stem.parent} is unreadable ({err}); decoding again.")
        return None


def _write_cache(stem: Path, spec: DatasetSpec, split: str, source: _Source, num_images: int, fill) -> ImageTensors:
    """Decode ``split`` into the cache: ``fill(images)`` fills a memory-mapped N x 3 x S x S array and returns
    ``(labels, classes)``. Files are written under temporary names, then renamed; the meta file comes last."""
    images_path, labels_path, meta_path = _cache_paths(stem)
    size = spec.image_size
    tmp_images = tempfile.NamedTemporaryFile(dir=stem.parent, prefix=f".{stem.name}.", suffix=".tmp", delete=False)
    tmp_images.close()
    tmp_labels = tmp_images.name + ".labels.npy"
    try:
        images = np.lib.format.open_memmap(tmp_images.name, mode="w+", dtype=np.uint8,
                                           shape=(num_images, 3, size, size))
        labels, classes = fill(images)
        labels = np.asarray(labels, dtype=np.int64)
        images.flush()
        fingerprint = _fingerprint(images, labels)
        del images
        np.save(tmp_labels, labels)
        os.replace(tmp_images.name, images_path)
        os.replace(tmp_labels, labels_path)
    finally:
        for tmp in (tmp_images.name, tmp_labels):
            if os.path.exists(tmp):
                os.unlink(tmp)
    meta = {"dataset": spec.name, "split": split, "num_images": num_images, "classes": classes,
            "source": source.describe(spec), "fingerprint": fingerprint, "source_path": source.path.name}
    atomic_json_dump(meta, meta_path)
    for path in (images_path, labels_path, meta_path):
        path.chmod(CACHE_FILE_MODE)
    cached = _read_cache(stem, spec)
    assert cached is not None, f"the cache {stem} just written cannot be read"
    return cached


def load_split(name: str | DatasetSpec, split: str, root: str | os.PathLike | None = None, *, download: bool = False,
               cache: str | os.PathLike | None = None) -> ImageTensors:
    """One split (``"train"`` or ``"test"``, the labelled evaluation split) of a data set, decoded once and cached.

    ``root``: the data root (:func:`data_root`); ``download=True`` fetches a missing CIFAR with torchvision;
    ``cache``: the folder of decoded arrays (:func:`cache_dir`). A changed source file is decoded again. The images
    are memory-mapped copy-on-write from the cache: changing them in memory never touches the file.
    """
    spec = get_spec(name)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)} (\"test\" is the labelled "
                         f"evaluation split: CIFAR test, Tiny-ImageNet val, ImageNet val).")
    source = _find_source(spec, data_root(root), download)
    if source.kind == "pickle":
        pickles, meta = _pickle_files(spec, split, source.path)
        identity = [_stat_identity(p, p.name) for p in pickles + [meta]]
    else:
        tree = (_DirTree if source.kind == "folder" else _TarTree)(source.path, _tree_parts(spec, split))
        identity = tree.identity
    key = stable_hash({"version": CACHE_VERSION, "dataset": spec.name, "split": split, "size": spec.image_size,
                       "kind": source.kind, "files": identity})
    stem = cache_dir(cache) / f"{spec.name}-{split}-{source.kind}-{key}"
    cached = _read_cache(stem, spec)
    if cached is not None:
        _check_counts(spec, split, cached.labels.numpy(), cached.classes, source.path)
        return cached

    if source.kind == "pickle":
        images, labels, classes = _read_pickles(spec, pickles, meta)
        _check_classes(spec, classes, str(source.path))
        _check_counts(spec, split, labels, classes, source.path)

        def fill(out: np.ndarray):
            out[:] = _fit(torch.from_numpy(images), spec.image_size).numpy()
            return labels, classes

        return _write_cache(stem, spec, split, source, len(images), fill)

    files, labels, classes = _parse_layout(tree, spec, split)
    _check_classes(spec, classes, tree.where(_split_dir(spec, split)))
    _check_counts(spec, split, labels, classes, source.path)

    def fill(out: np.ndarray):
        with warnings.catch_warnings():  # torchvision.io's decoders are deprecated in favour of TorchCodec
            warnings.simplefilter("ignore", DeprecationWarning)
            for i, rel in enumerate(progress(files, desc=f"decoding {spec.display_name} {split}", unit=" images")):
                out[i] = _decode(tree.read(rel), spec.image_size, tree.where(rel)).numpy()
        return labels, classes

    return _write_cache(stem, spec, split, source, len(files), fill)


# ------------------------------------------------------------------------------------------------------ splits


def _stratified(labels: torch.Tensor, n: int, num_classes: int, generator: torch.Generator, *, what: str,
                keep: int = 0) -> torch.Tensor:
    """``n`` sorted indices drawn at random, an equal share from each class (the remainder to random classes),
    leaving at least ``keep`` images of each class undrawn."""
    base, extra = divmod(n, num_classes)
    quota = torch.full((num_classes,), base, dtype=torch.int64)
    quota[torch.randperm(num_classes, generator=generator)[:extra]] += 1
    counts = torch.bincount(labels, minlength=num_classes)
    short = (counts < quota + keep).nonzero().flatten()
    if len(short):
        c = int(short[0])
        raise ValueError(f"{what}={n} needs {int(quota[c]) + keep} images of class {c}, which has {int(counts[c])}; "
                         f"choose a smaller {what}.")
    groups = torch.split(torch.argsort(labels, stable=True), counts.tolist())
    chosen = [g[torch.randperm(len(g), generator=generator)[:q]] for g, q in zip(groups, quota.tolist())]
    return torch.cat(chosen).sort().values


def load_dataset(name: str | DatasetSpec, root: str | os.PathLike | None = None, *, val_size: int | None = None,
                 split_seed: int = 0, download: bool = False, train_subset: int | None = None,
                 test_subset: int | None = None, cache: str | os.PathLike | None = None) -> DataSplits:
    """Train, validation and test splits of a data set.

    The validation split (``val_size`` images, default ``spec.val_size``) is carved from the training set: an equal
    share per class, drawn with ``split_seed``, disjoint from ``train``. ``train_subset`` / ``test_subset`` keep a
    stratified random subset of that many training / test images (for quick runs); validation is unaffected.
    """
    spec = get_spec(name)
    for what, n in (("train_subset", train_subset), ("test_subset", test_subset)):
        if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1):
            raise ValueError(f"{what} must be a positive number of images or None (all of them), got {n!r}.")
    full = load_split(spec, "train", root, download=download, cache=cache)
    test = load_split(spec, "test", root, download=download, cache=cache)
    if full.classes != test.classes:
        raise ValueError(f"the training and test splits of {spec.display_name} name different classes "
                         f"({sorted(set(full.classes) ^ set(test.classes))[:5]} ...); fix the class folders.")
    val_size = spec.val_size if val_size is None else val_size
    if val_size <= 0:
        raise ValueError(f"val_size must be positive (got {val_size}): the validation split is needed for "
                         f"calibration and model selection.")
    if val_size >= len(full) - spec.num_classes:
        raise ValueError(f"val_size={val_size} leaves too few training images ({len(full)} in all, "
                         f"{spec.num_classes} classes); choose val_size < {len(full) - spec.num_classes}.")
    generator = torch.Generator().manual_seed(_derive_seed("val", split_seed))
    val_index = _stratified(full.labels, val_size, spec.num_classes, generator, what="val_size", keep=1)
    in_val = torch.zeros(len(full), dtype=torch.bool)
    in_val[val_index] = True
    train, val = full.subset(~in_val), full.subset(val_index)
    if train_subset is not None:
        generator = torch.Generator().manual_seed(_derive_seed("train_subset", split_seed))
        train = train.subset(_stratified(train.labels, train_subset, spec.num_classes, generator, what="train_subset"))
    if test_subset is not None:
        generator = torch.Generator().manual_seed(_derive_seed("test_subset", split_seed))
        test = test.subset(_stratified(test.labels, test_subset, spec.num_classes, generator, what="test_subset"))
    return DataSplits(spec, train, val, test)


# ------------------------------------------------------------------------------------------------ augmentation


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


# ------------------------------------------------------------------------------------------------------ loader


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
