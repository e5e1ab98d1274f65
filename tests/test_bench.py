"""The timing harness on the tiny preset. It checks what is measured and reported, never a speed-up:
speed is shown by the benchmark scripts, not asserted by timed unit tests."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from sdlib import device
from sdlib.book import bench

ROW_KEYS = {"mode", "preset", "img_size", "batch_size", "num_steps", "build_s", "first_image_s",
            "cold_s", "warm_median_s", "warm_min_s", "warm_max_s", "warm_times", "device",
            "backend", "keras_version", "date", "dtype_policy", "jit_compile"}


@pytest.fixture(scope="module")
def rows():
    return bench.run_modes("tiny", img_size=64, batch_size=1, num_steps=2, repeats=1, warmup=0,
                           return_images=True)


def test_run_modes_gives_one_timed_row_per_mode(rows):
    assert [row["mode"] for row in rows] == list(device.guide_modes())
    for row in rows:
        assert ROW_KEYS <= set(row)
        assert row["preset"] == "tiny" and row["num_steps"] == 2 and row["batch_size"] == 1
        for key in ("build_s", "first_image_s", "warm_median_s", "warm_min_s", "warm_max_s"):
            assert row[key] > 0, key
        assert math.isclose(row["cold_s"], row["build_s"] + row["first_image_s"])
        assert len(row["warm_times"]) == 1
    policies = [row["dtype_policy"] for row in rows]
    half = device.inference_policy()
    assert policies == ["float32", half, "float32", half]


def test_format_table_has_a_line_per_mode(rows):
    table = bench.format_table(rows)
    lines = table.splitlines()
    assert lines[0].startswith("| mode | cold s | warm s | speed-up vs Standard")
    assert len(lines) == 2 + len(rows)
    for mode in device.guide_modes():
        assert f"| {mode} |" in table
    assert "| Standard |" in lines[2] and lines[2].endswith("| 1.00x |")


def test_return_images_keeps_the_last_images(rows):
    for row in rows:
        assert row["images"].shape == (1, 64, 64, 3)
        assert row["images"].dtype == np.uint8


def test_time_call_counts_first_warmup_and_repeats():
    calls = []
    timing = bench.time_call(lambda: calls.append(1), repeats=4, warmup=2)
    assert len(calls) == 1 + 2 + 4
    assert len(timing["times"]) == 4
    assert timing["min_s"] <= timing["median_s"] <= timing["max_s"]
    assert timing["first_s"] >= 0


def test_time_call_without_repeats_reports_only_the_first_call():
    calls = []
    timing = bench.time_call(lambda: calls.append(1), repeats=0, warmup=0)
    assert len(calls) == 1
    assert timing["times"] == [] and timing["median_s"] is None


def test_cold_start_subprocess_runs_this_interpreter_and_parses_its_json_line(monkeypatch):
    seen = {}

    def fake_run(command, env, **kwargs):
        seen["command"], seen["env"] = command, env
        compile(command[2], "<cold start>", "exec")  # the child's code is valid Python
        row = {"mode": "XLA", "import_s": 1.0, "build_s": 2.0, "first_image_s": 3.0, "cold_s": 6.0}
        return subprocess.CompletedProcess(command, 0, "model: tiny\n" + json.dumps(row) + "\n", "")

    monkeypatch.setattr(subprocess, "run", fake_run)
    row = bench.cold_start_subprocess("tiny", "XLA", num_steps=2)
    assert seen["command"][:2] == [sys.executable, "-c"]
    assert json.loads(seen["command"][3]) == {"preset": "tiny", "mode": "XLA", "num_steps": 2}
    assert row["cold_s"] == 6.0 and row["process_s"] > 0
