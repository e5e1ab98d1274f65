"""Models from configs, and :class:`Components`, the one value every loader returns.

A loader builds the three models with zero weights (creating 1.07 B random numbers would cost ~15-20
s on a 2-core CPU, and the checkpoint's values replace them anyway), then assigns the file's
tensors. Random weights (the ``tiny`` preset, ``load_weights=False``) are zeros and then seeded
values, the same on every backend.
"""

import contextlib
import dataclasses
import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from sdlib.errors import CheckpointError
from sdlib.models import layers as L
from sdlib.models.text_encoder import CLIPTextEncoder
from sdlib.models.unet import UNet
from sdlib.models.vae import AutoencoderKL
from sdlib.sampling.schedule import SchedulerConfig
from sdlib.tokenizer import CLIPTokenizer

MODEL_NAMES = ("text_encoder", "unet", "vae")


@dataclasses.dataclass
class Components:
    """What a Stable Diffusion pipeline is made of: ``StableDiffusion(components, ...)``.

    ``dataclasses.replace(pipe.components, unet=other_unet)`` makes a pipeline with one part
    swapped.
    """

    text_encoder: CLIPTextEncoder
    unet: UNet
    vae: AutoencoderKL
    tokenizer: CLIPTokenizer
    scheduler_config: SchedulerConfig

    @property
    def models(self) -> dict:
        return {name: getattr(self, name) for name in MODEL_NAMES}


def vae_dtype(dtype):
    """The VAE overflows in float16 (activations pass 65504 at 512x512): it stays float32 then."""
    return "float32" if dtype in ("float16", "mixed_float16") else dtype


def build_models(configs, dtype="float32", zero_weights=True, with_weights=MODEL_NAMES):
    """The text encoder, UNet and VAE of ``configs`` (a dict with those keys), as a dict.

    ``dtype``: a Keras dtype policy name ("float32", "mixed_bfloat16", "bfloat16", ...; see
    ``sdlib.device`` for what "auto" resolves to). ``zero_weights``: zeros, ready for a checkpoint's
    values; else Keras' random initialisers (seed them with ``keras.utils.set_random_seed``).
    ``with_weights``: the models whose weights are created now; the others create theirs on their
    first call (a benchmark of one component builds only that one).
    """
    if dtype == "auto":
        raise ValueError('build_models needs a dtype policy; resolve "auto" first with '
                         "sdlib.device.resolve_mode.")
    check_unet_context(configs)
    with L.fast_init() if zero_weights else contextlib.nullcontext():
        models = {"text_encoder": CLIPTextEncoder(configs["text_encoder"], dtype=dtype),
                  "unet": UNet(configs["unet"], dtype=dtype),
                  "vae": AutoencoderKL(configs["vae"], dtype=vae_dtype(dtype))}
        for name in with_weights:
            if name == "unet":
                models[name].build_weights(configs["text_encoder"].max_position_embeddings)
            else:
                models[name].build_weights()
    return models


def check_unet_context(configs):
    unet_dim = configs["unet"].cross_attention_dim
    text_dim = configs["text_encoder"].hidden_size
    if unet_dim != text_dim:
        raise CheckpointError(f"The UNet attends to {unet_dim}-wide text encodings but the text "
                              f"encoder makes {text_dim}-wide ones: the components do not belong "
                              "together.")


def default_tokenizer(text_config):
    """CLIP's tokenizer (vocabulary shipped with sdlib), padded to the text encoder's positions."""
    return CLIPTokenizer.from_default(max_length=text_config.max_position_embeddings)


def randomize(model, seed):
    """Seeded random weights, identical on every backend and for any number of threads: kernels of
    variance 1/fan_in, norms near 1. Uniform draws of the same variance rather than normal ones:
    float32 uniforms cost ~4 ns each against ~44 for float64 normals, which made SD v1.5's 1.07 B
    random weights take ~30 s. Each weight has its own stream (``SeedSequence(seed).spawn``), so
    the draws run on threads (numpy's generators release the GIL while they fill an array)."""
    weights = list(model.weights)
    streams = np.random.SeedSequence(seed).spawn(len(weights))

    def fill(variable, stream):
        rng = np.random.default_rng(stream)
        shape = tuple(variable.shape)
        name = variable.path.rsplit("/", 1)[-1]
        if name == "gamma":
            value = _uniform(rng, shape, 0.1)
            value += 1.0
        elif name in ("beta", "bias"):
            value = _uniform(rng, shape, 0.02)
        else:
            fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
            std = 0.5 if name == "embeddings" else 1.0 / math.sqrt(max(fan_in, 1))
            value = _uniform(rng, shape, std)
        variable.assign(value if variable.dtype == "float32" else value.astype(variable.dtype))

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        list(pool.map(fill, weights, streams))


def _uniform(rng, shape, std):
    """Zero-mean uniform float32 values of standard deviation ``std``."""
    values = rng.random(shape, dtype=np.float32)
    values -= 0.5
    values *= np.float32(std * math.sqrt(12.0))  # U(-1/2, 1/2) has variance 1/12
    return values


def random_components(configs, dtype="float32", with_weights=MODEL_NAMES):
    """Components with seeded random weights (model i of ``MODEL_NAMES`` gets seed i), for tests,
    CI and benchmarks; ``with_weights`` as in :func:`build_models`."""
    models = build_models(configs, dtype=dtype, with_weights=with_weights)
    for name in with_weights:
        randomize(models[name], seed=MODEL_NAMES.index(name))
    return Components(**models, tokenizer=default_tokenizer(configs["text_encoder"]),
                      scheduler_config=configs["scheduler"])
