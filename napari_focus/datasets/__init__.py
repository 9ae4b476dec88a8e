"""Export corrected masks into the folder layouts FOCUS training reads.

``export_sample(root, layout, name, image, mask, on_exists=..., provenance=...)`` writes
one sample (image, 0/255 mask, ``annotations_detectron2`` semantic file, COCO instance and
semantic JSON entries) atomically under a lock and logs a provenance line; see
:mod:`.layouts` for the exact folders and formats of each layout.
``remove_sample(root, layout, name)`` takes one back out (files and JSON entries).
"""

from .errors import ExportError, ExportWriteError, SampleExistsError, UnusableNameError
from .export import (
    ON_EXISTS,
    ExportResult,
    SamplePaths,
    export_sample,
    recover_split,
    sample_paths,
)
from .layouts import (
    LAYOUT_SPECS,
    LAYOUTS,
    Layout,
    get_layout,
    layout_for_task,
    root_of_export,
)
from .names import fitting_name, sanitize_name
from .provenance import PROVENANCE_NAME, Provenance, ProvenanceLog, read_log, read_records
from .removal import RemovedSample, remove_sample

__all__ = [
    "LAYOUTS",
    "LAYOUT_SPECS",
    "ON_EXISTS",
    "PROVENANCE_NAME",
    "ExportError",
    "ExportResult",
    "ExportWriteError",
    "Layout",
    "Provenance",
    "ProvenanceLog",
    "RemovedSample",
    "SampleExistsError",
    "SamplePaths",
    "UnusableNameError",
    "export_sample",
    "fitting_name",
    "get_layout",
    "layout_for_task",
    "read_log",
    "read_records",
    "recover_split",
    "remove_sample",
    "root_of_export",
    "sample_paths",
    "sanitize_name",
]
