"""Screenshot the built book's pages in headless Chromium, to check them as a reader would.

    python tools/screenshot_book.py [--html _build/html] [--out _build/screenshots] [--browser chromium]

Needs a Chromium binary (Debian: ``apt-get install chromium``); CI does not use this tool. MathJax is loaded from a
CDN, so without network access the formulas stay as TeX inside their math containers in the screenshots.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = ("book/intro", "book/01_residual_theory", "book/02_cifar", "book/03_imagenet", "book/04_adaptive",
         "book/05_summary", "book/references")
WINDOW = "1280,2000"
TIMEOUT_S = 120
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--virtual-time-budget=5000")


def find_browser(name: str | None) -> str:
    for candidate in ([name] if name else ["chromium", "chromium-browser", "google-chrome"]):
        path = shutil.which(candidate)
        if path:
            return path
    raise SystemExit("no Chromium found: install it (Debian: apt-get install chromium) or pass --browser PATH")


def screenshot(browser: str, page: Path, png: Path, window: str) -> None:
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", f"--window-size={window}",
                        f"--screenshot={png}", page.resolve().as_uri()],
                       check=True, timeout=TIMEOUT_S, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--html", type=Path, default=ROOT / "_build" / "html")
    parser.add_argument("--out", type=Path, default=ROOT / "_build" / "screenshots")
    parser.add_argument("--browser", default=None)
    parser.add_argument("--window", default=WINDOW, help="width,height in pixels")
    parser.add_argument("--pages", nargs="*", default=PAGES)
    args = parser.parse_args(argv)
    browser = find_browser(args.browser)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.pages:
        page = args.html / f"{name}.html"
        if not page.exists():
            sys.exit(f"{page} is missing: build the book first (make book)")
        png = args.out / f"{Path(name).name}.png"
        screenshot(browser, page, png, args.window)
        print(png)


if __name__ == "__main__":
    main()
