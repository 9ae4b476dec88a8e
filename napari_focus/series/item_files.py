"""What the series folder holds for one image, read ahead with its pixels: its
autosaved mask (and where it came from), its stored proposal, its mask in the
*start masks* folder, and the mask its last export wrote (an accepted image). A 24-MP
mask takes 60-75 ms to read and a stored proposal 80-90 ms, so the worker that decodes
the image reads them too and the GUI thread only checks that they are still current.

Each part keeps the stamp (inode, size, modification time) its file had *before* it
was read: a file replaced since then has another stamp, so :func:`still_current` says
no and the caller reads the file again; a part read from a file replaced while it was
read is never taken for the new file.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..mask_files import read_mask_file
from .merge import file_stamp
from .proposal_store import ProposalStore, StoredProposal
from .references import reference_mask_path

Stamp = tuple[int, int, int] | None


@dataclass(frozen=True)
class ItemFiles:
    """Read-ahead files of one image. ``autosave_read`` / ``proposal_folder`` None say
    that part was not read (an unreadable file, or not asked for)."""

    autosave_read: bool = False
    autosave: np.ndarray | None = None  # bool (H, W); None: no file
    provenance: dict[str, Any] | None = None
    autosave_stamp: Stamp = None
    proposal_folder: Path | None = None  # the store the proposal was looked up in
    proposal: StoredProposal | None = None  # None: none stored for this image
    proposal_stamp: Stamp = None
    start_folder: Path | None = None  # the start masks folder looked in; None: not read
    start_path: Path | None = None  # the image's mask there; None: it has none
    start_mask: np.ndarray | None = None  # bool (H, W)
    start_stamp: Stamp = None
    exported_path: Path | None = None  # the exported mask looked for; None: not read
    exported_mask: np.ndarray | None = None  # bool (H, W); None: gone or unreadable
    exported_stamp: Stamp = None

    @property
    def nbytes(self) -> int:
        size = self.autosave.nbytes if self.autosave is not None else 0
        size += self.start_mask.nbytes if self.start_mask is not None else 0
        size += self.exported_mask.nbytes if self.exported_mask is not None else 0
        if self.proposal is not None:
            size += self.proposal.probability.nbytes + self.proposal.mask.nbytes
        return size


def read_item_files(
    autosave_path: Path,
    store: ProposalStore | None,
    key: str,
    source: Path | None,
    start_masks: Path | None = None,
    exported: Path | None = None,
) -> ItemFiles:
    """Read an image's autosave (at ``autosave_path``) and, without one, its mask in the
    ``start_masks`` folder, its ``exported`` mask and, with a ``store``, its stored
    proposal (``source``: the image file they belong to). Call from a worker thread."""
    autosave_read, autosave, provenance = False, None, None
    autosave_stamp = file_stamp(autosave_path)
    if autosave_stamp is None:
        autosave_read = True
    else:
        with contextlib.suppress(OSError, ValueError):  # read again, and reported, on showing
            autosave, autosave_read = read_mask_file(autosave_path), True
            provenance = read_provenance(autosave_path.with_suffix(".json"))
    proposal_folder, proposal, proposal_stamp = None, None, None
    if store is not None and autosave_stamp is None:  # else the autosave is shown
        proposal_stamp = file_stamp(store.path(key))
        if proposal_stamp is not None:
            proposal = store.load(key, source)
        proposal_folder = store.folder
    start: dict[str, Any] = {}
    if start_masks is not None and source is not None and autosave_stamp is None:
        with contextlib.suppress(OSError, ValueError):  # read again, and reported, on showing
            path = reference_mask_path(source, start_masks)
            stamp = file_stamp(path) if path is not None else None
            mask = read_mask_file(path) if path is not None else None
            start = {"start_folder": start_masks, "start_path": path, "start_mask": mask,
                     "start_stamp": stamp}  # fmt: skip
    if exported is not None and autosave_stamp is None:
        stamp = file_stamp(exported)
        mask = None
        with contextlib.suppress(OSError, ValueError):  # shown as never exported
            mask = read_mask_file(exported) if stamp is not None else None
        start.update(exported_path=exported, exported_mask=mask, exported_stamp=stamp)
    return ItemFiles(
        autosave_read, autosave, provenance, autosave_stamp,
        proposal_folder, proposal, proposal_stamp, **start,
    )  # fmt: skip


def still_current(stamp: Stamp, path: Path) -> bool:
    """Whether the file at ``path`` is the one a part was read from (or still absent);
    a file that cannot be looked at now (permissions, a stale network handle) is not."""
    try:
        return file_stamp(path) == stamp
    except OSError:
        return False


def read_provenance(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
