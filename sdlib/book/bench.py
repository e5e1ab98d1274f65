"""Timing harness: cold and warm start of the four modes of the keras.io guide (Standard, Mixed
precision, XLA, XLA + mixed precision; "High-performance image generation using Stable Diffusion in
KerasCV", Chollet et al. 2022).

A mode's *cold* time is building the pipeline plus its first image (tracing and compiling included);
its *warm* time is the median of later calls. Cold-start honesty: ``run_modes`` measures every mode
in one process, so a mode that runs after another shares the imports, the backend's kernel caches
and the warmed-up allocator, and its cold time comes out too low. ``cold_start_subprocess`` measures
one mode in a fresh Python process (same interpreter, same environment), imports included.
"""

import datetime
import gc
import json
import os
import statistics
import subprocess
import sys
import time

import keras

import sdlib
from sdlib import device

DEFAULT_PROMPT = "a small red circle in the top left on a black background"


def time_call(fn, repeats=3, warmup=1):
    """Time ``fn()``: the first call alone (it includes tracing and compiling), then ``warmup``
    untimed calls, then ``repeats`` timed calls. Seconds, from ``time.perf_counter``."""
    start = time.perf_counter()
    fn()
    first_s = time.perf_counter() - start
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"first_s": first_s,
            "median_s": statistics.median(times) if times else None,
            "min_s": min(times) if times else None,
            "max_s": max(times) if times else None,
            "times": times}


def _build(preset, mode, img_size, batch_size, num_steps, prompt, modes, pipeline_kwargs):
    """The pipeline, a function that makes its images, and the seconds the build took."""
    kwargs = {**(modes or device.guide_modes())[mode].kwargs(), **pipeline_kwargs}
    start = time.perf_counter()
    pipe = sdlib.StableDiffusion.from_preset(preset, img_height=img_size, img_width=img_size,
                                             **kwargs)
    build_s = time.perf_counter() - start

    def generate():
        return pipe.text_to_image(prompt, batch_size=batch_size, num_steps=num_steps, seed=0,
                                  verbose=False)

    return pipe, generate, build_s


def _provenance(pipe):
    return {"device": device.describe().description(), "backend": keras.backend.backend(),
            "keras_version": keras.__version__,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "dtype_policy": pipe.unet.dtype_policy.name, "jit_compile": pipe.jit_compile}


def benchmark_mode(preset, mode, img_size=None, batch_size=3, num_steps=50, repeats=3,
                   prompt=DEFAULT_PROMPT, warmup=1, modes=None, return_images=False,
                   **pipeline_kwargs):
    """Build ``preset`` in ``mode`` (a label of ``modes``, default ``sdlib.device.guide_modes()``)
    and time ``text_to_image``.

    Extra keyword arguments go to ``from_preset`` (e.g. ``compile_loop=True``). With
    ``return_images`` the row also holds the last call's images (uint8), to compare modes' outputs.
    """
    row = _benchmark(preset, mode, img_size, batch_size, num_steps, repeats, prompt, warmup, modes,
                     return_images, pipeline_kwargs)
    gc.collect()  # free this pipeline now: the next one should not share the accelerator with it
    return row


def _benchmark(preset, mode, img_size, batch_size, num_steps, repeats, prompt, warmup, modes,
               return_images, pipeline_kwargs):
    pipe, generate, build_s = _build(preset, mode, img_size, batch_size, num_steps, prompt, modes,
                                     pipeline_kwargs)
    last = {}
    timing = time_call(lambda: last.update(images=generate()), repeats=repeats, warmup=warmup)
    row = {"mode": mode, "preset": preset, "img_size": pipe.img_height, "batch_size": batch_size,
           "num_steps": num_steps, "build_s": build_s, "first_image_s": timing["first_s"],
           "cold_s": build_s + timing["first_s"], "warm_median_s": timing["median_s"],
           "warm_min_s": timing["min_s"], "warm_max_s": timing["max_s"],
           "warm_times": timing["times"], **_provenance(pipe), **pipeline_kwargs}
    if return_images:
        row["images"] = last["images"]
    return row


def run_modes(preset, modes=None, **kwargs):
    """``benchmark_mode`` for every mode, in order, in this process (see the module docstring)."""
    modes = modes or device.guide_modes()
    return [benchmark_mode(preset, mode, modes=modes, **kwargs) for mode in modes]


def format_table(rows):
    """A markdown table: mode, cold s, warm s, warm speed-up vs Standard (else vs the first row)."""
    baseline = next((row for row in rows if row["mode"] == "Standard"), rows[0])
    lines = [f"| mode | cold s | warm s | speed-up vs {baseline['mode']} |",
             "|---|---:|---:|---:|"]
    for row in rows:
        warm = row["warm_median_s"]
        speedup = baseline["warm_median_s"] / warm if warm else float("nan")
        warm_text = f"{warm:.2f}" if warm is not None else "-"
        lines.append(f"| {row['mode']} | {row['cold_s']:.2f} | {warm_text} | {speedup:.2f}x |")
    return "\n".join(lines)


_SUBPROCESS_CODE = """
import json, sys, time
start = time.perf_counter()
import keras, sdlib
from sdlib.book import bench
import_s = time.perf_counter() - start
args = json.loads(sys.argv[1])
row = bench._cold_row(import_s, **args)
print(json.dumps(row))
"""


def _cold_row(import_s, preset, mode, img_size=None, batch_size=3, num_steps=50,
              prompt=DEFAULT_PROMPT, **pipeline_kwargs):
    pipe, generate, build_s = _build(preset, mode, img_size, batch_size, num_steps, prompt, None,
                                     pipeline_kwargs)
    start = time.perf_counter()
    generate()
    first_image_s = time.perf_counter() - start
    return {"mode": mode, "preset": preset, "import_s": import_s, "build_s": build_s,
            "first_image_s": first_image_s, "cold_s": import_s + build_s + first_image_s,
            **_provenance(pipe)}


def cold_start_subprocess(preset, mode, timeout=600, **kwargs):
    """Import + build + first image of one mode in a fresh Python process.

    Returns the child's measurements (``import_s``, ``build_s``, ``first_image_s``, ``cold_s``) and
    ``process_s``: the wall time of the whole child, interpreter start-up and exit included.
    """
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(sdlib.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    arguments = json.dumps({"preset": preset, "mode": mode, **kwargs})
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", _SUBPROCESS_CODE, arguments], env=env,
                            capture_output=True, text=True, timeout=timeout, check=False)
    process_s = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"the cold-start process failed ({result.returncode}):\n"
                           f"{result.stderr[-2000:]}")
    for line in reversed(result.stdout.splitlines()):
        if line.startswith("{"):
            return {**json.loads(line), "process_s": process_s}
    raise RuntimeError(f"the cold-start process printed no result:\n{result.stdout[-2000:]}")
