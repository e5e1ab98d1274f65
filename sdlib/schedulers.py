"""Noise schedules and samplers: DDPM's forward process, DDIM's deterministic reverse step.

Symbols (Ho et al. 2020; Song et al. 2021 "DDIM"):

| paper            | code                                   |
|------------------|----------------------------------------|
| beta_t           | ``betas[t]``                           |
| alpha_bar_t      | ``alphas_cumprod[t]``                  |
| x_t              | ``sample`` (the latent at step t)      |
| epsilon_theta    | ``model_output`` (predicted noise)     |
| x_0 prediction   | ``pred_original_sample``               |
| sigma_t          | DDIM eta * ... (eta = 0 here: deterministic) |

Semantics match diffusers' ``DDIMScheduler.from_config(<the checkpoint's scheduler config>)``, so the
same weights and the same initial noise give the same image.
"""

import dataclasses
import math

import numpy as np
from keras import ops


@dataclasses.dataclass(frozen=True)
class SchedulerConfig:
    """A diffusers scheduler config. Defaults are diffusers' own (DDIMScheduler's), which apply to
    keys a config file leaves out; SD v1.5's file sets most of them (see ``presets.SD15_SCHEDULER``).
    """

    num_train_timesteps: int = 1000
    beta_start: float = 0.0001
    beta_end: float = 0.02
    beta_schedule: str = "linear"
    trained_betas: tuple | None = None
    prediction_type: str = "epsilon"
    # None: the sampler's own default ("leading" for DDIM, "linspace" for Euler and DPM-Solver).
    timestep_spacing: str | None = None
    steps_offset: int = 0
    set_alpha_to_one: bool = True
    clip_sample: bool = True
    clip_sample_range: float = 1.0
    rescale_betas_zero_snr: bool = False

    @classmethod
    def from_diffusers(cls, config: dict) -> "SchedulerConfig":
        """Read ``scheduler/scheduler_config.json`` as ``DDIMScheduler.from_config`` would.

        Keys a DDIM scheduler does not know (``skip_prk_steps`` of PNDM, ...) are ignored; missing
        keys take DDIM's defaults, exactly as in diffusers.
        """
        if config.get("thresholding"):
            raise ValueError("scheduler config thresholding=True (dynamic thresholding, for pixel-"
                             "space models) is not supported by sdlib.")
        names = {field.name for field in dataclasses.fields(cls)}
        values = {key: value for key, value in config.items() if key in names}
        if values.get("trained_betas") is not None:
            values["trained_betas"] = tuple(values["trained_betas"])
        result = cls(**values)
        result.check()
        return result

    def check(self):
        choices = {
            "beta_schedule": ("linear", "scaled_linear", "squaredcos_cap_v2"),
            "prediction_type": ("epsilon", "v_prediction", "sample"),
            "timestep_spacing": ("leading", "trailing", "linspace"),
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in (*allowed, None):
                raise ValueError(f"scheduler {key}={getattr(self, key)!r} is not supported; "
                                 f"choose one of {allowed}.")


def make_betas(config: SchedulerConfig) -> np.ndarray:
    """The forward-process variances beta_1..beta_T (float32, as diffusers builds them)."""
    steps = config.num_train_timesteps
    if config.trained_betas is not None:
        betas = np.asarray(config.trained_betas, dtype=np.float32)
    elif config.beta_schedule == "linear":
        betas = np.linspace(config.beta_start, config.beta_end, steps, dtype=np.float32)
    elif config.beta_schedule == "scaled_linear":
        # Latent diffusion's schedule: linear in sqrt(beta).
        betas = np.linspace(config.beta_start**0.5, config.beta_end**0.5, steps, dtype=np.float32) ** 2
    else:
        # Nichol & Dhariwal 2021, eq. 17: alpha_bar(t) = cos^2(((t / T) + s) / (1 + s) * pi / 2).
        def alpha_bar(t):
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = np.array([min(1 - alpha_bar((i + 1) / steps) / alpha_bar(i / steps), 0.999)
                          for i in range(steps)], dtype=np.float32)
    if config.rescale_betas_zero_snr:
        betas = _rescale_zero_terminal_snr(betas)
    return betas


def _rescale_zero_terminal_snr(betas):
    """Lin et al. 2024, Algorithm 1: shift the schedule so the last step has zero SNR."""
    alphas_bar_sqrt = np.sqrt(np.cumprod(1.0 - betas, dtype=np.float32))
    first, last = alphas_bar_sqrt[0], alphas_bar_sqrt[-1]
    alphas_bar_sqrt = (alphas_bar_sqrt - last) * first / (first - last)
    alphas_bar = alphas_bar_sqrt**2
    alphas = np.concatenate([alphas_bar[:1], alphas_bar[1:] / alphas_bar[:-1]])
    return (1 - alphas).astype(np.float32)


def alphas_cumprod(config: SchedulerConfig) -> np.ndarray:
    """alpha_bar_t = prod_{s <= t} (1 - beta_s), for t = 0..T-1 (float32)."""
    return np.cumprod(1.0 - make_betas(config), dtype=np.float32)


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
        spacing = config.timestep_spacing or "leading"
        if spacing == "leading":
            ratio = total // num_steps
            steps = (np.arange(num_steps) * ratio).round()[::-1] + config.steps_offset
        elif spacing == "trailing":
            steps = np.round(np.arange(total, 0, -total / num_steps)) - 1
        else:
            steps = np.linspace(0, total - 1, num_steps).round()[::-1]
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
            pred_original = (sample - ops.sqrt(beta_t) * model_output) / ops.sqrt(alpha_t)
            pred_epsilon = model_output
        elif config.prediction_type == "v_prediction":  # Salimans & Ho 2022, sec. 4
            pred_original = ops.sqrt(alpha_t) * sample - ops.sqrt(beta_t) * model_output
            pred_epsilon = ops.sqrt(alpha_t) * model_output + ops.sqrt(beta_t) * sample
        else:
            pred_original = model_output
            pred_epsilon = (sample - ops.sqrt(alpha_t) * pred_original) / ops.sqrt(beta_t)
        # 2. optionally clip x_0 (the noise estimate stays unclipped, as in diffusers' default)
        if config.clip_sample:
            bound = config.clip_sample_range
            pred_original = ops.clip(pred_original, -bound, bound)
        # 3. "direction pointing to x_t" and x_{t-1} (eq. 12 with sigma_t = 0)
        direction = ops.sqrt(1.0 - alpha_prev) * pred_epsilon
        prev_sample = ops.sqrt(alpha_prev) * pred_original + direction
        return prev_sample, pred_original


def add_noise(sample, noise, alpha_bar):
    """The forward process q(x_t | x_0) (Ho et al. 2020, eq. 4): sqrt(a) x_0 + sqrt(1 - a) eps."""
    return ops.sqrt(alpha_bar) * sample + ops.sqrt(1.0 - alpha_bar) * noise
