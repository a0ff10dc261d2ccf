"""Execute the book's chapters with papermill: ``python tools/run_book.py [--profile smoke] [--chapters 02 04]``.

Each chapter's source is its jupytext twin ``book/NN_name.py``; it is executed with the ``python3`` kernel.

* Without ``--profile`` (what ``make book`` runs) every chapter is re-executed **in the profile that produced its
  stored page** (read from ``book/NN_name.ipynb``), into ``book/``, from the committed artifacts: a run missing from
  ``artifacts/`` is an error, never hours of training (pass ``--train`` to allow it).
* With ``--profile`` the chapters go to ``_build/chapters/<profile>/`` (or ``--output-dir``), with their results files
  in ``<output-dir>/results``, so that a trial run never touches the stored pages or ``results/``. Writing into
  ``book/`` a page of a lower profile than the stored one (smoke over cpu) needs ``--replace-stored``.

Nothing is written unless every chapter succeeds: the chapters run into a staging folder, which then replaces the
targets. Data sets are checked first; a missing one stops the run in one line that says what to fetch.
Profiles: ``smoke`` (tiny models, minutes in all: CI), ``cpu`` (the real runs two CPU cores afford), ``paper`` (GPU).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import jupytext
import papermill

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tools/: book_config, the repository URL's reader
from book_config import repository_url  # noqa: E402

from reskd.chapter import PROFILE_RANK, PROFILES, missing_data, missing_data_message
from reskd.results import RESULTS_ENV

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
RESULTS = ROOT / "results"
TRIALS = ROOT / "_build" / "chapters"  # where an explicit profile's chapters go by default
CHAPTERS = ("01_residual_theory", "02_cifar", "03_imagenet", "04_adaptive", "05_summary")
DEFAULT_PROFILE = "smoke"  # what a chapter's parameters cell says when papermill injects nothing
KERNEL = "python3"
URL_LINE = 'REPOSITORY_URL = ""'  # in each chapter's Colab cell; run_chapter writes the configured URL there
INJECTED_LABEL = "# Parameters this page was executed with (papermill): they override the defaults above"
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"


def select(names: list[str] | None) -> list[str]:
    """The chapters named by prefix (``02``, ``02_cifar`` or ``02_cifar.ipynb``), in book order."""
    if not names:
        return list(CHAPTERS)
    chosen = []
    for name in names:
        stem = Path(name).stem
        matches = [c for c in CHAPTERS if c == stem or c.startswith(stem)]
        if len(matches) != 1:
            raise SystemExit(f"--chapters: {name!r} matches {matches or 'no chapter'}; use one of {', '.join(CHAPTERS)}")
        chosen.append(matches[0])
    return [c for c in CHAPTERS if c in chosen]


def stored_profile(chapter: str, book: Path = BOOK) -> str:
    """The profile that produced the stored page ``book/<chapter>.ipynb`` (its papermill parameters)."""
    path = book / f"{chapter}.ipynb"
    if not path.exists():
        return DEFAULT_PROFILE
    meta = json.loads(path.read_text()).get("metadata", {}).get("papermill", {})
    return (meta.get("parameters") or {}).get("profile", DEFAULT_PROFILE)


def kernel_environment() -> None:
    """Make the kernel run this interpreter, draw figures inline and keep progress bars out of stored outputs."""
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    os.environ["MPLBACKEND"] = INLINE_BACKEND  # CI sets Agg, which would drop the figures
    os.environ["TQDM_DISABLE"] = "1"
    os.environ.setdefault("PYTHONHASHSEED", "0")


class ChapterFailed(RuntimeError):
    """A chapter raised while it was executed; the message is the chapter and its error, in one line."""


def with_repository_url(notebook, url: str | None):
    """``notebook`` (jupytext's) with ``url`` written into its Colab cell (the first code cell), if any."""
    if url:
        cell = next(c for c in notebook.cells if c.cell_type == "code")
        if URL_LINE not in cell.source:
            raise SystemExit(f"the Colab cell has no line starting {URL_LINE!r} to write the repository URL into.")
        cell.source = cell.source.replace(URL_LINE, f"REPOSITORY_URL = {url!r}", 1)
    return notebook


def run_chapter(chapter: str, output_dir: Path, parameters: dict) -> float:
    """Execute one chapter into ``output_dir``; return the seconds it took."""
    notebook = with_repository_url(jupytext.read(BOOK / f"{chapter}.py"), repository_url())
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / f"{chapter}.ipynb"
        jupytext.write(notebook, staged)
        try:
            papermill.execute_notebook(staged, output_dir / f"{chapter}.ipynb", parameters=parameters,
                                       kernel_name=KERNEL, cwd=str(BOOK), progress_bar=False, log_output=False)
        except papermill.PapermillExecutionError as e:
            hint = " (tools/run_book.py --train trains what is missing)" if e.ename == "MissingRunError" else ""
            raise ChapterFailed(f"{chapter} (profile {parameters['profile']}) raised {e.ename}: "
                                f"{' '.join(str(e.evalue).split())}{hint}") from None
    tidy_page(output_dir / f"{chapter}.ipynb")
    return time.perf_counter() - start


def cell_text(cell: dict) -> str:
    """A stored cell's source as one string (nbformat stores it as a string or as a list of lines)."""
    source = cell["source"]
    return "".join(source) if isinstance(source, list) else source


#: A chapter's answer: glued (myst_nb.glue) under ANSWER_KEY where the chapter computes it, and written by
#: fill_answer into its opening, between the two markers, so that the stored page opens with it in the book and in
#: plain Jupyter alike (a glue directive renders only in the book). The source keeps a placeholder there.
ANSWER_KEY = "chapter_answer"
ANSWER_START, ANSWER_END = "<!-- answer -->", "<!-- /answer -->"


def glued_answer(notebook: dict) -> str | None:
    """The markdown a chapter glued under :data:`ANSWER_KEY` (None when it glued none)."""
    for cell in notebook["cells"]:
        for output in cell.get("outputs", []):
            if (output.get("metadata", {}).get("scrapbook") or {}).get("name") == ANSWER_KEY:
                data = output.get("data", {})
                text = next((v for k, v in data.items() if k.endswith("text/markdown")), None)
                if text is not None:
                    return "".join(text) if isinstance(text, list) else text
    return None


def fill_answer(notebook: dict) -> bool:
    """Write the glued answer between the markers of the markdown cell that has them; True when the page has
    markers. A page with markers and no glued answer is an error (its chapter must glue one)."""
    answer = glued_answer(notebook)
    for cell in notebook["cells"]:
        text = cell_text(cell)
        if cell["cell_type"] != "markdown" or ANSWER_START not in text:
            continue
        if answer is None or ANSWER_END not in text:
            raise ChapterFailed(f"the page has {ANSWER_START} but " + (
                f"no {ANSWER_END} after it" if answer is not None else f"glued no {ANSWER_KEY!r}"))
        head, rest = text.split(ANSWER_START, 1)
        tail = rest.split(ANSWER_END, 1)[1]
        cell["source"] = f"{head}{ANSWER_START}\n{answer.strip()}\n{ANSWER_END}{tail}".splitlines(keepends=True)
        return True
    return False


#: Jupyter Book's cell tags that change how a cell is shown; papermill's injected cell takes those of the defaults.
DISPLAY_TAGS = ("hide-input", "hide-cell", "remove-input", "remove-cell")


def tidy_page(path: Path) -> None:
    """Replace papermill's absolute input/output paths in the notebook's metadata with the chapter's file name (a
    committed notebook names no machine's folders), and label papermill's parameters cell for the reader."""
    notebook = json.loads(path.read_text())
    meta = notebook.get("metadata", {}).get("papermill", {})
    for key in ("input_path", "output_path"):
        if meta.get(key):
            meta[key] = Path(meta[key]).name
    defaults = next((c for c in notebook["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])), None)
    shown_as = [t for t in (defaults or {}).get("metadata", {}).get("tags", []) if t in DISPLAY_TAGS]
    for cell in notebook["cells"]:
        tags = cell.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags:
            lines = cell_text(cell).splitlines(keepends=True)
            if lines and lines[0].strip() == "# Parameters":
                cell["source"] = [INJECTED_LABEL + "\n", *lines[1:]]
            tags += [t for t in shown_as if t not in tags]  # shown as the defaults cell is (e.g. folded away)
    fill_answer(notebook)
    path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")


def plan(chapters: list[str], profile: str | None, output_dir: Path | None, replace_stored: bool
         ) -> tuple[dict[str, str], Path, Path]:
    """Each chapter's profile, the folder its notebook goes to and the results folder; refuses (SystemExit) to put a
    lower profile's page over a stored one unless ``replace_stored``."""
    if output_dir is None:
        output_dir = BOOK if profile is None else TRIALS / profile
    output_dir = output_dir.resolve()
    in_book = output_dir == BOOK.resolve()
    stored = {c: stored_profile(c) for c in chapters}  # each page's notebook read once
    profiles = {c: profile or stored[c] for c in chapters}
    if in_book:
        lowered = {c: p for c, p in stored.items() if PROFILE_RANK.get(profiles[c], 0) < PROFILE_RANK.get(p, 0)}
        if lowered and not replace_stored:
            pages = ", ".join(f"{c} ({p})" for c, p in lowered.items())
            raise SystemExit(f"refusing to replace stored pages of a higher profile with {profile} ones: {pages}. "
                             f"Leave out --output-dir to write to {TRIALS.relative_to(ROOT)}/{profile}/, leave out "
                             f"--profile to re-execute each page in its own profile, or pass --replace-stored.")
        if lowered:
            print(f"WARNING: REPLACING the stored pages {', '.join(lowered)} (profiles "
                  f"{', '.join(sorted(set(lowered.values())))}) with {profile}-profile pages in book/.", file=sys.stderr)
    return profiles, output_dir, RESULTS if in_book else output_dir / "results"


def chapter_parameters(profile: str, *, train: bool = False, data_root: str | None = None,
                       seeds: list[int] | None = None) -> dict:
    """What papermill injects into a chapter: its profile, whether missing runs may be trained (always in smoke,
    where a run takes seconds; elsewhere only with ``train``), and the data root and seeds when given."""
    parameters = {"profile": profile, "train_missing": train or profile == "smoke"}
    if data_root is not None:
        parameters["data_root"] = str(Path(data_root).resolve())
    if seeds is not None:
        parameters["seeds"] = seeds
    return parameters


def publish(staging: Path, output_dir: Path, results_dir: Path, chapters: list[str]) -> None:
    """Move the executed notebooks and the results files from ``staging`` to their places, one file at a time."""
    output_dir.mkdir(parents=True, exist_ok=True)
    results_dir.mkdir(parents=True, exist_ok=True)
    for chapter in chapters:
        shutil.copy2(staging / f"{chapter}.ipynb", output_dir / f".{chapter}.ipynb.tmp")
        os.replace(output_dir / f".{chapter}.ipynb.tmp", output_dir / f"{chapter}.ipynb")
    for path in sorted((staging / "results").rglob("*.json")):  # with results/lengths/
        target = results_dir / path.relative_to(staging / "results")
        if not target.exists() or target.read_bytes() != path.read_bytes():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target.parent / f".{path.name}.tmp")
            os.replace(target.parent / f".{path.name}.tmp", target)


def _unfilled(text: str) -> str:
    """``text`` without what stands between the answer's markers (the source's placeholder, or the filled answer)."""
    if ANSWER_START not in text or ANSWER_END not in text:
        return text
    head, rest = text.split(ANSWER_START, 1)
    return head + ANSWER_START + ANSWER_END + rest.split(ANSWER_END, 1)[1]


def sync_sources(chapter: str, book: Path = BOOK, *, keep_outputs: bool = False) -> list[int]:
    """Copy the sources of ``book/<chapter>.py`` into the stored page without executing it: prose (markdown cells)
    and code cells without outputs (the Colab and parameters cells). Returns the indices of the cells changed.
    Refuses (SystemExit) when a code cell with outputs changed, or cells were added or removed: re-execute then.
    With ``keep_outputs`` a changed code cell keeps its stored outputs (for a refactoring that must not change them;
    nbval then checks that re-executing the page gives the same outputs)."""
    source = jupytext.read(book / f"{chapter}.py")
    path = book / f"{chapter}.ipynb"
    stored = json.loads(path.read_text())
    cells = [c for c in stored["cells"] if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    if [c.cell_type for c in source.cells] != [c["cell_type"] for c in cells]:
        raise SystemExit(f"{chapter}: cells were added, removed or reordered; re-execute it (tools/run_book.py).")
    changed = []
    for i, (new, old) in enumerate(zip(source.cells, cells)):
        if new.source == cell_text(old) or (ANSWER_START in new.source and _unfilled(new.source) == _unfilled(cell_text(old))):
            continue
        if new.cell_type == "code" and old.get("outputs") and not keep_outputs:
            raise SystemExit(f"{chapter}: code cell {i} has outputs and its source changed; re-execute the chapter "
                             "(or, when its outputs must stay the same, --keep-outputs, then make nbval).")
        old["source"] = new.source.splitlines(keepends=True)
        tags = new.metadata.get("tags")
        if tags:
            old.setdefault("metadata", {})["tags"] = tags
        changed.append(i)
    if changed:
        fill_answer(stored)
        path.write_text(json.dumps(stored, indent=1, ensure_ascii=False) + "\n")
    return changed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=PROFILES, default=None,
                        help="run every chapter in this profile, into _build/chapters/<profile>/ (default: each "
                             "chapter in its stored page's profile, into book/)")
    parser.add_argument("--chapters", nargs="*", help="a subset, e.g. 02 04 (default: all, in order)")
    parser.add_argument("--output-dir", type=Path, default=None, help="where executed notebooks go")
    parser.add_argument("--replace-stored", action="store_true",
                        help="allow --output-dir book to replace stored pages with pages of a lower profile")
    parser.add_argument("--train", action="store_true",
                        help="train runs missing from artifacts/ (hours in the cpu profile; the smoke profile always "
                             "may)")
    parser.add_argument("--data-root", default=None, help="the data sets' folder (default: $RESKD_DATA, else data/)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="student seeds, e.g. 0 (default: the profile's; fewer is an interim run, and says so)")
    parser.add_argument("--sources-only", action="store_true",
                        help="copy edited prose and output-less code cells from book/*.py into the stored pages, "
                             "without executing anything")
    parser.add_argument("--keep-outputs", action="store_true",
                        help="with --sources-only, also copy code cells that have outputs, keeping the stored outputs "
                             "(a refactoring that must not change them; check with make nbval)")
    args = parser.parse_args(argv)
    if args.sources_only:
        for chapter in select(args.chapters):
            print(f"{chapter}: {len(sync_sources(chapter, keep_outputs=args.keep_outputs))} cell(s) updated")
        return

    chapters = select(args.chapters)
    profiles, output_dir, results_dir = plan(chapters, args.profile, args.output_dir, args.replace_stored)
    missing = {c: names for c in chapters if (names := missing_data(c, args.data_root))}
    if missing:
        raise SystemExit(f"run_book: {missing_data_message(missing, args.data_root)} Nothing was executed.")
    if args.train and any(p != "smoke" for p in profiles.values()):
        print("warning: --train: runs missing from artifacts/ are trained; on a CPU that takes hours.", file=sys.stderr)
    kernel_environment()
    total = 0.0
    with tempfile.TemporaryDirectory(prefix="run-book-") as tmp:
        staging = Path(tmp)
        if results_dir.exists():  # the chapters (the summary above all) read the results they do not rewrite
            shutil.copytree(results_dir, staging / "results")
        os.environ[RESULTS_ENV] = str(staging / "results")  # the kernels' results_dir=None (no path in the pages)
        for chapter in chapters:
            parameters = chapter_parameters(profiles[chapter], train=args.train, data_root=args.data_root,
                                            seeds=args.seeds)
            print(f"{chapter}: running (profile {profiles[chapter]}) ...", flush=True)
            try:
                seconds = run_chapter(chapter, staging, parameters)
            except ChapterFailed as e:
                raise SystemExit(f"run_book: {e}. Nothing in {output_dir} or {results_dir} was changed.") from None
            total += seconds
            print(f"{chapter}: done in {seconds:.0f} s", flush=True)
        publish(staging, output_dir, results_dir, chapters)
    print(f"{len(chapters)} chapter(s) in {total:.0f} s -> {output_dir}")


if __name__ == "__main__":
    main()
