"""What each of sdlib's CPU optimisations buys, one building block at a time, against the Keras
built-in it replaces: same inputs, same process, TensorFlow graph mode (``tf.function`` without
XLA), bfloat16. Warm median of ``--repeats`` calls after two warm-ups.

    python benchmarks/bench_layers.py              # blocks at SD v1.5's 512x512 sizes + a UNet step
    python benchmarks/bench_layers.py --no-unet    # blocks only (seconds, not minutes)

- attention: ``sdlib.models.layers.multi_head_attention`` (bfloat16 logits) vs
  ``keras.ops.dot_product_attention`` (float32 softmax), the UNet's first level at 512x512: 4096
  tokens, 320 channels, 8 heads, batch 2;
- GELU: ``sdlib.models.layers.gelu`` (erf written out) vs ``keras.ops.gelu(approximate=False)``;
- GroupNorm: ``sdlib.models.layers.GroupNorm`` (per-channel reductions) vs
  ``keras.layers.GroupNormalization``, at the VAE decoder's largest activation and the UNet's
  first level;
- 16-bit weights: the SD v1.5 UNet (random weights, batch 2, 256x256) under "mixed_bfloat16"
  (float32 weights cast on every call) vs "bfloat16" (``sdlib.device.inference_policy``).
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

from sdlib.book import bench  # noqa: E402
from sdlib.models import layers as L  # noqa: E402
from sdlib.models.unet import UNet, UNetConfig  # noqa: E402


def timed(fn, args, repeats):
    import tensorflow as tf

    compiled = tf.function(fn, jit_compile=False)
    return bench.time_call(lambda: keras.ops.convert_to_numpy(compiled(*args)), repeats=repeats,
                           warmup=1)["median_s"]


def random(shape, dtype="bfloat16", seed=0):
    return ops.cast(np.random.default_rng(seed).standard_normal(shape).astype(np.float32), dtype)


def block_pairs():
    """(name, sdlib fn, keras fn, args) for each replaced block."""
    heads, tokens, channels = 8, 4096, 320
    x = random((2, tokens, channels))
    split = lambda t: ops.reshape(t, (2, tokens, heads, channels // heads))  # noqa: E731
    pairs = [("attention 2x4096x320, 8 heads",
              lambda q: L.multi_head_attention(q, q, q, heads),
              lambda q: ops.reshape(
                  ops.dot_product_attention(split(q), split(q), split(q),
                                            scale=(channels // heads) ** -0.5),
                  (2, tokens, channels)),
              (x,))]
    gate = random((2, tokens, 4 * channels), seed=1)
    pairs.append(("GELU 2x4096x1280", L.gelu, lambda g: ops.gelu(g, approximate=False), (gate,)))
    for shape in ((1, 512, 512, 128), (2, 64, 64, 320)):
        ours = L.group_norm(32, 1e-6, dtype="bfloat16")
        theirs = keras.layers.GroupNormalization(groups=32, epsilon=1e-6, dtype="bfloat16")
        ours.build(shape)
        theirs.build(shape)
        pairs.append((f"GroupNorm {'x'.join(map(str, shape))}", ours, theirs,
                      (random(shape, seed=2),)))
    return pairs


def unet_step_seconds(policies, repeats):
    """Median UNet step per policy, calls interleaved (a, b, a, b, ...) so that drift in the
    machine's speed during the run hits both alike."""
    import tensorflow as tf

    steps = []
    for policy in policies:
        with L.fast_init():
            unet = UNet(UNetConfig(), dtype=policy).build_weights()
        dtype = unet.compute_dtype
        args = (random((2, 32, 32, 4), dtype), ops.convert_to_tensor([500.0, 500.0]),
                random((2, 77, 768), dtype))
        step = tf.function(unet, jit_compile=False)
        for _ in range(2):
            keras.ops.convert_to_numpy(step(*args))
        steps.append((step, args))
    times = [[] for _ in policies]
    for _ in range(repeats):
        for (step, args), record in zip(steps, times, strict=True):
            start = time.perf_counter()
            keras.ops.convert_to_numpy(step(*args))
            record.append(time.perf_counter() - start)
    return [statistics.median(record) for record in times]


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-unet", action="store_true")
    args = parser.parse_args()
    import tensorflow as tf

    tf.config.threading.set_inter_op_parallelism_threads(1)
    rows = []
    for name, ours, theirs, inputs in block_pairs():
        rows.append((name, "Keras built-in", timed(theirs, inputs, args.repeats), "sdlib",
                     timed(ours, inputs, args.repeats)))
        print(f"{name}: done", flush=True)
    if not args.no_unet:
        mixed_s, half_s = unet_step_seconds(["mixed_bfloat16", "bfloat16"], 2 * args.repeats)
        rows.append(("SD v1.5 UNet, batch 2, 256x256", "mixed_bfloat16 (float32 weights)", mixed_s,
                     "bfloat16 weights", half_s))
    print(f"\nTensorFlow {tf.__version__}, Keras {keras.__version__}, graph mode, bfloat16, "
          f"{os.cpu_count()} cores\n")
    print("| block | before | before ms | after | after ms | speed-up |")
    print("|---|---|---:|---|---:|---:|")
    for name, before, before_s, after, after_s in rows:
        print(f"| {name} | {before} | {1000 * before_s:.1f} | {after} | {1000 * after_s:.1f} | "
              f"{before_s / after_s:.2f}x |")


if __name__ == "__main__":
    main()
