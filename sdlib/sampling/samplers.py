"""Samplers behind one call: ``text_to_image(..., sampler="ddim" | "euler" | "dpmpp_2m" | "lcm")``.

Every sampler turns the model's output at step i into the next latent. Euler (Karras et al. 2022,
Algorithm 1 with no churn) and DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2) are *linear* in their
inputs once the step's noise levels are known, so both are written as per-step coefficients computed
in numpy and one shared update in ``keras.ops``:

    x0     = p * x + q * model_output                  (the clean-latent estimate)
    x_next = A * x + B * x0 + C * x0_previous          (C = 0 for first-order steps)

The model sees ``c_in * x`` at timestep ``t``. Semantics match diffusers' ``EulerDiscreteScheduler``
and ``DPMSolverMultistepScheduler`` built ``from_config`` of the checkpoint's scheduler config.

| paper (Karras / Lu)  | code                                                   |
|----------------------|--------------------------------------------------------|
| sigma_i              | ``sigmas[i]`` = sqrt((1 - alpha_bar_t) / alpha_bar_t)  |
| alpha_t, sigma_t     | 1 / sqrt(1 + sigma^2), sigma / sqrt(1 + sigma^2)       |
| lambda_t             | log(alpha_t / sigma_t), the half log-SNR               |
| h_i                  | lambda_{t_{i+1}} - lambda_{t_i}                        |
"""

import numpy as np
from keras import ops

from sdlib.sampling.ddim import DDIMSampler
from sdlib.sampling.lcm import LCMSampler
from sdlib.sampling.schedule import SamplerPlan, alphas_cumprod, check_start_step, spaced_timesteps

SAMPLERS = ("ddim", "euler", "dpmpp_2m", "lcm")


class LinearMultistepSampler:
    """Shared update of Euler and DPM-Solver++(2M): coefficients (c_in, p, q, A, B, C)."""

    family = "linear"
    injects_noise = False
    steps_hint = "15-25 is usual for Euler and DPM-Solver++"

    def __init__(self, config):
        if config.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"{type(self).__name__} supports epsilon and v_prediction models, not "
                             f"prediction_type={config.prediction_type!r}; use sampler='ddim'.")
        self.config = config
        alphas_bar = alphas_cumprod(config).astype(np.float64)
        if config.rescale_betas_zero_snr:
            # Zero terminal SNR makes sigma(T) infinite; diffusers' Euler and DPM-Solver use the
            # smallest float16 subnormal instead, so the first sigma is large (4096) but finite.
            alphas_bar[-1] = 2.0**-24
        self.train_sigmas = np.sqrt((1 - alphas_bar) / alphas_bar)  # sigma(t), t = 0..T-1

    @property
    def max_steps(self):
        return self.config.num_train_timesteps

    def update(self, model_output, x, previous_x0, coefficients, noise):
        p, q, a, b, c = (coefficients[i] for i in range(1, 6))
        x0 = p * x + q * model_output
        return a * x + b * x0 + c * previous_x0, x0

    def sigmas_at(self, timesteps):
        """sigma(t) by linear interpolation in t, then a final 0 (diffusers' defaults)."""
        grid = np.arange(len(self.train_sigmas))
        return np.append(np.interp(timesteps, grid, self.train_sigmas), 0.0)


class EulerSampler(LinearMultistepSampler):
    """Euler's method on the probability-flow ODE in sigma (Karras et al. 2022, Algorithm 1)."""

    def timesteps(self, num_steps):
        config = self.config
        return spaced_timesteps(config.timestep_spacing or "linspace", num_steps,
                                config.num_train_timesteps, config.steps_offset,
                                round_linspace=False).astype(np.float32)

    def plan(self, num_steps, start_step=0):
        """The steps ``start_step``, ..., ``num_steps - 1`` of a ``num_steps`` run."""
        check_start_step(start_step, num_steps)
        timesteps = self.timesteps(num_steps)
        sigmas = self.sigmas_at(timesteps.astype(np.float64))  # (n + 1,)
        rows = []
        for i in range(num_steps):
            sigma, sigma_next = sigmas[i], sigmas[i + 1]
            c_in = 1.0 / np.sqrt(sigma**2 + 1.0)
            if self.config.prediction_type == "epsilon":
                p, q = 1.0, -sigma  # x0 = x - sigma * eps
            else:
                p, q = 1.0 / (sigma**2 + 1.0), -sigma * c_in
            dt = sigma_next - sigma  # x_next = x + (x - x0) / sigma * dt
            rows.append((c_in, p, q, 1.0 + dt / sigma, -dt / sigma, 0.0))
        spacing = self.config.timestep_spacing or "linspace"
        max_sigma = float(sigmas.max())
        # diffusers' init_noise_sigma: sigma_max, or sqrt(sigma_max^2 + 1) for "leading"
        leading_init = float(np.sqrt(max_sigma**2 + 1))
        init = max_sigma if spacing in ("linspace", "trailing") else leading_init
        noise_levels = np.stack([np.ones(num_steps), sigmas[:-1]], axis=1)  # x0 + sigma eps
        return SamplerPlan(timesteps[start_step:], np.asarray(rows, np.float32)[start_step:], init,
                           self.family, noise_levels[start_step:].astype(np.float32))


class DPMSolverPlusPlus2M(LinearMultistepSampler):
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): second order from the previous x0 estimate,
    first order on the first and the last step (the last goes to sigma = 0)."""

    def timesteps(self, num_steps):
        config = self.config
        return spaced_timesteps(config.timestep_spacing or "linspace", num_steps,
                                config.num_train_timesteps, config.steps_offset,
                                skip_last=True).astype(np.float32)

    def plan(self, num_steps, start_step=0):
        """The steps ``start_step``, ..., ``num_steps - 1`` of a ``num_steps`` run. The multistep
        history starts with the first step that runs: it is first order, as in diffusers."""
        check_start_step(start_step, num_steps)
        timesteps = self.timesteps(num_steps)
        sigmas = self.sigmas_at(timesteps.astype(np.float64))  # (n + 1,), last 0

        def alpha_sigma(sigma):
            alpha = 1.0 / np.sqrt(sigma**2 + 1.0)
            return alpha, sigma * alpha

        def half_log_snr(sigma):
            alpha, scaled_sigma = alpha_sigma(sigma)
            return np.log(alpha) - np.log(scaled_sigma) if sigma > 0 else np.inf

        rows = []
        for i in range(num_steps):
            alpha_s, sigma_s = alpha_sigma(sigmas[i])
            if self.config.prediction_type == "epsilon":
                p, q = 1.0 / alpha_s, -sigma_s / alpha_s  # x0 = (x - sigma_t eps) / alpha_t
            else:
                p, q = alpha_s, -sigma_s
            alpha_t, sigma_t = alpha_sigma(sigmas[i + 1])
            if sigmas[i + 1] == 0:  # the final step lands on x0 itself
                rows.append((1.0, p, q, 0.0, 1.0, 0.0))
                continue
            h = half_log_snr(sigmas[i + 1]) - half_log_snr(sigmas[i])
            a = sigma_t / sigma_s
            b = -alpha_t * (np.exp(-h) - 1.0)
            if i == start_step:
                rows.append((1.0, p, q, a, b, 0.0))
                continue
            r = (half_log_snr(sigmas[i]) - half_log_snr(sigmas[i - 1])) / h
            # x_t = a x + b D0 + 0.5 b D1, D0 = x0, D1 = (x0 - x0_prev) / r
            rows.append((1.0, p, q, a, b + 0.5 * b / r, -0.5 * b / r))
        noise_levels = np.array([alpha_sigma(s) for s in sigmas[:-1]])  # alpha x0 + sigma eps
        return SamplerPlan(timesteps[start_step:], np.asarray(rows, np.float32)[start_step:], 1.0,
                           self.family, noise_levels[start_step:].astype(np.float32))


def make_sampler(name, config):
    classes = {"ddim": DDIMSampler, "euler": EulerSampler, "dpmpp_2m": DPMSolverPlusPlus2M,
               "lcm": LCMSampler}
    if name not in classes:
        raise ValueError(f"Unknown sampler {name!r}; choose one of {list(SAMPLERS)}.")
    return classes[name](config)


def run_plan(sampler, plan, model, x, noises=None):
    """Run a plan with a plain function ``model(x_scaled, t) -> output`` (numpy; for tests).
    ``noises``: what each step injects (LCM), one array per step; None: zeros."""
    previous_x0 = np.zeros_like(x)
    noises = [np.zeros_like(x)] * len(plan.timesteps) if noises is None else noises
    outputs = []
    for t, coefficients, noise in zip(plan.timesteps, plan.coefficients, noises, strict=True):
        output = model(coefficients[0] * x, t)
        x, previous_x0 = (ops.convert_to_numpy(v) for v in
                          sampler.update(output, x, previous_x0, coefficients, noise))
        outputs.append(x)
    return outputs
