"""Training a LoRA adapter (Hu et al. 2021): the base weights frozen, a low-rank update learned
beside each targeted layer, with Keras' own ``enable_lora`` (``Dense`` and ``Conv2D``: the kernel
reads ``W + (alpha / r) * A @ B``). Any model, any data: the loss is the diffusion loss of
``sdlib.training.diffusion``.

``enable_lora`` cannot be undone, so training runs on copies of the models and returns the learned
updates as :class:`sdlib.loading.lora.LoraModule` (PyTorch layout, as LoRA files hold them):
``save_lora_file`` writes them in diffusers' format and ``pipe.load_lora_weights`` merges them.
"""

import re

import keras
import numpy as np
from keras import ops

from sdlib.loading.lora import LoraModule
from sdlib.models import layers as L
from sdlib.training.diffusion import train_diffusion

# The UNet's attention and feed-forward layers: where text meets the picture (a common choice for
# SD LoRA; diffusers' training scripts take to_q, to_k, to_v, to_out.0), and the text encoder's.
UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj",
                "ff.net.2")
TEXT_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


def copy_model(model, *build_args):
    """A new model of the same class, config and dtype, holding the same weights (``build_args``:
    what its ``build_weights`` takes, e.g. the UNet's context length)."""
    twin = type(model)(model.config, dtype=model.dtype_policy)
    twin.build_weights(*build_args)
    twin.set_weights(model.get_weights())
    return twin


def targeted_layers(model, targets):
    """``(name, layer)`` for the linear and conv layers whose name ends with a target at a "."
    boundary (PEFT's ``target_modules`` rule)."""
    pattern = re.compile(r"(.*\.)?(" + "|".join(re.escape(t) for t in targets) + r")$")
    return [(name, layer) for name, layer in L.named_leaf_layers(model)
            if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D))
            and pattern.match(name)]


def enable_lora(model, rank, alpha, targets):
    """Freeze every weight of ``model`` and add trainable rank-``rank`` updates to the targeted
    layers (Keras' ``enable_lora``; A starts random, B at zero, so training starts at the base
    model). Returns the layers."""
    for variable in model.variables:
        variable.trainable = False
    layers = targeted_layers(model, targets)
    if not layers:
        raise ValueError(f"No linear or conv layer of the {type(model).__name__} ends with any of "
                         f"{list(targets)}.")
    for _, layer in layers:
        layer.enable_lora(rank, lora_alpha=alpha)
    return layers


def lora_modules(component, layers):
    """The learned updates of ``enable_lora`` layers, in PyTorch layout:
    ``{(component, name): LoraModule}``."""
    modules = {}
    for name, layer in layers:
        # A: (in, r), or (kh, kw, in, r) for a conv; B: (r, out)
        a = ops.convert_to_numpy(layer.lora_kernel_a).astype(np.float32)
        b = ops.convert_to_numpy(layer.lora_kernel_b).astype(np.float32)
        if a.ndim == 4:
            down = np.transpose(a, (3, 2, 0, 1))  # (r, in, kh, kw)
            up = b.T[:, :, None, None]  # (out, r, 1, 1)
        else:
            down, up = a.T, b.T  # (r, in), (out, r)
        modules[component, name] = LoraModule(down, up, float(layer.lora_alpha))
    return modules


def train_lora(text_encoder, unet, latents, token_ids, empty_ids, scheduler_config, steps,
               rank=4, alpha=4.0, targets=UNET_TARGETS, text_targets=(), batch_size=32,
               learning_rate=1e-3, seed=0, ema_momentum=0.99, log_every=100, callbacks=(),
               jit_compile=True, timestep_range=None, loss_weights=None):
    """Learn a LoRA of the UNet (``targets``) and, with ``text_targets``, of the text encoder, on
    scaled latents and their captions; the models given stay unchanged. Returns
    ``{(component, layer name): LoraModule}``."""
    keras.utils.set_random_seed(seed)
    unet = copy_model(unet, text_encoder.config.max_position_embeddings)
    modules = {"unet": enable_lora(unet, rank, alpha, targets)}
    if text_targets:
        text_encoder = copy_model(text_encoder)
        modules["text_encoder"] = enable_lora(text_encoder, rank, alpha, text_targets)
    train_diffusion(text_encoder, unet, latents, token_ids, empty_ids, scheduler_config,
                    steps=steps, batch_size=batch_size, learning_rate=learning_rate, seed=seed,
                    ema_momentum=ema_momentum, log_every=log_every, callbacks=callbacks,
                    jit_compile=jit_compile, train_text_encoder=None if text_targets else False,
                    warmup_steps=min(100, steps // 5), timestep_range=timestep_range,
                    loss_weights=loss_weights)
    return {key: update for component, layers in modules.items()
            for key, update in lora_modules(component, layers).items()}
