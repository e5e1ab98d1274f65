"""The command line, ``python -m sdlib <command>``: one module per command, each adding its parser
and the function that runs it."""

import argparse
import sys

from sdlib.cli import edit, generate

COMMANDS = (generate, edit)


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m sdlib",
                                     description="Stable Diffusion in Keras 3, the book's library.")
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(commands)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (ValueError, TypeError, FileExistsError, FileNotFoundError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
