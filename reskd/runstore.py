"""Where trained models live: one folder per run, named by a key derived from the run's whole configuration, the
files a run folder holds, its lock, and whether it is finished.

A chapter describes each run it needs by a JSON-able ``spec`` (data set and source, architecture, seed, loss,
training config, the keys of the models it learns from, ...). :func:`run_dir` maps the spec to
``<artifacts root>/<dataset>/<name>-<key>``; :func:`reskd.train.fit` then loads the run when it is finished, resumes it
when it was interrupted, and trains it when it is missing. Changing anything in the spec changes the key, so a stale
artifact is never mistaken for a fresh one.

The artifacts root is the ``root`` argument, else ``$RESKD_ARTIFACTS``, else ``artifacts/`` in the project. A run
folder holds ``spec.json``, ``checkpoint.pt`` while training, then ``history.csv``, ``summary.json`` and ``model.pt``
(:data:`RUN_FILES`, written by :func:`reskd.train.fit`), and ``.lock`` (:func:`folder_lock`).
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Mapping

from .utils import atomic_json_dump, project_root, stable_hash

try:
    import fcntl
except ImportError:  # Windows: runs are not locked
    fcntl = None

ARTIFACTS_ENV = "RESKD_ARTIFACTS"
SPEC_FILE = "spec.json"
KEY_CHARS = 10


def artifacts_root(root: str | os.PathLike | None = None) -> Path:
    """``root``, else ``$RESKD_ARTIFACTS``, else ``<project>/artifacts``."""
    if root is not None:
        return Path(root)
    if os.environ.get(ARTIFACTS_ENV):
        return Path(os.environ[ARTIFACTS_ENV])
    return project_root() / "artifacts"


def run_key(spec: Mapping[str, Any]) -> str:
    """A short, stable hash of a run's configuration."""
    return stable_hash(dict(spec), KEY_CHARS)


def run_path(spec: Mapping[str, Any], name: str, *, root: str | os.PathLike | None = None) -> Path:
    """Where the run described by ``spec`` lives (nothing is created)."""
    if "dataset" not in spec:
        raise ValueError("a run spec needs a 'dataset' entry (e.g. 'cifar10') to file the run under.")
    return artifacts_root(root) / str(spec["dataset"]) / f"{name}-{run_key(spec)}"


def run_dir(spec: Mapping[str, Any], name: str, *, root: str | os.PathLike | None = None) -> Path:
    """The folder of the run described by ``spec`` (created, with ``spec.json`` written into it)."""
    path = run_path(spec, name, root=root)
    spec_path = path / SPEC_FILE
    if not spec_path.exists():
        atomic_json_dump(json.loads(json.dumps(dict(spec), default=str)), spec_path)
    return path


CHECKPOINT = "checkpoint.pt"
FINAL_MODEL = "model.pt"
HISTORY = "history.csv"
SUMMARY = "summary.json"
SNAPSHOT = "stable.pt"  # a wsd run's checkpoint at the end of its stable phase, where a longer run can fork from it
RUN_FILES = (CHECKPOINT, FINAL_MODEL, HISTORY, SUMMARY, SNAPSHOT)  # what fit writes, each through a temporary file


def is_finished(run_dir: str | os.PathLike) -> bool:
    """Whether ``run_dir`` holds a finished run (``model.pt``, written after ``summary.json`` and ``history.csv``)."""
    run_dir = Path(run_dir)
    return (run_dir / FINAL_MODEL).exists() and (run_dir / SUMMARY).exists()


RETIRED = "retired.json"  # a finished run whose weights were dropped: its spec, history and summary stay


def is_retired(run_dir: str | os.PathLike) -> bool:
    """Whether ``run_dir`` holds a retired run (:func:`retire`): its numbers without its weights."""
    run_dir = Path(run_dir)
    return (run_dir / RETIRED).exists() and (run_dir / SUMMARY).exists()


class RetiredRunError(RuntimeError):
    """A run was asked for whose weights were dropped (:func:`retire`): only its history and summary remain."""


def retire(run_dir: str | os.PathLike, reason: str) -> Path:
    """Drop a finished run's weights (``model.pt``, and any ``checkpoint.pt`` or ``stable.pt``), keeping its spec,
    history and summary, so that what it measured stays while its bytes leave the artifacts' cap: a length ladder's
    rungs other than the chosen one, once the ladder is done. ``retired.json`` records ``reason``, the bytes
    dropped and the weights' sha256. Returns that file; a run that is not finished (or is being trained) is refused."""
    import hashlib

    run_dir = Path(run_dir)
    if not is_finished(run_dir):
        raise ValueError(f"{run_dir} holds no finished run (no {FINAL_MODEL} beside {SUMMARY}): only a finished run's "
                         "weights can be dropped.")
    with folder_lock(run_dir, wait=False):
        model = run_dir / FINAL_MODEL
        info = {"reason": reason, "model_bytes": model.stat().st_size,
                "model_sha256": hashlib.sha256(model.read_bytes()).hexdigest()}
        atomic_json_dump(info, run_dir / RETIRED)
        for name in (FINAL_MODEL, CHECKPOINT, SNAPSHOT):
            (run_dir / name).unlink(missing_ok=True)
    return run_dir / RETIRED


PACKED_FORMAT = "reskd-packed-v1"  # a model.pt whose float tensors are byte-shuffled and xz-compressed (lossless)
PACK_PRESET = 6  # xz's preset: 9 gains under 1% more on these weights and compresses several times slower


def pack_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """``state`` (a state dict) losslessly in fewer bytes: every float tensor's bytes, concatenated in order, split
    into planes by byte position (the exponents' bytes, which repeat, apart from the mantissas', which do not) and
    xz-compressed into one uint8 tensor; other tensors as they are. Plain tensors and types only, so the result loads
    with ``torch.load(..., weights_only=True)``; :func:`unpack_state` restores the state bit for bit."""
    import lzma

    import numpy as np
    import torch

    floats = [k for k, v in state.items() if v.is_floating_point()]
    itemsizes = {state[k].element_size() for k in floats}
    if len(itemsizes) > 1:
        raise ValueError(f"pack_state packs float tensors of one width; this state mixes {sorted(itemsizes)} bytes.")
    width = itemsizes.pop() if itemsizes else 1
    raw = b"".join(state[k].contiguous().numpy().tobytes() for k in floats)
    planes = np.frombuffer(raw, dtype=np.uint8).reshape(-1, width).T.tobytes()
    return {"format": PACKED_FORMAT, "width": width,
            "floats": [[k, str(state[k].dtype).removeprefix("torch."), list(state[k].shape)] for k in floats],
            "data": torch.frombuffer(bytearray(lzma.compress(planes, preset=PACK_PRESET)), dtype=torch.uint8),
            "other": {k: v for k, v in state.items() if not v.is_floating_point()}, "order": list(state)}


def unpack_state(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The state dict :func:`pack_state` packed (a state dict that is not packed comes back as it is)."""
    if obj.get("format") != PACKED_FORMAT:
        return dict(obj)
    import lzma

    import numpy as np
    import torch

    width = obj["width"]
    planes = np.frombuffer(lzma.decompress(obj["data"].numpy().tobytes()), dtype=np.uint8)
    raw = planes.reshape(width, -1).T.copy()
    tensors, offset = dict(obj["other"]), 0
    for name, dtype, shape in obj["floats"]:
        count = int(np.prod(shape, dtype=np.int64))
        chunk = raw[offset:offset + count].tobytes()
        tensors[name] = torch.frombuffer(bytearray(chunk), dtype=getattr(torch, dtype)).reshape(shape).clone()
        offset += count
    return {name: tensors[name] for name in obj["order"]}


PACKED = "packed.json"  # a finished run whose model.pt is packed (pack_weights)


def pack_weights(run_dir: str | os.PathLike) -> Path:
    """Store a finished run's ``model.pt`` packed (:func:`pack_state`: lossless, about 17% fewer bytes on this
    book's ResNets), so the run takes less of the artifacts' cap and every number read from it stays the same;
    :func:`reskd.train.load_run` unpacks it. ``packed.json`` records the bytes and sha256 of the file before and
    after. The packed state is checked to unpack to the same tensors before it replaces the file. A run already
    packed is left as it is; one unfinished or being trained is refused."""
    import hashlib
    import io

    import torch

    from .utils import atomic_torch_save

    run_dir = Path(run_dir)
    if not is_finished(run_dir):
        raise ValueError(f"{run_dir} holds no finished run (no {FINAL_MODEL} beside {SUMMARY}): only a finished run's "
                         "weights can be packed.")
    with folder_lock(run_dir, wait=False):
        if (run_dir / PACKED).exists():
            return run_dir / PACKED
        model = run_dir / FINAL_MODEL
        before = model.read_bytes()
        state = torch.load(io.BytesIO(before), map_location="cpu", weights_only=True)  # the bytes just read
        packed = pack_state(state)
        again = unpack_state(packed)
        if list(again) != list(state) or not all(torch.equal(again[k], v) and again[k].dtype == v.dtype
                                                 for k, v in state.items()):
            raise ValueError(f"{model}: the packed weights do not unpack to the same tensors; it is left as it is.")
        atomic_torch_save(packed, model)
        after = model.read_bytes()
        atomic_json_dump({"bytes_before": len(before), "sha256_before": hashlib.sha256(before).hexdigest(),
                          "bytes_after": len(after), "sha256_after": hashlib.sha256(after).hexdigest()},
                         run_dir / PACKED)
    return run_dir / PACKED


def remove_temporary_files(run_dir: Path) -> None:
    """The temporary files of writes that a kill interrupted (only the lock holder writes them)."""
    for name in RUN_FILES:
        for tmp in run_dir.glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)


LOCK_FILE = ".lock"


class RunLockedError(RuntimeError):
    """Another process holds the lock of a run folder (it is training that run right now)."""


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, *, wait: bool = True, announce: bool = True):
    """Hold an exclusive lock on ``folder`` (``<folder>/.lock``) so that two processes never train the same run.

    The operating system releases the lock when its process dies, so an interrupted run never leaves a stale lock.
    ``wait=False`` raises :class:`RunLockedError` instead of waiting; ``announce=False`` waits without saying so (a
    lock held for a moment). Without ``fcntl`` (Windows) nothing is locked.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        yield
        return
    with open(folder / LOCK_FILE, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise RunLockedError(f"{folder} is being trained by another process; wait until it finishes (the run "
                                     "is then loaded), or stop that process.") from None
            if announce:
                print(f"{folder.name}: another process is training this run; waiting for it to finish ...", flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


RUN_STATES = ("finished", "retired", "training now", "interrupted", "not started")


def is_locked(folder: Path) -> bool:
    """Whether a process holds the run folder's lock (see :func:`folder_lock`)."""
    if not (folder / LOCK_FILE).exists():
        return False
    try:
        with folder_lock(folder, wait=False):
            return False
    except RunLockedError:
        return True


def run_folders(dataset: str | None = None, *, root: str | os.PathLike | None = None) -> list[Path]:
    """Every run folder (one holding a spec) under the artifacts root, of ``dataset`` or of all data sets, sorted."""
    return sorted(p.parent for p in artifacts_root(root).glob(f"{dataset or '*'}/*/{SPEC_FILE}"))


def run_status(folder: Path, spec: Mapping[str, Any]) -> dict[str, Any]:
    """Where the run of ``spec`` in ``folder`` (which need not exist yet) stands: its state (one of
    :data:`RUN_STATES`), epochs done of the epochs planned, the last epoch's validation top-1, the hours its
    epochs took so far, and the median hours of one epoch (``epoch_hours``: what an epoch takes when the run is not
    slowed by other work on the cores, which inflates the mean; None before the first epoch)."""
    import pandas as pd

    history = pd.read_csv(folder / HISTORY) if (folder / HISTORY).exists() else pd.DataFrame()
    if is_finished(folder):
        state = "finished"
    elif is_retired(folder):
        state = "retired"
    elif folder.is_dir() and is_locked(folder):
        state = "training now"
    elif (folder / CHECKPOINT).exists():
        state = "interrupted"
    else:
        state = "not started"
    return {"dataset": folder.parent.name, "run": folder.name, "state": state, "epochs_done": len(history),
            "epochs": spec.get("train", {}).get("epochs"),
            "val_top1": history["val_top1"].iloc[-1] if "val_top1" in history else None,
            "hours": history["epoch_s"].sum() / 3600 if "epoch_s" in history else 0.0,
            "epoch_hours": history["epoch_s"].median() / 3600 if "epoch_s" in history and len(history) else None}


RUN_STATUS_COLUMNS = ["dataset", "run", "state", "epochs_done", "epochs", "val_top1", "hours"]


def runs_table(dataset: str | None = None, *, root: str | os.PathLike | None = None):
    """Every run folder under the artifacts root (of ``dataset``, or all), as :func:`run_status` tells it. What to
    look at before resuming a profile in the background, or to see how far the background workers are (for the runs
    a profile's jobs still have to start, see ``python -m reskd.cli <dataset> <profile> <jobs> --plan``)."""
    import pandas as pd

    rows = [run_status(folder, spec) for folder in run_folders(dataset, root=root)
            if (spec := read_spec(folder)) is not None]
    return pd.DataFrame(rows, columns=RUN_STATUS_COLUMNS)


class UnreadableSpecWarning(UserWarning):
    """A run folder whose ``spec.json`` cannot be read: listings skip it, naming the file."""


def read_spec(folder: Path) -> dict[str, Any] | None:
    """The spec of the run folder ``folder``, or None (with an :class:`UnreadableSpecWarning` naming the file and
    the fix) when it is not a readable JSON object."""
    path = folder / SPEC_FILE
    try:
        spec = json.loads(path.read_text())
        if not isinstance(spec, dict):
            raise ValueError(f"it holds a {type(spec).__name__}, not an object")
    except (OSError, UnicodeDecodeError, ValueError) as error:
        warnings.warn(UnreadableSpecWarning(
            f"skipped {path}: it is not a readable run spec ({type(error).__name__}: {error}). Delete the folder "
            f"{folder} (its run is retrained when needed), or restore the file."), stacklevel=2)
        return None
    return spec


def cost_table(dataset: str | None = None, *, root: str | os.PathLike | None = None,
               train_samples: int | None = None):
    """What every finished run cost, from its own files: epochs, precision, batch size, wall-clock hours (the sum of
    ``epoch_s`` in its history: training plus the per-epoch evaluation, as measured where it ran, less the
    ``view_wait_s`` its epochs spent waiting for another worker's teacher outputs), training images per second, and
    the CPU (or GPU) and thread count it finished on. Runs trained before the summary recorded the machine
    and the training-set size show them empty; ``train_samples`` fills in that size."""
    import pandas as pd

    rows = []
    for folder in run_folders(dataset, root=root):
        if not is_finished(folder) or not (folder / HISTORY).exists():
            continue
        spec = read_spec(folder)
        if spec is None:
            continue
        summary = json.loads((folder / SUMMARY).read_text()) if (folder / SUMMARY).exists() else {}
        machine = summary.get("machine", {})
        train = spec.get("train", {})
        history = pd.read_csv(folder / HISTORY)
        seconds = history["epoch_s"].sum() - (history["view_wait_s"].sum() if "view_wait_s" in history else 0.0)
        n = machine.get("train_samples") or train_samples
        epochs = train.get("epochs")
        rows.append({"dataset": folder.parent.name, "run": folder.name, "role": spec.get("role"),
                     "epochs": epochs, "precision": train.get("precision", "fp32"),
                     "batch_size": train.get("batch_size"), "hours": seconds / 3600,
                     "images_per_s": n * epochs / seconds if n and epochs and seconds else None,
                     "cpu": machine.get("gpu") or machine.get("cpu"), "threads": machine.get("threads")})
    return pd.DataFrame(rows, columns=["dataset", "run", "role", "epochs", "precision", "batch_size", "hours",
                                       "images_per_s", "cpu", "threads"])


def main(argv: list[str] | None = None) -> None:
    """``python -m reskd.runstore [dataset] [--root PATH] [--retire RUN --reason TEXT] [--pack RUN ...]``: the state
    of every run folder under the artifacts root; with ``--retire``, drop a finished run's weights first
    (:func:`retire`); with ``--pack``, store finished runs' weights packed first (:func:`pack_weights`)."""
    import argparse

    from .data import SPECS  # the data set names (imported here: the run store itself needs no torch)

    parser = argparse.ArgumentParser(prog="python -m reskd.runstore", description=main.__doc__.split(": ", 1)[1])
    parser.add_argument("dataset", nargs="?", choices=sorted(SPECS), default=None,
                        help="list the runs of this data set only (default: all)")
    parser.add_argument("--root", default=None,
                        help=f"the artifacts root (default: ${ARTIFACTS_ENV}, else artifacts/ in the project)")
    parser.add_argument("--retire", default=None, metavar="RUN_FOLDER",
                        help="drop this finished run's weights, keeping its spec, history and summary")
    parser.add_argument("--reason", default=None, help="why the run is retired (recorded; needed with --retire)")
    parser.add_argument("--pack", nargs="+", default=None, metavar="RUN_FOLDER",
                        help="store these finished runs' weights packed (lossless, fewer bytes)")
    args = parser.parse_args(argv)
    for folder in args.pack or ():
        try:
            info = json.loads(pack_weights(folder).read_text())
            print(f"packed: {folder} ({info['bytes_before']:,} -> {info['bytes_after']:,} bytes)")
        except (ValueError, RunLockedError) as e:
            raise SystemExit(f"cannot pack {folder}: {e}") from None
    if args.retire is not None:
        if not args.reason:
            parser.error("--retire needs --reason (it is recorded beside the run's numbers)")
        try:
            print(f"retired: {retire(args.retire, args.reason)}")
        except (ValueError, RunLockedError) as e:
            raise SystemExit(f"cannot retire {args.retire}: {e}") from None
    root = artifacts_root(args.root)
    if not root.is_dir():
        raise SystemExit(f"no artifacts root at {root}: it {'is not a folder' if root.exists() else 'does not exist'}. "
                         f"Point --root or the {ARTIFACTS_ENV} environment variable at the folder that holds the run "
                         f"folders (<root>/<dataset>/<run>).")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnreadableSpecWarning)
        table = runs_table(args.dataset, root=root)
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    if table.empty:
        of = f" of {args.dataset}" if args.dataset else ""
        print(f"no run folders{of} under the artifacts root {root}.")
        return
    print(f"runs under the artifacts root {root}:")
    print(table.to_string(index=False))


if __name__ == "__main__":  # python -m reskd.runstore [dataset]: the state of every run
    main()
