import pytest
import torch

from reskd.utils import atomic_write, resolve_device, stable_hash, state_dict_hash


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
