"""Putting a split back in order before an export (under the root lock).

* A transaction a killed export committed is completed (:func:`.journal.roll_forward`).
* Temporary files of killed exports are deleted (only this package's temp names).
* A sample an earlier version left in the instance JSON only is completed.
* An *orphaned* sample, whose files this package wrote (the provenance log names it)
  but which no JSON lists (left by an export interrupted before the transactional
  writes existed), is re-listed when its files are complete (image and masks present
  and readable, same size), else its remaining files are removed.

Each action returns a message saying which sample or files it concerned.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from ..atomic import remove_stale_temps
from ..io import image_shape
from ..mask_files import read_mask_file
from .journal import Transaction, roll_forward
from .layouts import Layout
from .provenance import last_records
from .splitjson import SplitJson, dumps

if TYPE_CHECKING:  # export imports this module
    from .export import SamplePaths


def split_folders(base: Path, spec: Layout) -> list[Path]:
    folders = [base, *(base / d for d in (spec.image_dir, spec.mask_dir, *spec.extra_mask_dirs))]
    if spec.semantic_dir:
        folders.append(base / spec.semantic_dir)
    return list(dict.fromkeys(folders))


def tidy_split(root: Path, base: Path, spec: Layout) -> list[str]:
    """Roll forward, then delete stale temporary files; messages of what was done."""
    messages = roll_forward(base, root)
    # temp files of live processes are kept: under the lock they are not an export's
    removed = [p for folder in split_folders(base, spec) for p in remove_stale_temps(folder)]
    if removed:
        messages.append(
            f"removed {len(removed)} temporary file(s) of an interrupted export in {base}"
        )
    return messages


def recover_samples(
    root: Path,
    base: Path,
    spec: Layout,
    store: SplitJson,
    paths_of: Callable[[str], SamplePaths],
) -> list[str]:
    """Complete instance-only entries and re-list or remove orphaned samples; the JSON
    changes are committed in their own transaction. ``paths_of(name)`` gives a
    sample's :class:`~.export.SamplePaths`."""
    if not store.enabled:
        return []
    messages: list[str] = []
    changed = store.repair(root, spec, lambda name: paths_of(name).mask)
    if changed:
        messages.append(f"completed the semantic JSON entries of {spec.name} under {root}")
    orphans = _orphan_names(base, spec, store)
    if orphans:
        ours = {
            name
            for (layout, name), record in last_records(root).items()
            if layout == spec.name and record.get("status") != "removed"
        }
        for name in sorted(orphans):
            if name.casefold() not in ours:
                continue  # not made by this package: leave it to its owner
            message, fg = _recover_one(root, paths_of(name), name)
            if fg is not None:
                store.put(name + spec.image_ext, fg)
                changed = True
            messages.append(message)
    if changed:
        with Transaction(base) as tx:
            for path, data in store.files():
                tx.stage(path, dumps(data))
            tx.commit()
    return messages


def _orphan_names(base: Path, spec: Layout, store: SplitJson) -> set[str]:
    listed = store.listed_stems()
    found: set[str] = set()
    for folder, suffix in ((spec.mask_dir, spec.mask_suffix), (spec.image_dir, spec.image_ext)):
        try:
            entries = list((base / folder).iterdir())
        except OSError:
            continue
        for entry in entries:
            name = entry.name
            if name.startswith(".") or not name.endswith(suffix):
                continue
            stem = name[: -len(suffix)]
            if stem and "." not in stem and stem.casefold() not in listed:
                found.add(stem)
    return found


def _recover_one(root: Path, paths, name: str) -> tuple[str, np.ndarray | None]:
    files = paths.all()
    missing = [p for p in files if not p.is_file()]
    fg = None
    if not missing:
        try:
            fg = read_mask_file(paths.mask)
            if image_shape(paths.image) != fg.shape:
                missing, fg = [paths.image], None
        except (OSError, ValueError, Image.DecompressionBombError):
            missing, fg = [paths.mask], None
    if fg is not None:
        return f"re-listed orphaned sample {name!r} (complete files, no JSON entry)", fg
    removed = []
    for path in files:
        if path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path.relative_to(root).as_posix())
    what = ", ".join(p.relative_to(root).as_posix() for p in missing)
    return (
        f"removed incomplete orphaned sample {name!r} (missing or unreadable: {what}; "
        f"deleted: {', '.join(removed) or 'nothing'})",
        None,
    )
