"""The command line, ``python -m sdlib <command>``: one module per command, each adding its parser
and the function that runs it."""

import argparse
import sys

from sdlib.cli import batch, challenge, common, doctor, edit, generate, quiet

COMMANDS = (generate, edit, batch, doctor, challenge)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m sdlib", formatter_class=common.HelpWithDefaults,
        description="Stable Diffusion in Keras 3, the book's library.",
        epilog="TensorFlow's C++ log lines after its start-up are hidden; set "
        "TF_CPP_MIN_LOG_LEVEL=0 to see them. A live progress bar is drawn only when stdout is a "
        "terminal; elsewhere one plain line reports the images made.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(commands)
    return parser


def main(argv=None, vocabularies=None, challenge=None):
    """Run one command; 0 when it worked, 2 (and the reason on stderr) when it could not, or the
    command's own status (doctor: 1 unless every check is ok).

    ``vocabularies``: {preset name: (unknown_words(prompt) -> words, what it knows)} for models
    that know few words; ``python -m sdlib`` passes the mini models' (the command line cannot
    import ``sdlib.mini``, a sibling layer). ``challenge``: ``sdlib.mini.challenge``, the game
    that ``python -m sdlib challenge`` plays, handed in the same way.
    """
    args = build_parser().parse_args(argv)
    args.vocabularies = vocabularies or {}
    args.challenge = challenge
    try:
        with quiet.native_logs_hidden():
            status = args.run(args)
    except (ValueError, TypeError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return status or 0
