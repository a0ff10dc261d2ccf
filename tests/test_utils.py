import errno
import re
import pytest
import torch

from reskd.utils import DiskFullError, atomic_write, resolve_device, stable_hash, state_dict_hash


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    path = tmp_path / "f.txt"
    atomic_write(path, lambda f: f.write("old"), "w")

    def failing(f):
        f.write("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, failing, "w")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_hashes_are_stable_and_sensitive():
    assert stable_hash({"a": 1, "b": [1, 2]}) == stable_hash({"b": [1, 2], "a": 1})
    assert stable_hash({"a": 1}) != stable_hash({"a": 2})
    m = torch.nn.BatchNorm2d(3)
    h = state_dict_hash(m)
    assert h == state_dict_hash(m)
    m.num_batches_tracked += 1  # integer buffers count too
    assert state_dict_hash(m) != h


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in {"cpu", "cuda"}
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_an_atomically_written_file_is_readable_by_others(tmp_path):
    path = atomic_write(tmp_path / "results.json", lambda f: f.write("{}"), "w")
    assert path.stat().st_mode & 0o777 == 0o644  # not the 0600 of the temporary file it was written as


@pytest.mark.parametrize("failure", [
    OSError(errno.ENOSPC, "No space left on device"),
    RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 7616 vs 7504"),
    RuntimeError("[enforce fail at inline_container.cc:858] . PytorchStreamWriter failed writing file data/0: file "
                 "write failed"),
], ids=["ENOSPC", "torch-unexpected-pos", "torch-write-failed"])
def test_a_full_disk_is_named_and_loses_nothing(tmp_path, failure):
    path = tmp_path / "checkpoint.pt"
    torch.save({"epoch": 1}, path)
    before = path.read_bytes()

    def full(f):
        f.write(b"partial")
        raise failure

    with pytest.raises(DiskFullError, match=f"disk full: cannot write {re.escape(str(path))} .*is unchanged.*Free "
                                            f"space") as error:
        atomic_write(path, full)
    assert error.value.errno == errno.ENOSPC and isinstance(error.value, OSError)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_other_write_errors_pass_through(tmp_path):
    def failing(f):
        raise RuntimeError("something else")

    with pytest.raises(RuntimeError, match="something else"):
        atomic_write(tmp_path / "f.pt", failing)
    assert not list(tmp_path.iterdir())
