"""Training Stable Diffusion in miniature on the procedural shapes (Rombach et al. 2022, sec. 3-4).

Two stages, as in latent diffusion: first the autoencoder (images <-> latents), then the text encoder and
the UNet together on the frozen autoencoder's latents, with the epsilon-prediction loss of DDPM
(Ho et al. 2020, eq. 14) and caption dropout for classifier-free guidance (Ho & Salimans 2022).
Everything is ``model.fit``, so it runs on any Keras backend.
"""

import math
import time

import keras
import numpy as np
from keras import ops

from sdlib import checkpoint, shapes
from sdlib.schedulers import alphas_cumprod


def background_weights(images, object_weight=5.0, threshold=24):
    """Per-pixel loss weights (N, 64, 64, 1): object pixels count ``object_weight`` times more.

    Plain MSE is dominated by the background, which leaves small squares and triangles rounded.
    The background colour is the median of the border pixels.
    """
    border = np.concatenate([images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]], axis=1)
    background = np.median(border, axis=1)[:, None, None, :]  # (N, 1, 1, 3)
    mask = np.abs(images.astype(np.int16) - background).max(axis=-1, keepdims=True) > threshold
    return (1.0 + (object_weight - 1.0) * mask).astype(np.float32)


class AutoencoderTrainer(keras.Model):
    """Wraps the VAE for ``fit``: reconstruct, weighted L1 + MSE, plus a tiny KL term."""

    def __init__(self, vae, kl_weight=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.vae = vae
        self.kl_weight = kl_weight
        self.seed = keras.random.SeedGenerator(0)

    def call(self, images, training=False):
        mean, logvar = self.vae.encode(images)
        if training:
            latent = mean + ops.exp(0.5 * logvar) * keras.random.normal(ops.shape(mean), seed=self.seed)
            kl = 0.5 * ops.mean(ops.sum(mean**2 + ops.exp(logvar) - 1.0 - logvar, axis=(1, 2, 3)))
            self.add_loss(self.kl_weight * kl)
        else:
            latent = mean
        return self.vae.decode(latent)


def weighted_reconstruction_loss(y_true, y_pred):
    """``y_true`` packs the target image (3 channels) and the pixel weight (1 channel)."""
    target, weight = y_true[..., :3], y_true[..., 3:]
    difference = y_pred - target
    return ops.mean(weight * (ops.abs(difference) + difference**2))


class DiffusionTrainer(keras.Model):
    """Text encoder + UNet predicting the noise added to a latent."""

    def __init__(self, text_encoder, unet, **kwargs):
        super().__init__(**kwargs)
        self.text_encoder = text_encoder
        self.unet = unet

    def call(self, inputs):
        context = self.text_encoder(inputs["token_ids"])  # (B, 77, D)
        return self.unet(inputs["noisy_latents"], inputs["timesteps"], context)


class NoisedLatents(keras.utils.PyDataset):
    """Batches of (x_t, t, caption ids) -> target, drawn fresh each step (Ho et al. 2020, Alg. 1).

    The target is the noise epsilon, or with ``prediction_type="v_prediction"`` the velocity
    v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0 (Salimans & Ho 2022, sec. 4), which stays
    meaningful at the zero-SNR last timestep where x_t is pure noise (Lin et al. 2024).
    """

    def __init__(self, latents, token_ids, empty_ids, alphas_bar, batch_size, steps, seed,
                 caption_dropout=0.1, prediction_type="epsilon"):
        super().__init__()
        if prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got "
                             f"{prediction_type!r}")
        self.latents, self.token_ids, self.empty_ids = latents, token_ids, empty_ids
        self.alphas_bar = alphas_bar.astype(np.float32)
        self.batch_size, self.steps, self.seed = batch_size, steps, seed
        self.caption_dropout = caption_dropout
        self.prediction_type = prediction_type

    def __len__(self):
        return self.steps

    def __getitem__(self, index):
        rng = np.random.default_rng((self.seed, index))
        rows = rng.integers(0, len(self.latents), self.batch_size)
        x0 = self.latents[rows]  # (B, h, w, C)
        noise = rng.standard_normal(x0.shape, dtype=np.float32)
        timesteps = rng.integers(0, len(self.alphas_bar), self.batch_size)
        alpha_bar = self.alphas_bar[timesteps][:, None, None, None]
        noisy = np.sqrt(alpha_bar) * x0 + np.sqrt(1.0 - alpha_bar) * noise  # q(x_t | x_0), eq. 4
        ids = self.token_ids[rows].copy()
        ids[rng.random(self.batch_size) < self.caption_dropout] = self.empty_ids
        inputs = {"noisy_latents": noisy.astype(np.float32), "timesteps": timesteps.astype(np.int32),
                  "token_ids": ids.astype(np.int32)}
        if self.prediction_type == "v_prediction":
            target = np.sqrt(alpha_bar) * noise - np.sqrt(1.0 - alpha_bar) * x0
        else:
            target = noise
        return inputs, target.astype(np.float32)


class PrintEvery(keras.callbacks.Callback):
    """Log the loss every ``every`` steps, counting steps across epochs (Keras' batch index restarts)."""

    def __init__(self, every, label):
        super().__init__()
        self.every, self.label, self.start, self.steps = every, label, time.time(), 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if self.steps % self.every == 0:
            print(f"  {self.label} step {self.steps}: loss {logs['loss']:.4f} "
                  f"({time.time() - self.start:.0f} s)", flush=True)


def cosine_schedule(peak, steps, warmup):
    return keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=max(steps - warmup, 1), warmup_target=peak, warmup_steps=warmup, alpha=0.05)


def train_autoencoder(vae, images, steps, batch_size=32, learning_rate=1e-3, seed=0, log_every=200):
    """Fit the VAE on uint8 images (N, 64, 64, 3)."""
    keras.utils.set_random_seed(seed)
    trainer = AutoencoderTrainer(vae)
    x = images.astype(np.float32) / 127.5 - 1.0
    targets = np.concatenate([x, background_weights(images)], axis=-1)
    trainer.compile(optimizer=keras.optimizers.AdamW(cosine_schedule(learning_rate, steps, 100),
                                                     weight_decay=1e-4, global_clipnorm=1.0),
                    loss=weighted_reconstruction_loss, jit_compile=True)
    epochs = math.ceil(steps * batch_size / len(x))
    trainer.fit(x, targets, batch_size=batch_size, epochs=epochs, steps_per_epoch=None, verbose=0,
                callbacks=[PrintEvery(log_every, "autoencoder"), _StopAfter(steps)], shuffle=True)
    return vae


class _StopAfter(keras.callbacks.Callback):
    def __init__(self, steps):
        super().__init__()
        self.steps, self.done = steps, 0

    def on_train_batch_end(self, batch, logs=None):
        self.done += 1
        if self.done >= self.steps:
            self.model.stop_training = True


def encode_latents(vae, images, batch_size=256):
    """Latent means (N, 8, 8, C) of uint8 images, unscaled."""
    out = []
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].astype(np.float32) / 127.5 - 1.0
        out.append(keras.ops.convert_to_numpy(vae.encode(x)[0]))
    return np.concatenate(out)


def train_diffusion(text_encoder, unet, latents, token_ids, empty_ids, scheduler_config, steps,
                    batch_size=64, learning_rate=8e-4, seed=0, log_every=200, ema_momentum=0.999,
                    callbacks=(), jit_compile=True):
    """Fit text encoder + UNet on scaled latents; ends with the EMA weights in place.

    ``callbacks``: extra Keras callbacks (a notebook samples images every few hundred steps).
    """
    keras.utils.set_random_seed(seed)
    trainer = DiffusionTrainer(text_encoder, unet)
    data = NoisedLatents(latents, token_ids, empty_ids, alphas_cumprod(scheduler_config),
                         batch_size, steps, seed, prediction_type=scheduler_config.prediction_type)
    optimizer = keras.optimizers.AdamW(cosine_schedule(learning_rate, steps, 200), weight_decay=1e-2,
                                       global_clipnorm=1.0, use_ema=True, ema_momentum=ema_momentum)
    trainer.compile(optimizer=optimizer, loss="mse", jit_compile=jit_compile)
    trainer.fit(data, epochs=1, verbose=0,
                callbacks=[PrintEvery(log_every, "diffusion"), *callbacks])
    optimizer.finalize_variable_values(trainer.trainable_variables)  # swap in the EMA weights
    return text_encoder, unet


def build_untrained(configs, seed=0):
    """Freshly initialised (seeded) text encoder, UNet and VAE."""
    keras.utils.set_random_seed(seed)
    models = checkpoint.build_models(configs, fast=False)
    return models["text_encoder"], models["unet"], models["vae"]


def training_set(num_images, seed, tokenizer):
    """Images, their varied captions as token ids, and the ids of the empty prompt."""
    images, captions, _ = shapes.make_dataset(num_images, seed=seed, include_held_out=False,
                                              varied=True)
    return images, tokenizer(captions), tokenizer([""])[0]
