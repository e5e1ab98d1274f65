"""Many images from a prompts file: every job with a stable id, file name and seed; PNGs and a
manifest written so that a killed run resumes where it stopped; in this process or on Ray Data
workers (``sdlib[ray]``), the images equal to ``text_to_image`` calls with the same seeds.

    from sdlib.batch import ModelSpec, run_batch
    run_batch("prompts.jsonl", "out/", ModelSpec("mini-shapes"), workers=2)

``python -m sdlib batch prompts.jsonl --out out/ --workers 2`` is the command line.
"""

from sdlib.batch.jobs import DEFAULTS, KEYS, Job, read_jobs
from sdlib.batch.manifest import MANIFEST, OutputFolder
from sdlib.batch.model import ModelSpec
from sdlib.batch.ray_engine import INSTALL_HINT, ray_available
from sdlib.batch.runner import Batch, Summary, run_batch

__all__ = ["Batch", "DEFAULTS", "INSTALL_HINT", "Job", "KEYS", "MANIFEST", "ModelSpec",
           "OutputFolder", "Summary", "ray_available", "read_jobs", "run_batch"]
