"""Checks at the public surface: each error says what was wrong and what would be right."""

import math
import numbers

import numpy as np


def check_prompt(prompt, name="prompt"):
    """A string or a non-empty list/tuple of strings -> list of strings."""
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, (list, tuple)):
        if not prompt:
            raise ValueError(f"{name} is an empty list; pass a string or a list of at least one "
                             "string.")
        for index, item in enumerate(prompt):
            if not isinstance(item, str):
                raise TypeError(f"{name}[{index}] is a {type(item).__name__}; every {name} must be "
                                "a string.")
        return list(prompt)
    raise TypeError(f"{name} must be a string or a list of strings, got a "
                    f"{type(prompt).__name__}.")


def _check_int(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__}).")
    return int(value)


def check_batch_size(batch_size, prompts):
    """With one prompt, ``batch_size`` images; with a list of n prompts, batch_size is 1 or n."""
    batch_size = _check_int(batch_size, "batch_size")
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size}.")
    if len(prompts) > 1:
        if batch_size not in (1, len(prompts)):
            raise ValueError(f"batch_size={batch_size} conflicts with the {len(prompts)} prompts "
                             f"given: a list of prompts makes one image each, so leave batch_size "
                             f"at 1 (or set it to {len(prompts)}).")
        return len(prompts)
    return batch_size


def check_generate_batch(batch_size, context):
    batch_size = _check_int(batch_size, "batch_size")
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size}.")
    rows = context.shape[0]
    if rows > 1:
        if batch_size not in (1, rows):
            raise ValueError(f"batch_size={batch_size} conflicts with a context of {rows} "
                             f"encodings; leave batch_size at 1 (or set it to {rows}).")
        return rows
    return batch_size


def check_num_steps(num_steps, max_steps=1000, hint="25-50 is usual for DDIM"):
    """An int in 1..``max_steps``: the training timesteps, or fewer for a sampler that says so
    (LCM: its ``original_inference_steps``); ``hint`` names the sampler's usual range."""
    num_steps = _check_int(num_steps, "num_steps")
    if not 1 <= num_steps <= max_steps:
        raise ValueError(f"num_steps must be between 1 and {max_steps}, got {num_steps} ({hint}).")
    return num_steps


def check_guidance_scale(guidance_scale):
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, numbers.Real):
        raise TypeError(f"guidance_scale must be a number, got {guidance_scale!r} "
                        f"({type(guidance_scale).__name__}).")
    value = float(guidance_scale)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"guidance_scale must be a finite number >= 0, got {guidance_scale} "
                         "(7.5 is the usual value; <= 1 turns guidance off).")
    return value


def check_seed(seed):
    """None, a non-negative int (one generator for the batch), or a list of them (one per image:
    an image's noise then depends on its own seed only, not on its batch or position)."""
    if seed is None:
        return None
    if isinstance(seed, (list, tuple)) or (isinstance(seed, np.ndarray) and seed.ndim == 1):
        if len(seed) == 0:
            raise ValueError("seed is an empty list; give one seed per image (or one int).")
        return [_check_one_seed(value) for value in seed]
    return _check_one_seed(seed)


def _check_one_seed(seed):
    seed = _check_int(seed, "seed")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative int (or None for a random one), got {seed}.")
    return seed


def check_seed_count(seed, batch_size):
    """A list of seeds needs one per image of the batch."""
    if isinstance(seed, list) and len(seed) != batch_size:
        raise ValueError(f"{len(seed)} seeds for a batch of {batch_size} images; give one seed per "
                         "image, or one int for the whole batch.")


def check_negative_prompt(negative_prompt, batch_size):
    """None -> "" per image; a string -> repeated; a list must have one entry per image."""
    if negative_prompt is None:
        return [""] * batch_size
    negatives = check_prompt(negative_prompt, name="negative_prompt")
    if len(negatives) == 1:
        return negatives * batch_size
    if len(negatives) != batch_size:
        raise ValueError(f"negative_prompt has {len(negatives)} entries for {batch_size} images; "
                         "give one string, or one per image.")
    return negatives


def check_no_negatives(negative_prompt, unconditional_context):
    """A UNet that embeds the guidance scale (LCM-distilled, ``time_cond_proj_dim``) runs no
    unconditional pass, so a negative prompt would silently do nothing: refuse it."""
    given = [name for name, value in (("negative_prompt", negative_prompt),
                                      ("unconditional_context", unconditional_context))
             if value is not None]
    if given:
        raise ValueError(f"{' and '.join(given)} given, but this UNet embeds the guidance scale "
                         "(time_cond_proj_dim: LCM-distilled, guided by the empty prompt when it "
                         "was distilled) and runs no unconditional pass, so there is nothing for "
                         "a negative prompt to steer; leave it None and set the strength with "
                         "guidance_scale (diffusers' LatentConsistencyModelPipeline takes no "
                         "negative prompt either).")


def check_context(context, expected):
    """A text encoding: finite float array (B, *expected), expected = (tokens, hidden_size)."""
    try:
        context = np.asarray(context, dtype=np.float32)
    except (TypeError, ValueError):
        raise TypeError("context must be a float array of shape (batch, 77, hidden), as returned "
                        f"by encode_text; got a {type(context).__name__}.") from None
    if context.ndim == 2:
        context = context[None]
    expected = tuple(expected)
    if context.ndim != 3 or context.shape[1:] != expected or context.shape[0] < 1:
        raise ValueError(f"context has shape {context.shape}; expected (batch, {expected[0]}, "
                         f"{expected[1]}) as returned by encode_text.")
    if not np.all(np.isfinite(context)):
        raise ValueError("context holds NaN or inf values.")
    return context


def check_diffusion_noise(noise, shape, scale_factor):
    """The initial latent: a finite float array of exactly ``shape`` (B, H/f, W/f, C), NHWC."""
    array = np.asarray(noise)
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"diffusion_noise must be a float array, got dtype {array.dtype}.")
    if tuple(array.shape) != tuple(shape):
        hint = ""
        if array.ndim == 4 and tuple(array.shape) == (shape[0], shape[3], shape[1], shape[2]):
            hint = (" It looks channels-first (NCHW); sdlib is NHWC: use "
                    "np.transpose(noise, (0, 2, 3, 1)).")
        raise ValueError(
            f"diffusion_noise has shape {tuple(array.shape)}; expected {tuple(shape)} = (batch, "
            f"img_height / {scale_factor}, img_width / {scale_factor}, latent channels), NHWC."
            + hint
        )
    if not np.all(np.isfinite(array)):
        raise ValueError("diffusion_noise holds NaN or inf values.")
    return array.astype(np.float32)


DTYPES = {
    "float32": "float32 everywhere (the default)",
    "mixed_bfloat16": "bfloat16 compute, float32 weights (training and fine-tuning)",
    "mixed_float16": "float16 compute, float32 weights (training on GPUs)",
    "bfloat16": "bfloat16 compute and weights: half the memory, no per-call weight casts "
                "(inference)",
    "float16": "float16 compute and weights, VAE kept in float32 (inference on GPUs)",
}


def check_dtype(dtype):
    """A dtype policy name sdlib builds models with; None means float32, "auto" the fastest for
    the model on this device (``sdlib.device.resolve_mode``)."""
    if dtype is None:
        return "float32"
    if dtype == "auto":
        return dtype
    name = getattr(dtype, "name", dtype)  # a keras.DTypePolicy works too
    if name not in DTYPES:
        choices = "\n".join(f"  {key!r}: {value}" for key, value in DTYPES.items())
        choices += "\n  'auto': the fastest of these for the model on this device (the default)"
        raise ValueError(f"dtype={dtype!r} is not a policy sdlib supports. Choose one of:\n"
                         f"{choices}")
    return name


SAVE_DTYPES = ("float32", "float16", "bfloat16")


def check_save_dtype(dtype):
    """The dtype weights are written in: one of ``SAVE_DTYPES``."""
    if dtype not in SAVE_DTYPES:
        raise ValueError(f"dtype must be one of {SAVE_DTYPES} (or None: as the weights are), "
                         f"got {dtype!r}.")
    return dtype


def check_jit_compile(jit_compile):
    if jit_compile not in (True, False, "auto"):
        raise ValueError(f"jit_compile={jit_compile!r}: use True (XLA), False, or \"auto\" (the "
                         "fastest for the model on this device).")
    return jit_compile


def check_image_size(img_height, img_width, scale_factor):
    for name, value in (("img_height", img_height), ("img_width", img_width)):
        value = _check_int(value, name)
        if value < scale_factor or value % scale_factor:
            lower = max(scale_factor, value // scale_factor * scale_factor)
            upper = max(scale_factor, -(-value // scale_factor) * scale_factor)
            nearest = str(lower) if lower == upper else f"{lower} or {upper}"
            raise ValueError(f"{name}={value} is not a positive multiple of {scale_factor} (the "
                             f"VAE's scale factor); the nearest valid size is {nearest}.")


def check_finite_images(images):
    if not np.all(np.isfinite(images)):
        raise FloatingPointError(
            "The decoded image holds NaN or inf values: the computation overflowed (typical of "
            "float16). Use mixed_bfloat16 or float32."
        )
