"""Reference outputs of diffusers' DDIM, Euler and DPM-Solver++(2M) for a zero-terminal-SNR,
v-prediction schedule (Lin et al. 2024), the one the mini-shapes model is trained with.

A maintainer's script, run by hand in an environment with torch and diffusers (no network):

    refenv/bin/python tools/make_zero_snr_fixture.py     # writes tests/fixtures/zero_snr.{npz,json}

Each scheduler is built ``from_config`` of the config below and run with a dummy model applied
to the scaled model input, model_output = 0.1 * scale_model_input(x, t) + t / 1000, from a
seeded start. Arithmetic is float64 (the schedulers' sigmas cast up): Euler starts at sigma 4096
and its float32 update cancels large terms, so diffusers' float32 run differs from its own
float64 run by up to 7e-4.
"""

import argparse
import json
from pathlib import Path

import diffusers
import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    prediction_type="v_prediction", rescale_betas_zero_snr=True, timestep_spacing="trailing",
    steps_offset=1, set_alpha_to_one=False, clip_sample=False,
)
CLASSES = {"ddim": "DDIMScheduler", "euler": "EulerDiscreteScheduler",
           "dpmpp_2m": "DPMSolverMultistepScheduler"}
STEPS = (5, 12)


@torch.no_grad()
def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(REPO_ROOT / "tests" / "fixtures"))
    args = parser.parse_args()
    start = np.random.default_rng(7).standard_normal((2, 8, 8, 4)).astype(np.float32)
    arrays, runs = {"start": start}, {}
    for name, class_name in CLASSES.items():
        for steps in STEPS:
            scheduler = getattr(diffusers, class_name).from_config(CONFIG)
            scheduler.set_timesteps(steps)
            if hasattr(scheduler, "sigmas"):
                scheduler.sigmas = scheduler.sigmas.double()
            sample = torch.from_numpy(start).double() * scheduler.init_noise_sigma
            outputs = []
            for t in scheduler.timesteps:
                model_output = 0.1 * scheduler.scale_model_input(sample, t) + float(t) / 1000
                sample = scheduler.step(model_output, t, sample).prev_sample
                outputs.append(sample)
            key = f"{name}_{steps}"
            arrays[f"{key}_timesteps"] = scheduler.timesteps.numpy().astype(np.float32)
            arrays[f"{key}_prev_sample"] = torch.stack(outputs).numpy().astype(np.float32)
            runs[key] = dict(init_noise_sigma=float(scheduler.init_noise_sigma))
    out = Path(args.out)
    np.savez_compressed(out / "zero_snr.npz", **arrays)
    info = dict(config=CONFIG, classes=CLASSES, runs=runs, diffusers=diffusers.__version__,
                torch=torch.__version__,
                start="np.random.default_rng(7).standard_normal((2, 8, 8, 4))",
                arithmetic="float64",
                dummy_model="0.1 * scheduler.scale_model_input(sample, t) + t / 1000")
    (out / "zero_snr.json").write_text(json.dumps(info, indent=1) + "\n")
    print(f"wrote {out / 'zero_snr.npz'}")


if __name__ == "__main__":
    main()
