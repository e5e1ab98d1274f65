"""A diffusers folder: ``model_index.json``, ``unet/``, ``vae/``, ``text_encoder/``,
``tokenizer/``, ``scheduler/`` (the layout ``StableDiffusionPipeline.save_pretrained`` writes),
read and written."""

import json
import os

from safetensors.numpy import save_file

from sdlib.config import DIFFUSERS_FORMAT_VERSION, read_json
from sdlib.errors import CheckpointError
from sdlib.loading.build import MODEL_NAMES, Components, build_models, default_tokenizer
from sdlib.loading.safetensors import read_weights, refuse_pickle
from sdlib.loading.state_dict import load_state_dict, strip_text_model_prefix, torch_state_dict
from sdlib.models.text_encoder import TextEncoderConfig
from sdlib.models.unet import UNetConfig
from sdlib.models.vae import VAEConfig
from sdlib.sampling.schedule import SchedulerConfig
from sdlib.tokenizer import CLIPTokenizer

WEIGHT_FILES = {"unet": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model",
                "text_encoder": "model"}
SUPPORTED_PIPELINES = ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline",
                       "StableDiffusionInpaintPipeline",
                       # LCM-distilled SD v1: the same parts, a UNet with time_cond_proj_dim
                       "LatentConsistencyModelPipeline", "LatentConsistencyModelImg2ImgPipeline")


def check_pipeline_family(folder):
    """Refuse folders of other model families, saying which one it looks like."""
    index = read_json(os.path.join(folder, "model_index.json"), "model_index.json", optional=True)
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


def read_folder_configs(folder):
    """The three model configs and the scheduler config of a diffusers folder."""
    check_pipeline_family(folder)

    def config(component, file_name="config.json"):
        return read_json(os.path.join(folder, component, file_name), f"{component}/{file_name}")

    return {
        "text_encoder": TextEncoderConfig.from_diffusers(config("text_encoder")),
        "unet": UNetConfig.from_diffusers(config("unet")),
        "vae": VAEConfig.from_diffusers(config("vae")),
        "scheduler": SchedulerConfig.from_diffusers(config("scheduler", "scheduler_config.json")),
    }


def weights_path(folder, component, variant):
    """The component's safetensors file (``variant`` first), or a clear error."""
    subfolder = os.path.join(folder, component)
    if not os.path.isdir(subfolder):
        raise CheckpointError(f"{folder} has no {component}/ folder; a diffusers Stable Diffusion "
                              f"folder needs {', '.join(MODEL_NAMES)}, tokenizer and scheduler.")
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
    found = sorted(os.listdir(subfolder))
    raise CheckpointError(f"{subfolder} holds no {wanted} (found: {found}).")


def folder_tokenizer(folder, text_config):
    """The folder's own ``tokenizer/`` when it has one, else CLIP's shipped vocabulary."""
    tokenizer_dir = os.path.join(folder, "tokenizer")
    if not os.path.isdir(tokenizer_dir):
        return default_tokenizer(text_config)
    tokenizer = CLIPTokenizer.from_folder(tokenizer_dir)
    # An unset model_max_length is saved as a huge number; the position table bounds it.
    tokenizer.max_length = min(tokenizer.max_length, text_config.max_position_embeddings)
    return tokenizer


def load_folder(folder, configs, dtype="float32", variant=None):
    """Components of a diffusers folder, built from ``configs`` (``read_folder_configs``)."""
    models = build_models(configs, dtype=dtype)
    for component in MODEL_NAMES:
        path = weights_path(folder, component, variant)
        state = read_weights(path, mapped=True)  # each tensor is converted once
        if component == "text_encoder":
            state = strip_text_model_prefix(state)
        load_state_dict(models[component], state, component, source=path)
    return Components(**models, tokenizer=folder_tokenizer(folder, configs["text_encoder"]),
                      scheduler_config=configs["scheduler"])


# === Writing ===
LIBRARIES = {"unet": ("diffusers", "UNet2DConditionModel"), "vae": ("diffusers", "AutoencoderKL"),
             "text_encoder": ("transformers", "CLIPTextModel"),
             "tokenizer": ("transformers", "CLIPTokenizer"),
             "scheduler": ("diffusers", "DDIMScheduler")}


def save_folder(components, folder, image_size, dtype=None):
    """Write ``components`` as a diffusers ``StableDiffusionPipeline`` folder (an inpainting
    pipeline for a 9-channel UNet) that diffusers' ``from_pretrained`` opens, and sdlib's.
    ``image_size`` (height, width) becomes the configs' default ``sample_size``; ``dtype``
    ("float32", "float16", ...) converts the weights, None keeps them as they are."""
    height, _ = image_size
    factor = components.vae.config.scale_factor
    text_encoder, tokenizer = components.text_encoder, components.tokenizer
    if text_encoder.config.vocab_size != len(tokenizer):
        raise ValueError(f"The text encoder has {text_encoder.config.vocab_size} token embeddings "
                         f"but the tokenizer {len(tokenizer)} tokens; they must match to save.")
    configs = {
        "unet": components.unet.config.to_diffusers(sample_size=height // factor),
        "vae": components.vae.config.to_diffusers(sample_size=height),
        "text_encoder": text_encoder.config.to_diffusers(tokenizer.bos_id, tokenizer.eos_id,
                                                         tokenizer.pad_id),
    }
    os.makedirs(folder, exist_ok=True)

    def write_json(relative, values):
        path = os.path.join(folder, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(values, handle, indent=2)
            handle.write("\n")

    for component in MODEL_NAMES:
        write_json(os.path.join(component, "config.json"), configs[component])
        # Real SD v1 files keep transformers' "text_model." prefix; transformers 4 and 5 read it.
        prefix = "text_model." if component == "text_encoder" else ""
        tensors = torch_state_dict(getattr(components, component), dtype, prefix)
        path = os.path.join(folder, component, WEIGHT_FILES[component] + ".safetensors")
        save_file(tensors, path, metadata={"format": "pt"})  # transformers wants the format
    write_json(os.path.join("scheduler", "scheduler_config.json"),
               components.scheduler_config.to_diffusers())
    tokenizer.save_folder(os.path.join(folder, "tokenizer"))
    inpainting = components.unet.config.in_channels > components.vae.config.latent_channels
    pipeline = "StableDiffusionInpaintPipeline" if inpainting else "StableDiffusionPipeline"
    write_json("model_index.json", {
        "_class_name": pipeline,
        "_diffusers_version": DIFFUSERS_FORMAT_VERSION,
        **{name: list(library) for name, library in LIBRARIES.items()},
        "safety_checker": [None, None], "feature_extractor": [None, None],
        "image_encoder": [None, None], "requires_safety_checker": False,
    })
