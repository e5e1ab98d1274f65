"""The workshop's challenge, "the fastest correct picture": eight fixed prompts, the settings a
learner picks (sampler, steps, guidance, precision, XLA), scored by the mini-shapes judge and by
the wall time of the eight images.

    entry = Entry(name="ada", sampler="dpmpp_2m", num_steps=8)
    result = play(entry)              # build, warm up, time, judge
    print(result.line())              # the line a teacher collects
    print(leaderboard([result, ...]))

``python -m sdlib challenge --name ada --sampler dpmpp_2m --steps 8 [--json]`` plays from the
command line; ``--leaderboard reports/*.json`` ranks collected ``--json`` reports.

The rules. Everyone gets the same prompts and the same seed per prompt, so two entries differ
only in their settings. A picture is correct when the judge reads every attribute its prompt
names (color, shape, size, position, background). Entries rank by correct pictures first, then by
``seconds``: the fastest of ``REPEATS`` warm calls that make all eight images in one batch. The
first call, which builds and compiles, is reported (``first_call_s``) but not ranked: a workshop
machine makes many pictures after one compile.
"""

import dataclasses
import datetime
import json
import time

import numpy as np

from sdlib import __version__, device, validation
from sdlib.mini import shapes
from sdlib.mini.judge import ShapesJudge, attribute_hits
from sdlib.pipeline import StableDiffusion
from sdlib.sampling.samplers import SAMPLERS

# Drawn once at random from the (color, shape) pairs mini-shapes saw in training (seed 2026);
# fixed from then on, so that every workshop plays the same eight.
PROMPTS = tuple(shapes.canonical_prompts(8, seed=2026, held_out=False))
SEEDS = tuple(range(500, 500 + len(PROMPTS)))
REPEATS = 3
PRESET = "mini-shapes"


@dataclasses.dataclass(frozen=True)
class Entry:
    """A learner's choice. ``dtype``: a Keras dtype policy (``sdlib.validation.DTYPES``:
    "float32", "bfloat16", "mixed_bfloat16", ...); ``jit_compile``: XLA or not."""

    name: str = "anonymous"
    sampler: str = "ddim"
    num_steps: int = 50
    guidance_scale: float = 7.5
    dtype: str = "float32"
    jit_compile: bool = True

    def __post_init__(self):
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler={self.sampler!r}: choose one of {', '.join(SAMPLERS)}.")
        validation.check_num_steps(self.num_steps)
        validation.check_guidance_scale(self.guidance_scale)
        validation.check_dtype(self.dtype)
        if self.dtype == "auto":
            raise ValueError('dtype="auto" hides the choice the challenge is about: pick one '
                             f"of {', '.join(validation.DTYPES)}.")
        if not isinstance(self.jit_compile, bool):
            raise TypeError(f"jit_compile is True (XLA) or False, got {self.jit_compile!r}.")

    def settings(self):
        """The settings in one short phrase: "dpmpp_2m 8 steps, guidance 7.5, float32, XLA"."""
        return (f"{self.sampler} {self.num_steps} steps, guidance {self.guidance_scale:g}, "
                f"{self.dtype}, {'XLA' if self.jit_compile else 'no XLA'}")


@dataclasses.dataclass
class Result:
    """How an entry did: ``correct`` of ``len(PROMPTS)`` pictures, the ranked ``seconds`` (warm,
    the eight images in one call), ``first_call_s`` (build, compile, first call), where, and
    the judged ``images`` (not in reports)."""

    entry: Entry
    correct: int
    total: int
    seconds: float
    first_call_s: float
    right: list  # per prompt, whether its picture was judged correct
    preset: str
    machine: str
    sdlib_version: str
    date: str
    images: object = dataclasses.field(default=None, repr=False, compare=False)  # (8, H, W, 3)

    def line(self):
        """One leaderboard line: name, correct pictures, seconds, the settings, the machine."""
        return (f"challenge | {self.entry.name} | {self.correct}/{self.total} correct | "
                f"{self.seconds:.2f} s | {self.entry.settings()} | {self.preset} on "
                f"{self.machine}")

    def as_dict(self):
        """Everything but the pictures (what --json prints)."""
        data = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)
                if field.name != "images"}
        return {**data, "entry": dataclasses.asdict(self.entry)}

    @classmethod
    def from_dict(cls, data):
        """A result back from ``as_dict`` (a collected ``--json`` report)."""
        fields = {field.name for field in dataclasses.fields(cls)} - {"images"}
        missing = fields - set(data)
        if missing:
            raise ValueError(f"not a challenge report: it lacks {', '.join(sorted(missing))} "
                             "(reports come from `python -m sdlib challenge ... --json`).")
        return cls(**{**{key: data[key] for key in fields}, "entry": Entry(**data["entry"])})


def play(entry, preset=PRESET, judge=None, repeats=REPEATS, pipe=None):
    """Build ``preset`` with the entry's precision and XLA choice (or use ``pipe``, built so),
    make the eight pictures ``1 + repeats`` times, and judge the last ones."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}.")
    judge = judge or ShapesJudge.from_pretrained()
    started = time.perf_counter()
    if pipe is None:
        pipe = StableDiffusion.from_preset(preset, jit_compile=entry.jit_compile,
                                           dtype=entry.dtype)

    def pictures():  # (8, H, W, 3) uint8
        return pipe.text_to_image(list(PROMPTS), seed=list(SEEDS), num_steps=entry.num_steps,
                                  guidance_scale=entry.guidance_scale, sampler=entry.sampler,
                                  verbose=False)

    pictures()
    first_call_s = time.perf_counter() - started
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        images = pictures()
        times.append(time.perf_counter() - start)
    right = judged_right(judge, images)
    return Result(entry=entry, correct=sum(right), total=len(PROMPTS), seconds=min(times),
                  first_call_s=first_call_s, right=right, preset=pipe.name or preset,
                  machine=device.describe().description(), sdlib_version=__version__,
                  date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  images=images)


def judged_right(judge, images):
    """Per prompt: does the judge read every attribute the prompt names in its picture?"""
    hits = attribute_hits(judge, images, list(PROMPTS))
    return [bool(right) for right in np.logical_and.reduce(list(hits.values()))]


def ranked(results):
    """Most correct pictures first, then the fastest."""
    return sorted(results, key=lambda result: (-result.correct, result.seconds))


def leaderboard(results):
    """Markdown: the results ranked, one row each."""
    lines = ["| rank | name | correct | seconds | settings | first call s | machine |",
             "|---:|---|---:|---:|---|---:|---|"]
    for rank, result in enumerate(ranked(results), start=1):
        lines.append(f"| {rank} | {result.entry.name} | {result.correct}/{result.total} | "
                     f"{result.seconds:.2f} | {result.entry.settings()} | "
                     f"{result.first_call_s:.1f} | {result.machine} |")
    return "\n".join(lines)


def read_reports(paths):
    """Results from ``--json`` report files (one JSON object each, or JSON lines)."""
    results = []
    for path in paths:
        with open(path, encoding="utf-8") as stream:
            text = stream.read()
        try:
            objects = [json.loads(text)]
        except json.JSONDecodeError:
            try:
                objects = [json.loads(line) for line in text.splitlines() if line.strip()]
            except json.JSONDecodeError as error:
                raise ValueError(f"{path} is not a challenge report (JSON): {error}.") from None
        results += [Result.from_dict(data) for data in objects]
    return results
