"""Image-to-image and inpainting against diffusers, number for number, on the tiny fixtures.

``tools/make_editing_fixtures.py`` ran diffusers' ``StableDiffusionImg2ImgPipeline`` and
``StableDiffusionInpaintPipeline`` (4-channel tiny-sd, blending; 9-channel tiny-sd-inpaint) with
the DDIM, Euler and DPM-Solver++ samplers, posterior-mean encodings and stored noise; sdlib gets
the same images, masks and noise (``diffusion_noise``). Tolerances as in test_parity.py.
"""

import json

import keras
import numpy as np
import pytest
from conftest import PARITY_LINES

import sdlib
from sdlib import loading

PIPELINE_TOLERANCE = 1e-3
FORWARD_TOLERANCE = 1e-4


def nhwc(array):
    return np.transpose(array, (0, 2, 3, 1))


@pytest.fixture(scope="module")
def golden(fixtures_dir):
    return np.load(fixtures_dir / "editing_golden.npz")


@pytest.fixture(scope="module")
def info(fixtures_dir):
    return json.loads((fixtures_dir / "editing_golden.json").read_text())


@pytest.fixture(scope="module")
def pipes(fixtures_dir):
    def load(name):
        return sdlib.StableDiffusion.from_pretrained(str(fixtures_dir / name), img_height=32,
                                                     img_width=48, jit_compile=False)

    return {"img2img": load("tiny-sd"), "inpaint4": None, "inpaint9": load("tiny-sd-inpaint")}


def record(name, error, tolerance):
    line = (f"[{keras.backend.backend()}] {name}: max abs error {error:.1e} "
            f"(tolerance {tolerance:.0e})")
    print(line)
    PARITY_LINES.append(line)


def run_case(pipes, golden, info, key):
    group = key.split("_", 1)[0]
    spec = info["cases"][key]
    pipe = pipes["inpaint9" if group == "inpaint9" else "img2img"]  # 4-channel: tiny-sd
    batch = spec["batch"]
    prompt = info["prompts"][:batch] if batch > 1 else info["prompts"][0]
    seen = []
    kwargs = dict(strength=spec["strength"], num_steps=info["num_steps"],
                  guidance_scale=spec["guidance_scale"], sampler=spec["sampler"],
                  diffusion_noise=nhwc(golden[f"{key}_noise"]), callback=seen.append,
                  verbose=False)
    images = golden["images"][:batch]
    if group == "img2img":
        result = pipe.image_to_image(prompt, images, **kwargs)
    else:
        result = pipe.inpaint(prompt, images, golden[f"masks_{spec['mask']}"][:batch], **kwargs)
    assert len(seen) == spec["steps_run"]
    return pipe, result, seen[-1]["latents"]


CASES = [f"img2img_{case}" for case in ("ddim_s03", "ddim_s075", "ddim_s1", "euler_s06",
                                        "euler_s1", "dpmpp_2m_s05", "dpmpp_2m_s1",
                                        "ddim_s06_batch2_g1")]
CASES += [f"inpaint4_{case}" for case in ("ddim_s1", "euler_s1", "dpmpp_2m_s1", "ddim_s06",
                                          "euler_s05_soft", "dpmpp_2m_s08_batch2")]
CASES += [f"inpaint9_{case}" for case in ("ddim_s1", "euler_s07", "dpmpp_2m_s1_soft",
                                          "ddim_s1_batch2_g1")]


@pytest.mark.parametrize("key", CASES)
def test_editing_matches_diffusers(key, pipes, golden, info):
    pipe, result, latents = run_case(pipes, golden, info, key)
    expected_latents = nhwc(golden[f"{key}_latents"])
    scale = max(1.0, float(np.abs(expected_latents).max()))  # Euler's latents run large
    error = float(np.abs(latents - expected_latents).max()) / scale
    assert error <= PIPELINE_TOLERANCE, f"{key} latents: {error:.2e}"
    float_images = keras.ops.convert_to_numpy(pipe._decode_fn(keras.ops.convert_to_tensor(latents)))
    image_error = float(np.abs(float_images - golden[f"{key}_images"]).max())
    assert image_error <= PIPELINE_TOLERANCE, f"{key} images: {image_error:.2e}"
    expected_uint8 = np.round(golden[f"{key}_images"] * 255).astype(int)
    assert np.abs(result.astype(int) - expected_uint8).max() <= 1
    record(f"{key} final latents (relative)", error, PIPELINE_TOLERANCE)
    record(f"{key} images", image_error, PIPELINE_TOLERANCE)


def test_encode_image_is_diffusers_posterior_mean(pipes, golden):
    latents = pipes["img2img"].encode_image(golden["images"])
    error = float(np.abs(latents - nhwc(golden["image_latents"])).max())
    assert error <= FORWARD_TOLERANCE
    record("encode_image (posterior mean x scaling_factor)", error, FORWARD_TOLERANCE)


def test_the_inpainting_single_file_loads_the_folder_weights(pipes, fixtures_dir):
    single = loading.open_checkpoint(str(fixtures_dir / "tiny-sd-inpaint.fp16.safetensors"),
                                     config_path=str(fixtures_dir / "tiny-sd-inpaint")).load()
    assert single.unet.config.in_channels == 9
    folder = pipes["inpaint9"].components
    for component in ("text_encoder", "unet", "vae"):
        for full, rounded in zip(folder.models[component].weights,
                                 single.models[component].weights, strict=True):
            np.testing.assert_allclose(keras.ops.convert_to_numpy(rounded),
                                       keras.ops.convert_to_numpy(full), rtol=2.0**-10,
                                       atol=1e-6, err_msg=full.path)
