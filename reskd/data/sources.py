"""Where a data set is read from: the data root (:func:`data_root`), the forms a data set may take there
(:func:`is_available`), and the three kinds of source: a folder, a ``.tar.gz`` streamed once into memory and read to
the end of its gzip stream (so its CRC is checked), and torchvision's original CIFAR pickles (checked against
torchvision's md5s before they are unpickled)."""
from __future__ import annotations

import gzip
import os
import pickle
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..utils import progress, project_root
from .integrity import _check_md5, _redownload
from .specs import _TORCHVISION, DOWNLOADS, DatasetSpec, Download, get_spec

DATA_ENV = "RESKD_DATA"
DEFAULT_DATA_DIR = "data"

# Where each data set may live under the data root, in order of preference.
_LOCATIONS = {
    "cifar10": ("cifar-10-batches-py", "cifar10-jpeg", "cifar10-jpeg.tar.gz"),
    "cifar100": ("cifar-100-python", "cifar100-jpeg", "cifar100-jpeg.tar.gz"),
    "tiny-imagenet": ("tiny-imagenet-200", "tiny-imagenet-200.tar.gz"),
    "imagenet": ("imagenet",),
}
_TAR_SUFFIX = ".tar.gz"
_GZIP_CHUNK = 1 << 20

def data_root(root: str | os.PathLike | None = None) -> Path:
    """The folder holding the data sets: ``root``, else ``$RESKD_DATA``, else the project's ``data/`` folder."""
    if root is None and not os.environ.get(DATA_ENV):
        return project_root() / DEFAULT_DATA_DIR
    return Path(root if root is not None else os.environ[DATA_ENV]).expanduser()

@dataclass(frozen=True)
class _Source:
    path: Path
    kind: str  # "pickle" (torchvision's original), "folder" or "tar"

    def describe(self, spec: DatasetSpec) -> str:
        if self.kind == "pickle":
            return f"{spec.display_name} (torchvision original, {self.path.name})"
        copy = "JPEG copy, " if spec.name in _TORCHVISION else ""
        size = f", stored at {spec.image_size} px" if spec.name == "imagenet" else ""
        return f"{spec.display_name} ({copy}{self.path.name}{size})"


def _find_source(spec: DatasetSpec, root: Path, download: bool) -> _Source:
    if spec.name not in _LOCATIONS:
        raise ValueError(f"no on-disk layout is known for data set {spec.name!r}; "
                         f"name a spec after one of: {', '.join(_LOCATIONS)}.")
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(
            f"the data root {root} is a file, not a folder; point the `root` argument or the {DATA_ENV} environment "
            f"variable at the folder that holds the data sets (e.g. {root.parent}).")
    candidates = [root / name for name in _LOCATIONS[spec.name]]
    for path in candidates:
        if path.exists():
            kind = "tar" if path.name.endswith(_TAR_SUFFIX) else "folder" if path.is_dir() else None
            if kind == "folder" and spec.name in _TORCHVISION and path == candidates[0]:
                kind = "pickle"
            if kind is not None:
                return _Source(path, kind)
    if download and spec.name in _TORCHVISION:
        root.mkdir(parents=True, exist_ok=True)
        _TORCHVISION[spec.name](root=str(root), train=True, download=True)  # fetches and unpacks both splits
        return _Source(candidates[0], "pickle")
    if download and spec.name in DOWNLOADS:
        return _Source(fetch_archive(DOWNLOADS[spec.name], root), "folder")
    where = "does not exist; looked for" if not root.is_dir() else "holds none of"
    looked = "\n".join(f"  {path}" for path in candidates)
    fetch = (" or pass download=True to let torchvision fetch it" if spec.name in _TORCHVISION else
             f" or pass download=True to fetch it from {DOWNLOADS[spec.name].url}" if spec.name in DOWNLOADS else "")
    raise FileNotFoundError(
        f"{spec.display_name} not found: the data root {root} {where}:\n{looked}\n"
        f"Put the data set there, or point to another data root with the `root` argument or the {DATA_ENV} "
        f"environment variable{fetch}.")


def fetch_archive(item: Download, root: Path) -> Path:
    """Download ``item``'s archive into ``root`` with torchvision's downloader, check its md5 against the published one
    before anything is unpacked, unpack it into a scratch folder beside its destination and move the data set's
    folder into place (so an interrupted unpacking leaves nothing that looks complete), then remove the archive.
    Returns the data set's folder."""
    from torchvision.datasets.utils import check_integrity, download_url, extract_archive

    root.mkdir(parents=True, exist_ok=True)
    archive = root / item.url.rsplit("/", 1)[-1]
    if not check_integrity(str(archive), item.md5):  # a complete archive from an earlier call is not fetched again
        download_url(item.url, str(root), archive.name)
    if not check_integrity(str(archive), item.md5):
        archive.unlink(missing_ok=True)
        raise ValueError(f"{item.url} gave a file whose md5 is not the published {item.md5}: it is damaged or not the "
                         f"data set, so it was deleted and nothing was unpacked. Try download=True again; if it keeps "
                         f"failing, fetch the archive yourself, check its md5 and unpack it under {root}.")
    with tempfile.TemporaryDirectory(dir=root, prefix=".unpacking-") as scratch:
        extract_archive(str(archive), scratch)
        unpacked = Path(scratch) / item.folder
        if not unpacked.is_dir():
            raise ValueError(f"{archive} passed its md5 check but holds no {item.folder}/ folder; report it.")
        os.replace(unpacked, root / item.folder)
    archive.unlink()
    return root / item.folder


def is_available(name: str | DatasetSpec, root: str | os.PathLike | None = None) -> bool:
    """Whether data set ``name`` is on disk under the data root (no download is attempted)."""
    try:
        _find_source(get_spec(name), data_root(root), download=False)
    except (FileNotFoundError, NotADirectoryError):
        return False
    return True


def _stat_identity(path: Path, name: str) -> list:
    st = path.stat()
    return [name, st.st_size, st.st_mtime_ns]


class _DirTree:
    """The files of ``parts`` (top-level files or folders) of a directory, read from disk on demand."""

    def __init__(self, root: Path, parts: tuple[str, ...]):
        self.root = root
        self.dirs: set[str] = set()
        self.identity: list = []
        for part in parts:
            path = root / part
            if path.is_file():
                self.identity.append(_stat_identity(path, part))
            elif path.is_dir():
                self.dirs.add(part)
                for folder, subdirs, files in os.walk(path, followlinks=True):
                    rel = Path(folder).relative_to(root).as_posix()
                    self.dirs.update(f"{rel}/{d}" for d in subdirs)
                    self.identity += [_stat_identity(Path(folder) / f, f"{rel}/{f}") for f in files]
        self.identity.sort()
        self.files = [entry[0] for entry in self.identity]

    def read(self, rel: str) -> bytes:
        return (self.root / rel).read_bytes()

    def where(self, rel: str) -> str:
        return str(self.root / rel)


class _BrokenHeader(Exception):
    """A tar header that is damaged, or missing where the archive was cut short."""


class _StrictTarInfo(tarfile.TarInfo):
    """Tar headers read strictly: ``tarfile`` ends a stream silently at a damaged header, or where the data stops
    before the end-of-archive marker; here both raise :class:`_BrokenHeader`."""

    @classmethod
    def fromtarfile(cls, tar: tarfile.TarFile) -> tarfile.TarInfo:
        try:
            return super().fromtarfile(tar)
        except tarfile.EOFHeaderError:  # the end-of-archive marker
            raise
        except (tarfile.InvalidHeaderError, tarfile.TruncatedHeaderError, tarfile.EmptyHeaderError) as err:
            raise _BrokenHeader(str(err) or type(err).__name__) from None


class _TarTree:
    """The members below ``parts`` of a ``.tar.gz``, read into memory by one streaming pass when first needed."""

    def __init__(self, path: Path, parts: tuple[str, ...]):
        self.path, self.parts = path, parts
        self.identity = [_stat_identity(path, path.name)]
        self._members: dict[str, bytes] | None = None
        self._dirs: set[str] = set()

    def _relative(self, name: str) -> str:
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if parts and parts[0] == self.path.name[: -len(_TAR_SUFFIX)]:
            parts = parts[1:]  # the archive's top folder
        return "/".join(parts)

    def _wanted(self, rel: str) -> bool:
        return any(rel == part or rel.startswith(part + "/") for part in self.parts)

    def _load(self) -> dict[str, bytes]:
        if self._members is None:
            members: dict[str, bytes] = {}
            last, count = None, 0
            try:
                # gzip (not tarfile's "r|gz") decompresses, and the stream is read to its end after the tar's
                # end-of-archive marker, so that gzip checks the CRC and length of every byte it holds
                with gzip.open(self.path, "rb") as stream, \
                        tarfile.open(fileobj=stream, mode="r|", tarinfo=_StrictTarInfo) as tar:
                    for member in progress(tar, desc=f"reading {self.path.name}", unit=" files", leave=False):
                        last, count = member.name, count + 1
                        rel = self._relative(member.name)
                        if not rel or not self._wanted(rel):
                            continue
                        if member.isdir():
                            self._dirs.add(rel)
                        elif member.isfile():
                            members[rel] = tar.extractfile(member).read()
                            parent = rel.rsplit("/", 1)[0] if "/" in rel else ""
                            while parent:  # archives need not list folders
                                self._dirs.add(parent)
                                parent = parent.rsplit("/", 1)[0] if "/" in parent else ""
                    while stream.read(_GZIP_CHUNK):  # the rest of the stream: gzip verifies its CRC at the end
                        pass
            except (tarfile.TarError, _BrokenHeader, EOFError, gzip.BadGzipFile, zlib.error) as err:
                where = f"after {count} entries (the last one read: {last})" if count else "at its start"
                raise ValueError(
                    f"cannot read the archive {self.path}: it is damaged, cut short or not a gzip-compressed tar file "
                    f"({type(err).__name__}: {err}; {where}). Download it again, or re-create it from the original "
                    f"folder (tar czf {self.path.name} {self.path.name[:-len(_TAR_SUFFIX)]}).") from None
            self._members = members
        return self._members

    @property
    def files(self) -> list[str]:
        return sorted(self._load())

    @property
    def dirs(self) -> set[str]:
        self._load()
        return self._dirs

    def read(self, rel: str) -> bytes:
        return self._load()[rel]

    def where(self, rel: str) -> str:
        return f"{rel} inside {self.path}"

def _pickle_files(spec: DatasetSpec, split: str, folder: Path) -> tuple[list[Path], Path]:
    """torchvision's CIFAR pickles of ``split``, and the meta file with the class names."""
    dataset = _TORCHVISION[spec.name]
    names = [name for name, _md5 in (dataset.train_list if split == "train" else dataset.test_list)]
    paths = [folder / name for name in names] + [folder / dataset.meta["filename"]]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} is incomplete, missing: {', '.join(missing)}. Re-download it (delete the "
                                f"folder and pass download=True) or point to another data root with the `root` "
                                f"argument or the {DATA_ENV} environment variable.")
    return paths[:-1], paths[-1]

def _unpickle(path: Path, spec: DatasetSpec) -> dict:
    _check_md5(spec, path)
    with open(path, "rb") as f:
        try:
            entry = pickle.load(f, encoding="latin1")
        except Exception as err:  # a truncated or garbled pickle raises any of many types
            raise ValueError(f"cannot read {path} ({type(err).__name__}: {err}): the file is truncated or corrupt. "
                             f"{_redownload(path.parent)}") from None
    if not isinstance(entry, dict):
        raise ValueError(f"{path} holds a {type(entry).__name__}, not a CIFAR batch. {_redownload(path.parent)}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}


def _read_pickles(spec: DatasetSpec, files: list[Path], meta: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images (N x 3 x 32 x 32: the rows are already RGB planes), labels and class names of CIFAR pickles."""
    images, labels = [], []
    for path in files:
        entry = _unpickle(path, spec)
        try:
            images.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels += list(entry["labels"] if "labels" in entry else entry["fine_labels"])
        except (KeyError, ValueError, TypeError) as err:
            raise ValueError(f"{path} is not a CIFAR batch ({type(err).__name__}: {err}). "
                             f"{_redownload(path.parent)}") from None
    key = _TORCHVISION[spec.name].meta["key"]
    names = _unpickle(meta, spec).get(key)
    if names is None:
        raise ValueError(f"{meta} has no {key!r} entry (the class names). {_redownload(meta.parent)}")
    classes = [n.decode() if isinstance(n, bytes) else n for n in names]
    return np.concatenate(images), np.asarray(labels, dtype=np.int64), classes
