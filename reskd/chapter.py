"""What the book's chapters take and need: their papermill parameters, checked in one place, and the data sets each
chapter reads in each profile (so that the book's runner can say what is missing before it executes anything)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .data import data_root, get_spec, is_available, load_split
from .profiles import PROFILE_NAMES as PROFILES
DOWNLOADABLE = ("cifar10", "cifar100", "tiny-imagenet")  # what reskd.data's download=True fetches
PROFILE_RANK = {name: rank for rank, name in enumerate(PROFILES)}  # a page of a higher profile is worth more
# The data sets a chapter reads (the toy problem of chapter 1 and the summary read none).
CHAPTER_DATA: dict[str, tuple[str, ...]] = {
    "01_residual_theory": ("cifar10",),
    "02_cifar": ("cifar10",),
    "03_imagenet": ("tiny-imagenet",),
    "04_adaptive": ("cifar10",),
    "05_summary": (),
}


def _is_path(value: Any) -> bool:
    return isinstance(value, (str, os.PathLike)) and str(value) != ""


def check_parameters(*, profile: Any, data_root: Any = None, seeds: Any = None, retrain: Any = False,
                     device: Any = "auto", results_dir: Any = None, train_missing: Any = True, download: Any = False,
                     profiles: tuple[str, ...] = PROFILES, **others: Any) -> None:
    """Check a chapter's parameters (as papermill or a reader set them); raise one ``ValueError`` listing every bad
    value with what to use instead. ``profiles``: the profiles the chapter knows; ``others``: the chapter's own
    parameters, each given as ``name=(value, allowed values)``."""
    problems = []
    if profile not in profiles:
        problems.append(f"profile={profile!r}: use one of {', '.join(map(repr, profiles))}")
    if data_root is not None and not _is_path(data_root):
        problems.append(f"data_root={data_root!r}: use None ($RESKD_DATA, else data/) or a folder's path")
    if seeds is not None and not (isinstance(seeds, (list, tuple)) and seeds and all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)):
        problems.append(f"seeds={seeds!r}: use None (the profile's) or a non-empty list of ints >= 0, e.g. [0, 1, 2]")
    for name, value in (("retrain", retrain), ("train_missing", train_missing), ("download", download)):
        if not isinstance(value, bool):
            problems.append(f"{name}={value!r}: use True or False")
    if not (device in (None, "auto") or isinstance(device, (str, torch.device))):
        problems.append(f"device={device!r}: use 'auto', 'cpu' or 'cuda'")
    elif isinstance(device, str) and device != "auto":
        try:
            torch.device(device)
        except RuntimeError:
            problems.append(f"device={device!r}: use 'auto', 'cpu' or 'cuda'")
    if results_dir is not None and not _is_path(results_dir):
        problems.append(f"results_dir={results_dir!r}: use None (the project's results/) or a folder's path")
    for name, (value, allowed) in others.items():
        if value not in allowed:
            problems.append(f"{name}={value!r}: use one of {', '.join(map(repr, allowed))}")
    if problems:
        raise ValueError("bad chapter parameters: " + "; ".join(problems) + ".")


def missing_data(chapter: str, root: str | os.PathLike | None = None) -> list[str]:
    """The data sets ``chapter`` reads that are not under the data root (no download is attempted)."""
    return [name for name in CHAPTER_DATA.get(chapter, ()) if not is_available(name, root)]


def missing_data_message(missing: dict[str, list[str]], root: str | os.PathLike | None = None) -> str:
    """One line: which chapters lack which data sets under which root, and how to get them."""
    where = Path(data_root(root))
    parts = [f"{chapter} needs {', '.join(get_spec(n).display_name for n in names)}" for chapter, names in
             missing.items()]
    online = sorted({n for names in missing.values() for n in names} & set(DOWNLOADABLE))
    fetch = "".join(f"; online, python -c \"from reskd.data import load_dataset; load_dataset('{n}', download=True)\" "
                    f"fetches {get_spec(n).display_name} into it" for n in online)
    return (f"missing data: {'; '.join(parts)}, not found under the data root {where}: set RESKD_DATA (or "
            f"--data-root) to a folder holding them in a layout of data/README.md{fetch}.")


def fetch_data(chapter: str, root: str | os.PathLike | None = None) -> list[str]:
    """Download the data sets ``chapter`` reads that are missing and that can be fetched (CIFAR, Tiny-ImageNet) into the data
    root; print how to get the others. Returns the names fetched. (The Colab cell of every chapter calls this.)"""
    fetched = []
    for name in missing_data(chapter, root):
        if name in DOWNLOADABLE:
            load_split(name, "train", root, download=True)  # fetches and unpacks both splits
            fetched.append(name)
        else:
            print(f"{get_spec(name).display_name} is not under the data root {data_root(root)} and cannot be "
                  f"downloaded: put it there in a layout of data/README.md (e.g. its .tar.gz).")
    return fetched
