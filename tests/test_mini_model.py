"""The shipped mini-shapes model: small, loads offline, and follows every attribute of a prompt,
including position (which a model trained on SD's own noise schedule ignored; see presets)."""

import numpy as np
import pytest

import sdlib
from sdlib import presets
from sdlib.mini import judge, shapes
from sdlib.sampling.schedule import alphas_cumprod
from sdlib.training import diffusion


@pytest.fixture(scope="module")
def pipe():
    return sdlib.StableDiffusion.from_preset("mini-shapes")


def test_shipped_weights_are_package_data_under_15_mb():
    assert presets.MINI_SHAPES_WEIGHTS.stat().st_size < 15e6


def test_shipped_model_uses_the_zero_terminal_snr_schedule(pipe):
    config = pipe.scheduler.config
    assert config.rescale_betas_zero_snr and config.prediction_type == "v_prediction"
    assert alphas_cumprod(config)[-1] == pytest.approx(0.0, abs=1e-12)


def test_position_words_move_the_object(pipe):
    """Same seed, only the position words change: the judge must read the asked-for position."""
    prompts = [f"a large yellow square in the {position} on a black background"
               for position in shapes.ATTRIBUTES["position"]] * 2
    scores, _ = judge.measure_adherence(pipe, prompts, seed=3, num_steps=25,
                                        guidance_scale=7.5)
    assert scores["position"] >= 0.8, scores


def test_v_prediction_targets():
    """NoisedLatents' v target is sqrt(a) eps - sqrt(1 - a) x0 (Salimans & Ho 2022)."""
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal((1, 8, 8, 4)).astype(np.float32)
    latents = np.repeat(x0, 6, axis=0)  # every row the same, so each batch's x0 is known
    ids = np.zeros((6, 77), np.int32)
    alphas_bar = alphas_cumprod(presets.MINI_SHAPES_SCHEDULER)
    data = diffusion.NoisedLatents(latents, ids, ids[0], alphas_bar, batch_size=4, steps=1, seed=5,
                               caption_dropout=0.0, prediction_type="v_prediction")
    eps_data = diffusion.NoisedLatents(latents, ids, ids[0], alphas_bar, batch_size=4, steps=1,
                                       seed=5, caption_dropout=0.0)
    inputs, v = data[0]
    _, noise = eps_data[0]
    a = alphas_bar[inputs["timesteps"]][:, None, None, None]
    np.testing.assert_allclose(inputs["noisy_latents"], np.sqrt(a) * x0 + np.sqrt(1 - a) * noise,
                               atol=1e-5)
    np.testing.assert_allclose(v, np.sqrt(a) * noise - np.sqrt(1 - a) * x0, atol=1e-4)
    with pytest.raises(ValueError, match="prediction_type"):
        diffusion.NoisedLatents(latents, ids, ids[0], alphas_bar, 4, 1, 0, prediction_type="sample")
