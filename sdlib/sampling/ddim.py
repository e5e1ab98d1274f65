"""DDIM, the deterministic sampler of Song et al. 2021 ("Denoising Diffusion Implicit Models").

Symbols (Ho et al. 2020; Song et al. 2021, eq. 12):

| paper            | code                                   |
|------------------|----------------------------------------|
| alpha_bar_t      | ``alpha_t`` (``alphas_cumprod[t]``)    |
| alpha_bar_{t-1}  | ``alpha_prev``                         |
| x_t              | ``sample`` (the latent at step t)      |
| epsilon_theta    | ``model_output`` (predicted noise)     |
| x_0 prediction   | ``pred_original_sample``               |
| sigma_t          | DDIM eta * ... (eta = 0 here: deterministic) |

Semantics match diffusers' ``DDIMScheduler.from_config(<the checkpoint's scheduler config>)``, so
the same weights and the same initial noise give the same image.
"""

import numpy as np
from keras import ops

from sdlib.sampling.schedule import (
    SamplerPlan,
    SchedulerConfig,
    alphas_cumprod,
    check_start_step,
    spaced_timesteps,
)


class DDIMScheduler:
    """Denoising Diffusion Implicit Models (Song et al. 2021), eq. 12 with eta = 0."""

    def __init__(self, config: SchedulerConfig | None = None):
        self.config = config or SchedulerConfig()
        self.config.check()
        self.alphas_cumprod = alphas_cumprod(self.config)
        self.final_alpha_cumprod = 1.0 if self.config.set_alpha_to_one else self.alphas_cumprod[0]

    def timesteps(self, num_steps: int) -> np.ndarray:
        """The timesteps visited, high to low (diffusers' ``set_timesteps``)."""
        total, config = self.config.num_train_timesteps, self.config
        if not 1 <= num_steps <= total:
            raise ValueError(f"num_steps must be between 1 and {total} (the number of training "
                             f"timesteps), got {num_steps}.")
        steps = spaced_timesteps(config.timestep_spacing or "leading", num_steps, total,
                                 config.steps_offset)
        return steps.astype(np.int64)

    def step_alphas(self, num_steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per step: timestep t, alpha_bar_t and alpha_bar of the previous (less noisy) step."""
        timesteps = self.timesteps(num_steps)
        # diffusers steps back by T // num_steps whatever the spacing.
        previous = timesteps - self.config.num_train_timesteps // num_steps
        # With steps_offset, 1000 steps would visit t = 1000, past the table (diffusers raises an
        # IndexError there); the last entry stands in.
        alpha = self.alphas_cumprod[np.minimum(timesteps, len(self.alphas_cumprod) - 1)]
        alpha_prev = np.where(previous >= 0, self.alphas_cumprod[np.maximum(previous, 0)],
                              self.final_alpha_cumprod)
        return timesteps, alpha.astype(np.float32), alpha_prev.astype(np.float32)

    def step(self, model_output, sample, alpha_t, alpha_prev):
        """One DDIM step from x_t to x_{t-1}; returns ``(prev_sample, pred_original_sample)``.

        Works on keras tensors (inside a compiled function) and numpy arrays alike.
        """
        config = self.config
        beta_t = 1.0 - alpha_t
        # 1. predict the clean sample x_0 and the noise (eq. 12, "predicted x_0")
        if config.prediction_type == "epsilon":
            # ops.subtract, not `-`: on torch a numpy array cannot stand left of a torch tensor.
            noise_part = ops.sqrt(beta_t) * model_output
            pred_original = ops.subtract(sample, noise_part) / ops.sqrt(alpha_t)
            pred_epsilon = model_output
        elif config.prediction_type == "v_prediction":  # Salimans & Ho 2022, sec. 4
            pred_original = ops.sqrt(alpha_t) * sample - ops.sqrt(beta_t) * model_output
            pred_epsilon = ops.sqrt(alpha_t) * model_output + ops.sqrt(beta_t) * sample
        else:
            pred_original = model_output
            signal_part = ops.sqrt(alpha_t) * pred_original
            pred_epsilon = ops.subtract(sample, signal_part) / ops.sqrt(beta_t)
        # 2. optionally clip x_0 (the noise estimate stays unclipped, as in diffusers' default)
        if config.clip_sample:
            bound = config.clip_sample_range
            pred_original = ops.clip(pred_original, -bound, bound)
        # 3. "direction pointing to x_t" and x_{t-1} (eq. 12 with sigma_t = 0)
        direction = ops.sqrt(1.0 - alpha_prev) * pred_epsilon
        prev_sample = ops.sqrt(alpha_prev) * pred_original + direction
        return prev_sample, pred_original


class DDIMSampler:
    """DDIM behind the samplers' common interface: a plan of per-step coefficients (1, alpha_bar_t,
    alpha_bar_prev) and the update the compiled step applies."""

    family = "ddim"
    injects_noise = False
    steps_hint = "25-50 is usual for DDIM"

    def __init__(self, config):
        self.scheduler = DDIMScheduler(config)

    @property
    def max_steps(self):
        return self.scheduler.config.num_train_timesteps

    def plan(self, num_steps, start_step=0):
        """The steps ``start_step``, ..., ``num_steps - 1`` of a ``num_steps`` run."""
        check_start_step(start_step, num_steps)
        timesteps, alphas, alphas_prev = self.scheduler.step_alphas(num_steps)
        coefficients = np.stack([np.ones_like(alphas), alphas, alphas_prev], axis=1)  # (n, 3)
        noise_levels = np.stack([alphas**0.5, (1.0 - alphas) ** 0.5], axis=1)  # (n, 2)
        return SamplerPlan(timesteps[start_step:].astype(np.float32),
                           coefficients[start_step:].astype(np.float32), 1.0, self.family,
                           noise_levels[start_step:].astype(np.float32))

    def update(self, model_output, x, previous_x0, coefficients, noise):
        return self.scheduler.step(model_output, x, coefficients[1], coefficients[2])

