"""Prompt adherence of a mini-shapes model, judged by sdlib's shapes judge.

    python tools/evaluate_mini_model.py                          # the shipped weights
    python tools/evaluate_mini_model.py --weights /tmp/mini.safetensors --prompts 200

Prints a table: per attribute and all-three (color, shape, position) for canonical prompts drawn
uniformly, for seen and held-out combinations, at guidance 7.5 and 1.0; DDIM 50 steps.
"""

import argparse
import json
import time

import sdlib
from sdlib import loading, presets
from sdlib.mini import judge, shapes

COLUMNS = ("color", "shape", "position", "size", "background", "all3", "all")


def load(weights):
    return sdlib.StableDiffusion(loading.open_checkpoint(weights).load(), 64, 64, name=weights)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--weights", default=str(presets.MINI_SHAPES_WEIGHTS))
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--guidance", type=float, nargs="+", default=[7.5, 1.0])
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()

    pipe = load(args.weights)
    the_judge = judge.ShapesJudge.from_pretrained()
    prompt_sets = {
        "uniform": shapes.canonical_prompts(args.prompts, seed=1, held_out=None),
        "seen": shapes.canonical_prompts(args.prompts, seed=2, held_out=False),
        "held-out": shapes.canonical_prompts(args.prompts // 2, seed=3, held_out=True),
    }
    results = []
    print(f"{'prompts':10} {'guidance':>8} " + " ".join(f"{c:>10}" for c in COLUMNS) + "  seconds")
    for guidance in args.guidance:
        for name, prompts in prompt_sets.items():
            start = time.time()
            scores, _ = judge.measure_adherence(pipe, prompts, judge=the_judge, seed=100,
                                                num_steps=args.steps, guidance_scale=guidance)
            seconds = time.time() - start
            results.append({"prompts": name, "count": len(prompts), "guidance": guidance,
                            "steps": args.steps, **scores, "seconds": seconds})
            print(f"{name:10} {guidance:8.1f} "
                  + " ".join(f"{100 * scores[c]:9.1f}%" for c in COLUMNS)
                  + f"  {seconds:7.1f}", flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"weights": args.weights, "results": results}, handle, indent=1)


if __name__ == "__main__":
    main()
