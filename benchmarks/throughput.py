"""Images per second for many images, each way sdlib makes them: a plain loop, batched calls in
one process, Ray Data workers, and keras.distribution.DataParallel over virtual devices.

    python benchmarks/throughput.py                      # mini-shapes, 32 images x 25 steps, ~4 min
    python benchmarks/throughput.py --images 64 --workers 1 2 4

Every way makes the same images (same prompts, a seed per image); each row says how far its
images are from the loop's (uint8 levels). Rows:

- ``loop``: ``text_to_image(prompt, seed=s)`` once per image, in this process (TensorFlow).
- ``batched``: ``run_batch(..., workers=0, batch_size=B)``, one call per B images, same process.
- ``ray N``: ``run_batch(..., workers=N)``: N Ray Data actors, each with its own pipeline and an
  equal share of the cores. Ray is started once (``ray_start_s``). The warm rate is the workers'
  own: the images after each worker's first (compiling) call over the slowest worker's time for
  them (the manifest's seconds). ``startup_s`` is the rest of the run's wall time: actors
  starting, importing TensorFlow, building, compiling, Ray moving the work. ``end_to_end``: all
  images over the whole run.
- ``jax 1 device`` / ``jax DataParallel N``: batched calls on the JAX backend in a fresh process,
  one device or N virtual CPU devices (``XLA_FLAGS=--xla_force_host_platform_device_count=N``),
  the batch sharded over them.

Warm rates exclude building and compiling (``startup_s`` gives them). Prints a markdown table and
writes JSON with the device, versions and date to the book's results archive
(``throughput-*.json``, read by chapter 10).
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from sdlib import device
from sdlib.batch import ModelSpec, run_batch
from sdlib.batch.ray_engine import connected
from sdlib.book import archive
from sdlib.mini import shapes

# One process of the JAX rows: the same images as the loop, batched, on 1 or N devices.
JAX_CHILD = r'''
import json, sys, time
import keras, numpy as np
import sdlib

settings = json.loads(sys.argv[1])
devices = settings["devices"]
started = time.perf_counter()
if devices > 1:
    keras.distribution.set_distribution(keras.distribution.DataParallel())
pipe = sdlib.StableDiffusion.from_preset(settings["preset"])
B = settings["batch_size"]
prompts, seeds = settings["prompts"], settings["seeds"]

def call(i):  # (B, H, W, 3) uint8
    return pipe.text_to_image(prompts[i:i + B], seed=seeds[i:i + B],
                              num_steps=settings["num_steps"], verbose=False)

first = call(0)
startup_s = time.perf_counter() - started
images, start = [], time.perf_counter()
for i in range(0, len(prompts), B):
    images.append(call(i))
warm_s = time.perf_counter() - start
np.save(settings["images_path"], np.concatenate(images))
import jax
print("RESULT " + json.dumps({"startup_s": startup_s, "warm_s": warm_s,
                              "devices": jax.device_count(), "backend": keras.backend.backend()}))
'''


def versions():
    import keras
    import ray
    import tensorflow as tf

    return {"python": platform.python_version(), "keras": keras.__version__,
            "tensorflow": tf.__version__, "ray": ray.__version__, "numpy": np.__version__}


def max_difference(images, reference):
    return int(np.abs(images.astype(int) - reference.astype(int)).max())


def row(way, n, warm_s=None, startup_s=None, difference=None, **extra):
    rate = None if warm_s is None else n / warm_s
    return {"way": way, "images": n, "warm_s": warm_s, "images_per_s": rate,
            "startup_s": startup_s, "max_difference_vs_loop": difference, **extra}


def time_loop(pipe, prompts, seeds, num_steps):
    """One call per image; the first (compiling) call is made before the clock starts."""
    pipe.text_to_image(prompts[0], seed=seeds[0], num_steps=num_steps, verbose=False)
    start = time.perf_counter()
    images = np.concatenate([pipe.text_to_image(prompt, seed=seed, num_steps=num_steps,
                                                verbose=False)
                             for prompt, seed in zip(prompts, seeds, strict=True)])
    return images, time.perf_counter() - start


def read_folder(out, jobs_file):
    """The batch's images in prompts-file order, from its manifest."""
    records = [json.loads(line) for line in (Path(out) / "manifest.jsonl").read_text().splitlines()]
    by_line = {record["line"]: record for record in records}
    count = len(jobs_file.read_text().splitlines())
    return np.stack([np.asarray(Image.open(Path(out) / by_line[line]["file"]).convert("RGB"))
                     for line in range(1, count + 1)])


def time_batch(jobs_file, out, model, workers, batch_size, pipe=None):
    """run_batch into a fresh folder: (images, seconds in all, seconds to the first call's
    images, the seconds after them)."""
    arrivals = []
    start = time.perf_counter()
    run_batch(jobs_file, out, model, workers=workers, batch_size=batch_size, pipe=pipe,
              on_image=lambda *_: arrivals.append(time.perf_counter()))
    total = time.perf_counter() - start
    first_batch = arrivals[min(batch_size, len(arrivals)) - 1] - start
    return read_folder(out, jobs_file), total, first_batch, arrivals[-1] - start - first_batch


def warm_worker_time(out):
    """(images, seconds) of the Ray workers once warm, from the manifest: each worker's calls
    but its first (which compiled; its images took the longest), the slowest worker's sum.
    Ray Data hands results to the driver in bundles, so arrival times cannot say this."""
    records = [json.loads(line) for line in (Path(out) / "manifest.jsonl").read_text().splitlines()]
    by_worker = {}
    for record in records:
        by_worker.setdefault(record["worker"], []).append(record["seconds"])
    images, slowest = 0, 0.0
    for seconds in by_worker.values():
        first = max(seconds)  # one call's images share their seconds
        warm = [value for value in seconds if value != first]
        images += len(warm)
        slowest = max(slowest, sum(warm))
    return images, slowest


def time_jax(devices, preset, prompts, seeds, num_steps, batch_size, scratch):
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"}
    if devices > 1:
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} " \
                           f"--xla_force_host_platform_device_count={devices}".strip()
    images_path = str(Path(scratch) / f"jax-{devices}.npy")
    settings = {"devices": devices, "preset": preset, "prompts": prompts, "seeds": seeds,
                "num_steps": num_steps, "batch_size": batch_size, "images_path": images_path}
    done = subprocess.run([sys.executable, "-c", JAX_CHILD, json.dumps(settings)], env=env,
                          capture_output=True, text=True, timeout=1200)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise RuntimeError(f"the JAX run on {devices} device(s) failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):]), np.load(images_path)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--preset", default="mini-shapes")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--devices", type=int, default=2, help="virtual devices of DataParallel")
    parser.add_argument("--seed", type=int, default=0, help="draws the prompts")
    args = parser.parse_args()
    if args.images % args.batch_size or args.batch_size % args.devices:
        parser.error("--images must be a multiple of --batch-size, and it of --devices")

    import sdlib

    prompts = shapes.canonical_prompts(args.images, seed=args.seed, held_out=False)
    seeds = list(range(1000, 1000 + args.images))
    n, rows = args.images, []
    with tempfile.TemporaryDirectory() as scratch:
        jobs_file = Path(scratch) / "prompts.jsonl"
        jobs_file.write_text("".join(
            json.dumps({"prompt": prompt, "seed": seed, "num_steps": args.steps}) + "\n"
            for prompt, seed in zip(prompts, seeds, strict=True)))
        model = ModelSpec(args.preset)

        start = time.perf_counter()
        pipe = sdlib.StableDiffusion.from_preset(args.preset)
        build_s = time.perf_counter() - start
        loop_images, warm_s = time_loop(pipe, prompts, seeds, args.steps)
        rows.append(row("loop", n, warm_s, build_s, 0))
        print(f"loop: {n / warm_s:.2f} images/s", flush=True)

        # batched: the pipeline is warm for batch 1; the first batch compiles batch B
        images, total, first, rest = time_batch(jobs_file, Path(scratch) / "batched", model, 0,
                                                args.batch_size, pipe=pipe)
        rows.append(row(f"batched x{args.batch_size}", n - args.batch_size, rest, first,
                        max_difference(images, loop_images)))
        print(f"batched: {rows[-1]['images_per_s']:.2f} images/s", flush=True)
        del pipe

        start = time.perf_counter()
        with connected() as ray:
            ray_start_s = time.perf_counter() - start
            cpus = ray.cluster_resources().get("CPU")
            for workers in args.workers:
                out = Path(scratch) / f"ray-{workers}"
                images, total, _, _ = time_batch(jobs_file, out, model, workers,
                                                 args.batch_size)
                warm_images, warm_s = warm_worker_time(out)
                rows.append(row(f"ray {workers} worker{'s' * (workers > 1)}", warm_images,
                                warm_s, total - warm_s * n / warm_images,
                                max_difference(images, loop_images), ray_start_s=ray_start_s,
                                ray_cpus=cpus, end_to_end_s=total,
                                end_to_end_images_per_s=n / total))
                print(f"ray {workers}: {rows[-1]['images_per_s']:.2f} images/s warm, "
                      f"{n / total:.2f} end to end", flush=True)

        for devices in sorted({1, args.devices}):
            result, images = time_jax(devices, args.preset, prompts, seeds, args.steps,
                                      args.batch_size, scratch)
            name = "jax 1 device" if devices == 1 else f"jax DataParallel {devices} devices"
            rows.append(row(name, n, result["warm_s"], result["startup_s"],
                            max_difference(images, loop_images), devices=result["devices"]))
            print(f"{name}: {rows[-1]['images_per_s']:.2f} images/s", flush=True)

    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    record = {"benchmark": "throughput", "preset": args.preset, "images": n,
              "num_steps": args.steps, "batch_size": args.batch_size,
              "device": device.describe().description(), "cores": len(os.sched_getaffinity(0)),
              "versions": versions(), "date": now, "command": " ".join(sys.argv),
              "ray_start_s": ray_start_s, "rows": rows}
    print(archive.format_throughput_table(record))
    path = archive.write(record, f"throughput-{args.preset}-{record['date'][:10]}.json")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
