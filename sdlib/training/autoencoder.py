"""Training the autoencoder of latent diffusion (Rombach et al. 2022, sec. 3): reconstruct images
through the latent, with a weighted L1 + MSE loss and a tiny KL term toward N(0, 1)."""

import math

import keras
import numpy as np
from keras import ops

from sdlib.training.diffusion import PrintEvery, StopAfter, cosine_schedule


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
            noise = keras.random.normal(ops.shape(mean), seed=self.seed)
            latent = mean + ops.exp(0.5 * logvar) * noise  # a sample of the posterior
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


def train_autoencoder(vae, images, steps, pixel_weights=None, batch_size=32, learning_rate=1e-3,
                      seed=0, log_every=200):
    """Fit the VAE on uint8 images (N, H, W, 3); ``pixel_weights`` (N, H, W, 1) weigh the loss
    (default: every pixel alike)."""
    keras.utils.set_random_seed(seed)
    trainer = AutoencoderTrainer(vae)
    x = images.astype(np.float32) / 127.5 - 1.0
    if pixel_weights is None:
        pixel_weights = np.ones((*images.shape[:-1], 1), np.float32)
    targets = np.concatenate([x, pixel_weights], axis=-1)
    trainer.compile(optimizer=keras.optimizers.AdamW(cosine_schedule(learning_rate, steps, 100),
                                                     weight_decay=1e-4, global_clipnorm=1.0),
                    loss=weighted_reconstruction_loss, jit_compile=True)
    epochs = math.ceil(steps * batch_size / len(x))
    trainer.fit(x, targets, batch_size=batch_size, epochs=epochs, steps_per_epoch=None, verbose=0,
                callbacks=[PrintEvery(log_every, "autoencoder"), StopAfter(steps)], shuffle=True)
    return vae


def encode_latents(vae, images, batch_size=256):
    """Latent means (N, h, w, C) of uint8 images, unscaled."""
    out = []
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].astype(np.float32) / 127.5 - 1.0
        out.append(keras.ops.convert_to_numpy(vae.encode(x)[0]))
    return np.concatenate(out)
