"""The book check (tools/check_book.py) on small pages: each kind of problem a reader met is caught
by its text rules (``text_problems``), and a clean page passes; the pages it checks are the ones
_toc.yml lists (``book_pages``), the Teaching part's among them, and a page made from a notebook,
in notebooks/ or notebooks/teaching/, must open its own notebook in Colab."""

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from check_book import (  # noqa: E402
    book_pages,
    broken_links,
    colab_link_problem,
    is_notebook_page,
    text_problems,
)


def page(*blocks):
    """An HTML page as myst-nb writes it: ("code" | "output", text) blocks."""
    classes = {"code": "cell_input docutils container",
               "output": "output stream highlight-myst-ansi notranslate"}
    return "".join(f'<div class="{classes[kind]}"><div class="highlight"><pre><span></span>'
                   f"{text}</pre></div></div>" for kind, text in blocks)


def test_a_clean_page_passes():
    assert text_problems("ch", page(("code", "x = 1\nprint(x)"), ("output", "1\n"),
                                    ("output", "10/10 ━━━━━━━━━━ 2s 150ms/step\n"))) == []


def test_a_raw_markdown_table_in_an_output_is_caught():
    table = "| mode | s |\n|---|---:|\n| XLA | 1.2 |\n"
    assert any("Markdown table" in problem for problem in text_problems("ch", page(("output",
                                                                                    table))))


def test_lines_wider_than_the_page_are_caught_in_code_and_output():
    long_line = "x" * 89
    problems = text_problems("ch", page(("code", long_line), ("output", long_line)))
    assert [problem.split(":")[1].split()[1] for problem in problems] == ["code", "output"]
    assert text_problems("ch", page(("code", "y" * 88))) == []
    tagged = '<span class="n">' + "z" * 50 + '</span><span class="o">' + "&amp;" * 30 + "</span>"
    assert text_problems("ch", page(("code", tagged))) == []  # 80 columns once unescaped


def test_escape_codes_and_many_line_progress_bars_are_caught():
    escapes = text_problems("ch", page(("output", "done\x1b[0m\n")))
    assert any("escape codes" in problem for problem in escapes)
    bar = "".join(f"{i}/26 ━━━━━━━━━━ 5:01 ETA\n" for i in range(1, 27))
    assert any("26 lines" in problem for problem in text_problems("ch", page(("output", bar))))


# === Which pages are checked, and what a notebook page must link to ===
def test_the_pages_are_the_toc_s_files_in_reading_order():
    toc = {"root": "book/intro", "parts": [
        {"caption": "Start", "chapters": [{"file": "notebooks/01_quickstart"}]},
        {"caption": "Teaching", "chapters": [
            {"file": "notebooks/teaching/troubleshooting",
             "sections": [{"file": "book/teaching/cheat_sheet"}]}]}]}
    assert book_pages(toc) == ["book/intro", "notebooks/01_quickstart",
                               "notebooks/teaching/troubleshooting", "book/teaching/cheat_sheet"]


def test_the_repository_toc_has_a_teaching_part_of_notebooks_and_prose_pages():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    pages = book_pages(toc)
    teaching = [page for page in pages if "/teaching/" in page]
    assert {"notebooks/teaching/troubleshooting", "notebooks/teaching/facilitator_guide",
            "book/teaching/cheat_sheet"} <= set(teaching)
    captions = [part["caption"] for part in toc["parts"]]
    assert captions.index("Teaching") == captions.index("Reference") - 1
    # every page but the ones other work adds has its source in the repository
    pending = {"notebooks/teaching/challenge", "book/teaching/offline_bundle"}
    for page in set(pages) - pending:
        assert any((ROOT / f"{page}{suffix}").exists() for suffix in (".md", ".ipynb")), page


def colab(path):
    return (f'<a href="https://colab.research.google.com/github/sdlib-book/sdlib/blob/main/{path}"'
            ' class="btn">Colab</a>')


def test_a_notebook_page_links_to_its_own_notebook_in_colab():
    assert colab_link_problem("notebooks/01_quickstart",
                              colab("notebooks/01_quickstart.ipynb")) is None
    assert colab_link_problem("notebooks/teaching/troubleshooting",
                              colab("notebooks/teaching/troubleshooting.ipynb")) is None
    # a teaching notebook's link must keep its folder, and '/./' is not what Colab opens
    assert colab_link_problem("notebooks/teaching/troubleshooting",
                              colab("notebooks/troubleshooting.ipynb"))
    assert colab_link_problem("notebooks/01_quickstart", colab("./notebooks/01_quickstart.ipynb"))
    assert "no Colab link" in colab_link_problem("notebooks/01_quickstart", "<p>no link</p>")


def test_notebook_pages_are_told_by_their_source_copy(tmp_path):
    (tmp_path / "_sources" / "book" / "teaching").mkdir(parents=True)
    (tmp_path / "_sources" / "notebooks" / "teaching").mkdir(parents=True)
    (tmp_path / "_sources" / "book" / "teaching" / "cheat_sheet.md").write_text("#")
    (tmp_path / "_sources" / "notebooks" / "teaching" / "troubleshooting.ipynb").write_text("{}")
    assert is_notebook_page(tmp_path, "notebooks/teaching/troubleshooting")
    assert not is_notebook_page(tmp_path, "book/teaching/cheat_sheet")
    bare = tmp_path / "no-sources"
    bare.mkdir()
    assert is_notebook_page(bare, "notebooks/teaching/challenge")
    assert not is_notebook_page(bare, "book/teaching/learner_setup")


def test_links_to_missing_files_are_caught_and_the_rest_pass(tmp_path):
    folder = tmp_path / "book" / "teaching"
    folder.mkdir(parents=True)
    (tmp_path / "notebooks" / "teaching").mkdir(parents=True)
    (tmp_path / "notebooks" / "teaching" / "troubleshooting.html").write_text("")
    (tmp_path / "_images").mkdir()
    (tmp_path / "_images" / "figure.png").write_bytes(b"")
    page = folder / "learner_setup.html"
    links = ('<a href="../../notebooks/teaching/troubleshooting.html#the-doctor">t</a>'
             '<img src="../../_images/figure.png"><a href="#setup">here</a>'
             '<a href="https://jupyterbook.org">jb</a><img src="data:image/png;base64,AAAA">'
             '<a href="offline_bundle.html">the bundle</a><a href="mailto:a@b.c">mail</a>')
    assert broken_links(page, links) == ["offline_bundle.html"]
