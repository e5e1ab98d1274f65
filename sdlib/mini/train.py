"""The mini-shapes recipes: Stable Diffusion in miniature trained on the procedural shapes, and its
inpainting model fine-tuned from it.

Two stages, as in latent diffusion: the autoencoder first (its loss weighs the object's pixels,
which plain MSE would leave rounded), then text encoder and UNet together on its latents. The
inpainting model is the UNet with 5 more input channels (mask, masked-image latents), fine-tuned on
random masks. Seeded end to end; ``tools/train_mini_model.py`` and
``tools/train_mini_inpainting.py`` run them and write the shipped weights.
"""

import dataclasses
import time

import keras
import numpy as np

from sdlib import editing
from sdlib.loading.state_dict import keras_weight_map
from sdlib.mini import edits, shapes
from sdlib.models.unet import UNet
from sdlib.training.autoencoder import encode_latents, train_autoencoder
from sdlib.training.diffusion import build_untrained, train_diffusion


def background_weights(images, object_weight=5.0, threshold=24):
    """Per-pixel loss weights (N, 64, 64, 1): object pixels count ``object_weight`` times more.

    Plain MSE is dominated by the background, which leaves small squares and triangles rounded.
    The background colour is the median of the border pixels.
    """
    edges = [images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]]  # 4 x (N, 64, 3)
    border = np.concatenate(edges, axis=1)
    background = np.median(border, axis=1)[:, None, None, :]  # (N, 1, 1, 3)
    mask = np.abs(images.astype(np.int16) - background).max(axis=-1, keepdims=True) > threshold
    return (1.0 + (object_weight - 1.0) * mask).astype(np.float32)


def training_set(num_images, seed, tokenizer):
    """Images, their varied captions as token ids, and the ids of the empty prompt."""
    images, captions, _ = shapes.make_dataset(num_images, seed=seed, include_held_out=False,
                                              varied=True)
    return images, tokenizer(captions), tokenizer([""])[0]


def train_mini_model(configs, tokenizer, num_images=40_000, vae_steps=2400, vae_batch_size=32,
                     diffusion_steps=7200, diffusion_batch_size=64, seed=0, log=print):
    """Train text encoder, UNet and VAE of ``configs`` from scratch on the shapes.

    Returns the models (a dict) and the configs, the VAE's ``scaling_factor`` set to 1 / std of its
    latents (Rombach et al. 2022, sec. 4.3.2), as ``save_sdlib_file`` takes them.
    """
    start = time.time()
    images, token_ids, empty_ids = training_set(num_images, seed, tokenizer)
    log(f"data: {len(images)} images in {time.time() - start:.0f} s")

    text_encoder, unet, vae = build_untrained(configs, seed=seed)
    stage = time.time()
    train_autoencoder(vae, images, steps=vae_steps, pixel_weights=background_weights(images),
                      batch_size=vae_batch_size, seed=seed)
    log(f"autoencoder: {time.time() - stage:.0f} s")

    stage = time.time()
    latents = encode_latents(vae, images)
    reconstruction = np.concatenate([
        np.asarray(vae.decode(latents[i:i + 256])) for i in range(0, 1024, 256)])
    mse = float(np.mean((reconstruction - (images[:1024] / 127.5 - 1.0)) ** 2))
    scaling_factor = float(1.0 / latents.std())
    configs = {**configs, "vae": dataclasses.replace(configs["vae"], scaling_factor=scaling_factor)}
    log(f"latents: std {latents.std():.3f} -> scaling_factor {scaling_factor:.5f}; "
        f"reconstruction MSE {mse:.4f} on [-1, 1] ({time.time() - stage:.0f} s)")

    stage = time.time()
    train_diffusion(text_encoder, unet, latents * scaling_factor, token_ids, empty_ids,
                    configs["scheduler"], steps=diffusion_steps, batch_size=diffusion_batch_size,
                    seed=seed)
    log(f"diffusion: {time.time() - stage:.0f} s")
    vae.config = configs["vae"]  # built with the placeholder scaling factor
    return {"text_encoder": text_encoder, "unet": unet, "vae": vae}, configs


# === Inpainting: mini-shapes-inpaint ===
def inpainting_unet(unet, context_length=77):
    """A 9-channel copy of ``unet`` (latents, mask, masked-image latents), as runwayml made SD's
    inpainting model from SD v1.2: the same weights, and zeros for the 5 new input channels of the
    first conv, so it starts out as the text-to-image model."""
    config = dataclasses.replace(unet.config, in_channels=unet.config.in_channels + 5)
    inpaint = UNet(config, dtype=unet.dtype_policy).build_weights(context_length)
    theirs = keras_weight_map(unet)  # diffusers name -> (variable, layout)
    for name, (variable, _) in keras_weight_map(inpaint).items():
        value = np.asarray(theirs[name][0].numpy())
        if name == "conv_in.weight":  # (3, 3, C_in, C0): the new input channels start at zero
            value = np.concatenate(
                [value, np.zeros((*value.shape[:2], 5, value.shape[3]), value.dtype)], axis=2)
        variable.assign(value)
    return inpaint


def inpainting_masks(specs, rng, full_share=0.15, object_share=0.55):
    """One training mask per spec, uint8 (N, 64, 64), white = repaint: the whole image (the model
    stays a text-to-image model), the object's box together with another place (it learns to paint
    what the caption asks where it asks, and background elsewhere, as the replace tasks need), or
    one or two random boxes."""
    masks = []
    for spec in specs:
        draw = rng.random()
        if draw < full_share:
            masks.append(np.full((shapes.IMAGE_SIZE,) * 2, 255, np.uint8))
            continue
        if draw < full_share + object_share:
            elsewhere = dataclasses.replace(
                spec, position=str(rng.choice(shapes.ATTRIBUTES["position"])),
                size=str(rng.choice(shapes.ATTRIBUTES["size"])))
            boxes = [edits.object_box(spec), edits.object_box(elsewhere)]
        else:
            boxes = []
            for _ in range(rng.integers(1, 3)):
                width, height = rng.integers(8, 41, size=2)
                left = rng.integers(0, shapes.IMAGE_SIZE - width + 1)
                top = rng.integers(0, shapes.IMAGE_SIZE - height + 1)
                boxes.append((left, top, left + width, top + height))
        masks.append(edits.box_mask(boxes))
    return np.stack(masks)


def inpainting_conditioning(vae, images, masks, scaling_factor, batch_size=256):
    """What the 9-channel UNet reads beside the latent, as the pipeline makes it: the mask on the
    latent grid and the masked image's scaled posterior mean, (N, 8, 8, 5)."""
    binary = (masks >= 128).astype(np.float32)[..., None]  # (N, 64, 64, 1)
    masked = editing.masked_pixels(images, binary)  # (N, 64, 64, 3) in [-1, 1]
    means = [keras.ops.convert_to_numpy(vae.encode(masked[start:start + batch_size])[0])
             for start in range(0, len(images), batch_size)]
    latents = np.concatenate(means) * scaling_factor  # (N, 8, 8, 4)
    factor = images.shape[1] // latents.shape[1]
    return np.concatenate([editing.latent_mask(binary, factor), latents], axis=-1)


def train_mini_inpainting(components, num_images=12_000, steps=1700, batch_size=64,
                          learning_rate=4e-4, ema_momentum=0.995, seed=0, log=print,
                          log_every=200):
    """Fine-tune a 9-channel inpainting UNet from ``components`` (mini-shapes) on the shapes with
    random masks; the text encoder and the VAE stay as they are. Returns the new UNet."""
    start = time.time()
    rng = np.random.default_rng(seed)
    specs = shapes.sample_specs(num_images, rng, include_held_out=False)
    images = np.stack([shapes.render(spec, rng) for spec in specs])  # (N, 64, 64, 3)
    captions = [shapes.varied_caption(spec, rng) for spec in specs]
    masks = inpainting_masks(specs, rng)
    scaling = components.vae.config.scaling_factor
    latents = encode_latents(components.vae, images) * scaling  # (N, 8, 8, 4)
    conditioning = inpainting_conditioning(components.vae, images, masks, scaling)
    log(f"data: {num_images} images, masks and latents in {time.time() - start:.0f} s")
    unet = inpainting_unet(components.unet)
    tokenizer = components.tokenizer
    stage = time.time()
    train_diffusion(components.text_encoder, unet, latents, tokenizer(captions), tokenizer([""])[0],
                    components.scheduler_config, steps=steps, batch_size=batch_size,
                    learning_rate=learning_rate, seed=seed, log_every=log_every,
                    ema_momentum=ema_momentum, conditioning=conditioning,
                    train_text_encoder=False)
    log(f"UNet fine-tuned in {time.time() - stage:.0f} s ({steps} steps of {batch_size})")
    return unet
