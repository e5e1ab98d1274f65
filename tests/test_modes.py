"""sdlib's defaults, jit_compile="auto" and dtype="auto": the mode measured fastest for the model on
the device (``sdlib.bench.fastest_mode``)."""

import keras
import pytest

import sdlib
from sdlib import bench, checkpoint, presets


def test_miniature_models_get_xla_in_float32_on_a_cpu():
    assert bench.fastest_mode(presets.mini_shapes_configs()["unet"]) == "XLA"
    pipe = sdlib.StableDiffusion.from_preset("tiny")
    assert pipe.jit_compile is True
    assert pipe.unet.dtype_policy.name == "float32"
    assert pipe.vae.dtype_policy.name == "float32"


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="measured with TensorFlow")
def test_sd15_gets_16_bit_weights_without_xla_on_a_cpu():
    configs = presets.sd15_configs()
    assert bench.fastest_mode(configs["unet"]) == "Mixed precision"
    models = checkpoint.build_models(configs, dtype="auto", with_weights=[])  # no weights: fast
    assert models["unet"].dtype_policy.name == bench.inference_policy() == "bfloat16"
    assert bench.MODES[bench.fastest_mode(configs["unet"])]["jit_compile"] is False


def test_a_gpu_gets_xla_with_16_bit_weights(monkeypatch):
    monkeypatch.setattr(bench, "gpu_visible", lambda: True)
    for configs in (presets.sd15_configs(), presets.tiny_configs()):
        assert bench.fastest_mode(configs["unet"]) == "XLA + mixed precision"


def test_explicit_modes_are_kept():
    pipe = sdlib.StableDiffusion.from_preset("tiny", jit_compile=False, dtype="bfloat16")
    assert pipe.jit_compile is False
    assert pipe.unet.dtype_policy.name == "bfloat16"


@pytest.mark.parametrize("jit_compile", ["yes", None, "xla"])
def test_jit_compile_must_be_true_false_or_auto(jit_compile):
    with pytest.raises(ValueError, match='True \\(XLA\\), False, or "auto"'):
        sdlib.StableDiffusion.from_preset("tiny", jit_compile=jit_compile)
