"""The glue the chapters call: profiles, the artifact store, ResKD stages, on a fixture CIFAR-10 (the ``exp``
fixture of conftest.py; the studies around the method are tested in test_studies.py)."""
import dataclasses
from pathlib import Path

import pandas as pd
import pytest
import torch

from reskd import experiment as E
from reskd.cli import run_jobs
from reskd.adaptive import StagedOutputs
from reskd.experiment import ResKDRuns
from reskd.profiles import Arch, get_profile, profile_banner
from reskd.runstore import run_key


def test_runs_are_stored_by_configuration_and_reloaded(exp, tmp_path):
    first = exp()
    teacher = first.teacher()
    folder = tmp_path / "artifacts" / "cifar10" / f"teacher-resnet8x0.5-s0-{run_key(first.teacher_spec())}"
    assert (folder / "model.pt").exists() and (folder / "spec.json").exists()
    assert first.teacher_path() == folder  # where the run was stored, without loading it
    again = exp().teacher()
    for a, b in zip(teacher.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    assert first.student_spec("kd")["teacher"] == run_key(first.teacher_spec())
    assert run_key(first.student_spec("kd", seed=1)) != run_key(first.student_spec("kd", seed=0))


def test_unknown_profile_and_split_are_clear_errors(exp):
    with pytest.raises(ValueError, match="unknown profile"):
        get_profile("cifar10", "laptop")
    with pytest.raises(ValueError, match="no profiles"):
        get_profile("mnist", "cpu")
    with pytest.raises(ValueError, match="unknown split"):
        exp().eval_loader("holdout")


def test_train_sample_is_a_fixed_subset(exp, monkeypatch):
    monkeypatch.setattr(E, "TRAIN_SAMPLE_SIZE", 7)
    e = exp()
    first, again = e.eval_loader("train-sample").data, exp().eval_loader("train-sample").data
    assert len(first) == 7 and first.fingerprint == again.fingerprint


def test_run_jobs_trains_what_is_asked_and_refuses_unknown_jobs(exp):
    e = exp()
    run_jobs(e, ["scratch"], seeds=[0, 1])
    assert sorted(e.results) == ["scratch-resnet8x0.5-s0", "scratch-resnet8x0.5-s1"]
    with pytest.raises(ValueError, match="unknown job"):
        run_jobs(e, ["distill-everything"])


def test_staged_predicts_each_network_once_and_matches_running_the_ensemble(exp, monkeypatch):
    from reskd.adaptive import collect

    e = exp()
    runs = ResKDRuns(e, loss="mse")
    ens = runs.ensemble([Arch("resnet8", 0.5)])
    calls = []
    real_predict = E.predict
    monkeypatch.setattr(E, "predict", lambda model, *a, **kw: calls.append(model) or real_predict(model, *a, **kw))
    staged = runs.staged(ens, "test")
    whole = collect(ens, e.eval_loader("test"), device="cpu")
    assert torch.equal(staged.logits, whole.logits) and torch.equal(staged.labels, whole.labels)
    assert staged.stage_macs == whole.stage_macs
    s0_calls = sum(m is ens.stages[0] for m in calls)
    e.logits(ens.stages[0], "test")  # S0 again (the KD student's table row): read from the cache
    assert s0_calls == 1 and sum(m is ens.stages[0] for m in calls) == 1


def test_each_stage_is_trained_on_every_earlier_stage(exp, monkeypatch):
    """Stage k's distiller gets the ensemble of S0..S(k-1) (the very modules the final ensemble holds), and its run spec
    lists the keys of every earlier stage, in order."""
    e = exp()
    seen = []
    real = E.ResidualDistiller

    def recording(res_student, teacher, previous, **kw):
        seen.append(list(previous.stages))
        return real(res_student, teacher, previous, **kw)

    monkeypatch.setattr(E, "ResidualDistiller", recording)
    arch = Arch("resnet8", 0.5)
    ens = ResKDRuns(e, loss="mse").ensemble([arch, arch, arch])
    assert ens.num_stages == 4 and [len(previous) for previous in seen] == [1, 2, 3]
    for k, previous in enumerate(seen, start=1):
        assert all(a is b for a, b in zip(previous, ens.stages[:k])), f"stage {k} saw other modules"
    keys = [run_key(e.student_spec("kd", seed=0))]
    for k in range(1, 4):
        spec = e.specs[f"res{k}-resnet8x0.5-mse-image-s0"]
        assert spec["previous"] == keys, f"stage {k}"
        keys.append(run_key(spec))
    assert len(set(keys)) == 4


@pytest.mark.parametrize("feature_index", [-1, -2])
def test_stage_outputs_are_each_network_alone_and_sum_to_the_ensemble(exp, feature_index):
    """ResKDRuns.stage_outputs predicts every stage on its own (a feature head on S0's map ``feature_index``); their
    running sums are the ensemble's own forward pass (staged with joint=True), and statement 1 holds on them."""
    from reskd.experiment import FEATURE_HEAD
    from reskd.reskd import cumulative_sums
    from reskd.theory import stage_theory_records

    e = exp()
    runs = ResKDRuns(e, loss="mse", feature_index=feature_index)
    ens = runs.ensemble([Arch("resnet8", 0.5), Arch(FEATURE_HEAD, 0.25)])
    assert ens.inputs == ["image", "image", "features"] and ens.feature_index == feature_index
    s0 = ens.stages[0]
    assert ens.stages[2].body[0].in_channels == s0.feature_channels[feature_index]
    assert e.specs["res2-feature_headx0.25-mse-features-s0"]["feature_index"] == feature_index
    own = runs.stage_outputs(ens, "test")
    staged = runs.staged(ens, "test", joint=True)
    assert own.shape == staged.logits.shape
    torch.testing.assert_close(torch.stack(cumulative_sums(list(own))), staged.logits, rtol=1e-5, atol=1e-5)
    images = torch.cat([x for x, _, _ in e.eval_loader("test")])
    with torch.no_grad():
        head = ens.stages[2](s0.forward_features(images.float())[feature_index])
    torch.testing.assert_close(own[2], head, rtol=1e-4, atol=1e-4)
    records = stage_theory_records({"test": staged}, {"test": own})
    assert records["statement1_holds"].all()


def test_evaluations_are_cached_by_weights_and_images(exp, tmp_path):
    e = exp()
    teacher, loader = e.teacher(), e.eval_loader("val")
    calls = []

    n = len(loader.data)  # an evaluation has one row per sample

    def compute():
        calls.append(1)
        return torch.arange(float(n))

    assert torch.equal(E.cached_eval(teacher, loader, compute), torch.arange(float(n)))
    assert torch.equal(E.cached_eval(teacher, loader, compute), torch.arange(float(n))) and len(calls) == 1
    E.cached_eval(teacher, e.eval_loader("test"), compute)  # other images: computed
    assert len(calls) == 2
    for entry in (tmp_path / "cache" / E.EVAL_CACHE).iterdir():
        entry.write_bytes(b"damaged")
    assert torch.equal(E.cached_eval(teacher, loader, compute), torch.arange(float(n))) and len(calls) == 3


class _RunsCode:
    """Unpickling this creates the file ``marker``."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


def _only_entry(tmp_path):
    (entry,) = (tmp_path / "cache" / E.EVAL_CACHE).iterdir()
    return entry


def test_evaluation_cache_runs_no_pickled_code_and_checks_what_it_reads(exp, tmp_path):
    """An entry is read with weights_only=True: a foreign pickle runs no code and is recomputed; an entry that is
    not this evaluation (another form, another number of samples) is recomputed too, never returned."""
    e = exp()
    teacher, loader = e.teacher(), e.eval_loader("val")
    logits, labels = e.logits(teacher, "val")  # (logits, labels), one row per sample
    entry = _only_entry(tmp_path)
    marker = tmp_path / "code-ran"
    wrong = {"format": E.EVAL_CACHE_FORMAT, "kind": "tuple", "num_samples": len(labels),
             "value": [logits[:3], labels[:3]]}
    for content in (_RunsCode(str(marker)), ("not", "tensors"), torch.zeros(len(labels)), wrong):
        torch.save(content, entry)
        again = e.logits(teacher, "val")
        assert not marker.exists()
        assert isinstance(again, tuple) and torch.equal(again[0], logits) and torch.equal(again[1], labels)
        assert torch.equal(E.cached_eval(teacher, loader, lambda: 1 / 0)[0], logits)  # stored again: read back


def test_staged_outputs_are_cached_as_tensors(exp, tmp_path):
    """StagedOutputs are stored as their fields (tensors and plain types), loadable with weights_only=True, and
    rebuilt when read back."""
    e = exp()
    loader = e.eval_loader("val")
    staged = StagedOutputs(torch.randn(2, len(loader.data), 10), loader.data.labels.clone(), [5, 7])
    assert E.cached_eval(e.teacher(), loader, lambda: staged) is staged
    torch.load(_only_entry(tmp_path), weights_only=True)
    back = E.cached_eval(e.teacher(), loader, lambda: 1 / 0)
    assert isinstance(back, StagedOutputs) and back.stage_macs == [5, 7] and back.teacher_logits is None
    assert torch.equal(back.logits, staged.logits) and torch.equal(back.labels, staged.labels)


def test_training_table_reports_last_and_best_epoch_and_time(exp):
    e = exp()
    e.teacher()
    e.student("kd")
    table = e.training_table()
    assert list(table["role"]) == ["teacher", "kd"]
    history = e.results[table["run"].iloc[1]].history
    assert table["test_top1"].iloc[1] == pytest.approx(history["test_top1"].iloc[-1])
    assert table["best_test_top1"].iloc[1] == pytest.approx(history["test_top1"].max())
    assert table["train_hours"].iloc[1] == pytest.approx(history["epoch_s"].sum() / 3600)
    assert (table["train_hours"] > 0).all()


def test_warm_teacher_cache_goes_from_the_last_view_to_the_first(exp, monkeypatch):
    """A student trained beside the warmer fills its views from the first: the warmer starts at the other end."""
    from reskd.data import Loader

    e = exp()
    e.profile = e.profile.replace(student_train=dataclasses.replace(e.profile.student_train, epochs=3))
    order: list[int] = []
    set_epoch = Loader.set_epoch

    def recorded_set_epoch(self, epoch: int) -> None:
        order.append(epoch)
        set_epoch(self, epoch)

    monkeypatch.setattr(Loader, "set_epoch", recorded_set_epoch)
    e.teacher()
    order.clear()
    assert e.warm_teacher_cache() == 3
    assert order == [2, 1, 0]
    order.clear()
    assert e.warm_teacher_cache(epochs=[0, 1]) == 0 and order == []  # stored views are skipped


def test_warm_teacher_cache_fills_the_students_views_and_skips_locked_ones(exp):
    from reskd.cache import TEACHER_CACHE_NAME, OutputCache

    e = exp()
    loader = e.train_loader(e.profile.student_train)
    cache = OutputCache(e.teacher(), e.output_cache, name=TEACHER_CACHE_NAME)
    key, n = loader.view_key(0), len(loader.data)
    with cache.view_lock(key, wait=False):  # another worker computes view 0
        assert e.warm_teacher_cache() == 0
        assert cache.view_busy(key)
        plan = exp(plan=True)
        assert plan.warm_teacher_cache() == 0 and plan.planned[-1]["state"] == "training now"
    assert not cache.view_busy(key) and not cache.is_stored(key, n)
    assert e.warm_teacher_cache() == e.profile.student_train.epochs
    assert cache.is_stored(key, n)
    assert e.warm_teacher_cache() == 0  # nothing left to compute
    files = {f: f.stat().st_mtime_ns for f in cache.root.glob("*.pt")}
    assert len(files) == e.profile.student_train.epochs
    exp().student("kd")  # every teacher output is served from the cache: no view is written again
    assert {f: f.stat().st_mtime_ns for f in cache.root.glob("*.pt")} == files


def test_train_missing_false_loads_finished_runs_and_names_the_missing_one(exp):
    trained = exp().teacher()
    loader = exp(train_missing=False)
    loaded = loader.teacher()  # finished: loaded, the very weights that were trained
    assert loaded.state_dict().keys() == trained.state_dict().keys()
    for name, value in trained.state_dict().items():
        assert torch.equal(loaded.state_dict()[name].cpu(), value.cpu()), name
    with pytest.raises(E.MissingRunError, match=r"kd-resnet8x0.5-s0-.*python -m reskd.cli cifar10 smoke"):
        loader.student("kd")
    assert not any(p.name.startswith("kd-") for p in (loader.artifacts / "cifar10").iterdir())  # nothing created


def test_profile_banner_names_the_profile_its_data_and_what_to_trust():
    smoke = profile_banner(get_profile("cifar10", "smoke"), "CIFAR-10 (JPEG copy)")
    assert "`smoke` profile" in smoke and "not a reproduction" in smoke and "CIFAR-10 (JPEG copy)" in smoke
    cpu = profile_banner(get_profile("cifar10", "cpu"))
    assert "`cpu` profile" in cpu and "resnet56 teacher" in cpu and "not a reproduction" not in cpu
    assert "Only seeds" not in cpu
    fewer = profile_banner(get_profile("cifar10", "cpu").replace(seeds=(0,)))
    assert "Only seeds [0] of the profile's [0, 1, 2]" in fewer


def test_runs_table_tells_finished_interrupted_running_and_unstarted_runs(exp):
    from reskd.runstore import folder_lock, run_dir, runs_table

    e = exp()
    e.teacher()
    spec = e.student_spec("kd")
    interrupted = run_dir({**spec, "seed": 7}, "kd-interrupted", root=e.artifacts)
    (interrupted / "checkpoint.pt").write_bytes(b"")
    (interrupted / "history.csv").write_text("epoch,val_top1\n1,12.5\n")
    running = run_dir({**spec, "seed": 8}, "kd-running", root=e.artifacts)
    run_dir({**spec, "seed": 9}, "kd-unstarted", root=e.artifacts)
    with folder_lock(running, wait=False):
        table = runs_table("cifar10", root=e.artifacts).set_index("run")
    states = {name.rsplit("-", 1)[0]: row["state"] for name, row in table.iterrows()}  # names without their keys
    assert states == {"teacher-resnet8x0.5-s0": "finished", "kd-interrupted": "interrupted", "kd-running": "training now",
                      "kd-unstarted": "not started"}
    done = table.loc[table.index.str.startswith("kd-interrupted")].iloc[0]
    assert (done["epochs_done"], done["epochs"], done["val_top1"]) == (1, spec["train"]["epochs"], 12.5)
    assert runs_table("cifar100", root=e.artifacts).empty


def test_a_plan_lists_what_the_jobs_need_trains_nothing_and_sees_what_is_done(exp):
    """``--plan``: every run once, with its state and the job that first asked for it; nothing trained or evaluated
    on a stand-in. Once the teacher and S0 are trained for real, the plan says so."""
    from reskd import cli
    from reskd.studies import PLAN_STAND_IN_LOSS

    jobs = ["teacher", "teacher-cache", "kd", "reskd", "equal-cost"]
    plan = exp(plan=True)
    cli.run_jobs(plan, jobs, [0])
    table = cli.plan_table(plan)
    assert table["job"].iloc[:3].tolist() == ["teacher", "teacher-cache", "kd"] and "reskd" in set(table["job"])
    assert table["state"].eq("not started").all() and table["run"].is_unique
    assert not list(Path(plan.artifacts).rglob("model.pt"))  # nothing was trained
    assert "training epochs left" in cli.plan_summary(table)
    assert plan.profile.residual_loss == "auto"  # so the loss ablation is listed, and the chain after it with a stand-in
    assert len(plan.plan_notes) == 1 and repr(PLAN_STAND_IN_LOSS) in plan.plan_notes[0]
    assert any(f"-{PLAN_STAND_IN_LOSS}-" in run and job == "reskd" for run, job in zip(table["run"], table["job"]))

    real = exp()
    real.teacher()
    real.student("kd", seed=0)
    again = exp(plan=True)
    cli.run_jobs(again, jobs, [0])
    states = cli.plan_table(again).set_index("job")["state"]
    assert states["teacher"] == "finished" and states["kd"] == "finished"
    assert states["teacher-cache"] == "finished"  # the KD student's training stored the teacher's outputs on its view
    assert states["equal-cost"] == "not started"
    left = cli.plan_table(again)
    untrained = left[(left["state"] != "finished") & (left["job"] != "teacher-cache")]
    assert set(untrained["epochs"]) == {1}  # the fixture's recipe: every run one epoch
    assert f"; {len(untrained)} training epochs left" in cli.plan_summary(left)
    kd = left.set_index("job").loc["kd"]  # timed: an estimate from its own epochs; nothing left
    assert kd["hours"] > 0 and kd["hours_left"] == 0.0


def test_a_plan_estimates_the_hours_left_from_the_run_or_its_other_seeds():
    from reskd import cli
    from types import SimpleNamespace

    rows = [{"job": "kd", "run": "kd-r8-s0-aa11", "state": "finished", "epochs_done": 10, "epochs": 10, "hours": 2.0},
            {"job": "kd", "run": "kd-r8-s1-bb22", "state": "interrupted", "epochs_done": 2, "epochs": 10, "hours": 0.6},
            {"job": "kd", "run": "kd-r8-s2-cc33", "state": "not started", "epochs_done": 0, "epochs": 10, "hours": 0.0},
            {"job": "scratch", "run": "scratch-r8-s0-dd44", "state": "not started", "epochs_done": 0, "epochs": 10,
             "hours": 0.0}]
    table = cli.plan_table(SimpleNamespace(planned=rows)).set_index("run")["hours_left"]
    assert table["kd-r8-s0-aa11"] == 0.0
    assert table["kd-r8-s1-bb22"] == pytest.approx(8 * 0.3)  # its own epochs: 0.3 h each
    assert table["kd-r8-s2-cc33"] == pytest.approx(10 * (0.2 + 0.3) / 2)  # the other seeds' mean epoch
    assert pd.isna(table["scratch-r8-s0-dd44"])  # nothing of it timed
    summary = cli.plan_summary(cli.plan_table(SimpleNamespace(planned=rows)))
    assert summary.endswith("; 28 training epochs left (about 4.9 hours plus 1 run not timed yet)")
    # epochs of 0.2, 0.2, 0.2, 0.4, 0.4 h (the last two slowed by other work on the cores): the median, not the mean
    slowed = [{**rows[1], "epochs_done": 5, "hours": 1.4, "epoch_hours": 0.2}]
    assert cli.plan_table(SimpleNamespace(planned=slowed))["hours_left"].iloc[0] == pytest.approx(5 * 0.2)
    rungs = [{"job": "teacher-lengths", "run": "teacher-r56-s0-aa11", "state": "training now", "epochs_done": 10,
              "epochs": 30, "hours": 1.0},  # a ladder: the next rung will fork at epoch 24 and has run nothing
             {"job": "teacher-lengths", "run": "teacher-r56-s0-bb22", "state": "not started", "epochs_done": 24,
              "epochs": 60, "hours": 0.0}]
    table = cli.plan_table(SimpleNamespace(planned=rungs)).set_index("run")["hours_left"]
    assert table["teacher-r56-s0-bb22"] == pytest.approx(36 * 0.1)  # timed by the rung that ran, not 0 h per epoch


def test_a_plan_of_the_learnability_study_lists_its_regressors_and_evaluates_none(exp):
    from reskd import cli
    from reskd.data import cache_dir

    plan = exp(plan=True)
    cli.run_jobs(plan, ["learnability"], [0])
    roles = cli.plan_table(plan)["run"].str.split("-").str[0].tolist()
    assert roles.count("regress") == 2 and {"teacher", "kd", "res1"} <= set(roles)
    assert not list(Path(plan.artifacts).rglob("model.pt"))  # nothing trained
    assert not list((cache_dir() / E.EVAL_CACHE).rglob("*.pt"))  # nor evaluated


def test_length_ladder_forks_each_rung_from_the_previous_stable_phase(exp, tmp_path):
    """The teacher's ladder (2 and 4 epochs, wsd): the 4-epoch run starts from the 2-epoch run's stable.pt and ends
    with the weights of the 4-epoch run trained from scratch; the curve counts each epoch once; the rule picks the
    shortest length whose doubling gains under the margin."""
    from reskd import report
    from reskd.train import TrainConfig

    wsd = TrainConfig(epochs=4, batch_size=16, lr=0.05, schedule="wsd", decay_fraction=0.5)
    ladder = exp().profile.replace(teacher_train=wsd, teacher_lengths=(2, 4))
    trained = E.Experiment(ladder, data_root=exp().data_root, artifacts=tmp_path / "ladder", device="cpu",
                           progress=False)
    runs = trained.length_ladder("teacher")
    assert sorted(runs) == [2, 4] and runs[4].summary["forked_from"]["epoch"] == 1
    # the rungs share the teacher's name; only the profile's own length (4) stands for the teacher in the results
    assert [(row["role"], row["epochs"]) for _, row in trained.training_table().iterrows()] == [("teacher", 4)]
    chose_short = E.Experiment(ladder.replace(teacher_train=dataclasses.replace(wsd, epochs=2)),
                               data_root=exp().data_root, artifacts=tmp_path / "ladder", device="cpu", progress=False)
    chose_short.teacher()
    chose_short.length_ladder("teacher")  # loads both rungs; the 4-epoch one must not replace the chosen 2-epoch one
    assert list(chose_short.training_table()["epochs"]) == [2]
    longest = E.Experiment(ladder, data_root=exp().data_root, artifacts=tmp_path / "ladder").teacher_path()
    assert list((tmp_path / "ladder").rglob("stable.pt")) == [longest / "stable.pt"]  # the shorter rung's is gone
    alone = E.Experiment(ladder, data_root=exp().data_root, artifacts=tmp_path / "alone", device="cpu",
                         progress=False).teacher()  # the profile's teacher: the 4-epoch run, from scratch
    for a, b in zip(runs[4].model.state_dict().values(), alone.state_dict().values()):
        assert torch.equal(a, b)
    curve = report.length_curve(runs)
    assert list(curve["forked_at"].fillna(0)) == [0, 1]
    hours = [r.history["epoch_s"].sum() / 3600 for r in (runs[2], runs[4])]
    assert curve["own_hours"].iloc[1] < hours[1]  # the shared first epoch is not counted again
    fake = pd.DataFrame({"epochs": [30, 60, 120], "val_top1": [88.0, 89.5, 89.7]})
    assert report.chosen_length(fake, 0.3) == 60
    assert report.chosen_length(fake.assign(val_top1=[88.0, 89.5, 90.0]), 0.3) is None
    still = fake.assign(val_top1=[88.0, 89.5, 90.0])  # every doubling gains 0.3 or more
    assert report.chosen_length(still, 0.3, cap=60) == 60 and report.length_capped(still, 0.3, 60)
    assert report.chosen_length(fake, 0.3, cap=120) == 60 and not report.length_capped(fake, 0.3, 120)  # rule first
    assert report.chosen_length(fake, 0.3, cap=30) == 30 and report.length_capped(fake, 0.3, 30)  # rule's 60 > cap
    assert report.chosen_length(still.iloc[:2], 0.3, cap=120) is None  # the cap's rung is not trained yet
    with pytest.raises(ValueError, match="wsd"):
        exp().length_ladder("teacher", lengths=(1, 2))
    plan = E.Experiment(ladder.replace(teacher_lengths=(2, 4, 8)), data_root=exp().data_root,
                        artifacts=tmp_path / "plan", device="cpu", progress=False, plan=True)
    plan.length_ladder("teacher")  # nothing trained: the 4- and 8-epoch rungs start where the rung before decays
    assert [row["epochs_done"] for row in plan.planned] == [0, 1, 2] and len(plan.plan_notes) == 2


def test_a_retired_rung_keeps_its_numbers_and_refuses_to_load(exp, tmp_path, capsys):
    """Retiring a ladder's rung drops its weights (out of the artifacts' cap) and keeps what it measured: the ladder
    still reads its curve point without training it again, and asking for the run itself says what happened."""
    import json

    from reskd import report
    from reskd.runstore import RETIRED, RetiredRunError, is_finished, is_retired, main as runstore_main, retire, run_status
    from reskd.train import TrainConfig

    wsd = TrainConfig(epochs=4, batch_size=16, lr=0.05, schedule="wsd", decay_fraction=0.5)
    ladder = exp().profile.replace(teacher_train=wsd, teacher_lengths=(2, 4))
    make = lambda **kw: E.Experiment(ladder, data_root=exp().data_root, artifacts=tmp_path / "ladder", device="cpu",  # noqa: E731
                                     progress=False, **kw)
    before = report.length_curve(make().length_ladder("teacher"))
    short = next(p for p in (tmp_path / "ladder").rglob("spec.json") if json.loads(p.read_text())["train"]["epochs"] == 2).parent
    with pytest.raises(ValueError, match="no finished run"):
        retire(tmp_path, "not a run")
    with pytest.raises(SystemExit):  # argparse's usage error: --retire needs --reason
        runstore_main(["--retire", str(short)])
    assert "--retire needs --reason" in capsys.readouterr().err
    runstore_main(["--retire", str(short), "--reason", "a shorter rung than the one chosen", "--root",
                   str(tmp_path / "ladder")])
    assert is_retired(short) and not is_finished(short) and not (short / "model.pt").exists()
    assert json.loads((short / RETIRED).read_text())["reason"] == "a shorter rung than the one chosen"
    assert run_status(short, json.loads((short / "spec.json").read_text()))["state"] == "retired"
    again = make().length_ladder("teacher")  # nothing trained: the retired rung is read, the longer one loaded
    assert again[2].model is None and again[4].model is not None
    pd.testing.assert_frame_equal(report.length_curve(again), before)
    two = E.Experiment(ladder.replace(teacher_train=dataclasses.replace(wsd, epochs=2)), data_root=exp().data_root,
                       artifacts=tmp_path / "ladder", device="cpu", progress=False)
    with pytest.raises(RetiredRunError, match="was retired: its weights were dropped"):
        two.teacher()  # the 2-epoch run itself, asked for directly
    plan = make(plan=True)
    plan.length_ladder("teacher")
    assert [row["state"] for row in plan.planned] == ["retired", "finished"]
    from reskd.cli import ladder_reading

    reading = ladder_reading(again, "teacher", gain=100.0)  # any gain qualifies: the shorter length is picked
    assert "the profile trains 2 epochs (doubling it gains under 100.0" in reading and "--retire" in reading
    assert "add a 8-epoch rung" in ladder_reading(again, "teacher", gain=-100.0)  # no gain is small enough
    capped = ladder_reading(again, "teacher", gain=-100.0, cap=4)  # the budget stops the ladder at 4 epochs
    assert "the profile trains 4 epochs (no length up to the profile's cap qualifies" in capped
