"""Progress bars: on in a terminal, off when ``$TQDM_DISABLE`` is set, and never in a notebook cell's outputs, even
when a cold cache makes the data loader decode (the case that once leaked a bar into stored chapter outputs)."""
import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from reskd.utils import progress, progress_disabled

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("value, off", [("1", True), ("true", True), ("", False), ("0", False), ("false", False)])
def test_the_environment_switch(monkeypatch, value, off):
    monkeypatch.setenv("TQDM_DISABLE", value)
    assert progress_disabled() is off
    assert progress(range(3)).disable is off
    assert progress(range(3), enabled=False).disable is True
    assert list(progress(range(3))) == [0, 1, 2]


def test_no_progress_bar_reaches_a_notebook_cell_on_a_cold_cache(make_cifar_folder, tmp_path, monkeypatch):
    """A kernel (where tqdm.auto picks its notebook bar, which ignores tqdm's own TQDM_DISABLE default) reads a
    data set archive into an empty decoded-image cache: the cell must print nothing."""
    data = make_cifar_folder(tarball=True)
    cache = tmp_path / "empty-cache"
    monkeypatch.setenv("TQDM_DISABLE", "1")
    monkeypatch.setenv("RESKD_CACHE", str(cache))
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PYTHONPATH", f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    code = (f"import dataclasses\n"
            f"from reskd.data import get_spec, load_split\n"
            f"few = dataclasses.replace(get_spec('cifar10'), train_per_class=None, test_per_class=None)  # a fixture\n"
            f"split = load_split(few, 'train', {str(data.root)!r})\n"
            f"assert len(split) == {len(data.train_labels)}")
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    NotebookClient(notebook, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(tmp_path)}}
                   ).execute()
    assert any(cache.rglob("*")), "the cache was not written: the test did not exercise a cold read"
    assert notebook.cells[0].outputs == [], notebook.cells[0].outputs
