"""Latent consistency distillation (Luo et al. 2023, "Latent Consistency Models", Algorithm 1) of a
LoRA (Luo et al. 2023b, "LCM-LoRA"): any model, any data.

The student is the UNet with a LoRA; the teacher, the same UNet without it, takes one DDIM step
(Song et al. 2021) with classifier-free guidance w from x at t_{n+k} to t_n, k timesteps lower
(k = T / ``original_inference_steps``: the skip of the LCM sampler, ``sdlib.sampling.lcm``). The
student's consistency function at the start must equal its own, gradient-stopped, at the step's end:

    f(x, t)  = c_skip(t) x + c_out(t) x0(x, t)                 (the boundary condition: f(x, 0) = x)
    x_n      = DDIM(x_{n+k}, teacher's guided prediction)      (the solver)
    loss     = pseudo-Huber(f_student(x_{n+k}, t_{n+k}) - stopgrad f_student(x_n, t_n))

As diffusers' ``train_lcm_distill_lora_sd_wds.py`` by default: no EMA target for a LoRA (the
target is the student itself, without gradient), the pseudo-Huber loss with c = 0.001, and the
guidance scale baked in. ``ema_decay`` gives the target its own copy of the LoRA, an exponential
moving average of the student's (theta^- <- mu theta^- + (1 - mu) theta, the LCM paper's target
network, mu = 0.95 there). An LCM-LoRA samples at guidance 1, without the unconditional pass.
Everything is ``model.fit`` with the loss in ``call``, so it runs on any Keras backend.
"""

import keras
import numpy as np
from keras import ops

from sdlib.sampling.lcm import LCMSampler
from sdlib.sampling.schedule import add_noise
from sdlib.training.diffusion import PrintEvery, build_optimizer, cosine_schedule
from sdlib.training.lora import UNET_TARGETS, copy_model, enable_lora, lora_modules

HUBER_C = 0.001


def x0_and_eps(prediction_type, x, output, alpha_bar):
    """The model's clean latent and noise estimates from its output (epsilon or v: x0 = sqrt(a) x
    - sqrt(1 - a) v, eps = sqrt(1 - a) x + sqrt(a) v; Salimans & Ho 2022)."""
    signal, noise = ops.sqrt(alpha_bar), ops.sqrt(1.0 - alpha_bar)
    if prediction_type == "v_prediction":
        return signal * x - noise * output, noise * x + signal * output
    return (x - noise * output) / signal, output  # epsilon (alpha_bar > 0 where it is used)


class ConsistencyDistiller(keras.Model):
    """Returns f_student(x_{n+k}) - stopgrad f_student(x_n): the loss is its pseudo-Huber norm."""

    def __init__(self, text_encoder, teacher, student, prediction_type, target=None, **kwargs):
        super().__init__(**kwargs)
        self.text_encoder, self.teacher, self.student = text_encoder, teacher, student
        self.target = target or student  # the EMA copy, or the student itself
        self.prediction_type = prediction_type

    def consistency(self, unet, x, timesteps, context, alpha_bar, c_skip, c_out):
        x0, _ = x0_and_eps(self.prediction_type, x, unet(x, timesteps, context), alpha_bar)
        return c_skip * x + c_out * x0

    def call(self, inputs):
        context = ops.stop_gradient(self.text_encoder(inputs["token_ids"]))  # (B, 77, D)
        empty = ops.stop_gradient(self.text_encoder(inputs["empty_ids"]))
        x, start, end = inputs["noisy_latents"], inputs["start"], inputs["end"]  # (B, h, w, C)
        a_start, a_end, w = inputs["alpha_start"], inputs["alpha_end"], inputs["guidance"]
        # the teacher's guided DDIM step from t_{n+k} to t_n, [unconditional; conditional]
        both = self.teacher(ops.concatenate([x, x]), ops.concatenate([start, start]),
                            ops.concatenate([empty, context]))
        uncond, cond = ops.split(both, 2)
        guided = uncond + w * (cond - uncond)
        x0, eps = x0_and_eps(self.prediction_type, x, guided, a_start)
        x_end = ops.stop_gradient(ops.sqrt(a_end) * x0 + ops.sqrt(1.0 - a_end) * eps)
        target = ops.stop_gradient(self.consistency(
            self.target, x_end, end, context, a_end, inputs["c_skip_end"], inputs["c_out_end"]))
        prediction = self.consistency(self.student, x, start, context, a_start,
                                      inputs["c_skip_start"], inputs["c_out_start"])
        return prediction - target


class EmaTarget(keras.callbacks.Callback):
    """After each step, the target's LoRA weights move toward the student's:
    theta^- <- decay * theta^- + (1 - decay) * theta."""

    def __init__(self, student_layers, target_layers, decay):
        super().__init__()
        self.pairs = [(t_var, s_var) for (_, s), (_, t) in zip(student_layers, target_layers,
                                                                  strict=True)
                      for s_var, t_var in ((s.lora_kernel_a, t.lora_kernel_a),
                                           (s.lora_kernel_b, t.lora_kernel_b))]
        self.decay = decay

    def on_train_batch_end(self, batch, logs=None):
        for target, student in self.pairs:
            target.assign(self.decay * target + (1.0 - self.decay) * student)


def pseudo_huber(y_true, difference):
    """sqrt(d^2 + c^2) - c (Song & Dhariwal 2023): quadratic near 0, linear far from it."""
    return ops.mean(ops.sqrt(ops.square(difference - y_true) + HUBER_C**2) - HUBER_C)


class ConsistencyPairs(keras.utils.PyDataset):
    """Batches of a latent noised to t_{n+k} of the LCM skip schedule, t_n = t_{n+k} - k (0 at the
    bottom), their schedule values and boundary scalings, captions and a guidance scale in
    ``guidance`` (low, high), drawn fresh each step."""

    def __init__(self, latents, token_ids, empty_ids, sampler, batch_size, steps, seed, guidance):
        super().__init__()
        self.latents, self.token_ids, self.empty_ids = latents, token_ids, empty_ids
        self.alphas_bar = sampler.alphas_cumprod.astype(np.float32)
        self.sampler, self.batch_size, self.steps, self.seed = sampler, batch_size, steps, seed
        self.guidance = guidance
        original = sampler.original_inference_steps
        self.skip = sampler.config.num_train_timesteps // original  # k
        self.starts = np.arange(1, original + 1) * self.skip - 1  # k - 1, ..., T - 1

    def __len__(self):
        return self.steps

    def __getitem__(self, index):
        rng = np.random.default_rng((self.seed, index))
        rows = rng.integers(0, len(self.latents), self.batch_size)
        x0 = self.latents[rows]  # (B, h, w, C)
        start = self.starts[rng.integers(0, len(self.starts), self.batch_size)]
        end = np.maximum(start - self.skip, 0)
        a_start, a_end = self.alphas_bar[start], self.alphas_bar[end]
        noisy = add_noise(x0, rng.standard_normal(x0.shape, dtype=np.float32),
                          a_start[:, None, None, None])
        skip_start, out_start = self.sampler.boundary_scalings(start)
        skip_end, out_end = self.sampler.boundary_scalings(end)
        column = lambda values: np.asarray(values, np.float32)[:, None, None, None]  # noqa: E731
        inputs = {"noisy_latents": noisy.astype(np.float32), "start": start.astype(np.int32),
                  "end": end.astype(np.int32), "token_ids": self.token_ids[rows].astype(np.int32),
                  "empty_ids": np.repeat(self.empty_ids[None], self.batch_size, 0).astype(np.int32),
                  "alpha_start": column(a_start), "alpha_end": column(a_end),
                  "c_skip_start": column(skip_start), "c_out_start": column(out_start),
                  "c_skip_end": column(skip_end), "c_out_end": column(out_end),
                  "guidance": column(rng.uniform(*self.guidance, self.batch_size))}
        return inputs, np.zeros_like(x0, dtype=np.float32)


def distill_lcm_lora(text_encoder, unet, latents, token_ids, empty_ids, scheduler_config, steps,
                     rank=16, alpha=None, targets=UNET_TARGETS, guidance=(7.5, 7.5),
                     batch_size=32, learning_rate=1e-3, original_inference_steps=50, seed=0,
                     ema_decay=None, log_every=100, callbacks=(), jit_compile=True):
    """An LCM-LoRA of ``unet`` distilled from itself with guidance in ``guidance`` (low, high);
    the models given stay unchanged. Returns ``{("unet", layer name): LoraModule}`` for
    ``save_lora_file``; load it with ``load_lora_weights`` and sample with ``sampler="lcm"`` at
    guidance 1. ``ema_decay``: the target network's EMA decay (None: the student is its own
    target)."""
    if ema_decay is not None and keras.backend.backend() == "jax":
        raise ValueError("ema_decay needs the TensorFlow or torch backend: on JAX, fit keeps the "
                         "variables in its own state during an epoch, so the EMA update after "
                         "each step never reaches the target. Use KERAS_BACKEND=tensorflow, or "
                         "ema_decay=None.")
    keras.utils.set_random_seed(seed)
    context_length = text_encoder.config.max_position_embeddings
    student = copy_model(unet, context_length)
    layers = enable_lora(student, rank, float(alpha or rank), targets)
    target, ema = None, []
    if ema_decay is not None:
        target = copy_model(unet, context_length)
        target_layers = enable_lora(target, rank, float(alpha or rank), targets)
        for (_, s), (_, t) in zip(layers, target_layers, strict=True):
            # copies (numpy): on JAX two variables must not hold one buffer
            t.lora_kernel_a.assign(ops.convert_to_numpy(s.lora_kernel_a))
            t.lora_kernel_b.assign(ops.convert_to_numpy(s.lora_kernel_b))
        for variable in target.variables:
            variable.trainable = False
        ema = [EmaTarget(layers, target_layers, ema_decay)]
    sampler = LCMSampler(scheduler_config, original_inference_steps)
    data = ConsistencyPairs(latents, token_ids, empty_ids, sampler, batch_size, steps, seed,
                            guidance)
    distiller = ConsistencyDistiller(text_encoder, unet, student,
                                     scheduler_config.prediction_type, target=target)
    optimizer = keras.optimizers.AdamW(cosine_schedule(learning_rate, steps, min(100, steps // 5)),
                                       weight_decay=1e-2, global_clipnorm=1.0)
    distiller.compile(optimizer=optimizer, loss=pseudo_huber, jit_compile=jit_compile)
    frozen = [(variable, variable.trainable)  # the teacher and the text encoder learn nothing
              for variable in [*text_encoder.variables, *unet.variables]]
    for variable, _ in frozen:
        variable.trainable = False
    try:
        build_optimizer(distiller)  # the LoRA's variables only, now that the rest is frozen
        distiller.fit(data, epochs=1, verbose=0,
                      callbacks=[PrintEvery(log_every, "lcm"), *ema, *callbacks])
    finally:
        for variable, trainable in frozen:
            variable.trainable = trainable
    return lora_modules("unet", layers)
