"""What the chapters print, made to fit the book's page: tables as HTML tables (smaller type, a
scroll bar rather than clipped columns when one is still too wide) and text wrapped at the width
the page's output boxes show (88 columns).

    show_table(bench.format_table(rows))      # a Markdown table (and any text around it)
    print_wrapped(pipe)                       # print(), long lines broken at spaces
"""

import html
import re
import textwrap

__all__ = ["PAGE_WIDTH", "fit_text", "print_wrapped", "show_table", "table_html"]

PAGE_WIDTH = 88  # characters of code or output that the book's boxes show without clipping
TABLE_STYLE = "font-size: 0.82em; border-collapse: collapse; margin: 0.5em 0"
CELL_STYLE = "padding: 0.15em 0.6em; border-bottom: 1px solid #ddd"
_ALIGN = {(True, True): "center", (False, True): "right", (True, False): "left"}
_RULE = re.compile(r"^\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?$")


def fit_text(text, width=PAGE_WIDTH, indent="    "):
    """``text`` with each line longer than ``width`` broken at spaces, continuations indented."""
    lines = []
    for line in str(text).split("\n"):
        if len(line) <= width:
            lines.append(line)
            continue
        lines += textwrap.wrap(line, width, subsequent_indent=indent, break_long_words=False,
                               break_on_hyphens=False)
    return "\n".join(lines)


def print_wrapped(*values, sep=" ", width=PAGE_WIDTH):
    """``print(*values)``, with lines longer than the page broken at spaces."""
    print(fit_text(sep.join(str(value) for value in values), width))


def _cells(line):
    """A table row's cells; ``\\|`` is a pipe inside a cell, as in Markdown."""
    inner = line.strip().removeprefix("|").removesuffix("|").replace("\\|", "\0")
    return [cell.strip().replace("\0", "|") for cell in inner.split("|")]


def _inline(text):
    """A table cell's Markdown (``code``, **bold**) as HTML; everything else escaped."""
    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", text)


def table_html(markdown):
    """One Markdown pipe table (header, rule, rows) as an HTML table in a scrolling box."""
    lines = [line for line in markdown.strip().splitlines() if line.strip()]
    if len(lines) < 2 or not _RULE.match(lines[1].strip()):
        raise ValueError("Not a Markdown table: the second line should be its rule, e.g. "
                         "'|---|---:|'.")
    header, rules, rows = _cells(lines[0]), _cells(lines[1]), [_cells(x) for x in lines[2:]]
    for number, cells in enumerate(rows, 1):
        if len(cells) != len(header):
            raise ValueError(f"Row {number} of the table has {len(cells)} cells, its header "
                             f"{len(header)}: {lines[number + 1]!r}")
    aligns = [_ALIGN.get((rule.startswith(":"), rule.endswith(":")), "left") for rule in rules]

    def row(cells, tag):
        return "<tr>" + "".join(
            f'<{tag} style="{CELL_STYLE}; text-align: {align}">{_inline(cell)}</{tag}>'
            for cell, align in zip(cells, aligns, strict=True)) + "</tr>"

    body = "".join(row(cells, "td") for cells in rows)
    return (f'<div style="overflow-x: auto; max-width: 100%"><table style="{TABLE_STYLE}">'
            f"<thead>{row(header, 'th')}</thead><tbody>{body}</tbody></table></div>")


def _blocks(markdown):
    """``("table" | "text", lines)`` runs of a Markdown text."""
    blocks = []
    for line in markdown.splitlines():
        kind = "table" if line.lstrip().startswith("|") else "text"
        if blocks and blocks[-1][0] == kind:
            blocks[-1][1].append(line)
        else:
            blocks.append((kind, [line]))
    return blocks


def show_table(markdown):
    """Display Markdown holding pipe tables: each table as an HTML table, the text around it as
    Markdown (headings, notes). In a notebook, and so in the book."""
    from IPython.display import HTML, Markdown, display  # noqa: PLC0415 (notebooks only)

    for kind, lines in _blocks(markdown):
        text = "\n".join(lines)
        if kind == "table":
            display(HTML(table_html(text)))
        elif text.strip():
            display(Markdown(text))
