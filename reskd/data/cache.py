"""The decoded-image cache (not :mod:`reskd.cache`, the cache of model outputs): :func:`load_split` decodes a
split once into uint8 arrays under :func:`cache_dir`, keyed by its source files' identities, and memory-maps them on
every later load."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from ..utils import HASH_CHARS, atomic_json_dump, progress, stable_hash
from .decode import _decode, _fit
from .integrity import _check_classes, _check_counts
from .layouts import _parse_layout, _tree_parts
from .sources import _DirTree, _find_source, _pickle_files, _read_pickles, _Source, _stat_identity, _TarTree, data_root
from .specs import SPLITS, DatasetSpec, ImageTensors, _split_dir, get_spec

CACHE_ENV = "RESKD_CACHE"
DEFAULT_CACHE_DIR = Path("~/.cache/reskd")

CACHE_VERSION = 1  # bump when the decoded arrays would change, to invalidate old caches
HASH_CHUNK = 4096  # images hashed at a time when fingerprinting
CACHE_FILE_MODE = 0o644  # cache files are readable by others sharing the cache folder

def cache_dir(cache: str | os.PathLike | None = None) -> Path:
    """The folder of decoded data (created): ``cache``, else ``$RESKD_CACHE``, else ``~/.cache/reskd``."""
    path = Path(cache if cache is not None else os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path

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
