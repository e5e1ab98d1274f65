"""The results archive: records are found wherever sdlib is installed, never overwritten, and their
peer tables give GFLOP/s, ratios to the best peer and failed rows."""

import json

import pytest

from sdlib.book import archive
from sdlib.book.display import table_html

FLOPS = {"text@None": 26.6, "unet@32": 360.2, "unet@64": 1606.5, "vae@32": 622.2, "vae@64": 2514.5}


def row(library, mode, median, component="unet", size=512):
    return {"library": library, "mode": mode, "component": component, "size": size,
            "median_s": median, "first_s": 2 * median, "import_s": 1.0, "build_s": 3.0,
            "peak_rss_mb": 1000.0}


def test_gflops_uses_the_counted_flops():
    assert archive.gflops(row("sdlib", "XLA", 2.0), FLOPS) == pytest.approx(1606.5 / 2.0)
    vae = row("sdlib", "XLA", 1.0, component="vae", size=256)
    assert archive.gflops(vae, FLOPS) == pytest.approx(622.2)
    assert archive.gflops(row("sdlib", "XLA", 1.0, component="pipeline"), FLOPS) is None


def test_table_ratios_are_to_the_best_peer_and_failures_are_shown():
    rows = [row("sdlib", "Mixed precision", 4.0), row("keras-cv", "Mixed precision", 6.0),
            row("diffusers", "eager bfloat16", 5.0),
            {"library": "keras-cv", "mode": "XLA", "component": "unet", "size": 512,
             "error": "Traceback ...\nModuleNotFoundError: No module named 'keras_cv'"}]
    table = archive.format_peers_table(rows, {"tensorflow": {"float32": 200.0, "bfloat16": 400.0}},
                                       FLOPS)
    lines = table.splitlines()
    assert "| unet | sdlib | Mixed precision | 4.000 |" in lines[2]
    assert "0.80x" in lines[2]  # 4.0 / best peer 5.0
    assert "1.00x" in lines[4]
    # bf16 peak for mixed
    assert f"{1606.5 / 4.0:.0f} | {100 * 1606.5 / 4.0 / 400:.0f}%" in lines[2]
    assert "failed: ModuleNotFoundError: No module named 'keras_cv'" in lines[5]


def test_pipeline_rows_name_their_sampler_and_steps():
    sdlib_row = {**row("sdlib", "Mixed precision", 30.0, component="pipeline"),
                 "sampler": "dpmpp_2m", "steps": 15, "kerascv_steps": 50, "batch_size": 1}
    kerascv_row = {**sdlib_row, "library": "keras-cv", "mode": "Standard"}
    assert archive.mode_label(sdlib_row) == "Mixed precision, dpmpp_2m 15 steps x 1"
    # keras-cv: its DDIM only
    assert archive.mode_label(kerascv_row) == "Standard, ddim 50 steps x 1"


def pipeline_row(library, mode, median, weights="random", **extra):
    return {**row(library, mode, median, component="pipeline"), "sampler": "lcm", "steps": 4,
            "kerascv_steps": 50, "guidance": 1.0, "weights": weights, **extra}


def test_pipeline_tables_compare_sdlib_with_each_peer_on_the_same_weights_path():
    rows = [pipeline_row("sdlib", "Mixed precision", 10.0),
            pipeline_row("diffusers", "eager bfloat16", 20.0),
            pipeline_row("diffusers", "eager float32", 40.0),
            pipeline_row("keras-cv", "Mixed precision", 100.0),
            # a cold-only row from disk: no warm time; its peers are the disk rows only
            {**pipeline_row("sdlib", "auto", 10.0, weights="disk",
                            resolved_mode={"jit_compile": False, "dtype": "bfloat16"}),
             "median_s": None},
            pipeline_row("keras-cv", "Standard", 50.0, weights="disk")]
    del rows[4]["median_s"]
    lines = archive.format_pipeline_table(rows).splitlines()
    assert lines[0].startswith("| library | mode | weights | warm s | cold s | warm vs diffusers |")
    cells = [cell.strip() for cell in lines[2].split("|")[1:-1]]
    # cold = import 1 + build 3 + first 2 x median
    assert cells[3:9] == ["10.00", "24.0", "0.50x", f"{24 / 44:.2f}x", "0.10x", f"{24 / 204:.2f}x"]
    assert "guidance 1" in cells[1] and "lcm 4 steps" in cells[1]
    keras_cv = [cell.strip() for cell in lines[5].split("|")[1:-1]]
    assert keras_cv[1] == "Mixed precision, ddim 50 steps x 1"  # its own guidance, 7.5
    disk = [cell.strip() for cell in lines[6].split("|")[1:-1]]
    assert disk[1].startswith("auto, lcm 4 steps x 1 (bfloat16)")
    # no diffusers row from disk: "-"; keras-cv's disk row: cold 1 + 3 + 100 = 104
    assert disk[3:9] == ["-", "24.0", "-", "-", "-", f"{24 / 104:.2f}x"]
    assert archive.format_peers_table(rows, {}, FLOPS) == archive.format_pipeline_table(rows)


def test_the_archive_ships_with_the_package_and_every_record_has_its_provenance():
    assert archive.RESULTS.is_dir()
    peers = archive.records("peers")
    assert peers, "the archived peer runs are package data"
    for record in peers + archive.records("speed-quality"):
        assert {"date", "device", "command", "rows"} <= set(record)
        assert record["path"].startswith(str(archive.RESULTS))


def test_every_archived_peer_run_formats_as_a_table():
    for record in archive.records("peers"):
        table = archive.format_peers_table(record["rows"], record["peaks_gflops"],
                                           record["flops_gflop"])
        assert len(table.splitlines()) == 2 + len(record["rows"])
        assert str(record["size"]) in archive.peers_heading(record)


def test_write_never_replaces_an_archive(tmp_path):
    record = {"date": "2026-12-01T10:20:30+00:00", "rows": []}
    first = archive.write(record, "modes-x.json", tmp_path)
    second = archive.write({**record, "date": "2026-12-01T10:20:31+00:00", "rows": [1]},
                           "modes-x.json", tmp_path)
    assert first.name == "modes-x.json" and second.name == "modes-x-102031.json"
    assert json.loads(first.read_text())["rows"] == []
    assert [r["rows"] for r in archive.records("modes", tmp_path)] == [[], [1]]


def test_editing_records_format_one_table_per_task():
    row = {"method": "blend", "split": "seen", "count": 3, "color": 1.0, "shape": 2 / 3,
           "position": 1.0, "size": 1.0, "background": 1.0, "all": 2 / 3,
           "unmasked |delta|": 3.21}
    record = {"rows": [{**row, "task": "add"}, {**row, "task": "replace", "method": "model"},
                       {"task": "recolor", "method": "image-to-image", "split": "held-out",
                        "count": 2, "new color": 0.5, "position kept": 1.0, "shape kept": 1.0,
                        "all3": 0.5, "changed": 12.0}]}
    text = archive.format_editing_table(record)
    assert text.index("**recolor**") < text.index("**add**") < text.index("**replace**")
    assert "| blend | seen | 3 | 100.0 | 66.7 | 100.0 | 100.0 | 100.0 | 66.7 | 3.21 |" in text
    assert "| image-to-image | held-out | 2 | 50.0 | 100.0 | 100.0 | 50.0 | 12.00 |" in text
    assert "| all | unmasked \\|delta\\| |" in text  # escaped: one header cell, not three
    assert "<th" in table_html(text.split("**add**\n\n")[1].split("\n\n")[0])


def test_adapter_records_format_one_row_per_adapter_and_split():
    scores = {"color": 1.0, "shape": 0.5, "position": 1.0, "size": 1.0, "background": 1.0,
              "all3": 0.5, "all": 0.5}
    record = {"rows": [{"adapter": "none", "split": "held-out", "count": 2, **scores},
                       {"adapter": "<w>", "split": "new word", "count": 4, **scores,
                        "concept": 0.75}]}
    lines = archive.format_adapter_table(record).splitlines()
    assert lines[0] == ("| adapter | prompts | n | color | shape | position | size | background "
                        "| all3 | concept |")
    assert lines[2] == "| none | held-out | 2 | 100.0 | 50.0 | 100.0 | 100.0 | 100.0 | 50.0 |  |"
    assert lines[3].endswith("| 50.0 | 75.0 |")
