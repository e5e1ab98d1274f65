"""The denoising progress line: live where it can be redrawn, one line wherever it is kept (a
redirected stdout, a saved notebook and so the book)."""

import io

import nbformat
import pytest
from nbclient import NotebookClient

from sdlib import progress
from sdlib.progress import StepProgress


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture
def no_redraw_limit(monkeypatch):
    monkeypatch.setattr(progress, "REDRAW_SECONDS", 0.0)


def test_a_redirected_stream_gets_only_the_final_line(no_redraw_limit):
    stream = io.StringIO()
    bar = StepProgress(5, stream=stream)
    for done in range(1, 6):
        bar.update(done)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("5/5 denoising steps in ")
    assert ", then " in lines[0] and lines[0].endswith(" ms/step)")  # the first step apart
    assert not any(code in stream.getvalue() for code in ("\x1b", "\b", "\r"))


def test_a_terminal_redraws_one_line_and_ends_it(no_redraw_limit):
    stream = Terminal()
    bar = StepProgress(3, stream=stream)
    for done in range(1, 4):
        bar.update(done)
    text = stream.getvalue()
    assert text.count("\r") == 3 and text.count("\n") == 1 and text.endswith("\n")
    assert "1/3 denoising steps, " in text and "to go" in text
    assert "\x1b" not in text


def test_redraws_are_limited_but_the_last_line_always_comes(monkeypatch):
    monkeypatch.setattr(progress, "REDRAW_SECONDS", 3600.0)
    stream = Terminal()
    bar = StepProgress(50, stream=stream)
    for done in range(1, 51):
        bar.update(done)
    assert stream.getvalue().count("\r") == 1 and "50/50" in stream.getvalue()


def test_a_notebook_keeps_one_line_of_progress(tmp_path):
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "from sdlib import progress\n"
        "progress.REDRAW_SECONDS = 0.0\n"
        "bar = progress.StepProgress(20)\n"
        "for done in range(1, 21):\n"
        "    bar.update(done)\n")])
    NotebookClient(notebook, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = notebook.cells[0].outputs
    assert len(outputs) == 1, outputs  # one display, updated in place: not 20 lines
    text = outputs[0]["data"]["text/plain"]
    assert text.startswith("20/20 denoising steps in ") and "\n" not in text.strip()

