"""Euler and DPM-Solver++(2M) against diffusers' schedulers, step by step, and through the
pipeline."""

import json

import keras
import numpy as np
import pytest
from conftest import PARITY_LINES

import sdlib
from sdlib.sampling.samplers import make_sampler, run_plan
from sdlib.sampling.schedule import SchedulerConfig


@pytest.fixture(scope="module")
def config(fixtures_dir):
    raw = json.loads((fixtures_dir / "tiny-sd" / "scheduler" / "scheduler_config.json").read_text())
    return SchedulerConfig.from_diffusers(raw)


@pytest.mark.parametrize("name", ["euler", "dpmpp_2m"])
@pytest.mark.parametrize("steps", [5, 12])
def test_sampler_matches_diffusers_step_by_step(name, steps, config, golden, golden_info):
    sampler = make_sampler(name, config)
    plan = sampler.plan(steps)
    key = f"{name}_{steps}"
    np.testing.assert_allclose(plan.timesteps, golden[f"{key}_timesteps"])
    assert plan.init_noise_sigma == pytest.approx(
        golden_info["samplers"]["runs"][key]["init_noise_sigma"], rel=1e-6)
    x = golden["ddim_sample"] * plan.init_noise_sigma
    outputs = run_plan(sampler, plan, lambda scaled, t: 0.1 * scaled + t / 1000, x)
    worst = 0.0
    for index, (ours, theirs) in enumerate(zip(outputs, golden[f"{key}_prev_sample"], strict=True)):
        error = np.abs(ours - theirs).max() / max(1.0, np.abs(theirs).max())
        assert error < 1e-5, f"{key} step {index}: {error:.2e}"
        worst = max(worst, error)
    PARITY_LINES.append(f"[{keras.backend.backend()}] {name}, {steps} steps: max relative error "
                        f"{worst:.1e} (tolerance 1e-05)")


@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing"])
def test_timestep_spacings_are_valid(spacing, config):
    import dataclasses

    for name in ("euler", "dpmpp_2m"):
        plan = make_sampler(name, dataclasses.replace(config, timestep_spacing=spacing)).plan(10)
        assert len(plan.timesteps) == 10
        assert np.all(np.diff(plan.timesteps) < 0) and plan.timesteps.min() >= 0
        assert plan.timesteps.max() <= 999


def test_unknown_sampler_is_named(config):
    with pytest.raises(ValueError, match="Unknown sampler 'heun'.*ddim.*euler.*dpmpp_2m"):
        make_sampler("heun", config)


@pytest.mark.parametrize("name", ["euler", "dpmpp_2m"])
def test_pipeline_with_sampler_matches_diffusers(name, fixtures_dir, golden, golden_info):
    pipe = sdlib.StableDiffusion.from_pretrained(str(fixtures_dir / "tiny-sd"), img_height=32,
                                                 img_width=48, jit_compile=False)
    spec = golden_info["pipeline"]["cases"]["a"]
    noise = np.transpose(golden["pipe_a_noise"], (0, 2, 3, 1))
    images = pipe.text_to_image(spec["prompt"][0], num_steps=4,
                                guidance_scale=spec["guidance_scale"],
                                diffusion_noise=noise, sampler=name, verbose=False)
    expected = golden[f"pipe_{name}_images"]
    difference = np.abs(images.astype(np.float64) / 255 - expected).max()
    assert difference <= 1 / 255 + 1e-6
    PARITY_LINES.append(f"[{keras.backend.backend()}] pipeline with {name}, 4 steps: max abs error "
                        f"{difference:.1e} on [0, 1] images (tolerance 1 uint8 level)")


@pytest.mark.parametrize("name", ["ddim", "euler", "dpmpp_2m"])
@pytest.mark.parametrize("steps", [5, 12])
def test_zero_terminal_snr_v_prediction_matches_diffusers(name, steps, fixtures_dir):
    """The mini-shapes schedule (Lin et al. 2024): rescaled betas, v-prediction, trailing steps.
    Euler and DPM-Solver start from sigma 4096 (alpha_bar_T clamped to 2**-24, as
    diffusers does)."""
    info = json.loads((fixtures_dir / "zero_snr.json").read_text())
    reference = np.load(fixtures_dir / "zero_snr.npz")
    sampler = make_sampler(name, SchedulerConfig.from_diffusers(info["config"]))
    plan = sampler.plan(steps)
    key = f"{name}_{steps}"
    np.testing.assert_allclose(plan.timesteps, reference[f"{key}_timesteps"])
    assert plan.init_noise_sigma == pytest.approx(info["runs"][key]["init_noise_sigma"], rel=1e-6)
    outputs = run_plan(sampler, plan, lambda scaled, t: 0.1 * scaled + t / 1000,
                       reference["start"] * plan.init_noise_sigma)
    worst = max(np.abs(ours - theirs).max() / max(1.0, np.abs(theirs).max())
                for ours, theirs in zip(outputs, reference[f"{key}_prev_sample"], strict=True))
    assert worst < 1e-5, f"{key}: {worst:.2e}"
    PARITY_LINES.append(f"[{keras.backend.backend()}] zero-SNR v-prediction {name}, {steps} steps: "
                        f"max relative error {worst:.1e} (tolerance 1e-05)")


@pytest.mark.parametrize("name", ["ddim", "euler", "dpmpp_2m"])
def test_a_plan_from_a_start_step_is_the_tail_of_the_full_plan(name, config):
    sampler = make_sampler(name, config)
    full = sampler.plan(10)
    for start in (1, 4, 9):
        tail = sampler.plan(10, start_step=start)
        np.testing.assert_array_equal(tail.timesteps, full.timesteps[start:])
        assert tail.init_noise_sigma == full.init_noise_sigma and tail.family == full.family
        if name != "dpmpp_2m":
            np.testing.assert_array_equal(tail.coefficients, full.coefficients[start:])
            continue
        # DPM-Solver++ starts its history with the first step that runs: first order there (no
        # x0_previous term; B + C of the second-order row), the same rows after it.
        first, rest = tail.coefficients[0], tail.coefficients[1:]
        assert first[5] == 0.0
        np.testing.assert_allclose(first[4],
                                   full.coefficients[start, 4] + full.coefficients[start, 5],
                                   rtol=1e-6)
        np.testing.assert_array_equal(first[:4], full.coefficients[start, :4])
        np.testing.assert_array_equal(rest, full.coefficients[start + 1:])


@pytest.mark.parametrize("start_step", [-1, 10, 11])
def test_a_start_step_must_leave_a_step_to_run(start_step, config):
    for name in ("ddim", "euler", "dpmpp_2m"):
        with pytest.raises(ValueError, match="leaves no step to run out of 10"):
            make_sampler(name, config).plan(10, start_step=start_step)
