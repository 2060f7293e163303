"""``python -m cellmaps``: the same as the ``cellmaps`` command."""

import sys

from cellmaps.cli import main

if __name__ == "__main__":
    sys.exit(main())
