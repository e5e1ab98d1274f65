"""sdlib against diffusers, number for number, on tiny random checkpoints made by diffusers itself.

The fixtures (``tests/fixtures/``, made by ``tools/make_parity_fixtures.py``) hold a
diffusers folder, the same weights as an original-layout single file (fp32 and bf16), and
golden outputs computed with torch. Only numpy is needed here. Each test prints its max abs
error (``pytest -s`` shows them).
"""


import keras
import numpy as np
import pytest
from conftest import PARITY_LINES

import sdlib
from sdlib import loading
from sdlib.sampling.ddim import DDIMScheduler
from sdlib.sampling.schedule import SchedulerConfig

FORWARD_TOLERANCE = 1e-4
PIPELINE_TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def parts(fixtures_dir):
    return loading.open_checkpoint(str(fixtures_dir / "tiny-sd")).load()


def nhwc(array):
    return np.transpose(array, (0, 2, 3, 1))


def measure(name, actual, expected, tolerance, scale=1.0):
    """Max abs error, divided by ``scale`` (the size of the values) when they run large."""
    assert actual.shape == expected.shape
    difference = np.asarray(actual, np.float64) - np.asarray(expected, np.float64)
    error = float(np.max(np.abs(difference))) / scale
    assert error <= tolerance, f"{name}: max abs error {error:.3e} > {tolerance}"
    return error


def record(name, error, tolerance, kind="max abs error"):
    line = f"[{keras.backend.backend()}] {name}: {kind} {error:.1e} (tolerance {tolerance:.0e})"
    print(line)
    PARITY_LINES.append(line)


def report(name, actual, expected, tolerance, scale=1.0):
    record(name, measure(name, actual, expected, tolerance, scale), tolerance)


def test_tokenizer_from_checkpoint_folder(parts, golden, golden_info):
    ids = parts.tokenizer(golden_info["tok_prompts"])
    np.testing.assert_array_equal(ids, golden["tok_ids"])


def test_text_encoder(parts, golden):
    hidden = parts.text_encoder(golden["text_ids"].astype("int32"))
    report("text encoder", keras.ops.convert_to_numpy(hidden), golden["text_hidden"],
           FORWARD_TOLERANCE)


def test_unet_non_square_two_timesteps(parts, golden):
    out = parts.unet(nhwc(golden["unet_sample"]), golden["unet_timesteps"].astype("int32"),
                        golden["unet_context"])
    report("unet", keras.ops.convert_to_numpy(out), nhwc(golden["unet_out"]), FORWARD_TOLERANCE)


def test_unet_odd_latent_size_matches_skips_like_diffusers(parts, golden):
    """18x22 latents: 9x11 -> 5x6 at the bottom, so upsampling must hit 9x11, not 10x12."""
    out = parts.unet(nhwc(golden["unet_odd_sample"]), golden["unet_timesteps"][:1].astype("int32"),
                        golden["unet_context"][:1])
    report("unet odd size", keras.ops.convert_to_numpy(out), nhwc(golden["unet_odd_out"]),
           FORWARD_TOLERANCE)


def test_vae_encode(parts, golden):
    mean, logvar = parts.vae.encode(nhwc(golden["vae_image"]))
    report("vae encode mean", keras.ops.convert_to_numpy(mean), nhwc(golden["vae_mean"]),
           FORWARD_TOLERANCE)
    report("vae encode logvar", keras.ops.convert_to_numpy(logvar), nhwc(golden["vae_logvar"]),
           FORWARD_TOLERANCE)


def test_vae_decode(parts, golden):
    decoded = parts.vae.decode(nhwc(golden["vae_latent"]))
    report("vae decode", keras.ops.convert_to_numpy(decoded), nhwc(golden["vae_decoded"]),
           FORWARD_TOLERANCE)


def test_scheduler_config_is_read_like_ddim_from_config(parts):
    config = parts.scheduler_config
    assert (config.steps_offset, config.set_alpha_to_one, config.clip_sample) == (1, False, False)


def test_ddim_timesteps(parts, golden):
    scheduler = DDIMScheduler(parts.scheduler_config)
    np.testing.assert_array_equal(scheduler.timesteps(50), golden["ddim_timesteps_50"])
    np.testing.assert_array_equal(scheduler.timesteps(3), golden["ddim_timesteps_3"])
    assert list(scheduler.timesteps(3)) == [667, 334, 1]


@pytest.mark.parametrize("case", ["sd", "trailing", "linspace", "alpha_one", "v_prediction",
                                  "no_clip_sample"])
def test_ddim_steps(case, golden, golden_info):
    scheduler = DDIMScheduler(SchedulerConfig.from_diffusers(
        golden_info["ddim"]["configs"][case]["given"]))
    steps = golden_info["ddim"]["num_inference_steps"]
    timesteps, alphas, alphas_prev = scheduler.step_alphas(steps)
    np.testing.assert_array_equal(timesteps, golden[f"ddim_{case}_timesteps"])
    sample = golden["ddim_sample"].astype(np.float32)
    worst = 0.0
    for index, timestep in enumerate(timesteps):
        model_output = 0.1 * sample + timestep / 1000  # the fixture's dummy model
        sample, pred_original = scheduler.step(model_output, sample, alphas[index],
                                               alphas_prev[index])
        sample = keras.ops.convert_to_numpy(sample)
        expected_sample = golden[f"ddim_{case}_prev_sample"][index]
        expected_original = golden[f"ddim_{case}_pred_original_sample"][index]
        # float32 scheduler math: relative error to the values' size (x_0 estimates reach ~40).
        worst = max(worst,
                    measure(f"ddim {case} step {index} prev_sample", sample, expected_sample, 1e-5,
                            scale=max(1.0, float(np.abs(expected_sample).max()))),
                    measure(f"ddim {case} step {index} pred_original",
                            keras.ops.convert_to_numpy(pred_original), expected_original, 1e-5,
                            scale=max(1.0, float(np.abs(expected_original).max()))))
    record(f"ddim {case}, {len(timesteps)} steps", worst, 1e-5, kind="max relative error")


@pytest.fixture(scope="module")
def pipe(fixtures_dir):
    return sdlib.StableDiffusion.from_pretrained(str(fixtures_dir / "tiny-sd"), img_height=32,
                                                 img_width=48, jit_compile=False)


@pytest.mark.parametrize("case", ["a", "b", "c"])
def test_pipeline_three_guided_steps(case, pipe, golden, golden_info):
    spec = golden_info["pipeline"]["cases"][case]
    prompt = spec["prompt"] if len(spec["prompt"]) > 1 else spec["prompt"][0]
    latents_seen = []
    images = pipe.text_to_image(
        prompt, negative_prompt=spec["negative_prompt"], num_steps=spec["num_inference_steps"],
        guidance_scale=spec["guidance_scale"], diffusion_noise=nhwc(golden[f"pipe_{case}_noise"]),
        callback=lambda event: latents_seen.append(event["latents"]), verbose=False)
    report(f"pipeline {case} final latents", latents_seen[-1], nhwc(golden[f"pipe_{case}_latents"]),
           PIPELINE_TOLERANCE)
    expected = golden[f"pipe_{case}_images_uint8"]
    assert images.dtype == np.uint8 and images.shape == expected.shape
    # uint8 rounding can flip by one where diffusers' float lands within 1e-3 of a half step.
    assert np.abs(images.astype(int) - expected.astype(int)).max() <= 1
    float_images = pipe._decode_fn(keras.ops.convert_to_tensor(latents_seen[-1]))
    report(f"pipeline {case} images", keras.ops.convert_to_numpy(float_images),
           golden[f"pipe_{case}_images"], PIPELINE_TOLERANCE)


def test_single_file_loads_the_same_weights_as_the_folder(parts, fixtures_dir):
    single = loading.open_checkpoint(str(fixtures_dir / "tiny-sd.safetensors"),
                                     config_path=str(fixtures_dir / "tiny-sd")).load()
    for component in ("text_encoder", "unet", "vae"):
        for a, b in zip(parts.models[component].weights, single.models[component].weights,
                        strict=True):
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(a),
                                          keras.ops.convert_to_numpy(b), err_msg=a.path)


@pytest.mark.parametrize("source", ["variant", "bf16_single_file"])
def test_half_precision_checkpoints_load_within_their_rounding(source, parts, fixtures_dir):
    if source == "variant":
        half = loading.open_checkpoint(str(fixtures_dir / "tiny-sd"), variant="fp16").load()
        tolerance = 2.0**-10  # fp16 keeps 10 mantissa bits
    else:
        half = loading.open_checkpoint(str(fixtures_dir / "tiny-sd-bf16.safetensors"),
                                       config_path=str(fixtures_dir / "tiny-sd")).load()
        tolerance = 2.0**-7  # bf16 keeps 7
    rounded_somewhere = False
    for component in ("text_encoder", "unet", "vae"):
        for full, rounded in zip(parts.models[component].weights, half.models[component].weights,
                                 strict=True):
            full = keras.ops.convert_to_numpy(full)
            rounded = keras.ops.convert_to_numpy(rounded)
            rounded_somewhere |= not np.array_equal(full, rounded)
            np.testing.assert_allclose(rounded, full, rtol=tolerance, atol=1e-6)
    assert rounded_somewhere, "the half-precision file was not the one loaded"


def test_tokenizer_folder_with_only_tokenizer_json(tmp_path, fixtures_dir, golden, golden_info):
    """transformers 5 saves only tokenizer.json (+ tokenizer_config.json): same ids."""
    folder = tmp_path / "tokenizer"
    folder.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_bytes((fixtures_dir / "tiny-sd" / "tokenizer" / name).read_bytes())
    tokenizer = sdlib.CLIPTokenizer.from_folder(folder)
    np.testing.assert_array_equal(tokenizer(golden_info["tok_prompts"]), golden["tok_ids"])
