"""Speed against quality on mini-shapes: prompt adherence (sdlib's judge) and warm time for each
sampler, step count and precision, so that "faster" is never "worse" unknowingly.

    python benchmarks/speed_quality.py            # DDIM/Euler/DPM++ x steps, fp32 + bf16, and LCM
    python benchmarks/speed_quality.py --prompts 60 --steps 10 25 50 --no-bf16 --lcm-steps 4

For each setting: the same canonical prompts (drawn uniformly, `shapes.canonical_prompts(seed=1)`),
the same starting noise, DDIM/Euler/DPM-Solver++(2M) at guidance 7.5, and LCM (Luo et al. 2023)
with the shipped LCM-LoRA `mini-shapes-lcm` loaded, at guidance 1 (its recipe: no guidance pass),
and without it, the base model under the LCM sampler (`lcm-base`). Adherence is per attribute and
"all3" (color, shape and position right together). Time is the warm median of one batch of
`--time-batch` images. Prints a table with each row's all3 against DDIM 50 steps in float32, and the
fewest steps per sampler within 2 points of it; writes JSON to the results archive
(``sdlib/book/results/``).
"""

import argparse
import datetime
import sys

import keras

import sdlib
from sdlib import device
from sdlib.book import archive, bench
from sdlib.mini import judge, shapes


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--prompts", type=int, default=150)
    parser.add_argument("--samplers", nargs="+", default=["ddim", "euler", "dpmpp_2m"])
    parser.add_argument("--steps", type=int, nargs="+", default=[8, 10, 15, 20, 25, 50])
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--no-bf16", action="store_true", help="float32 only")
    parser.add_argument("--lcm-steps", type=int, nargs="*", default=[1, 2, 4, 8],
                        help="LCM step counts (none: no LCM rows)")
    parser.add_argument("--lcm-lora", default="mini-shapes-lcm")
    parser.add_argument("--lcm-guidance", type=float, default=1.0)
    parser.add_argument("--time-batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    prompts = shapes.canonical_prompts(args.prompts, seed=1, held_out=None)
    the_judge = judge.ShapesJudge.from_pretrained()
    precisions = ["float32"] if args.no_bf16 else ["float32", device.inference_policy()]
    rows = []
    for precision in precisions:
        pipe = sdlib.StableDiffusion.from_preset(
            "mini-shapes", dtype=precision)
        settings = [(sampler, steps, args.guidance, None) for sampler in args.samplers
                    for steps in args.steps]
        settings += [(name, steps, args.lcm_guidance, lora) for lora, name in
                     ((args.lcm_lora, "lcm"), (None, "lcm-base")) for steps in args.lcm_steps]
        for sampler, steps, guidance, lora in settings:
            kind = sampler.removesuffix("-base")  # lcm-base: the LCM sampler, no LoRA
            if lora:
                pipe.load_lora_weights(lora)
            try:
                scores, _ = judge.measure_adherence(
                    pipe, prompts, judge=the_judge, seed=100, num_steps=steps,
                    guidance_scale=guidance, sampler=kind)
                timing = bench.time_call(
                    lambda p=pipe, n=steps, s=kind, g=guidance:
                    p.text_to_image(prompts[: args.time_batch], num_steps=n, sampler=s,
                                    guidance_scale=g, seed=0, verbose=False),
                    repeats=args.repeats)
            finally:
                if lora:
                    pipe.unload_lora_weights()
            row = {"precision": precision, "sampler": sampler, "steps": steps,
                   "guidance": guidance, "lora": lora, "warm_median_s": timing["median_s"],
                   **scores}
            rows.append(row)
            print(f"{precision:15} {sampler:9} {steps:3d} steps, guidance {guidance:g}: "
                  f"all3 {100 * scores['all3']:5.1f}% "
                  f"(color {100 * scores['color']:.0f}, shape {100 * scores['shape']:.0f}, "
                  f"position {100 * scores['position']:.0f}), {timing['median_s']:.3f} s "
                  f"for {args.time_batch} images", flush=True)

    reference = next(r for r in rows if r["precision"] == "float32" and r["sampler"] == "ddim"
                     and r["steps"] == max(args.steps))
    print(f"\n| precision | sampler | steps | guidance | all3 % | "
          f"vs DDIM {reference['steps']} fp32 | color | shape | position | warm s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['precision']} | {r['sampler']} | {r['steps']} | {r['guidance']:g} | "
              f"{100 * r['all3']:.1f} | "
              f"{100 * (r['all3'] - reference['all3']):+.1f} | {100 * r['color']:.1f} | "
              f"{100 * r['shape']:.1f} | {100 * r['position']:.1f} | {r['warm_median_s']:.3f} |")
    fewest = {}
    for r in rows:
        if r["precision"] == "float32" and r["all3"] >= reference["all3"] - 0.02:
            fewest[r["sampler"]] = min(fewest.get(r["sampler"], 10**6), r["steps"])
    print("\nfewest steps within 2 points of DDIM", reference["steps"], "(float32):", fewest)

    date = datetime.datetime.now(datetime.timezone.utc)
    record = {"benchmark": "speed_quality", "preset": "mini-shapes", "date": date.isoformat(
        timespec="seconds"), "device": device.describe().description(),
        "backend": keras.backend.backend(), "keras": keras.__version__, "prompts": args.prompts,
        "guidance": args.guidance, "command": " ".join(sys.argv),
        "fewest_steps_within_2_points": fewest, "rows": rows}
    out = archive.write(record, f"speed-quality-mini-shapes-{date:%Y-%m-%d-%H%M}.json")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
