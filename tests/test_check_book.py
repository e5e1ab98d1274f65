"""The book check's text rules (tools/check_book.py ``text_problems``) on small pages: each kind of
problem a reader met is caught, and a clean page passes."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "tools"))

from check_book import text_problems  # noqa: E402


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
