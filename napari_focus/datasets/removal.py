"""Taking one sample back out of a split: an image accepted, then rejected, is no longer
trained on.

Under the root's lock, as an export: the split is put in order first (:mod:`.recovery`);
then, as one journaled transaction (:mod:`.journal`), the JSON files without the
sample's entries are swapped in and its files (image, masks, semantic file) are deleted.
A kill after the commit is completed by the next export. The provenance log gets a
``removed`` line, so that recovery never re-lists the sample from files left behind.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .export import dataset_dir, put_in_order, sample_paths
from .journal import Transaction
from .jsonstore import root_lock
from .layouts import get_layout
from .provenance import record_line
from .splitjson import dumps

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RemovedSample:
    """What :func:`remove_sample` took out: the files deleted, and whether the JSON
    files listed the sample (both empty or False when the split did not hold it)."""

    layout: str
    name: str
    files: tuple[Path, ...]
    listed: bool

    @property
    def removed(self) -> bool:
        return bool(self.files) or self.listed


def remove_sample(root: str | Path, layout: str, name: str) -> RemovedSample:
    """Remove the sample ``name`` from the ``layout`` split under ``root``: its JSON
    entries and its files. A sample the split does not hold is no error (nothing is
    done: ``removed`` is False).

    Raises:
        ExportError: the split cannot be read (a damaged JSON file) or written (its
            :class:`~.errors.ExportWriteError`); the split is then unchanged.
    """
    spec = get_layout(layout)
    root = Path(root)
    base = dataset_dir(root, spec)
    with root_lock(root):
        store, messages = put_in_order(root, spec)
        for message in messages:
            log.info("%s", message)
        listed = store.has(name)
        name = (store.spelling(name) or name) if listed else name  # as the JSON spells it
        files = tuple(path for path in sample_paths(root, spec, name).all() if path.is_file())
        if not files and not listed:
            return RemovedSample(spec.name, name, (), False)
        with Transaction(base) as tx:
            for path, data in store.without(name):
                tx.stage(path, dumps(data))
            for path in files:
                tx.delete(path)
            record = {
                "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "layout": spec.name,
                "name": name,
                "status": "removed",
                "files": [path.relative_to(root).as_posix() for path in files],
            }
            tx.commit(provenance=(root, record_line(record)))
    return RemovedSample(spec.name, name, files, listed)
