"""Who else has a series open: an empty marker file per open series widget in the series
folder, ``.napari_focus-open-<host id>-<pid>-<token>``.

Two napari windows on one series both save into its state file; the saves merge image by
image, the later decision winning, so a decision made in one window can be undone by a
click in the other. Saying so when the second window opens the series is enough to avoid
it. Markers of processes that ended without removing theirs (a crash) are removed when
they are seen from their own machine, and ignored from others once a day old.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from pathlib import Path

from ..atomic import STALE_AFTER_S, _alive, host_id

MARK_PREFIX = ".napari_focus-open-"


class Presence:
    """This widget's marker in a series folder; :meth:`leave` removes it."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / f"{MARK_PREFIX}{host_id()}-{os.getpid()}-{secrets.token_hex(4)}"
        self.others = _others(folder)
        try:
            with open(self.path, "x"):
                pass
        except OSError:  # a folder one may read but not write: nothing to mark
            self.path = None

    def leave(self) -> None:
        if self.path is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()
            self.path = None

    def others_text(self) -> str | None:
        """Who else has the series open, in words; None when nobody."""
        if not self.others:
            return None
        return ", ".join(self.others)


def _others(folder: Path) -> list[str]:
    found: list[str] = []
    try:
        marks = [entry for entry in folder.iterdir() if entry.name.startswith(MARK_PREFIX)]
    except OSError:
        return found
    for mark in marks:
        host, _, rest = mark.name[len(MARK_PREFIX) :].partition("-")
        pid = rest.partition("-")[0]
        if not pid.isdigit():
            continue
        if host == host_id():
            if int(pid) == os.getpid():
                found.append("another window of this napari")
            elif _alive(int(pid)):
                found.append(f"the napari of process {pid} on this computer")
            else:  # ended without removing its marker
                with contextlib.suppress(OSError):
                    mark.unlink()
            continue
        with contextlib.suppress(OSError):
            if time.time() - mark.stat().st_mtime < STALE_AFTER_S:
                found.append(f"a napari on another computer (process {pid})")
    return sorted(set(found))
