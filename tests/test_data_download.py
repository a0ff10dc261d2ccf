"""download=True for a data set torchvision does not ship (Tiny-ImageNet): fetched from its URL with torchvision's
downloader, checked against the published md5 before it is unpacked. An HTTP server on 127.0.0.1 serves a small
archive the test builds, registered in place of the published one."""
from __future__ import annotations

import functools
import hashlib
import http.server
import shutil
import threading
import zipfile

import numpy as np
import pytest

from reskd.data import DOWNLOADS, Download, load_split


@pytest.fixture
def served(tmp_path):
    """``serve(path)``: the URL of ``path`` on a local HTTP server (stopped after the test), and the requests seen."""
    folder = tmp_path / "www"
    folder.mkdir()
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            requests.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def serve(path):
        shutil.copy(path, folder / path.name)
        return f"http://127.0.0.1:{server.server_address[1]}/{path.name}"

    yield serve, requests
    server.shutdown()
    server.server_close()


def _zip(folder, path):
    with zipfile.ZipFile(path, "w") as archive:
        for file in sorted(folder.rglob("*")):
            archive.write(file, file.relative_to(folder.parent).as_posix())
    return path


def test_download_fetches_checks_and_unpacks_tiny_imagenet(make_tiny_imagenet, served, tmp_path, monkeypatch):
    ns = make_tiny_imagenet()
    archive = _zip(ns.folder, tmp_path / "tiny-imagenet-200.zip")
    serve, requests = served
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    monkeypatch.setitem(DOWNLOADS, "tiny-imagenet", Download(serve(archive), md5, "tiny-imagenet-200"))
    root = tmp_path / "data"
    with pytest.raises(FileNotFoundError, match="pass download=True to fetch it from http://127.0.0.1"):
        load_split(ns.spec, "train", root, cache=tmp_path / "cache")
    train = load_split(ns.spec, "train", root, download=True, cache=tmp_path / "cache")
    n_requests = len(requests)
    test = load_split(ns.spec, "test", root, download=True, cache=tmp_path / "cache")
    for split, fetched in (("train", train), ("test", test)):  # the same files as the folder the archive was made of
        local = load_split(ns.spec, split, ns.root, cache=tmp_path / "cache-local")
        assert np.array_equal(fetched.images.numpy(), local.images.numpy())
        assert np.array_equal(fetched.labels.numpy(), local.labels.numpy()) and len(fetched.labels)
    assert (root / "tiny-imagenet-200" / "wnids.txt").exists() and not (root / "tiny-imagenet-200.zip").exists()
    assert not list(root.glob(".unpacking-*")) and n_requests and len(requests) == n_requests  # the folder is found after


def test_an_archive_failing_its_md5_is_deleted_and_not_unpacked(make_tiny_imagenet, served, tmp_path, monkeypatch):
    ns = make_tiny_imagenet()
    archive = _zip(ns.folder, tmp_path / "tiny-imagenet-200.zip")
    serve, _ = served
    monkeypatch.setitem(DOWNLOADS, "tiny-imagenet", Download(serve(archive), "0" * 32, "tiny-imagenet-200"))
    root = tmp_path / "data"
    with pytest.raises(ValueError, match="md5 is not the published 0{32}.*deleted and nothing was unpacked"):
        load_split(ns.spec, "train", root, download=True, cache=tmp_path / "cache")
    assert sorted(p.name for p in root.iterdir()) == []
