"""Where sdlib's cold start goes: SD v1.5's guided 512x512 step (random weights, bfloat16,
no XLA, the fastest CPU mode), split into build, trace, first call and warm call, with the
size of the traced graph.

    python benchmarks/cold_start.py               # sdlib's call options, then TensorFlow's defaults
    python benchmarks/cold_start.py --size 256 --repeats 2

- build: create the UNet's weights (zeros, as before loading a checkpoint) and the pipeline;
- trace: Python runs the step once symbolically (``tf.function``), node count of that graph;
- first call: TensorFlow optimises the graph (Grappler) and runs it for the first time;
- warm: the median of later calls.

Each variant runs in a fresh process. "tensorflow defaults" calls the same step with TensorFlow's
default function-call options (two rounds of every Grappler pass) instead of
``sdlib.backend.inference_call_options``. Cold start against keras-cv and diffusers, imports
included, is ``bench_peers.py --components unet``.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

VARIANTS = ("sdlib options", "tensorflow defaults")


def worker(variant, size, repeats):
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import numpy as np
    from bench_peers import build_sdlib, sdlib_guided_step  # same folder: the same build and step
    from keras import ops

    from sdlib import backend

    if variant == "tensorflow defaults":
        backend.inference_call_options = lambda: None
    pipe, build_s = build_sdlib(size, "bfloat16", False, ["unet"])
    step, args = sdlib_guided_step(pipe, np.random.default_rng(0))
    start = time.perf_counter()
    graph = step.tf_function.get_concrete_function(*args).graph
    trace_s = time.perf_counter() - start
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        ops.convert_to_numpy(step(*args)[0])
        times.append(time.perf_counter() - start)
    assert step.trace_count == 1, "the step was traced again"
    return {"variant": variant, "build_s": build_s, "trace_s": trace_s,
            "graph_nodes": len(graph.as_graph_def().node), "first_s": times[0],
            "warm_s": statistics.median(times[1:])}


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.size, args.repeats)))
        return
    rows = []
    for variant in VARIANTS:
        done = subprocess.run([sys.executable, __file__, "--worker", variant,
                               "--size", str(args.size), "--repeats", str(args.repeats)],
                              capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"{variant}: done", flush=True)
    print(f"\nSD v1.5 guided step, {args.size}x{args.size}, bfloat16, no XLA, "
          f"{os.cpu_count()} cores\n")
    print("| call options | build s | trace s | graph nodes | first call s | warm s | "
          "first call - warm s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['variant']} | {row['build_s']:.2f} | {row['trace_s']:.2f} | "
              f"{row['graph_nodes']} | {row['first_s']:.2f} | {row['warm_s']:.2f} | "
              f"{row['first_s'] - row['warm_s']:.2f} |")


if __name__ == "__main__":
    main()
