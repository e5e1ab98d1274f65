"""Adapters on mini-shapes, judged: the held-out LoRA (does the model now draw the four (color,
shape) pairs its training never showed, and does it still draw the others?) and the learned word
``<my-favourite>`` (does a prompt with it show its concept?).

    python benchmarks/adapter_quality.py                 # 200 prompts per row
    python benchmarks/adapter_quality.py --prompts 40 --steps 15

Prompts are drawn at random (``sdlib.mini.shapes.canonical_prompts``; for the word,
``sdlib.mini.adapters.measure_new_word``); the same prompts and seeds with and without the adapter.
Prints a table and writes JSON to the results archive (chapter 9 shows it).
"""

import argparse
import datetime
import sys
import time

import keras

import sdlib
from sdlib import device, presets
from sdlib.book import archive
from sdlib.mini import adapters, shapes
from sdlib.mini.judge import ShapesJudge, measure_adherence


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--prompts", type=int, default=200, help="prompts per row")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    judge = ShapesJudge.from_pretrained()
    pipe = sdlib.StableDiffusion.from_preset("mini-shapes")
    rows = []

    def add_row(adapter, split, scores, start):
        rows.append({"adapter": adapter, "split": split, "count": args.prompts,
                     "seconds": time.perf_counter() - start, **scores})
        print(f"{adapter:22} {split:9}: "
              + ", ".join(f"{key} {value:.3f}" for key, value in scores.items()), flush=True)

    splits = {"held-out": shapes.canonical_prompts(args.prompts, seed=args.seed + 1, held_out=True),
              "seen": shapes.canonical_prompts(args.prompts, seed=args.seed + 2, held_out=False)}
    for adapter in ("none", "mini-shapes-held-out"):
        if adapter != "none":
            pipe.load_lora_weights(adapter)
        for split, prompts in splits.items():
            start = time.perf_counter()
            scores, _ = measure_adherence(pipe, prompts, judge, seed=args.seed,
                                          num_steps=args.steps)
            add_row(adapter, split, scores, start)
    pipe.unload_lora_weights()
    pipe.load_textual_inversion(presets.SHIPPED_EMBEDDINGS[adapters.TOKEN])
    start = time.perf_counter()
    scores, _, _ = adapters.measure_new_word(pipe, judge, args.prompts, seed=args.seed,
                                             num_steps=args.steps)
    add_row(adapters.TOKEN, "new word", scores, start)

    date = datetime.datetime.now(datetime.timezone.utc)
    record = {"benchmark": "adapter_quality", "date": date.isoformat(timespec="seconds"),
              "device": device.describe().description(), "backend": keras.backend.backend(),
              "keras": keras.__version__, "steps": args.steps, "guidance": 7.5, "sampler": "ddim",
              "command": " ".join(sys.argv), "rows": rows}
    print()
    print(archive.format_adapter_table(record))
    out = archive.write(record, f"adapters-mini-shapes-{date:%Y-%m-%d-%H%M}.json")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
