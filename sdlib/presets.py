"""Named models, all in one place: their configs, and where their weights come from.

- ``sd-v1-5``: the real Stable Diffusion v1.5 architecture (1.07 B parameters). Weights come from a
  local folder or file named by ``$SDLIB_SD15_WEIGHTS``, else from the hub (network needed);
  ``load_weights=False`` gives random weights for parameter counts and benchmarks.
- ``mini-shapes``: Stable Diffusion in miniature (64x64), trained here on procedural shapes with
  ``tools/train_mini_model.py``; weights shipped as package data, so it works offline.
- ``mini-shapes-inpaint``: its inpainting model, fine-tuned from it by
  ``tools/train_mini_inpainting.py`` (the file holds the UNet; the rest comes from mini-shapes).
- ``sd-v1-5-inpainting``: SD v1.5's inpainting model (a 9-channel UNet: latents, mask, masked
  image); weights from ``$SDLIB_SD15_INPAINTING_WEIGHTS`` or the hub.
- ``tiny``: the same code paths at toy size with seeded random weights; seconds-fast, for tests and
  CI; ``tiny-inpaint`` the same with a 9-channel UNet.

Reading the weights is ``sdlib.loading``'s job; this module only names things.
"""

import dataclasses
from collections.abc import Callable
from pathlib import Path

from sdlib.models.text_encoder import TextEncoderConfig
from sdlib.models.unet import UNetConfig
from sdlib.models.vae import VAEConfig
from sdlib.sampling.schedule import SchedulerConfig

SD15_REPO = "stable-diffusion-v1-5/stable-diffusion-v1-5"
SD15_INPAINTING_REPO = "stable-diffusion-v1-5/stable-diffusion-inpainting"
ASSETS = Path(__file__).parent / "assets"

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


# The mini model's noise schedule: SD's betas rescaled to zero terminal SNR, v-prediction, and
# trailing timesteps (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are
# Flawed"). With SD's own schedule, x_T keeps sqrt(alpha_bar_T) = 0.068 of the image, enough on an
# 8x8 latent to reveal where the object is; the model learned to take position from the noise and
# ignored "top left".
MINI_SHAPES_SCHEDULER = dataclasses.replace(SD15_SCHEDULER, rescale_betas_zero_snr=True,
                                            prediction_type="v_prediction",
                                            timestep_spacing="trailing")


def mini_shapes_configs():
    """Stable Diffusion in miniature: 64x64 images, factor-8 VAE (8x8x4 latents, exactly like
    512 -> 64), the real CLIP tokenizer, a 3-layer 32-wide CLIP text encoder, a 2-level UNet with
    self- and cross-attention at both levels. Trained by ``tools/train_mini_model.py``."""
    return {
        "text_encoder": TextEncoderConfig(hidden_size=32, intermediate_size=128,
                                          num_hidden_layers=3, num_attention_heads=4),
        "unet": UNetConfig(block_out_channels=(64, 96),
                           down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                           up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                           layers_per_block=2, num_attention_heads=(4, 4), cross_attention_dim=32,
                           norm_num_groups=16),
        "vae": VAEConfig(block_out_channels=(16, 32, 64, 64), layers_per_block=1,
                         norm_num_groups=8),
        "scheduler": MINI_SHAPES_SCHEDULER,
    }


MINI_SHAPES_WEIGHTS = ASSETS / "mini_shapes.safetensors"
MINI_SHAPES_INPAINT_WEIGHTS = ASSETS / "mini_shapes_inpaint.safetensors"  # UNet; the rest above
# Adapters shipped with sdlib, which load_lora_weights also takes by name.
SHIPPED_LORAS = {
    "mini-shapes-held-out": ASSETS / "mini_shapes_held_out_lora.safetensors",  # for mini-shapes
    # an LCM-LoRA of mini-shapes (tools/train_mini_lcm.py): sampler="lcm", guidance 1, 1-8 steps
    "mini-shapes-lcm": ASSETS / "mini_shapes_lcm_lora.safetensors",
}
SHIPPED_EMBEDDINGS = {  # textual inversion, for mini-shapes (tools/train_mini_textual_inversion.py)
    "<my-favourite>": ASSETS / "my_favourite_embedding.safetensors",
}


def inpainting(make_configs):
    """``make_configs``' model with a 9-channel UNet: latents, the mask, the masked image's latents
    (as sd-v1-5-inpainting); the rest is the same."""

    def configs():
        made = make_configs()
        return {**made, "unet": dataclasses.replace(made["unet"], in_channels=9)}

    return configs


sd15_inpainting_configs = inpainting(sd15_configs)
mini_shapes_inpaint_configs = inpainting(mini_shapes_configs)
tiny_inpaint_configs = inpainting(tiny_configs)


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named model. Its weights: a file shipped in the package (``shipped_weights``), a local copy
    named by the environment variable ``weights_env``, or the hub repo ``repo_id``; none of them
    (``tiny``): seeded random weights."""

    name: str
    description: str
    configs: Callable[[], dict]
    image_size: int
    shipped_weights: Path | None = None
    weights_env: str | None = None
    repo_id: str | None = None


PRESETS = {preset.name: preset for preset in (
    Preset("sd-v1-5", "Stable Diffusion v1.5 (real weights from $SDLIB_SD15_WEIGHTS or the hub)",
           sd15_configs, 512, weights_env="SDLIB_SD15_WEIGHTS", repo_id=SD15_REPO),
    Preset("sd-v1-5-inpainting", "Stable Diffusion v1.5 inpainting (9-channel UNet; real weights "
           "from $SDLIB_SD15_INPAINTING_WEIGHTS or the hub)", sd15_inpainting_configs, 512,
           weights_env="SDLIB_SD15_INPAINTING_WEIGHTS", repo_id=SD15_INPAINTING_REPO),
    Preset("mini-shapes", "SD in miniature, trained on procedural shapes (shipped weights)",
           mini_shapes_configs, 64, shipped_weights=MINI_SHAPES_WEIGHTS),
    Preset("mini-shapes-inpaint", "mini-shapes' inpainting model (9-channel UNet, shipped weights)",
           mini_shapes_inpaint_configs, 64, shipped_weights=MINI_SHAPES_INPAINT_WEIGHTS),
    Preset("tiny", "toy-sized random model for tests and CI (draws noise)", tiny_configs, 64),
    Preset("tiny-inpaint", "tiny with a 9-channel inpainting UNet, random", tiny_inpaint_configs,
           64),
)}


def get_preset(name) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}; choose one of {sorted(PRESETS)} (or load a "
                         "checkpoint with StableDiffusion.from_pretrained).")
    return PRESETS[name]
