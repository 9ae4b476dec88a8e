"""Several files of a split replaced as one transaction (a redo journal).

Every new file (image, masks, semantic file, both JSON files) is first written completely
under a temporary name beside its final name and flushed (:func:`napari_focus.atomic.
write_temp`). Then the journal ``<dataset folder>/.napari_focus-journal.json``, listing
each (temporary, final) pair and the files to delete (a sample taken out of the split),
is written atomically; that is the commit point. Then the temporary files are renamed
over the final ones, the files to delete are deleted, and the journal is deleted.

A kill before the journal exists leaves the split as it was (plus temporary files, which
the next export deletes); a kill after it is rolled forward by :func:`roll_forward` at
the start of the next export (each pending rename is done; a rename already done is
skipped). So the split always lists the old state or the new one, never a mixture.
Callers hold the root lock (:func:`.jsonstore.root_lock`) throughout.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from ..atomic import WriteError, atomic_write_bytes, fsync_dir, write_temp
from ..fs_text import is_utf8, json_text
from .errors import ExportError, ExportWriteError
from .provenance import PROVENANCE_NAME, append_line, holds_line

JOURNAL_NAME = ".napari_focus-journal.json"


class Transaction:
    """Stage files with :meth:`stage`, then :meth:`commit`; :meth:`abort` (or leaving a
    ``with`` block by an exception before the commit) deletes the staged files."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.staged: list[tuple[Path, Path]] = []
        self.deleted: list[Path] = []  # files that go once the renames are done
        self.committed = False

    def __enter__(self) -> Transaction:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.committed:
            self.abort()

    def stage(self, path: Path, data: bytes) -> None:
        self.stage_with(path, lambda tmp: Path(tmp).write_bytes(data))

    def stage_with(self, path: Path, write: Callable[[str], object]) -> None:
        try:
            tmp = write_temp(path, write)  # type: ignore[arg-type]
        except WriteError as exc:
            raise ExportWriteError(f"{exc}; the split is unchanged", exc.reason) from exc
        self.staged.append((tmp, path))

    def delete(self, path: Path) -> None:
        """Have the commit delete ``path`` (a file inside the dataset folder)."""
        self.deleted.append(path)

    def abort(self) -> None:
        for tmp, _ in self.staged:
            tmp.unlink(missing_ok=True)
        self.staged.clear()

    def commit(self, provenance: tuple[Path, str] | None = None) -> None:
        """Write the journal, do the renames, append the ``provenance`` line (``(root,
        line)``) to the root's log, delete the journal. The journal carries the line, so
        a killed export's sample never stays without its provenance.

        Raises:
            ExportError: the journal could not be written (nothing changed), or a rename
                or the provenance line failed after it was (the next export completes
                the transaction).
        """
        if not self.staged and not self.deleted:
            self.committed = True
            return
        journal = self.base / JOURNAL_NAME
        record: dict = {
            "renames": [
                [tmp.relative_to(self.base).as_posix(), final.relative_to(self.base).as_posix()]
                for tmp, final in self.staged
            ],
            "deletes": [path.relative_to(self.base).as_posix() for path in self.deleted],
        }
        if provenance is not None:
            record["provenance"] = provenance[1]
        try:
            atomic_write_bytes(journal, json.dumps(record).encode("utf-8"))
        except WriteError as exc:
            raise ExportWriteError(f"{exc}; the split is unchanged", exc.reason) from exc
        self.committed = True
        try:
            _apply(self.base, record["renames"], record["deletes"])
        except OSError as exc:
            raise self._unfinished(exc) from exc
        if provenance is not None:
            try:
                append_line(provenance[0], provenance[1])
            except OSError as exc:
                reason = WriteError(provenance[0] / PROVENANCE_NAME, exc).reason
                raise ExportWriteError(
                    f"the split was updated but its provenance line not written: "
                    f"{reason}; the next export writes it",
                    reason,
                ) from exc
        try:
            journal.unlink()
        except OSError as exc:
            raise self._unfinished(exc) from exc

    def _unfinished(self, exc: OSError) -> ExportWriteError:
        """A committed transaction this export could not finish (the next one does)."""
        return ExportWriteError(
            f"could not complete the update of {self.base}: {exc}; the next export "
            "completes it",
            exc.strerror,
        )


def _apply(base: Path, renames: list[list[str]], deletes: list[str]) -> None:
    folders = set()
    for tmp_rel, final_rel in renames:
        tmp, final = base / tmp_rel, base / final_rel
        if tmp.exists():
            os.replace(tmp, final)
        folders.add(final.parent)
    for rel in deletes:  # after the JSON files that no longer list them are in place
        (base / rel).unlink(missing_ok=True)
        folders.add((base / rel).parent)
    for folder in folders:
        fsync_dir(folder)


def roll_forward(base: Path, root: Path | None = None) -> list[str]:
    """Complete a transaction a killed export committed but did not finish, its
    provenance line (in ``root``'s log) included; returns a message per completed
    transaction (empty if there was none)."""
    journal = base / JOURNAL_NAME
    try:
        record = json.loads(journal.read_text(encoding="utf-8"))
        renames, deletes = record["renames"], record.get("deletes", [])
        valid = isinstance(deletes, list) and all(map(_inside, deletes)) and all(
            isinstance(pair, list) and len(pair) == 2 and all(map(_inside, pair))
            for pair in renames
        )
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ExportError(
            f"{journal} is damaged ({exc}); move it away and check the split"
        ) from exc
    if not valid:
        raise ExportError(f"{journal} is damaged; move it away and check the split")
    pending = [final for tmp, final in renames if (base / tmp).exists()]
    pending += [rel for rel in deletes if (base / rel).exists()]
    line = record.get("provenance") if root is not None else None
    line = _writable(line) if isinstance(line, str) and line.strip() else None
    try:
        _apply(base, renames, deletes)
        if line is not None and not holds_line(root, line):
            append_line(root, line if line.endswith("\n") else line + "\n")
            pending.append(PROVENANCE_NAME)
        journal.unlink()
    except OSError as exc:
        raise ExportError(f"could not complete an interrupted export in {base}: {exc}") from exc
    if not pending:
        return []
    return [
        f"completed an interrupted export in {base}: {len(pending)} file(s) put in place "
        "or removed "
        f"({', '.join(sorted({Path(p).name for p in pending})[:4])})"
    ]


def _inside(path: object) -> bool:
    """A journal's path: relative, inside the dataset folder."""
    return isinstance(path, str) and not Path(path).is_absolute() and ".." not in Path(path).parts


def _writable(line: str) -> str | None:
    """A journaled provenance line as UTF-8 can hold it: an earlier version journaled a
    file name's undecodable bytes (Linux) unescaped, a line no export could append."""
    if is_utf8(line):
        return line
    try:
        return json_text(json.loads(line))
    except ValueError:
        return None  # not a record: the transaction is completed without it
