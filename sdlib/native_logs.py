"""The native libraries' log lines (TensorFlow's, XLA's C++ logging on file descriptor 2) kept
off the terminal: ``import sdlib`` and the command line run inside ``native_logs_hidden``.
TF_CPP_MIN_LOG_LEVEL=0 or 1 shows them."""

import contextlib
import os
import re
import sys
import threading

# The lines TensorFlow's (and XLA's, JAX's) C++ code logs to file descriptor 2, below FATAL:
# absl's "E0000 00:00:1796169015.165069  3376 cuda_platform.cc:52] failed call to cuInit: ...",
# TensorFlow's older "2025-09-17 14:44:05.157831: I tensorflow/...cc:32] ..." and absl's notice
# that it logs to stderr. TF 2.21 sets its log level once, while `import sdlib` imports it, so
# TF_CPP_MIN_LOG_LEVEL cannot be changed afterwards; this filter can.
NATIVE_LOG_LINE = re.compile(
    rb"^(?:[IWE]\d{4} [\d:.]+\s+\d+ [\w./-]+:\d+\]"
    rb"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWE] [\w./-]+:\d+\]"
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called)"
)
SHOW_NATIVE_LOGS = ("0", "1")  # TF_CPP_MIN_LOG_LEVEL values that ask for the C++ logs


@contextlib.contextmanager
def native_logs_hidden():
    """Drop the C++ log lines written to stderr while the block runs; pass everything else
    through as it comes (unless TF_CPP_MIN_LOG_LEVEL is 0 or 1: then the logs were asked for)."""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") in SHOW_NATIVE_LOGS:
        yield
        return
    sys.stderr.flush()
    try:
        original = os.dup(2)
    except OSError:  # no stderr to filter
        yield
        return
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    forwarder = threading.Thread(target=_forward_all_but_native_logs, args=(read_end, original),
                                 daemon=True)
    forwarder.start()
    python_stderr = sys.stderr
    if _writes_to_descriptor_2(python_stderr):  # Python's own lines skip the filter: in order
        sys.stderr = open(os.dup(original), "w", buffering=1, encoding=python_stderr.encoding,
                          errors=python_stderr.errors)
    try:
        yield
    finally:
        if sys.stderr is not python_stderr:
            sys.stderr.close()
            sys.stderr = python_stderr
        os.dup2(original, 2)  # closes the pipe's last write end: the forwarder reads to its end
        forwarder.join(timeout=5)  # a child process still holding the pipe must not hang us
        if not forwarder.is_alive():  # else it still writes there: leave the descriptor open
            os.close(original)


def _writes_to_descriptor_2(stream):
    try:
        return stream.fileno() == 2
    except (AttributeError, OSError, ValueError):  # a replaced stderr (pytest's capsys, a notebook)
        return False


def _forward_all_but_native_logs(read_end, destination):
    pending = b""
    with os.fdopen(read_end, "rb", buffering=0) as source:
        while chunk := source.read(65536):
            *lines, pending = (pending + chunk).split(b"\n")
            _write_kept(destination, [line + b"\n" for line in lines])
    if pending:
        _write_kept(destination, [pending])


def _write_kept(destination, lines):
    kept = b"".join(line for line in lines if not NATIVE_LOG_LINE.match(line))
    while kept:
        kept = kept[os.write(destination, kept):]
