import json
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from reskd import train as train_module
from reskd import utils
from reskd.runstore import run_dir, runs_table
from reskd.data import Loader
from reskd.distill import CE, KD
from reskd.train import (TIMING_COLUMNS, CheckpointError, TrainConfig, evaluate, fit, load_run, make_optimizer,
                         make_scheduler, predict)
from reskd.utils import model_memory_format

from helpers import TinyNet, tiny_images, tiny_spec

FAST = dict(batch_size=16, lr=0.05, weight_decay=5e-4)


def loaders(n=96, batch_size=16, seed=0):
    spec = tiny_spec()
    data = tiny_images(n)
    test = tiny_images(32, seed=1)
    return (Loader(data, spec, batch_size, train=True, seed=seed),
            Loader(test, spec, 32, train=False))


def test_fit_learns_and_records_history(tmp_path):
    torch.manual_seed(0)
    train, test = loaders()
    model = TinyNet()
    before = evaluate(model, test, device="cpu")["top1"]
    result = fit(CE(model), train, TrainConfig(epochs=4, **FAST), eval_loaders={"test": test},
                 run_dir=tmp_path, device="cpu", progress=False)
    assert list(result.history["epoch"]) == [1, 2, 3, 4]
    assert result.history["test_top1"].iloc[-1] > max(before, 60.0)
    assert result.history["train_loss"].iloc[-1] < result.history["train_loss"].iloc[0]
    assert (tmp_path / "model.pt").exists() and (tmp_path / "history.csv").exists()
    assert not (tmp_path / "checkpoint.pt").exists()
    assert result.summary["best"]["test"]["top1"] == result.history["test_top1"].max()


def test_fit_refuses_a_model_of_another_class_count(tmp_path):
    """A 100-class model on 4-class data would train without a word (its extra logits never the label)."""
    train, test = loaders()
    with pytest.raises(ValueError, match="the student predicts 100 classes but tiny test has 4: build it with "
                                         "num_classes=4"):
        fit(CE(TinyNet(num_classes=100)), train, TrainConfig(epochs=1, **FAST), run_dir=tmp_path / "run",
            device="cpu", progress=False)
    assert not (tmp_path / "run").exists()


def test_finished_run_is_loaded_not_retrained(tmp_path):
    train, test = loaders()
    torch.manual_seed(0)
    first = fit(CE(TinyNet()), train, TrainConfig(epochs=2, **FAST), run_dir=tmp_path, device="cpu", progress=False)

    class Exploding(CE):
        def loss(self, *args):
            raise AssertionError("a finished run must not train again")

    torch.manual_seed(1)
    again = fit(Exploding(TinyNet()), train, TrainConfig(epochs=2, **FAST), run_dir=tmp_path, device="cpu",
                progress=False)
    for a, b in zip(first.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(a, b)
    # a loaded run is laid out as it trained (channels_last here), not in the format a fresh model starts in
    assert model_memory_format(first.model) == model_memory_format(again.model) == torch.channels_last
    with pytest.raises(CheckpointError, match="different run"):
        fit(CE(TinyNet()), train, TrainConfig(epochs=3, **FAST), run_dir=tmp_path, device="cpu", progress=False)
    retrained = fit(CE(TinyNet()), train, TrainConfig(epochs=3, **FAST), run_dir=tmp_path, device="cpu",
                    progress=False, retrain=True)
    assert len(retrained.history) == 3


def test_corrupt_checkpoint_names_file_and_fix(tmp_path):
    train, _ = loaders()
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint, cut short")
    with pytest.raises(CheckpointError) as info:
        fit(CE(TinyNet()), train, TrainConfig(epochs=2, **FAST), run_dir=tmp_path, device="cpu", progress=False)
    message = str(info.value)
    assert "checkpoint.pt" in message and "corrupt" in message and "retrain=True" in message


@pytest.mark.parametrize("schedule", ["cosine", "multistep", "onecycle", "constant", "wsd"])
def test_schedules(schedule):
    config = TrainConfig(epochs=4, lr=0.1, schedule=schedule, milestones=(0.5,), gamma=0.1)
    opt = make_optimizer(torch.nn.Linear(2, 2).parameters(), config)
    sched = make_scheduler(opt, config, steps_per_epoch=10)
    lrs = []
    for _ in range(40):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    if schedule == "cosine":
        assert lrs[0] == pytest.approx(0.1) and lrs[-1] < 0.001 and lrs == sorted(lrs, reverse=True)
    elif schedule == "multistep":
        assert lrs[19] == pytest.approx(0.1) and lrs[20] == pytest.approx(0.01)
    elif schedule == "onecycle":
        assert max(lrs) == pytest.approx(0.1, rel=0.02) and lrs[0] < 0.01 and lrs[-1] < 0.001
    elif schedule == "wsd":  # 4 epochs: decay over round(0.2 * 4) = 1 epoch, so the stable phase ends at step 30
        assert lrs[:30] == [0.1] * 30 and lrs[30] == pytest.approx(0.1) and lrs[39] == pytest.approx(0.01)
        assert lrs[30:] == sorted(lrs[30:], reverse=True)
    else:
        assert set(lrs) == {0.1}


def test_wsd_warmup_and_stable_epochs():
    config = TrainConfig(epochs=10, lr=0.1, schedule="wsd", warmup_epochs=2, decay_fraction=0.3)
    assert config.stable_epochs == 7
    opt = make_optimizer(torch.nn.Linear(2, 2).parameters(), config)
    sched = make_scheduler(opt, config, steps_per_epoch=5)
    lrs = []
    for _ in range(50):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.01) and lrs[9] == pytest.approx(0.1) and lrs[:10] == sorted(lrs[:10])
    assert lrs[10:35] == [pytest.approx(0.1)] * 25 and lrs[-1] == pytest.approx(0.1 / 15)
    assert TrainConfig(epochs=10, schedule="cosine").stable_epochs == 10
    with pytest.raises(ValueError, match="warm-up"):
        TrainConfig(epochs=4, schedule="wsd", warmup_epochs=4)


def test_new_options_keep_old_keys():
    """Options added after runs were trained enter a config's dict only away from their defaults."""
    d = TrainConfig().to_dict()
    assert not {"precision", "warmup_epochs", "decay_fraction"} & set(d)
    assert TrainConfig(schedule="wsd", warmup_epochs=1).to_dict()["warmup_epochs"] == 1


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="unknown schedule"):
        TrainConfig(schedule="linear")
    with pytest.raises(ValueError, match="milestones"):
        TrainConfig(milestones=(50,))
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(lr=0)


def test_predict_returns_sample_order():
    _, test = loaders()
    model = TinyNet()
    logits, labels = predict(model, test, device="cpu")
    assert logits.shape == (32, 4)
    assert torch.equal(labels, test.data.labels)
    model.eval()
    with torch.no_grad():
        direct = model(((test.data.images.float() / 255) - torch.tensor(test.spec.mean)[:, None, None])
                       / torch.tensor(test.spec.std)[:, None, None])
    torch.testing.assert_close(logits, direct, atol=1e-4, rtol=1e-4)


def test_predict_outputs_can_be_loss_targets():
    """predict runs under inference mode, but what it returns must work as the target of a trained model's loss."""
    _, test = loaders()
    targets, _ = predict(TinyNet(), test, device="cpu")
    assert not targets.is_inference()
    student = TinyNet()
    x = (test.data.images.float() / 255)
    torch.nn.functional.mse_loss(student(x), targets).backward()
    assert all(p.grad is not None for p in student.parameters())


RUN_SCRIPT = textwrap.dedent("""
    import sys, time, torch
    sys.path.insert(0, {tests!r})
    torch.set_num_threads(1)
    from helpers import TinyNet, tiny_images, tiny_spec
    from reskd.data import Loader
    from reskd.distill import CE
    from reskd.train import TrainConfig, fit

    class Slow(CE):  # long enough epochs that the kill lands mid-run
        def loss(self, *args):
            time.sleep({sleep})
            return super().loss(*args)

    torch.manual_seed(0)
    loader = Loader(tiny_images(96), tiny_spec(), 16, train=True, seed=3)
    fit(Slow(TinyNet()), loader, TrainConfig(epochs=3, batch_size=16, lr=0.05, precision={precision!r}),
        run_dir=sys.argv[1], device="cpu", progress=False)
""")


def _run(run_dir: Path, sleep: float, precision: str = "fp32") -> subprocess.Popen:
    script = RUN_SCRIPT.format(tests=str(Path(__file__).parent), sleep=sleep, precision=precision)
    return subprocess.Popen([sys.executable, "-c", script, str(run_dir)])


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_resume_after_kill_is_bit_exact(tmp_path, precision):
    """Kill a 3-epoch run after its first checkpoint, resume it, and compare with an uninterrupted run (in either
    precision, at one thread: bf16 autocast is emulated where the CPU has no bf16 units, and still deterministic)."""
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert _run(whole, 0.0, precision).wait(timeout=120) == 0

    proc = _run(resumed, 0.05, precision)
    deadline = time.time() + 120
    while not (resumed / "checkpoint.pt").exists():
        assert proc.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (resumed / "model.pt").exists(), "the run finished before it was killed"
    assert _run(resumed, 0.0, precision).wait(timeout=120) == 0

    a = torch.load(whole / "model.pt", weights_only=True)
    b = torch.load(resumed / "model.pt", weights_only=True)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    hist = (resumed / "history.csv").read_text().splitlines()
    assert len(hist) == 1 + 3


class Killed(BaseException):
    """Stands for a kill: raised at a write, it stops ``fit`` there (a BaseException: nothing catches it)."""


def _kill_at_write(monkeypatch, k: int, *, during: bool) -> list[str]:
    """Make the ``k``-th file that ``fit`` writes (0-based) its last act: ``during=True`` kills it while that file is
    written, leaving its temporary file as a real kill would; else just after the file is in place. Returns the
    names written so far."""
    original, written = utils.atomic_write, []

    def write(path, fill, mode="wb"):
        path = Path(path)
        if during and len(written) == k:
            (path.parent / f".{path.name}.killed.tmp").write_bytes(b"cut short")
            raise Killed(path.name)
        result = original(path, fill, mode)
        written.append(path.name)
        if not during and len(written) == k + 1:
            raise Killed(path.name)
        return result

    monkeypatch.setattr(utils, "atomic_write", write)  # atomic_torch_save and atomic_json_dump go through it
    monkeypatch.setattr(train_module, "atomic_write", write)
    return written


class KillPoints:
    """Two-epoch runs of one configuration, each in its own run folder under ``root``."""

    def __init__(self, root: Path):
        self.root = root
        self.train, self.test = loaders()
        self.config = TrainConfig(epochs=2, **FAST)

    def fit(self, folder: Path, model=None):
        torch.manual_seed(0)
        return fit(CE(model or TinyNet()), self.train, self.config, eval_loaders={"test": self.test},
                   run_dir=folder, device="cpu", progress=False)

    def folder(self, name: str) -> Path:
        return run_dir({"dataset": "toy", "kill": name}, "run", root=self.root)

    def state(self, folder: Path) -> str:
        return runs_table("toy", root=self.root).set_index("run").loc[folder.name, "state"]


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_a_kill_at_any_write_leaves_a_run_that_loads_or_resumes(tmp_path, monkeypatch):
    """Kill a run while it writes each of its files (and after the last one, before the checkpoint is removed; a kill
    just after any other write is a kill at the start of the next, less its temporary file): a run that runs_table
    calls finished loads, any other resumes to the weights and history of an uninterrupted run, and the kill's
    temporary files are gone after the restart."""
    runs = KillPoints(tmp_path / "artifacts")
    folder = runs.folder("none")
    with monkeypatch.context() as m:
        written = _kill_at_write(m, -1, during=False)  # counts the writes only
        whole = runs.fit(folder)
    assert written == ["checkpoint.pt", "history.csv"] * 2 + ["history.csv", "summary.json", "model.pt"]
    for k, during in [(k, True) for k in range(len(written))] + [(len(written) - 1, False)]:
        where = f"killed {'while writing' if during else 'after'} {written[k]} (write {k})"
        folder = runs.folder(f"{k}-{during}")
        with monkeypatch.context() as m:
            _kill_at_write(m, k, during=during)
            with pytest.raises(Killed):
                runs.fit(folder)
        state = runs.state(folder)
        assert state in ("finished", "interrupted", "not started"), where
        if state == "finished":
            assert _same_weights(load_run(folder, TinyNet()).model, whole.model), where
        resumed = runs.fit(folder)
        loaded = load_run(folder, TinyNet())
        assert list(loaded.history["epoch"]) == list(resumed.history["epoch"]) == [1, 2], where
        assert _same_weights(loaded.model, whole.model) and _same_weights(resumed.model, whole.model), where
        assert loaded.summary["final"]["test_top1"] == whole.summary["final"]["test_top1"], where
        assert not list(folder.glob(".*.tmp")) and not (folder / "checkpoint.pt").exists(), where
        assert runs.state(folder) == "finished", where


def test_a_full_disk_at_a_checkpoint_says_so_and_the_run_resumes(tmp_path, monkeypatch):
    """torch's zip writer reports a full disk as ``inline_container.cc ... unexpected pos``: fit says "disk full",
    names the file, and the previous checkpoint is intact, so the run resumes to an uninterrupted run's weights."""
    runs = KillPoints(tmp_path / "artifacts")
    whole = runs.fit(runs.folder("whole"))
    folder = runs.folder("full")
    original, saves = torch.save, []

    def save(obj, f, *args, **kwargs):
        saves.append(1)
        if len(saves) == 2:  # the second epoch's checkpoint
            original(obj, f, *args, **kwargs)
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 7616 vs 7504")
        return original(obj, f, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(torch, "save", save)
        with pytest.raises(OSError, match=f"disk full: cannot write {re.escape(str(folder / 'checkpoint.pt'))} .*"
                                          f"unexpected pos.*is unchanged"):
            runs.fit(folder)
    assert runs.state(folder) == "interrupted" and not list(folder.glob(".*.tmp"))
    resumed = runs.fit(folder)
    assert list(resumed.history["epoch"]) == [1, 2] and _same_weights(resumed.model, whole.model)


def test_a_model_without_its_summary_resumes_from_the_checkpoint(tmp_path, monkeypatch):
    """The state an earlier version left when killed between model.pt and summary.json: not finished (it would not
    load), so the run is finished again from its checkpoint instead of failing to load."""
    runs = KillPoints(tmp_path / "artifacts")
    whole = runs.fit(tmp_path / "whole")
    folder = runs.folder("old-order")
    with monkeypatch.context() as m:
        _kill_at_write(m, 4, during=False)  # after the last epoch's checkpoint and history
        with pytest.raises(Killed):
            runs.fit(folder)
    shutil.copy(tmp_path / "whole" / "model.pt", folder / "model.pt")
    assert runs.state(folder) == "interrupted"
    with pytest.raises(CheckpointError, match="holds no finished run .*run fit with this run_dir to finish it from "
                                              "its checkpoint") as info:
        load_run(folder, TinyNet())
    assert "retrain" not in str(info.value)  # retrain=True would discard the last checkpoint
    assert _same_weights(runs.fit(folder).model, whole.model)
    assert runs.state(folder) == "finished" and not (folder / "checkpoint.pt").exists()


def test_weights_of_another_architecture_are_named(tmp_path, monkeypatch):
    runs = KillPoints(tmp_path / "artifacts")
    done, interrupted = runs.folder("done"), runs.folder("interrupted")
    runs.fit(done)
    with monkeypatch.context() as m:
        _kill_at_write(m, 0, during=False)  # after the first checkpoint
        with pytest.raises(Killed):
            runs.fit(interrupted)
    for folder, file in ((done, "model.pt"), (interrupted, "checkpoint.pt")):
        with pytest.raises(CheckpointError) as info:
            runs.fit(folder, TinyNet(width=4))
        message = str(info.value)
        assert message.startswith(f"{folder / file} holds the weights of another architecture: it was trained as "
                                  f"TinyNet with 276 parameters, the model given is TinyNet with 140 parameters;")
        assert "differ in shape (e.g. body.0.weight: (8, 3, 3, 3) in the file, (4, 3, 3, 3) in the model)" in message
        assert "Build the model this run was trained with" in message and len(message) < 1000
    # a run written before the architecture was recorded (the committed artifacts) is still checked, by its shapes
    summary = json.loads((done / "summary.json").read_text())
    del summary["architecture"]
    (done / "summary.json").write_text(json.dumps(summary))
    assert _same_weights(runs.fit(done).model, load_run(done, TinyNet()).model)
    with pytest.raises(CheckpointError, match="holds the weights of another architecture: the model given is"):
        runs.fit(done, torch.nn.Sequential(torch.nn.Linear(3, 4)))


def test_kd_trains_with_frozen_teacher(tmp_path):
    train, test = loaders()
    torch.manual_seed(0)
    teacher = fit(CE(TinyNet(width=16)), train, TrainConfig(epochs=3, **FAST), device="cpu", progress=False).model
    frozen_state = {k: v.clone() for k, v in teacher.state_dict().items()}
    distiller = KD(TinyNet(), teacher, temperature=4.0, cache_root=tmp_path / "cache")
    distiller.train()
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    result = fit(distiller, train, TrainConfig(epochs=3, **FAST), eval_loaders={"test": test}, device="cpu",
                 progress=False)
    assert result.history["test_top1"].iloc[-1] > 60.0
    for k, v in teacher.state_dict().items():  # BN running stats included: the teacher never trained
        assert torch.equal(v, frozen_state[k]), k
    assert {"train_ce", "train_kd"} <= set(result.history.columns)


def test_narrow_models_stay_contiguous_on_cpu():
    """oneDNN's channels_last convolutions crash on CPU below 8 channels; such models must stay contiguous."""
    from reskd.models import create_model
    from reskd.train import memory_format_for

    cpu = torch.device("cpu")
    assert memory_format_for(create_model("resnet8", 10, width=0.25), cpu) == torch.contiguous_format
    assert memory_format_for(create_model("resnet8", 10, width=0.5), cpu) == torch.channels_last
    assert memory_format_for(create_model("resnet8", 10, width=0.5), cpu, requested=False) == torch.contiguous_format


def test_narrow_model_trains_with_channels_last_inputs():
    """A width-0.25 resnet8 fed by a channels_last Loader trains without the memory corruption (run in a subprocess
    so a crash fails this test instead of killing the suite)."""
    script = textwrap.dedent("""
        import sys, torch
        sys.path.insert(0, {tests!r})
        from helpers import tiny_images, tiny_spec
        from reskd.data import Loader
        from reskd.distill import CE
        from reskd.models import create_model
        from reskd.train import TrainConfig, fit
        torch.manual_seed(0)
        loader = Loader(tiny_images(512, size=32), tiny_spec(32), 64, train=True)
        given = next(iter(loader))[0]
        print("loader gives channels_last:", given.is_contiguous(memory_format=torch.channels_last)
              and not given.is_contiguous())
        model = create_model("resnet8", 4, width=0.25)
        seen = set()
        for conv in (m for m in model.modules() if isinstance(m, torch.nn.Conv2d)):
            conv.register_forward_pre_hook(lambda module, args: seen.add(args[0].is_contiguous()))
        fit(CE(model), loader, TrainConfig(epochs=5, batch_size=64, lr=0.05), device="cpu", progress=False)
        print("every convolution saw contiguous inputs:", seen == {{True}})
        print("trained")
    """)
    done = subprocess.run([sys.executable, "-c", script.format(tests=str(Path(__file__).parent))],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "trained" in done.stdout, done.stderr[-2000:]
    assert "loader gives channels_last: True" in done.stdout  # the case at risk: channels_last images
    assert "every convolution saw contiguous inputs: True" in done.stdout  # the narrow model was kept contiguous


WSD = dict(FAST, schedule="wsd", decay_fraction=0.5)


def test_fork_from_a_shorter_wsd_run_equals_training_from_scratch(tmp_path):
    """A 6-epoch wsd run started from a 4-epoch run's stable.pt (taken after epoch 2, where that run's decay starts)
    ends with bit-for-bit the weights and history of the 6-epoch run trained from scratch; the summary records it."""
    train, test = loaders()
    short = TrainConfig(epochs=4, **WSD)
    long = TrainConfig(epochs=6, **WSD)

    def run(config, folder, **kw):
        torch.manual_seed(0)
        return fit(CE(TinyNet()), train, config, eval_loaders={"test": test}, run_dir=tmp_path / folder,
                   device="cpu", progress=False, run_info={"role": "teacher", "train": config.to_dict()}, **kw)

    run(short, "short")
    snapshot = tmp_path / "short" / "stable.pt"
    assert snapshot.exists() and torch.load(snapshot, weights_only=True)["epoch"] + 1 == short.stable_epochs == 2
    scratch = run(long, "scratch")
    forked = run(long, "forked", fork_from=snapshot)
    assert _same_weights(scratch.model, forked.model)
    timing = list(TIMING_COLUMNS)
    assert scratch.history.drop(columns=timing).equals(forked.history.drop(columns=timing))
    assert forked.summary["forked_from"] == {"file": "short/stable.pt", "epoch": 2}
    assert "forked_from" not in scratch.summary
    # a run the snapshot cannot start: another learning rate, or a snapshot past this run's stable phase
    with pytest.raises(CheckpointError, match="nothing but its number of epochs"):
        run(TrainConfig(epochs=6, **dict(WSD, lr=0.01)), "other", fork_from=snapshot)
    late = tmp_path / "long-stable.pt"
    shutil.copy(tmp_path / "scratch" / "stable.pt", late)  # taken after epoch 3
    with pytest.raises(CheckpointError, match="past the end"):
        run(short, "past", fork_from=late)
    # release_fork: the file forked from is kept until this run has a stable.pt of its own, then deleted
    spent = tmp_path / "spent.pt"
    shutil.copy(snapshot, spent)
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):  # killed in its first epoch, the one that ends its stable phase
        fit(_StopAfter(TinyNet(), stop_at=2), train, long, eval_loaders={"test": test}, run_dir=tmp_path / "released",
            device="cpu", progress=False, run_info={"role": "teacher", "train": long.to_dict()}, fork_from=spent,
            release_fork=True)
    assert spent.exists() and not (tmp_path / "released" / "stable.pt").exists()
    released = run(long, "released", fork_from=spent, release_fork=True)
    assert not spent.exists() and (tmp_path / "released" / "stable.pt").exists()
    assert _same_weights(scratch.model, released.model)


def test_checkpoint_is_plain_tensors_and_foreign_pickles_do_not_run(tmp_path):
    """Checkpoints load with weights_only=True; one whose pickle calls a function is refused before any code runs,
    with what to do."""
    train, _ = loaders()
    config = TrainConfig(epochs=2, **FAST)
    torch.manual_seed(0)
    fit(CE(TinyNet()), train, TrainConfig(epochs=2, **dict(FAST, schedule="multistep")), run_dir=tmp_path / "a",
        device="cpu", progress=False)
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"student": {}, "rng": Payload()}, tmp_path / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="not a plain-tensor checkpoint") as info:
        fit(CE(TinyNet()), train, config, run_dir=tmp_path, device="cpu", progress=False)
    assert not marker.exists() and "retrain=True" in str(info.value)


def test_old_checkpoint_is_refused_then_converted(tmp_path):
    """A checkpoint of the old format (NumPy RNG state pickled as an array) is refused; convert_checkpoint rewrites
    it, and the run then resumes to the weights of an uninterrupted one."""
    train, _ = loaders()
    config = TrainConfig(epochs=3, **FAST)
    torch.manual_seed(0)
    whole = fit(CE(TinyNet()), train, config, run_dir=tmp_path / "whole", device="cpu", progress=False)
    torch.manual_seed(0)  # the run killed in its third epoch, its checkpoint rewritten in the old format
    partial = tmp_path / "partial"
    with pytest.raises(KeyboardInterrupt):
        fit(_StopAfter(TinyNet(), stop_at=2 * len(train) + 1), train, config, run_dir=partial, device="cpu",
            progress=False)
    ckpt = torch.load(partial / "checkpoint.pt", weights_only=True)
    kind, keys, pos, has_gauss, cached = ckpt["rng"]["numpy"]
    ckpt["rng"]["numpy"] = (kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached)
    torch.save(ckpt, partial / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="convert_checkpoint"):
        fit(CE(TinyNet()), train, config, run_dir=partial, device="cpu", progress=False)
    train_module.convert_checkpoint(partial / "checkpoint.pt")
    resumed = fit(CE(TinyNet()), train, config, run_dir=partial, device="cpu", progress=False)
    assert _same_weights(whole.model, resumed.model)


def test_pause_at_stops_at_an_epoch_boundary_and_the_run_resumes(tmp_path):
    """With a pause time already past, fit stops after its first epoch with TrainingPaused, its checkpoint written;
    run again without one, it ends with the weights of an uninterrupted run. A pause needs a run folder."""
    train, _ = loaders()
    config = TrainConfig(epochs=3, **FAST)
    torch.manual_seed(0)
    whole = fit(CE(TinyNet()), train, config, run_dir=tmp_path / "whole", device="cpu", progress=False)
    torch.manual_seed(0)
    with pytest.raises(train_module.TrainingPaused, match="paused after epoch 1 of 3"):
        fit(CE(TinyNet()), train, config, run_dir=tmp_path / "paused", device="cpu", progress=False,
            pause_at=time.time())
    assert (tmp_path / "paused" / "checkpoint.pt").exists() and not (tmp_path / "paused" / "model.pt").exists()
    with pytest.raises(train_module.TrainingPaused, match="paused after epoch 1 of 3"):  # resumed past its time
        fit(CE(TinyNet()), train, config, run_dir=tmp_path / "paused", device="cpu", progress=False,
            pause_at=time.time())
    resumed = fit(CE(TinyNet()), train, config, run_dir=tmp_path / "paused", device="cpu", progress=False)
    assert _same_weights(whole.model, resumed.model) and len(resumed.history) == 3
    with pytest.raises(ValueError, match="pause_at needs a run_dir"):
        fit(CE(TinyNet()), train, config, device="cpu", progress=False, pause_at=time.time())


def test_a_turn_trains_that_many_epochs_and_the_run_resumes_bit_for_bit(tmp_path):
    """fit(turn=2) trains two epochs a call and stops with TurnOver (a TrainingPaused), its checkpoint written; the
    calls together end with the weights of an uninterrupted run. The last call ends the run, not a turn."""
    train, _ = loaders()
    config = TrainConfig(epochs=5, **FAST)
    torch.manual_seed(0)
    whole = fit(CE(TinyNet()), train, config, run_dir=tmp_path / "whole", device="cpu", progress=False)
    torch.manual_seed(0)
    for done in (2, 4):
        with pytest.raises(train_module.TurnOver, match=f"paused after epoch {done} of 5: this turn's 2 epochs"):
            fit(CE(TinyNet()), train, config, run_dir=tmp_path / "turns", device="cpu", progress=False, turn=2)
        assert not (tmp_path / "turns" / "model.pt").exists()
    last = fit(CE(TinyNet()), train, config, run_dir=tmp_path / "turns", device="cpu", progress=False, turn=2)
    assert _same_weights(whole.model, last.model) and len(last.history) == 5
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="turn must be a number of epochs >= 1"):
            fit(CE(TinyNet()), train, config, run_dir=tmp_path / "bad", device="cpu", progress=False, turn=bad)
    with pytest.raises(ValueError, match="turn must be a number of epochs >= 1 with a run_dir"):
        fit(CE(TinyNet()), train, config, device="cpu", progress=False, turn=1)


class _StopAfter(CE):
    """CE that raises KeyboardInterrupt at its ``stop_at``-th batch (a kill between checkpoints)."""

    def __init__(self, student, stop_at: int):
        super().__init__(student)
        self.calls, self.stop_at = 0, stop_at

    def loss(self, x, y, index, view):
        self.calls += 1
        if self.calls == self.stop_at:
            raise KeyboardInterrupt
        return super().loss(x, y, index, view)
