"""Fine-tune mini-shapes into mini-shapes-inpaint (a 9-channel UNet) and write its shipped weights.

    python tools/train_mini_inpainting.py          # the shipped schedule (~17 min on 2 cores)
    python tools/train_mini_inpainting.py --steps 300 --num-images 4000 --out try.safetensors

Seeded. The file holds the UNet only (fp16) and names mini-shapes' file for the text encoder and
the VAE, which the fine-tuning leaves as they are (``sdlib.mini.train.train_mini_inpainting``).
"""

import argparse
import functools
import time

from sdlib import loading, presets
from sdlib.loading.sdlib_file import save_sdlib_file
from sdlib.mini.train import train_mini_inpainting

INPAINT_WEIGHTS = presets.ASSETS / "mini_shapes_inpaint.safetensors"


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--out", default=str(INPAINT_WEIGHTS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-images", type=int, default=9000)
    parser.add_argument("--steps", type=int, default=1300)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=4e-4)
    parser.add_argument("--kept-weight", type=float, default=2.0,
                        help="loss weight of the latent positions the mask keeps")
    parser.add_argument("--caption-dropout", type=float, default=0.1,
                        help="share of examples trained with the empty caption")
    args = parser.parse_args()

    start = time.time()
    base = loading.open_checkpoint(str(presets.MINI_SHAPES_WEIGHTS))
    components = base.load("float32")
    unet = train_mini_inpainting(components, num_images=args.num_images, steps=args.steps,
                                 batch_size=args.batch_size, learning_rate=args.learning_rate,
                                 kept_weight=args.kept_weight,
                                 caption_dropout=args.caption_dropout, seed=args.seed,
                                 log=functools.partial(print, flush=True))
    configs = {**base.configs, "unet": unet.config}
    save_sdlib_file({**components.models, "unet": unet}, configs, args.out, components=("unet",),
                    base=presets.MINI_SHAPES_WEIGHTS)
    print(f"saved {args.out}; total {time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
