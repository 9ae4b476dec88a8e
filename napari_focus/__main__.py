"""``python -m napari_focus``: the ``napari-focus`` command line."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
