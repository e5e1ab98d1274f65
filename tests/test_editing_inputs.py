"""image_to_image and inpaint on the tiny preset: what they accept, what they refuse (and say), how
inputs broadcast, and that one compiled step serves every task without a retrace."""

import dataclasses

import numpy as np
import pytest
from PIL import Image

import sdlib
from sdlib import presets
from sdlib.loading.build import random_components

PROMPT = "a small red circle in the top left on a black background"


@pytest.fixture(scope="module")
def pipe():
    return sdlib.StableDiffusion.from_preset("tiny", img_height=64, img_width=48)


@pytest.fixture(scope="module")
def image(pipe):
    return pipe.text_to_image(PROMPT, num_steps=2, seed=0, verbose=False)[0]  # (64, 48, 3)


def box_mask(value=255):
    mask = np.zeros((64, 48), np.uint8)
    mask[8:40, 16:40] = value
    return mask


def test_one_compiled_step_serves_every_task_and_nothing_retraces(pipe, image):
    pipe.text_to_image(PROMPT, batch_size=2, num_steps=2, seed=0, verbose=False)
    text_only = dict(pipe.trace_counts)
    pipe.image_to_image(PROMPT, image, batch_size=2, num_steps=4, seed=0, verbose=False)
    pipe.inpaint(PROMPT, image, box_mask(), batch_size=2, num_steps=4, seed=0, verbose=False)
    before = dict(pipe.trace_counts)
    assert before["step"] == text_only["step"]  # the text-to-image step, reused
    for seed, strength, guidance, steps in [(1, 0.3, 7.5, 5), (2, 0.9, 1.0, 7), (3, 1.0, 3.0, 3)]:
        other_mask = box_mask()[::-1].copy()
        pipe.image_to_image("a blue square", image, strength=strength, batch_size=2,
                            num_steps=steps, guidance_scale=guidance, seed=seed, verbose=False)
        pipe.inpaint("a green triangle", image, other_mask, strength=strength, batch_size=2,
                     num_steps=steps, guidance_scale=guidance, seed=seed, verbose=False)
        pipe.text_to_image("x", batch_size=2, num_steps=steps, guidance_scale=guidance, seed=seed,
                           verbose=False)
    assert pipe.trace_counts == before


def test_the_seed_draws_the_noise_as_text_to_image_does(pipe, image):
    noise = np.random.default_rng(5).standard_normal((1, 8, 6, 4), dtype=np.float32)
    by_seed = pipe.image_to_image(PROMPT, image, strength=0.7, num_steps=4, seed=5, verbose=False)
    by_noise = pipe.image_to_image(PROMPT, image, strength=0.7, num_steps=4, seed=99,
                                   diffusion_noise=noise, verbose=False)
    np.testing.assert_array_equal(by_seed, by_noise)


def test_strength_decides_how_far_the_image_moves():
    mini = sdlib.StableDiffusion.from_preset("mini-shapes")
    image = mini.text_to_image("a large red square in the center on a white background",
                               num_steps=25, seed=0, verbose=False)[0]
    changes = [np.abs(mini.image_to_image("a large blue square in the center on a white "
                                          "background", image, strength=strength, num_steps=25,
                                          seed=0, verbose=False)[0].astype(int) - image).mean()
               for strength in (0.1, 0.5, 1.0)]
    assert changes[0] < changes[1] < changes[2]  # 7.8, 33.6, 39.6 of 255 when written


def test_inputs_broadcast_over_the_batch_like_prompts(pipe, image):
    three = pipe.image_to_image(PROMPT, image, batch_size=3, num_steps=2, seed=0, verbose=False)
    assert three.shape == (3, 64, 48, 3)
    two = pipe.inpaint(["one", "two"], image, box_mask(), num_steps=2, seed=0, verbose=False)
    assert two.shape == (2, 64, 48, 3)
    stacked = pipe.inpaint(PROMPT, np.stack([image, image[::-1]]),
                           np.stack([box_mask(), box_mask()[::-1]]), num_steps=2, seed=0,
                           verbose=False)
    assert stacked.shape == (2, 64, 48, 3)


def test_pil_images_and_every_mask_type_mean_the_same(pipe, image):
    def run(picture, mask):
        return pipe.inpaint(PROMPT, picture, mask, num_steps=3, seed=4, verbose=False)

    reference = run(image, box_mask())
    for mask in (box_mask() > 0, box_mask().astype(np.float32) / 255.0, box_mask()[None, ..., None],
                 Image.fromarray(box_mask(), "L"), box_mask(200)):  # 200 >= 128: repaint
        np.testing.assert_array_equal(run(image, mask), reference)
    np.testing.assert_array_equal(run(Image.fromarray(image), box_mask()), reference)


def test_paste_original_keeps_the_unmasked_pixels_exactly(pipe, image):
    pasted = pipe.inpaint(PROMPT, image, box_mask(), num_steps=3, seed=1, verbose=False,
                          paste_original=True)[0]
    kept = box_mask() == 0
    np.testing.assert_array_equal(pasted[kept], image[kept])
    plain = pipe.inpaint(PROMPT, image, box_mask(), num_steps=3, seed=1, verbose=False)[0]
    assert not np.array_equal(plain[kept], image[kept])  # the VAE round trip changes them


def test_the_compiled_loop_edits_like_the_stepped_loop(image):
    looped = sdlib.StableDiffusion.from_preset("tiny", img_height=64, img_width=48,
                                               compile_loop=True)
    stepped = sdlib.StableDiffusion.from_preset("tiny", img_height=64, img_width=48)
    for sampler in ("ddim", "euler"):
        a = looped.inpaint(PROMPT, image, box_mask(), strength=0.8, num_steps=5, seed=2,
                           sampler=sampler, verbose=False)
        b = stepped.inpaint(PROMPT, image, box_mask(), strength=0.8, num_steps=5, seed=2,
                            sampler=sampler, verbose=False)
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    assert looped.trace_counts["step"] == 0


def test_an_inpainting_unet_needs_inpaint():
    configs = presets.tiny_configs()
    configs["unet"] = dataclasses.replace(configs["unet"], in_channels=9)
    pipe = sdlib.StableDiffusion(random_components(configs), 64, 48, jit_compile=False)
    image = np.zeros((64, 48, 3), np.uint8)
    with pytest.raises(ValueError, match="inpainting UNet.*use inpaint"):
        pipe.image_to_image(PROMPT, image, num_steps=2, verbose=False)
    repainted = pipe.inpaint(PROMPT, image, box_mask(), num_steps=2, seed=0, verbose=False)
    assert repainted.shape == (1, 64, 48, 3)


@pytest.mark.parametrize("kwargs, error, fragment", [
    ({"strength": 1.5}, ValueError, r"strength must lie in \[0, 1\]"),
    ({"strength": float("nan")}, ValueError, r"strength must lie in \[0, 1\]"),
    ({"strength": "0.5"}, TypeError, "strength must be a number"),
    ({"strength": 0.05, "num_steps": 10}, ValueError, r"runs no denoising step.*at least 0.1"),
    ({"image": np.zeros((32, 32, 3), np.uint8)}, ValueError,
     r"image is 32x32 .* makes 48x64 images.*resize\(\(48, 64\)\)"),
    ({"image": np.zeros((64, 48), np.uint8)}, ValueError, "grayscale.*np.repeat"),
    ({"image": np.zeros((64, 48, 4), np.uint8)}, ValueError, r"RGBA.*image\[\.\.\., :3\]"),
    ({"image": np.zeros((64, 48, 3), np.float32)}, TypeError, r"uint8.*\(image \* 255\)"),
    ({"image": np.zeros((3, 64, 48), np.uint8)}, ValueError, "channels-first"),
    ({"mask": np.zeros((32, 48), np.uint8)}, ValueError, "mask is 48x32 .* image is 48x64"),
    ({"mask": np.full((64, 48), 2.0)}, ValueError, r"float mask must lie in \[0, 1\]"),
    ({"mask": np.zeros((64, 48), np.int64)}, TypeError, "mask must be uint8"),
    ({"prompt": ["a", "b"], "batch_size": 3}, ValueError, "batch sizes conflict.*2 prompts.*3"),
    ({"mask": np.full((3, 64, 48), 255, np.uint8), "image": np.zeros((2, 64, 48, 3), np.uint8)},
     ValueError, "batch sizes conflict.*2 images.*3 masks"),
    ({"sampler": "plms"}, ValueError, "Unknown sampler"),
])
def test_bad_input_is_named(pipe, image, kwargs, error, fragment):
    arguments = {"prompt": PROMPT, "image": image, "mask": np.full((64, 48), 255, np.uint8),
                 "num_steps": 4, "verbose": False, **kwargs}
    with pytest.raises(error, match=fragment):
        pipe.inpaint(**arguments)


def test_an_all_black_mask_warns(pipe, image):
    with pytest.warns(UserWarning, match="black everywhere: nothing to repaint"):
        pipe.inpaint(PROMPT, image, np.zeros((64, 48), np.uint8), num_steps=2, verbose=False)
