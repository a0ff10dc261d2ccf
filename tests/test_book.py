"""The book's structure: chapters in order, paired sources, the Colab and parameters cells, clean stored outputs."""
import ast
import importlib.util
from pathlib import Path

import jupytext
import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("run_book", ROOT / "tools" / "run_book.py")
run_book = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_book)
PARAMETERS = {"profile", "data_root", "seeds", "retrain", "device"}


def test_toc_lists_the_chapters_in_order():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [entry["file"] for entry in toc["chapters"]]
    assert files[:len(run_book.CHAPTERS)] == [f"book/{c}" for c in run_book.CHAPTERS]


@pytest.mark.parametrize("chapter", run_book.CHAPTERS)
def test_chapter_cells(chapter):
    source = jupytext.read(ROOT / "book" / f"{chapter}.py")
    assert source.metadata["jupytext"]["formats"] == "ipynb,py:percent"
    code = [c for c in source.cells if c.cell_type == "code"]
    assert "google.colab" in code[0].source and "remove-cell" in code[0].metadata.get("tags", [])
    assert "parameters" in code[1].metadata.get("tags", [])
    assigned = {t.id for node in ast.parse(code[1].source).body for t in node.targets}
    assert PARAMETERS <= assigned


@pytest.mark.parametrize("chapter", run_book.CHAPTERS)
def test_stored_outputs_are_clean(chapter):
    notebook = nbformat.read(ROOT / "book" / f"{chapter}.ipynb", as_version=4)
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            assert output["output_type"] != "error", f"{chapter}: a cell raised"
            assert output.get("name") != "stderr", f"{chapter}: stderr output (a warning?): {output.get('text')}"


def test_select_chapters_by_prefix():
    assert run_book.select(["04", "02_cifar.ipynb"]) == ["02_cifar", "04_adaptive"]
    assert run_book.select(None) == list(run_book.CHAPTERS)
    with pytest.raises(SystemExit, match="matches"):
        run_book.select(["0"])


def _tool(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_launch_buttons_only_with_a_repository(monkeypatch):
    book_config = _tool("book_config")
    assert "launch_buttons" not in book_config.build_config(None)
    config = book_config.build_config("https://github.com/owner/reskd")
    assert config["repository"]["url"] == "https://github.com/owner/reskd"
    assert config["launch_buttons"]["colab_url"] == book_config.COLAB_URL
    monkeypatch.setattr(book_config, "_git", lambda *args: "git@github.com:owner/reskd.git")
    assert book_config.repository_url() == "https://github.com/owner/reskd"


def test_local_remotes_give_no_buttons(monkeypatch):
    """A clone of a local folder (as CI makes) has no owner/name: the buttons stay off instead of breaking the theme."""
    book_config = _tool("book_config")
    for remote in ("/srv/checkouts/reskd", "file:///srv/reskd.git", "../reskd"):
        monkeypatch.setattr(book_config, "_git", lambda *args, r=remote: r)
        assert book_config.repository_url() is None, remote
    assert book_config.normalise_url("ssh://git@gitlab.com/group/reskd.git") == "https://gitlab.com/group/reskd"
