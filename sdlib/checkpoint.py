"""Reading a whole Stable Diffusion checkpoint: a diffusers folder, a single file, or a hub repo id."""

import contextlib
import dataclasses
import json
import os

from sdlib import hub, single_file
from sdlib import layers as L
from sdlib.schedulers import DDIMScheduler, SchedulerConfig
from sdlib.text_encoder import CLIPTextEncoder, TextEncoderConfig
from sdlib.tokenizer import CLIPTokenizer
from sdlib.unet import UNet, UNetConfig
from sdlib.vae import AutoencoderKL, VAEConfig
from sdlib.weights import CheckpointError, load_state_dict, read_safetensors, refuse_pickle

COMPONENTS = ("text_encoder", "unet", "vae")
WEIGHT_FILES = {"unet": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model",
                "text_encoder": "model"}
SUPPORTED_PIPELINES = ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline",
                       "StableDiffusionInpaintPipeline")


def load_components(path_or_repo_id, variant=None, token=None, config_path=None, dtype=None):
    """-> dict with ``text_encoder``, ``unet``, ``vae`` (weights loaded), ``tokenizer``, ``scheduler``."""
    path = hub.resolve(path_or_repo_id, variant=variant, token=token)
    if os.path.isdir(path):
        return load_folder(path, variant=variant, dtype=dtype)
    return load_single_file(path, config_path=config_path, dtype=dtype)


def _read_json(path, what):
    if not os.path.isfile(path):
        raise CheckpointError(f"{what} is missing: no file at {path}.")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path} is not valid JSON ({error}).") from None


def check_pipeline_family(folder):
    """Refuse folders of other model families, saying which one it looks like."""
    index_path = os.path.join(folder, "model_index.json")
    if not os.path.isfile(index_path):
        return
    index = _read_json(index_path, "model_index.json")
    name = index.get("_class_name", "")
    if "text_encoder_2" in index or "XL" in name:
        raise CheckpointError(f"{folder} is an SDXL pipeline ({name}); sdlib runs Stable Diffusion "
                              "v1 (and v2) only.")
    if "transformer" in index or "StableDiffusion3" in name:
        raise CheckpointError(f"{folder} looks like a diffusion-transformer pipeline ({name}, e.g. "
                              "SD3/Flux); sdlib runs UNet-based Stable Diffusion v1 (and v2) only.")
    if name and name not in SUPPORTED_PIPELINES:
        raise CheckpointError(f"{folder} holds a {name}; sdlib loads StableDiffusionPipeline "
                              "folders.")


def _weights_path(folder, component, variant):
    """The component's safetensors file (``variant`` first), or a clear error."""
    subfolder = os.path.join(folder, component)
    if not os.path.isdir(subfolder):
        raise CheckpointError(f"{folder} has no {component}/ folder; a diffusers Stable Diffusion "
                              f"folder needs {', '.join(COMPONENTS)}, tokenizer and scheduler.")
    stem = WEIGHT_FILES[component]
    names = [f"{stem}.{variant}.safetensors"] if variant else []
    names += [f"{stem}.safetensors", f"{stem}.fp16.safetensors", f"{stem}.bf16.safetensors"]
    for name in names:
        candidate = os.path.join(subfolder, name)
        if os.path.isfile(candidate) or os.path.isfile(candidate + ".index.json"):
            return candidate
    pickles = [name for name in sorted(os.listdir(subfolder)) if name.endswith((".bin", ".ckpt"))]
    if pickles:
        refuse_pickle(os.path.join(subfolder, pickles[0]))
    wanted = names[0]
    raise CheckpointError(f"{subfolder} holds no {wanted} (found: {sorted(os.listdir(subfolder))}).")


def _read_weights(path):
    """One safetensors file, or the shards listed in its ``.index.json``."""
    if os.path.isfile(path):
        return read_safetensors(path)
    index = _read_json(path + ".index.json", "the shard index")
    state = {}
    for shard in sorted(set(index.get("weight_map", {}).values())):
        state.update(read_safetensors(os.path.join(os.path.dirname(path), shard)))
    return state


def read_configs(folder):
    """The three model configs and the scheduler config of a diffusers folder."""
    return {
        "text_encoder": TextEncoderConfig.from_diffusers(
            _read_json(os.path.join(folder, "text_encoder", "config.json"), "text_encoder/config.json")),
        "unet": UNetConfig.from_diffusers(
            _read_json(os.path.join(folder, "unet", "config.json"), "unet/config.json")),
        "vae": VAEConfig.from_diffusers(
            _read_json(os.path.join(folder, "vae", "config.json"), "vae/config.json")),
        "scheduler": SchedulerConfig.from_diffusers(_read_json(
            os.path.join(folder, "scheduler", "scheduler_config.json"), "scheduler_config.json")),
    }


def vae_dtype(dtype):
    """The VAE overflows in float16 (activations pass 65504 at 512x512): it stays float32 then."""
    return "float32" if dtype in ("float16", "mixed_float16") else dtype


MODEL_NAMES = ("text_encoder", "unet", "vae")


def build_models(configs, dtype=None, fast=True, with_weights=MODEL_NAMES):
    """Models with zero weights (``fast``) ready for ``load_state_dict``, else random ones.

    ``dtype``: a Keras dtype policy name ("float32", "mixed_bfloat16", "mixed_float16", ...), or
    "auto": the fastest for this UNet on this device (``sdlib.bench.fastest_mode``).
    ``with_weights``: the models whose weights are created now; the others create theirs on their
    first call (a benchmark of one component builds only that one).
    """
    if dtype == "auto":
        from sdlib import bench

        dtype = bench.MODES[bench.fastest_mode(configs["unet"])]["dtype"]
    with L.fast_init() if fast else contextlib.nullcontext():
        models = {"text_encoder": CLIPTextEncoder(configs["text_encoder"], dtype=dtype),
                  "unet": UNet(configs["unet"], dtype=dtype),
                  "vae": AutoencoderKL(configs["vae"], dtype=vae_dtype(dtype))}
        for name in with_weights:
            if name == "unet":
                models[name].build_weights(configs["text_encoder"].max_position_embeddings)
            else:
                models[name].build_weights()
    return models


def _tokenizer(folder, text_config):
    tokenizer_dir = os.path.join(folder, "tokenizer")
    if not os.path.isdir(tokenizer_dir):
        return CLIPTokenizer.from_default(max_length=text_config.max_position_embeddings)
    tokenizer = CLIPTokenizer.from_folder(tokenizer_dir)
    # An unset model_max_length is saved as a huge number; the position table bounds it.
    tokenizer.max_length = min(tokenizer.max_length, text_config.max_position_embeddings)
    return tokenizer


def _check_unet_context(configs):
    unet_dim = configs["unet"].cross_attention_dim
    text_dim = configs["text_encoder"].hidden_size
    if unet_dim != text_dim:
        raise CheckpointError(f"The UNet attends to {unet_dim}-wide text encodings but the text "
                              f"encoder makes {text_dim}-wide ones: the components do not belong "
                              "together.")


def load_folder(folder, variant=None, dtype=None):
    check_pipeline_family(folder)
    configs = read_configs(folder)
    _check_unet_context(configs)
    models = build_models(configs, dtype=dtype)
    for component in COMPONENTS:
        weights_path = _weights_path(folder, component, variant)
        state = _read_weights(weights_path)
        if component == "text_encoder":
            state = strip_text_model_prefix(state)
        load_state_dict(models[component], state, component, source=weights_path)
    return {**models, "tokenizer": _tokenizer(folder, configs["text_encoder"]),
            "scheduler": DDIMScheduler(configs["scheduler"])}


def strip_text_model_prefix(state):
    """transformers 5 saves CLIPTextModel keys without ``text_model.``; older files have it."""
    ignored = {key for key in state if key.endswith("position_ids")}
    return {key.removeprefix("text_model."): value for key, value in state.items()
            if key not in ignored}


def load_single_file(path, config_path=None, dtype=None):
    """An original-layout single file; the architecture comes from ``config_path`` or SD v1.5."""
    state = read_safetensors(path)
    family = single_file.detect_family(state)
    if family:
        raise CheckpointError(f"{path} looks like {family}; sdlib loads Stable Diffusion v1 "
                              "single-file checkpoints.")
    if config_path is not None:
        configs = read_configs(config_path)
        folder = config_path
    else:
        from sdlib import presets

        configs = presets.sd15_configs()
        folder = None
    _check_unet_context(configs)
    parts, unknown = single_file.split_components(state, configs["unet"], configs["vae"])
    if unknown:
        raise CheckpointError(f"{path} has {len(unknown)} tensor(s) outside the UNet, VAE and text "
                              f"encoder: {', '.join(sorted(unknown)[:5])}.")
    models = build_models(configs, dtype=dtype)
    for component in COMPONENTS:
        state_part = parts[component]
        if component == "text_encoder":
            state_part = strip_text_model_prefix(state_part)
        load_state_dict(models[component], state_part, component, source=path)
    tokenizer = (_tokenizer(folder, configs["text_encoder"]) if folder else
                 CLIPTokenizer.from_default(configs["text_encoder"].max_position_embeddings))
    return {**models, "tokenizer": tokenizer, "scheduler": DDIMScheduler(configs["scheduler"])}


# === sdlib's own single-file format ===
# One safetensors file: "<component>.<diffusers name>" keys in PyTorch layout (so the strict loader
# above reads them), configs as JSON in the header's metadata. Used for the shipped mini-shapes model.

def save_sdlib_file(models, configs, path, dtype="float16"):
    """Write text encoder, UNet and VAE weights plus their configs to one safetensors file."""
    import numpy as np
    from safetensors.numpy import save_file

    from sdlib.weights import keras_weight_map, to_torch_layout

    tensors = {}
    for component in COMPONENTS:
        for name, (variable, layout) in keras_weight_map(models[component]).items():
            array = to_torch_layout(np.asarray(variable.numpy(), dtype=np.float32), layout)
            tensors[f"{component}.{name}"] = np.ascontiguousarray(array.astype(dtype))
    metadata = {"format": "sdlib/1",
                "configs": json.dumps({key: dataclasses.asdict(value) for key, value in configs.items()})}
    save_file(tensors, path, metadata=metadata)


def read_sdlib_configs(path):
    from safetensors import safe_open

    with safe_open(path, framework="np") as handle:
        metadata = handle.metadata() or {}
    if metadata.get("format") != "sdlib/1":
        raise CheckpointError(f"{path} is not an sdlib model file (no 'sdlib/1' format metadata).")
    raw = json.loads(metadata["configs"])
    classes = {"text_encoder": TextEncoderConfig, "unet": UNetConfig, "vae": VAEConfig,
               "scheduler": SchedulerConfig}
    return {name: _from_dict(cls, raw[name]) for name, cls in classes.items()}


def _from_dict(cls, values):
    """A config dataclass from saved JSON: lists back to tuples, unknown (retired) keys dropped."""
    names = {field.name for field in dataclasses.fields(cls)}
    return cls(**{key: tuple(value) if isinstance(value, list) else value
                  for key, value in values.items() if key in names})


def load_sdlib_file(path, dtype=None):
    configs = read_sdlib_configs(path)
    state = read_safetensors(path)
    models = build_models(configs, dtype=dtype)
    for component in COMPONENTS:
        prefix = component + "."
        part = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
        load_state_dict(models[component], part, component, source=path)
    tokenizer = CLIPTokenizer.from_default(configs["text_encoder"].max_position_embeddings)
    return {**models, "tokenizer": tokenizer, "scheduler": DDIMScheduler(configs["scheduler"])}
