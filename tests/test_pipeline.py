"""The pipeline on the tiny preset: shapes, determinism, batching, callbacks, compilation."""

import dataclasses

import keras
import numpy as np
import pytest

import sdlib
from sdlib import presets
from sdlib.loading.build import random_components


@pytest.fixture(scope="module")
def pipe():
    return sdlib.StableDiffusion.from_preset("tiny", img_height=64, img_width=48)


def test_text_to_image_returns_uint8_batch(pipe):
    images = pipe.text_to_image("a prompt", batch_size=3, num_steps=3, seed=0, verbose=False)
    assert images.shape == (3, 64, 48, 3)
    assert images.dtype == np.uint8


def test_same_seed_same_image_other_seed_other_image(pipe):
    first = pipe.text_to_image("a red circle", num_steps=3, seed=7, verbose=False)
    again = pipe.text_to_image("a red circle", num_steps=3, seed=7, verbose=False)
    other = pipe.text_to_image("a red circle", num_steps=3, seed=8, verbose=False)
    np.testing.assert_array_equal(first, again)
    assert np.abs(first.astype(int) - other.astype(int)).mean() > 1.0


def test_diffusion_noise_replaces_the_seed(pipe):
    noise = np.random.default_rng(3).standard_normal((2, 8, 6, 4)).astype(np.float32)
    a = pipe.text_to_image("x", batch_size=2, num_steps=2, seed=1, diffusion_noise=noise,
                           verbose=False)
    b = pipe.text_to_image("x", batch_size=2, num_steps=2, seed=2, diffusion_noise=noise,
                           verbose=False)
    np.testing.assert_array_equal(a, b)


def test_list_of_prompts_gives_one_image_each(pipe):
    images = pipe.text_to_image(["one", "two"], num_steps=2, seed=0, verbose=False)
    assert images.shape[0] == 2


def test_text_to_image_is_encode_text_then_generate_image(pipe):
    direct = pipe.text_to_image("a blue square", num_steps=3, seed=5, verbose=False)
    context = pipe.encode_text("a blue square")
    assert context.shape == (1, 77, 32)
    reused = pipe.generate_image(context, num_steps=3, seed=5, verbose=False)
    np.testing.assert_array_equal(direct, reused)


def test_callback_sees_every_step(pipe):
    seen = []
    pipe.text_to_image("a", num_steps=4, seed=0, verbose=False, callback=seen.append)
    assert [event["step"] for event in seen] == [0, 1, 2, 3]
    assert [event["timestep"] for event in seen] == list(pipe.scheduler.timesteps(4))
    assert seen[-1]["latents"].shape == (1, 8, 6, 4)
    assert seen[-1]["denoised"].shape == (1, 8, 6, 4)


def test_progress_bar_prints_per_step_and_can_be_turned_off(pipe, capsys):
    pipe.text_to_image("a", num_steps=3, seed=0, verbose=True)
    assert "3/3" in capsys.readouterr().out
    pipe.text_to_image("a", num_steps=3, seed=0, verbose=False)
    assert capsys.readouterr().out == ""


def test_compiled_step_is_traced_once_across_prompt_seed_guidance_and_steps(pipe):
    pipe.text_to_image("warm up", batch_size=2, num_steps=2, seed=0, verbose=False)
    before = dict(pipe.trace_counts)
    for prompt, seed, guidance, steps in [("a", 1, 7.5, 3), ("b c d", 2, 1.0, 5),
                                          ("", 3, 12.0, 2), ("a long prompt " * 3, 4, 0.5, 4)]:
        pipe.text_to_image(prompt, batch_size=2, num_steps=steps, seed=seed,
                           guidance_scale=guidance, verbose=False)
    assert pipe.trace_counts == before


def test_guidance_scale_changes_the_image(pipe):
    a = pipe.text_to_image("a", num_steps=3, seed=0, guidance_scale=7.5, verbose=False)
    b = pipe.text_to_image("a", num_steps=3, seed=0, guidance_scale=1.0, verbose=False)
    assert not np.array_equal(a, b)


def test_compiled_loop_matches_the_stepped_loop_and_is_traced_once():
    looped = sdlib.StableDiffusion.from_preset("tiny", img_height=64, img_width=48,
                                               compile_loop=True)
    stepped = sdlib.StableDiffusion.from_preset("tiny", img_height=64, img_width=48)
    for steps, guidance, seed in [(3, 7.5, 0), (5, 1.0, 1), (2, 3.0, 2)]:
        a = looped.text_to_image("a", batch_size=2, num_steps=steps, guidance_scale=guidance,
                                 seed=seed, verbose=False)
        b = stepped.text_to_image("a", batch_size=2, num_steps=steps, guidance_scale=guidance,
                                  seed=seed, verbose=False)
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    assert looped.trace_counts["loop"] == 1
    assert looped.trace_counts["step"] == 0


def test_an_inpainting_unet_has_nine_input_channels_and_four_channel_latents():
    configs = presets.tiny_configs()
    # sd-v1-5-inpainting style
    configs["unet"] = dataclasses.replace(configs["unet"], in_channels=9)
    pipe = sdlib.StableDiffusion(random_components(configs), 64, 48, jit_compile=False)
    assert pipe.latent_shape == (8, 6, 4)  # from the VAE, not from unet.config.in_channels
    assert pipe.unet.config.out_channels == 4
    with pytest.raises(ValueError, match="takes 9 input channels.*inpainting UNet"):
        pipe.text_to_image("a", num_steps=1, verbose=False)


def test_the_pipeline_is_built_from_components(pipe):
    assert isinstance(pipe.components, sdlib.Components)
    assert pipe.components.unet is pipe.unet and pipe.tokenizer is pipe.components.tokenizer
    with pytest.raises(TypeError, match="takes a sdlib.Components"):
        sdlib.StableDiffusion(pipe.text_encoder, 64, 48)


@pytest.mark.parametrize("sampler", ["ddim", "euler"])
def test_denoising_from_a_start_step_continues_the_full_run(pipe, sampler):
    """A run started at step k from the latent a full run had after step k - 1 ends where the full
    run ends: what image-to-image needs (it starts later from a noised image)."""
    contexts = pipe._paired_contexts(pipe.encode_text("a red circle"), None, None, 1)  # (2, 77, D)
    seen = []
    chosen = pipe._samplers[sampler]
    full_plan = chosen.plan(6)
    start = pipe._initial_latents(1, 0, None) * np.float32(full_plan.init_noise_sigma)
    full = pipe.denoise(start, contexts, full_plan, 7.5, callback=seen.append, verbose=False)
    before = dict(pipe.trace_counts)
    for start_step in (1, 3, 5):
        resumed = pipe.denoise(seen[start_step - 1]["latents"], contexts,
                               chosen.plan(6, start_step=start_step), 7.5, verbose=False)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(resumed),
                                   keras.ops.convert_to_numpy(full), rtol=1e-5, atol=1e-5)
    assert pipe.trace_counts == before  # another start step reuses the compiled step


@pytest.mark.parametrize("sampler", ["ddim", "lcm"])  # LCM also injects noise between steps
def test_per_image_seeds_do_not_depend_on_the_batch(pipe, sampler):
    """Image i with seed s is the same alone, in a batch of four, and in another position."""
    prompts = ["a red circle", "a blue square", "a green triangle", "a cat"]
    seeds = [11, 5, 11, 902]
    kwargs = dict(num_steps=3, verbose=False, sampler=sampler)
    batch = pipe.text_to_image(prompts, seed=seeds, **kwargs)
    alone = [pipe.text_to_image(prompt, seed=[seed], **kwargs)[0]
             for prompt, seed in zip(prompts, seeds, strict=True)]
    order = [3, 1, 0, 2]
    shuffled = pipe.text_to_image([prompts[i] for i in order], seed=[seeds[i] for i in order],
                                  **kwargs)
    for i in range(4):
        np.testing.assert_allclose(batch[i].astype(int), alone[i].astype(int), atol=1)
        np.testing.assert_allclose(shuffled[order.index(i)].astype(int), batch[i].astype(int),
                                   atol=1)
    assert not np.array_equal(batch[1], batch[3])  # different seeds, different noise
    # one int keeps one generator for the whole batch, as before
    rng = np.random.default_rng(11)
    np.testing.assert_array_equal(
        pipe.text_to_image(prompts[:2], seed=11, num_steps=3, verbose=False),
        pipe.text_to_image(prompts[:2], num_steps=3, verbose=False,
                           diffusion_noise=rng.standard_normal((2, *pipe.latent_shape),
                                                               dtype=np.float32)))


@pytest.mark.parametrize("seed, message", [([1, 2], "2 seeds for a batch of 3"),
                                           ([], "empty list"), ([1, -2, 3], "non-negative"),
                                           ([1, 2.5, 3], "must be an int")])
def test_per_image_seed_errors(pipe, seed, message):
    with pytest.raises((ValueError, TypeError), match=message):
        pipe.text_to_image(["a", "b", "c"], seed=seed, num_steps=2, verbose=False)
