"""sdlib's own single-file format, used for the shipped models (mini-shapes).

One safetensors file: ``<component>.<diffusers name>`` keys in PyTorch layout (so the strict loader
reads them as it reads a diffusers folder), and the configs as JSON in the header's metadata, so the
file alone says what architecture to build. A file may hold only some of the models and name a
``base`` file beside it for the others: mini-shapes-inpaint ships its UNet (8 MB) and takes the text
encoder and VAE from mini-shapes.
"""

import json
import os

from safetensors.numpy import save_file

from sdlib.errors import CheckpointError
from sdlib.loading.build import MODEL_NAMES, Components, build_models, default_tokenizer
from sdlib.loading.safetensors import read_metadata, read_safetensors
from sdlib.loading.state_dict import load_state_dict, torch_state_dict
from sdlib.models.text_encoder import TextEncoderConfig
from sdlib.models.unet import UNetConfig
from sdlib.models.vae import VAEConfig
from sdlib.sampling.schedule import SchedulerConfig

FORMAT = "sdlib/1"
CONFIG_CLASSES = {"text_encoder": TextEncoderConfig, "unet": UNetConfig, "vae": VAEConfig,
                  "scheduler": SchedulerConfig}


def is_sdlib_file(metadata):
    return metadata.get("format") == FORMAT


def save_sdlib_file(models, configs, path, dtype="float16", components=MODEL_NAMES, base=None):
    """Write the weights of ``components`` (all three by default) plus every config to one
    safetensors file; ``base``: the file beside it that holds the other components."""
    if set(components) != set(MODEL_NAMES) and base is None:
        raise ValueError("a file with only some of the models needs base=, the file with the rest.")
    tensors = {}
    for component in components:
        tensors.update(torch_state_dict(models[component], dtype, prefix=component + "."))
    metadata = {"format": FORMAT,
                "configs": json.dumps({key: value.to_dict() for key, value in configs.items()})}
    if base is not None:
        metadata["base"] = os.path.basename(base)
    save_file(tensors, path, metadata=metadata)


def read_sdlib_configs(path):
    metadata = read_metadata(path)
    if not is_sdlib_file(metadata):
        raise CheckpointError(f"{path} is not an sdlib model file (no '{FORMAT}' format metadata).")
    raw = json.loads(metadata["configs"])
    return {name: cls.from_dict(raw[name]) for name, cls in CONFIG_CLASSES.items()}


def load_sdlib_file(path, configs, dtype="float32"):
    """Components of an sdlib file, built from ``configs`` (``read_sdlib_configs``); the models the
    file does not hold come from its ``base`` file."""
    state = read_safetensors(path)
    base = read_metadata(path).get("base")
    if base is not None:
        base = os.path.join(os.path.dirname(os.fspath(path)), base)
        held = {key.split(".", 1)[0] for key in state}
        state.update({key: value for key, value in read_safetensors(base).items()
                      if key.split(".", 1)[0] not in held})
    models = build_models(configs, dtype=dtype)
    for component in MODEL_NAMES:
        prefix = component + "."
        part = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
        load_state_dict(models[component], part, component, source=path)
    return Components(**models, tokenizer=default_tokenizer(configs["text_encoder"]),
                      scheduler_config=configs["scheduler"])
