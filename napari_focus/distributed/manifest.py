"""The results manifest of a distributed run, and what is made from it: the ranking CSV
of ``napari-focus rank`` and a labeling series in that order.

One row per input, columns:

- ``source``: the input (absolute local path or URI); ``name``: its stem;
- ``mask``, ``probability``: the output paths (``probability`` empty if not written);
- ``status``: ``written`` (by this run), ``skipped`` (the outputs existed; the row keeps
  the scores of the run that wrote them, when the earlier manifest has them) or
  ``failed``; ``pending`` only in the copies written while a run goes on; ``error``: why
  it failed (the message the local engine prints), else empty;
- ``uncertainty``: :func:`napari_focus.quality.uncertainty` of the probability map
  (mean binary entropy, bits); ``foreground``: the mask's share of foreground pixels;
- ``seconds``: model time for the image (its share of a batch); ``width``, ``height``;
- ``worker``: ``host:pid`` of the process that predicted it.

Parquet (``.parquet``, the default ``focus_manifest.parquet`` in the output folder) or
CSV (``.csv``: empty cell = missing). Both are written atomically.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..atomic import atomic_write
from ..fs_text import CSV_ERRORS
from .inputs import Job, is_uri
from .worker import RESULT_COLUMNS

MANIFEST_NAME = "focus_manifest.parquet"
RANKING_NAME = "focus_rank.csv"
TEXT_COLUMNS = ("source", "name", "mask", "probability", "status", "error", "worker")
FLOAT_COLUMNS = ("uncertainty", "foreground", "seconds")
INT_COLUMNS = ("width", "height")
COLUMNS = RESULT_COLUMNS


def empty_row(job: Job, status: str, error: str = "") -> dict[str, Any]:
    return {
        **job.as_dict(),
        "status": status,
        "error": error,
        "uncertainty": math.nan,
        "foreground": math.nan,
        "seconds": math.nan,
        "width": None,
        "height": None,
        "worker": "",
    }


def normalize(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row with every column, typed: text ('' if missing), float (NaN), int (None)."""
    out: dict[str, Any] = {}
    for column in TEXT_COLUMNS:
        value = row.get(column)
        out[column] = "" if value is None else str(value)
    for column in FLOAT_COLUMNS:
        value = row.get(column)
        try:
            out[column] = math.nan if value in (None, "") else float(value)
        except (TypeError, ValueError):
            out[column] = math.nan
    for column in INT_COLUMNS:
        value = row.get(column)
        try:
            out[column] = None if value in (None, "") else int(value)
        except (TypeError, ValueError):
            out[column] = None
    if out["width"] == 0 and out["height"] == 0:  # unreadable image: size unknown
        out["width"] = out["height"] = None
    return {c: out[c] for c in COLUMNS}


def write_manifest(rows: Iterable[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Write the manifest (Parquet or CSV by the extension), atomically."""
    path = Path(path)
    table = [normalize(r) for r in rows]
    if path.suffix.lower() == ".csv":
        from ..quality import write_csv

        return write_csv(table, path, COLUMNS)  # the Parquet manifest's columns and order
    if path.suffix.lower() != ".parquet":
        raise ValueError(f"manifest must end in .parquet or .csv, got {path.name!r}")
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [(c, pa.string()) for c in TEXT_COLUMNS[:6]]
        + [(c, pa.float64()) for c in FLOAT_COLUMNS]
        + [(c, pa.int64()) for c in INT_COLUMNS]
        + [("worker", pa.string())]
    )
    data = pa.Table.from_pylist(table, schema=schema)
    return atomic_write(path, lambda tmp: pq.write_table(data, tmp))


#: the columns without which a table is not a manifest (another program's table)
REQUIRED_COLUMNS = ("source", "status")


def read_manifest(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a manifest written by :func:`write_manifest`, normalized.

    Raises:
        ValueError: the file is a table without the manifest's ``source`` and ``status``
            columns (or an unreadable one).
    """
    path = Path(path)
    if path.suffix.lower() == ".csv":
        # utf-8-sig: a manifest saved again by a spreadsheet starts with a byte-order mark
        with path.open(encoding="utf-8-sig", errors=CSV_ERRORS, newline="") as handle:
            reader = csv.DictReader(handle)
            _check_columns(path, reader.fieldnames or ())
            return [normalize(r) for r in reader]
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    _check_columns(path, table.column_names)
    return [normalize(r) for r in table.to_pylist()]


def _check_columns(path: Path, columns: Sequence[str]) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise ValueError(f"{path} is not a napari-focus manifest (no {', '.join(missing)} column)")


def carried_rows(
    jobs: Sequence[Job],
    previous: Sequence[Mapping[str, Any]],
    journaled: Sequence[Mapping[str, Any]] = (),
) -> list[dict]:
    """Rows for inputs skipped because their outputs exist: the earlier row of the same
    source (its scores) with status ``skipped``, or a row without scores. ``journaled``:
    rows of a stopped run's journal (:mod:`.journal`), for inputs whose earlier row has
    no scores (outputs written after that run's last manifest)."""
    earlier = {r["source"]: r for r in previous if r.get("status") in ("written", "skipped")}
    for row in map(normalize, journaled):
        before = earlier.get(row["source"])
        if row["status"] == "written" and (before is None or math.isnan(before["uncertainty"])):
            earlier[row["source"]] = row
    rows = []
    for job in jobs:
        row = empty_row(job, "skipped")
        if job.source in earlier:
            before = earlier[job.source]
            for column in (*FLOAT_COLUMNS, *INT_COLUMNS, "worker"):
                row[column] = before[column]
        rows.append(row)
    return rows


# --- ranking and series --------------------------------------------------------------------


def image_folder_of(
    rows: Sequence[Mapping[str, Any]], out: str | os.PathLike | None = None
) -> Path | None:
    """The deepest folder holding every local source, or None (no local source). With
    ``out`` (the output folder of a ``--recursive`` run): the folder whose subfolders the
    masks repeat in ``out`` when every row with a mask agrees on it, so that an image's
    path below it is its mask's path below ``out``."""
    local = [r for r in rows if not is_uri(str(r["source"]))]
    if not local:
        return None
    roots = set()
    for row in local if out is not None else ():
        if not row.get("mask"):
            continue
        try:
            depth = len(Path(row["mask"]).relative_to(Path(out).resolve()).parent.parts)
        except ValueError:  # a mask outside ``out``: no layout to follow
            roots.add(None)
            continue
        roots.add(Path(row["source"]).parents[depth])
    if len(roots) == 1 and None not in roots:
        return roots.pop()
    return Path(os.path.commonpath([Path(r["source"]).parent for r in local]))


def ranking_rows(
    rows: Sequence[Mapping[str, Any]], image_folder: str | os.PathLike | None = None
) -> list[Any]:
    """:class:`~napari_focus.series.rank.RankRow` per manifest row, most doubtful first
    (``rank`` 1); rows without a score follow, failures come last. ``path`` is relative to
    ``image_folder`` (default: :func:`image_folder_of`) as in ``napari-focus rank``."""
    from ..series.rank import RankRow

    folder = Path(image_folder) if image_folder is not None else image_folder_of(rows)
    ranked = []
    for row in map(normalize, rows):
        source = row["source"]
        key = source
        if folder is not None and not is_uri(source):
            key = Path(os.path.relpath(source, folder)).as_posix()
        ranked.append(
            RankRow(
                path=key,
                name=row["name"],
                uncertainty=row["uncertainty"],
                seconds=row["seconds"],
                width=row["width"],
                height=row["height"],
                error=(row["error"] or "failed") if row["status"] == "failed" else None,
            )
        )

    def order(r: Any) -> tuple[int, float]:
        if r.error is not None:
            return (2, 0.0)
        return (1, 0.0) if math.isnan(r.uncertainty) else (0, -r.uncertainty)

    ranked.sort(key=order)
    for rank, row in enumerate(ranked, start=1):
        row.rank = rank
    return ranked


def write_ranking(
    rows: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    image_folder: str | os.PathLike | None = None,
) -> Path:
    """The manifest as a ``napari-focus rank`` CSV (see :func:`ranking_rows`)."""
    from ..series.rank import write_ranking_csv

    return write_ranking_csv(ranking_rows(rows, image_folder), path)


def read_ranking(path: str | os.PathLike) -> dict[str, int]:
    """``path`` column -> ``rank`` of a ranking CSV (``napari-focus rank`` or
    :func:`write_ranking`)."""
    with Path(path).open(encoding="utf-8-sig", errors=CSV_ERRORS, newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"rank", "path"} <= set(reader.fieldnames):
            raise ValueError(f"{path} is not a ranking CSV (needs 'rank' and 'path' columns)")
        return {row["path"]: int(row["rank"]) for row in reader if row["path"]}


def order_series(
    series_folder: str | os.PathLike,
    image_folder: str | os.PathLike,
    ranking: str | os.PathLike | Mapping[str, int],
    exclude: Iterable[str | os.PathLike] = (),
) -> Any:
    """Open (or create) the labeling series of ``image_folder`` kept in ``series_folder``
    and put its queue in the ranking's order: most doubtful first, images the ranking does
    not name last. A new series starts at its first image; a resumed one keeps its
    current image and statuses. Returns the :class:`~napari_focus.series.SeriesState`.

    Opened in the widget with *start masks* set to the prediction folder, each image
    starts from its predicted mask. The folders ``exclude`` (the prediction folder when
    it lies inside ``image_folder``) are not scanned for images.
    """
    from ..series.open_state import load_or_create
    from ..series.state import STATE_NAME

    ranks = read_ranking(ranking) if not isinstance(ranking, Mapping) else dict(ranking)
    fresh = not (Path(series_folder) / STATE_NAME).exists()
    nested = any("/" in key for key in ranks)
    state = load_or_create(series_folder, image_folder, recursive=nested, exclude=exclude)
    state.queue.order_by({key: -rank for key, rank in ranks.items()}, descending=True)
    if fresh and len(state.queue):
        state.queue.jump(0)
    state.save()
    return state


def check_writable(out: Path, manifest: Path) -> None:
    """Refuse, before any work, an output folder or manifest that cannot be written (a
    file in the way, permission denied, a read-only file system)."""
    from ..atomic import WriteError, check_writable_file, check_writable_folder

    try:
        check_writable_folder(out)
        check_writable_file(manifest)
    except WriteError as error:
        raise ValueError(f"{error}; choose another output folder or manifest file") from error


def earlier_rows(manifest: Path) -> list[dict[str, Any]]:
    """The rows of the manifest an earlier run left at ``manifest`` (none if there is no
    file). Anything else there is refused before any work: the run would replace it."""
    if not manifest.exists():
        return []
    try:
        if manifest.is_dir():
            raise ValueError("it is a folder")
        return read_manifest(manifest)
    except Exception as error:  # csv, pyarrow and the file system raise many kinds
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ValueError(
            f"cannot read {manifest} as the manifest of an earlier run "
            f"({reason or type(error).__name__}) and will not replace it; move it away or "
            "name another manifest file"
        ) from error
