"""LoRA and textual inversion against diffusers, number for number, on the tiny fixtures.

``tools/make_adapter_fixtures.py`` loaded its LoRA files into diffusers' ``StableDiffusionPipeline``
(PEFT format with alpha != rank and rank / alpha patterns on linear, 1x1 and 3x3 conv layers of the
UNet and the text encoder; the same adapter in kohya format, float16; a second adapter without
metadata) and two embeddings (diffusers' format, one vector; A1111's, three), and stored the images,
prompt encodings and token ids. sdlib loads the same files onto the same tiny pipeline. Tolerances
as in test_parity.py.
"""

import json

import keras
import numpy as np
import pytest
from conftest import PARITY_LINES

import sdlib

PIPELINE_TOLERANCE = 1e-3
FORWARD_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def golden(fixtures_dir):
    return np.load(fixtures_dir / "adapters_golden.npz")


@pytest.fixture(scope="module")
def info(fixtures_dir):
    return json.loads((fixtures_dir / "adapters_golden.json").read_text())


def tiny_sd(fixtures_dir):
    return sdlib.StableDiffusion.from_pretrained(str(fixtures_dir / "tiny-sd"), img_height=32,
                                                 img_width=48, jit_compile=False)


def record(name, error, tolerance):
    line = (f"[{keras.backend.backend()}] {name}: max abs error {error:.1e} "
            f"(tolerance {tolerance:.0e})")
    print(line)
    PARITY_LINES.append(line)
    assert error <= tolerance, line


def check_case(pipe, golden, info, case):
    spec, arrays = info["cases"][case], info["cases"][case]["arrays"]
    embeds = pipe.encode_text(spec["prompt"])
    record(f"{case} prompt encoding", float(np.abs(embeds - golden[arrays["prompt_embeds"]]).max()),
           FORWARD_TOLERANCE)
    seen = []
    images = pipe.text_to_image(
        spec["prompt"], negative_prompt=spec["negative_prompt"],
        num_steps=spec["num_inference_steps"], guidance_scale=spec["guidance_scale"],
        diffusion_noise=np.transpose(golden[arrays["noise"]], (0, 2, 3, 1)),  # NCHW -> NHWC
        callback=seen.append, verbose=False)
    latents = keras.ops.convert_to_tensor(seen[-1]["latents"])
    float_images = keras.ops.convert_to_numpy(pipe._decode_fn(latents))
    expected = golden[arrays["images"]]
    record(f"{case} images", float(np.abs(float_images - expected).max()), PIPELINE_TOLERANCE)
    assert np.abs(images.astype(int) - np.round(expected * 255).astype(int)).max() <= 1
    return float_images


def test_lora_peft_kohya_stacked_switched_off_and_unloaded(fixtures_dir, golden, info):
    pipe = tiny_sd(fixtures_dir)
    check_case(pipe, golden, info, "base")
    traces = dict(pipe.trace_counts)
    before = [np.array(v.numpy()) for v in pipe.unet.weights + pipe.text_encoder.weights]
    pipe.load_lora_weights(str(fixtures_dir / "lora_peft_a.safetensors"), scale=0.7,
                           adapter_name="a")
    check_case(pipe, golden, info, "peft_a")
    check_case(pipe, golden, info, "peft_a_fused")  # diffusers' fused path: the same images
    pipe.load_lora_weights(str(fixtures_dir / "lora_peft_b.safetensors"), adapter_name="b")
    pipe.set_lora_scales({"a": 0.5, "b": 1.0})
    check_case(pipe, golden, info, "stacked")
    pipe.set_lora_scales({"b": 1.0})  # "a" switched off, still loaded
    check_case(pipe, golden, info, "only_b")
    pipe.unload_lora_weights()
    after = [np.array(v.numpy()) for v in pipe.unet.weights + pipe.text_encoder.weights]
    assert all(np.array_equal(x, y) for x, y in zip(before, after, strict=True))  # bit-exact
    check_case(pipe, golden, info, "unloaded")
    pipe.load_lora_weights(str(fixtures_dir / "lora_kohya_a.safetensors"), scale=0.7)
    check_case(pipe, golden, info, "kohya_a")
    assert pipe.trace_counts == traces  # no adapter operation recompiled anything


def test_textual_inversion_tokens_encodings_and_images(fixtures_dir, golden, info):
    pipe = tiny_sd(fixtures_dir)
    assert pipe.load_textual_inversion(str(fixtures_dir / "ti_cat_toy.safetensors")) == [
        "<cat-toy>"]
    tokens = pipe.load_textual_inversion(str(fixtures_dir / "ti_style.safetensors"),
                                         token="<style>")
    assert tokens == ["<style>", "<style>_1", "<style>_2"]
    prompts = info["textual_inversion"]["ti_tok_prompts"]
    np.testing.assert_array_equal(pipe.tokenizer(prompts), golden["ti_tok_ids"])
    check_case(pipe, golden, info, "ti")
    negative = pipe.encode_text(info["cases"]["ti"]["negative_prompt"])
    record("ti negative prompt encoding",
           float(np.abs(negative - golden["ti_negative_prompt_embeds"]).max()), FORWARD_TOLERANCE)
