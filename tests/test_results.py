"""reskd.results: schema validation, round trip, atomic writes, plain JSON."""
import json
import math
import os

import numpy as np
import pytest

from helpers import results_model as _model, write_results as _write
from reskd import results as R


def test_round_trip(tmp_path):
    path = _write(tmp_path, extra={"epochs": 2})
    assert path == tmp_path / "cifar10.json"
    record = R.load_results(tmp_path)["cifar10"]
    assert record["profile"] == "smoke" and record["status"] == "run" and record["extra"] == {"epochs": 2}
    assert record["models"][1] == _model()


@pytest.mark.parametrize("change, field", [
    ({"kind": "distilled"}, "kind"),
    ({"top1_mean": 101.0}, "top1_mean"),
    ({"macs": float("nan")}, "macs"),
    ({"stages": -1}, "stages"),
    ({"seeds": []}, "seeds"),
    ({"name": ""}, "name"),
])
def test_bad_model_field_is_named(tmp_path, change, field):
    with pytest.raises(R.ResultsError, match=field):
        _write(tmp_path, models=[_model(**change)])
    assert not (tmp_path / "cifar10.json").exists()


def test_bad_record_fields_are_named(tmp_path):
    with pytest.raises(R.ResultsError, match="profile"):
        _write(tmp_path, profile="gpu")
    with pytest.raises(R.ResultsError, match="data_source"):
        _write(tmp_path, data_source="")
    with pytest.raises(R.ResultsError, match="models"):
        _write(tmp_path, models=[])
    with pytest.raises(R.ResultsError, match="unique"):
        _write(tmp_path, models=[_model(), _model()])


def test_write_is_atomic(tmp_path, monkeypatch):
    _write(tmp_path)
    before = (tmp_path / "cifar10.json").read_text()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)  # the rename is what makes the new file visible
    with pytest.raises(OSError):
        _write(tmp_path, profile="cpu")
    assert (tmp_path / "cifar10.json").read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["cifar10.json"]


def test_load_names_a_malformed_file(tmp_path):
    (tmp_path / "broken.json").write_text(json.dumps({"chapter": "x"}))
    with pytest.raises(R.ResultsError, match="broken.json"):
        R.load_results(tmp_path)


def test_analysis_round_trip_and_is_kept_out_of_model_records(tmp_path):
    _write(tmp_path)
    analysis = {"stages": [{"stage": 0, "train_energy": 3.5, "test_energy": 4.0}]}
    path = R.write_analysis("theory", "01_residual_theory", "cifar10", "CIFAR-10 JPEG copy", "smoke", "cpu",
                                  analysis, root=tmp_path)
    assert path.name == "theory.json"
    assert R.load_analysis("theory", root=tmp_path)["analysis"] == analysis
    assert list(R.load_results(tmp_path)) == ["cifar10"]
    assert R.load_analysis("missing", root=tmp_path) is None


@pytest.mark.parametrize("analysis, message", [({}, "non-empty dict"), ({"x": float("nan")}, "plain JSON")])
def test_bad_analysis_is_refused(tmp_path, analysis, message):
    with pytest.raises(R.ResultsError, match=message):
        R.write_analysis("theory", "01", "cifar10", "CIFAR-10", "smoke", "cpu", analysis, root=tmp_path)


def test_a_cascade_entry_is_a_model_kind(tmp_path):
    _write(tmp_path, models=[_model("teacher", "teacher", stages=0, pct_teacher=100.0, agreement_teacher=None),
                             _model("cascade KD -> ResKD", "cascade", stages=3)])
    assert [m["kind"] for m in R.load_results(tmp_path)["cifar10"]["models"]] == ["teacher", "cascade"]


def test_regime_is_optional_text(tmp_path):
    _write(tmp_path, models=[_model(regime="low-data"), _model("plain KD")])
    models = R.load_results(tmp_path)["cifar10"]["models"]
    assert models[0]["regime"] == "low-data" and "regime" not in models[1]
    with pytest.raises(R.ResultsError, match="regime"):
        _write(tmp_path, models=[_model(regime=3)])


def test_plain_json_cleans_numpy_and_non_finite_values():
    value = {"a": np.float64(1.5), "b": [np.int64(2), math.nan, (math.inf, "x")], "c": {"d": np.bool_(True)}}
    cleaned = R.plain_json(value)
    assert cleaned == {"a": 1.5, "b": [2, None, [None, "x"]], "c": {"d": True}}
    assert type(cleaned["a"]) is float and type(cleaned["b"][0]) is int and type(cleaned["c"]["d"]) is bool
    json.dumps(cleaned, allow_nan=False)


def test_budget_pct_is_an_optional_number(tmp_path):
    from helpers import results_model

    record = {"chapter": "02_cifar", "dataset": "cifar10", "data_source": "fixture", "profile": "smoke",
              "device": "cpu", "status": R.STATUS_RUN}
    R.validate({**record, "models": [results_model(budget_pct=18.04)]})
    with pytest.raises(R.ResultsError, match="budget_pct is an optional number"):
        R.validate({**record, "models": [results_model(budget_pct="18%")]})
