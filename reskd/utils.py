"""Small shared helpers: devices, seeding, progress bars, atomic writes and stable hashes."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping, TypeVar

import numpy as np
import torch
from tqdm.auto import tqdm


HASH_CHARS = 16  # length of the hex keys used for caches and artifacts
PROGRESS_OFF_VARIABLE = "TQDM_DISABLE"  # set to 1 (as the book's runner and the Makefile do): no progress bars at all
T = TypeVar("T")


def project_root() -> Path:
    """The checkout holding this package (its parent has ``pyproject.toml``), else the working directory."""
    here = Path(__file__).resolve().parents[1]
    return here if (here / "pyproject.toml").exists() else Path.cwd()


def progress_disabled() -> bool:
    """Whether ``$TQDM_DISABLE`` asks for no progress bars (any value but empty, ``0`` or ``false``)."""
    return os.environ.get(PROGRESS_OFF_VARIABLE, "").strip().lower() not in ("", "0", "false", "no")


def progress(iterable: Iterable[T], *, enabled: bool = True, **kwargs: Any) -> Iterable[T]:
    """``iterable`` wrapped in a tqdm bar, unless ``enabled`` is False or ``$TQDM_DISABLE`` is set.

    tqdm reads ``TQDM_DISABLE`` only as a default, and its notebook bar (what ``tqdm.auto`` picks in a Jupyter kernel)
    turns a missing ``disable`` into ``disable=False``; deciding here keeps bars out of stored notebook outputs."""
    return tqdm(iterable, disable=not enabled or progress_disabled(), **kwargs)


CPUINFO = Path("/proc/cpuinfo")


def cpuinfo_field(name: str) -> str | None:
    """The first value of field ``name`` ("model name", "flags", ...) in ``/proc/cpuinfo``; None where it cannot be
    read (not Linux)."""
    try:
        text = CPUINFO.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == name:
            return value.strip()
    return None


def machine_info(device: str | torch.device) -> dict[str, Any]:
    """Where a run trained: the CPU model (or the GPU's name), torch's thread count and version, for its summary."""
    device = torch.device(device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {"device": device.type, "gpu": gpu, "cpu": cpuinfo_field("model name"), "threads": torch.get_num_threads(),
            "torch": torch.__version__}


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Return ``device``, where ``"auto"``/``None`` means the GPU when one is present, else the CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} was requested but no CUDA GPU is available; use device='auto' or 'cpu'.")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Capture every random number generator the training loop may touch, as tensors and plain Python types only, so
    that a checkpoint holding it loads with ``torch.load(..., weights_only=True)`` (no pickle code runs)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": [str(kind), torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore the generators captured by :func:`rng_state`."""
    random.setstate(_as_tuples(state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    keys = keys.numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys)
    np.random.set_state((kind, keys.astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(value: Any) -> Any:
    """``random.setstate`` wants tuples where a round trip through some formats gives lists."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


FILE_MODE = 0o644  # what atomic_write leaves: results, run files and checkpoints readable by whoever shares them


class DiskFullError(OSError):
    """A write that failed because the disk (or the quota) is full; the file it was replacing is unchanged."""


#: What torch's zip writer (``inline_container.cc``) says when a write it made came up short: on a full disk it
#: reports the failed write or the position it expected, not ENOSPC.
_TORCH_SHORT_WRITE = ("unexpected pos", "file write failed")


def _disk_full(error: BaseException) -> bool:
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
    return isinstance(error, RuntimeError) and any(s in str(error) for s in _TORCH_SHORT_WRITE)


def atomic_write(path: str | os.PathLike, write, mode: str = "wb") -> Path:
    """Write ``path`` atomically: ``write(file)`` fills a temporary file in the same folder, then it is renamed.

    An interrupted write therefore never leaves a truncated ``path`` behind. The file is readable by all
    (:data:`FILE_MODE`, as a plain ``open`` under the usual umask), not private as a temporary file is. A full disk
    (ENOSPC, or torch's short-write errors) raises :class:`DiskFullError` naming the file; ``path`` keeps what it
    held before.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        if _disk_full(error):
            raise _disk_full_error(path, error) from error
        raise
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException as error:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if _disk_full(error):
            raise _disk_full_error(path, error) from error
        raise
    return path


def _disk_full_error(path: Path, error: BaseException) -> DiskFullError:
    kept = f"{path} is unchanged" if path.exists() else f"{path} was not written"
    detail = (str(error).strip().splitlines() or [type(error).__name__])[-1]
    return DiskFullError(errno.ENOSPC, f"disk full: cannot write {path} ({type(error).__name__}: {detail}); {kept} "
                                       f"and the partial file was removed. Free space on the disk that holds "
                                       f"{path.parent}, then run again (an interrupted run resumes from its last "
                                       f"checkpoint).")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` through :func:`atomic_write`."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def atomic_json_dump(obj: Any, path: str | os.PathLike) -> Path:
    """Pretty JSON through :func:`atomic_write`."""
    return atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"), "w")


def stable_hash(obj: Any, n: int = HASH_CHARS) -> str:
    """A short hex digest of a JSON-serialisable object, independent of dict order."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def state_dict_hash(module: torch.nn.Module, n: int = HASH_CHARS) -> str:
    """A short hex digest of a module's class and of every tensor in its state dict (names, shapes, values)."""
    h = hashlib.sha256(type(module).__qualname__.encode())
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:n]


#: oneDNN's channels_last convolutions in the CPU build of torch 2.14 corrupt memory (a crash or a hang) when a
#: convolution has fewer than this many channels, e.g. resnet8 at width 0.25; such models stay contiguous.
MIN_CHANNELS_LAST_CHANNELS = 8


def memory_format_for(model: torch.nn.Module, device: torch.device, requested: bool = True) -> torch.memory_format:
    """``channels_last`` when requested and safe for ``model`` on ``device``, else the contiguous format."""
    if not requested:
        return torch.contiguous_format
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    narrow = any(min(m.in_channels, m.out_channels) < MIN_CHANNELS_LAST_CHANNELS and m.in_channels != 3
                 for m in convs)
    if not convs or (narrow and device.type == "cpu"):
        return torch.contiguous_format
    return torch.channels_last


def model_memory_format(model: torch.nn.Module) -> torch.memory_format:
    """The memory format ``model``'s first convolution is stored in (inputs should match it)."""
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d) and m.weight.dim() == 4:
            if m.weight.is_contiguous(memory_format=torch.channels_last) and not m.weight.is_contiguous():
                return torch.channels_last
            return torch.contiguous_format
    return torch.contiguous_format


def model_num_classes(model: torch.nn.Module) -> int | None:
    """The classes a classifier predicts: its ``num_classes`` attribute, else its last linear layer's outputs, else
    None (it cannot be told)."""
    n = getattr(model, "num_classes", None)
    if isinstance(n, int) and not isinstance(n, bool):
        return n
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    return linears[-1].out_features if linears else None
