"""Screenshot the built book's pages in headless Chromium, to check them as a reader would.

    python tools/screenshot_book.py [--html _build/html] [--out _build/screenshots] [--browser chromium]
                                    [--window 1280,16000 --tile 1800] [--skip 16000]

``--tile H`` cuts each page's screenshot into pieces H pixels tall (``name-01.png``, ...), leaving out blank ones,
so that a whole long page can be read piece by piece with a tall ``--window``. ``--skip PX`` starts the shot PX pixels
down the page (a page longer than one window is shot in several: ``--skip 0``, ``--skip 16000``, ...); its files are
named ``name@PX``.

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


def screenshot(browser: str, page: Path, png: Path, window: str, skip: int = 0) -> None:
    """Shoot ``page`` into ``png``; with ``skip``, from ``skip`` pixels down (a copy of the page beside it, whose body
    is shifted up, so that its styles and images still resolve; the copy is removed afterwards)."""
    shot = page
    if skip:
        shot = page.with_name(f".{page.stem}.skip{skip}.html")
        html = page.read_text(encoding="utf-8")
        shift = f"<style>body {{ margin-top: -{skip}px !important; }}</style>"
        shot.write_text(html.replace("</head>", shift + "</head>", 1), encoding="utf-8")
    try:
        with tempfile.TemporaryDirectory() as profile:
            subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", f"--window-size={window}",
                            f"--screenshot={png}", shot.resolve().as_uri()],
                           check=True, timeout=TIMEOUT_S, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finally:
        if shot != page:
            shot.unlink(missing_ok=True)


def tiles(png: Path, height: int) -> list[Path]:
    """Cut ``png`` into pieces ``height`` pixels tall, leaving out the pieces whose text column (right of the sidebar,
    whose border runs to the bottom) is blank: the window's rest below a short page; remove ``png``."""
    from PIL import Image, ImageChops

    with Image.open(png) as image:
        image = image.convert("RGB")
        pieces = []
        for top in range(0, image.height, height):
            piece = image.crop((0, top, image.width, min(top + height, image.height)))
            column = piece.crop((piece.width // 4, 0, piece.width, piece.height))
            blank = Image.new("RGB", column.size, column.getpixel((column.width - 1, column.height - 1)))
            if ImageChops.difference(column, blank).getbbox() is None:
                continue
            path = png.with_name(f"{png.stem}-{len(pieces) + 1:02d}.png")
            piece.save(path)
            pieces.append(path)
    png.unlink()
    return pieces


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--html", type=Path, default=ROOT / "_build" / "html")
    parser.add_argument("--out", type=Path, default=ROOT / "_build" / "screenshots")
    parser.add_argument("--browser", default=None)
    parser.add_argument("--window", default=WINDOW, help="width,height in pixels")
    parser.add_argument("--pages", nargs="*", default=PAGES)
    parser.add_argument("--tile", type=int, default=None, help="cut each screenshot into pieces this many pixels tall")
    parser.add_argument("--skip", type=int, default=0, help="start this many pixels down each page")
    args = parser.parse_args(argv)
    browser = find_browser(args.browser)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.pages:
        page = args.html / f"{name}.html"
        if not page.exists():
            sys.exit(f"{page} is missing: build the book first (make book)")
        png = args.out / (f"{Path(name).name}.png" if not args.skip else f"{Path(name).name}@{args.skip}.png")
        screenshot(browser, page, png, args.window, args.skip)
        for path in tiles(png, args.tile) if args.tile else [png]:
            print(path)


if __name__ == "__main__":
    main()
