"""Opening a labeling series: scan the images, resume the saved state (or recover from
an unreadable one) and save it; see :mod:`.state` for the files."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

from ..atomic import set_aside
from ..io import IMAGE_EXTENSIONS
from .merge import file_stamp
from .queue import ImageQueue
from .resume import detach_shared, match_renames, restore_items
from .state import LEGACY_NAMES_VERSION, SeriesState
from .state_file import STATE_NAME, NewerVersionError, SeriesStateError, read_state_file


def load_or_create(
    output_folder: str | os.PathLike,
    folder: str | os.PathLike | None = None,
    *,
    names: Iterable[str] | None = None,
    recursive: bool = False,
    extensions: Iterable[str] = IMAGE_EXTENSIONS,
    pattern: str | None = None,
    on_corrupt: Literal["backup", "raise"] = "backup",
    found: Callable[[int], None] | None = None,
    exclude: Iterable[str | os.PathLike] = (),
) -> SeriesState:
    """Open the series of ``folder`` (or of layer ``names``) whose state lives in
    ``output_folder``, resuming where it stopped, or start it.

    The folder is scanned now: images the scan does not find are kept, flagged
    ``missing``, unless they were untouched (pending, never exported or autosaved), so
    nothing is forgotten when a drive is not mounted yet or another pattern is used; a
    new file with the content of a missing one takes over its record (a rename, listed
    in :attr:`SeriesState.renamed`); other new ones are appended (pending). Saved
    order, statuses, export records and the current item are kept; if the saved
    current item is missing, the first present not-exported item is current.
    The state is saved before returning (the previous file kept as the backup). An
    output folder inside the image folder is not scanned, nor are the folders
    ``exclude`` (e.g. the predicted masks the series starts from). ``found`` follows the scan
    (see :func:`~napari_focus.series.queue.scan_folder`).
    """
    if (folder is None) == (names is None):
        raise ValueError("give either an image folder or layer names")
    output = Path(output_folder)
    exts = [e.lower() for e in extensions]
    unreadable: list[str] = []
    if folder is not None:
        queue = ImageQueue.from_folder(
            folder,
            recursive=recursive,
            extensions=exts,
            pattern=pattern,
            exclude=[output, *exclude],
            found=found,
            unreadable=unreadable,
        )
    else:
        queue = ImageQueue.from_names(names or ())
    settings = {"recursive": recursive, "pattern": pattern, "extensions": exts}
    state = SeriesState(output, queue, settings, unreadable=unreadable)

    path = state.state_path
    data = None
    stamp = file_stamp(path)  # before reading: a later replacement is merged on saving
    if stamp is not None:
        try:
            data = read_state_file(path)
        except NewerVersionError:
            raise
        except SeriesStateError:
            if on_corrupt == "raise":
                raise
            bad = set_aside(
                path, path.with_name(f"{STATE_NAME}.bad-{time.strftime('%Y%m%d-%H%M%S')}")
            )
            state.recovered_from = bad
            stamp = None
            with contextlib.suppress(SeriesStateError):  # the previous state, if usable
                data = read_state_file(state.backup_path)
                state.restored_backup = state.backup_path
    if data is not None:
        saved = saved_image_folder(data, output)
        if not _same_folder(saved, folder):
            raise SeriesOfAnotherFolder(output, saved, folder)
        state._synced.remember(data["items"], stamp)
        restored, new = restore_items(data["items"], queue, queue.folder)
        if data["version"] <= LEGACY_NAMES_VERSION:
            known = [entry["key"] for entry in data["items"]] + [item.key for item in new]
            state.move_legacy_files(known)
            detach_shared(state, restored)
        match_renames(state, restored, new)
        queue.items = restored + new
        current = state.renamed.get(data.get("current"), data.get("current"))
        keys = queue.keys()
        if current in keys and not queue[keys.index(current)].missing:
            queue.jump(keys.index(current))
        elif keys:
            queue.jump(queue.first_open())
    output.mkdir(parents=True, exist_ok=True)
    state.save()
    return state


class SeriesOfAnotherFolder(SeriesStateError):
    """The series folder keeps the series of other images: opening it for these would
    give their statuses and edits to other pictures of the same names."""

    def __init__(self, output: Path, saved: Path | None, folder: str | os.PathLike | None):
        self.output, self.saved = output, saved
        self.folder = Path(folder) if folder is not None else None
        theirs = f"the images of {saved}" if saved is not None else "open image layers"
        ours = f"{self.folder}" if self.folder is not None else "the open image layers"
        super().__init__(
            f"{output} keeps the series of {theirs}, not of {ours}; choose another "
            "series folder (or open that series with its own images)"
        )

    def __reduce__(self) -> tuple:  # survives pickling (the series opens in a worker)
        return (type(self), (self.output, self.saved, self.folder))


def saved_image_folder(data: dict, output: Path) -> Path | None:
    """The image folder a saved state names: where its relative path leads from the
    series folder when that exists (both folders moved together), else its absolute
    path; None for a series of image layers."""
    relative, absolute = data.get("folder"), data.get("folder_absolute")
    if relative is not None and (output / relative).is_dir():
        return (output / relative).resolve()
    return Path(absolute) if absolute is not None else None


def _same_folder(saved: Path | None, folder: str | os.PathLike | None) -> bool:
    if saved is None or folder is None:
        return saved is None and folder is None
    try:
        return os.path.samefile(saved, folder)
    except OSError:  # the saved folder is gone: the images moved away from the series
        return True  # folder, which cannot tell where; the renamed-file matching follows
