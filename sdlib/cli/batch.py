"""``python -m sdlib batch prompts.jsonl --out DIR --workers 2``: many images from a prompts file,
resumable, in this process or on Ray Data workers (``sdlib.batch``)."""

import os
import signal
import sys
import threading
import time

from sdlib.batch import DEFAULTS, INSTALL_HINT, MANIFEST, Batch, ModelSpec, ray_available, read_jobs
from sdlib.cli import common, output, quiet

DESCRIPTION = f"""\
Many images from a prompts file: one prompt per line, or JSONL (a .jsonl file, or one whose first
line starts with {{) whose keys are text_to_image's argument names: prompt, negative_prompt, seed,
num_steps, guidance_scale, sampler (defaults as in text_to_image: num_steps {DEFAULTS['num_steps']},
guidance_scale {DEFAULTS['guidance_scale']}, sampler {DEFAULTS['sampler']}). A job without a seed
gets its line number (1-based) as its seed, so text_to_image(prompt, seed=LINE) draws the same
image. Each image is DIR/LLLLL-HHHHHHHH.png (line number, hash of the settings), and
DIR/{MANIFEST} gets one JSON line per image: its settings, the seed used (and whether the line
number gave it), the model and its weights' SHA-256, the sdlib version, the file and the seconds
it took. Rerunning the same command skips what is done and redoes what an interrupted run left
half-written."""


def add_parser(commands):
    batch = commands.add_parser("batch", help="many images from a prompts file (resumable; "
                                "Ray workers)", description=DESCRIPTION,
                                formatter_class=common.HelpWithDefaults)
    batch.add_argument("prompts", help="the prompts file: one prompt per line, or JSONL")
    batch.add_argument("--out", required=True, metavar="DIR",
                       help="the folder for the images and the manifest; created if its parent "
                       "exists (required)")
    batch.add_argument("--workers", type=int, default=None, metavar="N",
                       help="Ray workers, each holding one pipeline: local Ray, or the cluster of "
                       "--address (default: none, this process makes the images; with --address, "
                       "one per GPU of the cluster). 0: this process")
    batch.add_argument("--address", default=None, metavar="ADDRESS",
                       help="a Ray cluster to run on, such as ray://head:10001 or auto (default: "
                       "none, a local Ray listening on this machine only)")
    batch.add_argument("--batch-size", type=int, default=4, metavar="B",
                       help="images of equal settings made by one call; the images do not depend "
                       "on it")
    common.add_model_arguments(batch)
    batch.add_argument("--height", type=int, default=None,
                       help="image height in pixels (default: the model's: 512 for sd-v1-5, 64 "
                       "for the mini and tiny models)")
    batch.add_argument("--width", type=int, default=None,
                       help="image width in pixels (default: the model's)")
    batch.set_defaults(run=run)


def run(args):
    check_out(args.out)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}.")
    if args.workers is not None and args.workers < 0:
        raise ValueError(f"--workers must be 0 or more, got {args.workers}.")
    jobs = read_jobs(args.prompts)
    workers = chosen_workers(args)
    warn_about_unknown_words(args, jobs)
    preset = common.chosen_preset(args)
    model = ModelSpec(preset=preset, weights=None if preset else args.weights, height=args.height,
                      width=args.width, jit_compile=False if args.no_jit else "auto")
    if not os.path.isdir(args.out):
        os.mkdir(args.out)
    with Batch(jobs, args.out, model, args.batch_size) as batch, terminate_as_interrupt():
        print(f"{len(jobs)} jobs in {args.prompts}: {len(jobs) - len(batch.pending)} done in "
              f"{args.out}, {len(batch.pending)} to make with {model.name} "
              f"({where(workers, args.address)})")
        progress = Progress(len(batch.pending))
        try:
            summary = batch.run(workers=workers, address=args.address, on_image=progress.update)
        except KeyboardInterrupt:
            progress.end()
            print(f"interrupted: {progress.made} made, {len(batch.pending) - progress.made} still "
                  "to make; run the same command again to resume.", file=sys.stderr)
            return 130
        progress.end()
    rate = f" ({summary.made / summary.seconds:.2f} images/s)" if summary.made else ""
    print(f"made {summary.made} image{'' if summary.made == 1 else 's'} in "
          f"{summary.seconds:.1f} s{rate}; {summary.skipped} were done; manifest: "
          f"{os.path.join(args.out, MANIFEST)}")
    if summary.missing:
        print(f"error: {summary.missing} jobs were not made; run the same command again.",
              file=sys.stderr)
        return 1
    return 0


def check_out(out):
    """--out: an existing folder that takes files, or a new one in an existing folder."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise NotADirectoryError(f"--out {out} is a file; give a folder for the images.")
    output.check_folder(out if os.path.isdir(out) else os.path.dirname(os.path.abspath(out)))


def chosen_workers(args):
    """0 (this process) or the Ray workers; without Ray, this process (and why)."""
    if args.workers == 0 and args.address is None:
        return 0
    if not ray_available():
        if args.address is not None:
            raise ValueError(f"--address needs Ray Data, which is not installed: {INSTALL_HINT}.")
        if args.workers:
            print(f"warning: Ray Data is not installed ({INSTALL_HINT}), so this process makes "
                  "the images.", file=sys.stderr)
        return 0
    return args.workers or 0


def where(workers, address):
    if address is not None:
        return f"{workers or 'one per GPU of the'} Ray workers at {address}"
    if workers:
        return f"{workers} local Ray worker{'' if workers == 1 else 's'}"
    return "in this process"


def warn_about_unknown_words(args, jobs):
    """One warning naming the words that a mini model never saw, with their lines."""
    preset = common.chosen_preset(args)
    if preset not in args.vocabularies:
        return
    unknown_words, known = args.vocabularies[preset]
    lines = {}
    for job in jobs:
        for word in unknown_words(job.prompt) + unknown_words(job.negative_prompt or ""):
            lines.setdefault(word, []).append(job.line)
    if lines:
        words = "; ".join(f"{word} (line{'s' if len(found) > 1 else ''} "
                          f"{', '.join(map(str, sorted(set(found))[:5]))}"
                          f"{', ...' if len(set(found)) > 5 else ''})"
                          for word, found in lines.items())
        print(f"warning: {preset} never saw these words: {words}; it knows {known}",
              file=sys.stderr)


class terminate_as_interrupt:
    """SIGTERM ends the run as Ctrl-C does: Ray shut down, what is written kept."""

    def __enter__(self):
        self.previous = None
        if threading.current_thread() is threading.main_thread():  # where signals are handled
            self.previous = signal.signal(signal.SIGTERM, self.interrupt)

    def __exit__(self, *exc_info):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)

    @staticmethod
    def interrupt(signum, frame):
        raise KeyboardInterrupt


class Progress:
    """A bar redrawn in place on a terminal; elsewhere one plain line per image."""

    WIDTH = 30

    def __init__(self, total):
        self.total, self.made = total, 0
        self.started = time.perf_counter()
        self.live = quiet.live_progress()

    def update(self, record, made, total):
        self.made = made
        if not self.live:
            print(f"{made}/{total} {record['file']} ({record['seconds']:.2f} s)", flush=True)
            return
        filled = self.WIDTH * made // max(total, 1)
        rate = made / max(time.perf_counter() - self.started, 1e-9)
        print(f"\r[{'#' * filled}{'.' * (self.WIDTH - filled)}] {made}/{total} "
              f"{rate:.2f} images/s", end="", flush=True)

    def end(self):
        if self.live and self.made:
            print()
