"""LCM: multistep consistency sampling (Song et al. 2023, "Consistency Models", Algorithm 1) in the
latent space of Stable Diffusion (Luo et al. 2023, "Latent Consistency Models").

A consistency model maps any x_t on a trajectory straight to its clean end, f(x_t, t), and the
multistep sampler alternates that jump with a return to the next, lower noise level with fresh
noise. Diffusers' ``LCMScheduler`` writes f with the SD model's own x_0 estimate and the boundary
condition of consistency models (f(x, 0) = x):

    x0       = p * x + q * model_output                      (epsilon, v or x_0 prediction)
    denoised = c_skip(t) * x + c_out(t) * x0                 (f(x_t, t))
    x_next   = sqrt(alpha_bar_next) * denoised + sqrt(1 - alpha_bar_next) * z,   z ~ N(0, I)

and the last step returns ``denoised`` itself (no noise after it). Linear in x, the model output and
z once t is known, so each step is a row of coefficients computed in numpy, like the other samplers.

| paper              | code                                                              |
|--------------------|-------------------------------------------------------------------|
| alpha_bar_t        | ``alphas_cumprod[t]``                                             |
| sigma_data         | ``SIGMA_DATA`` = 0.5                                              |
| c_skip(t)          | sigma_data^2 / ((s t)^2 + sigma_data^2), s = ``timestep_scaling`` |
| c_out(t)           | s t / sqrt((s t)^2 + sigma_data^2)                                |
| f_theta(x_t, t)    | ``denoised``                                                      |
| k (skip interval)  | T // ``original_inference_steps``                                 |
| z                  | the noise a step injects (the pipeline draws it)                  |

Semantics match ``LCMScheduler.from_config(<the checkpoint's scheduler config>)`` with diffusers'
defaults ``original_inference_steps=50`` and ``timestep_scaling=10.0``, as diffusers'
``StableDiffusion*Pipeline`` runs it: classifier-free guidance as for any sampler (an LCM-LoRA),
image-to-image the last ``int(num_steps * strength)`` steps of the ``num_steps`` schedule. An
LCM-distilled UNet (``time_cond_proj_dim``) reads the guidance scale as an input instead and runs
once per step, as in ``LatentConsistencyModelPipeline``; the pipeline's step does that, the
sampler is the same. The config's ``timestep_spacing``, ``steps_offset`` and ``set_alpha_to_one``
do not apply (LCM has its own timesteps, and its last step never looks past them).
``clip_sample`` does: where a config file leaves it out, ``SchedulerConfig`` takes DDIM's default
(True) and ``LCMScheduler`` its own (False); SD's files set it (False).
"""

import numpy as np
from keras import ops

from sdlib.sampling.schedule import SamplerPlan, alphas_cumprod, check_start_step

SIGMA_DATA = 0.5  # the data's standard deviation in the boundary condition (Karras et al. 2022)


class LCMSampler:
    """Latent consistency sampling in a few steps (1-8), for LCM-distilled UNets and LCM-LoRAs.

    Coefficients per step: (c_in, p, q, c_skip, c_out, signal, noise), with x_next =
    signal * denoised + noise * z; (1, 0) on the last step.
    """

    family = "lcm"
    injects_noise = True  # the pipeline hands each step a fresh z (the plan's ``noise_steps``)

    def __init__(self, config, original_inference_steps=50, timestep_scaling=10.0):
        self.config = config
        self.original_inference_steps = int(original_inference_steps)
        self.timestep_scaling = float(timestep_scaling)
        self.alphas_cumprod = alphas_cumprod(config)

    @property
    def max_steps(self):
        return self.original_inference_steps

    @property
    def steps_hint(self):
        original = self.original_inference_steps
        return (f"1-8 is usual for LCM; its timesteps are a subset of the {original}-step schedule "
                f"it was distilled on, original_inference_steps={original}")

    def timesteps(self, num_steps):
        """LCM's timesteps, high to low: ``num_steps`` evenly spaced by index out of the N =
        ``original_inference_steps`` it was distilled on, k - 1, 2k - 1, ..., N k - 1 (T - 1 where
        N divides T)."""
        original = self.original_inference_steps
        if original > self.config.num_train_timesteps:
            raise ValueError(f"original_inference_steps={original} cannot exceed the "
                             f"{self.config.num_train_timesteps} training timesteps.")
        if not 1 <= num_steps <= original:
            raise ValueError(f"sampler='lcm' takes num_steps between 1 and {original}, got "
                             f"{num_steps} ({self.steps_hint}).")
        skip = self.config.num_train_timesteps // original  # k
        origin = (np.arange(1, original + 1) * skip - 1)[::-1]  # T - 1, ..., k - 1
        indices = np.floor(np.linspace(0, original, num_steps, endpoint=False)).astype(np.int64)
        return origin[indices]

    def boundary_scalings(self, timesteps):
        """c_skip(t), c_out(t): f(x, t) = c_skip x + c_out x0, and f -> x as t -> 0."""
        scaled = np.asarray(timesteps, np.float64) * self.timestep_scaling
        c_skip = SIGMA_DATA**2 / (scaled**2 + SIGMA_DATA**2)
        c_out = scaled / np.sqrt(scaled**2 + SIGMA_DATA**2)
        return c_skip, c_out

    def plan(self, num_steps, start_step=0):
        """The steps ``start_step``, ..., ``num_steps - 1`` of a ``num_steps`` run; every step but
        the last injects noise."""
        check_start_step(start_step, num_steps)
        timesteps = self.timesteps(num_steps)
        alphas = self.alphas_cumprod[timesteps].astype(np.float64)  # (n,)
        prediction = self.config.prediction_type
        if prediction == "epsilon" and alphas[0] == 0.0:
            raise ValueError("sampler='lcm' with an epsilon model cannot start at zero SNR "
                             "(alpha_bar = 0 at t = T - 1: rescale_betas_zero_snr): x_0 = (x - "
                             "sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar) divides by zero; use a "
                             "v-prediction model.")
        if prediction == "epsilon":  # x0 = (x - sqrt(1 - a) eps) / sqrt(a)
            p, q = 1.0 / np.sqrt(alphas), -np.sqrt(1.0 - alphas) / np.sqrt(alphas)
        elif prediction == "v_prediction":  # x0 = sqrt(a) x - sqrt(1 - a) v
            p, q = np.sqrt(alphas), -np.sqrt(1.0 - alphas)
        else:  # the model predicts x0
            p, q = np.zeros_like(alphas), np.ones_like(alphas)
        c_skip, c_out = self.boundary_scalings(timesteps)
        alphas_next = np.append(alphas[1:], 1.0)  # the last step lands on denoised: (1, 0)
        rows = np.stack([np.ones_like(alphas), p, q, c_skip, c_out, np.sqrt(alphas_next),
                         np.sqrt(1.0 - alphas_next)], axis=1)  # (n, 7)
        alphas32 = self.alphas_cumprod[timesteps]
        noise_levels = np.stack([alphas32**0.5, (1.0 - alphas32) ** 0.5], axis=1)  # (n, 2)
        noise_steps = np.arange(num_steps) < num_steps - 1
        return SamplerPlan(timesteps[start_step:].astype(np.float32),
                           rows[start_step:].astype(np.float32), 1.0, self.family,
                           noise_levels[start_step:].astype(np.float32), noise_steps[start_step:])

    def update(self, model_output, x, previous_x0, coefficients, noise):
        """One LCM step; returns ``(x_next, denoised)``. ``noise`` is z (zeros on the last step)."""
        p, q, c_skip, c_out, signal, noise_scale = (coefficients[i] for i in range(1, 7))
        # 1. the model's clean-latent estimate, from its parameterisation
        x0 = p * x + q * model_output
        # 2. optionally clip it (LCMScheduler's default is not to; SD's configs say so too)
        if self.config.clip_sample:
            bound = self.config.clip_sample_range
            x0 = ops.clip(x0, -bound, bound)
        # 3. the consistency function f(x_t, t) with its boundary condition (ops.add: on torch a
        # numpy array cannot stand left of the torch tensor that ops.clip returns)
        denoised = ops.add(c_skip * x, c_out * x0)
        # 4. back up to the next step's noise level with fresh noise (the last step: denoised)
        return ops.add(signal * denoised, noise_scale * noise), denoised
