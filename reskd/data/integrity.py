"""The checks every load makes of what it reads, beside those of the archives (:mod:`reskd.data.sources`) and of
the layouts (:mod:`reskd.data.layouts`): torchvision's published md5 of each CIFAR pickle (before it is unpickled),
the number of classes, and the images per class of a complete split. Each failure names the file and the fix."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from .specs import _TORCHVISION, DatasetSpec, _split_dir

_READ_CHUNK = 1 << 20  # bytes read at a time when hashing a file

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
        for block in iter(lambda: f.read(_READ_CHUNK), b""):
            h.update(block)
    if h.hexdigest() != expected:
        raise ValueError(f"{path} fails its checksum: md5 {h.hexdigest()}, but torchvision publishes {expected} for "
                         f"{path.name} of {spec.display_name}; the file is damaged or not the original, and is not "
                         f"unpickled. {_redownload(path.parent)}")

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
