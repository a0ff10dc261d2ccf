"""How a data set's images are laid out on disk (:class:`Layout`, :data:`LAYOUTS`): ImageFolder
(``<split>/<class>/<image>``, the default), Tiny-ImageNet-200 and ImageNet; each parses a source's file tree into
files, labels and class names, and names an image it cannot label."""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any, Callable

from ..registry import Registry
from .sources import DATA_ENV, _DirTree
from .specs import DatasetSpec, _split_dir

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")

def _is_image(rel: str) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")  # skips macOS "._*" files

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
