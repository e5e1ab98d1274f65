"""The suite's own guards: no network, and half precision never hands back a silent black image."""

import socket

import numpy as np
import pytest

import sdlib


def test_outbound_network_is_blocked_in_tests():
    with pytest.raises(RuntimeError, match="tests run offline"):
        socket.create_connection(("198.51.100.1", 443), timeout=1)


def test_float16_keeps_the_vae_in_float32_and_still_generates():
    pipe = sdlib.StableDiffusion.from_preset("tiny", dtype="mixed_float16", jit_compile=False)
    assert pipe.unet.dtype_policy.name == "mixed_float16"
    assert pipe.vae.dtype_policy.name == "float32"
    images = pipe.text_to_image("a", num_steps=2, seed=0, verbose=False)
    assert images.dtype == np.uint8 and images.shape == (1, 64, 64, 3)


def test_overflowing_latents_are_reported_not_decoded_to_black():
    pipe = sdlib.StableDiffusion.from_preset("tiny", dtype="mixed_float16", jit_compile=False)
    latents = np.full((1, 8, 8, 4), np.inf, np.float32)
    with pytest.raises(FloatingPointError, match="overflowed"):
        pipe.decode_latents(latents)


def test_bfloat16_weights_halve_the_unet_and_still_generate():
    pipe = sdlib.StableDiffusion.from_preset("tiny", dtype="bfloat16", jit_compile=False)
    assert {variable.dtype for variable in pipe.unet.weights} == {"bfloat16"}
    assert pipe.unet.compute_dtype == "bfloat16"
    images = pipe.text_to_image("a", num_steps=2, seed=0, verbose=False)
    assert images.dtype == np.uint8 and images.shape == (1, 64, 64, 3)


def test_float16_weights_keep_the_vae_in_float32():
    pipe = sdlib.StableDiffusion.from_preset("tiny", dtype="float16", jit_compile=False)
    assert {variable.dtype for variable in pipe.unet.weights} == {"float16"}
    assert pipe.vae.dtype_policy.name == "float32"


@pytest.mark.parametrize("dtype", ["int8", "fp16", "half"])
def test_unknown_dtype_names_the_supported_ones(dtype):
    with pytest.raises(ValueError, match=f"(?s)dtype='{dtype}'.*'bfloat16'.*inference"):
        sdlib.StableDiffusion.from_preset("tiny", dtype=dtype)
