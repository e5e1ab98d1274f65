"""The inputs of image-to-image and inpainting: images and masks checked and broadcast, the strength
turned into a start step, the mask brought to the latent grid.

Image-to-image is SDEdit (Meng et al. 2022): noise the image's latent to an intermediate level and
denoise from there, so ``strength`` picks how much of the schedule runs. Inpainting repaints where
the mask is white (diffusers' convention) and keeps where it is black. Every detail that decides
parity follows diffusers' ``StableDiffusionImg2ImgPipeline`` / ``StableDiffusionInpaintPipeline``:
``int(num_steps * strength)`` steps run, the last ones; the mask is binarised at full resolution
(``>= 0.5``) and the masked image is ``x * (mask < 0.5)`` in [-1, 1]; on the latent grid the mask
keeps the top-left pixel of each f x f block (``torch.nn.functional.interpolate``'s "nearest").
"""

import math
import numbers
import warnings

import numpy as np

RESIZE_HINT = "resize it first, e.g. PIL.Image.fromarray(image).resize(({width}, {height}))"


def check_strength(strength):
    if isinstance(strength, bool) or not isinstance(strength, numbers.Real):
        raise TypeError(f"strength must be a number in [0, 1], got {strength!r} "
                        f"({type(strength).__name__}).")
    value = float(strength)
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"strength must lie in [0, 1] (how much of the schedule runs: 0.3 keeps "
                         f"most of the image, 1.0 repaints it), got {strength}.")
    return value


def start_step(num_steps, strength):
    """The first of ``num_steps`` steps that runs: ``min(int(num_steps * strength), num_steps)``
    steps run, the last ones (diffusers' ``get_timesteps``)."""
    steps_to_run = min(int(num_steps * strength), num_steps)
    if steps_to_run < 1:
        raise ValueError(f"strength={strength} with num_steps={num_steps} runs no denoising step "
                         f"(int({num_steps} * {strength}) = 0): raise strength to at least "
                         f"{1 / num_steps:.3g}, or raise num_steps.")
    return num_steps - steps_to_run


def _as_array(value, name):
    """A PIL image or an array-like -> numpy."""
    if hasattr(value, "convert") and hasattr(value, "size") and hasattr(value, "mode"):  # PIL
        if name == "image" and value.mode != "RGB":
            value = value.convert("RGB")
        if name == "mask" and value.mode != "L":
            value = value.convert("L")  # diffusers' mask processor converts to grayscale too
        return np.asarray(value)
    try:
        return np.asarray(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a numpy array or a PIL image, got a "
                        f"{type(value).__name__}.") from None


def check_images(image, size):
    """uint8 (H, W, 3) or (B, H, W, 3), or a PIL image -> uint8 (B, H, W, 3); ``size`` = (H, W)."""
    array = _as_array(image, "image")
    height, width = size
    if array.ndim == 3 and array.shape[-1] not in (1, 3, 4) and array.shape[0] in (1, 3, 4):
        raise ValueError(f"image has shape {array.shape}: it looks channels-first; sdlib takes "
                         "(H, W, 3): use np.transpose(image, (1, 2, 0)).")
    if array.ndim == 2 or (array.ndim in (3, 4) and array.shape[-1] == 1):
        raise ValueError(f"image has shape {array.shape}: a grayscale image; give RGB, e.g. "
                         "np.repeat(gray[..., None], 3, axis=-1) or PIL's image.convert('RGB').")
    if array.ndim in (3, 4) and array.shape[-1] == 4:
        raise ValueError(f"image has shape {array.shape}: RGBA; drop the alpha channel, e.g. "
                         "image[..., :3] or PIL's image.convert('RGB').")
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] != 3 or array.shape[0] < 1:
        raise ValueError(f"image has shape {array.shape}; expected (H, W, 3) or (B, H, W, 3) "
                         "uint8 RGB.")
    if array.dtype != np.uint8:
        hint = (" For floats in [0, 1]: (image * 255).round().astype(np.uint8)."
                if np.issubdtype(array.dtype, np.floating) else "")
        raise TypeError(f"image must be uint8 (0..255), got dtype {array.dtype}.{hint}")
    if array.shape[1:3] != (height, width):
        raise ValueError(f"image is {array.shape[2]}x{array.shape[1]} (width x height) but the "
                         f"pipeline makes {width}x{height} images: "
                         + RESIZE_HINT.format(width=width, height=height)
                         + ", or build the pipeline with img_height/img_width of the image.")
    return array


def check_masks(mask, size):
    """A mask, white = repaint: (H, W), (B, H, W) or (B, H, W, 1), uint8 0..255, bool or float in
    [0, 1], or a PIL image -> float32 (B, H, W, 1) of 0 and 1, binarised at 0.5 as diffusers."""
    array = _as_array(mask, "mask")
    height, width = size
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 3 and array.shape[-1] in (3, 4) and array.shape[:2] == (height, width):
        raise ValueError(f"mask has shape {array.shape}: a color image; give one channel, e.g. "
                         "PIL's mask.convert('L') or mask[..., 0].")
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise ValueError(f"mask has shape {array.shape}; expected (H, W), (B, H, W) or "
                         "(B, H, W, 1).")
    if array.shape[1:] != (height, width):
        raise ValueError(f"mask is {array.shape[2]}x{array.shape[1]} (width x height) but the "
                         f"image is {width}x{height}: "
                         + RESIZE_HINT.format(width=width, height=height).replace("image", "mask")
                         + " (with Image.NEAREST).")
    if array.dtype == np.bool_:
        values = array.astype(np.float32)
    elif array.dtype == np.uint8:
        values = array.astype(np.float32) / 255.0
    elif np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)) or array.min() < 0.0 or array.max() > 1.0:
            raise ValueError("a float mask must lie in [0, 1] (white = 1 = repaint); got values "
                             f"from {np.nanmin(array)} to {np.nanmax(array)}.")
        values = array.astype(np.float32)
    else:
        raise TypeError(f"mask must be uint8 (0..255), bool or float in [0, 1], got dtype "
                        f"{array.dtype}.")
    binary = (values >= 0.5).astype(np.float32)[..., None]  # (B, H, W, 1)
    if not binary.any():
        warnings.warn("The mask is black everywhere: nothing to repaint, so the image comes back "
                      "through the VAE only. White (255, True or 1.0) marks the region to repaint.",
                      UserWarning, stacklevel=3)
    return binary


def edit_batch_size(batch_size, **counts):
    """The batch: every input with several rows (prompts, images, masks) and ``batch_size`` agree;
    one row broadcasts over it, as one prompt does in ``text_to_image``."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral):
        raise TypeError(f"batch_size must be an int, got {batch_size!r}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size}.")
    several = {name: count for name, count in counts.items() if count > 1}
    if batch_size > 1:
        several["batch_size"] = batch_size
    if len(set(several.values())) > 1:
        given = ", ".join(f"{count} {name}" for name, count in several.items())
        raise ValueError(f"The batch sizes conflict ({given}): give one or the same number of "
                         "each (one prompt, image or mask is used for every image).")
    return next(iter(several.values()), 1)


def broadcast(array, batch):
    """(1 or B, ...) -> (B, ...)."""
    return np.repeat(array, batch, axis=0) if array.shape[0] == 1 and batch > 1 else array


def latent_mask(mask, scale_factor):
    """(B, H, W, 1) -> (B, H/f, W/f, 1): the top-left pixel of each f x f block, as
    ``torch.nn.functional.interpolate(mask, size)`` picks with its default "nearest"."""
    return mask[:, ::scale_factor, ::scale_factor]


def to_unit_range(images):
    """uint8 (B, H, W, 3) -> float32 in [-1, 1], as diffusers' image processor: 2 x / 255 - 1."""
    return 2.0 * (images.astype(np.float32) / 255.0) - 1.0


def masked_pixels(images, mask):
    """What a 9-channel inpainting UNet sees of the image: pixels in [-1, 1], 0 where repainted."""
    return to_unit_range(images) * (mask < 0.5)
