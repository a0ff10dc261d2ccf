"""A data set's splits: :func:`load_dataset` gives train, validation (carved from the training set, stratified
and seeded) and test, with optional stratified subsets."""
from __future__ import annotations

import os

import numpy as np
import torch

from .cache import load_split
from .specs import DatasetSpec, DataSplits, _derive_seed, get_spec

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
