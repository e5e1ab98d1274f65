"""A small CNN that reads the five attributes back off a shapes image: the book's adherence meter.

It plays the part the object detector plays in GenEval (Ghosh et al. 2023, Sec. 3): generate from a
prompt, read the image, score each attribute the prompt asked for. Trained on degraded renders
(blur, resampling, JPEG, noise, color shift) so that soft samples from a small model are read
fairly, and on "melted" squares and triangles labelled circle so that a blob does not pass for a
corner-bearing shape.

    judge = ShapesJudge.from_pretrained()
    adherence(judge, images, prompts)  # {"shape": 0.93, ..., "all3": 0.88, "all": 0.85}
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import keras
import numpy as np
from keras import layers
from PIL import Image, ImageFilter
from safetensors.numpy import load_file, save_file

from sdlib.mini import shapes
from sdlib.presets import ASSETS

DEFAULT_WEIGHTS = ASSETS / "shapes_judge.safetensors"
WEIGHTS_FORMAT = "sdlib.ShapesJudge/1"

# Degradations, in 0..255 pixel units where they have units.
BLUR_MAX_PX = 1.5
NOISE_MAX = 8.0
COLOR_SHIFT_MAX = 12.0
BRIGHTNESS_MAX = 0.08
JPEG_QUALITY = (30, 90)
RESAMPLE_SIZE = (28, 52)  # down to this many pixels across, then back up to 64

# Blobs: which shape target a melted or heavily blurred shape gets. The weight on "circle" ramps
# from 0 to 1 between the two ends, so halfway-melted squares are trained to be unsure.
MELT_RAMP = (0.3, 0.6)  # shapes.render(blob=...)
BLUR_RAMP = (0.15, 0.3)  # Gaussian sigma as a fraction of the object's size


# === Degradations ===


def degrade(
    images: np.ndarray, rng: np.random.Generator, clean_fraction: float = 0.25, hard: bool = False
) -> np.ndarray:
    """Make renders look like a small generator's samples. (N, 64, 64, 3) uint8 -> same.

    Each image is left alone with probability clean_fraction, otherwise gets a random subset of:
    Gaussian blur (radius 0-1.5 px), down-and-up resampling, JPEG, a color shift, additive noise.
    hard=True applies every degradation at its strongest to every image (a stress test).
    """
    out = np.empty_like(images)
    for i, image in enumerate(images):
        if not hard and rng.random() < clean_fraction:
            out[i] = image
            continue
        use = np.ones(5, bool) if hard else rng.random(5) < (0.6, 0.3, 0.3, 0.6, 0.6)
        pil = Image.fromarray(image)
        if use[0]:
            radius = BLUR_MAX_PX if hard else rng.uniform(0, BLUR_MAX_PX)
            pil = pil.filter(ImageFilter.GaussianBlur(radius))
        if use[1]:
            side = RESAMPLE_SIZE[0] if hard else int(rng.integers(*RESAMPLE_SIZE))
            pil = pil.resize((side, side), Image.Resampling.BILINEAR).resize(
                image.shape[:2][::-1], Image.Resampling.BILINEAR
            )
        if use[2]:
            buffer = io.BytesIO()
            quality = JPEG_QUALITY[0] if hard else int(rng.integers(*JPEG_QUALITY))
            pil.save(buffer, format="JPEG", quality=quality)
            pil = Image.open(buffer)
        pixels = np.asarray(pil, np.float32)  # (64, 64, 3)
        if use[3]:
            sign = 1 if hard else rng.uniform(-1, 1)
            pixels = pixels * (1 + sign * BRIGHTNESS_MAX)
            pixels = pixels + rng.uniform(-COLOR_SHIFT_MAX, COLOR_SHIFT_MAX, size=3)
        if use[4]:
            sigma = NOISE_MAX if hard else rng.uniform(0, NOISE_MAX)
            pixels = pixels + rng.normal(0, sigma, size=pixels.shape)
        out[i] = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    return out


def blur_to_blob(image: np.ndarray, spec: shapes.ShapeSpec, relative_sigma: float) -> np.ndarray:
    """Gaussian-blur a render by relative_sigma times its object's size (0.3 and up: a blob)."""
    sigma = relative_sigma * shapes.SIZE_PX[spec.size]
    return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(sigma)))


def _ramp(value: float, ends: tuple[float, float]) -> float:
    return float(np.clip((value - ends[0]) / (ends[1] - ends[0]), 0.0, 1.0))


# === Model ===


def build_judge_model(
    widths: tuple[int, ...] = (16, 32, 64), position_channels: int = 8, hidden_dim: int = 128
) -> keras.Model:
    """Conv trunk to 8x8, then pooled features (what) plus a flattened 8x8 map (where).

    Input (N, 64, 64, 3) float in 0..255; outputs attr -> (N, num_values) softmax.
    """
    # === Layers and Functional Model ===
    inputs = keras.Input((shapes.IMAGE_SIZE, shapes.IMAGE_SIZE, 3), name="image")
    x = layers.Rescaling(1 / 127.5, offset=-1.0, name="rescale")(inputs)  # (N, 64, 64, 3)
    for level, width in enumerate(widths):
        for step, stride in enumerate((1, 2)):
            name = f"block{level}_{step}"
            x = layers.Conv2D(
                width, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv"
            )(x)
            x = layers.BatchNormalization(name=f"{name}_norm")(x)
            x = layers.ReLU(name=f"{name}_relu")(x)
        # (N, 64 / 2**(level+1), 64 / 2**(level+1), width)
    pooled = layers.Concatenate(name="pooled")(
        [
            layers.GlobalAveragePooling2D(name="avg_pool")(x),
            layers.GlobalMaxPooling2D(name="max_pool")(x),
        ]
    )  # (N, 2 * widths[-1])
    # Position needs to know where: keep the 8x8 layout, a few channels deep.
    where = layers.Conv2D(position_channels, 1, activation="relu", name="where_conv")(x)
    # (N, 8, 8, position_channels)
    where = layers.Flatten(name="where_flat")(where)  # (N, 64 * position_channels)
    features = layers.Concatenate(name="features")([pooled, where])
    hidden = layers.Dense(hidden_dim, activation="relu", name="hidden")(features)  # (N, hidden_dim)
    outputs = {
        attr: layers.Dense(len(values), activation="softmax", name=attr)(hidden)
        for attr, values in shapes.ATTRIBUTES.items()
    }  # attr -> (N, num_values)
    return keras.Model(inputs, outputs, name="shapes_judge")


class ShapesJudge:
    """Reads shape, color, size, position and background off 64x64 images."""

    def __init__(
        self,
        widths: tuple[int, ...] = (16, 32, 64),
        position_channels: int = 8,
        hidden_dim: int = 128,
    ):
        self.widths = tuple(widths)
        self.position_channels = position_channels
        self.hidden_dim = hidden_dim
        self.model = build_judge_model(self.widths, position_channels, hidden_dim)

    def get_config(self) -> dict:
        return {
            "widths": list(self.widths),
            "position_channels": self.position_channels,
            "hidden_dim": self.hidden_dim,
        }

    # === Inference ===

    def predict_proba(self, images: np.ndarray, batch_size: int = 512) -> dict[str, np.ndarray]:
        """uint8 (N, H, W, 3), resized to 64x64 if needed -> attr -> (N, values) probabilities."""
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[None]
        pixels = images.astype(np.float32)  # (N, H, W, 3)
        if pixels.shape[1:3] != (shapes.IMAGE_SIZE, shapes.IMAGE_SIZE):
            pixels = keras.ops.convert_to_numpy(
                keras.ops.image.resize(
                    pixels, (shapes.IMAGE_SIZE, shapes.IMAGE_SIZE), antialias=True
                )
            )  # (N, 64, 64, 3)
        probabilities = {attr: [] for attr in shapes.ATTRIBUTES}
        for start in range(0, len(pixels), batch_size):
            outputs = self.model(pixels[start : start + batch_size], training=False)
            for attr in shapes.ATTRIBUTES:
                probabilities[attr].append(keras.ops.convert_to_numpy(outputs[attr]))
        return {
            attr: np.concatenate(parts) if parts else np.zeros((0, len(shapes.ATTRIBUTES[attr])))
            for attr, parts in probabilities.items()
        }

    def predict(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """uint8 (N, H, W, 3) -> attr -> (N,) predicted index into shapes.ATTRIBUTES[attr]."""
        return {attr: p.argmax(axis=-1) for attr, p in self.predict_proba(images).items()}

    def predict_names(self, images: np.ndarray) -> list[shapes.ShapeSpec]:
        predicted = self.predict(images)
        count = len(predicted["shape"])
        return [
            shapes.ShapeSpec(
                **{attr: values[predicted[attr][i]] for attr, values in shapes.ATTRIBUTES.items()}
            )
            for i in range(count)
        ]

    # === Weights (safetensors only: loading never unpickles) ===

    def save(self, path: str | Path) -> None:
        tensors = {w.path: keras.ops.convert_to_numpy(w) for w in self.model.weights}
        metadata = {
            "format": WEIGHTS_FORMAT,
            "config": json.dumps(self.get_config()),
            "attributes": json.dumps(shapes.ATTRIBUTES),
        }
        save_file(tensors, str(path), metadata=metadata)

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None) -> ShapesJudge:
        """Load a judge; path=None loads the weights shipped with sdlib."""
        path = Path(path) if path is not None else DEFAULT_WEIGHTS
        with open(path, "rb") as f:
            header = f.read(8)
            metadata = json.loads(f.read(int.from_bytes(header, "little"))).get("__metadata__", {})
        if metadata.get("format") != WEIGHTS_FORMAT:
            raise ValueError(f"{path} is not a ShapesJudge checkpoint ({WEIGHTS_FORMAT})")
        if json.loads(metadata["attributes"]) != {k: list(v) for k, v in shapes.ATTRIBUTES.items()}:
            raise ValueError(f"{path} was trained on different shapes.ATTRIBUTES")
        judge = cls(**json.loads(metadata["config"]))
        tensors = load_file(str(path))
        expected = {w.path for w in judge.model.weights}
        if set(tensors) != expected:
            raise ValueError(
                f"{path}: missing {sorted(expected - set(tensors))}, "
                f"unexpected {sorted(set(tensors) - expected)}"
            )
        for w in judge.model.weights:
            w.assign(tensors[w.path])
        return judge


# === Scoring ===


def attribute_hits(judge: ShapesJudge, images: np.ndarray,
                   prompts: list[str]) -> dict[str, np.ndarray]:
    """Per attribute, (N,) bools: does the judge read in image i what prompt i names?"""
    if len(images) != len(prompts):
        raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
    wanted = shapes.labels_of([shapes.parse_caption(p) for p in prompts])
    predicted = judge.predict(images)
    return {attr: predicted[attr] == wanted[attr] for attr in shapes.ATTRIBUTES}


def adherence(judge: ShapesJudge, images: np.ndarray, prompts: list[str]) -> dict[str, float]:
    """Fraction of images whose attributes match their prompts, per attribute.

    "all3" needs color, shape and position right together; "all" needs all five.
    """
    correct = attribute_hits(judge, images, prompts)  # (N,) bools per attribute
    scores = {attr: float(hits.mean()) for attr, hits in correct.items()}
    scores["all3"] = float((correct["color"] & correct["shape"] & correct["position"]).mean())
    scores["all"] = float(np.logical_and.reduce(list(correct.values())).mean())
    return scores


def measure_adherence(pipe, prompts, judge=None, batch_size=20, seed=0, **generate_kwargs):
    """Generate one image per prompt with ``pipe`` and score them; returns ``(scores, images)``.

    Batches get seeds ``seed, seed + 1, ...``, so two settings compared on the same prompts and seed
    start from the same noise. ``generate_kwargs`` go to ``text_to_image`` (num_steps, guidance...).
    """
    judge = judge or ShapesJudge.from_pretrained()
    generate_kwargs.setdefault("verbose", False)
    images = [
        pipe.text_to_image(list(prompts[start : start + batch_size]), seed=seed + index,
                           **generate_kwargs)
        for index, start in enumerate(range(0, len(prompts), batch_size))
    ]
    images = np.concatenate(images)
    return adherence(judge, images, list(prompts)), images


# === Training ===


def make_training_set(
    num_images: int, rng: np.random.Generator, blob_fraction: float = 0.15
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Jittered renders of every combination (held-out pairs included: the judge must know them).

    A blob_fraction of the images are melted (shapes.render(blob=...)) or heavily blurred; their
    shape target slides toward "circle". Returns images (N, 64, 64, 3) uint8, one-hot targets.
    """
    specs = shapes.sample_specs(num_images, rng, include_held_out=True)
    circle = shapes.ATTRIBUTES["shape"].index("circle")
    targets = {
        attr: np.eye(len(values), dtype=np.float32)[shapes.labels_of(specs)[attr]]
        for attr, values in shapes.ATTRIBUTES.items()
    }  # attr -> (N, num_values)
    images = np.empty((num_images, shapes.IMAGE_SIZE, shapes.IMAGE_SIZE, 3), np.uint8)
    kinds = rng.random(num_images)
    for i, spec in enumerate(specs):
        circle_weight = 0.0
        if kinds[i] < blob_fraction / 2:
            melt = rng.uniform(0, 1)
            images[i] = shapes.render(spec, rng, blob=melt)
            circle_weight = _ramp(melt, MELT_RAMP)
        elif kinds[i] < blob_fraction:
            relative_sigma = rng.uniform(0.05, 0.4)
            images[i] = blur_to_blob(shapes.render(spec, rng), spec, relative_sigma)
            circle_weight = _ramp(relative_sigma, BLUR_RAMP)
        else:
            images[i] = shapes.render(spec, rng)
        if circle_weight > 0:
            target = targets["shape"][i] * (1 - circle_weight)
            target[circle] += circle_weight
            targets["shape"][i] = target
    return images, targets


def train_judge(
    num_images: int = 24_000,
    epochs: int = 8,
    seed: int = 0,
    batch_size: int = 64,
    learning_rate: float = 2e-3,
    verbose: int = 1,
) -> ShapesJudge:
    """Train a ShapesJudge from scratch, seeded; fresh degradations every epoch."""
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    images, targets = make_training_set(num_images, rng)
    if verbose:
        print(f"rendered {num_images} training images in {time.perf_counter() - started:.1f} s")
    judge = ShapesJudge()
    steps = epochs * (num_images // batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, steps)
    judge.model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss={attr: "categorical_crossentropy" for attr in shapes.ATTRIBUTES},
    )
    for epoch in range(epochs):
        degraded = degrade(images, rng).astype(np.float32)  # (N, 64, 64, 3)
        history = judge.model.fit(
            degraded, targets, batch_size=batch_size, epochs=1, shuffle=True, verbose=0
        )
        if verbose:
            print(
                f"epoch {epoch + 1}/{epochs}: loss {history.history['loss'][-1]:.4f}"
                f" ({time.perf_counter() - started:.0f} s)"
            )
    return judge
