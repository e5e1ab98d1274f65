"""Training a latent diffusion model: text encoder and UNet on a frozen autoencoder's latents
(Rombach et al. 2022, sec. 3-4), any model, any data.

The loss is DDPM's (Ho et al. 2020, eq. 14) on the epsilon or the v target (Salimans & Ho 2022),
with caption dropout for classifier-free guidance (Ho & Salimans 2022). Everything is ``model.fit``,
so it runs on any Keras backend.
"""

import time

import keras
import numpy as np
from keras import ops

from sdlib.loading.build import build_models
from sdlib.sampling.schedule import add_noise, alphas_cumprod

_KEPT = []  # the last trainer of train_diffusion(keep_graph=True)


class DiffusionTrainer(keras.Model):
    """Text encoder + UNet predicting the noise added to a latent. With ``"conditioning"`` in the
    inputs (an inpainting UNet's mask and masked-image latents) the UNet reads it beside the latent,
    as the pipeline feeds it."""

    def __init__(self, text_encoder, unet, **kwargs):
        super().__init__(**kwargs)
        self.text_encoder = text_encoder
        self.unet = unet

    def call(self, inputs):
        context = self.text_encoder(inputs["token_ids"])  # (B, 77, D)
        latents = inputs["noisy_latents"]  # (B, h, w, C)
        if "conditioning" in inputs:
            latents = ops.concatenate([latents, inputs["conditioning"]], axis=-1)  # (B, h, w, C_in)
        return self.unet(latents, inputs["timesteps"], context)


class NoisedLatents(keras.utils.PyDataset):
    """Batches of (x_t, t, caption ids) -> target, drawn fresh each step (Ho et al. 2020, Alg. 1).

    The target is the noise epsilon, or with ``prediction_type="v_prediction"`` the velocity
    v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0 (Salimans & Ho 2022, sec. 4), which stays
    meaningful at the zero-SNR last timestep where x_t is pure noise (Lin et al. 2024).
    """

    def __init__(self, latents, token_ids, empty_ids, alphas_bar, batch_size, steps, seed,
                 caption_dropout=0.1, prediction_type="epsilon", conditioning=None,
                 loss_weights=None, timestep_range=None):
        super().__init__()
        if prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got "
                             f"{prediction_type!r}")
        self.latents, self.token_ids, self.empty_ids = latents, token_ids, empty_ids
        self.alphas_bar = alphas_bar.astype(np.float32)
        self.batch_size, self.steps, self.seed = batch_size, steps, seed
        self.caption_dropout = caption_dropout
        self.prediction_type = prediction_type
        self.conditioning = conditioning  # (N, h, w, C_extra), one row per latent, or None
        self.loss_weights = loss_weights  # (N, h, w): each latent position's weight, or None
        self.timestep_range = timestep_range or (0, len(self.alphas_bar))  # [low, high)

    def __len__(self):
        return self.steps

    def __getitem__(self, index):
        rng = np.random.default_rng((self.seed, index))
        rows = rng.integers(0, len(self.latents), self.batch_size)
        x0 = self.latents[rows]  # (B, h, w, C)
        noise = rng.standard_normal(x0.shape, dtype=np.float32)
        timesteps = rng.integers(*self.timestep_range, self.batch_size)
        alpha_bar = self.alphas_bar[timesteps][:, None, None, None]
        noisy = add_noise(x0, noise, alpha_bar)  # q(x_t | x_0), eq. 4
        ids = self.token_ids[rows].copy()
        ids[rng.random(self.batch_size) < self.caption_dropout] = self.empty_ids
        inputs = {"noisy_latents": noisy.astype(np.float32),
                  "timesteps": timesteps.astype(np.int32), "token_ids": ids.astype(np.int32)}
        if self.conditioning is not None:
            inputs["conditioning"] = self.conditioning[rows].astype(np.float32)
        if self.prediction_type == "v_prediction":
            target = np.sqrt(alpha_bar) * noise - np.sqrt(1.0 - alpha_bar) * x0
        else:
            target = noise
        if self.loss_weights is not None:
            return inputs, target.astype(np.float32), self.loss_weights[rows].astype(np.float32)
        return inputs, target.astype(np.float32)


class PrintEvery(keras.callbacks.Callback):
    """Log the loss every ``every`` steps, counted across epochs (Keras' batch index restarts)."""

    def __init__(self, every, label):
        super().__init__()
        self.every, self.label, self.start, self.steps = every, label, time.time(), 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if self.steps % self.every == 0:
            print(f"  {self.label} step {self.steps}: loss {logs['loss']:.4f} "
                  f"({time.time() - self.start:.0f} s)", flush=True)


class TabulatedSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A learning-rate schedule read from a table, one value per step (the last one after it).

    Keras' optimizers ask for the learning rate once per variable (AdamW's weight decay), so a
    schedule's formula is built into the training graph hundreds of times: with CosineDecay's
    warmup and decay, 974 copies for mini-shapes' text encoder and UNet, 26 s of tracing and a
    graph that took TensorFlow over two minutes and several GB to prepare. A table lookup is a
    few ops. The table holds the schedule's own values, computed once."""

    def __init__(self, values):
        self.values = np.asarray(values, np.float32)
        self.table = keras.Variable(self.values, trainable=False, name="learning_rate_table")

    def __call__(self, step):
        index = ops.minimum(ops.cast(step, "int32"), len(self.values) - 1)
        return ops.take(self.table, index)

    def get_config(self):
        return {"values": self.values.tolist()}


def build_optimizer(model):
    """Create the compiled ``model``'s optimizer variables before ``fit``. Keras' TensorFlow
    trainer otherwise creates them inside the first trace of the train step, and TensorFlow then
    traces the step a second time; for mini-shapes' text encoder and UNet one trace is most of a
    minute on 2 cores. Call it once the trainable flags are final."""
    model.optimizer.build(model.trainable_variables)


def cosine_schedule(peak, steps, warmup):
    """Linear warmup from 0 to ``peak`` over ``warmup`` steps, then cosine decay to 5% of it
    (Keras' ``CosineDecay``, tabulated: see ``TabulatedSchedule``)."""
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=max(steps - warmup, 1), warmup_target=peak, warmup_steps=warmup,
        alpha=0.05)
    return TabulatedSchedule([ops.convert_to_numpy(schedule(step)) for step in range(steps + 1)])


class StopAfter(keras.callbacks.Callback):
    """Stop ``fit`` after ``steps`` batches (``fit`` itself counts whole epochs)."""

    def __init__(self, steps):
        super().__init__()
        self.steps, self.done = steps, 0

    def on_train_batch_end(self, batch, logs=None):
        self.done += 1
        if self.done >= self.steps:
            self.model.stop_training = True


def train_diffusion(text_encoder, unet, latents, token_ids, empty_ids, scheduler_config, steps,
                    batch_size=64, learning_rate=8e-4, seed=0, log_every=200, ema_momentum=0.999,
                    callbacks=(), jit_compile=True, conditioning=None, train_text_encoder=True,
                    warmup_steps=200, loss_weights=None, timestep_range=None,
                    caption_dropout=0.1, keep_graph=False):
    """Fit text encoder + UNet on scaled latents; ends with the EMA weights in place
    (``ema_momentum=None``: no EMA, the last weights; a smaller training graph).

    ``callbacks``: extra Keras callbacks (a notebook samples images every few hundred steps).
    ``conditioning`` (N, h, w, C_extra): what an inpainting UNet reads beside each latent.
    ``train_text_encoder=False`` keeps the text encoder as it is (fine-tuning the UNet alone);
    None leaves every variable's ``trainable`` flag as it is (LoRA freezes the base weights so).
    ``loss_weights`` (N, h, w): how much each latent position of each example counts.
    ``timestep_range`` (low, high): train on those timesteps only (default: all); the noisier
    ones decide layout and shape, the quieter ones detail. ``caption_dropout``: the share of
    examples trained with the empty caption, the unconditional model guidance steers from.
    ``keep_graph=True`` keeps the trainer, and with it TensorFlow's training graph, alive until
    the next such call: TensorFlow takes tens of seconds to free that graph (a notebook cell
    would wait for it, a minute for chapter 7's), at the cost of its memory meanwhile.
    """
    keras.utils.set_random_seed(seed)
    was_trainable = text_encoder.trainable
    if train_text_encoder is not None:  # None: each variable's own flag decides (LoRA)
        text_encoder.trainable = train_text_encoder
    trainer = DiffusionTrainer(text_encoder, unet)
    data = NoisedLatents(latents, token_ids, empty_ids, alphas_cumprod(scheduler_config),
                         batch_size, steps, seed, prediction_type=scheduler_config.prediction_type,
                         conditioning=conditioning, loss_weights=loss_weights,
                         timestep_range=timestep_range, caption_dropout=caption_dropout)
    optimizer = keras.optimizers.AdamW(cosine_schedule(learning_rate, steps, warmup_steps),
                                       weight_decay=1e-2, global_clipnorm=1.0,
                                       use_ema=ema_momentum is not None,
                                       ema_momentum=ema_momentum or 0.99)
    trainer.compile(optimizer=optimizer, loss="mse", jit_compile=jit_compile)
    build_optimizer(trainer)
    trainer.fit(data, epochs=1, verbose=0,
                callbacks=[PrintEvery(log_every, "diffusion"), *callbacks])
    _KEPT[:] = [trainer] if keep_graph else []
    if ema_momentum is not None:
        optimizer.finalize_variable_values(trainer.trainable_variables)  # the EMA weights
    if train_text_encoder is not None:
        text_encoder.trainable = was_trainable
    return text_encoder, unet


def build_untrained(configs, seed=0):
    """Freshly initialised (seeded) text encoder, UNet and VAE."""
    keras.utils.set_random_seed(seed)
    models = build_models(configs, zero_weights=False)
    return models["text_encoder"], models["unet"], models["vae"]
