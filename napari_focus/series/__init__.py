"""Image-series labeling without a GUI: queue, resumable state, prefetch plan, ranking.

- :mod:`.queue`: :class:`ImageQueue` of :class:`QueueItem` with :class:`Status`.
- :mod:`.state`: :func:`load_or_create` / :class:`SeriesState`, the JSON state file
  ``<output>/.napari_focus_queue.json`` and autosaved edits in ``<output>/work/``,
  saved by several writers at once without loss (:mod:`.merge`).
- :mod:`.work_names`: :func:`work_name`, the file names of an item's files.
- :mod:`.autosave_writer`: autosaves written in order on a background thread.
- :mod:`.item_files`: an item's autosave and stored proposal, read ahead with its pixels.
- :mod:`.references`: :func:`find_reference_mask` (existing masks by file stem).
- :mod:`.prefetch`: :class:`PrefetchCache`, which proposals to compute ahead.
- :mod:`.rank`: :func:`rank_folder`, :func:`write_ranking_csv`, the ``rank`` command.
"""

from .open_state import load_or_create
from .prefetch import PrefetchCache, needs_proposal
from .queue import ImageQueue, QueueItem, Status, export_record, scan_folder
from .rank import RankRow, rank_folder, write_ranking_csv
from .rank_cli import add_rank_parser, run_rank
from .references import find_reference_mask, reference_mask_path
from .state import (
    STATE_NAME,
    VERSION,
    SeriesState,
    SeriesStateError,
    read_state_file,
)
from .work_names import work_name

__all__ = [
    "STATE_NAME",
    "VERSION",
    "ImageQueue",
    "PrefetchCache",
    "QueueItem",
    "RankRow",
    "SeriesState",
    "SeriesStateError",
    "Status",
    "add_rank_parser",
    "export_record",
    "find_reference_mask",
    "load_or_create",
    "needs_proposal",
    "rank_folder",
    "read_state_file",
    "reference_mask_path",
    "run_rank",
    "scan_folder",
    "work_name",
    "write_ranking_csv",
]
