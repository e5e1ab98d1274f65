"""The noise schedule of DDPM's forward process (Ho et al. 2020), and which timesteps a run visits.

What every sampler shares: the betas and alpha_bar of a scheduler config, the timestep spacings
("leading", "trailing", "linspace"; Lin et al. 2024, Table 2), the forward process q(x_t | x_0) and
the per-step plan a sampler hands the pipeline. Symbols:

| paper            | code                                   |
|------------------|----------------------------------------|
| beta_t           | ``betas[t]``                           |
| alpha_bar_t      | ``alphas_cumprod[t]``                  |
| T                | ``num_train_timesteps``                |

Semantics match diffusers' schedulers built ``from_config(<the checkpoint's scheduler config>)``.
"""

import dataclasses
import math

import numpy as np

from sdlib.config import DIFFUSERS_FORMAT_VERSION, Config


@dataclasses.dataclass(frozen=True)
class SchedulerConfig(Config):
    """A diffusers scheduler config. Defaults are diffusers' own (DDIMScheduler's), which apply to
    keys a config file leaves out; SD v1.5's file sets most of them (see
    ``presets.SD15_SCHEDULER``).
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
        result = cls.from_dict(config)
        result.check()
        return result

    def to_diffusers(self) -> dict:
        """``scheduler/scheduler_config.json``, as a ``DDIMScheduler`` (sdlib's default sampler);
        an unset timestep spacing stays unset, so diffusers' DDIM default applies, as in sdlib."""
        values = {key: list(value) if isinstance(value, tuple) else value
                  for key, value in self.to_dict().items()}
        if values["timestep_spacing"] is None:
            del values["timestep_spacing"]
        return {"_class_name": "DDIMScheduler", "_diffusers_version": DIFFUSERS_FORMAT_VERSION,
                **values}

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
        sqrt_betas = np.linspace(config.beta_start**0.5, config.beta_end**0.5, steps,
                                 dtype=np.float32)
        betas = sqrt_betas**2
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


def spaced_timesteps(spacing, num_steps, num_train_timesteps, steps_offset=0, skip_last=False,
                     round_linspace=True):
    """The timesteps a run of ``num_steps`` visits, high to low, as diffusers' ``set_timesteps``.

    - "leading": multiples of T // n, plus ``steps_offset`` (SD v1's DDIM: 981, 961, ..., 1);
    - "trailing": counted down from T - 1 in steps of T / n, so the first step is at t = T - 1;
    - "linspace": n evenly spaced points from T - 1 to 0 (Euler keeps them fractional:
      ``round_linspace=False``).
    ``skip_last``: DPM-Solver's leading and linspace spacings place n + 1 points and drop the last.
    """
    points = num_steps + 1 if skip_last else num_steps
    if spacing == "leading":
        ratio = num_train_timesteps // points
        return (np.arange(points) * ratio).round()[::-1][:num_steps] + steps_offset
    if spacing == "trailing":
        return np.round(np.arange(num_train_timesteps, 0, -num_train_timesteps / num_steps)) - 1
    if spacing == "linspace":
        steps = np.linspace(0, num_train_timesteps - 1, points)
        return (steps.round() if round_linspace else steps)[::-1][:num_steps]
    raise ValueError(f"Unknown timestep spacing {spacing!r}; choose 'leading', 'trailing' or "
                     "'linspace'.")


def add_noise(sample, noise, alpha_bar):
    """The forward process q(x_t | x_0) (Ho et al. 2020, eq. 4): sqrt(a) x_0 + sqrt(1 - a) eps.

    Numpy in, numpy out (``** 0.5`` is numpy's exact square root); keras tensors work too.
    """
    return alpha_bar**0.5 * sample + (1.0 - alpha_bar) ** 0.5 * noise


@dataclasses.dataclass
class SamplerPlan:
    """What one run needs, per step that runs: timesteps (n,) and coefficients (n, K), the sampler
    family whose compiled update reads the coefficients, the initial noise's scale, and each
    step's noise level as the forward process reaches it: ``noise_levels`` (n, 2), rows (a, b) with
    x_t = a x_0 + b eps (DDIM and LCM: sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t); Euler: 1, sigma;
    DPM-Solver: alpha_t, sigma_t), what diffusers' ``scheduler.add_noise`` computes there.
    ``noise_steps`` (n,) bool: the steps that inject fresh noise (LCM: all but the last); None for
    the deterministic samplers."""

    timesteps: np.ndarray
    coefficients: np.ndarray
    init_noise_sigma: float
    family: str
    noise_levels: np.ndarray
    noise_steps: np.ndarray | None = None

    def add_noise(self, sample, noise, step=0):
        """``sample`` noised to the level of run step ``step``: where image-to-image starts."""
        signal, noise_scale = self.noise_levels[step]
        return signal * sample + noise_scale * noise

    def blend_levels(self):
        """(n, 2): the noise level an inpainting latent's kept region is reset to after each step:
        the next step's, and the clean image (1, 0) after the last (as diffusers'
        ``StableDiffusionInpaintPipeline`` blends a 4-channel UNet's latents)."""
        return np.concatenate([self.noise_levels[1:], [[1.0, 0.0]]]).astype(np.float32)


def check_start_step(start_step, num_steps):
    """A run starts at one of its steps: 0 (from noise) up to ``num_steps - 1`` (one step runs)."""
    if not 0 <= start_step < num_steps:
        raise ValueError(f"start_step={start_step} leaves no step to run out of {num_steps}; it "
                         f"must be between 0 and {num_steps - 1}.")
