"""The mini-shapes recipe: Stable Diffusion in miniature trained on the procedural shapes.

Two stages, as in latent diffusion: the autoencoder first (its loss weighs the object's pixels,
which plain MSE would leave rounded), then text encoder and UNet together on its latents. Seeded end
to end; ``tools/train_mini_model.py`` runs it and writes the shipped weights.
"""

import dataclasses
import time

import numpy as np

from sdlib.mini import shapes
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
