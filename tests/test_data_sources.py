"""The two sources of CIFAR-10 select the same validation images.

Colab users read torchvision's original CIFAR-10 (pickled batches whose classes are interleaved); the committed models
were trained on a class-folder copy (the shared JPEG copy). The validation split is drawn by rank within each class
(``reskd.data.load_dataset``: the k-th image of a class, in the source's order), so both sources hold out the same
images exactly when the copy keeps the original's order within each class (data/README.md states this assumption)."""
from __future__ import annotations

import numpy as np
from PIL import Image

from reskd.data import load_dataset

VAL_SIZE = 20


def _folder_copy(pickles, root, *, reverse_within_class: bool = False):
    """The pickled data set written as ``cifar10-jpeg/{train,test}/<class>/NNNN.png`` (lossless), each class's images
    numbered in the order they have in the pickles (or the reverse)."""
    for split, images, labels in (("train", pickles.train_images, pickles.train_labels),
                                  ("test", pickles.test_images, pickles.test_labels)):
        for c, name in enumerate(pickles.classes):
            members = np.flatnonzero(labels == c)
            for rank, i in enumerate(members[::-1] if reverse_within_class else members):
                path = root / "cifar10-jpeg" / split / name / f"{rank:04d}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(images[i].transpose(1, 2, 0)).save(path)
    return root


def _as_set(split) -> set[tuple[int, bytes]]:
    return {(int(y), x.numpy().tobytes()) for x, y in zip(split.images, split.labels)}


def test_interleaved_pickles_and_a_class_sorted_copy_hold_out_the_same_images(make_cifar_pickles, tmp_path):
    pickles = make_cifar_pickles("cifar10")
    assert len(set(pickles.train_labels[:10])) > 1  # the fixture's classes are interleaved, as the original's are
    original = load_dataset("cifar10", pickles.root, val_size=VAL_SIZE, cache=tmp_path / "cache-a")
    copy = load_dataset("cifar10", _folder_copy(pickles, tmp_path / "copy"), val_size=VAL_SIZE,
                        cache=tmp_path / "cache-b")
    assert original.source != copy.source
    assert _as_set(original.val) == _as_set(copy.val) and len(_as_set(copy.val)) == VAL_SIZE
    assert _as_set(original.train) == _as_set(copy.train) and _as_set(original.test) == _as_set(copy.test)
    # a copy that does not keep the within-class order holds out other images: the assumption is needed
    shuffled = load_dataset("cifar10", _folder_copy(pickles, tmp_path / "reversed", reverse_within_class=True),
                            val_size=VAL_SIZE, cache=tmp_path / "cache-c")
    assert _as_set(shuffled.val) != _as_set(original.val)
