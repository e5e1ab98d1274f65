"""Learn the word ``<my-favourite>`` for mini-shapes by textual inversion (one vector, from eight
pictures of purple triangles, everything else frozen) and write the shipped embedding file
(diffusers' format: ``{"<my-favourite>": (1, D)}``).

    python tools/train_mini_textual_inversion.py              # the shipped schedule (~2 min)
    python tools/train_mini_textual_inversion.py --steps 100 --out try.safetensors

Seeded. Recipe: ``sdlib.mini.adapters.train_new_word``.
"""

import argparse
import functools
import os
import time

import sdlib
from sdlib import presets
from sdlib.mini import adapters
from sdlib.training.textual_inversion import save_embedding_file


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--out", default=str(presets.SHIPPED_EMBEDDINGS[adapters.TOKEN]))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-images", type=int, default=8)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=5e-3)
    args = parser.parse_args()

    start = time.time()
    pipe = sdlib.StableDiffusion.from_preset("mini-shapes", jit_compile=False, dtype="float32")
    vectors = adapters.train_new_word(pipe.components, num_images=args.num_images,
                                      steps=args.steps, batch_size=args.batch_size,
                                      learning_rate=args.learning_rate, seed=args.seed,
                                      log=functools.partial(print, flush=True))
    save_embedding_file(adapters.TOKEN, vectors, args.out)
    size = os.path.getsize(args.out)
    print(f"saved {args.out} ({size:,} bytes); total {time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
