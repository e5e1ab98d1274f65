"""Train the LoRA that teaches mini-shapes its four held-out (color, shape) pairs, and write the
shipped file (diffusers' PEFT format, so diffusers loads it too).

    python tools/train_mini_lora.py                  # the shipped schedule (~4 min on 2 cores)
    python tools/train_mini_lora.py --steps 100 --out try.safetensors

Seeded. Recipe: ``sdlib.mini.adapters.train_held_out_lora`` (the UNet's attention and feed-forward
layers and the text encoder's, rank 4, the base weights frozen).
"""

import argparse
import functools
import os
import time

import sdlib
from sdlib import presets
from sdlib.loading.lora import save_lora_file
from sdlib.mini.adapters import train_held_out_lora


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--out", default=str(presets.SHIPPED_LORAS["mini-shapes-held-out"]))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-images", type=int, default=4000)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--unet-only", action="store_true", help="no text-encoder LoRA")
    parser.add_argument("--held-out-share", type=float, default=0.5)
    args = parser.parse_args()

    start = time.time()
    pipe = sdlib.StableDiffusion.from_preset("mini-shapes", jit_compile=False, dtype="float32")
    modules = train_held_out_lora(pipe.components, num_images=args.num_images, steps=args.steps,
                                  batch_size=args.batch_size, rank=args.rank,
                                  learning_rate=args.learning_rate,
                                  text_encoder=not args.unet_only,
                                  held_out_share=args.held_out_share, seed=args.seed,
                                  log=functools.partial(print, flush=True))
    save_lora_file(modules, args.out, metadata={
        "sdlib_base_model": "mini-shapes",
        "sdlib_teaches": "red triangle, green circle, blue square, orange circle (held out)",
    })
    size = os.path.getsize(args.out)
    print(f"saved {args.out} ({size:,} bytes); total {time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
