"""A batch's jobs, read from a prompts file: one prompt per line, or JSONL whose keys are
``text_to_image``'s argument names; each job with a stable id, its file name and its seed.

A job's id is its line number and a hash of its settings, ``00017-1a2b3c4d``, and its image is
``00017-1a2b3c4d.png``: the same line with the same settings always gets the same name, and
changing any setting gives a new one. A job without a seed gets its line number (1-based) as its
seed, so a rerun, or a single ``text_to_image(prompt, seed=line)`` call, draws the same image.
"""

import dataclasses
import hashlib
import json
import os

from sdlib import validation
from sdlib.sampling.samplers import SAMPLERS, make_sampler

# text_to_image's defaults, for what a job does not set.
DEFAULTS = {"negative_prompt": None, "seed": None, "num_steps": 50, "guidance_scale": 7.5,
            "sampler": "ddim"}
KEYS = ("prompt", *DEFAULTS)
JSONL_EXTENSIONS = (".jsonl", ".ndjson")
EXAMPLE = '{"prompt": "a red circle", "seed": 7, "num_steps": 25}'


@dataclasses.dataclass(frozen=True)
class Job:
    """One image to make: where it came from (``line``, 1-based) and ``text_to_image``'s
    arguments. ``seed_from`` says whether the file gave the seed ("file") or the line number did
    ("line number")."""

    line: int
    prompt: str
    negative_prompt: str | None
    seed: int
    num_steps: int
    guidance_scale: float
    sampler: str
    seed_from: str = "file"

    def settings(self):
        """What decides the image (with the model): the hashed part of the id."""
        return {"prompt": self.prompt, "negative_prompt": self.negative_prompt, "seed": self.seed,
                "num_steps": self.num_steps, "guidance_scale": self.guidance_scale,
                "sampler": self.sampler}

    @property
    def id(self):
        canonical = json.dumps(self.settings(), sort_keys=True, separators=(",", ":"))
        return f"{self.line:05d}-{hashlib.sha256(canonical.encode()).hexdigest()[:8]}"

    @property
    def file_name(self):
        return f"{self.id}.png"

    def group(self):
        """Jobs of one group can share a ``text_to_image`` call (prompts, negatives and seeds
        are per image)."""
        return (self.sampler, self.num_steps, self.guidance_scale)

    def to_dict(self):
        return dataclasses.asdict(self)


def read_jobs(path):
    """The jobs of a prompts file, in file order; every problem is reported with its line.

    JSONL when the file ends in .jsonl or .ndjson, or when its first non-blank line starts with
    ``{``; otherwise one prompt per line. Blank lines are skipped (they still count as lines).
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a folder; give a prompts file (one prompt per line, or "
                                f"JSONL such as {EXAMPLE}).")
    try:
        with open(path, encoding="utf-8-sig") as stream:
            text = stream.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"No prompts file at {path}.") from None
    except UnicodeDecodeError as error:
        line = text_line_of_byte(path, error.start)
        raise ValueError(f"{path} line {line}: not UTF-8 text ({error.reason}).") from None
    lines = [(number, line.strip()) for number, line in enumerate(text.splitlines(), start=1)
             if line.strip()]
    if not lines:
        raise ValueError(f"{path} holds no prompts; write one per line, or JSONL such as "
                         f"{EXAMPLE}.")
    jsonl = path.lower().endswith(JSONL_EXTENSIONS) or lines[0][1].startswith("{")
    parse = parse_json_line if jsonl else parse_text_line
    return [parse(line, number, path) for number, line in lines]


def text_line_of_byte(path, offset):
    with open(path, "rb") as stream:
        return stream.read(offset).count(b"\n") + 1


def parse_text_line(line, number, path):
    return make_job({"prompt": line}, number, path)


def parse_json_line(line, number, path):
    try:
        fields = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} line {number}: not valid JSON ({error.msg}, column "
                         f"{error.colno}); each line is one object, such as {EXAMPLE}.") from None
    if not isinstance(fields, dict):
        raise ValueError(f"{path} line {number}: a JSON object expected, got "
                         f"{type(fields).__name__} {line[:40]!r}; each line is one object, such "
                         f"as {EXAMPLE}.")
    unknown = [key for key in fields if key not in KEYS]
    if unknown:
        names = ", ".join(repr(key) for key in unknown)
        raise ValueError(f"{path} line {number}: unknown key{'s' if len(unknown) > 1 else ''} "
                         f"{names}; the keys are text_to_image's argument names: "
                         f"{', '.join(KEYS)}.")
    return make_job(fields, number, path)


def make_job(fields, number, path):
    """A checked Job from a line's fields; a missing or null field takes text_to_image's
    default, a missing seed the line number."""
    where = f"{path} line {number}"
    values = {**DEFAULTS, **{key: value for key, value in fields.items() if value is not None}}
    prompt = fields.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        found = "no prompt" if prompt is None else f"prompt {prompt!r}"
        raise ValueError(f"{where}: {found}; every job needs a non-empty \"prompt\" string.")
    negative = values["negative_prompt"]
    if negative is not None and not isinstance(negative, str):
        raise ValueError(f"{where}: negative_prompt must be a string, got {negative!r}.")
    if values["sampler"] not in SAMPLERS:
        raise ValueError(f"{where}: unknown sampler {values['sampler']!r}; choose one of "
                         f"{', '.join(SAMPLERS)}.")
    try:
        seed = number if values["seed"] is None else validation.check_seed(values["seed"])
        if isinstance(seed, list):
            raise TypeError(f"seed must be one int per job, got {values['seed']!r}.")
        num_steps = validation.check_num_steps(values["num_steps"])
        guidance_scale = validation.check_guidance_scale(values["guidance_scale"])
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: {error}") from None
    return Job(line=number, prompt=prompt, negative_prompt=negative, seed=seed,
               num_steps=num_steps, guidance_scale=guidance_scale, sampler=values["sampler"],
               seed_from="line number" if values["seed"] is None else "file")


def check_steps(jobs, scheduler_config):
    """Refuse, before any work, a job whose num_steps its sampler cannot run (LCM's limit)."""
    limits = {}
    for job in jobs:
        if job.sampler not in limits:
            sampler = make_sampler(job.sampler, scheduler_config)
            limits[job.sampler] = (sampler.max_steps, sampler.steps_hint)
        max_steps, hint = limits[job.sampler]
        if job.num_steps > max_steps:
            raise ValueError(f"line {job.line}: sampler {job.sampler!r} runs at most {max_steps} "
                             f"steps, the job asks for {job.num_steps} ({hint}).")


def batches(jobs, batch_size):
    """The jobs in runs of up to ``batch_size`` that can share one call: grouped by settings,
    in file order inside a group."""
    groups = {}
    for job in sorted(jobs, key=lambda job: job.line):
        groups.setdefault(job.group(), []).append(job)
    return [members[start:start + batch_size] for members in groups.values()
            for start in range(0, len(members), batch_size)]
