"""``python -m sdlib``: the command line (``sdlib.cli``), told which words the mini models know and
given the workshop's challenge, both from the miniature world (``sdlib.mini``)."""

import sys

from sdlib import cli
from sdlib.mini import challenge, shapes
from sdlib.presets import PRESETS

MINI_VOCABULARY = (shapes.unknown_words, shapes.vocabulary_summary())
VOCABULARIES = {name: MINI_VOCABULARY for name in PRESETS if name.startswith("mini-shapes")}


def main(argv=None):
    return cli.main(argv, vocabularies=VOCABULARIES, challenge=challenge)


if __name__ == "__main__":
    sys.exit(main())
