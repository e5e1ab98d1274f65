"""Train Stable Diffusion in miniature end to end and export it as sdlib package data.

    python tools/train_mini_model.py                       # the full schedule (~55 min on 2 cores)
    python tools/train_mini_model.py --out /tmp/mini.safetensors --vae-steps 200 --diffusion-steps 300

Seeded: a rerun gives a model of the same quality. Stages: data -> autoencoder -> latents (scaled to
unit variance, like SD's 0.18215) -> text encoder + UNet with EMA -> export (fp16 safetensors).
"""

import argparse
import dataclasses
import time

import numpy as np

from sdlib import checkpoint, presets, train
from sdlib.tokenizer import CLIPTokenizer


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--out", default=str(presets.MINI_SHAPES_WEIGHTS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-images", type=int, default=40_000)
    parser.add_argument("--vae-steps", type=int, default=2400)
    parser.add_argument("--vae-batch-size", type=int, default=32)
    parser.add_argument("--diffusion-steps", type=int, default=7200)
    parser.add_argument("--diffusion-batch-size", type=int, default=64)
    args = parser.parse_args()

    start = time.time()
    configs = presets.mini_shapes_configs()
    tokenizer = CLIPTokenizer.from_default()
    images, token_ids, empty_ids = train.training_set(args.num_images, args.seed, tokenizer)
    print(f"data: {len(images)} images in {time.time() - start:.0f} s", flush=True)

    text_encoder, unet, vae = train.build_untrained(configs, seed=args.seed)
    stage = time.time()
    train.train_autoencoder(vae, images, steps=args.vae_steps, batch_size=args.vae_batch_size,
                            seed=args.seed)
    print(f"autoencoder: {time.time() - stage:.0f} s", flush=True)

    stage = time.time()
    latents = train.encode_latents(vae, images)
    reconstruction = np.concatenate([
        np.asarray(vae.decode(latents[i:i + 256])) for i in range(0, 1024, 256)])
    mse = float(np.mean((reconstruction - (images[:1024] / 127.5 - 1.0)) ** 2))
    scaling_factor = float(1.0 / latents.std())
    configs["vae"] = dataclasses.replace(configs["vae"], scaling_factor=scaling_factor)
    print(f"latents: std {latents.std():.3f} -> scaling_factor {scaling_factor:.5f}; "
          f"reconstruction MSE {mse:.4f} on [-1, 1] ({time.time() - stage:.0f} s)", flush=True)

    stage = time.time()
    train.train_diffusion(text_encoder, unet, latents * scaling_factor, token_ids, empty_ids,
                          configs["scheduler"], steps=args.diffusion_steps,
                          batch_size=args.diffusion_batch_size, seed=args.seed)
    print(f"diffusion: {time.time() - stage:.0f} s", flush=True)

    # The VAE object was built with the placeholder scaling factor; rebuild its config.
    vae.config = configs["vae"]
    checkpoint.save_sdlib_file({"text_encoder": text_encoder, "unet": unet, "vae": vae}, configs,
                               args.out)
    print(f"saved {args.out}; total {time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
