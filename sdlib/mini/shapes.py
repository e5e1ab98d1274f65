"""Procedural captioned shapes: the dataset that "Stable Diffusion in miniature" learns from.

Each 64x64 RGB image holds one object described by five attributes (shape, color, size, position,
background), so prompt adherence can be measured exactly, as in GenEval (Ghosh et al. 2023, Sec. 3),
with `sdlib.mini.judge` in place of an object detector. A few (color, shape) pairs are held out of
training to test compositional generalisation.

    canonical:  "a small red circle in the top left on a black background"
    varied:     "on a grey background, a tiny red circle in the upper left", "a big square, middle"
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

IMAGE_SIZE = 64
SUPERSAMPLE = 4  # shapes are drawn at 4x and box-filtered down: exact area antialiasing

ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "shape": ("circle", "square", "triangle"),
    "color": ("red", "green", "blue", "yellow", "purple", "orange"),
    "size": ("small", "large"),
    "position": ("top left", "top right", "bottom left", "bottom right", "center"),
    "background": ("black", "white", "gray"),
}

# (color, shape) pairs that training data never contains; every color and shape still appears.
HELD_OUT: tuple[tuple[str, str], ...] = (
    ("red", "triangle"),
    ("green", "circle"),
    ("blue", "square"),
    ("orange", "circle"),
)

# Drawing constants, in 64-px pixels. Sizes are the object's width (and height) across.
SIZE_PX = {"small": 14.0, "large": 30.0}
POSITION_CENTER = {
    "top left": (16.0, 16.0),
    "top right": (48.0, 16.0),
    "bottom left": (16.0, 48.0),
    "bottom right": (48.0, 48.0),
    "center": (32.0, 32.0),
}
COLOR_RGB = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (40, 80, 235),
    "yellow": (245, 215, 40),
    "purple": (150, 60, 200),
    "orange": (245, 135, 30),
}
BACKGROUND_RGB = {"black": (0, 0, 0), "white": (255, 255, 255), "gray": (128, 128, 128)}

# Jitter applied when render() gets an rng.
POSITION_JITTER_PX = 3.0
SIZE_JITTER = 0.15  # relative
COLOR_SCALE_JITTER = 0.10  # relative brightness
COLOR_SHIFT_JITTER = 10.0  # per channel, in 0..255 units
BACKGROUND_JITTER = 6.0
FRAME_MARGIN_PX = 1.5  # PIL may fill a sub-pixel past a vertex

# Wording used by varied_caption; parse_caption reads all of it back.
SYNONYMS: dict[str, dict[str, tuple[str, ...]]] = {
    "shape": {"circle": ("circle",), "square": ("square",), "triangle": ("triangle",)},
    "color": {color: (color,) for color in ATTRIBUTES["color"]},
    "size": {"small": ("small", "tiny", "little"), "large": ("large", "big")},
    "position": {
        "top left": ("top left", "upper left"),
        "top right": ("top right", "upper right"),
        "bottom left": ("bottom left", "lower left"),
        "bottom right": ("bottom right", "lower right"),
        "center": ("center", "centre", "middle"),
    },
    "background": {"black": ("black",), "white": ("white",), "gray": ("gray", "grey")},
}
CAPTION_DROP_PROB = 0.2  # per attribute; never all five
CANONICAL_PROB = 0.3  # share of varied captions that are left canonical
_FILLER_WORDS = frozenset(
    "a an the in on at of with and against background backdrop object shape thing corner".split()
)


@dataclass(frozen=True)
class ShapeSpec:
    """One image's attributes, each a name from ATTRIBUTES."""

    shape: str
    color: str
    size: str
    position: str
    background: str

    def __post_init__(self):
        for attr, values in ATTRIBUTES.items():
            if getattr(self, attr) not in values:
                raise ValueError(
                    f"unknown {attr} {getattr(self, attr)!r}; expected one of {', '.join(values)}"
                )

    def labels(self) -> dict[str, int]:
        """Each attribute as its index into ATTRIBUTES[attr]."""
        return {attr: ATTRIBUTES[attr].index(getattr(self, attr)) for attr in ATTRIBUTES}


def is_held_out(spec: ShapeSpec) -> bool:
    return (spec.color, spec.shape) in HELD_OUT


# === Captions ===


def canonical_caption(spec: ShapeSpec) -> str:
    return (
        f"a {spec.size} {spec.color} {spec.shape} in the {spec.position}"
        f" on a {spec.background} background"
    )


def _with_article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def varied_caption(spec: ShapeSpec, rng: np.random.Generator) -> str:
    """A training caption: synonyms, shuffled clauses, some attributes left out (never all)."""
    if rng.random() < CANONICAL_PROB:
        return canonical_caption(spec)
    names = list(ATTRIBUTES)
    keep = {attr: rng.random() >= CAPTION_DROP_PROB for attr in names}
    if not any(keep.values()):
        keep[names[rng.integers(len(names))]] = True

    def word(attr: str) -> str:
        options = SYNONYMS[attr][getattr(spec, attr)]
        return options[rng.integers(len(options))]

    noun = word("shape") if keep["shape"] else ("object", "shape")[rng.integers(2)]
    adjectives = [word(attr) for attr in ("size", "color") if keep[attr]]
    subject = _with_article(" ".join([*adjectives, noun]))
    clauses = []
    if keep["position"]:
        position = word("position")
        clauses.append(f"{('in', 'at')[rng.integers(2)]} the {position}")
    if keep["background"]:
        background = word("background")
        clauses.append(
            (
                f"on a {background} background",
                f"against a {background} background",
                f"on {background}",
            )[rng.integers(3)]
        )
    rng.shuffle(clauses)
    if clauses and rng.random() < 0.2:  # lead with a clause: "on white, a red circle ..."
        return ", ".join([clauses[0], " ".join([subject, *clauses[1:]])])
    return " ".join([subject, *clauses])


def _phrase_table() -> dict[tuple[str, ...], tuple[str, str]]:
    table = {}
    for attr, values in SYNONYMS.items():
        for value, phrases in values.items():
            for phrase in phrases:
                table[tuple(phrase.split())] = (attr, value)
    return table


_PHRASES = _phrase_table()
_LONGEST_PHRASE = max(len(words) for words in _PHRASES)


def parse_attributes(caption: str) -> dict[str, str]:
    """The attributes a caption names, {attr: value}; any may be missing (varied captions).

    Raises ValueError when an attribute is named twice with different values.
    """
    found, _ = _scan(caption)
    conflicts = [
        f"more than one {attr} ({', '.join(sorted(values))})"
        for attr, values in found.items()
        if len(values) > 1
    ]
    if conflicts:
        raise ValueError(f"cannot parse caption {caption!r}: {'; '.join(conflicts)}")
    return {attr: next(iter(values)) for attr, values in found.items() if values}


def parse_caption(caption: str) -> ShapeSpec:
    """Read a canonical (or synonym-worded) caption back to its ShapeSpec.

    Raises ValueError naming the attribute when one is missing, unknown or given twice.
    """
    found, unknown = _scan(caption)
    problems = []
    for attr, values in found.items():
        if not values:
            problems.append(f"no {attr} (expected one of {', '.join(ATTRIBUTES[attr])})")
        elif len(values) > 1:
            problems.append(f"more than one {attr} ({', '.join(sorted(values))})")
    if problems:
        hint = f"; unrecognised words: {', '.join(unknown)}" if unknown else ""
        raise ValueError(f"cannot parse caption {caption!r}: {'; '.join(problems)}{hint}")
    return ShapeSpec(**{attr: values.pop() for attr, values in found.items()})


def _scan(caption: str) -> tuple[dict[str, set[str]], list[str]]:
    """Values found per attribute, and the words that are neither attributes nor filler."""
    words = re.findall(r"[a-z]+", caption.lower())
    found: dict[str, set[str]] = {attr: set() for attr in ATTRIBUTES}
    unknown = []
    i = 0
    while i < len(words):
        for length in range(_LONGEST_PHRASE, 0, -1):  # longest match first: "top left" before "top"
            match = _PHRASES.get(tuple(words[i : i + length]))
            if match:
                found[match[0]].add(match[1])
                i += length
                break
        else:
            if words[i] not in _FILLER_WORDS:
                unknown.append(words[i])
            i += 1
    return found, unknown


# Every word a training caption holds (canonical_caption and varied_caption): the mini models saw
# no other, so any other word reaches the UNet as a text encoding it never learned to follow.
CAPTION_WORDS = frozenset(
    "a an the in at on against background object shape".split()
    + [word for values in SYNONYMS.values() for phrases in values.values()
       for phrase in phrases for word in phrase.split()]
)


def unknown_words(prompt: str) -> list[str]:
    """The words of ``prompt`` that no training caption holds, each once, in order."""
    words = re.findall(r"[^\W_]+", prompt.lower())
    return list(dict.fromkeys(word for word in words if word not in CAPTION_WORDS))


def vocabulary_summary() -> str:
    """What the mini models know, in one line: their shapes and colors, and an example."""
    example = canonical_caption(ShapeSpec("circle", "red", "small", "top left", "black"))
    return (f"shapes {'/'.join(ATTRIBUTES['shape'])}, colors {'/'.join(ATTRIBUTES['color'])}, "
            f"sizes, positions and backgrounds, as in {example!r}")


# === Rendering ===


def _shape_coverage(
    shape: str, center: tuple[float, float], size_px: float, blob: float
) -> tuple[np.ndarray, tuple[slice, slice]]:
    """Coverage in [0, 1] of one shape, drawn at SUPERSAMPLE x and box-filtered.

    Only a window around the object is drawn (fast, and a blob's blur never meets the frame edge);
    returns that window, (h, w) float32, and where it sits in the 64x64 frame.
    """
    scale = SUPERSAMPLE
    half = size_px / 2
    reach = half * (1 + 3 * blob) + 1  # blur spreads about 3 sigma
    x0, y0 = int(np.floor(center[0] - reach)), int(np.floor(center[1] - reach))
    width = int(np.ceil(2 * reach)) + 1  # window, in 64-px pixels
    canvas = Image.new("L", (width * scale, width * scale), 0)
    draw = ImageDraw.Draw(canvas)
    cx, cy, r = (center[0] - x0) * scale, (center[1] - y0) * scale, half * scale
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    elif shape == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=255)
    else:  # isosceles triangle pointing up, as wide as it is tall
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=255)
    if blob > 0:
        # Melt the shape: blur, then cut at the level that keeps its area. blob=1 is close to a
        # disk.
        area = int(np.count_nonzero(np.asarray(canvas)))
        blurred = np.asarray(canvas.filter(ImageFilter.GaussianBlur(blob * r)), dtype=np.float32)
        flat = blurred.ravel()
        level = np.partition(flat, flat.size - area)[flat.size - area]
        canvas = Image.fromarray((blurred >= max(level, 1.0)).astype(np.uint8) * 255)
    window = np.asarray(canvas.resize((width, width), Image.Resampling.BOX), np.float32) / 255.0
    top, left = max(y0, 0), max(x0, 0)
    bottom, right = min(y0 + width, IMAGE_SIZE), min(x0 + width, IMAGE_SIZE)
    window = window[top - y0 : bottom - y0, left - x0 : right - x0]  # the part inside the frame
    return window, (slice(top, bottom), slice(left, right))


def render(
    spec: ShapeSpec, rng: np.random.Generator | None = None, *, blob: float = 0.0
) -> np.ndarray:
    """Draw one image, (64, 64, 3) uint8.

    rng=None draws the nominal shape, deterministic; with an rng, position, size and colors jitter.
    blob in [0, 1] melts the shape toward a round blob of the same area (0: crisp; 1: nearly a
    disk), to imitate what a weak generator makes of corners.
    """
    cx, cy = POSITION_CENTER[spec.position]
    size_px = SIZE_PX[spec.size]
    color = np.array(COLOR_RGB[spec.color], dtype=np.float32)
    background = np.array(BACKGROUND_RGB[spec.background], dtype=np.float32)
    if rng is not None:
        cx, cy = np.array([cx, cy]) + rng.uniform(-POSITION_JITTER_PX, POSITION_JITTER_PX, size=2)
        size_px *= 1 + rng.uniform(-SIZE_JITTER, SIZE_JITTER)
        color = color * (1 + rng.uniform(-COLOR_SCALE_JITTER, COLOR_SCALE_JITTER))
        color = color + rng.uniform(-COLOR_SHIFT_JITTER, COLOR_SHIFT_JITTER, size=3)
        background = background + rng.uniform(-BACKGROUND_JITTER, BACKGROUND_JITTER)
    # Keep the whole object inside the frame.
    low, high = size_px / 2 + FRAME_MARGIN_PX, IMAGE_SIZE - size_px / 2 - FRAME_MARGIN_PX
    center = (min(max(float(cx), low), high), min(max(float(cy), low), high))
    coverage, where = _shape_coverage(spec.shape, center, size_px, blob)  # (h, w)
    background = np.clip(background, 0, 255)
    image = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)  # (64, 64, 3)
    image[:] = np.rint(background).astype(np.uint8)
    blend = background + coverage[..., None] * (np.clip(color, 0, 255) - background)  # (h, w, 3)
    image[where] = np.rint(blend).astype(np.uint8)
    return image


# === Sampling ===


def sample_specs(
    n: int, rng: np.random.Generator, include_held_out: bool = False
) -> list[ShapeSpec]:
    """n specs, uniform over attributes (and so over the allowed combinations)."""
    indices = {attr: rng.integers(len(values), size=n) for attr, values in ATTRIBUTES.items()}
    if not include_held_out:
        held = np.array(
            [
                (ATTRIBUTES["color"].index(color), ATTRIBUTES["shape"].index(shape))
                for color, shape in HELD_OUT
            ]
        )  # (num_held_out, 2)
        while True:  # rejection sampling keeps the remaining combinations uniform
            bad = (
                (indices["color"][:, None] == held[None, :, 0])
                & (indices["shape"][:, None] == held[None, :, 1])
            ).any(axis=1)  # (n,)
            if not bad.any():
                break
            indices["color"][bad] = rng.integers(len(ATTRIBUTES["color"]), size=bad.sum())
            indices["shape"][bad] = rng.integers(len(ATTRIBUTES["shape"]), size=bad.sum())
    return [
        ShapeSpec(**{attr: ATTRIBUTES[attr][indices[attr][i]] for attr in ATTRIBUTES})
        for i in range(n)
    ]


def labels_of(specs: list[ShapeSpec]) -> dict[str, np.ndarray]:
    """attr -> (n,) int32 index array."""
    return {
        attr: np.array([values.index(getattr(s, attr)) for s in specs], dtype=np.int32)
        for attr, values in ATTRIBUTES.items()
    }


def make_dataset(
    n: int, seed: int = 0, include_held_out: bool = False, varied: bool = True
) -> tuple[np.ndarray, list[str], dict[str, np.ndarray]]:
    """n jittered images (n, 64, 64, 3) uint8, their captions, and labels attr -> (n,) int32.

    varied=True words the captions with varied_caption; False gives canonical captions.
    """
    rng = np.random.default_rng(seed)
    specs = sample_specs(n, rng, include_held_out)
    images = (
        np.stack([render(spec, rng) for spec in specs])
        if n
        else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    )  # (n, 64, 64, 3)
    captions = [varied_caption(s, rng) if varied else canonical_caption(s) for s in specs]
    return images, captions, labels_of(specs)


def canonical_prompts(n: int, seed: int, held_out: bool | None = None) -> list[str]:
    """n canonical prompts for evaluation.

    held_out=True: only held-out (color, shape) pairs; False: only pairs seen in training;
    None: uniform over all combinations.
    """
    rng = np.random.default_rng(seed)
    if held_out is None or held_out is False:
        specs = sample_specs(n, rng, include_held_out=held_out is None)
    else:
        pairs = rng.integers(len(HELD_OUT), size=n)
        others = sample_specs(n, rng, include_held_out=True)
        specs = [
            ShapeSpec(HELD_OUT[p][1], HELD_OUT[p][0], s.size, s.position, s.background)
            for p, s in zip(pairs, others, strict=True)
        ]
    return [canonical_caption(s) for s in specs]
