"""Starting ``spawn`` processes from a user's script without running that script again.

A spawned child imports the parent's ``__main__`` (as ``__mp_main__``) so that functions
defined there can be unpickled. napari launch scripts are often written without
``if __name__ == "__main__":``; the child then opens a second napari window and never
gets to its work (a fine-tuning run or the quality metrics that never start, a napari
that never exits). The children started here run functions of this package only, so
the parent's main script is hidden from multiprocessing while they start.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator

_MAIN_HIDDEN = threading.Lock()  # the __main__ module is one per process, as is this


@contextlib.contextmanager
def main_script_not_rerun() -> Iterator[None]:
    """While inside, processes started with the ``spawn`` method do not run the
    parent's main script or module; use it around ``Process.start()`` or an executor's
    ``submit`` (which starts its workers), for targets importable from a package."""
    with _MAIN_HIDDEN:
        main = sys.modules.get("__main__")
        if main is None:
            yield
            return
        names = [name for name in ("__file__", "__spec__") if hasattr(main, name)]
        hidden = {name: getattr(main, name) for name in names}
        if "__file__" in hidden:
            del main.__file__
        if "__spec__" in hidden:
            main.__spec__ = None
        try:
            yield
        finally:
            for name, value in hidden.items():
                setattr(main, name, value)
