"""Open the built book in headless Chromium and check what a reader would see.

    python tools/check_book.py _build/html [--toc _toc.yml] [--screenshot outputs/book.png]
                               [--screenshots outputs/pages/]

Every page that the table of contents lists (``book_pages``: the chapters, the prose pages, the
Teaching part) must be there, render (Chromium returns its DOM) and link only to files that exist.
The formulas rendered where a page has them (MathJax output elements in the DOM after scripts ran).
A page made from a notebook (a chapter, or a Teaching notebook such as the troubleshooting page) has
a Colab launch link to its own .ipynb, ``notebooks/<name>.ipynb`` or
``notebooks/teaching/<name>.ipynb``; a chapter also shows images. Chapter 6 shows the archived
benchmark tables (rendered as HTML tables), which it reads from the package. And what a reader
should never meet (``text_problems``, on the page's HTML): a Markdown table printed raw in an
output, terminal escape codes, a progress bar stored as many lines, code or output lines wider than
the page (they are clipped).
"""

import argparse
import html
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--virtual-time-budget=15000"]
MATH_PAGES = {"intro", "02_latent_diffusion", "03_conditioning"}
# Text that only the archived tables put on a page: the peer table's column header.
ARCHIVE_PAGES = {"06_putting_it_together": "vs best peer"}
SCREENSHOT_PAGE = "notebooks/01_quickstart"
BOOK_WIDTH, SCREENSHOT_HEIGHT = 1280, 16000  # the book theme's desktop width; long pages, whole


CODE_WIDTH = 88  # ruff's line length for notebooks: what fits the page's code boxes
OUTPUT_WIDTH = 88
BLOCKS = re.compile(r'<div class="(cell_input|output [^"]*)[^>]*>\s*<div class="highlight">'
                    r"<pre>(.*?)</pre>", re.S)
TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)+\|?\s*$")
ESCAPES = ("\x1b", "\x08", "\r", "[2K", "[1A", "[A\n")
PROGRESS_LINE = re.compile(r"^\s*\d+/\d+ .*(━|\[=|ETA|\d+ms/step|s/step)")


def text_problems(name, page_html):
    """What the page's code and output boxes show that they should not (a list of problems)."""
    problems = []
    for kind, inner in BLOCKS.findall(page_html):
        text = html.unescape(re.sub(r"<[^>]+>", "", inner))
        lines = text.splitlines()
        where = "code" if kind == "cell_input" else "output"
        width = CODE_WIDTH if where == "code" else OUTPUT_WIDTH
        wide = [line for line in lines if len(line) > width]
        if wide:
            problems.append(f"{name}: {len(wide)} {where} line(s) wider than {width} columns, "
                            f"e.g. {wide[0][:60]!r}...")
        if where == "code":
            continue
        if any(TABLE_RULE.match(line) for line in lines):
            problems.append(f"{name}: a Markdown table printed raw in an output (show it with "
                            "sdlib.book.show_table)")
        if any(code in text for code in ESCAPES):
            problems.append(f"{name}: terminal escape codes in an output")
        bars = [line for line in lines if PROGRESS_LINE.match(line)]
        if len(bars) > 1:
            problems.append(f"{name}: a progress bar stored as {len(bars)} lines")
    return problems


def book_pages(toc):
    """The source files (without suffix) that a Jupyter Book 1 ``_toc.yml`` lists, in reading order:
    the root, then every part's chapters and their sections."""
    pages = [toc["root"]]

    def add(entries):
        for entry in entries:
            if "file" in entry:
                pages.append(entry["file"])
            add(entry.get("sections", []))

    for part in toc.get("parts", []):
        add(part.get("chapters", []))
    add(toc.get("chapters", []))
    return pages


def is_notebook_page(html_dir, source):
    """Whether the page was made from a notebook: its source copy in _sources/ is an .ipynb (by the
    layout, notebooks/ holds the notebooks, where no copy of the sources was kept)."""
    copies = html_dir / "_sources"
    if copies.is_dir():
        return (copies / f"{source}.ipynb").exists()
    return source.startswith("notebooks/")


def colab_link_problem(source, dom):
    """None, or what is wrong with the page's Colab launch link, which must open the page's own
    notebook: .../github/<owner>/<repo>/blob/<branch>/<source>.ipynb."""
    colab = re.findall(r"href=\"(https://colab\.research\.google\.com/[^\"]+)\"", dom)
    wanted = re.compile(r"https://colab\.research\.google\.com/github/[\w.-]+/[\w.-]+/blob/"
                        rf"[\w.-]+/{re.escape(source)}\.ipynb")
    if any(wanted.fullmatch(link) for link in colab):
        return None
    return (f"{Path(source).name}: no Colab link of the form .../blob/<branch>/{source}.ipynb "
            f"(found {colab[:2]})")


def broken_links(page, page_html):
    """The page's links and images (href, src) to files of the book that do not exist."""
    broken = []
    for link in re.findall(r"(?:href|src)=\"([^\"]+)\"", page_html):
        target = link.split("#")[0].split("?")[0]
        if not target or re.match(r"^[a-z][a-z0-9+.-]*:", link):  # a fragment, or http:, data:
            continue
        if not (page.parent / html.unescape(target)).resolve().exists():
            broken.append(link)
    return broken


def find_chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    sys.exit("check_book: no Chromium found; install Debian's `chromium` "
             "(apt-get install chromium).")


def render(chromium, page, extra=()):
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, page.as_uri()],
            capture_output=True, text=True, timeout=120)
    return result.stdout


def check_page(chromium, html_dir, source):
    """The problems of one page, the one made from ``source`` (a _toc.yml file entry)."""
    page = html_dir / f"{source}.html"
    dom = render(chromium, page, ["--dump-dom"])
    problems = []
    name = page.stem
    if not dom:
        return [f"{name}: Chromium returned no DOM"]
    page_html = page.read_text(encoding="utf-8")
    if name in MATH_PAGES and "<mjx-container" not in dom:
        problems.append(f"{name}: no MathJax output (formulas did not render)")
    header = ARCHIVE_PAGES.get(name)
    if header and not re.search(rf"<th[^>]*>(\s|<[^>]+>)*{header}", dom):
        problems.append(f"{name}: no archived benchmark table (a <th>{header}</th>)")
    problems += text_problems(name, page_html)
    broken = broken_links(page, page_html)
    if broken:
        problems.append(f"{name}: broken links {broken[:3]}")
    if page.parent.name == "notebooks":  # a chapter
        images = re.findall(r"<img[^>]+src=\"([^\"]+)\"", dom)
        local = [src for src in images if not src.startswith("http") and "logo" not in src]
        missing = [src for src in local if not (page.parent / src).resolve().exists()]
        if not local:
            problems.append(f"{name}: shows no images")
        if missing:
            problems.append(f"{name}: broken image links {missing[:3]}")
    if is_notebook_page(html_dir, source):
        colab = colab_link_problem(source, dom)
        if colab:
            problems.append(colab)
    print(f"  {source}: {dom.count('<mjx-container')} formulas, "
          f"{len(re.findall(r'<img', dom))} images" + ("" if problems else ", ok"))
    return problems


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("html_dir")
    parser.add_argument("--toc", default=str(ROOT / "_toc.yml"),
                        help="the table of contents whose pages are checked (default: the "
                        "repository's)")
    parser.add_argument("--screenshot", default=None)
    parser.add_argument("--screenshots", default=None,
                        help="a folder: a screenshot of every page at the book's width, to "
                        "look at")
    args = parser.parse_args()
    html_dir = Path(args.html_dir).resolve()
    chromium = find_chromium()
    sources = book_pages(yaml.safe_load(Path(args.toc).read_text(encoding="utf-8")))
    problems = []
    for source in sources:
        if not (html_dir / f"{source}.html").exists():
            problems.append(f"missing page {source}.html")
            continue
        problems += check_page(chromium, html_dir, source)
    if args.screenshot:
        target = Path(args.screenshot).resolve()
        target.parent.mkdir(parents=True, exist_ok=True)
        render(chromium, html_dir / f"{SCREENSHOT_PAGE}.html",
               [f"--screenshot={target}", "--window-size=1280,2000"])
        print(f"screenshot: {target}")
    if args.screenshots:
        folder = Path(args.screenshots).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        for source in sources:
            render(chromium, html_dir / f"{source}.html",
                   [f"--screenshot={folder / Path(source).name}.png",
                    f"--window-size={BOOK_WIDTH},{SCREENSHOT_HEIGHT}"])
        print(f"screenshots of {len(sources)} pages: {folder}")
    if problems:
        print("book check FAILED:\n  " + "\n  ".join(problems))
        sys.exit(1)
    print(f"book check passed: {len(sources)} pages")


if __name__ == "__main__":
    main()
