"""Execute the book's chapters with papermill: ``python tools/run_book.py [--profile smoke] [--chapters 02 04]``.

Each chapter's source is its jupytext twin ``book/NN_name.py``; it is executed with the ``python3`` kernel and the
executed notebook (with its outputs) is written to ``--output-dir`` (default: ``book/``, in place, what the book
renders). Outside ``book/`` the chapters' results files go to ``<output-dir>/results`` so that a trial run never
overwrites the committed ``results/``.

Profiles: ``smoke`` (tiny models, minutes in all: CI), ``cpu`` (the real runs two CPU cores afford: it loads the
committed artifacts and evaluates them, and trains whatever is missing, which takes hours), ``paper`` (a GPU).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import jupytext
import papermill

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
CHAPTERS = ("01_residual_theory", "02_cifar", "03_imagenet", "04_adaptive", "05_summary")
PROFILES = ("smoke", "cpu", "paper")
KERNEL = "python3"
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


def kernel_environment() -> None:
    """Make the kernel run this interpreter, draw figures inline and keep progress bars out of stored outputs."""
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    os.environ["MPLBACKEND"] = INLINE_BACKEND  # CI sets Agg, which would drop the figures
    os.environ["TQDM_DISABLE"] = "1"
    os.environ.setdefault("PYTHONHASHSEED", "0")


def run_chapter(chapter: str, output_dir: Path, parameters: dict) -> float:
    """Execute one chapter into ``output_dir``; return the seconds it took."""
    source = BOOK / f"{chapter}.py"
    notebook = jupytext.read(source)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / f"{chapter}.ipynb"
        jupytext.write(notebook, staged)
        papermill.execute_notebook(staged, output_dir / f"{chapter}.ipynb", parameters=parameters,
                                   kernel_name=KERNEL, cwd=str(BOOK), progress_bar=False, log_output=False)
    strip_machine_paths(output_dir / f"{chapter}.ipynb")
    return time.perf_counter() - start


def strip_machine_paths(path: Path) -> None:
    """Replace papermill's absolute input/output paths in the notebook's metadata with the chapter's file name, so a
    committed notebook names no machine's folders."""
    notebook = json.loads(path.read_text())
    meta = notebook.get("metadata", {}).get("papermill", {})
    for key in ("input_path", "output_path"):
        if meta.get(key):
            meta[key] = Path(meta[key]).name
    path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=PROFILES, default="cpu",
                        help="smoke (CI), cpu (load the committed artifacts; trains what is missing), paper (GPU)")
    parser.add_argument("--chapters", nargs="*", help="a subset, e.g. 02 04 (default: all, in order)")
    parser.add_argument("--output-dir", type=Path, default=BOOK, help="where executed notebooks go (default: book/)")
    parser.add_argument("--data-root", default=None, help="the data sets' folder (default: $RESKD_DATA, else data/)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="student seeds, e.g. 0 (default: the profile's; fewer is an interim run, and says so)")
    args = parser.parse_args(argv)

    chapters = select(args.chapters)
    output_dir = args.output_dir.resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    parameters = {"profile": args.profile}
    if args.data_root is not None:
        parameters["data_root"] = str(Path(args.data_root).resolve())
    if args.seeds is not None:
        parameters["seeds"] = args.seeds
    if output_dir != BOOK.resolve():
        parameters["results_dir"] = str(output_dir / "results")
    if args.profile != "smoke":
        print(f"warning: profile {args.profile!r} loads finished runs from artifacts/ and TRAINS any that are missing; "
              f"on a CPU that takes hours (use --profile smoke for a quick check).", file=sys.stderr)
    kernel_environment()
    total = 0.0
    for chapter in chapters:
        print(f"{chapter}: running (profile {args.profile}) ...", flush=True)
        seconds = run_chapter(chapter, output_dir, parameters)
        total += seconds
        print(f"{chapter}: done in {seconds:.0f} s -> {output_dir / (chapter + '.ipynb')}", flush=True)
    print(f"{len(chapters)} chapter(s) in {total:.0f} s")


if __name__ == "__main__":
    main()
