"""The command line's output: a live progress bar only where one can be drawn (a redirected
stdout gets one plain line), and the native logs hidden (``sdlib.native_logs``)."""

import sys
import time

from sdlib.native_logs import native_logs_hidden

__all__ = ["live_progress", "native_logs_hidden", "report_made"]


def live_progress():
    """Whether to draw keras' progress bar: only on a terminal, since its escape codes and
    backspaces would stay in a log file or a pipe."""
    return sys.stdout.isatty()


def report_made(images, started):
    """One plain line when the images are made (``started``: time.perf_counter() before)."""
    seconds = time.perf_counter() - started
    count = len(images)
    print(f"made {count} image{'' if count == 1 else 's'} in {seconds:.1f} s")
