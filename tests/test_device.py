"""sdlib.device: what the device is, and what the defaults jit_compile="auto" / dtype="auto" pick.

The expected modes follow from the device the suite runs on (``device.gpu_visible()`` and the Keras
backend), so the same tests hold on a CPU and on a GPU; the table's other rows are checked by
pretending to be another device.
"""

import os

import keras
import pytest

import sdlib
from sdlib import device, presets
from sdlib.loading.build import build_models

ON_GPU = device.gpu_visible()
HALF = "float16" if ON_GPU else "bfloat16"


def expected_mode(unet_config, on_gpu, backend):
    """FASTEST_MODES written out as the cases it covers."""
    if on_gpu:
        return device.Mode(True, "float16")
    if backend == "tensorflow" and max(unet_config.block_out_channels) >= 512:
        return device.Mode(False, "bfloat16")
    return device.Mode(True, "float32")


@pytest.mark.parametrize("on_gpu", [False, True])
@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
@pytest.mark.parametrize("configs", [presets.sd15_configs, presets.mini_shapes_configs,
                                     presets.tiny_configs])
def test_fastest_mode_follows_the_measured_table(monkeypatch, configs, backend, on_gpu):
    monkeypatch.setattr(device, "gpu_visible", lambda: on_gpu)
    monkeypatch.setattr(keras.backend, "backend", lambda: backend)
    unet_config = configs()["unet"]
    assert device.fastest_mode(unet_config) == expected_mode(unet_config, on_gpu, backend)


def test_every_measured_row_names_a_guide_mode_and_its_evidence():
    labels = set(device.guide_modes())
    for row in device.FASTEST_MODES:
        assert row.fastest in labels
        assert row.device in ("cpu", "gpu") and row.unet in ("sd", "any")
        assert len(row.evidence) > 40


def test_the_guides_four_modes_in_order():
    modes = device.guide_modes()
    assert list(modes) == ["Standard", "Mixed precision", "XLA", "XLA + mixed precision"]
    assert [mode.jit_compile for mode in modes.values()] == [False, False, True, True]
    assert [mode.dtype for mode in modes.values()] == ["float32", HALF, "float32", HALF]
    assert modes["XLA"].kwargs() == {"jit_compile": True, "dtype": "float32"}


@pytest.mark.parametrize("on_gpu, mixed", [(False, "mixed_bfloat16"), (True, "mixed_float16")])
def test_16_bit_policies_per_device(monkeypatch, on_gpu, mixed):
    monkeypatch.setattr(device, "gpu_visible", lambda: on_gpu)
    assert device.mixed_policy() == mixed
    assert device.inference_policy() == mixed.removeprefix("mixed_")  # weights in 16 bits too


def test_defaults_resolve_to_the_fastest_mode_here():
    expected = expected_mode(presets.tiny_configs()["unet"], ON_GPU, keras.backend.backend())
    pipe = sdlib.StableDiffusion.from_preset("tiny")
    assert pipe.jit_compile is expected.jit_compile
    assert pipe.unet.dtype_policy.name == expected.dtype
    assert pipe.vae.dtype_policy.name == ("float32" if expected.dtype == "float16"
                                          else expected.dtype)


def test_sd15_builds_in_the_resolved_dtype():
    configs = presets.sd15_configs()
    mode = device.resolve_mode("auto", "auto", configs["unet"])
    assert mode == expected_mode(configs["unet"], ON_GPU, keras.backend.backend())
    models = build_models(configs, dtype=mode.dtype, with_weights=[])  # no weights: fast
    assert models["unet"].dtype_policy.name == mode.dtype


def test_explicit_values_are_kept_and_auto_fills_the_rest():
    unet = presets.tiny_configs()["unet"]
    assert device.resolve_mode(False, "bfloat16", unet) == device.Mode(False, "bfloat16")
    assert device.resolve_mode(True, None, unet) == device.Mode(True, "float32")
    fastest = device.fastest_mode(unet)
    assert (device.resolve_mode("auto", "float16", unet)
            == device.Mode(fastest.jit_compile, "float16"))
    assert device.resolve_mode(False, "auto", unet) == device.Mode(False, fastest.dtype)
    pipe = sdlib.StableDiffusion.from_preset("tiny", jit_compile=False, dtype="bfloat16")
    assert pipe.jit_compile is False
    assert pipe.unet.dtype_policy.name == "bfloat16"


@pytest.mark.parametrize("jit_compile", ["yes", None, "xla"])
def test_jit_compile_must_be_true_false_or_auto(jit_compile):
    with pytest.raises(ValueError, match='True \\(XLA\\), False, or "auto"'):
        sdlib.StableDiffusion.from_preset("tiny", jit_compile=jit_compile)


def test_mode_labels_are_the_guides_names():
    assert device.Mode(False, "float32").label == "Standard"
    assert device.Mode(False, "mixed_bfloat16").label == "Mixed precision"
    assert device.Mode(True, "float32").label == "XLA"
    assert device.Mode(True, "float16").label == "XLA + mixed precision"


def test_describe_names_the_device_the_backend_runs_on():
    info = device.describe()
    assert info.backend == keras.backend.backend()
    assert (info.kind == "gpu") == ON_GPU
    assert info.cpu_cores == os.cpu_count()
    line = info.description()
    assert line.endswith(f"({info.backend})")
    if info.kind == "cpu":
        assert line.startswith(f"CPU: {info.cpu_model}, {info.cpu_cores} cores")
    else:
        assert line.startswith(f"{info.kind.upper()}: {info.name}")


def test_a_gpu_is_described_by_name_and_memory(monkeypatch):
    monkeypatch.setattr(device, "_accelerator", lambda backend: ("gpu", "NVIDIA H200", 139.8))
    info = device.describe()
    assert info.kind == "gpu" and device.gpu_visible()
    assert info.description() == f"GPU: NVIDIA H200, 140 GB ({keras.backend.backend()})"


@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
def test_each_backend_has_a_detector(backend):
    """Every backend's branch runs here (a CPU machine: no accelerator); a torch GPU is a GPU."""
    pytest.importorskip(backend)
    accelerator = device._accelerator(backend)
    if accelerator is None:
        return
    kind, name, _ = accelerator
    assert kind in ("gpu", "tpu") and name
