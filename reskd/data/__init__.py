"""Image data sets as uint8 tensors in memory, and a seeded, augmenting batch loader.

Four data sets, found under the data root (:func:`data_root`) in any of these forms, tried in this order:

=============  ==========================================================================================
cifar10        ``cifar-10-batches-py/`` (torchvision's original), ``cifar10-jpeg/``, ``cifar10-jpeg.tar.gz``
cifar100       ``cifar-100-python/`` (torchvision's original), ``cifar100-jpeg/``, ``cifar100-jpeg.tar.gz``
tiny-imagenet  ``tiny-imagenet-200/``, ``tiny-imagenet-200.tar.gz`` (the standard archive layout); ``download=True``
               fetches the published zip (:data:`DOWNLOADS`), checked against its md5 before it is unpacked
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

The package, one module per concern (every name below is importable from ``reskd.data`` itself):

==============  ==================================================================================================
``specs``       :class:`DatasetSpec`, :data:`SPECS`, :func:`get_spec`; :class:`ImageTensors`, :class:`DataSplits`
``sources``     :func:`data_root`, :func:`is_available`; folders, ``.tar.gz`` streams, torchvision's CIFAR pickles
``layouts``     :class:`Layout`, :data:`LAYOUTS`, :data:`IMAGE_FOLDER`: files, labels and classes of a source
``decode``      one encoded image to a uint8 RGB square
``integrity``   :data:`PUBLISHED_MD5`, the class and per-class image counts
``cache``       :func:`cache_dir`, :func:`load_split`: each split decoded once into a memory-mapped cache
``splits``      :func:`load_dataset`: train, the seeded stratified validation split, test, subsets
``augment``     :data:`AUGMENTATIONS`, :func:`augment_params`, :func:`augment_batch`, :func:`eval_transform`,
                :func:`normalize`
``loader``      :class:`Loader`
==============  ==================================================================================================
"""
from __future__ import annotations

# The names reskd.data has always had, re-exported from the module that now holds each (the private ones too, for
# the code and tests that reach them); `python -c "import reskd.data"` imports every module, as before.
from .augment import (AUGMENT_VERSION, AUGMENTATIONS, FLIP_PROB, RRC_ATTEMPTS, RRC_RATIO, RRC_SCALE, Augmentation,
                      _crop_flip, _crop_flip_params, _rrc_boxes, _rrc_flip, augment_batch, augment_params,
                      eval_transform, normalize)
from .cache import (CACHE_ENV, CACHE_FILE_MODE, CACHE_VERSION, DEFAULT_CACHE_DIR, HASH_CHUNK, _cache_paths,
                    _fingerprint, _read_cache, _write_cache, cache_dir, load_split)
from .decode import _decode, _decode_with_pil, _fit
from .integrity import PUBLISHED_MD5, _check_classes, _check_counts, _check_md5, _redownload
from .layouts import (IMAGE_EXTENSIONS, IMAGE_FOLDER, LAYOUTS, Layout, Parsed, _empty_class_error, _image_folder,
                      _imagenet, _is_image, _layout, _layout_error, _parse_layout, _read_text, _tiny_imagenet,
                      _tree_parts, _unlabelled_error)
from .loader import Loader
from .sources import (_GZIP_CHUNK, _LOCATIONS, _TAR_SUFFIX, DATA_ENV, DEFAULT_DATA_DIR, _BrokenHeader, _DirTree,
                      _find_source, _pickle_files, _read_pickles, _Source, _stat_identity, _StrictTarInfo, _TarTree,
                      _unpickle, data_root, fetch_archive, is_available)
from .specs import (_TORCHVISION, DOWNLOADS, SPECS, SPLITS, DatasetSpec, DataSplits, Download, ImageTensors,
                    _derive_seed, _digest, _split_dir, get_spec)
from .splits import _stratified, load_dataset

__all__ = ["AUGMENTATIONS", "AUGMENT_VERSION", "Augmentation", "CACHE_ENV", "CACHE_FILE_MODE", "CACHE_VERSION",
           "DATA_ENV", "DEFAULT_CACHE_DIR", "DEFAULT_DATA_DIR", "DOWNLOADS", "DataSplits", "DatasetSpec", "Download",
           "FLIP_PROB", "HASH_CHUNK",
           "IMAGE_EXTENSIONS", "IMAGE_FOLDER", "ImageTensors", "LAYOUTS", "Layout", "Loader", "PUBLISHED_MD5",
           "Parsed", "RRC_ATTEMPTS", "RRC_RATIO", "RRC_SCALE", "SPECS", "SPLITS", "augment_batch", "augment_params",
           "cache_dir", "data_root", "eval_transform", "fetch_archive", "get_spec", "is_available", "load_dataset", "load_split",
           "normalize"]
