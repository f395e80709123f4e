"""``python -m pure_backprop``: the ``pure-backprop`` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
