"""The results archive: JSON records that the benchmark scripts write and the chapters tabulate.

Each record carries its device, versions, date and command. They are package data (``RESULTS``,
~40 KB), so a chapter finds them wherever sdlib is installed: in a checkout, in CI's copy of the
notebooks, in Colab. ``benchmarks/bench_modes.py`` writes ``modes-*.json``, ``bench_peers.py``
``peers-*.json``, ``speed_quality.py`` ``speed-quality-*.json`` (chapter 6), and
``throughput.py`` ``throughput-*.json`` (chapter 10).
"""

import json
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def records(kind, folder=RESULTS):
    """Every archived record of ``kind`` ("modes", "peers", "speed-quality"), oldest first; each
    dict gains ``"path"``, the file it came from."""
    found = [{**json.loads(path.read_text()), "path": str(path)}
             for path in Path(folder).glob(f"{kind}-*.json")]
    return sorted(found, key=lambda record: (record.get("date", ""), record["path"]))


def write(record, name, folder=RESULTS):
    """Write ``record`` as ``folder/name``; an existing archive is never replaced (a time suffix
    makes the name new). Returns the path written."""
    out = Path(folder) / name
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        out = out.with_name(f"{out.stem}-{record['date'][11:19].replace(':', '')}{out.suffix}")
    out.write_text(json.dumps(record, indent=1, default=str) + "\n")
    return out


# === Tables of peer runs (benchmarks/bench_peers.py) ===
def gflops(row, flops):
    """Counted GFLOP per call (``flops``: "component@latent side" -> GFLOP, as a record stores them)
    over the row's warm median; None where the work was not counted (whole pipelines)."""
    key = "text@None" if row["component"] == "text" else f"{row['component']}@{row['size'] // 8}"
    if key not in flops or "median_s" not in row:
        return None
    return flops[key] / row["median_s"]


def mode_label(row):
    """The mode, and for pipeline rows the sampler, steps and images (keras-cv: its DDIM)."""
    if row["component"] != "pipeline":
        return row["mode"]
    keras_cv = row["library"] == "keras-cv"
    sampler = "ddim" if keras_cv else row["sampler"]
    steps = row.get("kerascv_steps", row["steps"]) if keras_cv else row["steps"]
    guidance = 7.5 if keras_cv else row.get("guidance", 7.5)
    label = f"{row['mode']}, {sampler} {steps} steps x {row.get('batch_size', 1)}"
    if "resolved_mode" in row and row["mode"] == "auto":  # what "auto" picked
        resolved = row["resolved_mode"]
        label += f" ({resolved['dtype']}{', XLA' if resolved['jit_compile'] else ''})"
    return label + (f", guidance {guidance:g}" if guidance != 7.5 else "")


def cold_s(row):
    """Cold start: import + build (or load) + first call, seconds."""
    return row["import_s"] + row["build_s"] + row["first_s"]


def format_peers_table(rows, peaks, flops):
    """Markdown: per component, each row's warm median, first call, cold start (import + build +
    first call), ratio to the best peer row, GFLOP/s, share of the device's peak, peak RSS.
    Whole-pipeline rows get their own table (:func:`format_pipeline_table`)."""
    pipeline = [row for row in rows if row["component"] == "pipeline"]
    parts = [row for row in rows if row["component"] != "pipeline"]
    tables = [format_component_table(parts, peaks, flops)] if parts else []
    if pipeline:
        tables.append(format_pipeline_table(pipeline))
    return "\n\n".join(tables)


def format_pipeline_table(rows):
    """Markdown: whole ``text_to_image`` rows, warm (a call after the first; "-" for a cold-only
    row) and cold seconds, and for sdlib's rows the ratios to the fastest row of each peer
    library with the same weights path (random or from disk)."""
    peers = sorted({row["library"] for row in rows if row["library"] != "sdlib"})
    lines = ["| library | mode | weights | warm s | cold s | "
             + " | ".join(f"warm vs {peer} | cold vs {peer}" for peer in peers) + " | RSS MiB |",
             "|---|---|---|---:|---:|" + "---:|" * (2 * len(peers)) + "---:|"]

    def fastest(peer, weights, key):
        times = [key(row) for row in rows if row["library"] == peer and "error" not in row
                 and row.get("weights", "random") == weights and key(row) is not None]
        return min(times, default=None)

    def ratio(value, best):
        return f"{value / best:.2f}x" if value is not None and best else "-"

    for row in rows:
        weights = row.get("weights", "random")
        if "error" in row:
            lines.append(f"| {row['library']} | {mode_label(row)} | {weights} | failed: "
                         f"{row['error'].strip().splitlines()[-1][:80]} |"
                         + " |" * (2 * len(peers) + 2))
            continue
        warm = row.get("median_s")
        cells = []
        for peer in peers:
            if row["library"] != "sdlib":
                cells += ["-", "-"]
                continue
            cells.append(ratio(warm, fastest(peer, weights, lambda r: r.get("median_s"))))
            cells.append(ratio(cold_s(row), fastest(peer, weights, cold_s)))
        lines.append(f"| {row['library']} | {mode_label(row)} | {weights} | "
                     f"{'-' if warm is None else f'{warm:.2f}'} | {cold_s(row):.1f} | "
                     + " | ".join(cells) + f" | {row['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def format_component_table(rows, peaks, flops):
    """Markdown: :func:`format_peers_table`'s table of components (text, UNet, VAE)."""
    lines = ["| component | library | mode | warm s | first s | cold s | vs best peer | GFLOP/s |"
             " % peak | RSS MiB |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    peak32 = max((p.get("float32", 0) for p in peaks.values()), default=0)  # xla_* rows: not peaks
    peak16 = max((p.get("bfloat16", 0) for p in peaks.values()), default=0)
    for component in dict.fromkeys(row["component"] for row in rows):
        group = [row for row in rows if row["component"] == component]
        peer_times = [row["median_s"] for row in group
                      if row["library"] != "sdlib" and "median_s" in row]
        best_peer = min(peer_times) if peer_times else None
        for row in group:
            if "error" in row:
                lines.append(f"| {component} | {row['library']} | {row['mode']} | failed: "
                             f"{row['error'].strip().splitlines()[-1][:80]} | | | | | | |")
                continue
            cold = cold_s(row)
            ratio = f"{row['median_s'] / best_peer:.2f}x" if best_peer else "-"
            rate = gflops(row, flops)
            half = "mixed" in row["mode"].lower() or "bfloat16" in row["mode"]
            peak = peak16 if half else peak32
            share = f"{100 * rate / peak:.0f}%" if rate and peak else "-"
            lines.append(f"| {component} | {row['library']} | {mode_label(row)} | "
                         f"{row['median_s']:.3f} | {row['first_s']:.2f} | {cold:.1f} | {ratio} | "
                         f"{f'{rate:.0f}' if rate else '-'} | {share} | {row['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def peers_heading(record):
    """One line: image size, device, date and the libraries' versions of a peer run."""
    versions = {row["library"]: row.get("library_version") for row in record["rows"]
                if "error" not in row}
    return (f"{record['size']}x{record['size']}; {record['device']}; {record['date'][:10]}; "
            + ", ".join(f"{name} {version}" for name, version in versions.items()))


# === Tables of judged editing (benchmarks/editing_quality.py) ===
EDITING_COLUMNS = {
    "recolor": ("new color", "position kept", "shape kept", "all3"),
    "add": ("color", "shape", "position", "size", "background", "all"),
    "replace": ("color", "shape", "position", "size", "background", "all"),
}


def format_editing_table(record):
    """Markdown: one table per task; scores in %, the kept region's mean |difference| of 255."""
    tables = []
    for task, columns in EDITING_COLUMNS.items():
        rows = [row for row in record["rows"] if row["task"] == task]
        if not rows:
            continue
        extra = "changed" if task == "recolor" else "unmasked |delta|"
        header = extra.replace("|", "\\|")  # a pipe inside a cell is escaped in Markdown
        lines = ["| " + " | ".join(["method", "targets", "n", *columns, header]) + " |",
                 "|---|---|---:|" + "---:|" * (len(columns) + 1)]
        for row in rows:
            cells = [row["method"], row["split"], str(row["count"]),
                     *(f"{100 * row[column]:.1f}" for column in columns), f"{row[extra]:.2f}"]
            lines.append("| " + " | ".join(cells) + " |")
        tables.append(f"**{task}**\n\n" + "\n".join(lines))
    return "\n\n".join(tables)


# === Tables of judged adapters (benchmarks/adapter_quality.py) ===
ADAPTER_COLUMNS = ("color", "shape", "position", "size", "background", "all3", "concept")


def format_adapter_table(record):
    """Markdown: one row per adapter and prompt split, scores in %."""
    columns = [column for column in ADAPTER_COLUMNS
               if any(column in row for row in record["rows"])]
    lines = ["| " + " | ".join(["adapter", "prompts", "n", *columns]) + " |",
             "|---|---|---:|" + "---:|" * len(columns)]
    for row in record["rows"]:
        cells = [row["adapter"], row["split"], str(row["count"]),
                 *(f"{100 * row[column]:.1f}" if column in row else "" for column in columns)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# === Many images (benchmarks/throughput.py) ===
def format_throughput_table(record):
    """Markdown: each way of making many images, its warm images/s and the ratio to the plain
    loop, its start-up seconds, images/s over the whole run where it differs (Ray), and how far
    its images are from the loop's (uint8 levels)."""
    lines = ["| way | images/s, warm | vs loop | start-up s | images/s, whole run |"
             " max diff vs loop |",
             "|---|---:|---:|---:|---:|---:|"]
    loop_rate = record["rows"][0]["images_per_s"]
    for row in record["rows"]:
        whole_run = row.get("end_to_end_images_per_s")
        lines.append(f"| {row['way']} | {row['images_per_s']:.2f} | "
                     f"{row['images_per_s'] / loop_rate:.2f}x | {row['startup_s']:.1f} | "
                     f"{'' if whole_run is None else f'{whole_run:.2f}'} | "
                     f"{row['max_difference_vs_loop']} |")
    return "\n".join(lines)
