"""Named models, all in one place.

- ``sd-v1-5``: the real Stable Diffusion v1.5 architecture (1.07 B parameters). Weights come from a
  local folder or file named by ``$SDLIB_SD15_WEIGHTS``, else from the hub (network needed);
  ``load_weights=False`` gives random weights for parameter counts and benchmarks.
- ``mini-shapes``: Stable Diffusion in miniature (64x64), trained here on procedural shapes with
  ``tools/train_mini_model.py``; weights shipped as package data, so it works offline.
- ``tiny``: the same code paths at toy size with seeded random weights; seconds-fast, for tests and CI.
"""

import dataclasses
import os
from pathlib import Path

import numpy as np

from sdlib.hub import SD15_REPO
from sdlib.schedulers import DDIMScheduler, SchedulerConfig
from sdlib.text_encoder import TextEncoderConfig
from sdlib.tokenizer import CLIPTokenizer
from sdlib.unet import UNetConfig
from sdlib.vae import VAEConfig

# SD v1.5's scheduler/scheduler_config.json, read as DDIMScheduler.from_config reads it.
SD15_SCHEDULER = SchedulerConfig(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                 steps_offset=1, set_alpha_to_one=False, clip_sample=False)


def sd15_configs():
    return {"text_encoder": TextEncoderConfig(), "unet": UNetConfig(), "vae": VAEConfig(),
            "scheduler": SD15_SCHEDULER}


def tiny_configs():
    return {
        "text_encoder": TextEncoderConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                          num_attention_heads=2),
        "unet": UNetConfig(block_out_channels=(32, 64),
                           down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                           up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                           layers_per_block=1, num_attention_heads=(2, 2), cross_attention_dim=32,
                           norm_num_groups=8),
        # Four levels, so the VAE scale factor is 8 as in SD: a 64x64 image has an 8x8x4 latent.
        "vae": VAEConfig(block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=4),
        "scheduler": SD15_SCHEDULER,
    }


# The mini model's noise schedule: SD's betas rescaled to zero terminal SNR, v-prediction, and trailing
# timesteps (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed"). With SD's
# own schedule, x_T keeps sqrt(alpha_bar_T) = 0.068 of the image, enough on an 8x8 latent to reveal
# where the object is; the model learned to take position from the noise and ignored "top left".
MINI_SHAPES_SCHEDULER = dataclasses.replace(SD15_SCHEDULER, rescale_betas_zero_snr=True,
                                            prediction_type="v_prediction", timestep_spacing="trailing")


def mini_shapes_configs():
    """Stable Diffusion in miniature: 64x64 images, factor-8 VAE (8x8x4 latents, exactly like
    512 -> 64), the real CLIP tokenizer, a 3-layer 32-wide CLIP text encoder, a 2-level UNet with
    self- and cross-attention at both levels. Trained by ``tools/train_mini_model.py``."""
    return {
        "text_encoder": TextEncoderConfig(hidden_size=32, intermediate_size=128, num_hidden_layers=3,
                                          num_attention_heads=4),
        "unet": UNetConfig(block_out_channels=(64, 96),
                           down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                           up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                           layers_per_block=2, num_attention_heads=(4, 4), cross_attention_dim=32,
                           norm_num_groups=16),
        "vae": VAEConfig(block_out_channels=(16, 32, 64, 64), layers_per_block=1, norm_num_groups=8),
        "scheduler": MINI_SHAPES_SCHEDULER,
    }


MINI_SHAPES_WEIGHTS = Path(__file__).parent / "assets" / "mini_shapes.safetensors"

PRESETS = {
    "sd-v1-5": {"configs": sd15_configs, "size": 512,
                "description": "Stable Diffusion v1.5 (real weights from $SDLIB_SD15_WEIGHTS or the hub)"},
    "mini-shapes": {"configs": mini_shapes_configs, "size": 64,
                    "description": "SD in miniature, trained on procedural shapes (shipped weights)"},
    "tiny": {"configs": tiny_configs, "size": 64,
             "description": "toy-sized random model for tests and CI (draws noise)"},
}


def randomize(model, seed):
    """Seeded random weights, identical on every backend: N(0, 1/fan_in) kernels, norms near 1."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        shape = tuple(variable.shape)
        name = variable.path.rsplit("/", 1)[-1]
        if name == "gamma":
            value = 1.0 + 0.1 * rng.standard_normal(shape)
        elif name in ("beta", "bias"):
            value = 0.02 * rng.standard_normal(shape)
        else:
            fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
            scale = 0.5 if name == "embeddings" else 1.0 / np.sqrt(max(fan_in, 1))
            value = scale * rng.standard_normal(shape)
        variable.assign(value.astype(variable.dtype))


def build(cls, preset, img_height=None, img_width=None, jit_compile="auto", load_weights=True,
          dtype="auto", compile_loop=False):
    if preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r}; choose one of {sorted(PRESETS)} (or load a "
                         "checkpoint with StableDiffusion.from_pretrained).")
    spec = PRESETS[preset]
    img_height = spec["size"] if img_height is None else img_height
    img_width = spec["size"] if img_width is None else img_width
    if preset == "sd-v1-5" and load_weights:
        source = os.environ.get("SDLIB_SD15_WEIGHTS", SD15_REPO)
        return cls.from_pretrained(source, img_height=img_height, img_width=img_width,
                                   jit_compile=jit_compile, dtype=dtype, compile_loop=compile_loop)
    if preset == "mini-shapes" and load_weights:
        from sdlib import checkpoint

        if not MINI_SHAPES_WEIGHTS.exists():
            raise FileNotFoundError(f"The mini-shapes weights are missing ({MINI_SHAPES_WEIGHTS}); "
                                    "reinstall sdlib or train them with tools/train_mini_model.py.")
        parts = checkpoint.load_sdlib_file(str(MINI_SHAPES_WEIGHTS), dtype=dtype)
        return cls(parts["text_encoder"], parts["unet"], parts["vae"], parts["tokenizer"],
                   parts["scheduler"], img_height, img_width, jit_compile=jit_compile,
                   compile_loop=compile_loop, name=preset)
    from sdlib import checkpoint

    # Random weights (the tiny preset, or load_weights=False): zeros first, then seeded values, the
    # same on every backend and faster than Keras' initializers (1.07 B parameters for sd-v1-5).
    configs = spec["configs"]()
    models = checkpoint.build_models(configs, dtype=dtype, fast=True)
    text_encoder, unet, vae = models["text_encoder"], models["unet"], models["vae"]
    for index, model in enumerate((text_encoder, unet, vae)):
        randomize(model, seed=index)
    tokenizer = CLIPTokenizer.from_default(max_length=configs["text_encoder"].max_position_embeddings)
    return cls(text_encoder, unet, vae, tokenizer, DDIMScheduler(configs["scheduler"]),
               img_height, img_width, jit_compile=jit_compile, compile_loop=compile_loop, name=preset)

