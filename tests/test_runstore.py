"""reskd.runstore: run keys, run folders, their files and locks."""
import json
import re
import shutil
import subprocess

import pytest

from reskd.runstore import (CHECKPOINT, FINAL_MODEL, SNAPSHOT, SPEC_FILE, SUMMARY, RunLockedError, artifacts_root,
                            folder_lock, is_finished, run_dir, run_key, run_path)


def test_committed_runs_keep_their_keys():
    """Every committed run folder is named by the key of its spec, so a chapter still finds it."""
    folders = sorted(p.parent for p in artifacts_root().glob(f"*/*/{SPEC_FILE}"))
    assert folders, "no committed run folders found under artifacts/"
    for folder in folders:
        spec = json.loads((folder / SPEC_FILE).read_text())
        assert folder.name.endswith(f"-{run_key(spec)}"), folder.name
        assert run_path(spec, folder.name.rsplit("-", 1)[0], root=folder.parent.parent) == folder


ARTIFACTS_CAP_BYTES = 60 * 2**20  # the committed runs of every data set together stay under 60 MiB
# Training in flight (a run's checkpoint.pt, a wsd run's stable.pt that the next rung of a length ladder forks from) is
# committed between sessions so that long runs resume; it is replaced as the runs advance and removed when the ladder
# no longer needs it, so it has its own, smaller cap beside the runs' (two resnet56 states are 14 MiB).
TRAINING_STATE_CAP_BYTES = 16 * 2**20
TRAINING_STATE = (CHECKPOINT, SNAPSHOT)


def test_committed_artifacts_stay_under_the_cap():
    """The run folders git tracks fit the repository's cap; a new run that breaks it must replace an old one. The
    training state in flight fits its own cap."""
    root = artifacts_root()
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    listed = subprocess.run(["git", "ls-files", "-z", "--", str(root)], cwd=root.parent, capture_output=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    files = [root.parent / name for name in listed.stdout.decode().split("\0") if name]
    assert files, "git tracks no files under artifacts/"
    sizes = {f: f.stat().st_size for f in files if f.exists()}
    state = sum(size for f, size in sizes.items() if f.name in TRAINING_STATE)
    total = sum(sizes.values()) - state
    assert total < ARTIFACTS_CAP_BYTES, (
        f"tracked artifacts take {total / 2**20:.1f} MiB, over the {ARTIFACTS_CAP_BYTES / 2**20:.0f} MiB cap: "
        "drop a superseded run folder (git rm -r) before committing a new one")
    assert state < TRAINING_STATE_CAP_BYTES, (
        f"tracked checkpoints and stable.pt snapshots take {state / 2**20:.1f} MiB, over their "
        f"{TRAINING_STATE_CAP_BYTES / 2**20:.0f} MiB cap: commit the state of fewer runs in flight")


def test_run_dir_writes_the_spec_and_a_run_is_finished_by_its_model(tmp_path):
    spec = {"dataset": "cifar10", "seed": 0}
    folder = run_dir(spec, "kd", root=tmp_path)
    assert folder == tmp_path / "cifar10" / f"kd-{run_key(spec)}"
    assert json.loads((folder / SPEC_FILE).read_text()) == spec
    (folder / CHECKPOINT).write_bytes(b"")
    (folder / SUMMARY).write_text("{}")
    assert not is_finished(folder)
    (folder / FINAL_MODEL).write_bytes(b"")
    assert is_finished(folder)
    with pytest.raises(ValueError, match="dataset"):
        run_path({"seed": 0}, "kd")


def _hold_lock(folder, ready, release):
    with folder_lock(folder):
        ready.set()
        release.wait(30)


def test_folder_lock_excludes_a_second_process(tmp_path):
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(tmp_path / "run", ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        with pytest.raises(RunLockedError, match="another process"):
            with folder_lock(tmp_path / "run", wait=False):
                pass
    finally:
        release.set()
        holder.join(30)
    with folder_lock(tmp_path / "run", wait=False):  # released when its holder ends
        assert (tmp_path / "run" / ".lock").exists()


def test_cost_table_reads_each_finished_run_and_its_machine(tmp_path):
    import pandas as pd
    from helpers import TinyNet, tiny_images, tiny_spec
    from reskd.data import Loader
    from reskd.distill import CE
    from reskd.runstore import cost_table, run_dir
    from reskd.train import TrainConfig, fit

    config = TrainConfig(epochs=2, batch_size=16, lr=0.05)
    folder = run_dir({"dataset": "toy", "train": config.to_dict(), "role": "scratch"}, "run", root=tmp_path)
    fit(CE(TinyNet()), Loader(tiny_images(64), tiny_spec(), 16, train=True), config, run_dir=folder, device="cpu",
        progress=False)
    (tmp_path / "toy" / "unfinished").mkdir()
    (tmp_path / "toy" / "unfinished" / "spec.json").write_text("{}")
    table = cost_table("toy", root=tmp_path)
    assert list(table["run"]) == [folder.name]  # the unfinished folder is left out
    row = table.iloc[0]
    assert row["epochs"] == 2 and row["precision"] == "fp32" and row["threads"] >= 1 and row["hours"] > 0
    assert row["images_per_s"] > 0  # 64 images x 2 epochs over the summed epoch times
    history = pd.read_csv(folder / "history.csv")  # the time an epoch waited for another worker is not its cost
    history["epoch_s"], history["view_wait_s"] = [30.0, 50.0], [20.0, 0.0]
    history.to_csv(folder / "history.csv", index=False)
    row = cost_table("toy", root=tmp_path).iloc[0]
    assert row["hours"] == pytest.approx(60.0 / 3600) and row["images_per_s"] == pytest.approx(64 * 2 / 60.0)
    history.drop(columns="view_wait_s").to_csv(folder / "history.csv", index=False)  # a run from before the column
    assert cost_table("toy", root=tmp_path).iloc[0]["hours"] == pytest.approx(80.0 / 3600)


def test_the_listing_names_an_empty_or_missing_root(tmp_path, capsys):
    from reskd.runstore import main

    with pytest.raises(SystemExit, match=f"no artifacts root at {re.escape(str(tmp_path / 'nowhere'))}: it does not "
                                         f"exist.*RESKD_ARTIFACTS"):
        main(["--root", str(tmp_path / "nowhere")])
    main(["cifar10", "--root", str(tmp_path)])
    assert capsys.readouterr().out == f"no run folders of cifar10 under the artifacts root {tmp_path}.\n"


@pytest.mark.parametrize("argv", [["cifar11"], ["--help"]])
def test_the_listing_parses_its_arguments(argv, capsys, monkeypatch):
    """An unknown data set is refused with the known ones, and --help is help, not a data set named --help."""
    from reskd.runstore import main

    monkeypatch.setenv("COLUMNS", "1000")
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    out = capsys.readouterr()
    if argv == ["--help"]:
        assert exit_.value.code == 0 and "python -m reskd.runstore" in out.out and "--root" in out.out
    else:
        assert exit_.value.code == 2 and "invalid choice: 'cifar11'" in out.err and "cifar100" in out.err


def test_a_corrupt_spec_is_named_and_the_listing_goes_on(tmp_path, capsys):
    from reskd.runstore import UnreadableSpecWarning, main, runs_table

    good = run_dir({"dataset": "cifar10", "seed": 0}, "good", root=tmp_path)
    bad = run_dir({"dataset": "cifar10", "seed": 1}, "bad", root=tmp_path)
    (bad / SPEC_FILE).write_text('{"dataset": "cifar10", "se')
    with pytest.warns(UnreadableSpecWarning, match=f"skipped {re.escape(str(bad / SPEC_FILE))}: it is not a "
                                                   f"readable run spec.*Delete the folder"):
        table = runs_table("cifar10", root=tmp_path)
    assert list(table["run"]) == [good.name]
    main(["--root", str(tmp_path)])
    out = capsys.readouterr()
    assert good.name in out.out and f"warning: skipped {bad / SPEC_FILE}" in out.err


def test_the_listing_answers_as_a_module(tmp_path):
    import os
    import sys

    env = {**os.environ, "RESKD_ARTIFACTS": str(tmp_path / "empty")}
    done = subprocess.run([sys.executable, "-m", "reskd.runstore"], capture_output=True, text=True, env=env)
    assert done.returncode == 1 and f"no artifacts root at {tmp_path / 'empty'}" in done.stderr


def test_run_status_times_an_epoch_by_its_median(tmp_path):
    # an epoch slowed by other work on the cores (the third) moves the hours so far, not the typical epoch
    from reskd.runstore import run_status

    folder = tmp_path / "toy" / "kd-r8-s0-aa11"
    folder.mkdir(parents=True)
    (folder / "history.csv").write_text("epoch,val_top1,epoch_s\n1,10.0,360\n2,20.0,360\n3,30.0,1080\n")
    status = run_status(folder, {"train": {"epochs": 10}})
    assert (status["epochs_done"], status["epochs"], status["val_top1"]) == (3, 10, 30.0)
    assert status["hours"] == pytest.approx(0.5) and status["epoch_hours"] == pytest.approx(0.1)
    assert run_status(tmp_path / "toy" / "kd-r8-s1-bb22", {"train": {"epochs": 10}})["epoch_hours"] is None


def test_pack_weights_is_lossless_and_the_run_loads_bit_for_bit(tmp_path, capsys):
    import torch

    from helpers import TinyNet, tiny_images, tiny_spec
    from reskd.data import Loader
    from reskd.distill import CE
    from reskd.models import create_model
    from reskd.runstore import PACKED, main, pack_state, pack_weights, retire, unpack_state
    from reskd.train import TrainConfig, fit, load_run

    folder = tmp_path / "toy" / "run"
    torch.manual_seed(0)
    trained = fit(CE(TinyNet()), Loader(tiny_images(64), tiny_spec(), 16, train=True),
                  TrainConfig(epochs=1, batch_size=16, lr=0.05), run_dir=folder, device="cpu", progress=False).model
    before = (folder / "model.pt").read_bytes()
    main(["--pack", str(folder), "--root", str(tmp_path)])
    assert f"packed: {folder} (" in capsys.readouterr().out
    info = json.loads((folder / PACKED).read_text())
    assert info["bytes_before"] == len(before) and info["bytes_after"] == (folder / "model.pt").stat().st_size
    stored = torch.load(folder / "model.pt", weights_only=True)  # still a plain-tensor file: nothing to unpickle
    assert stored["format"] == "reskd-packed-v1" and stored["data"].dtype == torch.uint8
    loaded = load_run(folder, TinyNet()).model
    assert all(torch.equal(a, b) and a.dtype == b.dtype
               for a, b in zip(trained.state_dict().values(), loaded.state_dict().values()))
    assert pack_weights(folder) == folder / PACKED and json.loads((folder / PACKED).read_text()) == info  # no-op
    # a real network: fewer bytes, the same tensors (integer buffers included), the same order
    state = create_model("resnet8", 10).state_dict()
    packed = pack_state(state)
    assert packed["data"].numel() < 0.95 * sum(v.numel() * v.element_size() for v in state.values()
                                                if v.is_floating_point())
    again = unpack_state(packed)
    assert list(again) == list(state) and all(torch.equal(again[k], v) and again[k].dtype == v.dtype
                                              for k, v in state.items())
    assert unpack_state(state) == state  # a state that is not packed comes back as it is
    with pytest.raises(ValueError, match="no finished run"):
        pack_weights(tmp_path)
    retire(folder, "packed runs retire like any other")
    assert not (folder / "model.pt").exists()
