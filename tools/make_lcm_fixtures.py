"""Make the golden outputs of sdlib's LCM sampler: diffusers' ``LCMScheduler`` in its own loop and
inside diffusers' Stable Diffusion pipelines, with noise drawn the way sdlib draws it.

A maintainer's script, run by hand in an environment with torch, diffusers and transformers (the
same as ``tools/make_parity_fixtures.py`` and ``tools/make_editing_fixtures.py``, which must have
written ``tests/fixtures/tiny-sd/``, ``tiny-sd-inpaint/`` and ``editing_golden.npz``):

    refenv/bin/python tools/make_lcm_fixtures.py            # writes into tests/fixtures/

It writes ``lcm_golden.npz`` + ``lcm_golden.json``:

- ``json["coefficients"]``: per scheduler config and step count, what ``LCMScheduler`` uses at
  each step: the timesteps, c_skip, c_out, alpha_bar_t and alpha_bar of the next step (images alone
  cannot see c_skip: it is ~1e-9 at t = 999 and only matters near t = 0).
- ``steps_<config>`` arrays: ``LCMScheduler.step`` on a dummy model, each step's ``prev_sample``
  and ``denoised`` (epsilon, v-prediction, x_0-prediction with clipping).
- ``<case>_*`` arrays: ``StableDiffusionPipeline`` / ``StableDiffusionImg2ImgPipeline`` /
  ``StableDiffusionInpaintPipeline`` with ``LCMScheduler.from_config(pipe.scheduler.config)``
  (LCM-LoRA style: ordinary classifier-free guidance, the tiny UNets have no guidance embedding),
  their final latents, the uint8 images and, for two cases, each step's denoised latent.

The noise: diffusers' ``randn_tensor`` (of the pipeline modules and of ``scheduling_lcm``) is
patched to return, call after call, ``rng.standard_normal((B, h, w, C), dtype=np.float32)`` of
``rng = np.random.default_rng(seed)`` transposed to NCHW: the initial latent (or the noise mixed
into an image's latent) first, then each injected noise in step order. That is exactly what sdlib
draws from ``seed``, so the tests need no stored noise. With ``diffusion_noise`` the first array is
given and the rest come from ``default_rng(seed)``. Every VAE encoding is the posterior mean, as in
the editing fixtures.
"""

import argparse
import json
import sys
from pathlib import Path

import diffusers
import numpy as np
import torch
import transformers
from diffusers import (
    LCMScheduler,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
)
from diffusers.pipelines.stable_diffusion import pipeline_stable_diffusion as text2img_module
from diffusers.pipelines.stable_diffusion import (
    pipeline_stable_diffusion_img2img as img2img_module,
)
from diffusers.pipelines.stable_diffusion import (
    pipeline_stable_diffusion_inpaint as inpaint_module,
)
from diffusers.schedulers import scheduling_lcm
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from make_parity_fixtures import SEED, save_npz  # noqa: E402  (the same conventions)

REPO_ROOT = Path(__file__).resolve().parents[1]
HEIGHT, WIDTH = 32, 48  # tiny-sd's VAE has a scale factor of 2: 16x24 latents
PROMPTS = ["a red circle on a black background", "two blue squares"]
ZERO_SNR = "zero_snr"  # the mini-shapes schedule of tests/fixtures/zero_snr.json (v-prediction)

# name -> LCMScheduler.from_config(<base config>, **overrides)
CONFIGS = {
    "tiny_sd": ("tiny_sd", {}),
    ZERO_SNR: (ZERO_SNR, {}),
    "original_40_scaling_5": ("tiny_sd", dict(original_inference_steps=40, timestep_scaling=5.0)),
    # c_skip is < 7e-6 at every LCM timestep with the default scaling 10; at 0.01 it reaches 0.87
    "scaling_0.01": ("tiny_sd", dict(timestep_scaling=0.01)),
}
COEFFICIENT_STEPS = {"tiny_sd": [1, 2, 3, 4, 6, 8, 13, 50], ZERO_SNR: [1, 4, 8],
                     "original_40_scaling_5": [1, 3, 7, 40], "scaling_0.01": [4, 50]}
# The dummy-model step check: config -> (LCMScheduler.from_config(tiny-sd's, **overrides), steps,
# NHWC sample shape)
STEP_CONFIGS = {
    "epsilon": ({}, 4, (1, 8, 8, 4)),
    "v_prediction": (dict(prediction_type="v_prediction"), 4, (1, 8, 8, 4)),
    "sample_clipped": (dict(prediction_type="sample", clip_sample=True, clip_sample_range=1.5), 4,
                       (1, 8, 8, 4)),
    "epsilon_scaling_0.01": (dict(timestep_scaling=0.01), 50, (1, 2, 2, 4)),
}
STEP_SEED = 7

# case -> pipeline, config, steps, guidance, seed, batch (1: PROMPTS[0]; 2: both) and extras;
# per_step: also keep each step's denoised latent (what sdlib's callback hands out)
CASES = {
    "t2i_1step_g1": dict(task="text2img", steps=1, guidance_scale=1.0, seed=11),
    "t2i_2steps_g1.5": dict(task="text2img", steps=2, guidance_scale=1.5, seed=12),
    "t2i_4steps_g1": dict(task="text2img", steps=4, guidance_scale=1.0, seed=13, per_step=True),
    "t2i_8steps_g7.5_negative": dict(task="text2img", steps=8, guidance_scale=7.5, seed=14,
                                     negative_prompt="blurry"),
    "t2i_4steps_batch2_g1.5": dict(task="text2img", steps=4, guidance_scale=1.5, seed=15,
                                   batch=2),
    # diffusion_noise = the first draw of default_rng(1000); the injected noises default_rng(16)'s
    "t2i_4steps_given_noise_g1": dict(task="text2img", steps=4, guidance_scale=1.0, seed=16,
                                      noise_seed=1000),
    "t2i_4steps_v_prediction_g1.5": dict(task="text2img", steps=4, guidance_scale=1.5, seed=17,
                                         config=ZERO_SNR),
    "img2img_6steps_s0.5_g1.5": dict(task="img2img", steps=6, strength=0.5, guidance_scale=1.5,
                                     seed=18, per_step=True),
    "inpaint4_4steps_s1_g1.5": dict(task="inpaint4", steps=4, strength=1.0, guidance_scale=1.5,
                                    seed=19),
    "inpaint9_4steps_s0.75_g7.5": dict(task="inpaint9", steps=4, strength=0.75, guidance_scale=7.5,
                                       seed=20),
}


class NumpyNoise:
    """``randn_tensor``, patched: the next ``standard_normal((B, h, w, C))`` of a numpy Generator
    (sdlib's NHWC draw), as an NCHW torch tensor; ``first`` (NHWC), if given, comes before them."""

    def __init__(self):
        self.rng, self.first, self.draws = None, None, 0

    def reset(self, seed, first=None):
        self.rng, self.first, self.draws = np.random.default_rng(seed), first, 0

    def __call__(self, shape, generator=None, device=None, dtype=None, layout=None):
        batch, channels, height, width = shape
        if self.draws == 0 and self.first is not None:
            array = self.first
        else:
            array = self.rng.standard_normal((batch, height, width, channels), dtype=np.float32)
        assert array.shape == (batch, height, width, channels), (array.shape, shape)
        self.draws += 1
        return torch.from_numpy(np.ascontiguousarray(array.transpose(0, 3, 1, 2))).to(
            dtype=dtype or torch.float32)


def posterior_mean(encoder_output, generator=None, sample_mode="sample"):
    return encoder_output.latent_dist.mode()


def record_steps(scheduler):
    """Wrap ``scheduler.step`` to keep each step's timestep and denoised latent."""
    seen = []
    original = scheduler.step

    def step(model_output, timestep, sample, *args, **kwargs):
        output = original(model_output, timestep, sample, *args, **kwargs)
        denoised = output[1] if isinstance(output, tuple) else output.denoised
        seen.append((int(timestep), denoised.clone()))
        return output

    scheduler.step = step
    return seen


def coefficient_table(scheduler, num_steps):
    """What ``LCMScheduler.step`` computes before touching the sample, per step (as floats)."""
    scheduler.set_timesteps(num_steps)
    timesteps = [int(t) for t in scheduler.timesteps]
    rows = dict(timesteps=timesteps, c_skip=[], c_out=[], alpha_bar=[], alpha_bar_next=[])
    for index, timestep in enumerate(timesteps):
        c_skip, c_out = scheduler.get_scalings_for_boundary_condition_discrete(
            torch.tensor(timestep))
        following = timesteps[index + 1] if index + 1 < len(timesteps) else timestep
        rows["c_skip"].append(float(c_skip))
        rows["c_out"].append(float(c_out))
        rows["alpha_bar"].append(float(scheduler.alphas_cumprod[timestep]))
        rows["alpha_bar_next"].append(float(scheduler.alphas_cumprod[following]))
    return rows


def dummy_steps(config, num_steps, shape, noise):
    """``LCMScheduler.step`` with the dummy model ``0.1 * sample + t / 1000``; the start is the
    first draw of default_rng(STEP_SEED) (NHWC ``shape``), the injected noises the next ones."""
    scheduler = LCMScheduler.from_config(config)
    scheduler.set_timesteps(num_steps)
    noise.reset(STEP_SEED)
    batch, height, width, channels = shape
    sample = noise((batch, channels, height, width))
    prev_samples, denoised = [], []
    for timestep in scheduler.timesteps:
        model_output = 0.1 * sample + timestep / 1000
        sample, clean = scheduler.step(model_output, timestep, sample, return_dict=False)
        prev_samples.append(sample.numpy())
        denoised.append(clean.numpy())
    assert noise.draws == num_steps  # the start, then one per step but the last
    return [int(t) for t in scheduler.timesteps], np.stack(prev_samples), np.stack(denoised)


def run_case(pipes, spec, base_configs, noise, images, masks):
    """One diffusers call; returns the final latents (B, 4, h, w; for a 4-channel UNet's inpainting
    after the last blend, which puts the image's latent back where the mask keeps it), the
    scheduler's denoised latent of each step (n, B, 4, h, w), the timesteps run, the uint8 images
    and the number of noise draws."""
    pipe = pipes[spec["task"]]
    pipe.scheduler = LCMScheduler.from_config(base_configs[spec.get("config", "tiny_sd")])
    seen = record_steps(pipe.scheduler)
    final = {}

    def keep_latents(pipeline, step, timestep, tensors):
        final["latents"] = tensors["latents"]  # after the step (and the inpainting blend)
        return tensors

    batch = spec.get("batch", 1)
    kwargs = dict(prompt=PROMPTS[:batch] if batch > 1 else PROMPTS[0],
                  negative_prompt=spec.get("negative_prompt"), num_inference_steps=spec["steps"],
                  guidance_scale=spec["guidance_scale"], output_type="np",
                  callback_on_step_end=keep_latents,
                  callback_on_step_end_tensor_inputs=["latents"])
    first = None
    if "noise_seed" in spec:
        first = np.random.default_rng(spec["noise_seed"]).standard_normal(
            (batch, HEIGHT // 2, WIDTH // 2, 4), dtype=np.float32)
    noise.reset(spec["seed"], first)
    if spec["task"] == "text2img":
        kwargs.update(height=HEIGHT, width=WIDTH)
    else:
        kwargs.update(image=[Image.fromarray(image) for image in images[:batch]],
                      strength=spec["strength"])
    if spec["task"].startswith("inpaint"):
        kwargs.update(mask_image=[Image.fromarray(mask, "L") for mask in masks[:batch]],
                      height=HEIGHT, width=WIDTH)
    result = pipe(**kwargs).images  # (B, H, W, 3) float in [0, 1]
    denoised = np.stack([step[1].numpy() for step in seen])
    images_uint8 = np.round(result * 255).astype(np.uint8)
    return final["latents"].numpy(), denoised, [step[0] for step in seen], images_uint8, noise.draws


@torch.no_grad()
def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "tests" / "fixtures")
    args = parser.parse_args()
    out = args.out
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    base = StableDiffusionPipeline.from_pretrained(out / "tiny-sd", local_files_only=True,
                                                   safety_checker=None,
                                                   requires_safety_checker=False)
    inpaint9 = StableDiffusionInpaintPipeline.from_pretrained(out / "tiny-sd-inpaint",
                                                              local_files_only=True,
                                                              safety_checker=None,
                                                              requires_safety_checker=False)
    pipes = {"text2img": base, "img2img": StableDiffusionImg2ImgPipeline(**base.components),
             "inpaint4": StableDiffusionInpaintPipeline(**base.components), "inpaint9": inpaint9}
    for pipe in pipes.values():
        pipe.set_progress_bar_config(disable=True)

    noise = NumpyNoise()
    for module in (text2img_module, img2img_module, inpaint_module, scheduling_lcm):
        module.randn_tensor = noise
    for module in (img2img_module, inpaint_module):
        module.retrieve_latents = posterior_mean

    tiny_config = dict(base.scheduler.config)
    zero_snr = json.loads((out / "zero_snr.json").read_text())["config"]
    base_configs = {"tiny_sd": tiny_config, ZERO_SNR: zero_snr}
    editing = np.load(out / "editing_golden.npz")
    images, masks = editing["images"], editing["masks_box"]

    arrays = {}
    meta = dict(
        made_by="tools/make_lcm_fixtures.py", height=HEIGHT, width=WIDTH, prompts=PROMPTS,
        versions=dict(torch=torch.__version__, diffusers=diffusers.__version__,
                      transformers=transformers.__version__),
        layout="latents NCHW as diffusers has them; images NHWC uint8 ((float * 255).round())",
        noise="randn_tensor patched: call k returns default_rng(seed)'s k-th standard_normal((B, "
              "h, w, C), float32) draw, transposed to NCHW; with noise_seed the first array is "
              "default_rng(noise_seed)'s first draw instead (sdlib's diffusion_noise)",
        encoding="every VAE encoding is the posterior mean (retrieve_latents patched)",
        images="editing_golden.npz: images, masks_box",
        configs={}, coefficients={}, steps={}, cases={})

    for name, (base_name, overrides) in CONFIGS.items():
        scheduler = LCMScheduler.from_config(base_configs[base_name], **overrides)
        meta["configs"][name] = dict(base=base_name, overrides=overrides,
                                     resolved={key: value for key, value in scheduler.config.items()
                                               if not key.startswith("_")})
        meta["coefficients"][name] = {str(steps): coefficient_table(scheduler, steps)
                                      for steps in COEFFICIENT_STEPS[name]}
    for name, (overrides, num_steps, shape) in STEP_CONFIGS.items():
        config = {**tiny_config, **overrides}
        timesteps, prev_samples, denoised = dummy_steps(config, num_steps, shape, noise)
        arrays[f"steps_{name}_prev_sample"] = prev_samples
        arrays[f"steps_{name}_denoised"] = denoised
        meta["steps"][name] = dict(overrides=overrides, timesteps=timesteps, num_steps=num_steps,
                                   shape_nhwc=list(shape), seed=STEP_SEED,
                                   model="0.1 * sample + t / 1000")
        print(f"  steps {name}: {timesteps[:5]}... ({num_steps})")

    for key, spec in CASES.items():
        final, denoised, timesteps, images_uint8, draws = run_case(pipes, spec, base_configs,
                                                                   noise, images, masks)
        arrays[f"{key}_latents"] = final
        if spec.get("per_step"):
            arrays[f"{key}_denoised"] = denoised
        arrays[f"{key}_images"] = images_uint8
        steps_run = len(timesteps)
        assert draws == steps_run, (key, draws, steps_run)  # the first, then all but the last step
        meta["cases"][key] = dict(spec, batch=spec.get("batch", 1), timesteps=timesteps,
                                  steps_run=steps_run, noise_draws=draws)
        print(f"  {key}: timesteps {timesteps}, {draws} noise draws, "
              f"images mean {images_uint8.mean():.1f}")

    for name, array in arrays.items():
        assert array.dtype in (np.float32, np.uint8), name
    meta["arrays"] = {name: dict(shape=list(array.shape), dtype=str(array.dtype))
                      for name, array in arrays.items()}
    save_npz(out / "lcm_golden.npz", arrays)
    (out / "lcm_golden.json").write_text(json.dumps(meta, indent=1) + "\n")
    for name in ("lcm_golden.npz", "lcm_golden.json"):
        print(f"  {(out / name).stat().st_size:>10,d}  {name}")


if __name__ == "__main__":
    main()
