"""Editing on mini-shapes, judged: image-to-image that recolors an object; inpainting that adds
a new object or replaces the old one, by the 9-channel model (mini-shapes-inpaint) and by blending.

    python benchmarks/editing_quality.py                       # 150 seen + 60 held-out tasks each
    python benchmarks/editing_quality.py --tasks 40 --held-out 20 --steps 15

Tasks are drawn at random (``sdlib.mini.edits``): recolor = the same object in another color,
strength ``--strength``; add = a new object painted into an empty region (the mask is its place; the
judge reads the masked region); replace = erase the object and paint a new one elsewhere on the same
background, the mask covering both places. Targets whose (color, shape) pair training never showed
are reported apart. Prints a table and writes JSON to the results archive (chapter 8 shows it).
"""

import argparse
import datetime
import sys
import time

import keras

import sdlib
from sdlib import device
from sdlib.book import archive
from sdlib.mini import edits
from sdlib.mini.judge import ShapesJudge


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--tasks", type=int, default=150, help="tasks with seen targets")
    parser.add_argument("--held-out", type=int, default=60, help="tasks with held-out targets")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--strength", type=float, default=0.6, help="recolor strength")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    judge = ShapesJudge.from_pretrained()
    models = {"mini-shapes": sdlib.StableDiffusion.from_preset("mini-shapes"),
              "mini-shapes-inpaint": sdlib.StableDiffusion.from_preset("mini-shapes-inpaint")}
    rows = []
    for split, count, held_out in (("seen", args.tasks, False), ("held-out", args.held_out, True)):
        recolor = edits.recolor_tasks(count, seed=args.seed + 1, held_out=held_out)
        add = edits.add_tasks(count, seed=args.seed + 3, held_out=held_out)
        replace = edits.replace_tasks(count, seed=args.seed + 2, held_out=held_out)
        runs = [("recolor", "image-to-image", "mini-shapes", recolor)]
        for task, tasks in (("add", add), ("replace", replace)):
            runs += [(task, "blend (4-channel UNet)", "mini-shapes", tasks),
                     (task, "inpainting model (9-channel UNet)", "mini-shapes-inpaint", tasks)]
        for task, method, model, tasks in runs:
            start = time.perf_counter()
            if task == "recolor":
                scores, _, _ = edits.measure_recolor(models[model], judge, tasks,
                                                     strength=args.strength, seed=args.seed,
                                                     num_steps=args.steps)
            else:
                scores, *_ = edits.measure_replace(models[model], judge, tasks, seed=args.seed,
                                                   kind=task, num_steps=args.steps)
            row = {"task": task, "method": method, "model": model, "split": split,
                   "count": len(tasks), "seconds": time.perf_counter() - start, **scores}
            rows.append(row)
            print(f"{task:8} {method:34} {split:8} n={len(tasks):3d}: "
                  + ", ".join(f"{key} {value:.3f}" for key, value in scores.items()), flush=True)
    date = datetime.datetime.now(datetime.timezone.utc)
    record = {"benchmark": "editing_quality", "date": date.isoformat(timespec="seconds"),
              "device": device.describe().description(), "backend": keras.backend.backend(),
              "keras": keras.__version__, "steps": args.steps, "strength": args.strength,
              "guidance": 7.5, "sampler": "ddim", "command": " ".join(sys.argv), "rows": rows}
    print()
    print(archive.format_editing_table(record))
    out = archive.write(record, f"editing-mini-shapes-{date:%Y-%m-%d-%H%M}.json")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
