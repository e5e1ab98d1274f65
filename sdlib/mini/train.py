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


ADD_TRIES = 40


def _random_boxes(rng):
    boxes = []
    for _ in range(rng.integers(1, 3)):
        width, height = rng.integers(8, 41, size=2)
        left = rng.integers(0, shapes.IMAGE_SIZE - width + 1)
        top = rng.integers(0, shapes.IMAGE_SIZE - height + 1)
        boxes.append((left, top, left + width, top + height))
    return boxes


def _paste_object(image, other):
    """``other``'s object pasted onto ``image`` (the same background), its antialiased edge kept."""
    edges = [other[0], other[-1], other[:, 0], other[:, -1]]
    background = np.median(np.concatenate(edges), axis=0)  # (3,)
    deviation = np.abs(other.astype(np.float32) - background).max(axis=-1)  # (64, 64)
    alpha = np.clip(deviation / max(float(deviation.max()), 1.0), 0.0, 1.0)[..., None]
    return np.rint(image * (1 - alpha) + other * alpha).astype(np.uint8)


def inpainting_examples(num_images, rng, shares=(0.1, 0.2, 0.45, 0.25)):
    """Training images, captions and masks (uint8, white = repaint) in four kinds, ``shares`` of:

    - "full": the whole image masked, so the model stays a text-to-image model;
    - "replace": the object's box and another place, the caption describing the object: it learns
      to paint what the caption asks where it asks, and background elsewhere;
    - "add": a second object pasted outside the mask, which is the captioned object's box: the
      caption describes what to paint, and what the mask keeps stays, whatever it shows;
    - "random": one or two random boxes.
    """
    specs = shapes.sample_specs(num_images, rng, include_held_out=False)
    kinds = rng.choice(["full", "replace", "add", "random"], size=num_images, p=shares)
    images, captions, masks = [], [], []
    for spec, kind in zip(specs, kinds, strict=True):
        image = shapes.render(spec, rng)
        if kind == "add":
            for _ in range(ADD_TRIES):  # most pairs overlap (only ~1 in 8 does not)
                other = shapes.sample_specs(1, rng, include_held_out=False)[0]
                if not edits.overlap(edits.object_box(spec), edits.object_box(other)):
                    other = dataclasses.replace(other, background=spec.background)
                    image = _paste_object(image, shapes.render(other, rng))
                    boxes = [edits.object_box(spec)]
                    break
            else:
                kind = "replace"  # no room for a second object: a replace example instead
        if kind == "replace":
            elsewhere = dataclasses.replace(
                spec, position=str(rng.choice(shapes.ATTRIBUTES["position"])),
                size=str(rng.choice(shapes.ATTRIBUTES["size"])))
            boxes = [edits.object_box(spec), edits.object_box(elsewhere)]
        elif kind == "random":
            boxes = _random_boxes(rng)
        elif kind == "full":
            boxes = [(0, 0, shapes.IMAGE_SIZE, shapes.IMAGE_SIZE)]
        images.append(image)
        captions.append(shapes.varied_caption(spec, rng))
        masks.append(edits.box_mask(boxes))
    return np.stack(images), captions, np.stack(masks)


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


def train_mini_inpainting(components, num_images=9000, steps=1300, batch_size=64,
                          learning_rate=4e-4, ema_momentum=0.995, kept_weight=2.0,
                          caption_dropout=0.1, seed=0, log=print, log_every=200):
    """Fine-tune a 9-channel inpainting UNet from ``components`` (mini-shapes) on the shapes with
    random masks; the text encoder and the VAE stay as they are. The loss counts the latent
    positions the mask keeps ``kept_weight`` times: there the model must copy the picture it is
    given, whatever the caption says (and with no caption: ``caption_dropout`` of the examples
    train the unconditional model, which guidance amplifies the errors of). Returns the new UNet."""
    start = time.time()
    rng = np.random.default_rng(seed)
    images, captions, masks = inpainting_examples(num_images, rng)  # masks: (N, 64, 64) uint8
    scaling = components.vae.config.scaling_factor
    latents = encode_latents(components.vae, images) * scaling  # (N, 8, 8, 4)
    conditioning = inpainting_conditioning(components.vae, images, masks, scaling)
    repaint = conditioning[..., 0]  # (N, 8, 8): the latent-grid mask, 1 = repaint
    loss_weights = np.where(repaint > 0.5, 1.0, kept_weight).astype(np.float32)
    log(f"data: {num_images} images, masks and latents in {time.time() - start:.0f} s")
    unet = inpainting_unet(components.unet)
    tokenizer = components.tokenizer
    stage = time.time()
    train_diffusion(components.text_encoder, unet, latents, tokenizer(captions), tokenizer([""])[0],
                    components.scheduler_config, steps=steps, batch_size=batch_size,
                    learning_rate=learning_rate, seed=seed, log_every=log_every,
                    ema_momentum=ema_momentum, conditioning=conditioning,
                    train_text_encoder=False, loss_weights=loss_weights,
                    caption_dropout=caption_dropout)
    log(f"UNet fine-tuned in {time.time() - stage:.0f} s ({steps} steps of {batch_size})")
    return unet
