"""Train Stable Diffusion in miniature end to end and export it as sdlib package data.

    python tools/train_mini_model.py             # the full schedule (~55 min on 2 cores)
    python tools/train_mini_model.py --out mini.safetensors --vae-steps 200 --diffusion-steps 300

Seeded: a rerun gives a model of the same quality. Stages (``sdlib.mini.train.train_mini_model``):
data -> autoencoder -> latents (scaled to unit variance, like SD's 0.18215) -> text encoder + UNet
with EMA -> export (fp16 safetensors).
"""

import argparse
import functools
import time

from sdlib import presets
from sdlib.loading.sdlib_file import save_sdlib_file
from sdlib.mini.train import train_mini_model
from sdlib.tokenizer import CLIPTokenizer


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--out", default=str(presets.MINI_SHAPES_WEIGHTS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-images", type=int, default=40_000)
    parser.add_argument("--vae-steps", type=int, default=2400)
    parser.add_argument("--vae-batch-size", type=int, default=32)
    parser.add_argument("--diffusion-steps", type=int, default=7200)
    parser.add_argument("--diffusion-batch-size", type=int, default=64)
    args = parser.parse_args()

    start = time.time()
    models, configs = train_mini_model(
        presets.mini_shapes_configs(), CLIPTokenizer.from_default(), num_images=args.num_images,
        vae_steps=args.vae_steps, vae_batch_size=args.vae_batch_size,
        diffusion_steps=args.diffusion_steps, diffusion_batch_size=args.diffusion_batch_size,
        seed=args.seed, log=functools.partial(print, flush=True))
    save_sdlib_file(models, configs, args.out)
    print(f"saved {args.out}; total {time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
