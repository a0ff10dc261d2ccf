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


def test_round_robin_advances_the_runs_together_and_ends_with_the_runs_of_one_go(exp, monkeypatch):
    """Round-robin, turn 1: the KD student S0 trains one epoch a round; the res-student S1, built on S0, waits for it,
    then trains one epoch a round (3 + 2 more rounds); a run asked for by two jobs (S0, by kd and by reskd) trains once
    a round. The runs end with the weights of the same jobs run one after the other."""
    import dataclasses

    import torch

    from reskd import experiment as E

    base = exp()
    three = base.profile.replace(student_train=dataclasses.replace(base.profile.student_train, epochs=3),
                                 residual_loss="mse+ce", studies=())  # as in converged: no loss ablation first

    def make(folder: str) -> E.Experiment:
        return E.Experiment(three, data_root=base.data_root, artifacts=base.artifacts.parent / folder, device="cpu",
                            progress=False)

    calls = []
    real_fit = E.fit

    def fit(distiller, loader, config, *, run_dir, **kw):
        calls.append((run_dir.name.split("-")[0], kw["turn"]))
        return real_fit(distiller, loader, config, run_dir=run_dir, **kw)

    monkeypatch.setattr(E, "fit", fit)
    turns = make("turns")
    assert cli.run_round_robin(turns, ["kd", "reskd"], [0], turn=1) == 5
    assert turns.turn is None  # the experiment trains whole runs again afterwards
    assert [role for role, _ in calls] == ["teacher", "kd", "kd", "kd", "res1", "res1", "res1"]
    assert {turn for _, turn in calls} == {1}
    monkeypatch.setattr(E, "fit", real_fit)
    whole = make("whole")
    cli.run_jobs(whole, ["kd", "reskd"], [0])
    assert sorted(turns.results) == sorted(whole.results)
    for name, result in whole.results.items():
        assert len(result.history) == len(turns.results[name].history)
        assert all(torch.equal(a, b) for a, b in zip(result.model.state_dict().values(),
                                                     turns.results[name].model.state_dict().values())), name


def test_round_robin_refuses_what_has_no_turns(exp):
    e = exp()
    with pytest.raises(ValueError, match="turn must be a number of epochs >= 1"):
        cli.run_round_robin(e, ["kd"], [0], turn=0)
    with pytest.raises(ValueError, match="teacher-cache computes every view in one go"):
        cli.run_round_robin(e, ["teacher-cache", "kd"], [0])
    with pytest.raises(ValueError, match=r"unknown job\(s\) \['distill'\]"):
        cli.run_round_robin(e, ["distill"], [0])
    with pytest.raises(ValueError, match="retrain=True cannot go round-robin"):
        cli.run_round_robin(exp(retrain=True), ["kd"], [0])
