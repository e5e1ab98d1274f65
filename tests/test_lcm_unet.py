"""LCM-distilled UNets (``time_cond_proj_dim``: the guidance scale embedded, no guidance batch) and
the LCM-LoRA recipe, against diffusers (``tools/make_lcm_unet_fixtures.py``): the guidance
embedding, the UNet with and without it, ``LatentConsistencyModelPipeline`` at 1, 2 and 4 steps and
guidance 1 and 8, DDIM and image-to-image on that UNet, and tiny-sd + a LoRA + LCM. Also: one
compiled step whatever the guidance, and the errors. Tolerances as in test_lcm.py."""

import json
import shutil

import keras
import numpy as np
import pytest
from conftest import PARITY_LINES
from test_lcm import PIPELINE_TOLERANCE, nhwc, relative_error

import sdlib
from sdlib.loading.safetensors import read_weights
from sdlib.models.unet import UNet, UNetConfig, guidance_scale_embedding, timestep_embedding

FORWARD_TOLERANCE = 1e-4  # as test_parity.py
# float32 angles w * 1000 * freq reach 7000 rad, where one float32 step is 4.9e-4 (and sin differs
# by backend: 1e-4 on JAX)
EMBEDDING_TOLERANCE = 1e-3


def record(name, error, tolerance, kind="max relative error"):
    line = (f"[{keras.backend.backend()}] lcm unet {name}: {kind} {error:.1e} "
            f"(tolerance {tolerance:.0e})")
    print(line)
    PARITY_LINES.append(line)


@pytest.fixture(scope="module")
def golden(fixtures_dir):
    return np.load(fixtures_dir / "lcm_unet_golden.npz")


@pytest.fixture(scope="module")
def info(fixtures_dir):
    return json.loads((fixtures_dir / "lcm_unet_golden.json").read_text())


@pytest.fixture(scope="module")
def editing_images(fixtures_dir):
    return np.load(fixtures_dir / "editing_golden.npz")["images"]


@pytest.fixture(scope="module")
def lcm_folder(fixtures_dir, tmp_path_factory):
    """tiny-lcm/ with tiny-sd's text encoder, tokenizer and VAE: the LatentConsistencyModelPipeline
    folder that diffusers saved (the shared parts are stored once, in tiny-sd/)."""
    folder = tmp_path_factory.mktemp("lcm") / "tiny-lcm"
    shutil.copytree(fixtures_dir / "tiny-lcm", folder)
    for part in ("text_encoder", "tokenizer", "vae"):
        shutil.copytree(fixtures_dir / "tiny-sd" / part, folder / part)
    return folder


@pytest.fixture(scope="module")
def pipes(fixtures_dir, lcm_folder, info):
    def load(path):
        return sdlib.StableDiffusion.from_pretrained(str(path), img_height=info["height"],
                                                     img_width=info["width"], jit_compile=False)

    lora = load(fixtures_dir / "tiny-sd")
    lora.load_lora_weights(str(fixtures_dir / info["lora"]))  # scale 1, diffusers' default weight
    return {"lcm": load(lcm_folder), "lora": lora}


def test_guidance_scale_embedding_matches_diffusers(golden):
    w = np.array([0.0, 0.5, 7.0, -0.5], np.float32)  # lcm_unet_golden.json["unet"]
    for dim in (32, 7):  # 7: odd, zero-padded
        embedding = keras.ops.convert_to_numpy(guidance_scale_embedding(w, dim))
        assert embedding.shape == (4, dim)
        error = relative_error(embedding, golden[f"guidance_embedding_{dim}"])
        assert error <= EMBEDDING_TOLERANCE, f"dim {dim}: {error:.2e}"
        record(f"guidance embedding, dim {dim}", error, EMBEDDING_TOLERANCE)
    np.testing.assert_array_equal(embedding[:, -1], 0.0)


def test_the_folder_loads_with_its_guidance_projection(pipes, lcm_folder):
    pipe = pipes["lcm"]
    assert pipe.unet.config.time_cond_proj_dim == 32 and pipe.embeds_guidance
    assert not pipes["lora"].embeds_guidance
    stored = read_weights(str(lcm_folder / "unet" / "diffusion_pytorch_model.safetensors"))
    kernel = keras.ops.convert_to_numpy(pipe.unet.time_embedding.cond_proj.kernel)  # (32, 8)
    np.testing.assert_array_equal(kernel, stored["time_embedding.cond_proj.weight"].T)
    assert pipe.unet.time_embedding.cond_proj.bias is None  # as diffusers: no bias
    config = json.loads((lcm_folder / "unet" / "config.json").read_text())
    assert UNetConfig.from_diffusers(config).to_diffusers(8)["time_cond_proj_dim"] == 32


def test_the_unet_with_and_without_timestep_cond_matches_diffusers(pipes, golden):
    unet = pipes["lcm"].unet
    sample, context = nhwc(golden["unet_sample"]), golden["unet_context"]
    timesteps = golden["unet_timesteps"].astype(np.float32)
    condition = golden["unet_timestep_cond"]  # (2, 32): guidance 1 and 8
    ours = keras.ops.convert_to_numpy(guidance_scale_embedding(np.array([0.0, 7.0]), 32))
    assert relative_error(ours, condition) <= EMBEDDING_TOLERANCE
    features = timestep_embedding(timesteps, 8)  # (2, C0)
    time_emb = keras.ops.convert_to_numpy(unet.time_embedding(features, condition))
    worst = relative_error(time_emb, golden["unet_time_emb"])
    for cond, key in ((condition, "unet_out"), (None, "unet_out_no_cond")):
        out = keras.ops.convert_to_numpy(unet(sample, timesteps, context, timestep_cond=cond))
        worst = max(worst, relative_error(out, nhwc(golden[key])))
    assert worst <= FORWARD_TOLERANCE, f"{worst:.2e}"
    record("forward with and without timestep_cond", worst, FORWARD_TOLERANCE)


def run_case(pipes, info, images, key, **extra):
    spec = info["cases"][key]
    pipe = pipes["lora" if spec["pipeline"] == "lora" else "lcm"]
    sampler = "ddim" if spec["pipeline"] == "sd_ddim" else "lcm"
    seen = []
    kwargs = dict(num_steps=spec["steps"], guidance_scale=spec["guidance_scale"],
                  seed=spec["seed"], sampler=sampler, callback=seen.append, verbose=False)
    kwargs.update(extra)
    batch = spec["batch"]
    prompt = info["prompts"][:batch] if batch > 1 else info["prompts"][0]
    if spec["pipeline"] == "img2img":
        result = pipe.image_to_image(prompt, images[:batch], strength=spec["strength"], **kwargs)
    else:
        result = pipe.text_to_image(prompt, **kwargs)
    return result, seen


CASES = ["lcm_1step_g1", "lcm_1step_g8", "lcm_2steps_g1", "lcm_2steps_g8", "lcm_4steps_g1",
         "lcm_4steps_g8", "lcm_4steps_batch2_g8", "lcm_ddim_3steps_g8",
         "lcm_img2img_6steps_s0.5_g8", "lora_4steps_g1", "lora_4steps_g1.5"]


@pytest.mark.parametrize("key", CASES)
def test_pipeline_matches_diffusers(key, pipes, info, golden, editing_images):
    spec = info["cases"][key]
    images, seen = run_case(pipes, info, editing_images, key)
    assert [event["timestep"] for event in seen] == spec["timesteps"]
    error = relative_error(seen[-1]["latents"], nhwc(golden[f"{key}_latents"]))
    assert error <= PIPELINE_TOLERANCE, f"{key} final latents: {error:.2e}"
    if f"{key}_denoised" in golden:
        for index, event in enumerate(seen):
            step_error = relative_error(event["denoised"], nhwc(golden[f"{key}_denoised"][index]))
            assert step_error <= PIPELINE_TOLERANCE, f"{key} step {index}: {step_error:.2e}"
            error = max(error, step_error)
    expected = golden[f"{key}_images"]
    assert images.shape == expected.shape
    levels = int(np.abs(images.astype(int) - expected.astype(int)).max())
    assert levels <= 1  # uint8 rounding can flip where diffusers' float lands near a half step
    record(f"{key} latents", error, PIPELINE_TOLERANCE)
    record(f"{key} images", levels, 1, kind="max uint8 levels off")


def test_guidance_steps_and_seeds_reuse_one_compiled_step_and_loop(lcm_folder, info):
    pipe = sdlib.StableDiffusion.from_pretrained(str(lcm_folder), img_height=32, img_width=48,
                                                 jit_compile=False)
    images = {}
    for guidance, steps, seed in [(1.0, 1, 0), (8.0, 4, 1), (8.5, 2, 2), (1.0, 4, 1), (3.0, 8, 3)]:
        images[guidance, steps, seed] = pipe.text_to_image(
            "a", num_steps=steps, guidance_scale=guidance, seed=seed, sampler="lcm",
            verbose=False)
    image = images[8.0, 4, 1]
    pipe.image_to_image("b", image, strength=0.6, num_steps=4, guidance_scale=2.0, seed=0,
                        sampler="lcm", verbose=False)
    assert pipe.trace_counts["step_lcm"] == 1
    assert not np.array_equal(images[8.0, 4, 1], images[1.0, 4, 1])  # the embedding is read
    looped = sdlib.StableDiffusion.from_pretrained(str(lcm_folder), img_height=32, img_width=48,
                                                   jit_compile=False, compile_loop=True)
    for guidance in (1.0, 8.0):
        again = looped.text_to_image("a", num_steps=4, guidance_scale=guidance, seed=1,
                                     sampler="lcm", verbose=False)
        levels = np.abs(again.astype(int) - images[guidance, 4, 1].astype(int)).max()
        assert levels <= 1, levels
    assert looped.trace_counts["loop_lcm"] == 1 and looped.trace_counts["step_lcm"] == 0


def test_a_negative_prompt_is_refused_for_a_guidance_embedding_unet(pipes):
    pipe = pipes["lcm"]
    with pytest.raises(ValueError, match="negative_prompt given.*embeds the guidance scale"):
        pipe.text_to_image("a", negative_prompt="blurry", num_steps=2, sampler="lcm",
                           verbose=False)
    context = pipe.encode_text("a")
    with pytest.raises(ValueError, match="unconditional_context given.*no unconditional pass"):
        pipe.generate_image(context, unconditional_context=context, num_steps=2, sampler="lcm",
                            verbose=False)
    with pytest.raises(ValueError, match="negative_prompt given"):
        pipe.image_to_image("a", np.zeros((32, 48, 3), np.uint8), negative_prompt="", num_steps=4,
                            sampler="lcm", verbose=False)


def test_timestep_cond_needs_a_unet_with_time_cond_proj_dim():
    config = UNetConfig(block_out_channels=(8, 8), down_block_types=("CrossAttnDownBlock2D",
                                                                     "DownBlock2D"),
                        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), layers_per_block=1,
                        num_attention_heads=(2, 2), cross_attention_dim=24, norm_num_groups=4)
    unet = UNet(config).build_weights()
    assert unet.time_embedding.cond_proj is None
    latent = np.zeros((1, 8, 8, 4), np.float32)
    context = np.zeros((1, 77, 24), np.float32)
    with pytest.raises(ValueError, match="no time_cond_proj_dim"):
        unet(latent, np.zeros((1,), np.float32), context, timestep_cond=np.zeros((1, 32)))
