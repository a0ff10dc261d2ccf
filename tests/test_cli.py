"""The job CLI: its jobs, its errors, and its old address (python -m reskd.experiment) still answering."""
import subprocess
import sys

import pytest

from reskd import cli
from reskd.profiles import PROFILES


def test_unknown_jobs_are_refused_before_anything_runs():
    with pytest.raises(ValueError, match=r"unknown job\(s\) \['distill'\]; choose from teacher, teacher-cache"):
        cli.run_jobs(None, ["distill"])


def test_the_parser_knows_every_data_set_with_profiles(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # argparse wraps at the terminal's width, and breaks names at hyphens
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert all(job in out for job in cli.JOBS) and all(name in out for name in PROFILES)


@pytest.mark.parametrize("module", ["reskd.cli", "reskd.experiment"])
def test_both_addresses_run_the_cli(module):
    done = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, check=True)
    assert "teacher-cache" in done.stdout


@pytest.mark.parametrize("seeds", [["-1"], ["0", "-1"], ["x"]])
def test_negative_seeds_are_refused_before_anything_runs(capsys, seeds):
    """A seed -1 would train a run the chapters then reject (their seeds are ints >= 0)."""
    with pytest.raises(SystemExit) as exit_:
        cli.main(["cifar10", "smoke", "kd", "--seeds", *seeds])
    assert exit_.value.code == 2
    assert "is not a seed: give ints >= 0" in capsys.readouterr().err
    with pytest.raises(ValueError, match="seeds must be a non-empty list of ints >= 0"):
        cli.run_jobs(None, ["kd"], [-1])


def test_hours_pauses_the_jobs_and_exits_with_its_own_status(monkeypatch, capsys):
    import time

    from reskd.train import TrainingPaused

    made = {}

    def fake_experiment(profile, **kw):
        made.update(kw)
        return object()

    def pause(exp, jobs, seeds):
        raise TrainingPaused("paused after epoch 3 of 10")

    monkeypatch.setattr(cli, "Experiment", fake_experiment)
    monkeypatch.setattr(cli, "run_jobs", pause)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["cifar10", "smoke", "teacher", "--hours", "1.5"])
    assert exit_.value.code == cli.PAUSED_EXIT != 0  # a paused command is not a finished one
    assert made["pause_at"] == pytest.approx(time.time() + 1.5 * 3600, abs=60)
    assert "paused after epoch 3 of 10 (python -m reskd.cli cifar10 smoke teacher --hours 1.5)" in capsys.readouterr().out
