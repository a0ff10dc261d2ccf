import dataclasses
import gzip
import io
import os
import pickle
import re
import struct
import tarfile
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
import torchvision.transforms.v2.functional as tvF
from PIL import Image

from reskd import data
from reskd.utils import project_root
from reskd.data import (SPECS, ImageTensors, Loader, augment_batch, augment_params, cache_dir, data_root,
                        eval_transform, get_spec, load_dataset, load_split, normalize)

from conftest import make_tarball, save_image, smooth_images

JPEG_TOLERANCE = 3.0  # mean absolute error of a quality-95 JPEG of a smooth image, in grey levels
FAST_LOAD_S = 2.0


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


def random_tensors(n: int = 23, size: int = 32, num_classes: int = 4, seed: int = 0) -> ImageTensors:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    return ImageTensors(images, torch.arange(n) % num_classes, [f"c{i}" for i in range(num_classes)], "random",
                        f"random{n}-{seed}")


def cifar_like(num_classes: int = 4) -> data.DatasetSpec:
    return dataclasses.replace(SPECS["cifar10"], name="cifar-like", num_classes=num_classes)


def imagenet_like(image_size: int = 144, crop_size: int = 128) -> data.DatasetSpec:
    return dataclasses.replace(SPECS["imagenet"], image_size=image_size, crop_size=crop_size)


# ------------------------------------------------------------------------------------------- specs and roots


def test_specs_and_unknown_name():
    assert set(SPECS) == {"cifar10", "cifar100", "tiny-imagenet", "imagenet"}
    assert get_spec("cifar100").num_classes == 100 and get_spec("tiny-imagenet").pad == 8
    assert get_spec(SPECS["imagenet"]) is SPECS["imagenet"]
    with pytest.raises(ValueError, match="unknown data set 'mnist'.*cifar10, cifar100, tiny-imagenet, imagenet"):
        get_spec("mnist")


def test_known_sizes_of_the_real_data_sets():
    """Every load of a data set of known size is checked against its images per class (train, test)."""
    sizes = {name: (spec.train_per_class, spec.test_per_class) for name, spec in SPECS.items()}
    assert sizes == {"cifar10": (5000, 1000), "cifar100": (500, 100), "tiny-imagenet": (500, 50),
                     "imagenet": (None, 50)}


def test_data_root_and_cache_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(data.DATA_ENV, raising=False)
    monkeypatch.delenv(data.CACHE_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_root() == project_root() / "data"
    assert cache_dir() == tmp_path / "home" / ".cache" / "reskd" and cache_dir().is_dir()
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path / "env-data"))
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path / "env-cache"))
    assert data_root() == tmp_path / "env-data" and cache_dir() == tmp_path / "env-cache"
    assert data_root(tmp_path / "arg") == tmp_path / "arg" and cache_dir(tmp_path / "c") == tmp_path / "c"


# ------------------------------------------------------------------------------------------------- formats


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_pickles_load_exactly(make_cifar_pickles, cache, name):
    ns = make_cifar_pickles(name)
    for split in ("train", "test"):
        split_data = load_split(name, split, ns.root, cache=cache)
        assert split_data.images.dtype == torch.uint8 and split_data.images.is_contiguous()
        assert split_data.labels.dtype == torch.int64
        assert split_data.classes == ns.classes
        assert "torchvision original" in split_data.source
        np.testing.assert_array_equal(np.asarray(split_data.images), getattr(ns, f"{split}_images"))
        np.testing.assert_array_equal(np.asarray(split_data.labels), getattr(ns, f"{split}_labels"))


@pytest.mark.parametrize("tarball", [False, True], ids=["folder", "tarball"])
def test_image_folder_loads(make_cifar_folder, cache, tarball):
    ns = make_cifar_folder(tarball=tarball)
    train = load_split("cifar10", "train", ns.root, cache=cache)
    test = load_split("cifar10", "test", ns.root, cache=cache)
    assert train.images.shape == (30, 3, 32, 32) and test.images.shape == (20, 3, 32, 32)
    assert train.classes == test.classes == ns.classes
    assert train.source == f"CIFAR-10 (JPEG copy, {'cifar10-jpeg.tar.gz' if tarball else 'cifar10-jpeg'})"
    np.testing.assert_array_equal(np.asarray(train.images), ns.train_images)  # PNG: exact, grayscale -> RGB
    np.testing.assert_array_equal(np.asarray(train.labels), ns.train_labels)
    np.testing.assert_array_equal(np.asarray(test.labels), ns.test_labels)
    error = np.abs(np.asarray(test.images).astype(float) - ns.test_images).mean()
    assert error < JPEG_TOLERANCE  # JPEG: approximately


def test_grayscale_becomes_three_equal_channels(make_cifar_folder, cache):
    train = load_split("cifar10", "train", make_cifar_folder().root, cache=cache)
    gray = train.images[0]  # the first image of each class was written grayscale
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    assert not torch.equal(train.images[1][0], train.images[1][1])


@pytest.mark.parametrize("tarball", [False, True], ids=["folder", "tarball"])
def test_tiny_imagenet_loads(make_tiny_imagenet, cache, tarball):
    ns = make_tiny_imagenet(tarball=tarball)
    train = load_split(ns.spec, "train", ns.root, cache=cache)
    test = load_split(ns.spec, "test", ns.root, cache=cache)
    assert train.classes == test.classes == ns.classes  # sorted wnids
    assert train.images.shape == (12, 3, 64, 64) and test.images.shape == (8, 3, 64, 64)
    np.testing.assert_array_equal(np.asarray(train.labels), ns.train_labels)
    np.testing.assert_array_equal(np.asarray(test.labels), ns.test_labels)  # from val_annotations.txt
    for split_data, written in ((train, ns.train_images), (test, ns.test_images)):
        assert np.abs(np.asarray(split_data.images).astype(float) - written).mean() < JPEG_TOLERANCE
    assert "Tiny-ImageNet-200" in train.source


@pytest.mark.parametrize("flat_val", [False, True], ids=["class-folders", "flat-val-csv"])
def test_imagenet_loads_and_squares_images(make_imagenet, cache, flat_val):
    ns = make_imagenet(flat_val=flat_val)
    size = ns.spec.image_size
    for split, raw, labels in (("train", ns.raw_train, ns.train_labels), ("test", ns.raw_test, ns.test_labels)):
        split_data = load_split(ns.spec, split, ns.root, cache=cache)
        assert split_data.classes == ns.classes
        assert split_data.images.shape == (len(raw), 3, size, size)
        np.testing.assert_array_equal(np.asarray(split_data.labels), labels)
        for got, image in zip(split_data.images, raw):  # short side resized to `size`, then centre-cropped
            resized = tvF.resize(torch.from_numpy(image), [size], antialias=True)
            assert min(resized.shape[-2:]) == size
            assert torch.equal(got, tvF.center_crop(resized, [size, size]))


def test_source_preference_original_then_folder_then_tarball(make_cifar_pickles, make_cifar_folder, cache):
    ns = make_cifar_folder(tarball=True)
    make_cifar_folder(root=ns.root)  # the extracted folder beside the tarball
    assert load_split("cifar10", "test", ns.root, cache=cache).source.endswith("(JPEG copy, cifar10-jpeg)")
    make_cifar_pickles("cifar10", root=ns.root)
    assert "torchvision original" in load_split("cifar10", "test", ns.root, cache=cache).source


# -------------------------------------------------------------------------------------------------- cache


def test_cache_is_reused_without_decoding(make_cifar_folder, cache, monkeypatch):
    ns = make_cifar_folder()
    first = load_split("cifar10", "train", ns.root, cache=cache)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(data.cache, "_decode", no_decoding)  # where load_split looks it up
    start = time.perf_counter()
    second = load_split("cifar10", "train", ns.root, cache=cache)
    assert time.perf_counter() - start < FAST_LOAD_S
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    assert first.fingerprint == second.fingerprint and len(first.fingerprint) == 16


def test_changed_source_is_decoded_again(make_cifar_folder, cache):
    ns = make_cifar_folder()
    before = load_split("cifar10", "train", ns.root, cache=cache)
    path = ns.folder / "train" / "bird" / "0001.png"
    save_image(path, np.zeros((32, 32, 3), np.uint8))
    os.utime(path, ns=(0, 0))
    after = load_split("cifar10", "train", ns.root, cache=cache)
    assert after.fingerprint != before.fingerprint
    assert int(after.images[2 * 3 + 1].max()) == 0


def test_damaged_cache_is_decoded_again_with_a_warning(make_cifar_folder, cache):
    ns = make_cifar_folder()
    first = load_split("cifar10", "test", ns.root, cache=cache)
    images, fingerprint = first.images.clone(), first.fingerprint
    del first  # its images are memory-mapped from the file damaged next
    (images_file,) = cache.glob("cifar10-test-*.images.npy")
    images_file.write_bytes(images_file.read_bytes()[:200])
    with pytest.warns(UserWarning, match="unreadable.*decoding again"):
        again = load_split("cifar10", "test", ns.root, cache=cache)
    assert torch.equal(again.images, images) and again.fingerprint == fingerprint


# ------------------------------------------------------------------------------------------------- errors


def test_missing_root_names_paths_and_fixes(tmp_path, cache):
    with pytest.raises(FileNotFoundError) as error:
        load_split("cifar10", "train", tmp_path / "nowhere", cache=cache)
    message = str(error.value)
    assert "does not exist; looked for:" in message
    for expected in ("cifar-10-batches-py", "cifar10-jpeg.tar.gz", "`root` argument", data.DATA_ENV, "download=True"):
        assert expected in message


def test_download_fetches_missing_cifar_with_torchvision(make_cifar_pickles, tmp_path, cache, monkeypatch):
    calls = []

    class FakeCIFAR10(torchvision.datasets.CIFAR10):  # writes the fixture's pickles instead of downloading
        def __init__(self, root, train, download):
            calls.append((train, download))
            make_cifar_pickles("cifar10", root=Path(root))

    monkeypatch.setitem(data._TORCHVISION, "cifar10", FakeCIFAR10)
    test = load_split("cifar10", "test", tmp_path / "new-root", download=True, cache=cache)
    assert calls == [(True, True)] and len(test) == 20 and "torchvision original" in test.source
    load_split("cifar10", "train", tmp_path / "new-root", download=True, cache=cache)
    assert len(calls) == 1  # already there


def test_missing_dataset_in_existing_root(tmp_path, cache):
    with pytest.raises(FileNotFoundError, match="holds none of") as error:
        load_split("tiny-imagenet", "train", tmp_path, cache=cache)
    assert str(tmp_path / "tiny-imagenet-200.tar.gz") in str(error.value)
    assert "download=True to fetch it from http" in str(error.value)
    with pytest.raises(FileNotFoundError, match="holds none of") as error:
        load_split("imagenet", "train", tmp_path, cache=cache)
    assert "download=True" not in str(error.value)  # ImageNet cannot be downloaded


def test_incomplete_pickle_folder(make_cifar_pickles, cache):
    ns = make_cifar_pickles("cifar10")
    (ns.folder / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="missing.*data_batch_3.*download=True"):
        load_split("cifar10", "train", ns.root, cache=cache)


def test_unknown_layout(tmp_path, cache):
    (tmp_path / "cifar10-jpeg" / "images").mkdir(parents=True)
    with pytest.raises(ValueError, match="unknown layout.*'train/' folder"):
        load_split("cifar10", "train", tmp_path, cache=cache)


def test_empty_class_folder_is_named(make_cifar_folder, cache):
    ns = make_cifar_folder()
    for path in (ns.folder / "train" / "cat").iterdir():
        path.unlink()
    with pytest.raises(ValueError, match=r"class folder .*train/cat holds no images"):
        load_split("cifar10", "train", ns.root, cache=cache)


@pytest.mark.parametrize("tarball", [False, True], ids=["folder", "tarball"])
def test_corrupt_image_is_named(make_cifar_folder, tmp_path, cache, tarball):
    ns = make_cifar_folder()
    (ns.folder / "test" / "dog" / "0001.jpg").write_bytes(b"not a jpeg at all")
    root = ns.root
    if tarball:
        root = tmp_path / "tar-root"
        make_tarball(ns.folder, root / "cifar10-jpeg.tar.gz")
    where = "test/dog/0001.jpg inside .*cifar10-jpeg.tar.gz" if tarball else "test/dog/0001.jpg"
    with pytest.raises(ValueError, match=f"cannot decode the image .*{where}.*corrupt"):
        load_split("cifar10", "test", root, cache=cache)
    assert not list(cache.glob("cifar10-test-*"))  # nothing half-written is left behind


def test_wrong_class_count(make_cifar_folder, make_tiny_imagenet, cache):
    ns = make_cifar_folder()
    for path in (ns.folder / "train" / "truck").iterdir():
        path.unlink()
    (ns.folder / "train" / "truck").rmdir()
    with pytest.raises(ValueError, match="found 9 classes .* CIFAR-10 has 10"):
        load_split("cifar10", "train", ns.root, cache=cache)
    tiny = make_tiny_imagenet()
    with pytest.raises(ValueError, match="found 4 classes .* Tiny-ImageNet-200 has 200"):
        load_split("tiny-imagenet", "train", tiny.root, cache=cache)


def test_bmp_images_are_decoded(make_cifar_folder, cache):
    """.bmp is an accepted suffix, so a valid BMP must load (torchvision.io does not decode BMP)."""
    ns = make_cifar_folder()
    png = ns.folder / "train" / "cat" / "0001.png"
    Image.open(png).save(png.with_suffix(".bmp"))
    png.unlink()
    train = load_split("cifar10", "train", ns.root, cache=cache)
    np.testing.assert_array_equal(np.asarray(train.images), ns.train_images)


def _tar_bytes(tar_path: Path) -> tuple[bytearray, dict[str, int]]:
    """The uncompressed archive and the offset of each member's header."""
    raw = bytearray(gzip.decompress(tar_path.read_bytes()))
    with tarfile.open(fileobj=io.BytesIO(bytes(raw))) as tar:
        return raw, {m.name: m.offset for m in tar}


def _damaged_tarballs(tar_path: Path, member: str, out: Path) -> dict[str, Path]:
    """Copies of ``tar_path`` damaged at ``member``, each a valid gzip stream of a broken tar, or a broken gzip."""
    raw, offsets = _tar_bytes(tar_path)
    offset = offsets[f"cifar10-jpeg/{member}"]
    broken = bytearray(raw)
    broken[offset + 148:offset + 156] = b"0000000\0"  # the header checksum
    good = tar_path.read_bytes()
    damaged = {"broken-header": gzip.compress(bytes(broken)), "cut-at-a-member": gzip.compress(bytes(raw[:offset])),
               "truncated-gzip": good[:len(good) // 2], "not-gzip": b"not a tarball at all\n" * 10}
    paths = {}
    for name, content in damaged.items():
        paths[name] = out / name / "cifar10-jpeg.tar.gz"
        paths[name].parent.mkdir(parents=True)
        paths[name].write_bytes(content)
    return paths


@pytest.mark.parametrize("damage", ["broken-header", "cut-at-a-member", "truncated-gzip", "not-gzip"])
def test_damaged_tarball_is_an_error_naming_it(make_cifar_folder, tmp_path, cache, damage):
    """tarfile's stream reader stops silently at a damaged header or where the data ends: here that is an error
    naming the archive (the damage is in the last training image, so every class is still there)."""
    ns = make_cifar_folder(tarball=True)
    path = _damaged_tarballs(ns.root / "cifar10-jpeg.tar.gz", "train/truck/0002.png", tmp_path / "damaged")[damage]
    with pytest.raises(ValueError) as error:
        load_split("cifar10", "train", path.parent, cache=cache)
    message = str(error.value)
    assert f"cannot read the archive {path}" in message and "damaged" in message
    assert "Download it again, or re-create it" in message
    assert not list(cache.glob("cifar10-train-*"))


def _gzip_with_crc_of(payload: bytes, original: bytes) -> bytes:
    """A gzip stream that inflates to ``payload`` but whose trailer holds the CRC and length of ``original``: what
    a byte flipped inside the compressed data of ``original``'s archive gives (stored blocks, so inflating succeeds
    and only the CRC can tell)."""
    deflate = zlib.compressobj(0, zlib.DEFLATED, -15)
    body = deflate.compress(payload) + deflate.flush()
    header = b"\x1f\x8b\x08\x00" + b"\x00" * 4 + b"\x00\xff"
    return header + body + struct.pack("<II", zlib.crc32(original), len(original) & 0xFFFFFFFF)


def _inside_the_scan(jpeg: bytes) -> int:
    """The offset of a byte in the middle of a JPEG's entropy-coded data (after its start-of-scan header), where a
    flipped bit decodes to a changed image instead of an error."""
    start = jpeg.index(b"\xff\xda")
    start += 2 + int.from_bytes(jpeg[start + 2:start + 4], "big")
    at = (start + len(jpeg) - 2) // 2
    while 0xFF in (jpeg[at], jpeg[at] ^ 1) or jpeg[at - 1] == 0xFF:  # never make or break a marker
        at += 1
    return at


@pytest.mark.parametrize("where", ["in-an-image", "in-the-trailer"])
def test_gzip_crc_error_is_an_error_naming_the_archive(make_cifar_folder, tmp_path, cache, where):
    """A byte flipped inside the compressed stream: tar headers and JPEG still parse (a JPEG has no checksum: it
    decodes to a changed image), so only gzip's CRC at the end of the stream can tell; it must be read and checked,
    and nothing cached."""
    ns = make_cifar_folder(tarball=True)
    archive = ns.root / "cifar10-jpeg.tar.gz"
    raw, _ = _tar_bytes(archive)
    with tarfile.open(fileobj=io.BytesIO(bytes(raw))) as tar:
        start = tar.getmember("cifar10-jpeg/test/truck/0001.jpg").offset_data  # the image's first byte
    flipped = bytearray(raw)
    if where == "in-an-image":
        flipped[start + _inside_the_scan((ns.folder / "test" / "truck" / "0001.jpg").read_bytes())] ^= 1
        damaged = _gzip_with_crc_of(bytes(flipped), bytes(raw))
    else:
        damaged = bytearray(archive.read_bytes())
        damaged[-6] ^= 0x01  # a byte of the CRC32 in the trailer
        damaged = bytes(damaged)
    path = tmp_path / "crc" / "cifar10-jpeg.tar.gz"
    path.parent.mkdir()
    path.write_bytes(damaged)
    with pytest.raises(ValueError) as error:
        load_split("cifar10", "test", path.parent, cache=cache)
    message = str(error.value)
    assert f"cannot read the archive {path}" in message and "CRC" in message
    assert "Download it again, or re-create it" in message
    assert not list(cache.glob("cifar10-test-*"))


def test_published_md5s_are_torchvisions():
    for name, dataset in (("cifar10", torchvision.datasets.CIFAR10), ("cifar100", torchvision.datasets.CIFAR100)):
        for file, md5 in [*dataset.train_list, *dataset.test_list, [dataset.meta["filename"], dataset.meta["md5"]]]:
            assert data.PUBLISHED_MD5[name][file] == md5


@pytest.mark.parametrize("damage", ["flipped-byte", "foreign-pickle"])
def test_pickle_failing_its_md5_is_not_unpickled(make_cifar_pickles, tmp_path, cache, damage):
    """A pickle is checked against torchvision's md5 before it is unpickled: a flipped pixel byte (which unpickles
    fine) and a pickle that would run code are both refused, naming the file, and nothing is cached."""
    ns = make_cifar_pickles("cifar10")
    path = ns.folder / "data_batch_3"
    marker = tmp_path / "code-ran"
    if damage == "flipped-byte":
        content = bytearray(path.read_bytes())
        content[len(content) // 2] ^= 0x01
        path.write_bytes(bytes(content))
    else:
        path.write_bytes(pickle.dumps(_RunsCode(str(marker))))
    with pytest.raises(ValueError, match=f"{re.escape(str(path))} fails its checksum: md5 .* torchvision publishes "
                                         f".* not unpickled.*pass download=True"):
        load_split("cifar10", "train", ns.root, cache=cache)
    assert not marker.exists()
    assert not list(cache.glob("cifar10-train-*"))


class _RunsCode:
    """Unpickling this creates the file ``marker``."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.mark.parametrize("tarball", [False, True], ids=["folder", "tarball"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_image_outside_any_class_folder_is_named(make_cifar_folder, tmp_path, cache, tarball, split):
    ns = make_cifar_folder()
    save_image(ns.folder / split / "stray.png", smooth_images(1, 32, 32, seed=5)[0])
    root = ns.root
    if tarball:
        root = tmp_path / "tar-root"
        make_tarball(ns.folder, root / "cifar10-jpeg.tar.gz")
    with pytest.raises(ValueError, match=f"the image .*{split}/stray.png.* is outside any class folder, so it has no "
                                         f"label; move it into its class folder \\({split}/<class>/\\) or remove it"):
        load_split("cifar10", split, root, cache=cache)


def test_tiny_imagenet_image_outside_any_class_folder_is_named(make_tiny_imagenet, cache):
    ns = make_tiny_imagenet()
    save_image(ns.folder / "train" / "stray.JPEG", smooth_images(1, 64, 64, seed=5)[0])
    with pytest.raises(ValueError, match="train/stray.JPEG is outside any class folder.*train/<wnid>/images/"):
        load_split(ns.spec, "train", ns.root, cache=cache)


def test_short_split_is_an_error_naming_the_source_and_the_shortfall(make_cifar_folder, tmp_path, cache):
    ns = make_cifar_folder(tarball=True)  # 3 training and 2 test images per class
    counted = dataclasses.replace(get_spec("cifar10"), train_per_class=3, test_per_class=2)
    assert len(load_split(counted, "train", ns.root, cache=cache)) == 30
    assert len(load_split(counted, "test", ns.root, cache=cache)) == 20
    (ns.folder / "train" / "truck" / "0002.png").unlink()
    (ns.folder / "train" / "cat" / "0000.png").unlink()
    short = make_tarball(ns.folder, tmp_path / "short" / "cifar10-jpeg.tar.gz")
    expected = (f"{re.escape(str(short))} is incomplete or damaged: its train split holds 28 images, but CIFAR-10 "
                f"has 30 \\(3 per class\\); cat has 2 of 3; truck has 2 of 3\\. Download the data set again")
    with pytest.raises(ValueError, match=expected):
        load_split(counted, "train", short.parent, cache=cache)
    assert len(list(cache.glob("cifar10-train-tar-*.json"))) == 1  # the short archive was not cached
    # a split cached without the check (or before it existed) is checked when it is read back
    assert len(load_split(dataclasses.replace(counted, train_per_class=None), "train", short.parent,
                          cache=cache)) == 28
    with pytest.raises(ValueError, match=expected):
        load_split(counted, "train", short.parent, cache=cache)


def test_short_pickles_are_an_error(make_cifar_pickles, cache):
    ns = make_cifar_pickles("cifar10")  # 5 training and 2 test images per class
    counted = dataclasses.replace(get_spec("cifar10"), train_per_class=5, test_per_class=3)
    assert len(load_split(counted, "train", ns.root, cache=cache)) == 50
    with pytest.raises(ValueError, match="cifar-10-batches-py is incomplete.*test split holds 20 images, but "
                                         "CIFAR-10 has 30 .*airplane has 2 of 3;"):
        load_split(counted, "test", ns.root, cache=cache)


def test_truncated_pickle_names_the_file(make_cifar_pickles, cache, monkeypatch):
    ns = make_cifar_pickles("cifar10")
    monkeypatch.setitem(data.PUBLISHED_MD5, "cifar10", {})  # no md5 to check: the unpickling itself fails
    path = ns.folder / "data_batch_2"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match=f"cannot read {re.escape(str(path))} .*truncated or corrupt.*"
                                         f"delete .*cifar-10-batches-py and pass download=True"):
        load_split("cifar10", "train", ns.root, cache=cache)


@pytest.mark.parametrize("download", [False, True])
def test_data_root_that_is_a_file_is_named(tmp_path, cache, download):
    root = tmp_path / "cifar10-jpeg.tar.gz"  # the archive given in place of the folder that holds it
    root.write_bytes(b"")
    with pytest.raises(NotADirectoryError, match=f"the data root {re.escape(str(root))} is a file, not a folder; "
                                                 f".*{data.DATA_ENV}.*{re.escape(str(tmp_path))}"):
        load_split("cifar10", "train", root, download=download, cache=cache)
    assert not data.is_available("cifar10", root)


def test_bad_split_name(make_cifar_folder, cache):
    with pytest.raises(ValueError, match="unknown split 'val'.*train, test"):
        load_split("cifar10", "val", make_cifar_folder().root, cache=cache)


def test_bad_val_sizes(make_cifar_folder, cache):
    root = make_cifar_folder().root
    with pytest.raises(ValueError, match="val_size must be positive"):
        load_dataset("cifar10", root, val_size=0, cache=cache)
    with pytest.raises(ValueError, match="val_size=20 leaves too few"):
        load_dataset("cifar10", root, val_size=20, cache=cache)
    with pytest.raises(ValueError, match="too few|choose a smaller"):
        load_dataset("cifar10", root, val_size=5000, cache=cache)  # the default for the real CIFAR-10


# ------------------------------------------------------------------------------------------------- splits


def image_set(split_data: ImageTensors) -> set[bytes]:
    return {image.numpy().tobytes() for image in split_data.images}


def test_val_split_is_stratified_disjoint_and_seeded(make_cifar_folder, cache):
    root = make_cifar_folder(train_per_class=4).root
    full = load_split("cifar10", "train", root, cache=cache)
    splits = load_dataset("cifar10", root, val_size=10, cache=cache)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (30, 10, 20)
    assert torch.equal(splits.val.labels.bincount(minlength=10), torch.ones(10, dtype=torch.int64))
    assert not image_set(splits.train) & image_set(splits.val)
    assert image_set(splits.train) | image_set(splits.val) == image_set(full)
    assert splits.source == full.source and splits.spec is SPECS["cifar10"]
    assert len({splits.train.fingerprint, splits.val.fingerprint, full.fingerprint}) == 3
    same = load_dataset("cifar10", root, val_size=10, split_seed=0, cache=cache)
    other = load_dataset("cifar10", root, val_size=10, split_seed=1, cache=cache)
    assert torch.equal(same.val.images, splits.val.images) and same.val.fingerprint == splits.val.fingerprint
    assert not torch.equal(other.val.images, splits.val.images)
    assert other.val.fingerprint != splits.val.fingerprint


def test_uneven_val_size_and_subsets(make_cifar_folder, cache):
    root = make_cifar_folder(train_per_class=4).root
    splits = load_dataset("cifar10", root, val_size=15, train_subset=10, test_subset=10, cache=cache)
    assert sorted(splits.val.labels.bincount(minlength=10).tolist()) == [1] * 5 + [2] * 5
    assert torch.equal(splits.train.labels.bincount(minlength=10), torch.ones(10, dtype=torch.int64))
    assert torch.equal(splits.test.labels.bincount(minlength=10), torch.ones(10, dtype=torch.int64))
    with pytest.raises(ValueError, match="train_subset=30 needs 3 images"):
        load_dataset("cifar10", root, val_size=15, train_subset=30, cache=cache)


@pytest.mark.parametrize("bad", [-1, 0, 2.5, True])
def test_bad_subset_sizes(make_cifar_folder, cache, bad):
    root = make_cifar_folder().root
    for what in ("train_subset", "test_subset"):
        with pytest.raises(ValueError, match=f"{what} must be a positive number of images or None .*got {bad!r}"):
            load_dataset("cifar10", root, val_size=10, cache=cache, **{what: bad})


def test_subset_fingerprints_and_masks():
    full = random_tensors()
    a, b = full.subset([1, 2, 3]), full.subset(torch.tensor([1, 2, 4]))
    assert a.fingerprint != b.fingerprint and a.fingerprint == full.subset(np.array([1, 2, 3])).fingerprint
    mask = torch.zeros(len(full), dtype=torch.bool)
    mask[[1, 2, 3]] = True
    assert torch.equal(full.subset(mask).images, a.images) and len(a) == 3
    assert "23 images of 3x32x32" in repr(full)


# ----------------------------------------------------------------------------------------------- augmentation


@pytest.mark.parametrize("spec", [SPECS["cifar10"], imagenet_like()], ids=["crop_flip", "rrc_flip"])
def test_augment_params_are_pure_functions_of_seed_and_epoch(spec):
    params = augment_params(spec, 200, seed=3, epoch=5)
    again = augment_params(spec, 200, seed=3, epoch=5)
    assert params.keys() == again.keys() and all(torch.equal(params[k], again[k]) for k in params)
    for other in (augment_params(spec, 200, seed=3, epoch=6), augment_params(spec, 200, seed=4, epoch=5)):
        assert not torch.equal(params["flip"], other["flip"])
    assert 0.3 < params["flip"].float().mean() < 0.7


def test_crop_flip_params_range():
    params = augment_params(SPECS["tiny-imagenet"], 2000, seed=0, epoch=0)
    for key in ("dx", "dy"):
        assert params[key].min() == 0 and params[key].max() == 2 * SPECS["tiny-imagenet"].pad


def test_rrc_boxes_follow_torchvision_ranges():
    spec = imagenet_like()
    boxes = augment_params(spec, 5000, seed=0, epoch=0)["boxes"]
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert torch.equal(boxes, boxes.round())  # integer pixel boxes, like torchvision
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= spec.image_size).all() and (w > 0).all()
    area = w * h / spec.image_size ** 2
    rounding = 2 / spec.image_size  # w and h are rounded to whole pixels
    assert area.min() > data.RRC_SCALE[0] - rounding and area.max() <= 1
    assert (w / h).min() > data.RRC_RATIO[0] - 3 * rounding and (w / h).max() < data.RRC_RATIO[1] + 3 * rounding


def test_crop_flip_matches_torchvision_reference():
    spec = SPECS["cifar10"]
    images = random_tensors(n=16).images
    params = augment_params(spec, 16, seed=1, epoch=2)
    out = augment_batch(images, params, spec)
    assert out.dtype == torch.float32 and out.shape == (16, 3, 32, 32)
    assert params["flip"].any() and (~params["flip"]).any()
    for i in range(16):
        ref = tvF.crop(tvF.pad(images[i], [spec.pad] * 4), int(params["dy"][i]), int(params["dx"][i]),
                       spec.crop_size, spec.crop_size)
        ref = tvF.horizontal_flip(ref) if params["flip"][i] else ref
        assert torch.equal(out[i], ref.float())


def test_rrc_flip_matches_torchvision_resized_crop():
    spec = imagenet_like()
    images = torch.from_numpy(smooth_images(2, 144, 144, seed=0)).permute(0, 3, 1, 2).contiguous()
    boxes = torch.tensor([[10.0, 20.0, 110.0, 100.0], [5.0, 7.0, 135.0, 144.0]])  # enlarged and shrunk
    out = augment_batch(images, {"boxes": boxes, "flip": torch.tensor([False, True])}, spec)
    assert out.shape == (2, 3, 128, 128) and out.dtype == torch.float32
    for i, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
        ref = tvF.resized_crop(images[i], y0, x0, y1 - y0, x1 - x0, [128, 128], antialias=True).float()
        ref = tvF.horizontal_flip(ref) if i == 1 else ref
        assert (out[i] - ref).abs().mean() < 1.0 and (out[i] - ref).abs().max() < 8
    batch = augment_batch(images, {k: v[:2] for k, v in augment_params(spec, 2, 0, 0).items()}, spec)
    assert batch.min() >= 0 and batch.max() <= 255


@pytest.mark.parametrize("spec", [SPECS["cifar10"], imagenet_like(48, 40)], ids=["crop_flip", "rrc_flip"])
def test_augmentation_of_a_sample_does_not_depend_on_its_batch(spec):
    images = random_tensors(n=12, size=spec.image_size).images
    params = augment_params(spec, 12, seed=0, epoch=1)
    first, second = torch.tensor([0, 3, 5, 7]), torch.tensor([7, 11, 2, 5, 9])
    a = augment_batch(images[first], {k: v[first] for k, v in params.items()}, spec)
    b = augment_batch(images[second], {k: v[second] for k, v in params.items()}, spec)
    assert torch.equal(a[3], b[0]) and torch.equal(a[2], b[3])  # samples 7 and 5


def test_eval_transform_and_normalize():
    spec = imagenet_like(48, 40)
    images = random_tensors(n=3, size=48).images
    assert torch.equal(eval_transform(images, spec), images[:, :, 4:44, 4:44].float())
    cifar = SPECS["cifar10"]
    small = random_tensors(n=3).images
    assert torch.equal(eval_transform(small, cifar), small.float())
    mean_image = 255 * torch.tensor(cifar.mean).view(3, 1, 1).expand(3, 2, 2)
    assert normalize(mean_image, cifar).abs().max() < 1e-5
    one_std = mean_image + 255 * torch.tensor(cifar.std).view(3, 1, 1)
    assert torch.allclose(normalize(one_std[None], cifar), torch.ones(1, 3, 2, 2))


# -------------------------------------------------------------------------------------------------- loader


def collect(loader: Loader):
    batches = list(loader)
    return [b[0] for b in batches], [b[1] for b in batches], [b[2] for b in batches]


def test_train_loader_covers_every_index_once_in_a_seeded_order():
    tensors, spec = random_tensors(n=23), cifar_like()
    loader = Loader(tensors, spec, 5, train=True, seed=0, drop_last=False)
    assert len(loader) == 5
    xs, ys, indices = collect(loader)
    order = torch.cat(indices)
    assert torch.equal(order.sort().values, torch.arange(23)) and not torch.equal(order, torch.arange(23))
    assert all(torch.equal(y, tensors.labels[i]) for y, i in zip(ys, indices))
    assert xs[0].shape == (5, 3, 32, 32) and xs[0].is_contiguous(memory_format=torch.channels_last)
    assert ys[0].dtype == torch.int64 and indices[0].dtype == torch.int64
    again = collect(Loader(tensors, spec, 5, train=True, seed=0, drop_last=False))
    assert torch.equal(torch.cat(again[2]), order) and all(torch.equal(a, b) for a, b in zip(again[0], xs))
    loader.set_epoch(1)
    assert not torch.equal(torch.cat(collect(loader)[2]), order)
    other_seed = Loader(tensors, spec, 5, train=True, seed=1, drop_last=False)
    assert not torch.equal(torch.cat(collect(other_seed)[2]), order)


def test_train_loader_drops_the_last_partial_batch_by_default():
    tensors = random_tensors(n=23)
    loader = Loader(tensors, cifar_like(), 5, train=True)
    assert len(loader) == 4 and sum(len(i) for i in collect(loader)[2]) == 20
    with pytest.raises(ValueError, match="drop_last=False"):
        Loader(tensors, cifar_like(), 64, train=True)


def test_train_views_do_not_depend_on_batch_size():
    tensors, spec = random_tensors(n=23), cifar_like()
    views = []
    for batch_size in (4, 9):
        xs, _, indices = collect(Loader(tensors, spec, batch_size, train=True, seed=2, drop_last=False))
        view = torch.empty(23, 3, 32, 32)
        view[torch.cat(indices)] = torch.cat(xs)
        views.append(view)
    assert torch.equal(views[0], views[1])


def test_eval_loader_is_in_order_and_unaugmented():
    tensors, spec = random_tensors(n=23), cifar_like()
    loader = Loader(tensors, spec, 10, train=False, channels_last=False)
    assert len(loader) == 3 and not loader.drop_last
    xs, ys, indices = collect(loader)
    assert torch.equal(torch.cat(indices), torch.arange(23)) and torch.equal(torch.cat(ys), tensors.labels)
    assert torch.equal(torch.cat(xs), normalize(eval_transform(tensors.images, spec), spec))


def test_view_keys():
    tensors, spec = random_tensors(n=23), cifar_like()
    train = Loader(tensors, spec, 5, train=True, seed=0)
    keys = {train.view_key(0), train.view_key(1), Loader(tensors, spec, 5, train=True, seed=1).view_key(0)}
    assert len(keys) == 3 and all(k.startswith(tensors.fingerprint) for k in keys)
    train.set_epoch(1)
    assert train.view_key() == train.view_key(1)
    evaluation = Loader(tensors, spec, 5, train=False)
    assert evaluation.view_key(0) == evaluation.view_key(7) == evaluation.view_key()
    assert evaluation.view_key() not in keys
    other_data = Loader(tensors.subset(range(20)), spec, 5, train=False)
    assert other_data.view_key() != evaluation.view_key()
    other_crop = Loader(tensors, dataclasses.replace(spec, pad=2), 5, train=True, seed=0)
    assert other_crop.view_key(0) != train.view_key(0)


def test_is_available_finds_a_data_set_without_downloading(make_cifar_pickles, tmp_path):
    ns = make_cifar_pickles("cifar100")
    assert data.is_available("cifar100", ns.root)
    assert not data.is_available("cifar10", ns.root)
    assert not data.is_available("cifar10", tmp_path / "nowhere")


def test_layouts_and_augmentations_are_registered():
    """A data set's layout and augmentation are one registered definition each; unknown names list the known ones."""
    from reskd.data import AUGMENTATIONS, IMAGE_FOLDER, LAYOUTS, _layout, _tree_parts, augment_params

    assert list(AUGMENTATIONS) == ["crop_flip", "rrc_flip"] and list(LAYOUTS) == ["tiny-imagenet", "imagenet"]
    assert _layout(SPECS["cifar10"]) is IMAGE_FOLDER and _tree_parts(SPECS["cifar10"], "test") == ("test",)
    assert _tree_parts(SPECS["imagenet"], "test") == ("val", "LOC_val_solution.csv")
    assert _tree_parts(SPECS["tiny-imagenet"], "train") == ("wnids.txt", "train")
    with pytest.raises(ValueError, match="unknown augmentation 'mixup'; choose one of crop_flip, rrc_flip"):
        augment_params(dataclasses.replace(SPECS["cifar10"], augment="mixup"), 4, 0, 0)
