"""Where trained models live: one folder per run, named by a key derived from the run's whole configuration.

A chapter describes each run it needs by a JSON-able ``spec`` (data set and source, architecture, seed, loss,
training config, the keys of the models it learns from, ...). :func:`run_dir` maps the spec to
``<artifacts root>/<dataset>/<name>-<key>``; :func:`reskd.train.fit` then loads the run when it is finished, resumes it
when it was interrupted, and trains it when it is missing. Changing anything in the spec changes the key, so a stale
artifact is never mistaken for a fresh one.

The artifacts root is the ``root`` argument, else ``$RESKD_ARTIFACTS``, else ``artifacts/`` in the project.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from .utils import atomic_json_dump, project_root, stable_hash

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
