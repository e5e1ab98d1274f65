"""``python -m sdlib doctor``: is this machine ready for the book? (``sdlib.doctor``)"""

import json

from sdlib import doctor
from sdlib.cli import common


def add_parser(commands):
    parser = commands.add_parser(
        "doctor", help="check this machine for the book: versions, device, models, timing",
        description="Check this machine for the book, one line per check (ok, warn, fail), and "
        "under each warn or fail the command that fixes it: Python and package versions against "
        "the book's pins, the Keras backend, Colab / Kaggle / local, CPU, GPU, RAM, cache and "
        "disk, the mode 'auto' picks and why, the shipped models, a 2-step run that compiles "
        "once, one timed mini-shapes image and each chapter's time estimated from it, whether the "
        "real weights can be had (never required). About 30 s on two CPU cores.",
        epilog="Exit status: 0 when every check is ok; 1 when one fails (a chapter will not run "
        "as the book shows) or warns (something differs from how the book was run; the chapters "
        "should still work).",
        formatter_class=common.HelpWithDefaults)
    parser.add_argument("--json", action="store_true",
                        help="print the report as JSON instead: every check (name, status, "
                        "detail, fix, data, seconds) and a summary (total time, counts, the "
                        "machine), for a teacher who collects reports")
    parser.add_argument("--gpu", action="store_true",
                        help=f"fail when no GPU is visible, as ${doctor.REQUIRE_GPU_ENV}=1 does "
                        "(default: a CPU is fine)")
    parser.set_defaults(run=run)


def run(args):
    require_gpu = True if args.gpu else None
    if args.json:
        report = doctor.report_json(require_gpu=require_gpu)
        print(json.dumps(report.as_dict(), indent=2))
    else:
        report = doctor.run(require_gpu=require_gpu)
    return report.exit_code
