"""``python -m sdlib``: the command line (``sdlib.cli``)."""

import sys

from sdlib.cli import main

if __name__ == "__main__":
    sys.exit(main())
