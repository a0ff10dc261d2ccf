"""The book's results: one JSON file per data set under ``results/``, written by the chapters, read by the summary.

Schema of ``results/<dataset>.json`` (validated on write, so a chapter cannot store a malformed file)::

    {"chapter": "02_cifar", "dataset": "cifar10", "data_source": "CIFAR-10 JPEG copy", "profile": "smoke",
     "device": "cpu", "status": "run",
     "models": [{"name": "KD student", "kind": "kd", "stages": 1, "macs": 1.2e6, "pct_teacher": 25.0,
                 "top1_mean": 41.2, "top1_std": 0.0, "seeds": [0], "agreement_teacher": 55.0}, ...],
     "extra": {...}}

``top1_*`` and ``agreement_teacher`` (top-1 agreement with the teacher) are percentages on the test split;
``macs`` are multiply-accumulates per image (see :mod:`reskd.flops`); a model entry may name its training ``regime``
(optional text). A data set that could not be run is recorded
with :func:`write_not_run` (``"status": "not run"``, a ``reason`` and no models), so the summary can say so.

Chapters that measure something other than a list of models (the theory checks, the adaptive-inference ablations)
write an *analysis* record, ``results/<name>.json`` with the same text fields and an ``analysis`` dict instead of
``models`` (:func:`write_analysis`, :func:`load_analysis`); :func:`load_results` leaves those out.

This module is a leaf (schema, validation, reading and writing, :func:`plain_json`); the records' assembly and the
verdicts on them (model entries, tables, calibrated adaptive entries, targets) are in :mod:`reskd.report`.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from .profiles import PROFILE_NAMES
from .utils import atomic_json_dump, project_root

RESULTS_DIR = "results"
RESULTS_ENV = "RESKD_RESULTS"  # where results files go when no root is given (the book's runner stages them there)
#: ``chain-to-teacher``: a res-student chain with the teacher as its last exit (S0 -> S0 + S1 -> T), calibrated on
#: val to a budget (it names its ``regime`` and carries ``budget_pct``)
MODEL_KINDS = ("teacher", "scratch", "kd", "kd-equal-cost", "reskd-stage", "reskd-adaptive", "cascade",
               "chain-to-teacher")
#: optional text fields of a model entry (a string when present): ``regime``, a regime's description, and
#: ``regime_name``, its name in :data:`reskd.regimes.CIFAR_REGIMES` (what a later profile may take over)
OPTIONAL_TEXT = ("regime", "regime_name")
#: optional number fields of a model entry: ``budget_pct``, the budget of mean MACs (% of the teacher's) an adaptive
#: policy was calibrated to on the validation split (its realised test cost, ``pct_teacher``, may differ a little),
#: and ``val_top1_mean``, its top-1 on the validation split (mean over seeds: what a choice among entries may read)
OPTIONAL_NUMBERS = ("budget_pct", "val_top1_mean")
KIND_FIELDS = {"chain-to-teacher": ("regime", "budget_pct")}  # the optional fields a kind must have
STATUS_RUN, STATUS_NOT_RUN = "run", "not run"
ANALYSIS = "analysis"
_REQUIRED_TEXT = ("chapter", "dataset", "data_source", "profile", "device")
_MODEL_NUMBERS = ("macs", "pct_teacher", "top1_mean", "top1_std", "agreement_teacher")
_PERCENTAGES = ("top1_mean", "agreement_teacher")  # pct_teacher may exceed 100 (a model dearer than the teacher)
MAX_PERCENT = 100.0


class ResultsError(ValueError):
    """A results record does not follow the schema (the message names the field and the fix)."""


def results_root(root: str | os.PathLike | None = None) -> Path:
    """``root``, else ``$RESKD_RESULTS``, else the project's ``results/`` folder."""
    if root is not None:
        return Path(root)
    return Path(os.environ[RESULTS_ENV]) if os.environ.get(RESULTS_ENV) else project_root() / RESULTS_DIR


def plain_json(value: Any) -> Any:
    """``value`` as plain JSON: numpy scalars as Python numbers, NaN and inf as None, tuples as lists, dicts and
    lists cleaned throughout (the one cleaning every record goes through before :func:`validate`)."""
    if isinstance(value, Mapping):
        return {key: plain_json(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_json(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check_model(i: int, model: Any) -> dict[str, Any]:
    where = f"models[{i}]"
    if not isinstance(model, Mapping):
        raise ResultsError(f"{where} must be a dict with the model's fields, got {type(model).__name__}.")
    model = dict(model)
    if not isinstance(model.get("name"), str) or not model["name"]:
        raise ResultsError(f"{where}.name must be a non-empty string (e.g. 'KD student').")
    where = f"{where} ({model['name']!r})"
    if model.get("kind") not in MODEL_KINDS:
        raise ResultsError(f"{where}.kind is {model.get('kind')!r}; use one of {', '.join(MODEL_KINDS)}.")
    stages = model.get("stages")
    if not isinstance(stages, int) or isinstance(stages, bool) or stages < 0:
        raise ResultsError(f"{where}.stages must be a non-negative int (0 for the teacher, 1 for a plain student, "
                           f"k+1 for S0 + k res-students), got {stages!r}.")
    for key in _MODEL_NUMBERS:
        value = model.get(key)
        if key == "agreement_teacher" and value is None:
            continue  # the teacher itself, or not measured
        if not _is_number(value) or value < 0:
            raise ResultsError(f"{where}.{key} must be a finite number >= 0, got {value!r}.")
        if key in _PERCENTAGES and value > MAX_PERCENT:
            raise ResultsError(f"{where}.{key} is a percentage and must be <= 100, got {value!r}.")
    seeds = model.get("seeds")
    if not isinstance(seeds, (list, tuple)) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise ResultsError(f"{where}.seeds must be a non-empty list of ints (the seeds behind top1_mean), "
                           f"got {seeds!r}.")
    model["seeds"] = list(seeds)
    for key in OPTIONAL_NUMBERS:
        if key in model and (not _is_number(model[key]) or model[key] < 0):
            raise ResultsError(f"{where}.{key} is an optional number >= 0 (e.g. 18.04); give one or leave it out, "
                               f"got {model[key]!r}.")
    for key in OPTIONAL_TEXT:
        if key in model and not isinstance(model[key], str):
            raise ResultsError(f"{where}.{key} is optional text (e.g. 'low-data'); give a string or leave it out, "
                               f"got {model[key]!r}.")
    missing = [key for key in KIND_FIELDS.get(model["kind"], ()) if key not in model]
    if missing:
        raise ResultsError(f"{where}: a {model['kind']!r} entry needs {', '.join(missing)} (the regime of its chain "
                           f"and the budget, % of the teacher's MACs, its policy was calibrated to on val).")
    return model


def _check_header(record: Any, what: str) -> dict[str, Any]:
    """``record`` as a plain dict whose text fields (:data:`_REQUIRED_TEXT`) and profile are valid."""
    if not isinstance(record, Mapping):
        raise ResultsError(f"{what} must be a dict, got {type(record).__name__}.")
    record = dict(record)
    for key in _REQUIRED_TEXT:
        if not isinstance(record.get(key), str) or not record[key]:
            raise ResultsError(f"field {key!r} must be a non-empty string, got {record.get(key)!r}.")
    if record["profile"] not in PROFILE_NAMES:
        raise ResultsError(f"field 'profile' is {record['profile']!r}; use one of {', '.join(PROFILE_NAMES)}.")
    return record


def validate(record: Mapping[str, Any]) -> dict[str, Any]:
    """Check ``record`` against the schema; return it as a plain dict, or raise :class:`ResultsError`."""
    record = _check_header(record, "a results record")
    status = record.setdefault("status", STATUS_RUN)
    if status not in (STATUS_RUN, STATUS_NOT_RUN):
        raise ResultsError(f"field 'status' is {status!r}; use {STATUS_RUN!r} or {STATUS_NOT_RUN!r}.")
    models = record.get("models")
    if not isinstance(models, (list, tuple)):
        raise ResultsError(f"field 'models' must be a list of dicts, got {type(models).__name__}.")
    if status == STATUS_RUN and not models:
        raise ResultsError("field 'models' is empty; record at least the teacher, or use write_not_run().")
    if status == STATUS_NOT_RUN and not isinstance(record.get("reason"), str):
        raise ResultsError("a 'not run' record needs a 'reason' string saying why (e.g. 'data not found').")
    record["models"] = [_check_model(i, m) for i, m in enumerate(models)]
    names = [m["name"] for m in record["models"]]
    if len(set(names)) != len(names):
        raise ResultsError(f"model names must be unique within a record, got {names}.")
    if record.get("extra") is not None and not isinstance(record["extra"], Mapping):
        raise ResultsError(f"field 'extra' must be a dict or None, got {type(record['extra']).__name__}.")
    try:
        json.dumps(record, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ResultsError(f"the record is not plain JSON ({e}); convert tensors/arrays with float() or .tolist().")
    return record


def write_results(chapter: str, dataset: str, data_source: str, profile: str, device: str,
                  models: Sequence[Mapping[str, Any]], extra: Mapping[str, Any] | None = None,
                  root: str | os.PathLike | None = None) -> Path:
    """Validate and atomically write ``<root>/<dataset>.json``; return its path."""
    record = validate({"chapter": chapter, "dataset": dataset, "data_source": data_source, "profile": profile,
                       "device": str(device), "status": STATUS_RUN, "models": list(models),
                       "extra": dict(extra) if extra is not None else None})
    return atomic_json_dump(record, results_root(root) / f"{dataset}.json")


def write_not_run(chapter: str, dataset: str, reason: str, profile: str, *, data_source: str = "unavailable",
                  device: str = "none", extra: Mapping[str, Any] | None = None,
                  root: str | os.PathLike | None = None) -> Path:
    """Record that ``dataset`` was not run, and why (the summary shows the reason instead of numbers); ``extra``
    holds what was computed without running it (e.g. the models' costs)."""
    record = validate({"chapter": chapter, "dataset": dataset, "data_source": data_source, "profile": profile,
                       "device": str(device), "status": STATUS_NOT_RUN, "reason": reason, "models": [],
                       **({"extra": dict(extra)} if extra is not None else {})})
    return atomic_json_dump(record, results_root(root) / f"{dataset}.json")


def validate_analysis(record: Mapping[str, Any]) -> dict[str, Any]:
    """Check an analysis record (text fields as in :func:`validate`, plus an ``analysis`` dict of plain JSON)."""
    record = _check_header(record, "an analysis record")
    if not isinstance(record.get(ANALYSIS), Mapping) or not record[ANALYSIS]:
        raise ResultsError(f"field {ANALYSIS!r} must be a non-empty dict of the chapter's measurements.")
    try:
        json.dumps(record, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ResultsError(f"the record is not plain JSON ({e}); convert tensors/arrays with float() or .tolist(), "
                           "and NaN/inf to None.")
    return record


def write_analysis(name: str, chapter: str, dataset: str, data_source: str, profile: str, device: str,
                   analysis: Mapping[str, Any], root: str | os.PathLike | None = None) -> Path:
    """Validate and atomically write the analysis record ``<root>/<name>.json``; return its path."""
    if not name or "/" in name or name.endswith(".json"):
        raise ResultsError(f"analysis name {name!r} must be a plain file stem such as 'theory'.")
    record = validate_analysis({"chapter": chapter, "dataset": dataset, "data_source": data_source,
                                "profile": profile, "device": str(device), ANALYSIS: dict(analysis)})
    return atomic_json_dump(record, results_root(root) / f"{name}.json")


def load_analysis(name: str, root: str | os.PathLike | None = None) -> dict[str, Any] | None:
    """The analysis record ``<root>/<name>.json``, or None when no chapter wrote it yet."""
    path = results_root(root) / f"{name}.json"
    if not path.exists():
        return None
    try:
        return validate_analysis(json.loads(path.read_text()))
    except (ResultsError, json.JSONDecodeError) as e:
        raise ResultsError(f"{path.name}: {e} Re-run the chapter that writes it.") from e


GAPS_DIR = "lengths"  # <results>/lengths/<dataset>.json: each profile's verdict gaps, kept across profiles


def write_gaps(dataset: str, profile: str, *, teacher_epochs: int, student_epochs: int, gaps: list[dict[str, Any]],
               choices: Mapping[str, Any] | None = None, root: str | os.PathLike | None = None) -> Path:
    """Record ``profile``'s verdict gaps (:func:`reskd.report.verdict_gaps`) for ``dataset`` beside those of the
    other profiles already recorded (a chapter run in one profile keeps the others' entries), atomically, with the
    ``choices`` its run made on val (the residual loss, ...), which a profile trained later may take over instead of
    training its studies again."""
    path = results_root(root) / GAPS_DIR / f"{dataset}.json"
    entries = load_gaps(dataset, root)
    entries[profile] = plain_json({"teacher_epochs": teacher_epochs, "student_epochs": student_epochs,
                                   "gaps": gaps, "choices": dict(choices or {})})
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_json_dump(entries, path)


def load_gaps(dataset: str, root: str | os.PathLike | None = None) -> dict[str, dict[str, Any]]:
    """``{profile: {"teacher_epochs", "student_epochs", "gaps", "choices"}}`` recorded for ``dataset`` (empty when
    none); a malformed file raises, naming it."""
    path = results_root(root) / GAPS_DIR / f"{dataset}.json"
    if not path.exists():
        return {}
    try:
        entries = json.loads(path.read_text())
        for profile, entry in entries.items():
            if not (isinstance(entry, Mapping) and isinstance(entry.get("gaps"), list)
                    and all(_is_number(entry.get(k)) for k in ("teacher_epochs", "student_epochs"))):
                raise ResultsError(f"the entry of profile {profile!r} needs teacher_epochs, student_epochs and gaps.")
    except (ResultsError, json.JSONDecodeError, AttributeError) as e:
        raise ResultsError(f"{GAPS_DIR}/{path.name}: {e} Re-run the chapter that writes it.") from e
    return entries


def load_results(root: str | os.PathLike | None = None) -> dict[str, dict[str, Any]]:
    """Every valid ``<root>/*.json`` model record, keyed by file stem (a malformed file raises, naming the file);
    analysis records (:func:`write_analysis`) are left out."""
    records = {}
    for path in sorted(results_root(root).glob("*.json")):
        try:
            record = json.loads(path.read_text())
            if isinstance(record, Mapping) and ANALYSIS in record:
                continue
            records[path.stem] = validate(record)
        except (ResultsError, json.JSONDecodeError) as e:
            raise ResultsError(f"{path.name}: {e} Re-run the chapter that writes it.") from e
    return records
