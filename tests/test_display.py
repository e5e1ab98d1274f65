"""The book's tables and text made to fit the page: Markdown tables become HTML tables (with their
alignment, cells escaped), text is wrapped at the page's 88 columns."""

import pytest

from sdlib.book import display
from sdlib.book.display import fit_text, table_html

TABLE = "| mode | warm s |\n|---|---:|\n| Standard | 1.25 |\n| `XLA` <b> | **0.80** |"


def test_a_markdown_table_becomes_an_html_table_with_its_alignment():
    page = table_html(TABLE)
    assert page.count("<tr>") == 3 and page.count("<th ") == 2 and page.count("<td ") == 4
    assert "text-align: right\">1.25</td>" in page and "text-align: left\">Standard</td>" in page
    assert "<code>XLA</code> &lt;b&gt;" in page and "<b>0.80</b>" in page  # inline Markdown only
    assert "overflow-x: auto" in page  # a table still too wide scrolls rather than being cut


@pytest.mark.parametrize("bad", ["| a | b |\n| 1 | 2 |", "just text"])
def test_text_that_is_not_a_table_is_refused(bad):
    with pytest.raises(ValueError, match="Not a Markdown table"):
        table_html(bad)


def test_a_row_with_the_wrong_cell_count_names_the_row():
    with pytest.raises(ValueError, match="Row 1 of the table has 3 cells, its header 2"):
        table_html("| a | b |\n|---|---|\n| 1 | 2 | 3 |")


def test_show_table_displays_tables_as_html_and_the_rest_as_markdown(monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", shown.append)
    display.show_table(f"**Heading**\n\n{TABLE}\n\nnote below")
    kinds = [type(item).__name__ for item in shown]
    assert kinds == ["Markdown", "HTML", "Markdown"]
    assert "<table" in shown[1].data and "note below" in shown[2].data


def test_long_lines_are_wrapped_at_spaces_with_an_indent():
    options = ", ".join(f"option_{i}=True" for i in range(9))
    line = f"StableDiffusion('mini-shapes', 64x64, {options}"
    fitted = fit_text(f"short\n{line}")
    lines = fitted.splitlines()
    assert lines[0] == "short" and len(lines) > 2
    assert all(len(x) <= 88 for x in lines) and all(x.startswith("    ") for x in lines[2:])
    assert " ".join(x.strip() for x in lines[1:]) == line  # nothing lost
    assert fit_text("x" * 100) == "x" * 100  # one unbreakable word stays whole


def test_an_escaped_pipe_stays_inside_its_cell():
    page = table_html("| all | unmasked \\|delta\\| |\n|---:|---:|\n| 1.0 | 3.21 |")
    assert page.count("<th ") == 2 and "unmasked |delta|</th>" in page
