"""benchmarks/bench_peers.py's bookkeeping: GFLOP/s, ratios to the best peer, failed rows reported.
The timings themselves come from running the script, never from a test."""

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


def row(library, mode, median, component="unet", size=512):
    return {"library": library, "mode": mode, "component": component, "size": size,
            "median_s": median, "first_s": 2 * median, "import_s": 1.0, "build_s": 3.0,
            "peak_rss_mb": 1000.0}


def test_gflops_uses_the_counted_flops(peers):
    assert peers.gflops(row("sdlib", "XLA", 2.0)) == pytest.approx(1606.5 / 2.0)
    assert peers.gflops(row("sdlib", "XLA", 1.0, component="vae", size=256)) == pytest.approx(622.2)
    assert peers.gflops(row("sdlib", "XLA", 1.0, component="pipeline")) is None


def test_table_ratios_are_to_the_best_peer_and_failures_are_shown(peers):
    rows = [row("sdlib", "Mixed precision", 4.0), row("keras-cv", "Mixed precision", 6.0),
            row("diffusers", "eager bfloat16", 5.0),
            {"library": "keras-cv", "mode": "XLA", "component": "unet", "size": 512,
             "error": "Traceback ...\nModuleNotFoundError: No module named 'keras_cv'"}]
    table = peers.format_table(rows, {"tensorflow": {"float32": 200.0, "bfloat16": 400.0}})
    lines = table.splitlines()
    assert "| unet | sdlib | Mixed precision | 4.000 |" in lines[2]
    assert "0.80x" in lines[2]  # 4.0 / best peer 5.0
    assert "1.00x" in lines[4]
    assert f"{1606.5 / 4.0:.0f} | {100 * 1606.5 / 4.0 / 400:.0f}%" in lines[2]  # bf16 peak for mixed
    assert "failed: ModuleNotFoundError: No module named 'keras_cv'" in lines[5]


def test_a_worker_that_cannot_import_its_library_gives_an_error_row(peers, tmp_path):
    result = peers.run_in_subprocess({"library": "nonexistent", "mode": "x", "component": "unet"},
                                     peers.sys.executable, timeout=120)
    assert "KeyError" in result["error"]


def test_archived_command_holds_no_machine_paths(peers):
    argv = ["/somewhere/benchmarks/bench_peers.py", "--size", "512", "--torch-python", "/opt/venv/bin/python"]
    command = peers.archived_command(argv, "/opt/venv/bin/python")
    assert command == "benchmarks/bench_peers.py --size 512 --torch-python $TORCH_PYTHON"


def test_pipeline_rows_name_their_sampler_and_steps(peers):
    sdlib_row = {**row("sdlib", "Mixed precision", 30.0, component="pipeline"), "sampler": "dpmpp_2m",
                 "steps": 15, "kerascv_steps": 50, "batch_size": 1}
    kerascv_row = {**sdlib_row, "library": "keras-cv", "mode": "Standard"}
    assert peers.mode_label(sdlib_row) == "Mixed precision, dpmpp_2m 15 steps x 1"
    assert peers.mode_label(kerascv_row) == "Standard, ddim 50 steps x 1"  # keras-cv: its DDIM only


def test_archived_command_quotes_modes_with_spaces(peers):
    command = peers.archived_command(["x.py", "--modes", "sdlib:Mixed precision", "sdlib:XLA"], "py")
    assert command == 'benchmarks/bench_peers.py --modes "sdlib:Mixed precision" sdlib:XLA'
