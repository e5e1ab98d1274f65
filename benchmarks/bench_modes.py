"""The original guide's table: Standard / Mixed precision / XLA / XLA + mixed precision,
warm and cold.

    python benchmarks/bench_modes.py --preset mini-shapes                # 3 images x 50 steps, 64^2
    python benchmarks/bench_modes.py --preset sd-v1-5 --size 512 --steps 50  # random weights (GPU)

Warm: median of ``--repeats`` calls after a warm-up, all modes in this process. Cold: import +
build + first image, each mode in a fresh Python process. Prints a markdown table and writes JSON
with the device, versions and date to the book's results archive (``sdlib/book/results/``).
"""

import argparse
import platform
import re
import sys

import keras
import numpy as np

from sdlib import device
from sdlib.book import archive, bench


def versions():
    found = {"python": platform.python_version(), "keras": keras.__version__,
             "numpy": np.__version__}
    for name in ("tensorflow", "jax", "torch"):
        module = sys.modules.get(name)
        if module is not None:
            found[name] = module.__version__
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--preset", default="mini-shapes")
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=3)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-cold", action="store_true", help="skip the fresh-process cold starts")
    args = parser.parse_args()

    # the real architecture with random weights: same compute
    load_weights = args.preset != "sd-v1-5"
    common = {"img_size": args.size, "batch_size": args.batch_size, "num_steps": args.steps}
    rows = []
    for mode in device.guide_modes():
        row = bench.benchmark_mode(args.preset, mode, repeats=args.repeats,
                                   load_weights=load_weights, **common)
        if not args.no_cold:
            cold = bench.cold_start_subprocess(args.preset, mode, load_weights=load_weights,
                                               **common)
            row.update(in_process_cold_s=row["cold_s"], cold_s=cold["cold_s"],
                       cold_import_s=cold["import_s"], cold_build_s=cold["build_s"],
                       cold_first_image_s=cold["first_image_s"])
        rows.append(row)
        print(f"{mode}: warm {row['warm_median_s']:.2f} s, cold {row['cold_s']:.2f} s", flush=True)
    print(bench.format_table(rows))

    record = {"benchmark": "text_to_image modes", "preset": args.preset, **common,
              "repeats": args.repeats, "device": rows[0]["device"], "versions": versions(),
              "date": rows[0]["date"], "command": " ".join(sys.argv), "rows": rows}
    slug = re.sub(r"[^a-z0-9]+", "-", record["device"].lower()).strip("-")[:40]
    path = archive.write(
        record, f"modes-{args.preset}-{rows[0]['img_size']}px-{slug}-{record['date'][:10]}.json")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
