"""Write the book's build configuration: ``_config.yml`` plus the repository and Colab launch buttons, when known.

    python tools/book_config.py [--output _build/_config.yml]   # prints the path; `make book` builds with it

The repository URL is read from ``git remote get-url origin``. Without one, the launch and repository buttons stay
off: Jupyter Book would otherwise point them at its own repository. Every chapter is a notebook, so with a URL each
gets a Colab button.
"""
from __future__ import annotations

import argparse
import re
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
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


def repository_url() -> str | None:
    """``origin``'s URL as ``https://host/owner/name`` (None without a hosted remote)."""
    return normalise_url(_git("remote", "get-url", "origin"))


def build_config(url: str | None) -> dict:
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    if url is not None:
        branch = _git("rev-parse", "--abbrev-ref", "HEAD")
        config["repository"] = {"url": url, "path_to_book": "", "branch": branch if branch not in (None, "HEAD")
                                else DEFAULT_BRANCH}
        config["launch_buttons"] = {"notebook_interface": "classic", "colab_url": COLAB_URL}
        config.setdefault("html", {}).update(use_repository_button=True, use_issues_button=True)
    return config


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ROOT / "_build" / "_config.yml")
    args = parser.parse_args(argv)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(yaml.safe_dump(build_config(repository_url()), sort_keys=False))
    print(args.output)


if __name__ == "__main__":
    main()
