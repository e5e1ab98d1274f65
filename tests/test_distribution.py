"""Data parallelism in one process: keras.distribution.DataParallel on JAX over 2 virtual CPUs.

The multi-device runs need XLA_FLAGS before JAX starts, so they run in a subprocess that makes the
same images on one device and on two, and reports what the compiled functions were given.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from sdlib import distribution

ROOT = Path(__file__).resolve().parents[1]

TWO_DEVICES = r'''
import json
import jax, keras, numpy as np
import sdlib

prompts = ["a red circle", "a blue square", "a green triangle", "a circle"]
run = dict(num_steps=3, seed=[11, 12, 13, 14], verbose=False)
image = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
mask = np.zeros((64, 64), np.uint8)
mask[16:48, 16:48] = 255


def images(pipe):
    """The compiled step from text (text encodings, latents) and from an image (its encoding, the
    Edit tensors); each compiled program costs seconds, so the compiled loop is left out."""
    return {"text_to_image": pipe.text_to_image(prompts, **run),
            "inpaint": pipe.inpaint(prompts, image, mask, strength=0.7, **run)}


def spy(compiled, name, seen):
    def call(*args):
        seen.setdefault(name, [describe(arg) for arg in jax.tree_util.tree_leaves(args)])
        return compiled(*args)
    return call


def describe(array):
    """(devices, the shapes of this process's shards) of an input."""
    shards = sorted({tuple(shard.data.shape) for shard in array.addressable_shards})
    return {"devices": len(array.sharding.device_set), "shape": list(array.shape),
            "shard_shapes": [list(shape) for shape in shards]}


one = sdlib.StableDiffusion.from_preset("tiny")
single = images(one)
keras.distribution.set_distribution(keras.distribution.DataParallel())
pipe = sdlib.StableDiffusion.from_preset("tiny")
seen = {}
for name, compiled in (("step", pipe._step_fns["ddim"]), ("decode", pipe._decode_fn)):
    compiled._call = spy(compiled._call, name, seen)
several = images(pipe)

errors = {}
try:
    pipe.text_to_image("a circle", batch_size=3, num_steps=1, verbose=False)
except ValueError as error:
    errors["batch_3"] = str(error)
try:
    sdlib.StableDiffusion(one.components, 64, 64)  # weights made before the distribution
except RuntimeError as error:
    errors["weights_on_one_device"] = str(error)

print(json.dumps({
    "devices": jax.device_count(),
    "max_difference": {key: int(np.abs(single[key].astype(int) - several[key]).max())
                       for key in single},
    "shapes": {key: list(several[key].shape) for key in several},
    "weights_replicated": all(v.value.sharding.is_fully_replicated and
                              len(v.value.sharding.device_set) == 2
                              for v in pipe.unet.variables),
    "inputs": seen, "errors": errors, "traces": pipe.trace_counts,
    # the compiled loop's injected noises, (R, B, h, w, C), split along B
    "noise_stack": describe(pipe._shard(keras.ops.zeros((5, 4, 8, 8, 4)), batch_axis=1)),
}))
'''


@pytest.fixture(scope="module")
def two_devices():
    environment = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3",
                   "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
                   "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", TWO_DEVICES], capture_output=True, text=True,
                          env=environment, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_two_devices_make_the_images_of_one(two_devices):
    assert two_devices["devices"] == 2
    assert two_devices["shapes"] == {"text_to_image": [4, 64, 64, 3], "inpaint": [4, 64, 64, 3]}
    differences = two_devices["max_difference"]
    assert differences["text_to_image"] <= 1 and differences["inpaint"] <= 1  # uint8 levels


def test_weights_are_replicated_and_batch_inputs_split_over_the_devices(two_devices):
    assert two_devices["weights_replicated"]
    step = two_devices["inputs"]["step"]
    # step(latents, previous_x0, context, timestep, coefficients, noise, guidance, *edit)
    latents, previous, context, noise = step[0], step[1], step[2], step[5]
    edit = step[7:]
    for tensor in (latents, previous, noise, *edit):
        assert tensor["devices"] == 2 and tensor["shard_shapes"][0][0] == 2  # 4 images: 2 each
    assert context == {"devices": 2, "shape": [8, 77, 32], "shard_shapes": [[4, 77, 32]]}
    assert two_devices["inputs"]["decode"][0]["shard_shapes"] == [[2, 8, 8, 4]]
    assert two_devices["noise_stack"] == {"devices": 2, "shape": [5, 4, 8, 8, 4],
                                          "shard_shapes": [[5, 2, 8, 8, 4]]}


def test_the_sharded_step_is_compiled_once(two_devices):
    assert two_devices["traces"]["step"] == 1  # text-to-image and inpainting: one program


def test_a_batch_that_does_not_split_and_weights_on_one_device_are_explained(two_devices):
    assert two_devices["errors"]["batch_3"].startswith(
        "batch_size=3 does not split evenly over the 2 devices of the active DataParallel: use a "
        "multiple of 2 (2 or 4)")
    assert "built before it was set" in two_devices["errors"]["weights_on_one_device"]


TENSORFLOW = r'''
import json, keras, tensorflow as tf
import sdlib

messages = {}
for name, scope in (("keras", keras.distribution.DataParallel().scope),
                    ("tf.distribute", tf.distribute.MirroredStrategy().scope)):
    with scope():
        try:
            sdlib.StableDiffusion.from_preset("tiny")
        except RuntimeError as error:
            messages[name] = str(error)
print(json.dumps(messages))
'''


def test_tensorflow_refuses_a_distribution_and_names_jax_and_ray():
    environment = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3",
                   "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", TENSORFLOW], capture_output=True, text=True,
                          env=environment, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    messages = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(messages) == {"keras", "tf.distribute"}
    for message in messages.values():
        assert "KERAS_BACKEND=jax" in message and "python -m sdlib batch" in message


def test_torch_refuses_a_distribution(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "torch")
    previous = keras.distribution.distribution()
    keras.distribution.set_distribution(object())
    try:
        with pytest.raises(RuntimeError, match="JAX backend only, not on torch.*sdlib batch"):
            distribution.pipeline_distribution([])
    finally:
        keras.distribution.set_distribution(previous)


def test_without_a_distribution_nothing_changes():
    tensor = keras.ops.ones((3, 2))
    assert distribution.batch_shards(None) == 1
    assert distribution.shard_batch(tensor, None) is tensor
    distribution.check_batch(None, 3)  # any batch
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(tensor), np.ones((3, 2)))
