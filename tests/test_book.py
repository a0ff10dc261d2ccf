"""The book's structure: chapters in order, paired sources, the Colab and parameters cells, clean stored outputs."""
import ast
import json
import shutil
import importlib.util
from pathlib import Path
from types import SimpleNamespace

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


HOSTED = "https://github.com/example-owner/reskd"  # a made-up hosted repository


def test_launch_buttons_only_with_a_repository():
    book_config = _tool("book_config")
    assert book_config.repository_url({"repository": {"url": ""}}) is None
    assert "launch_buttons" not in book_config.build_config(None)
    assert "repository" not in book_config.build_config(None)  # an empty url must not reach Jupyter Book
    config = book_config.build_config(HOSTED)
    assert config["repository"]["url"] == HOSTED
    assert config["launch_buttons"]["colab_url"] == book_config.COLAB_URL
    assert book_config.repository_url({"repository": {"url": "git@github.com:owner/reskd.git"}}) == \
        "https://github.com/owner/reskd"


def test_the_configuration_is_the_urls_one_home():
    """The committed _config.yml holds the (empty) URL; no git remote is consulted, so a clone of a local folder (as
    CI makes) gets no buttons, and a hosted URL that is not owner/name is an error naming the fix."""
    book_config = _tool("book_config")
    assert "repository" in book_config.read_config() and book_config.repository_url() is None
    for bad in ("/srv/checkouts/reskd", "file:///srv/reskd.git", "../reskd"):
        with pytest.raises(SystemExit, match="https://host/owner/name"):
            book_config.repository_url({"repository": {"url": bad}})
    assert book_config.normalise_url("ssh://git@gitlab.com/group/reskd.git") == "https://gitlab.com/group/reskd"


def _run_colab_cell(source: str, monkeypatch) -> list[list[str]]:
    """Execute a Colab cell as Colab would (``google.colab`` imported), recording the commands it runs."""
    import subprocess
    import sys
    import types

    commands = []
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: commands.append(cmd))
    monkeypatch.setattr("os.chdir", lambda path: commands.append(["cd", path]))
    monkeypatch.setattr("os.path.exists", lambda path: False)
    fetched = []
    monkeypatch.setattr("reskd.chapter.fetch_data", lambda chapter, root=None: fetched.append(chapter))
    monkeypatch.setattr(sys, "path", list(sys.path))
    exec(compile(source, "<colab cell>", "exec"), {})
    return commands + [["fetch_data", *fetched]]


@pytest.fixture(scope="module")
def hosted_build(tmp_path_factory) -> Path:
    """The book built with a made-up hosted URL in a temporary configuration: its HTML folder."""
    import subprocess
    import sys

    tmp_path = tmp_path_factory.mktemp("hosted")
    book_config = _tool("book_config")
    config = book_config.read_config()
    config["repository"] = {"url": HOSTED, "branch": "main"}
    (tmp_path / "_config.yml").write_text(yaml.safe_dump(config))
    build_config = tmp_path / "build" / "_config.yml"
    book_config.main(["--config", str(tmp_path / "_config.yml"), "--output", str(build_config)])
    subprocess.run([sys.executable, "-c", "from jupyter_book.cli.main import main; main()", "build", str(ROOT),
                    "--config", str(build_config), "--path-output", str(tmp_path / "out")],
                   check=True, capture_output=True)
    return tmp_path / "out" / "_build" / "html"


def test_a_hosted_book_links_every_chapter_to_a_colab_cell_that_clones_it(hosted_build, monkeypatch):
    """Every chapter's page has a Colab button opening the hosted repository's copy of the chapter, whose Colab cell
    (as run_book writes it) clones the same URL, installs the package and fetches the chapter's data."""
    book_config = _tool("book_config")
    for chapter in run_book.CHAPTERS:
        page = (hosted_build / "book" / f"{chapter}.html").read_text()
        link = f"{book_config.COLAB_URL}/github/example-owner/reskd/blob/main/book/{chapter}.ipynb"
        assert link in page, f"{chapter}: no Colab button to {link}"
        assert (ROOT / "book" / f"{chapter}.ipynb").exists()  # what the button opens, once pushed
        notebook = run_book.with_repository_url(jupytext.read(ROOT / "book" / f"{chapter}.py"), HOSTED)
        colab_cell = next(c for c in notebook.cells if c.cell_type == "code")
        commands = _run_colab_cell(colab_cell.source, monkeypatch)
        assert commands[0] == ["git", "clone", "--depth", "1", HOSTED, "reskd"], chapter
        assert commands[1] == ["cd", "reskd"] and commands[2][1:] == ["-m", "pip", "install", "--quiet", "-e", "."]
        assert commands[-1] == ["fetch_data", chapter]


def test_every_formula_of_the_built_pages_is_typeset(hosted_build):
    """No page shows $...$ as raw text outside code: the prose and the chapters' generated Markdown readings (which
    myst-nb would otherwise render as CommonMark) reach MathJax as maths."""
    import re

    typeset = 0
    for chapter in run_book.CHAPTERS:
        page = (hosted_build / "book" / f"{chapter}.html").read_text()
        typeset += page.count('class="math notranslate nohighlight"')
        text = re.sub(r"<(pre|code|script)\b.*?</\1>", "", page, flags=re.S)
        raw = re.findall(r"\$[^$<>\s][^$<>]{0,40}\$", text)
        assert not raw, f"{chapter}: raw maths in the page: {raw[:3]}"
    assert typeset > 0  # the maths the pages do have is found where MathJax looks for it


def test_without_a_url_the_colab_cell_says_what_to_do(monkeypatch):
    notebook = run_book.with_repository_url(jupytext.read(ROOT / "book" / "02_cifar.py"), None)
    with pytest.raises(RuntimeError, match="repository.url"):
        _run_colab_cell(next(c for c in notebook.cells if c.cell_type == "code").source, monkeypatch)


def test_prose_edits_reach_the_stored_page_without_executing(tmp_path):
    """run_book --sources-only copies edited markdown into a stored page and keeps its outputs; a changed code cell
    with outputs is refused."""
    for suffix in (".py", ".ipynb"):
        shutil.copy(ROOT / "book" / f"05_summary{suffix}", tmp_path / f"05_summary{suffix}")
    source = (tmp_path / "05_summary.py").read_text()
    (tmp_path / "05_summary.py").write_text(source.replace("## Accuracy against cost", "## Accuracy and cost"))
    before = json.loads((tmp_path / "05_summary.ipynb").read_text())
    assert run_book.sync_sources("05_summary", tmp_path) != []
    after = json.loads((tmp_path / "05_summary.ipynb").read_text())
    assert "## Accuracy and cost" in json.dumps(after) and "## Accuracy against cost" not in json.dumps(after)
    assert [c.get("outputs") for c in after["cells"]] == [c.get("outputs") for c in before["cells"]]
    assert run_book.sync_sources("05_summary", tmp_path) == []  # nothing left to copy
    (tmp_path / "05_summary.py").write_text(source.replace("pd.set_option(\"display.precision\", 2)",
                                                           "pd.set_option(\"display.precision\", 3)"))
    with pytest.raises(SystemExit, match="re-execute"):
        run_book.sync_sources("05_summary", tmp_path)
    changed = run_book.sync_sources("05_summary", tmp_path, keep_outputs=True)  # a refactoring: outputs are kept
    kept = json.loads((tmp_path / "05_summary.ipynb").read_text())
    assert changed and any('"display.precision", 3' in "".join(c["source"]) for c in kept["cells"])
    assert [c.get("outputs") for c in kept["cells"]] == [c.get("outputs") for c in before["cells"]]


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
    injected = [c for c in json.loads(page)["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert len(injected) == 1 and "hide-input" in injected[0]["metadata"]["tags"]  # folded as the defaults cell is


def test_a_cell_source_reads_the_same_as_a_string_or_as_lines():
    assert run_book.cell_text({"source": ["a = 1\n", "b = 2"]}) == "a = 1\nb = 2" == run_book.cell_text(
        {"source": "a = 1\nb = 2"})


def test_the_publishing_workflow_builds_as_the_readme_says_and_deploys_pages():
    """.github/workflows/book.yml runs the README's build command (make build, nothing executed) with the repository
    it runs in as the book's URL, and deploys _build/html with GitHub's official Pages actions."""
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "book.yml").read_text())
    build_steps = workflow["jobs"]["build"]["steps"]
    runs = [step["run"] for step in build_steps if "run" in step]
    assert len(runs) == 1 and runs[0].startswith("make build ")
    assert "REPOSITORY_URL=\"${{ github.server_url }}/${{ github.repository }}\"" in runs[0]
    assert "`make build`" in (ROOT / "README.md").read_text()
    uses = [step.get("uses", "") for job in workflow["jobs"].values() for step in job["steps"]]
    assert any(u.startswith("actions/upload-pages-artifact@") for u in uses)
    assert any(u.startswith("actions/deploy-pages@") for u in uses)
    upload = next(s for s in build_steps if s.get("uses", "").startswith("actions/upload-pages-artifact@"))
    assert upload["with"]["path"] == "_build/html"
    assert workflow["permissions"] == {"contents": "read", "pages": "write", "id-token": "write"}


def test_the_intro_promises_launch_buttons_only_where_the_build_has_them(tmp_path):
    """The intro's Colab paragraph is a substitution: with a URL it points at the buttons; without one it says how to
    get the code and run a chapter; --repository-url sets the URL for one build."""
    book_config = _tool("book_config")
    assert "{{ colab_howto }}" in (ROOT / "book" / "intro.md").read_text()
    without = book_config.build_config(None)["parse"]["myst_substitutions"]["colab_howto"]
    with_url = book_config.build_config(HOSTED)["parse"]["myst_substitutions"]["colab_howto"]
    assert "launch button" in with_url and "no launch buttons" in without and "git clone" in without
    out = tmp_path / "_config.yml"
    book_config.main(["--output", str(out), "--repository-url", HOSTED])
    built = yaml.safe_load(out.read_text())
    assert built["repository"]["url"] == HOSTED and built["parse"]["myst_substitutions"]["colab_howto"] == with_url
    book_config.main(["--output", str(out)])
    assert "repository" not in yaml.safe_load(out.read_text())


def test_the_intro_verdict_is_computed_from_the_committed_results(tmp_path):
    """The intro's "The verdict" is the substitution book_verdict, which the build configuration fills with
    reskd.report.book_verdict of results/*.json: what the chapters measured, never typed."""
    from reskd import report, results

    book_config = _tool("book_config")
    assert "{{ book_verdict }}" in (ROOT / "book" / "intro.md").read_text()
    out = tmp_path / "_config.yml"
    book_config.main(["--output", str(out)])
    verdict = yaml.safe_load(out.read_text())["parse"]["myst_substitutions"]["book_verdict"]
    assert verdict == report.book_verdict(results.load_results(ROOT / "results")) and "ImageNet" in verdict
    (tmp_path / "results").mkdir()  # other results, another verdict
    results.write_not_run("02_cifar", "cifar10", "no data", "cpu", root=tmp_path / "results")
    assert "CIFAR-10" in book_config.book_verdict(tmp_path / "results") != verdict


def test_the_overflow_probe_writes_nothing_into_the_repository_or_the_html_tree(tmp_path, monkeypatch):
    """screenshot_book --overflow probes a scratch copy of each page (a <base> keeps its styles resolving) and
    creates no screenshot folder; a fake browser stands in for Chromium and reports one overflowing table."""
    shot = _tool("screenshot_book")
    html = tmp_path / "html" / "book"
    html.mkdir(parents=True)
    (html / "intro.html").write_text("<html><head><title>t</title></head><body><p>x</p></body></html>")
    seen = []

    def fake_run(cmd, **kw):
        page = Path(cmd[-1].removeprefix("file://"))
        seen.append(page)
        assert f'<base href="{html.resolve().as_uri()}/">' in page.read_text()
        return SimpleNamespace(stdout='<pre id="overflow-report">table.x  900 &gt; 700 px  "wide"</pre>')

    monkeypatch.setattr(shot, "find_browser", lambda name: "chromium")
    monkeypatch.setattr(shot.subprocess, "run", fake_run)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(SystemExit) as info:
        shot.main(["--html", str(tmp_path / "html"), "--out", str(tmp_path / "shots"), "--pages", "book/intro",
                   "--overflow"])
    assert info.value.code == 1 and seen and not seen[0].is_relative_to(tmp_path)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # no probe left, no screenshot folder made


def test_references_name_each_arxiv_id_once():
    """An entry with an eprint gets its arXiv id printed from it; a note repeating the id would print it twice."""
    text = (ROOT / "references.bib").read_text()
    entries = text.split("\n@")
    assert entries and all(not ("eprint" in e and "note" in e and "arXiv:" in e.split("note", 1)[1].split("\n")[0])
                           for e in entries)


def test_the_intro_glossary_names_every_regime_as_the_package_describes_it():
    from reskd.regimes import CIFAR_REGIMES

    intro = (ROOT / "book" / "intro.md").read_text()
    for name in CIFAR_REGIMES:
        assert f"| {name} | {CIFAR_REGIMES.description(name)} |" in intro, name


def _page(opening: str, answer: str | None) -> dict:
    glued = [] if answer is None else [{
        "output_type": "display_data", "metadata": {"scrapbook": {"name": run_book.ANSWER_KEY, "mime_prefix": "x"}},
        "data": {"application/papermill.record/text/markdown": answer}}]
    return {"cells": [{"cell_type": "markdown", "metadata": {}, "source": opening},
                      {"cell_type": "code", "metadata": {}, "source": "glue(...)", "outputs": glued}]}


def test_the_glued_answer_is_written_into_the_opening():
    start, end = run_book.ANSWER_START, run_book.ANSWER_END
    page = _page(f"# Title\n\n{start}\n*placeholder*\n{end}\n\nMore prose.", "**The answer**: no.")
    assert run_book.fill_answer(page)
    assert run_book.cell_text(page["cells"][0]) == f"# Title\n\n{start}\n**The answer**: no.\n{end}\n\nMore prose."
    page["cells"][1]["outputs"][0]["data"]["application/papermill.record/text/markdown"] = "**The answer**: yes."
    run_book.fill_answer(page)  # a second run replaces the first run's answer, not the text around it
    assert run_book.cell_text(page["cells"][0]) == f"# Title\n\n{start}\n**The answer**: yes.\n{end}\n\nMore prose."
    with pytest.raises(run_book.ChapterFailed, match="glued no"):
        run_book.fill_answer(_page(f"{start}\n{end}", None))
    assert not run_book.fill_answer(_page("no markers", "an answer"))


@pytest.mark.parametrize("chapter", run_book.CHAPTERS)
def test_a_stored_page_opens_with_the_answer_it_computed(chapter):
    """The opening of a stored page holds, between the markers, exactly what its run glued: nothing typed."""
    source = (ROOT / "book" / f"{chapter}.py").read_text()
    stored = json.loads((ROOT / "book" / f"{chapter}.ipynb").read_text())
    answer = run_book.glued_answer(stored)
    assert run_book.ANSWER_START in source, f"{chapter} does not open with its answer"
    assert answer is not None, f"{chapter}'s stored page glued no {run_book.ANSWER_KEY!r}"
    opening = next(run_book.cell_text(c) for c in stored["cells"] if run_book.ANSWER_START in run_book.cell_text(c))
    assert f"{run_book.ANSWER_START}\n{answer.strip()}\n{run_book.ANSWER_END}" in opening
