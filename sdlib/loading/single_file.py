"""Reading the original Stable Diffusion single file: its keys renamed to diffusers names.

The CompVis/RunwayML file (``v1-5-pruned-emaonly.safetensors``) stores the UNet under
``model.diffusion_model.``, the VAE under ``first_stage_model.`` and the CLIP text encoder under
``cond_stage_model.transformer.``. The UNet numbers its blocks flat (``input_blocks.4``); diffusers
nests them (``down_blocks.1.resnets.0``). The renaming needs the config (levels, layers per block,
which levels have attention), so it is computed, not tabulated; ``tests/fixtures/sd15_keymap.tsv``
checks it.
"""

import dataclasses
import re

from sdlib.errors import CheckpointError
from sdlib.loading.build import MODEL_NAMES, Components, build_models, default_tokenizer
from sdlib.loading.folder import folder_tokenizer, read_folder_configs
from sdlib.loading.state_dict import load_state_dict, strip_text_model_prefix
from sdlib.presets import sd15_configs

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model.transformer."
IGNORED = re.compile(r"^(alphas_cumprod.*|betas|model_ema\..*|.*position_ids|"
                     r"alphas_cumprod_prev|sqrt_.*|log_one_minus_alphas_cumprod|posterior_.*|"
                     r"logvar)$")

_UNET_RESNET = {"in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj",
                "out_layers.0": "norm2", "out_layers.3": "conv2",
                "skip_connection": "conv_shortcut"}
_VAE_ATTENTION = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v",
                  "proj_out": "to_out.0"}


def detect_family(keys) -> str | None:
    """Name the model family of a single-file checkpoint that is not SD v1 style, else None."""
    keys = list(keys)
    if any(key.startswith("conditioner.embedders.") for key in keys):
        return "SDXL (it has conditioner.embedders.* text encoders)"
    if any(key.startswith("model.diffusion_model.joint_blocks.") for key in keys):
        return "Stable Diffusion 3 (an MMDiT, not a UNet)"
    if any(key.startswith("cond_stage_model.model.") for key in keys):
        return "Stable Diffusion 2.x (an OpenCLIP text encoder)"
    if not any(key.startswith(UNET_PREFIX) for key in keys):
        return "not a Stable Diffusion checkpoint (no model.diffusion_model.* keys)"
    return None


def split_components(state_dict, unet_config, vae_config):
    """A single-file state dict split into diffusers-named "unet", "vae", "text_encoder" dicts."""
    parts = {"unet": {}, "vae": {}, "text_encoder": {}}
    unknown = []
    for key, value in state_dict.items():
        if key.startswith(UNET_PREFIX):
            parts["unet"][unet_key(key[len(UNET_PREFIX):], unet_config)] = value
        elif key.startswith(VAE_PREFIX):
            parts["vae"][vae_key(key[len(VAE_PREFIX):], vae_config)] = value
        elif key.startswith(TEXT_PREFIX):
            name = key[len(TEXT_PREFIX):]
            if not IGNORED.match(name):
                parts["text_encoder"][name] = value
        elif not IGNORED.match(key):
            unknown.append(key)
    return parts, unknown


def unet_key(key, config):
    """``input_blocks.4.1.proj_in.weight`` -> ``down_blocks.1.attentions.0.proj_in.weight``."""
    per_level = config.layers_per_block + 1
    simple = {"time_embed.0.": "time_embedding.linear_1.",
              "time_embed.2.": "time_embedding.linear_2.", "input_blocks.0.0.": "conv_in.",
              "out.0.": "conv_norm_out.", "out.2.": "conv_out."}
    for old, new in simple.items():
        if key.startswith(old):
            return new + key[len(old):]
    match = re.match(r"input_blocks\.(\d+)\.(\d+)\.(.*)", key)
    if match:
        number, part, rest = int(match[1]), int(match[2]), match[3]
        level, index = divmod(number - 1, per_level)
        if index == config.layers_per_block:  # the downsampler closes the level
            return f"down_blocks.{level}.downsamplers.0.{rest.replace('op.', 'conv.', 1)}"
        kind = "resnets" if part == 0 else "attentions"
        return f"down_blocks.{level}.{kind}.{index}.{_unet_inner(kind, rest)}"
    match = re.match(r"middle_block\.(\d+)\.(.*)", key)
    if match:
        part, rest = int(match[1]), match[2]
        kind, index = ("attentions", 0) if part == 1 else ("resnets", part // 2)
        return f"mid_block.{kind}.{index}.{_unet_inner(kind, rest)}"
    match = re.match(r"output_blocks\.(\d+)\.(\d+)\.(.*)", key)
    if match:
        number, part, rest = int(match[1]), int(match[2]), match[3]
        level, index = divmod(number, per_level)
        has_attention = config.up_block_types[level] == "CrossAttnUpBlock2D"
        if part == 0:
            return f"up_blocks.{level}.resnets.{index}.{_unet_inner('resnets', rest)}"
        if part == 1 and has_attention:
            return f"up_blocks.{level}.attentions.{index}.{rest}"
        return f"up_blocks.{level}.upsamplers.0.{rest}"
    return key  # unknown: the strict loader will name it


def _unet_inner(kind, rest):
    if kind == "resnets":
        for old, new in _UNET_RESNET.items():
            if rest.startswith(old + "."):
                return new + rest[len(old):]
    return rest


def vae_key(key, config):
    """``decoder.up.0.block.1.nin_shortcut.weight`` ->
    ``decoder.up_blocks.3.resnets.1.conv_shortcut...``."""
    levels = len(config.block_out_channels)
    key = key.replace("norm_out.", "conv_norm_out.").replace("nin_shortcut.", "conv_shortcut.")
    match = re.match(r"(encoder|decoder)\.mid\.(block_1|block_2|attn_1)\.(.*)", key)
    if match:
        side, part, rest = match.groups()
        if part == "attn_1":
            name, _, suffix = rest.partition(".")
            return f"{side}.mid_block.attentions.0.{_VAE_ATTENTION.get(name, name)}.{suffix}"
        return f"{side}.mid_block.resnets.{0 if part == 'block_1' else 1}.{rest}"
    match = re.match(r"encoder\.down\.(\d+)\.(block\.(\d+)|downsample)\.(.*)", key)
    if match:
        level, rest = match[1], match[4]
        if match[3] is not None:
            return f"encoder.down_blocks.{level}.resnets.{match[3]}.{rest}"
        return f"encoder.down_blocks.{level}.downsamplers.0.{rest}"
    match = re.match(r"decoder\.up\.(\d+)\.(block\.(\d+)|upsample)\.(.*)", key)
    if match:
        level, rest = levels - 1 - int(match[1]), match[4]  # the original counts up from the bottom
        if match[3] is not None:
            return f"decoder.up_blocks.{level}.resnets.{match[3]}.{rest}"
        return f"decoder.up_blocks.{level}.upsamplers.0.{rest}"
    return key


def single_file_configs(config_path=None, header=None):
    """A single file has no configs: the diffusers folder ``config_path``'s, else SD v1.5's, with
    the UNet's input channels read off its first conv (9 in an inpainting file) in ``header``."""
    if config_path is not None:
        return read_folder_configs(config_path)
    configs = sd15_configs()
    conv_in = (header or {}).get(UNET_PREFIX + "input_blocks.0.0.weight", {}).get("shape")
    if conv_in and len(conv_in) == 4 and conv_in[1] != configs["unet"].in_channels:
        configs["unet"] = dataclasses.replace(configs["unet"], in_channels=conv_in[1])
    return configs


def load_single_file(path, state, configs, dtype="float32", config_path=None):
    """Components of an original-layout single file whose tensors ``state`` are read already."""
    family = detect_family(state)
    if family:
        raise CheckpointError(f"{path} looks like {family}; sdlib loads Stable Diffusion v1 "
                              "single-file checkpoints.")
    parts, unknown = split_components(state, configs["unet"], configs["vae"])
    if unknown:
        raise CheckpointError(f"{path} has {len(unknown)} tensor(s) outside the UNet, VAE and text "
                              f"encoder: {', '.join(sorted(unknown)[:5])}.")
    models = build_models(configs, dtype=dtype)
    for component in MODEL_NAMES:
        part = parts[component]
        if component == "text_encoder":
            part = strip_text_model_prefix(part)
        load_state_dict(models[component], part, component, source=path)
    tokenizer = (folder_tokenizer(config_path, configs["text_encoder"]) if config_path else
                 default_tokenizer(configs["text_encoder"]))
    return Components(**models, tokenizer=tokenizer, scheduler_config=configs["scheduler"])
