"""The book's results: one JSON file per data set under ``results/``, written by the chapters, read by the summary.

Schema of ``results/<dataset>.json`` (validated on write, so a chapter cannot store a malformed file)::

    {"chapter": "02_cifar", "dataset": "cifar10", "data_source": "CIFAR-10 JPEG copy", "profile": "smoke",
     "device": "cpu", "status": "run",
     "models": [{"name": "KD student", "kind": "kd", "stages": 1, "macs": 1.2e6, "pct_teacher": 25.0,
                 "top1_mean": 41.2, "top1_std": 0.0, "seeds": [0], "agreement_teacher": 55.0}, ...],
     "extra": {...}}

``top1_*`` and ``agreement_teacher`` (top-1 agreement with the teacher) are percentages on the test split;
``macs`` are multiply-accumulates per image (see :mod:`reskd.flops`). A data set that could not be run is recorded
with :func:`write_not_run` (``"status": "not run"``, a ``reason`` and no models), so the summary can say so.

Chapters that measure something other than a list of models (the theory checks, the adaptive-inference ablations)
write an *analysis* record, ``results/<name>.json`` with the same text fields and an ``analysis`` dict instead of
``models`` (:func:`write_analysis`, :func:`load_analysis`); :func:`load_results` leaves those out.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from . import metrics
from .adaptive import StagedOutputs, calibrate, evaluate_policy
from .profiles import PROFILE_NAMES
from .utils import atomic_json_dump, project_root

RESULTS_DIR = "results"
RESULTS_ENV = "RESKD_RESULTS"  # where results files go when no root is given (the book's runner stages them there)
MODEL_KINDS = ("teacher", "scratch", "kd", "kd-equal-cost", "reskd-stage", "reskd-adaptive")
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
                  device: str = "none", root: str | os.PathLike | None = None) -> Path:
    """Record that ``dataset`` was not run, and why (the summary shows the reason instead of numbers)."""
    record = validate({"chapter": chapter, "dataset": dataset, "data_source": data_source, "profile": profile,
                       "device": str(device), "status": STATUS_NOT_RUN, "reason": reason, "models": []})
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


def results_table(records: Mapping[str, Mapping[str, Any]], *, datasets: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per (data set, model): profile, kind, stages, MACs, % of teacher, top-1 and agreement.

    ``datasets`` lists the data sets to show, in order; one without a record, or recorded as not run, gets a single
    row saying so (numbers left empty) instead of being silently dropped.
    """
    by_dataset = {r["dataset"]: r for r in records.values()}
    rows = []
    for dataset in (datasets if datasets is not None else list(by_dataset)):
        record = by_dataset.get(dataset)
        if record is None or record.get("status") == STATUS_NOT_RUN or not record["models"]:
            reason = record.get("reason", "not run") if record is not None else "not run: no results file"
            rows.append({"dataset": dataset, "profile": record["profile"] if record else "", "model": reason})
            continue
        for m in record["models"]:
            rows.append({"dataset": dataset, "profile": record["profile"], "model": m["name"], "kind": m["kind"],
                         "stages": m["stages"], "MMACs": m["macs"] / 1e6, "% of teacher": m["pct_teacher"],
                         "top-1 (%)": m["top1_mean"], "± (std)": m["top1_std"], "seeds": len(m["seeds"]),
                         "agreement (%)": m["agreement_teacher"]})
    columns = ["dataset", "profile", "model", "kind", "stages", "MMACs", "% of teacher", "top-1 (%)", "± (std)",
               "seeds", "agreement (%)"]
    table = pd.DataFrame(rows, columns=columns)
    return table.astype({"stages": "Int64", "seeds": "Int64"})


def frame_records(frame: pd.DataFrame, digits: int = 4) -> list[dict[str, Any]]:
    """``frame``'s rows as plain-JSON dicts (floats rounded to ``digits``, missing values as None), for ``extra``."""
    rounded = frame.round(digits).astype(object)
    return rounded.where(frame.notna(), None).to_dict(orient="records")


def for_display(frame: pd.DataFrame, digits: int = 2) -> pd.DataFrame:
    """``frame`` with floats rounded to ``digits`` and missing values blank (for tables in the book)."""
    rounded = frame.round(digits).astype(object)
    return rounded.where(frame.notna(), "")


def model_record(name: str, kind: str, *, stages: int, macs: float, teacher_macs: float, top1: Sequence[float],
                 seeds: Sequence[int], agreement_teacher: Sequence[float] | None = None) -> dict[str, Any]:
    """One entry of ``models``: the per-seed top-1 (and agreement) values averaged, MACs as % of the teacher's."""
    if len(top1) != len(seeds):
        raise ResultsError(f"{name!r}: {len(top1)} top-1 values for {len(seeds)} seeds; give one value per seed.")
    mean = sum(top1) / len(top1)
    std = math.sqrt(sum((t - mean) ** 2 for t in top1) / (len(top1) - 1)) if len(top1) > 1 else 0.0
    agree = sum(agreement_teacher) / len(agreement_teacher) if agreement_teacher else None
    return {"name": name, "kind": kind, "stages": int(stages), "macs": float(macs),
            "pct_teacher": 100.0 * float(macs) / float(teacher_macs), "top1_mean": float(mean), "top1_std": float(std),
            "seeds": [int(s) for s in seeds], "agreement_teacher": None if agree is None else float(agree)}


def models_frame(models: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """A chapter's ``models`` entries as a readable table (MACs in millions, percentages)."""
    frame = pd.DataFrame(list(models), columns=["name", "kind", "stages", "macs", "pct_teacher", "top1_mean",
                                                "top1_std", "agreement_teacher"])
    frame["macs"] = frame["macs"] / 1e6
    return frame.rename(columns={"name": "model", "macs": "MMACs", "pct_teacher": "% of teacher",
                                 "top1_mean": "top-1 (%)", "top1_std": "± (std)", "agreement_teacher": "agreement (%)"})


def check_target(models: Sequence[Mapping[str, Any]], *, max_pct_teacher: float, max_drop: float) -> dict[str, Any]:
    """Whether ResKD reached a target like the paper's: a ResKD entry (adaptive or a static stage) within
    ``max_drop`` top-1 points of the teacher at no more than ``max_pct_teacher`` % of its MACs, and above every
    equal-cost baseline. Picks the most accurate ResKD entry within the budget; says why when none qualifies."""
    teacher = next((m for m in models if m["kind"] == "teacher"), None)
    if teacher is None:
        raise ResultsError("the models hold no teacher; the target is relative to the teacher's top-1.")
    within = [m for m in models if m["kind"] in ("reskd-stage", "reskd-adaptive") and m["pct_teacher"] <= max_pct_teacher]
    out: dict[str, Any] = {"max_pct_teacher": max_pct_teacher, "max_drop": max_drop, "teacher_top1": teacher["top1_mean"]}
    if not within:
        return {**out, "reached": False, "why": f"no ResKD entry costs at most {max_pct_teacher}% of the teacher"}
    best = max(within, key=lambda m: m["top1_mean"])
    drop = teacher["top1_mean"] - best["top1_mean"]
    beats = {m["name"]: best["top1_mean"] > m["top1_mean"] for m in models if m["kind"] == "kd-equal-cost"}
    reached = drop <= max_drop and all(beats.values())
    why = [] if drop <= max_drop else [f"{drop:.2f} points below the teacher (allowed {max_drop})"]
    why += [f"not above {name}" for name, ok in beats.items() if not ok]
    return {**out, "reskd": best["name"], "reskd_top1": best["top1_mean"], "reskd_pct_teacher": best["pct_teacher"],
            "drop": drop, "beats": beats, "reached": reached, "why": "; ".join(why) or "reached"}


NOISE_Z = 2.0  # a difference counts when it exceeds this many standard errors of the difference of seed means


def compare_at_cost(models: Sequence[Mapping[str, Any]], *, against: Sequence[str] = ("kd", "kd-equal-cost"),
                    z: float = NOISE_Z) -> pd.DataFrame:
    """The full ResKD chain (the static entry with the most stages) against every model of the kinds ``against``:
    both top-1 means, their difference, its standard error over seeds, sqrt(s_a^2/n_a + s_b^2/n_b), and a verdict:
    ResKD ahead or behind when the difference exceeds ``z`` standard errors, else within the seed noise (and
    "one seed" when either side has a single seed, so no noise estimate exists)."""
    chains = [m for m in models if m["kind"] == "reskd-stage"]
    if not chains:
        raise ResultsError("the models hold no 'reskd-stage' entry; add the ResKD chain (reskd_records) first.")
    chain = max(chains, key=lambda m: m["stages"])
    rows = []
    for other in (m for m in models if m["kind"] in against):
        diff = chain["top1_mean"] - other["top1_mean"]
        n_a, n_b = len(chain["seeds"]), len(other["seeds"])
        se = math.sqrt(chain["top1_std"] ** 2 / n_a + other["top1_std"] ** 2 / n_b) if min(n_a, n_b) > 1 else None
        if se is None:
            verdict = "one seed: no noise estimate"
        elif abs(diff) > z * se:
            verdict = "ResKD ahead" if diff > 0 else "ResKD behind"
        else:
            verdict = "within seed noise"
        rows.append({"ResKD": chain["name"], "ResKD MMACs": chain["macs"] / 1e6, "ResKD top-1": chain["top1_mean"],
                     "versus": other["name"], "versus MMACs": other["macs"] / 1e6, "versus top-1": other["top1_mean"],
                     "difference": diff, "std. error": se, "verdict": verdict})
    return pd.DataFrame(rows)


def reskd_records(staged: Mapping[int, Mapping[str, StagedOutputs]], teacher_macs: float, *,
                  drops: Sequence[float] = (0.5, 1.0), criterion: str = "max_prob") -> list[dict[str, Any]]:
    """Model entries of a ResKD chain, from ``staged[seed]["val" | "test"]`` (cumulative stage outputs with the
    teacher's logits): every static stage, and the adaptive rule calibrated on the validation split to keep its
    top-1 within each of ``drops`` points of the full ensemble's (the test split is only evaluated)."""
    seeds = list(staged)
    if not seeds:
        raise ResultsError("no staged outputs: give at least one seed's {'val': ..., 'test': ...}.")
    first = staged[seeds[0]]["test"]
    entries = []
    for k in range(first.num_stages):
        tests = [staged[seed]["test"] for seed in seeds]
        entries.append(model_record(
            "ResKD S0" if k == 0 else f"ResKD S0..S{k}", "reskd-stage", stages=k + 1, macs=first.cumulative_macs[k],
            teacher_macs=teacher_macs, top1=[metrics.top1(t.logits[k], t.labels) for t in tests], seeds=seeds,
            agreement_teacher=[metrics.agreement(t.logits[k], t.teacher_logits) for t in tests]
            if first.teacher_logits is not None else None))
    for drop in drops:
        runs = []
        for seed in seeds:
            val = staged[seed]["val"]
            full_val = metrics.top1(val.logits[-1], val.labels)
            policy = calibrate(val, criterion, target_top1=max(0.0, full_val - drop))  # a top-1 is never below 0
            runs.append(evaluate_policy(staged[seed]["test"], policy, teacher_macs=teacher_macs))
        entries.append(model_record(
            f"ResKD adaptive (val -{drop:g} pt)", "reskd-adaptive", stages=first.num_stages,
            macs=sum(r["avg_macs"] for r in runs) / len(runs), teacher_macs=teacher_macs,
            top1=[r["top1"] for r in runs], seeds=seeds,
            agreement_teacher=[r["agreement_teacher"] for r in runs] if "agreement_teacher" in runs[0] else None))
    return entries
