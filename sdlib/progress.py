"""The denoising loop's progress: one line, live where it can be redrawn, and one line where it is
kept.

- In Jupyter (an IPython kernel): a display that is updated in place, so the cell shows a live
  line while it runs and the saved notebook, and the book rendered from it, keep only the last.
- On a terminal: the line is redrawn with a carriage return.
- Anywhere else (stdout redirected to a file or a CI log): nothing until the end, then the last
  line, so no escape codes or hundreds of partial lines reach the file.
"""

import sys
import time

__all__ = ["StepProgress"]

REDRAW_SECONDS = 0.1  # at most ten redraws a second: a 50-step loop at 30 ms/step draws 15


def _kernel_display():
    """IPython's ``display`` where this runs in a Jupyter kernel, else None."""
    shell = sys.modules.get("IPython")
    shell = shell and getattr(shell, "get_ipython", lambda: None)()
    if shell is None or not hasattr(shell, "kernel"):
        return None
    from IPython.display import display  # noqa: PLC0415 (only in a kernel, where IPython is loaded)

    return display


class StepProgress:
    """``update(done)`` after each of ``total`` steps; the last update writes the final line."""

    def __init__(self, total, label="denoising steps", stream=None):
        self.total, self.label = total, label
        self.stream = stream or sys.stdout
        self.start = self.last_draw = time.perf_counter()
        self.display = _kernel_display() if stream is None else None
        self.handle = None
        self.first_done = None  # when the first step ended: it also traces and compiles
        self.live = self.display is None and getattr(self.stream, "isatty", lambda: False)()
        self.width = 0  # the longest line drawn: a shorter one is padded over it

    def line(self, done):
        now = time.perf_counter()
        seconds = now - self.start
        if done >= self.total:
            text = f"{done}/{self.total} {self.label} in {seconds:.2f} s"
            if done < 2 or self.first_done is None:
                return f"{text} ({1000 * seconds / max(done, 1):.0f} ms/step)"
            rest = (now - self.first_done) / (done - 1)
            return (f"{text} (the first {self.first_done - self.start:.2f} s, "
                    f"then {1000 * rest:.0f} ms/step)")
        left = seconds / max(done, 1) * (self.total - done)
        return f"{done}/{self.total} {self.label}, {seconds:.1f} s, about {left:.1f} s to go"

    def update(self, done):
        now = time.perf_counter()
        if self.first_done is None:
            self.first_done = now
        final = done >= self.total
        if not final and now - self.last_draw < REDRAW_SECONDS:
            return
        self.last_draw = now
        text = self.line(done)
        if self.display is not None:
            output = {"text/plain": text}
            if self.handle is None:
                self.handle = self.display(output, raw=True, display_id=True)
            else:
                self.handle.update(output, raw=True)
        elif self.live:
            self.width = max(self.width, len(text))
            self.stream.write("\r" + text.ljust(self.width) + ("\n" if final else ""))
            self.stream.flush()
        elif final:
            self.stream.write(text + "\n")
            self.stream.flush()
