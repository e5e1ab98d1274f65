"""Fixtures for LCM-distilled UNets and the LCM-LoRA recipe: a tiny UNet with
``time_cond_proj_dim`` (the guidance-scale embedding) and what diffusers makes of it.

Run with any environment that has torch, diffusers and transformers (no network)::

    refenv/bin/python tools/make_lcm_unet_fixtures.py   # needs tiny-sd/ and editing_golden.npz

Writes, under ``tests/fixtures/``:

- ``tiny-lcm/``: ``model_index.json`` (``LatentConsistencyModelPipeline``), ``unet/`` (a random UNet
  with ``time_cond_proj_dim=32``, smaller than tiny-sd's: 25,324 parameters, cond_proj included)
  and ``scheduler/`` (``LCMScheduler.from_config(<tiny-sd's>)``). Its text encoder, tokenizer and
  VAE are tiny-sd's, not stored twice: copy ``tiny-sd/{text_encoder,tokenizer,vae}`` beside them
  and the folder is what ``LatentConsistencyModelPipeline.save_pretrained`` writes.
- ``lcm_unet_golden.npz`` / ``.json``: ``get_guidance_scale_embedding`` on a few w, the UNet with
  and without ``timestep_cond``, and whole runs: ``LatentConsistencyModelPipeline`` at 1, 2 and 4
  steps with guidance 1.0 and 8.0 (and a batch of two), ``StableDiffusionPipeline`` with DDIM and
  ``StableDiffusionImg2ImgPipeline`` with LCM on that UNet (diffusers skips classifier-free
  guidance for a UNet with ``time_cond_proj_dim`` and embeds the guidance scale instead, whichever
  pipeline), and the LCM-LoRA recipe: tiny-sd + ``load_lora_weights(lora_peft_a.safetensors)`` +
  ``LCMScheduler``, 4 steps, guidance 1.0 and 1.5 (ordinary guidance: an LCM-LoRA is a plain LoRA).

The noise is drawn the sdlib way, as in ``tools/make_lcm_fixtures.py`` (``randn_tensor`` patched):
the initial latent (or the noise mixed into an image's latent) first, then each injected noise.
One CPU thread, seeded, fixed zip timestamps: two runs give byte-identical files.
"""

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import diffusers
import numpy as np
import torch
import transformers
from diffusers import (
    DDIMScheduler,
    LatentConsistencyModelPipeline,
    LCMScheduler,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from diffusers.pipelines.latent_consistency_models import (
    pipeline_latent_consistency_text2img as lcm_module,
)
from diffusers.pipelines.stable_diffusion import pipeline_stable_diffusion as text2img_module
from diffusers.pipelines.stable_diffusion import (
    pipeline_stable_diffusion_img2img as img2img_module,
)
from diffusers.schedulers import scheduling_lcm
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from make_lcm_fixtures import (  # noqa: E402  (the same conventions and noise)
    HEIGHT,
    PROMPTS,
    WIDTH,
    NumpyNoise,
    posterior_mean,
    record_steps,
)
from make_parity_fixtures import (  # noqa: E402
    MAX_LENGTH,
    SEED,
    assert_lively,
    randn,
    randomise_,
    save_npz,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
FOLDER = "tiny-lcm"
SHARED = ("text_encoder", "tokenizer", "vae")  # tiny-sd's, copied in to make the whole folder
LCM_UNET = dict(
    sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 8), layers_per_block=1,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=24,
    attention_head_dim=2,  # SD v1 semantics: the number of heads
    norm_num_groups=4,
    time_cond_proj_dim=32,  # real LCMs: 256 (beside 320 channels)
)
LORA_FILE = "lora_peft_a.safetensors"  # an LCM-LoRA is an ordinary LoRA file
# get_guidance_scale_embedding(w, dim): w = guidance_scale - 1; an odd dim is zero-padded
EMBEDDING_W = [0.0, 0.5, 7.0, -0.5]
EMBEDDING_DIMS = [32, 7]

# case -> pipeline ("lcm": LatentConsistencyModelPipeline; "sd_ddim": StableDiffusionPipeline with
# DDIM on the LCM UNet; "img2img": StableDiffusionImg2ImgPipeline with LCM on it; "lora": tiny-sd +
# the LoRA + LCMScheduler), steps, guidance, seed, batch; per_step: keep each step's denoised
# latent. Guidance 1 and 8 share a seed, so that their difference is the embedding's.
CASES = {
    "lcm_1step_g1": dict(pipeline="lcm", steps=1, guidance_scale=1.0, seed=31),
    "lcm_1step_g8": dict(pipeline="lcm", steps=1, guidance_scale=8.0, seed=31),
    "lcm_2steps_g1": dict(pipeline="lcm", steps=2, guidance_scale=1.0, seed=32),
    "lcm_2steps_g8": dict(pipeline="lcm", steps=2, guidance_scale=8.0, seed=32),
    "lcm_4steps_g1": dict(pipeline="lcm", steps=4, guidance_scale=1.0, seed=33),
    "lcm_4steps_g8": dict(pipeline="lcm", steps=4, guidance_scale=8.0, seed=33, per_step=True),
    "lcm_4steps_batch2_g8": dict(pipeline="lcm", steps=4, guidance_scale=8.0, seed=37, batch=2),
    "lcm_ddim_3steps_g8": dict(pipeline="sd_ddim", steps=3, guidance_scale=8.0, seed=38),
    "lcm_img2img_6steps_s0.5_g8": dict(pipeline="img2img", steps=6, strength=0.5,
                                       guidance_scale=8.0, seed=39),
    "lora_4steps_g1": dict(pipeline="lora", steps=4, guidance_scale=1.0, seed=41),
    "lora_4steps_g1.5": dict(pipeline="lora", steps=4, guidance_scale=1.5, seed=42),
}
CALLS = {
    "lcm": "LatentConsistencyModelPipeline.from_pretrained(tiny-lcm + tiny-sd's text_encoder, "
           "tokenizer, vae)(prompt, num_inference_steps, guidance_scale, height, width)",
    "sd_ddim": "StableDiffusionPipeline(**lcm.components, scheduler=DDIMScheduler.from_config("
               "lcm.scheduler.config))(...)",
    "img2img": "StableDiffusionImg2ImgPipeline(**lcm.components)(prompt, image, strength, ...)",
    "lora": "StableDiffusionPipeline.from_pretrained(tiny-sd), scheduler = "
            "LCMScheduler.from_config(its config), load_lora_weights(lora_peft_a.safetensors) "
            "(adapter weight 1.0)",
}


def build_unet():
    unet = UNet2DConditionModel(**LCM_UNET)
    randomise_(unet, torch.Generator().manual_seed(SEED + 7))
    assert unet.time_embedding.cond_proj.bias is None
    return unet


def write_folder(lcm, out, scratch):
    """Save the pipeline and keep its own parts: model_index.json, unet/, scheduler/."""
    saved = scratch / "saved"
    lcm.save_pretrained(saved)
    target = out / FOLDER
    if target.exists():
        shutil.rmtree(target)
    target.mkdir()
    shutil.copy(saved / "model_index.json", target)
    for part in ("unet", "scheduler"):
        shutil.copytree(saved / part, target / part)


def assemble(out, scratch):
    """tiny-lcm/ plus tiny-sd's text encoder, tokenizer and VAE: a whole diffusers folder."""
    folder = scratch / "assembled"
    shutil.copytree(out / FOLDER, folder)
    for part in SHARED:
        shutil.copytree(out / "tiny-sd" / part, folder / part)
    return folder


def golden_unet(lcm, arrays, meta):
    unet = lcm.unet
    for dim in EMBEDDING_DIMS:
        embedding = lcm.get_guidance_scale_embedding(torch.tensor(EMBEDDING_W), embedding_dim=dim)
        arrays[f"guidance_embedding_{dim}"] = embedding.numpy()
    sample = randn((2, 4, 8, 12), seed=51)  # (B, C, h, w), non-square
    timesteps = torch.tensor([999, 259])
    context = randn((2, MAX_LENGTH, 24), seed=52)
    w = torch.tensor([0.0, 7.0])  # guidance 1 and 8
    condition = lcm.get_guidance_scale_embedding(w, embedding_dim=LCM_UNET["time_cond_proj_dim"])
    time_proj = unet.time_proj(timesteps)
    arrays.update(
        unet_sample=sample.numpy(), unet_timesteps=timesteps.numpy(), unet_context=context.numpy(),
        unet_timestep_cond=condition.numpy(),
        unet_time_emb=unet.time_embedding(time_proj, condition).numpy(),
        unet_out=unet(sample, timesteps, encoder_hidden_states=context,
                      timestep_cond=condition).sample.numpy(),
        unet_out_no_cond=unet(sample, timesteps, encoder_hidden_states=context).sample.numpy())
    meta["unet"] = dict(
        config={key: list(value) if isinstance(value, tuple) else value
                for key, value in LCM_UNET.items()},
        guidance_embedding=f"get_guidance_scale_embedding(torch.tensor({EMBEDDING_W}), "
                           "embedding_dim=dim) for dim in " + str(EMBEDDING_DIMS),
        timestep_cond="get_guidance_scale_embedding(torch.tensor([0.0, 7.0]), 32)",
        time_emb="unet.time_embedding(unet.time_proj(unet_timesteps), unet_timestep_cond)",
        call="unet(unet_sample, unet_timesteps, encoder_hidden_states=unet_context, "
             "timestep_cond=unet_timestep_cond).sample",
        call_no_cond="the same without timestep_cond (diffusers then skips cond_proj)")
    for name in ("unet_time_emb", "unet_out", "unet_out_no_cond"):
        assert_lively(name, arrays[name])
    difference = np.abs(arrays["unet_out"] - arrays["unet_out_no_cond"]).mean()
    assert difference > 0.05, difference  # cond_proj matters


def run_case(pipes, spec, noise, images):
    """One diffusers call: final latents (B, 4, h, w), each step's denoised latent, the timesteps
    run, uint8 images, noise draws."""
    pipe = pipes[spec["pipeline"]]
    seen = record_steps(pipe.scheduler)
    final = {}

    def keep_latents(pipeline, step, timestep, tensors):
        final["latents"] = tensors["latents"]
        return tensors

    batch = spec.get("batch", 1)
    kwargs = dict(prompt=PROMPTS[:batch] if batch > 1 else PROMPTS[0],
                  num_inference_steps=spec["steps"], guidance_scale=spec["guidance_scale"],
                  output_type="np", callback_on_step_end=keep_latents,
                  callback_on_step_end_tensor_inputs=["latents"])
    if spec["pipeline"] == "img2img":
        kwargs.update(image=[Image.fromarray(image) for image in images[:batch]],
                      strength=spec["strength"])
    else:
        kwargs.update(height=HEIGHT, width=WIDTH)
    noise.reset(spec["seed"])
    result = pipe(**kwargs).images  # (B, H, W, 3) float in [0, 1]
    del pipe.scheduler.step  # record_steps' wrapper: the pipelines share one scheduler
    denoised = np.stack([step[1].numpy() for step in seen])
    images_uint8 = np.round(result * 255).astype(np.uint8)
    return (final["latents"].numpy(), denoised, [step[0] for step in seen], images_uint8,
            noise.draws)


@torch.no_grad()
def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "tests" / "fixtures")
    args = parser.parse_args()
    out = args.out
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    noise = NumpyNoise()
    for module in (text2img_module, img2img_module, lcm_module, scheduling_lcm):
        module.randn_tensor = noise
    img2img_module.retrieve_latents = posterior_mean

    base = StableDiffusionPipeline.from_pretrained(out / "tiny-sd", local_files_only=True,
                                                   safety_checker=None,
                                                   requires_safety_checker=False)
    made = LatentConsistencyModelPipeline(
        vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer, unet=build_unet(),
        scheduler=LCMScheduler.from_config(base.scheduler.config), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        write_folder(made, out, scratch)
        lcm = LatentConsistencyModelPipeline.from_pretrained(
            assemble(out, scratch), local_files_only=True, safety_checker=None,
            requires_safety_checker=False)
    made_state, loaded_state = made.unet.state_dict(), lcm.unet.state_dict()
    assert made_state.keys() == loaded_state.keys()
    assert all(torch.equal(made_state[key], loaded_state[key]) for key in made_state)
    assert lcm.unet.config.time_cond_proj_dim == LCM_UNET["time_cond_proj_dim"]

    lora = StableDiffusionPipeline.from_pretrained(out / "tiny-sd", local_files_only=True,
                                                   safety_checker=None,
                                                   requires_safety_checker=False)
    lora.scheduler = LCMScheduler.from_config(lora.scheduler.config)
    lora.load_lora_weights(str(out / LORA_FILE))
    components = {key: value for key, value in lcm.components.items() if key != "scheduler"}
    pipes = {"lcm": lcm,
             "sd_ddim": StableDiffusionPipeline(
                 **components, scheduler=DDIMScheduler.from_config(lcm.scheduler.config)),
             "img2img": StableDiffusionImg2ImgPipeline(**lcm.components), "lora": lora}
    for pipe in pipes.values():
        pipe.set_progress_bar_config(disable=True)
    images = np.load(out / "editing_golden.npz")["images"]

    arrays = {}
    meta = dict(
        made_by="tools/make_lcm_unet_fixtures.py", height=HEIGHT, width=WIDTH, prompts=PROMPTS,
        versions=dict(torch=torch.__version__, diffusers=diffusers.__version__,
                      transformers=transformers.__version__),
        folder=f"{FOLDER}/: model_index.json, unet/, scheduler/; add tiny-sd's "
               f"{', '.join(SHARED)} for the whole LatentConsistencyModelPipeline folder",
        layout="latents NCHW as diffusers has them; images NHWC uint8 ((float * 255).round())",
        noise="randn_tensor patched as in lcm_golden.json: call k returns default_rng(seed)'s "
              "k-th standard_normal((B, h, w, C), float32) draw, transposed to NCHW",
        encoding="every VAE encoding is the posterior mean (retrieve_latents patched)",
        images="editing_golden.npz: images", lora=LORA_FILE, calls=CALLS, cases={})
    golden_unet(lcm, arrays, meta)

    for key, spec in CASES.items():
        final, denoised, timesteps, images_uint8, draws = run_case(pipes, spec, noise, images)
        arrays[f"{key}_latents"] = final
        if spec.get("per_step"):
            arrays[f"{key}_denoised"] = denoised
        arrays[f"{key}_images"] = images_uint8
        meta["cases"][key] = dict(spec, batch=spec.get("batch", 1), timesteps=timesteps,
                                  noise_draws=draws)
        print(f"  {key}: timesteps {timesteps}, {draws} noise draws, "
              f"images mean {images_uint8.mean():.1f}")

    # diffusers' StableDiffusionPipeline runs such a UNet exactly as the LCM pipeline does (no
    # guidance batch, the scale embedded), which is what sdlib's one pipeline does too
    pipes["sd_lcm"] = StableDiffusionPipeline(**lcm.components)
    pipes["sd_lcm"].set_progress_bar_config(disable=True)
    same = run_case(pipes, dict(CASES["lcm_4steps_g8"], pipeline="sd_lcm"), noise, images)
    assert np.array_equal(same[3], arrays["lcm_4steps_g8_images"])
    for steps in (1, 2, 4):  # the guidance embedding changes the images
        change = np.abs(arrays[f"lcm_{steps}step{'s' * (steps > 1)}_g8_latents"]
                        - arrays[f"lcm_{steps}step{'s' * (steps > 1)}_g1_latents"]).mean()
        assert change > 0.02, (steps, change)

    for name, array in arrays.items():
        assert array.dtype in (np.float32, np.uint8, np.int64), (name, array.dtype)
    meta["arrays"] = {name: dict(shape=list(array.shape), dtype=str(array.dtype))
                      for name, array in arrays.items()}
    save_npz(out / "lcm_unet_golden.npz", arrays)
    (out / "lcm_unet_golden.json").write_text(json.dumps(meta, indent=1) + "\n")
    for path in sorted([*(out / FOLDER).rglob("*"), out / "lcm_unet_golden.npz",
                        out / "lcm_unet_golden.json"]):
        if path.is_file():
            print(f"  {path.stat().st_size:>10,d}  {path.relative_to(out)}")


if __name__ == "__main__":
    main()
