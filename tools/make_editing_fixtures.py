"""Make the golden outputs of image-to-image and inpainting that sdlib's editing parity tests use.

A maintainer's script, run by hand in an environment with torch, diffusers and transformers (the
same as ``tools/make_parity_fixtures.py``, which must have written ``tests/fixtures/tiny-sd/``):

    refenv/bin/python tools/make_editing_fixtures.py            # writes into tests/fixtures/

It writes, under the output folder:

- ``tiny-sd-inpaint/``: a diffusers ``StableDiffusionInpaintPipeline`` folder: tiny-sd's text
  encoder, tokenizer, VAE and scheduler with a 9-channel UNet (latents, mask, masked-image latents)
  of the same architecture, seeded random weights;
- ``tiny-sd-inpaint.fp16.safetensors``: the same weights in the original single-file layout;
- ``editing_golden.npz`` + ``editing_golden.json``: diffusers' ``StableDiffusionImg2ImgPipeline``
  and ``StableDiffusionInpaintPipeline`` outputs for the cases below, in float32 on CPU.

What sdlib fixes and diffusers draws at random is fixed here, so the two can be compared number for
number: every VAE encoding is the posterior **mean** (diffusers samples it unless told otherwise;
``retrieve_latents`` is patched to take the mode), and the noise diffusers draws with
``randn_tensor`` is the array stored as ``<case>_noise`` (sdlib's ``diffusion_noise``).
"""

import argparse
import json
import shutil
import sys
from pathlib import Path

import diffusers
import numpy as np
import torch
import transformers
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from diffusers.pipelines.stable_diffusion import (
    pipeline_stable_diffusion_img2img as img2img_module,
)
from diffusers.pipelines.stable_diffusion import (
    pipeline_stable_diffusion_inpaint as inpaint_module,
)
from PIL import Image
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).parent))
from make_parity_fixtures import (  # noqa: E402  (the same tiny models, the same conventions)
    SEED,
    print_sizes,
    randn,
    randomise_,
    save_npz,
    to_single_file,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
HEIGHT, WIDTH = 32, 48  # non-square; tiny-sd's VAE has a scale factor of 2, not SD's 8
NUM_STEPS = 6
SCHEDULERS = {"ddim": DDIMScheduler, "euler": EulerDiscreteScheduler,
              "dpmpp_2m": DPMSolverMultistepScheduler}
PROMPTS = ["a red circle on a black background", "two blue squares"]

# case -> sampler, strength, guidance, batch (1: PROMPTS[0]; 2: both prompts, images, masks)
IMG2IMG_CASES = {
    "ddim_s03": dict(sampler="ddim", strength=0.3, guidance_scale=7.5, batch=1),
    "ddim_s075": dict(sampler="ddim", strength=0.75, guidance_scale=7.5, batch=1),
    "ddim_s1": dict(sampler="ddim", strength=1.0, guidance_scale=7.5, batch=1),
    "euler_s06": dict(sampler="euler", strength=0.6, guidance_scale=7.5, batch=1),
    "euler_s1": dict(sampler="euler", strength=1.0, guidance_scale=7.5, batch=1),
    "dpmpp_2m_s05": dict(sampler="dpmpp_2m", strength=0.5, guidance_scale=7.5, batch=1),
    "dpmpp_2m_s1": dict(sampler="dpmpp_2m", strength=1.0, guidance_scale=7.5, batch=1),
    "ddim_s06_batch2_g1": dict(sampler="ddim", strength=0.6, guidance_scale=1.0, batch=2),
}
INPAINT_CASES = {  # the 4-channel tiny-sd: inpainting by blending
    "ddim_s1": dict(sampler="ddim", strength=1.0, guidance_scale=7.5, batch=1, mask="box"),
    "euler_s1": dict(sampler="euler", strength=1.0, guidance_scale=7.5, batch=1, mask="box"),
    "dpmpp_2m_s1": dict(sampler="dpmpp_2m", strength=1.0, guidance_scale=7.5, batch=1,
                        mask="box"),
    "ddim_s06": dict(sampler="ddim", strength=0.6, guidance_scale=7.5, batch=1, mask="box"),
    "euler_s05_soft": dict(sampler="euler", strength=0.5, guidance_scale=7.5, batch=1,
                           mask="soft"),
    "dpmpp_2m_s08_batch2": dict(sampler="dpmpp_2m", strength=0.8, guidance_scale=7.5, batch=2,
                                mask="box"),
}
INPAINT9_CASES = {  # the 9-channel tiny-sd-inpaint
    "ddim_s1": dict(sampler="ddim", strength=1.0, guidance_scale=7.5, batch=1, mask="box"),
    "euler_s07": dict(sampler="euler", strength=0.7, guidance_scale=7.5, batch=1, mask="box"),
    "dpmpp_2m_s1_soft": dict(sampler="dpmpp_2m", strength=1.0, guidance_scale=7.5, batch=1,
                             mask="soft"),
    "ddim_s1_batch2_g1": dict(sampler="ddim", strength=1.0, guidance_scale=1.0, batch=2,
                              mask="box"),
}


def images_and_masks():
    """Two uint8 RGB images (smooth blobs, so the VAE sees structure) and their masks: "box" masks
    (0 / 255 rectangles) and a "soft" mask (a gradient, which diffusers binarises at 0.5)."""
    rng = np.random.default_rng(SEED)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH] / max(HEIGHT, WIDTH)
    images = []
    for _ in range(2):
        centers = rng.uniform(0.1, 0.9, (3, 2))
        colors = rng.uniform(0, 255, (3, 3))
        image = np.full((HEIGHT, WIDTH, 3), rng.uniform(0, 80))
        for (cy, cx), color in zip(centers, colors, strict=True):
            weight = np.exp(-((y - cy * HEIGHT / WIDTH) ** 2 + (x - cx) ** 2) / 0.02)[..., None]
            image = image * (1 - weight) + color * weight
        images.append(np.clip(image, 0, 255).round().astype(np.uint8))
    # Edges at odd pixels, so that which pixel of each 2 x 2 block the latent mask keeps matters.
    box = [np.zeros((HEIGHT, WIDTH), np.uint8) for _ in range(2)]
    box[0][5:21, 11:31] = 255
    box[1][15:30, 25:44] = 255
    ramp = (np.arange(WIDTH) - 23) * 10 + 133  # a gradient that crosses 128 at column 23
    soft = np.tile(ramp.clip(0, 255).astype(np.uint8), (HEIGHT, 1))
    masks = {"box": np.stack(box), "soft": np.stack([soft, soft[:, ::-1]])}
    for mask in masks.values():
        top_left, bottom_right = mask[:, ::2, ::2] >= 128, mask[:, 1::2, 1::2] >= 128
        assert (top_left != bottom_right).any()
    return np.stack(images), masks


class FixedNoise:
    """``randn_tensor`` of the pipeline modules, patched: the next stored noise array."""

    def __init__(self):
        self.noise = None

    def __call__(self, shape, generator=None, device=None, dtype=None, layout=None):
        assert tuple(shape) == tuple(self.noise.shape), (shape, self.noise.shape)
        return self.noise.clone().to(dtype=dtype or torch.float32)


def posterior_mean(encoder_output, generator=None, sample_mode="sample"):
    return encoder_output.latent_dist.mode()


def run(pipe, spec, images, masks, noise, fixed):
    """One diffusers call; returns float images (B, H, W, 3) and the final latents (B, 4, h, w)."""
    pipe.scheduler = SCHEDULERS[spec["sampler"]].from_config(pipe.scheduler.config)
    batch = spec["batch"]
    final = {}

    def keep_latents(pipeline, step, timestep, tensors):
        final["latents"] = tensors["latents"]
        return tensors

    kwargs = dict(
        prompt=PROMPTS[:batch] if batch > 1 else PROMPTS[0],
        image=[Image.fromarray(image) for image in images[:batch]],
        strength=spec["strength"],
        num_inference_steps=NUM_STEPS,
        guidance_scale=spec["guidance_scale"],
        output_type="np",
        callback_on_step_end=keep_latents,
        callback_on_step_end_tensor_inputs=["latents"],
    )
    if masks is not None:
        kwargs.update(mask_image=[Image.fromarray(mask, "L") for mask in masks[:batch]],
                      height=HEIGHT, width=WIDTH)
    fixed.noise = noise
    result = pipe(**kwargs).images
    return result.astype(np.float32), final["latents"]


def build_inpainting_unet(unet):
    """tiny-sd's UNet architecture with 9 input channels, seeded random weights."""
    config = {key: value for key, value in unet.config.items() if not key.startswith("_")}
    inpaint_unet = UNet2DConditionModel(**{**config, "in_channels": 9})
    randomise_(inpaint_unet, torch.Generator().manual_seed(SEED + 9))
    return inpaint_unet


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
    img2img = StableDiffusionImg2ImgPipeline(**base.components)
    inpaint4 = StableDiffusionInpaintPipeline(**base.components)
    components9 = {**base.components, "unet": build_inpainting_unet(base.unet)}
    inpaint9 = StableDiffusionInpaintPipeline(**components9)
    for pipe in (img2img, inpaint4, inpaint9):
        pipe.set_progress_bar_config(disable=True)

    folder = out / "tiny-sd-inpaint"
    print(f"writing {folder}")
    shutil.rmtree(folder, ignore_errors=True)
    inpaint9.save_pretrained(folder, safe_serialization=True)
    for name in ("vocab.json", "merges.txt"):  # what sdlib's tokenizer reads, as in tiny-sd
        shutil.copy(out / "tiny-sd" / "tokenizer" / name, folder / "tokenizer" / name)
    state, _ = to_single_file(inpaint9)
    single = out / "tiny-sd-inpaint.fp16.safetensors"
    save_file({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, single)
    reloaded = StableDiffusionInpaintPipeline.from_pretrained(folder, local_files_only=True,
                                                              safety_checker=None)
    for ours, theirs in zip(inpaint9.unet.state_dict().values(),
                            reloaded.unet.state_dict().values(), strict=True):
        assert torch.equal(ours, theirs)

    fixed = FixedNoise()
    for module in (img2img_module, inpaint_module):
        module.randn_tensor = fixed
        module.retrieve_latents = posterior_mean

    images, masks = images_and_masks()
    arrays = {"images": images, "masks_box": masks["box"], "masks_soft": masks["soft"]}
    factor = base.vae_scale_factor
    # diffusers' own encoding: the posterior mean times scaling_factor, for encode_image parity
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0 * 2.0 - 1.0
    arrays["image_latents"] = (base.vae.encode(pixels).latent_dist.mean
                               * base.vae.config.scaling_factor).numpy()
    meta = dict(made_by="tools/make_editing_fixtures.py", height=HEIGHT, width=WIDTH,
                num_steps=NUM_STEPS, prompts=PROMPTS,
                versions=dict(torch=torch.__version__, diffusers=diffusers.__version__,
                              transformers=transformers.__version__),
                layout="noise and latents NCHW as diffusers has them; images NHWC uint8 inputs, "
                       "float32 outputs in [0, 1] (output_type='np')",
                encoding="every VAE encoding is the posterior mean (retrieve_latents patched)",
                cases={})
    groups = (("img2img", img2img, IMG2IMG_CASES), ("inpaint4", inpaint4, INPAINT_CASES),
              ("inpaint9", inpaint9, INPAINT9_CASES))
    for seed, (group, pipe, cases) in enumerate(groups, start=100):
        for index, (case, spec) in enumerate(cases.items()):
            key = f"{group}_{case}"
            noise = randn((spec["batch"], 4, HEIGHT // factor, WIDTH // factor), seed * 10 + index)
            case_masks = masks[spec["mask"]] if "mask" in spec else None
            result, latents = run(pipe, spec, images, case_masks, noise, fixed)
            arrays[f"{key}_noise"] = noise.numpy()
            arrays[f"{key}_latents"] = latents.numpy()
            arrays[f"{key}_images"] = result
            steps_run = min(int(NUM_STEPS * spec["strength"]), NUM_STEPS)
            meta["cases"][key] = dict(spec, steps_run=steps_run,
                                      timesteps=[float(t) for t in pipe.scheduler.timesteps])
            print(f"  {key}: {steps_run} steps, images mean {result.mean():.3f}")
    save_npz(out / "editing_golden.npz", arrays)
    (out / "editing_golden.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"files under {out}")
    print_sizes(out)


if __name__ == "__main__":
    main()
