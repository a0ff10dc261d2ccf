"""Shared pytest fixtures.

Data fixtures: tiny fake data sets, written to ``tmp_path`` in every on-disk format that ``reskd.data`` reads.
Each factory returns a namespace with ``root`` (the data root) and what was written (``train_images``,
``train_labels``, ``test_images``, ``test_labels`` as N x 3 x H x W / N arrays in the loader's order, ``classes``).
Tiny-ImageNet and ImageNet use a custom :class:`~reskd.data.DatasetSpec` with few classes (``ns.spec``), which the
loading functions accept in place of a data set name. The fixtures hold a few images per class, not the real data
sets' counts, so each one turns the per-class count check off (:func:`few_per_class`) for the specs it stands in for.
"""
from __future__ import annotations

import dataclasses
import hashlib
import pickle
import tarfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from reskd.data import PUBLISHED_MD5, SPECS
from reskd.experiment import Experiment
from reskd.profiles import Arch, get_profile
from reskd.train import TrainConfig

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
JPEG_QUALITY = 95
NO_COUNTS = dict(train_per_class=None, test_per_class=None)
TINY_SPEC = dataclasses.replace(SPECS["tiny-imagenet"], num_classes=4, val_size=4, **NO_COUNTS)
IMAGENET_SPEC = dataclasses.replace(SPECS["imagenet"], num_classes=3, image_size=24, crop_size=20, val_size=3,
                                    **NO_COUNTS)


def few_per_class(monkeypatch, name: str) -> None:
    """While the test runs, the data set ``name`` (by name) is not checked against the real per-class counts."""
    monkeypatch.setitem(SPECS, name, dataclasses.replace(SPECS[name], **NO_COUNTS))


def smooth_images(n: int, height: int, width: int, seed: int) -> np.ndarray:
    """``n`` random but smooth RGB images (N x H x W x 3 uint8), which survive JPEG nearly unchanged."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (n, 3, 3, 3)).astype(np.float32)
    ys, xs = np.linspace(0, 2, height), np.linspace(0, 2, width)
    y0, x0 = np.minimum(ys.astype(int), 1), np.minimum(xs.astype(int), 1)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    top = coarse[:, y0][:, :, x0] * (1 - fx) + coarse[:, y0][:, :, x0 + 1] * fx
    bottom = coarse[:, y0 + 1][:, :, x0] * (1 - fx) + coarse[:, y0 + 1][:, :, x0 + 1] * fx
    return np.round(top * (1 - fy) + bottom * fy).astype(np.uint8)


def save_image(path: Path, hwc: np.ndarray, grayscale: bool = False) -> np.ndarray:
    """Write ``hwc`` (format from the suffix); return the 3 x H x W array a perfect RGB decoder would give."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(hwc)
    if grayscale:
        image = image.convert("L")
    fmt = "PNG" if path.suffix.lower() == ".png" else "JPEG"
    image.save(path, format=fmt, **({"quality": JPEG_QUALITY} if fmt == "JPEG" else {}))
    return np.asarray(image.convert("RGB")).transpose(2, 0, 1).copy()


def make_tarball(folder: Path, tar_path: Path) -> Path:
    """``folder`` as ``tar_path`` (.tar.gz), with the folder as the archive's top entry."""
    tar_path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tar_path, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return tar_path


def _stack(images: list[np.ndarray], labels: list[int]) -> tuple[np.ndarray, np.ndarray]:
    return np.stack(images), np.asarray(labels, dtype=np.int64)


@pytest.fixture
def make_cifar_pickles(tmp_path, monkeypatch):
    """CIFAR-10/100 in torchvision's original pickle format (a few images per class)."""
    few_per_class(monkeypatch, "cifar10")
    few_per_class(monkeypatch, "cifar100")

    def make(name: str = "cifar10", root: Path | None = None) -> SimpleNamespace:
        root = root or tmp_path / f"{name}-pickles"
        ten = name == "cifar10"
        classes = CIFAR10_CLASSES if ten else [f"class{i:03d}" for i in range(100)]
        folder = root / ("cifar-10-batches-py" if ten else "cifar-100-python")
        folder.mkdir(parents=True)
        label_key = b"labels" if ten else b"fine_labels"
        batches = {f"data_batch_{i}": 10 for i in range(1, 6)} if ten else {"train": 200}
        batches["test_batch" if ten else "test"] = 20 if ten else 100
        rng = np.random.default_rng(0)
        written = {"train": ([], []), "test": ([], [])}
        for seed, (file, n) in enumerate(batches.items()):
            images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
            labels = [int(x) for x in rng.permutation(np.arange(n) % len(classes))]
            entry = {b"batch_label": file.encode(), b"data": images.reshape(n, -1), label_key: labels}
            (folder / file).write_bytes(pickle.dumps(entry))
            split = "test" if file.startswith("test") else "train"
            written[split][0].append(images)
            written[split][1].extend(labels)
        meta_key, meta_file = (b"label_names", "batches.meta") if ten else (b"fine_label_names", "meta")
        (folder / meta_file).write_bytes(pickle.dumps({meta_key: [c.encode() for c in classes]}))
        # the fixture's files stand in for torchvision's: their md5s stand in for the published ones
        monkeypatch.setitem(PUBLISHED_MD5, name, {p.name: hashlib.md5(p.read_bytes()).hexdigest()
                                                  for p in folder.iterdir()})
        return SimpleNamespace(root=root, folder=folder, classes=classes,
                               train_images=np.concatenate(written["train"][0]),
                               train_labels=np.asarray(written["train"][1]),
                               test_images=np.concatenate(written["test"][0]),
                               test_labels=np.asarray(written["test"][1]))

    return make


@pytest.fixture
def make_cifar_folder(tmp_path, monkeypatch):
    """CIFAR-10 as an image folder ``cifar10-jpeg/{train,test}/<class>/*``: 3 PNGs per class for training (the
    first one grayscale), 2 JPEGs per class for testing; ``tarball=True`` packs it as ``cifar10-jpeg.tar.gz``."""

    few_per_class(monkeypatch, "cifar10")

    def make(tarball: bool = False, root: Path | None = None, train_per_class: int = 3) -> SimpleNamespace:
        root = root or tmp_path / ("cifar-tar" if tarball else "cifar-folder")
        folder = (tmp_path / "cifar-tar-src" if tarball else root) / "cifar10-jpeg"
        split_images = {"train": ([], []), "test": ([], [])}
        for split, per_class, suffix in (("train", train_per_class, ".png"), ("test", 2, ".jpg")):
            pixels = smooth_images(len(CIFAR10_CLASSES) * per_class, 32, 32, seed=len(split))
            for c, name in enumerate(CIFAR10_CLASSES):
                for i in range(per_class):
                    path = folder / split / name / f"{i:04d}{suffix}"
                    gray = split == "train" and i == 0
                    split_images[split][0].append(save_image(path, pixels[c * per_class + i], grayscale=gray))
                    split_images[split][1].append(c)
        if tarball:
            make_tarball(folder, root / "cifar10-jpeg.tar.gz")
        train_images, train_labels = _stack(*split_images["train"])
        test_images, test_labels = _stack(*split_images["test"])
        return SimpleNamespace(root=root, folder=folder, classes=CIFAR10_CLASSES, train_images=train_images,
                               train_labels=train_labels, test_images=test_images, test_labels=test_labels)

    return make


@pytest.fixture
def make_tiny_imagenet(tmp_path):
    """Tiny-ImageNet's standard layout with ``TINY_SPEC.num_classes`` classes, 3 training and 2 validation JPEGs
    per class (one training image grayscale); ``tarball=True`` packs it as ``tiny-imagenet-200.tar.gz``."""

    def make(tarball: bool = False) -> SimpleNamespace:
        root = tmp_path / ("tiny-tar" if tarball else "tiny-folder")
        folder = (tmp_path / "tiny-src" if tarball else root) / "tiny-imagenet-200"
        wnids = ["n04", "n01", "n03", "n02"][: TINY_SPEC.num_classes]  # unsorted on purpose
        classes = sorted(wnids)
        folder.mkdir(parents=True)
        (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")
        (folder / "words.txt").write_text("".join(f"{w}\tthing {w}\n" for w in wnids + ["n99"]))
        train, train_labels = [], []
        pixels = smooth_images(3 * len(classes), 64, 64, seed=1)
        for c, wnid in enumerate(classes):
            (folder / "train" / wnid).mkdir(parents=True)
            (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text(f"{wnid}_0.JPEG\t0\t0\t63\t63\n")
            for i in range(3):
                path = folder / "train" / wnid / "images" / f"{wnid}_{i}.JPEG"
                train.append(save_image(path, pixels[3 * c + i], grayscale=(c, i) == (1, 2)))
                train_labels.append(c)
        # val images are labelled by the annotation file only; the file names sort as val_0, val_1, val_10, ...
        val_labels = [(3 * i + 1) % len(classes) for i in range(2 * len(classes))]
        pixels = smooth_images(len(val_labels), 64, 64, seed=2)
        names = [f"val_{i}.JPEG" for i in range(len(val_labels))]
        rows, test = [], {}
        for name, label, hwc in zip(names, val_labels, pixels):
            test[name] = (save_image(folder / "val" / "images" / name, hwc), label)
            rows.append(f"{name}\t{classes[label]}\t0\t0\t63\t63\n")
        (folder / "val" / "val_annotations.txt").write_text("".join(rows))
        if tarball:
            make_tarball(folder, root / "tiny-imagenet-200.tar.gz")
        test_images, test_labels = _stack(*zip(*(test[name] for name in sorted(test))))
        train_images, train_labels = _stack(train, train_labels)
        return SimpleNamespace(root=root, folder=folder, spec=TINY_SPEC, classes=classes, train_images=train_images,
                               train_labels=train_labels, test_images=test_images, test_labels=test_labels)

    return make


@pytest.fixture
def make_imagenet(tmp_path):
    """ImageNet's ImageFolder layout with ``IMAGENET_SPEC.num_classes`` classes and PNGs of assorted sizes; the
    validation images are in class folders, or flat with Kaggle's ``LOC_val_solution.csv`` (``flat_val=True``).
    ``raw_train`` / ``raw_test`` hold the images as written (3 x H x W), before squaring to the stored size."""

    def make(flat_val: bool = False) -> SimpleNamespace:
        root = tmp_path / ("imagenet-flat" if flat_val else "imagenet-folders")
        folder = root / "imagenet"
        classes = [f"n0{i}" for i in range(IMAGENET_SPEC.num_classes)]
        sizes = [(40, 30), (30, 52), (24, 24), (61, 47)]  # (height, width)
        raw_train, train_labels = [], []
        for c, wnid in enumerate(classes):
            for i, (h, w) in enumerate(sizes):
                hwc = smooth_images(1, h, w, seed=10 * c + i)[0]
                raw_train.append(save_image(folder / "train" / wnid / f"{wnid}_{i}.png", hwc))
                train_labels.append(c)
        raw_test, test_labels, rows = [], [], ["ImageId,PredictionString\n"]
        for c, wnid in enumerate(classes):
            for i, (h, w) in enumerate(sizes[:2]):
                image_id = f"ILSVRC2012_val_{2 * c + i:08d}"
                path = folder / "val" / ("" if flat_val else wnid) / f"{image_id}.png"
                raw_test.append(save_image(path, smooth_images(1, h, w, seed=100 + 10 * c + i)[0]))
                test_labels.append(c)
                rows.append(f"{image_id},{wnid} 1 2 3 4 {wnid} 5 6 7 8\n")
        if flat_val:
            (folder / "LOC_val_solution.csv").write_text("".join(rows))
        return SimpleNamespace(root=root, folder=folder, spec=IMAGENET_SPEC, classes=classes, raw_train=raw_train,
                               train_labels=np.asarray(train_labels), raw_test=raw_test,
                               test_labels=np.asarray(test_labels))

    return make


TINY_TRAIN = TrainConfig(epochs=1, batch_size=16, lr=0.05)  # one short epoch: what the fixture runs train with


@pytest.fixture
def exp(make_cifar_pickles, tmp_path, monkeypatch):
    """``exp(**kw)``: an :class:`Experiment` of resnet8x0.5 models trained for one epoch on a fixture CIFAR-10, with
    its artifacts and caches in ``tmp_path``."""
    monkeypatch.setenv("RESKD_CACHE", str(tmp_path / "cache"))
    data = make_cifar_pickles("cifar10")
    profile = get_profile("cifar10", "smoke").replace(
        teacher=Arch("resnet8", 0.5), student=Arch("resnet8", 0.5), res_students=(Arch("resnet8", 0.5),),
        equal_cost=Arch("resnet8", 0.7), teacher_train=TINY_TRAIN, student_train=TINY_TRAIN, val_size=10, train_subset=None,
        test_subset=None)

    def make(**kw):
        return Experiment(profile, data_root=data.root, artifacts=tmp_path / "artifacts", device="cpu",
                          progress=False, **kw)

    return make
