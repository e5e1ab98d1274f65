"""benchmarks/bench_peers.py's bookkeeping: workers that fail give error rows, archived commands
hold no machine paths. The timings themselves come from running the script, never from a test; the
tables are sdlib.book.archive's (tests/test_archive.py)."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_peers.py"


@pytest.fixture(scope="module")
def peers():
    spec = importlib.util.spec_from_file_location("bench_peers", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_worker_that_cannot_import_its_library_gives_an_error_row(peers, tmp_path):
    result = peers.run_in_subprocess({"library": "nonexistent", "mode": "x", "component": "unet"},
                                     peers.sys.executable, timeout=120)
    assert "KeyError" in result["error"]


def test_archived_command_holds_no_machine_paths(peers):
    argv = ["/somewhere/benchmarks/bench_peers.py", "--size", "512", "--torch-python",
            "/opt/venv/bin/python"]
    command = peers.archived_command(argv, "/opt/venv/bin/python")
    assert command == "benchmarks/bench_peers.py --size 512 --torch-python $TORCH_PYTHON"


def test_archived_command_quotes_modes_with_spaces(peers):
    command = peers.archived_command(["x.py", "--modes", "sdlib:Mixed precision", "sdlib:XLA"],
                                     "py")
    assert command == 'benchmarks/bench_peers.py --modes "sdlib:Mixed precision" sdlib:XLA'
