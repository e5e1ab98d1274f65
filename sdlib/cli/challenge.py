"""``python -m sdlib challenge``: the workshop's "fastest correct picture". The game is
``sdlib.mini.challenge``, which ``python -m sdlib`` hands in: the command line does not import
``sdlib.mini``, a sibling layer."""

import json

from sdlib.cli import common
from sdlib.presets import PRESETS
from sdlib.sampling.samplers import SAMPLERS
from sdlib.validation import DTYPES


def add_parser(commands):
    parser = commands.add_parser(
        "challenge", help="the workshop challenge: the fastest correct picture",
        description="Make the challenge's eight pictures with your settings, judge them with "
        "the mini-shapes judge and time them: one leaderboard line (or --json, for the teacher). "
        "Entries rank by correct pictures, then by seconds (the fastest of three warm calls that "
        "make all eight; building and compiling are reported, not ranked). With --leaderboard, "
        "rank collected --json reports instead.",
        formatter_class=common.HelpWithDefaults)
    parser.add_argument("--name", default="anonymous", help="your name on the leaderboard")
    parser.add_argument("--sampler", default="ddim", choices=SAMPLERS, help="the sampling method")
    parser.add_argument("--steps", type=int, default=50, help="denoising steps")
    parser.add_argument("--guidance", type=float, default=7.5,
                        help="classifier-free guidance scale (1 or below: the prompt alone)")
    parser.add_argument("--precision", default="float32", choices=list(DTYPES),
                        help="the Keras dtype policy")
    parser.add_argument("--no-jit", action="store_true",
                        help="run without XLA (default: XLA on)")
    parser.add_argument("--preset", default="mini-shapes", choices=list(PRESETS), metavar="NAME",
                        help="the model (the judge knows mini-shapes' world only)")
    parser.add_argument("--json", action="store_true",
                        help="print the result as JSON (a teacher collects these files)")
    parser.add_argument("--leaderboard", nargs="+", default=None, metavar="REPORT",
                        help="rank these --json reports instead of playing (default: play)")
    parser.set_defaults(run=run)


def run(args):
    if args.challenge is None:
        raise ValueError("the challenge needs sdlib's mini world: run it as `python -m sdlib "
                         "challenge`.")
    game = args.challenge
    if args.leaderboard:
        print(game.leaderboard(game.read_reports(args.leaderboard)))
        return 0
    entry = game.Entry(name=args.name, sampler=args.sampler, num_steps=args.steps,
                       guidance_scale=args.guidance, dtype=args.precision,
                       jit_compile=not args.no_jit)
    result = game.play(entry, preset=args.preset)
    print(json.dumps(result.as_dict(), indent=1) if args.json else result.line())
    return 0
