"""The result journal of a distributed run: each worker appends an image's manifest row
just before writing its outputs, so that a mask on disk has its scores even when the
driver never received the row (a run stopped by Ctrl-C, a killed driver). A row counts
only while its outputs are on disk (a worker killed between the two wrote none) and,
with --overwrite, were written since the run started (not the outputs they replace).

Layout: ``OUT/.napari_focus_results/<run>/<host id>-<pid>.jsonl``, one JSON object a
line, one file per worker process; ``<run>`` is ``<host id>-<driver pid>-<ns>``. A run
that ends removes its journal once its manifest is written. A stopped run leaves its
journal with a ``stop`` file in it: its workers, should they go on, write nothing more;
on a cluster that stays up, the next run keeps that file for a day.
A journal whose run is gone (its driver's process on this host has ended or runs the
next run, or it is older than a day) is read by the next run into the same folder,
whose manifest then keeps those rows, and removed.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..atomic import host_id, parse_temp_name, temp_files, temp_final_name

JOURNAL_FOLDER = ".napari_focus_results"
STOP_NAME = "stop"
#: a row's outputs count when modified at or after this storage time (ns; 0: any)
WRITTEN_SINCE = "written_since_ns"
STAYING = "workers on a cluster that stays up\n"  # the stop file's text when they may go on
#: a journal of another host's run is left alone until it is this old
STALE_AFTER_S = 24 * 3600


def new_run_folder(out: Path) -> Path:
    """The journal folder of a run starting now (created by the first worker write)."""
    return out / JOURNAL_FOLDER / f"{host_id()}-{os.getpid()}-{time.time_ns()}"


def request_stop(folder: Path, workers_stay: bool) -> None:
    """Tell the run's workers to write nothing more (a run stopped by Ctrl-C).
    ``workers_stay``: they run on a cluster that stays up and may still hold batches,
    so the next run keeps this stop file (for a day) when it takes the journal's rows."""
    with contextlib.suppress(OSError):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / STOP_NAME).write_text(STAYING if workers_stay else "", encoding="utf-8")


def stop_requested(folder: str) -> bool:
    return bool(folder) and os.path.exists(os.path.join(folder, STOP_NAME))


def append(folder: str, row: Mapping[str, Any]) -> None:
    """Append ``row`` to this process's journal file in ``folder`` (a worker's call)."""
    path = Path(folder) / f"{host_id()}-{os.getpid()}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({key: _plain(value) for key, value in row.items()}) + "\n"
    with path.open("a", encoding="utf-8") as handle:
        handle.write(line)


def _plain(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return _plain(value.item())
    return value


def outputs_exist(row: Mapping[str, Any]) -> bool:
    """Whether the outputs a journaled row names are all on disk (written since the
    row's ``WRITTEN_SINCE``, where it has one)."""
    since = row.get(WRITTEN_SINCE) or 0
    for column in ("mask", "probability"):
        if row.get(column):
            try:
                if os.stat(str(row[column])).st_mtime_ns < since:
                    return False
            except OSError:
                return False
    return True


def read_rows(folders: Iterable[Path]) -> list[dict[str, Any]]:
    """The rows journaled in ``folders`` whose outputs are on disk (a line cut short by
    a killed worker is left out)."""
    rows = []
    for folder in folders:
        for path in sorted(folder.glob("*.jsonl")):
            with contextlib.suppress(OSError):
                for line in path.read_text(encoding="utf-8").splitlines():
                    with contextlib.suppress(ValueError):
                        row = json.loads(line)
                        if isinstance(row, dict) and row.get("source") and outputs_exist(row):
                            rows.append(row)
    return rows


def ended_runs(out: Path) -> list[Path]:
    """Journal folders in ``out`` of runs that have ended without removing them."""
    root = out / JOURNAL_FOLDER
    try:
        folders = [p for p in root.iterdir() if p.is_dir()]
    except OSError:
        return []
    return [folder for folder in folders if _ended(folder)]


def _ended(folder: Path) -> bool:
    host, _, rest = folder.name.partition("-")
    pid = rest.partition("-")[0]
    if host == host_id() and pid.isdigit():
        # a run of this process has ended when it is not running (one at a time here)
        return int(pid) == os.getpid() or not _alive(int(pid))
    try:
        return time.time() - folder.stat().st_mtime > STALE_AFTER_S
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # someone else's process, or cannot tell
    return True


def remove(folders: Iterable[Path]) -> None:
    """Remove journal folders (and the journal root once empty). A stopped run whose
    workers may go on keeps its stop file, and only that, for a day."""
    root = None
    for folder in folders:
        root = folder.parent
        if _workers_may_go_on(folder):
            for path in folder.glob("*.jsonl"):
                with contextlib.suppress(OSError):
                    path.unlink()
            continue
        shutil.rmtree(folder, ignore_errors=True)
    if root is not None:
        with contextlib.suppress(OSError):
            root.rmdir()  # only when no other run's journal is there


def _workers_may_go_on(folder: Path) -> bool:
    stop = folder / STOP_NAME
    try:
        staying = stop.read_text(encoding="utf-8") == STAYING
        return staying and time.time() - stop.stat().st_mtime < STALE_AFTER_S
    except (OSError, UnicodeDecodeError):
        return False


def storage_now(folder: Path) -> int:
    """The storage's clock (a new file's mtime) in ns: outputs modified at or after it
    were written by this run, whatever the nodes' clocks say."""
    fd, marker = tempfile.mkstemp(prefix=".napari_focus_run.", dir=folder)
    try:
        return os.fstat(fd).st_mtime_ns
    finally:
        os.close(fd)
        os.unlink(marker)


def leftover_temps(outputs: Iterable[str | os.PathLike], since_ns: int) -> list[Path]:
    """Temporary files of these outputs (:func:`napari_focus.atomic.temp_path` names)
    created from ``since_ns`` on (storage clock): left by workers of this run that
    were killed while writing. Call only once no worker writes them any more."""
    wanted: dict[Path, set[str]] = {}
    for output in map(Path, outputs):
        wanted.setdefault(output.parent, set()).add(temp_final_name(output.name))
    found = []
    for folder, names in wanted.items():
        for temp in temp_files(folder):
            parsed = parse_temp_name(temp.name)
            with contextlib.suppress(OSError):
                if parsed and parsed.final in names and temp.stat().st_mtime_ns >= since_ns:
                    found.append(temp)
    return found
