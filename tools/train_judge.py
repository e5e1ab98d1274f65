"""Train the shapes judge (sdlib.mini.judge), report its accuracy, and write the shipped weights.

    python tools/train_judge.py                 # writes sdlib/assets/shapes_judge.safetensors
    python tools/train_judge.py --epochs 1 --num-images 2000 --output /tmp/judge.safetensors

Reports per-attribute accuracy on fresh renders (clean, degraded as in training, every degradation
at full strength) and what it makes of squares and triangles melted or blurred into blobs.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from sdlib.mini import judge as judge_lib  # noqa: E402
from sdlib.mini import shapes  # noqa: E402

TEST_SEED = 20_240_601  # far from any training seed


def accuracy_table(judge, images, labels) -> dict[str, float]:
    predicted = judge.predict(images)
    table = {attr: float((predicted[attr] == labels[attr]).mean()) for attr in shapes.ATTRIBUTES}
    table["all"] = float(
        np.logical_and.reduce([predicted[a] == labels[a] for a in shapes.ATTRIBUTES]).mean()
    )
    return table


def blob_report(judge, num_images: int, rng: np.random.Generator) -> dict[str, dict[str, float]]:
    """Squares and triangles melted or blurred: how often called circle / their true shape."""
    specs = [s for s in shapes.sample_specs(num_images * 3, rng, True) if s.shape != "circle"]
    specs = specs[:num_images]
    true_shape = shapes.labels_of(specs)["shape"]
    circle = shapes.ATTRIBUTES["shape"].index("circle")
    cases = {
        "melt 0.2 (rounded corners)": [shapes.render(s, rng, blob=0.2) for s in specs],
        "melt 0.45 (halfway)": [shapes.render(s, rng, blob=0.45) for s in specs],
        "melt 0.7 (blob)": [shapes.render(s, rng, blob=0.7) for s in specs],
        "blur 0.2 x size": [judge_lib.blur_to_blob(shapes.render(s, rng), s, 0.2) for s in specs],
        "blur 0.35 x size (blob)": [
            judge_lib.blur_to_blob(shapes.render(s, rng), s, 0.35) for s in specs
        ],
    }
    report = {}
    for name, images in cases.items():
        probabilities = judge.predict_proba(np.stack(images))["shape"]  # (N, 3)
        predicted = probabilities.argmax(-1)
        report[name] = {
            "circle": float((predicted == circle).mean()),
            "true shape": float((predicted == true_shape).mean()),
            "confident true (p>0.9)": float(
                (probabilities[np.arange(len(specs)), true_shape] > 0.9).mean()
            ),
            "mean p(true)": float(probabilities[np.arange(len(specs)), true_shape].mean()),
        }
    return report


def print_table(title: str, rows: dict[str, dict[str, float]]) -> None:
    columns = list(next(iter(rows.values())))
    print(f"\n{title}")
    print(f"{'':28s}" + "".join(f"{c:>24s}" for c in columns))
    for name, row in rows.items():
        print(f"{name:28s}" + "".join(f"{100 * row[c]:23.2f}%" for c in columns))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=20_000)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-test", type=int, default=3000)
    parser.add_argument("--output", default=str(judge_lib.DEFAULT_WEIGHTS))
    args = parser.parse_args()

    started = time.perf_counter()
    judge = judge_lib.train_judge(num_images=args.num_images, epochs=args.epochs, seed=args.seed)
    print(f"trained in {time.perf_counter() - started:.0f} s")

    images, _, labels = shapes.make_dataset(args.num_test, seed=TEST_SEED, include_held_out=True)
    rng = np.random.default_rng(TEST_SEED + 1)
    print_table(
        f"accuracy on {args.num_test} fresh renders",
        {
            "clean": accuracy_table(judge, images, labels),
            "degraded (training mix)": accuracy_table(
                judge, judge_lib.degrade(images, rng, clean_fraction=0.0), labels
            ),
            "degraded (all, strongest)": accuracy_table(
                judge, judge_lib.degrade(images, rng, hard=True), labels
            ),
        },
    )
    print_table("squares and triangles made into blobs: shape head", blob_report(judge, 1000, rng))

    judge.save(args.output)
    reloaded = judge_lib.ShapesJudge.from_pretrained(args.output)
    same = all(
        np.array_equal(a, b)
        for a, b in zip(
            judge.predict(images).values(), reloaded.predict(images).values(), strict=True
        )
    )
    print(
        f"\nwrote {args.output} ({os.path.getsize(args.output) / 1024:.0f} KiB); "
        f"reload identical: {same}"
    )


if __name__ == "__main__":
    main()
