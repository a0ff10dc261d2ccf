"""reskd.runstore: run keys, run folders, their files and locks."""
import json
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
