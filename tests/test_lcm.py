"""sampler="lcm" against diffusers' LCMScheduler: its per-step coefficients, its step on a dummy
model, and text-to-image, image-to-image and inpainting through diffusers' pipelines, all with the
noise sdlib draws from a seed (``tools/make_lcm_fixtures.py``). Also: one compiled step (and loop)
that changing seed, steps or guidance does not retrace. Tolerances as in test_parity.py."""

import dataclasses
import json

import keras
import numpy as np
import pytest
from conftest import FIXTURES, PARITY_LINES

import sdlib
from sdlib.sampling.lcm import LCMSampler
from sdlib.sampling.samplers import make_sampler
from sdlib.sampling.schedule import SchedulerConfig

PIPELINE_TOLERANCE = 1e-3
STEP_TOLERANCE = 1e-5
COEFFICIENT_TOLERANCE = 1e-6


def nhwc(array):
    return np.transpose(array, (0, 2, 3, 1))


def relative_error(actual, expected):
    """Max abs error over the values' size (epsilon x_0 estimates of the random UNet reach ~60)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    if actual.size == 0:  # a one-step run has no next step
        return 0.0
    return float(np.abs(actual - expected).max()) / max(1.0, float(np.abs(expected).max()))


def record(name, error, tolerance, kind="max relative error"):
    line = f"[{keras.backend.backend()}] lcm {name}: {kind} {error:.1e} (tolerance {tolerance:.0e})"
    print(line)
    PARITY_LINES.append(line)


@pytest.fixture(scope="module")
def golden(fixtures_dir):
    return np.load(fixtures_dir / "lcm_golden.npz")


@pytest.fixture(scope="module")
def info(fixtures_dir):
    return json.loads((fixtures_dir / "lcm_golden.json").read_text())


@pytest.fixture(scope="module")
def editing(fixtures_dir):
    return np.load(fixtures_dir / "editing_golden.npz")  # the input images and masks


@pytest.fixture(scope="module")
def tiny_config(fixtures_dir):
    return json.loads((fixtures_dir / "tiny-sd" / "scheduler" / "scheduler_config.json")
                      .read_text())


def sampler_for(resolved):
    """sdlib's LCM sampler for a config as ``LCMScheduler.from_config`` resolved it."""
    return LCMSampler(SchedulerConfig.from_diffusers(resolved),
                      original_inference_steps=resolved["original_inference_steps"],
                      timestep_scaling=resolved["timestep_scaling"])


def coefficient_cases():
    coefficients = json.loads((FIXTURES / "lcm_golden.json").read_text())["coefficients"]
    return [(name, int(steps)) for name, table in coefficients.items() for steps in table]


@pytest.mark.parametrize(("config_name", "num_steps"), coefficient_cases())
def test_per_step_coefficients_match_diffusers(config_name, num_steps, info):
    """Timesteps, c_skip, c_out and both alpha_bars of every step, as LCMScheduler.step has them."""
    expected = info["coefficients"][config_name][str(num_steps)]
    sampler = sampler_for(info["configs"][config_name]["resolved"])
    plan = sampler.plan(num_steps)
    np.testing.assert_array_equal(plan.timesteps, expected["timesteps"])
    _, p, q, c_skip, c_out, signal, noise_scale = plan.coefficients.T.astype(np.float64)
    alpha_bar = np.asarray(expected["alpha_bar"])
    worst = max(relative_error(c_skip / np.asarray(expected["c_skip"]), np.ones(num_steps)),
                relative_error(c_out, expected["c_out"]),
                relative_error(plan.noise_levels[:, 0] ** 2, alpha_bar),
                # the next step's noise level, on every step but the last (that one: denoised)
                relative_error(signal[:-1] ** 2, expected["alpha_bar_next"][:-1]),
                relative_error(noise_scale[:-1] ** 2, 1.0 - np.asarray(expected["alpha_bar_next"]
                                                                       [:-1])))
    assert (signal[-1], noise_scale[-1]) == (1.0, 0.0)
    prediction = sampler.config.prediction_type
    if prediction == "epsilon":
        worst = max(worst, relative_error(p, 1.0 / np.sqrt(alpha_bar)),
                    relative_error(q, -np.sqrt((1.0 - alpha_bar) / alpha_bar)))
    else:
        worst = max(worst, relative_error(p, np.sqrt(alpha_bar)),
                    relative_error(q, -np.sqrt(1.0 - alpha_bar)))
    assert worst <= COEFFICIENT_TOLERANCE, f"{config_name}, {num_steps} steps: {worst:.2e}"
    np.testing.assert_array_equal(plan.noise_steps, np.arange(num_steps) < num_steps - 1)
    record(f"coefficients {config_name}, {num_steps} steps", worst, COEFFICIENT_TOLERANCE)


@pytest.mark.parametrize("name", ["epsilon", "v_prediction", "sample_clipped",
                                  "epsilon_scaling_0.01"])
def test_steps_on_a_dummy_model_match_diffusers(name, info, golden, tiny_config):
    """LCMScheduler.step, step by step: prev_sample and denoised, with the same injected noise."""
    spec = info["steps"][name]
    overrides = dict(spec["overrides"])
    timestep_scaling = overrides.pop("timestep_scaling", 10.0)
    sampler = LCMSampler(SchedulerConfig.from_diffusers({**tiny_config, **overrides}),
                         timestep_scaling=timestep_scaling)
    plan = sampler.plan(spec["num_steps"])
    np.testing.assert_array_equal(plan.timesteps, spec["timesteps"])
    rng = np.random.default_rng(spec["seed"])
    shape = tuple(spec["shape_nhwc"])
    x = rng.standard_normal(shape, dtype=np.float32)
    denoised = np.zeros_like(x)
    worst = 0.0
    for index, (timestep, coefficients) in enumerate(zip(plan.timesteps, plan.coefficients,
                                                         strict=True)):
        noise = (rng.standard_normal(shape, dtype=np.float32) if plan.noise_steps[index]
                 else np.zeros(shape, np.float32))
        model_output = 0.1 * x + timestep / 1000  # the fixture's dummy model
        x, denoised = (keras.ops.convert_to_numpy(value) for value in
                       sampler.update(model_output, x, denoised, coefficients, noise))
        worst = max(worst,
                    relative_error(x, nhwc(golden[f"steps_{name}_prev_sample"][index])),
                    relative_error(denoised, nhwc(golden[f"steps_{name}_denoised"][index])))
    assert worst <= STEP_TOLERANCE, f"{name}: {worst:.2e}"
    record(f"steps {name}, {spec['num_steps']} steps", worst, STEP_TOLERANCE)


@pytest.fixture(scope="module")
def pipes(fixtures_dir, info):
    def load(name):
        return sdlib.StableDiffusion.from_pretrained(str(fixtures_dir / name), img_height=32,
                                                     img_width=48, jit_compile=False)

    tiny = load("tiny-sd")
    zero_snr = SchedulerConfig.from_diffusers(info["configs"]["zero_snr"]["resolved"])
    v_prediction = sdlib.StableDiffusion(
        dataclasses.replace(tiny.components, scheduler_config=zero_snr), 32, 48, jit_compile=False)
    return {"tiny_sd": tiny, "zero_snr": v_prediction, "inpaint9": load("tiny-sd-inpaint")}


def run_case(pipes, info, editing, key, **extra):
    """sdlib's call for a fixture case; returns the pipeline, the images and the callback events."""
    spec = info["cases"][key]
    batch = spec["batch"]
    task = spec["task"]
    pipe = pipes["inpaint9" if task == "inpaint9" else spec.get("config", "tiny_sd")]
    seen = []
    kwargs = dict(negative_prompt=spec.get("negative_prompt"), num_steps=spec["steps"],
                  guidance_scale=spec["guidance_scale"], seed=spec["seed"], sampler="lcm",
                  callback=seen.append, verbose=False)
    kwargs.update(extra)
    if "noise_seed" in spec:
        shape = (batch, *pipe.latent_shape)
        kwargs["diffusion_noise"] = np.random.default_rng(spec["noise_seed"]).standard_normal(
            shape, dtype=np.float32)
    prompt = info["prompts"][:batch] if batch > 1 else info["prompts"][0]
    if task == "text2img":
        images = pipe.text_to_image(prompt, **kwargs)
    elif task == "img2img":
        images = pipe.image_to_image(prompt, editing["images"][:batch], strength=spec["strength"],
                                     **kwargs)
    else:
        images = pipe.inpaint(prompt, editing["images"][:batch], editing["masks_box"][:batch],
                              strength=spec["strength"], **kwargs)
    return pipe, images, seen


CASES = ["t2i_1step_g1", "t2i_2steps_g1.5", "t2i_4steps_g1", "t2i_8steps_g7.5_negative",
         "t2i_4steps_batch2_g1.5", "t2i_4steps_given_noise_g1", "t2i_4steps_v_prediction_g1.5",
         "img2img_6steps_s0.5_g1.5", "inpaint4_4steps_s1_g1.5", "inpaint9_4steps_s0.75_g7.5"]


@pytest.mark.parametrize("key", CASES)
def test_pipeline_matches_diffusers(key, pipes, info, golden, editing):
    spec = info["cases"][key]
    _, images, seen = run_case(pipes, info, editing, key)
    assert [event["timestep"] for event in seen] == spec["timesteps"]
    error = relative_error(seen[-1]["latents"], nhwc(golden[f"{key}_latents"]))
    assert error <= PIPELINE_TOLERANCE, f"{key} final latents: {error:.2e}"
    if spec["task"] != "inpaint4":  # the last step returns its denoised latent (then no blend)
        np.testing.assert_array_equal(seen[-1]["latents"], seen[-1]["denoised"])
    if f"{key}_denoised" in golden:  # what the callback hands out, step by step
        for index, event in enumerate(seen):
            step_error = relative_error(event["denoised"],
                                        nhwc(golden[f"{key}_denoised"][index]))
            assert step_error <= PIPELINE_TOLERANCE, f"{key} step {index}: {step_error:.2e}"
            error = max(error, step_error)
    expected = golden[f"{key}_images"]
    assert images.shape == expected.shape
    levels = int(np.abs(images.astype(int) - expected.astype(int)).max())
    assert levels <= 1  # uint8 rounding can flip where diffusers' float lands near a half step
    record(f"{key} latents", error, PIPELINE_TOLERANCE)
    record(f"{key} images", levels, 1, kind="max uint8 levels off")


def test_the_compiled_loop_runs_lcm_like_the_stepped_loop_without_retracing(fixtures_dir, info,
                                                                            golden, editing):
    looped = sdlib.StableDiffusion.from_pretrained(str(fixtures_dir / "tiny-sd"), img_height=32,
                                                   img_width=48, jit_compile=False,
                                                   compile_loop=True)
    pipes = {"tiny_sd": looped}
    for key in ("t2i_4steps_g1", "t2i_8steps_g7.5_negative", "img2img_6steps_s0.5_g1.5"):
        # without a callback: the loop (the fixtures' final latents are the decoded images' input)
        spec = info["cases"][key]
        _, images, _ = run_case(pipes, info, editing, key, callback=None)
        levels = int(np.abs(images.astype(int) - golden[f"{key}_images"].astype(int)).max())
        assert levels <= 1, f"{key}: {levels} levels"
        assert spec["steps_run"] == len(spec["timesteps"])
    assert looped.trace_counts["loop_lcm"] == 1 and looped.trace_counts["step_lcm"] == 0
    # the same pipeline stepped (a callback turns the loop off): the same latents
    latents = looped._initial_latents(1, 3, None)
    contexts = looped._paired_contexts(looped.encode_text("a"), None, None, 1)
    plan = looped._samplers["lcm"].plan(5)
    in_loop = looped.denoise(latents, contexts, plan, 1.5, verbose=False,
                             noise_rng=np.random.default_rng(3))
    stepped = looped.denoise(latents, contexts, plan, 1.5, verbose=False, callback=lambda _: None,
                             noise_rng=np.random.default_rng(3))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(in_loop),
                               keras.ops.convert_to_numpy(stepped), rtol=1e-5, atol=1e-5)
    assert looped.trace_counts["loop_lcm"] == 1


@pytest.fixture(scope="module")
def tiny():
    return sdlib.StableDiffusion.from_preset("tiny", img_height=64, img_width=48)


def test_seed_steps_guidance_and_tasks_reuse_the_one_compiled_step(tiny):
    image = tiny.text_to_image("a", num_steps=2, seed=0, sampler="lcm", verbose=False)[0]
    mask = np.zeros((64, 48), np.uint8)
    mask[8:40, 16:40] = 255
    tiny.image_to_image("a", image, strength=0.5, num_steps=4, seed=0, sampler="lcm",
                        verbose=False)
    tiny.inpaint("a", image, mask, num_steps=2, seed=0, sampler="lcm", verbose=False)
    before = dict(tiny.trace_counts)
    assert before["step_lcm"] == 1
    for seed, steps, guidance, strength in [(1, 1, 1.0, 1.0), (2, 4, 1.5, 0.6), (3, 8, 7.5, 0.3),
                                            (None, 3, 0.0, 0.9)]:
        tiny.text_to_image("b", num_steps=steps, seed=seed, guidance_scale=guidance,
                           sampler="lcm", verbose=False)
        tiny.image_to_image("c", image, strength=strength, num_steps=steps + 3, seed=seed,
                            guidance_scale=guidance, sampler="lcm", verbose=False)
        tiny.inpaint("d", image, mask[::-1].copy(), strength=strength, num_steps=steps + 3,
                     seed=seed, guidance_scale=guidance, sampler="lcm", verbose=False)
    tiny.text_to_image("e", num_steps=2, seed=0, verbose=False)  # DDIM, after LCM: its own step
    tiny.text_to_image("e", num_steps=2, seed=0, sampler="euler", verbose=False)
    after = dict(tiny.trace_counts)
    assert {key: after[key] for key in after if key.endswith("lcm")} == \
        {key: before[key] for key in before if key.endswith("lcm")}
    assert after["step"] <= 1 and after["step_linear"] <= 1


def test_the_seed_draws_the_initial_latent_then_each_injected_noise(tiny):
    """seed=s: default_rng(s)'s first draw is the latent, the next ones the injected noises; with
    diffusion_noise, default_rng(seed) draws the injected ones, so the seed still matters."""
    contexts = tiny._paired_contexts(tiny.encode_text("a"), None, None, 1)
    rng = np.random.default_rng(5)
    first = rng.standard_normal((1, *tiny.latent_shape), dtype=np.float32)
    by_hand = tiny.denoise(first, contexts, tiny._samplers["lcm"].plan(4), 1.0, verbose=False,
                           noise_rng=rng)
    by_seed = tiny.generate_image(tiny.encode_text("a"), num_steps=4, guidance_scale=1.0, seed=5,
                                  sampler="lcm", verbose=False)
    np.testing.assert_array_equal(by_seed, tiny.decode_latents(by_hand))
    given = dict(diffusion_noise=first, num_steps=4, guidance_scale=1.0, sampler="lcm",
                 verbose=False)
    a = tiny.text_to_image("a", seed=1, **given)
    again = tiny.text_to_image("a", seed=1, **given)
    other = tiny.text_to_image("a", seed=2, **given)
    np.testing.assert_array_equal(a, again)
    assert not np.array_equal(a, other)
    # one step injects nothing: then the seed does not matter beside diffusion_noise
    one = dict(given, num_steps=1)
    np.testing.assert_array_equal(tiny.text_to_image("a", seed=1, **one),
                                  tiny.text_to_image("a", seed=2, **one))


def test_num_steps_must_lie_within_original_inference_steps(tiny, tiny_config):
    for steps in (0, 51):
        with pytest.raises(ValueError, match="between 1 and 50.*LCM.*original_inference_steps=50"):
            tiny.text_to_image("a", num_steps=steps, sampler="lcm", verbose=False)
    config = SchedulerConfig.from_diffusers(tiny_config)
    with pytest.raises(ValueError, match="sampler='lcm' takes num_steps between 1 and 40"):
        LCMSampler(config, original_inference_steps=40).plan(41)
    assert len(LCMSampler(config).plan(50).timesteps) == 50
    image = np.zeros((64, 48, 3), np.uint8)
    with pytest.raises(ValueError, match="runs no denoising step"):
        tiny.image_to_image("a", image, strength=0.2, num_steps=4, sampler="lcm", verbose=False)


def test_spacing_offset_and_alpha_to_one_do_not_change_lcm(tiny_config):
    reference = make_sampler("lcm", SchedulerConfig.from_diffusers(tiny_config)).plan(4)
    for change in (dict(timestep_spacing="trailing"), dict(steps_offset=0),
                   dict(set_alpha_to_one=True)):
        config = SchedulerConfig.from_diffusers({**tiny_config, **change})
        plan = make_sampler("lcm", config).plan(4)
        np.testing.assert_array_equal(plan.timesteps, reference.timesteps)
        np.testing.assert_array_equal(plan.coefficients, reference.coefficients)


def test_a_plan_from_a_start_step_is_the_tail_of_the_full_plan(tiny_config):
    sampler = make_sampler("lcm", SchedulerConfig.from_diffusers(tiny_config))
    full = sampler.plan(6)
    for start in (1, 3, 5):
        tail = sampler.plan(6, start_step=start)
        np.testing.assert_array_equal(tail.timesteps, full.timesteps[start:])
        np.testing.assert_array_equal(tail.coefficients, full.coefficients[start:])
        np.testing.assert_array_equal(tail.noise_levels, full.noise_levels[start:])
        np.testing.assert_array_equal(tail.noise_steps, full.noise_steps[start:])


def test_an_epsilon_model_at_zero_terminal_snr_is_refused(tiny_config):
    config = SchedulerConfig.from_diffusers({**tiny_config, "rescale_betas_zero_snr": True})
    with pytest.raises(ValueError, match="zero SNR.*v-prediction"):
        make_sampler("lcm", config).plan(4)
