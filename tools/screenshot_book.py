"""Screenshot the built book's pages in headless Chromium, to check them as a reader would.

    python tools/screenshot_book.py [--html _build/html] [--out _build/screenshots] [--browser chromium]
                                    [--window 1280,16000 --tile 1800] [--skip 16000]

``--tile H`` cuts each page's screenshot into pieces H pixels tall (``name-01.png``, ...), leaving out blank ones,
so that a whole long page can be read piece by piece with a tall ``--window``. ``--skip PX`` starts the shot PX pixels
down the page (a page longer than one window is shot in several: ``--skip 0``, ``--skip 16000``, ...); its files are
named ``name@PX``.

``--overflow`` takes no screenshots: it lists, per page, what a reader at that width cannot see without scrolling
sideways (a table or output wider than its scroll box, or anything running past the text column), as
``page: tag.class  content-width > box-width px  "first words"``, and exits 1 when anything is listed; it writes
nothing into the repository or the HTML tree (its probes are scratch copies of the pages).

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


def probe_copy(page: Path, folder: Path, *, head: str = "", body: str = "") -> Path:
    """A copy of ``page`` in ``folder`` (a scratch folder, never the HTML tree) with ``head`` and ``body`` added at the
    end of its head and body, and a ``<base>`` pointing at the page's own folder, so that its styles, scripts and
    images still resolve."""
    base = f'<base href="{page.resolve().parent.as_uri()}/">'
    html = page.read_text(encoding="utf-8")
    html = html.replace("<head>", "<head>" + base, 1).replace("</head>", head + "</head>", 1)
    copy = folder / page.name
    copy.write_text(html.replace("</body>", body + "</body>", 1), encoding="utf-8")
    return copy


def screenshot(browser: str, page: Path, png: Path, window: str, skip: int = 0) -> None:
    """Shoot ``page`` into ``png``; with ``skip``, from ``skip`` pixels down (a scratch copy of the page whose body is
    shifted up)."""
    with tempfile.TemporaryDirectory() as profile, tempfile.TemporaryDirectory() as scratch:
        shot = page
        if skip:
            shot = probe_copy(page, Path(scratch), head=f"<style>body {{ margin-top: -{skip}px !important; }}</style>")
        subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", f"--window-size={window}",
                        f"--screenshot={png}", shot.resolve().as_uri()],
                       check=True, timeout=TIMEOUT_S, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# Run in the page once it has loaded: every element of the text column whose content is wider than its box (a
# scrolling table or output) or that runs past the column's right edge, one line each, into <pre id=overflow-report>.
OVERFLOW_SCRIPT = """<script>
window.addEventListener("load", () => {
  const column = document.querySelector("article.bd-article") || document.body;
  const right = column.getBoundingClientRect().right;
  const lines = [], reported = [];
  for (const el of column.querySelectorAll("table, pre, p, img, .cell_output, .output, div.pst-scrollable-table-container")) {
    const box = el.getBoundingClientRect();
    const hidden = el.scrollWidth > el.clientWidth + 1 && getComputedStyle(el).overflowX !== "visible";
    if ((hidden || box.right > right + 1) && !el.closest(".cell_input") && !reported.some(r => r.contains(el))) {
      reported.push(el);
      const words = (el.innerText || el.alt || "").replace(/\\s+/g, " ").trim().slice(0, 60);
      lines.push(`${el.tagName.toLowerCase()}.${el.className.split(" ")[0]}  ${el.scrollWidth} > ${el.clientWidth} px  "${words}"`);
    }
  }
  const report = document.createElement("pre");
  report.id = "overflow-report";
  report.textContent = lines.join("\\n");
  document.body.appendChild(report);
});
</script>"""


def overflow(browser: str, page: Path, window: str) -> list[str]:
    """What on ``page`` overflows at ``window``'s width (see OVERFLOW_SCRIPT), from a scratch copy of the page."""
    import html as html_lib
    import re

    with tempfile.TemporaryDirectory() as profile, tempfile.TemporaryDirectory() as scratch:
        probe = probe_copy(page, Path(scratch), body=OVERFLOW_SCRIPT)
        dom = subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", f"--window-size={window}",
                              "--dump-dom", probe.resolve().as_uri()], check=True, timeout=TIMEOUT_S,
                             capture_output=True, text=True).stdout
    found = re.search(r'<pre id="overflow-report"[^>]*>(.*?)</pre>', dom, re.S)
    if found is None:
        raise SystemExit(f"{page}: the overflow probe did not run")
    return [line for line in html_lib.unescape(found.group(1)).splitlines() if line]


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
    parser.add_argument("--overflow", action="store_true", help="list what overflows the text column; no screenshots")
    args = parser.parse_args(argv)
    browser = find_browser(args.browser)
    if not args.overflow:  # --overflow only reads: it writes nowhere but a scratch folder
        args.out.mkdir(parents=True, exist_ok=True)
    found = False
    for name in args.pages:
        page = args.html / f"{name}.html"
        if not page.exists():
            sys.exit(f"{page} is missing: build the book first (make book)")
        if args.overflow:
            for line in overflow(browser, page, args.window):
                print(f"{name}: {line}")
                found = True
            continue
        png = args.out / (f"{Path(name).name}.png" if not args.skip else f"{Path(name).name}@{args.skip}.png")
        screenshot(browser, page, png, args.window, args.skip)
        for path in tiles(png, args.tile) if args.tile else [png]:
            print(path)
    if found:
        sys.exit(1)


if __name__ == "__main__":
    main()
