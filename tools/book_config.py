"""Write the book's build configuration: ``_config.yml`` plus the repository and Colab launch buttons, when known.

    python tools/book_config.py [--config _config.yml] [--output _build/_config.yml]   # prints the output's path
    python tools/book_config.py --repository-url https://github.com/owner/reskd        # the publishing workflow

The repository's hosted URL has one home: ``repository.url`` in ``_config.yml`` (``https://host/owner/name``; the
SSH forms are accepted). With it, every chapter (a notebook) gets a Colab button, and ``tools/run_book.py`` writes
the same URL into each chapter's Colab cell, which clones it. Empty, the buttons stay off: Jupyter Book would
otherwise point them at its own repository. ``--repository-url`` sets it for one build, as the publishing workflow
(``.github/workflows/book.yml``) does with the repository it runs in; no git remote is ever consulted.

The intro's "Run it yourself" paragraph is the substitution ``colab_howto``: it promises launch buttons only in a
build that has them, and otherwise says how to get the code and open a chapter in Colab. Its "The verdict" section is
the substitution ``book_verdict``: :func:`reskd.report.book_verdict` of the results files (``results/*.json``) at
build time, so the intro states what the chapters measured, never a typed number.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the package of this checkout, whichever one the environment installed
CONFIG = ROOT / "_config.yml"
COLAB_URL = "https://colab.research.google.com"
DEFAULT_BRANCH = "main"


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return out or None


HOSTED_URL = re.compile(r"^https://[^/\s]+/[^/\s]+/[^/\s]+$")  # https://host/owner/name


def normalise_url(url: str | None) -> str | None:
    """A remote URL as ``https://host/owner/name``; None when it is not a hosted repository (e.g. a local clone's
    path), since the theme's repository and launch buttons need an owner and a name."""
    if url is None:
        return None
    url = re.sub(r"^git@([^:]+):", r"https://\1/", url)  # scp-like SSH form
    url = re.sub(r"^ssh://git@", "https://", url)
    url = re.sub(r"\.git$", "", url.rstrip("/"))
    return url if HOSTED_URL.match(url) else None


def read_config(path: Path = CONFIG) -> dict:
    return yaml.safe_load(path.read_text())


def repository_url(config: dict | None = None) -> str | None:
    """The book's repository as ``https://host/owner/name``, from ``repository.url`` (None when it is empty)."""
    config = read_config() if config is None else config
    given = ((config.get("repository") or {}).get("url") or "").strip()
    if not given:
        return None
    url = normalise_url(given)
    if url is None:
        raise SystemExit(f"_config.yml: repository.url {given!r} is not a hosted repository's URL; write it as "
                         f"https://host/owner/name (e.g. https://github.com/owner/reskd), or leave it empty.")
    return url


#: The intro's Colab paragraph (substitution ``colab_howto``), with launch buttons and without.
COLAB_WITH_BUTTONS = ("open a chapter with the Colab launch button at the top of its page (the rocket), then run all "
                      "cells.")
COLAB_WITHOUT_BUTTONS = ("this copy of the book has no launch buttons (it was built without the repository's hosted "
                         "URL). Get the code (`git clone` the repository this book came from), then in Colab use "
                         "*File > Open notebook > GitHub* with that repository, or upload `book/NN_name.ipynb`, and "
                         "run all cells.")


RESULTS = ROOT / "results"


def book_verdict(results_dir: Path = RESULTS) -> str:
    """The intro's verdict (substitution ``book_verdict``): :func:`reskd.report.book_verdict` of the results files."""
    from reskd import report, results

    return report.book_verdict(results.load_results(results_dir))


def build_config(url: str | None, config: dict | None = None, results_dir: Path = RESULTS) -> dict:
    """``config`` (default: ``_config.yml``) with the repository and launch buttons for ``url``, or with none, and
    the verdict of the results files in ``results_dir``."""
    config = dict(read_config() if config is None else config)
    parse = dict(config.get("parse") or {})
    parse["myst_substitutions"] = {**(parse.get("myst_substitutions") or {}),
                                   "colab_howto": COLAB_WITH_BUTTONS if url else COLAB_WITHOUT_BUTTONS,
                                   "book_verdict": book_verdict(results_dir)}
    config["parse"] = parse
    repository = config.pop("repository", None) or {}
    sphinx = config.get("sphinx") or {}
    if sphinx.get("local_extensions"):  # Jupyter Book finds them relative to the configuration, which moves to _build/
        config["sphinx"] = {**sphinx, "local_extensions": {name: str((ROOT / path).resolve())
                                                           for name, path in sphinx["local_extensions"].items()}}
    if url is not None:
        branch = repository.get("branch") or _git("rev-parse", "--abbrev-ref", "HEAD")
        config["repository"] = {"url": url, "path_to_book": "", "branch": branch if branch not in (None, "HEAD")
                                else DEFAULT_BRANCH}
        config["launch_buttons"] = {"notebook_interface": "classic", "colab_url": COLAB_URL}
        config.setdefault("html", {}).update(use_repository_button=True, use_issues_button=True)
    return config


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=CONFIG, help="the book's configuration (default: _config.yml)")
    parser.add_argument("--output", type=Path, default=ROOT / "_build" / "_config.yml")
    parser.add_argument("--repository-url", default="",
                        help="the hosted repository for this build (https://host/owner/name), in place of "
                             "_config.yml's repository.url; empty: that one")
    args = parser.parse_args(argv)
    config = read_config(args.config)
    if args.repository_url.strip():
        config["repository"] = {**(config.get("repository") or {}), "url": args.repository_url.strip()}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(yaml.safe_dump(build_config(repository_url(config), config), sort_keys=False))
    print(args.output)


if __name__ == "__main__":
    main()
