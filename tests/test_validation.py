"""Bad input at the public surface gets a clear error: its type and what it says."""

import numpy as np
import pytest

import sdlib


@pytest.fixture(scope="module")
def pipe():
    return sdlib.StableDiffusion.from_preset("tiny", img_height=64, img_width=64, jit_compile=False)


@pytest.mark.parametrize("prompt, error, fragment", [
    (None, TypeError, "string or a list of strings"),
    (42, TypeError, "got a int"),
    ([], ValueError, "empty list"),
    (["ok", 3], TypeError, "prompt[1] is a int"),
    (b"bytes", TypeError, "got a bytes"),
])
def test_bad_prompts(pipe, prompt, error, fragment):
    with pytest.raises(error, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        pipe.text_to_image(prompt, num_steps=1, verbose=False)


@pytest.mark.parametrize("kwargs, error, fragment", [
    ({"batch_size": 0}, ValueError, "positive int"),
    ({"batch_size": 2.0}, TypeError, "batch_size must be an int"),
    ({"batch_size": True}, TypeError, "batch_size must be an int"),
    ({"num_steps": 0}, ValueError, "between 1 and 1000"),
    ({"num_steps": 1001}, ValueError, "between 1 and 1000"),
    ({"num_steps": "50"}, TypeError, "num_steps must be an int"),
    ({"guidance_scale": float("nan")}, ValueError, "finite"),
    ({"guidance_scale": float("inf")}, ValueError, "finite"),
    ({"guidance_scale": -1.0}, ValueError, ">= 0"),
    ({"guidance_scale": "7.5"}, TypeError, "must be a number"),
    ({"seed": 1.5}, TypeError, "seed must be an int"),
    ({"seed": -3}, ValueError, "non-negative"),
    ({"negative_prompt": 5}, TypeError, "negative_prompt"),
    ({"negative_prompt": ["a", "b", "c"]}, ValueError, "3 entries for 1 images"),
])
def test_bad_generation_arguments(pipe, kwargs, error, fragment):
    with pytest.raises(error, match=fragment):
        pipe.text_to_image("a prompt", verbose=False, **{"num_steps": 1, **kwargs})


def test_batch_size_conflicting_with_a_list_of_prompts(pipe):
    with pytest.raises(ValueError, match="conflicts with the 2 prompts"):
        pipe.text_to_image(["a", "b"], batch_size=3, num_steps=1, verbose=False)


@pytest.mark.parametrize("noise, error, fragment", [
    (np.zeros((1, 8, 8, 3), np.float32), ValueError, r"expected \(1, 8, 8, 4\)"),
    (np.zeros((1, 4, 8, 8), np.float32), ValueError, "channels-first"),
    (np.zeros((1, 8, 8, 4), np.int32), TypeError, "float array"),
    (np.full((1, 8, 8, 4), np.nan, np.float32), ValueError, "NaN or inf"),
    (np.zeros((2, 8, 8, 4), np.float32), ValueError, "expected"),
])
def test_bad_diffusion_noise(pipe, noise, error, fragment):
    with pytest.raises(error, match=fragment):
        pipe.text_to_image("a", num_steps=1, diffusion_noise=noise, verbose=False)


@pytest.mark.parametrize("context, error, fragment", [
    (np.zeros((1, 10, 32), np.float32), ValueError, r"expected \(batch, 77, 32\)"),
    ("text", TypeError, "float array"),
    (np.full((1, 77, 32), np.inf, np.float32), ValueError, "NaN or inf"),
])
def test_bad_context(pipe, context, error, fragment):
    with pytest.raises(error, match=fragment):
        pipe.generate_image(context, num_steps=1, verbose=False)


@pytest.mark.parametrize("height, width, fragment", [
    (60, 64, "img_height=60 is not a positive multiple of 8.*56 or 64"),
    (64, 0, "img_width=0 .*nearest valid size is 8"),
    (64, -16, "img_width=-16"),
])
def test_image_sizes_must_be_multiples_of_the_vae_factor(height, width, fragment):
    with pytest.raises(ValueError, match=fragment):
        sdlib.StableDiffusion.from_preset("tiny", img_height=height, img_width=width)


def test_image_size_must_be_an_int():
    with pytest.raises(TypeError, match="img_height must be an int"):
        sdlib.StableDiffusion.from_preset("tiny", img_height=64.0)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError, match="Unknown preset 'sd-xl'.*mini-shapes.*tiny"):
        sdlib.StableDiffusion.from_preset("sd-xl")


def test_long_prompt_is_truncated_with_a_warning_not_an_error(pipe):
    with pytest.warns(UserWarning, match="tokens"):
        images = pipe.text_to_image("word " * 100, num_steps=1, verbose=False)
    assert images.shape == (1, 64, 64, 3)


def test_nan_image_is_reported_not_returned_black(pipe):
    latents = np.full((1, 8, 8, 4), np.nan, np.float32)
    with pytest.raises(FloatingPointError, match="NaN or inf"):
        pipe.decode_latents(latents)
