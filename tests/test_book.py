"""The book's structure: chapters in order, paired sources, the Colab and parameters cells, clean stored outputs."""
import ast
import json
import shutil
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
PARAMETERS = {"profile", "data_root", "seeds", "retrain", "device", "results_dir", "train_missing"}


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
    assert "check_parameters(" in code[2].source, "the cell after the parameters checks them"


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


def test_the_main_job_keeps_each_page_in_its_stored_profile():
    """`make book` (no --profile) re-executes every chapter in the profile of its stored page, into book/, and never
    trains outside the smoke profile; an explicit profile goes elsewhere."""
    profiles, output, results_dir = run_book.plan(list(run_book.CHAPTERS), None, None, replace_stored=False)
    assert output == run_book.BOOK.resolve() and results_dir == run_book.RESULTS
    assert profiles == {c: run_book.stored_profile(c) for c in run_book.CHAPTERS}
    assert "cpu" in profiles.values()  # the committed book has cpu pages: the case the main job must not damage
    for chapter, profile in profiles.items():
        assert run_book.chapter_parameters(profile)["train_missing"] is (profile == "smoke"), chapter
    _, output, results_dir = run_book.plan(["02"], "smoke", None, replace_stored=False)
    assert output == (run_book.TRIALS / "smoke").resolve() and results_dir == output / "results"


def test_a_lower_profile_never_silently_replaces_a_stored_page(capsys):
    cpu_pages = [c for c in run_book.CHAPTERS if run_book.stored_profile(c) == "cpu"]
    with pytest.raises(SystemExit, match="refusing to replace stored pages"):
        run_book.plan(cpu_pages, "smoke", run_book.BOOK, replace_stored=False)
    run_book.plan(cpu_pages, "smoke", run_book.BOOK, replace_stored=True)
    assert "REPLACING the stored pages" in capsys.readouterr().err


def test_missing_data_stops_before_anything_is_executed(tmp_path, monkeypatch):
    monkeypatch.delenv("RESKD_DATA", raising=False)
    before = {p: p.read_bytes() for p in run_book.BOOK.glob("*.ipynb")}
    with pytest.raises(SystemExit) as stop:
        run_book.main(["--chapters", "02", "04", "--data-root", str(tmp_path / "empty")])
    message = str(stop.value)
    assert "\n" not in message and "02_cifar needs CIFAR-10" in message and "04_adaptive" in message
    assert "RESKD_DATA" in message and "download=True" in message and "Nothing was executed" in message
    assert before == {p: p.read_bytes() for p in run_book.BOOK.glob("*.ipynb")}


def test_a_failing_chapter_leaves_every_page_and_results_file_untouched(tmp_path, monkeypatch):
    """The summary chapter, given a damaged results file, raises: nothing under the output folder changes, and the
    error is one line naming the chapter."""
    out = tmp_path / "pages"
    (out / "results").mkdir(parents=True)
    (out / "results" / "cifar10.json").write_text("{ not json")
    (out / "05_summary.ipynb").write_text("stored page")
    monkeypatch.setenv("TQDM_DISABLE", "1")
    with pytest.raises(SystemExit) as stop:
        run_book.main(["--profile", "cpu", "--chapters", "05", "--output-dir", str(out)])
    assert "05_summary (profile cpu) raised" in str(stop.value) and "\n" not in str(stop.value)
    assert (out / "05_summary.ipynb").read_text() == "stored page"
    assert sorted(p.name for p in out.rglob("*")) == ["05_summary.ipynb", "cifar10.json", "results"]


def test_an_executed_page_names_no_scratch_folder(tmp_path):
    """A chapter reads the results files of its output folder (through a staging copy given to the kernel as
    $RESKD_RESULTS); the staging folder appears nowhere in the page."""
    out = tmp_path / "pages"
    shutil.copytree(ROOT / "results", out / "results")
    run_book.main(["--profile", "cpu", "--chapters", "05", "--output-dir", str(out)])
    page = (out / "05_summary.ipynb").read_text()
    assert "run-book-" not in page and str(tmp_path) not in page
    assert json.loads(page)["metadata"]["papermill"]["parameters"] == {"profile": "cpu", "train_missing": False}
    assert "CIFAR-10 (JPEG copy" in page  # the summary read the copied cifar10.json
