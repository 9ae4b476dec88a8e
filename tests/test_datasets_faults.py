"""Export under faults: full disk at every write, torn provenance, odd JSON already in a
split, orphaned samples, and a kill -9 campaign across all policies."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_datasets import build_official, check_split, make_sample

from napari_focus import atomic
from napari_focus.datasets import (
    ON_EXISTS,
    PROVENANCE_NAME,
    ExportError,
    ExportWriteError,
    SampleExistsError,
    export_sample,
    get_layout,
    read_log,
    read_records,
    recover_split,
    sample_paths,
)
from napari_focus.datasets import provenance as provenance_module
from napari_focus.datasets.export import dataset_dir

LAYOUT = "duts-tr"
SPEC = get_layout(LAYOUT)


def json_paths(root: Path) -> list[Path]:
    base = dataset_dir(root, SPEC)
    return [base / SPEC.instance_json, base / SPEC.semantic_json]


def listed(root: Path) -> dict[str, set[str]]:
    """Sample names in each JSON file (images and annotations alike)."""
    out = {}
    for path in json_paths(root):
        data = json.loads(path.read_text(encoding="utf-8"))
        out[path.name] = {
            x["file_name"].split(".")[0] for x in data["images"] + data["annotations"]
        }
    return out


def listed_in_both(root: Path) -> set[str]:
    a, b = listed(root).values()
    return a & b


def mask_of(root: Path, name: str) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(sample_paths(root, LAYOUT, name).mask)) > 0


# --- full disk ---------------------------------------------------------------------------


class DiskFull:
    """Raise ENOSPC at the k-th flush of a written file (every staged file, the journal
    and the provenance line are flushed), counting all of them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, k: int) -> None:
        self.k, self.calls = k, 0
        real_fsync_path, real_write = atomic.fsync_path, os.write

        def fsync_path(path):  # type: ignore[no-untyped-def]
            self._tick()
            return real_fsync_path(path)

        def write(fd, data):  # type: ignore[no-untyped-def]
            self._tick(lambda: real_write(fd, bytes(data)[: len(data) // 2]))
            return real_write(fd, data)

        monkeypatch.setattr(atomic, "fsync_path", fsync_path)
        monkeypatch.setattr(provenance_module.os, "write", write)

    def _tick(self, partial=None) -> None:  # type: ignore[no-untyped-def]
        self.calls += 1
        if self.calls == self.k:
            if partial is not None:
                partial()  # a short write, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")


def test_replace_on_a_full_disk_keeps_the_sample_listed(tmp_path: Path, monkeypatch) -> None:
    """ENOSPC at each write of a replace: the old sample stays listed, complete; once
    nothing fails, the new one is. (Before: the entries were removed first and lost.)"""
    build_official(tmp_path, LAYOUT)
    old_image, old_mask = make_sample(1)
    export_sample(tmp_path, LAYOUT, "s", old_image, old_mask)
    new_image, new_mask = make_sample(2)
    k = 0
    while True:
        k += 1
        with monkeypatch.context() as patch:
            fault = DiskFull(patch, k)
            try:
                export_sample(tmp_path, LAYOUT, "s", new_image, new_mask, on_exists="replace")
            except ExportWriteError as exc:
                error = str(exc)
                assert exc.reason == "the disk is full"
            else:
                assert fault.calls < k, "every write point was tried"
                break
        assert "disk is full" in error or "No space" in error, error
        assert "s" in listed_in_both(tmp_path)
        check_split(tmp_path, LAYOUT, strict=False)
        if "provenance" not in error:  # nothing committed: the old sample, complete
            np.testing.assert_array_equal(mask_of(tmp_path, "s"), old_mask > 0)
        assert len(read_log(tmp_path).skipped_lines) == 0  # never a torn line
    np.testing.assert_array_equal(mask_of(tmp_path, "s"), new_mask > 0)
    check_split(tmp_path, LAYOUT)
    assert k >= 8  # 5 staged files + journal + provenance (+ the final success)


def test_provenance_short_write_is_an_error_not_a_torn_line(tmp_path: Path, monkeypatch) -> None:
    image, mask = make_sample(0)
    export_sample(tmp_path, LAYOUT, "a", image, mask)
    before = (tmp_path / PROVENANCE_NAME).read_bytes()
    real_write = os.write

    def short_then_full(fd, data):  # type: ignore[no-untyped-def]
        real_write(fd, bytes(data)[:10])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(provenance_module.os, "write", short_then_full)
    with pytest.raises(ExportWriteError, match="provenance line not written") as info:
        export_sample(tmp_path, LAYOUT, "b", image, mask)
    assert info.value.reason == "the disk is full"
    assert (tmp_path / PROVENANCE_NAME).read_bytes() == before
    monkeypatch.undo()

    writes = []

    def in_pieces(fd, data):  # type: ignore[no-untyped-def]
        piece = bytes(data)[:7]
        writes.append(len(piece))
        return real_write(fd, piece)

    monkeypatch.setattr(provenance_module.os, "write", in_pieces)
    export_sample(tmp_path, LAYOUT, "c", image, mask)
    assert len(writes) > 10  # short writes are continued, not reported as done
    monkeypatch.undo()
    # b's line, kept in its journal, is written by the next export, before c's
    assert [r["name"] for r in read_records(tmp_path)] == ["a", "b", "c"]


def test_a_killed_export_s_provenance_line_is_written_once_by_the_next(
    tmp_path: Path, monkeypatch
) -> None:
    """Killed between its files and its provenance line, an export left a listed sample
    with no line; its journal now carries the line, which the next export writes, and
    never twice when the kill came after the line."""
    from napari_focus.datasets import journal

    image, mask = make_sample(0)

    def killed(*_args):
        raise SystemExit("killed")

    with monkeypatch.context() as patch:  # killed after the renames, before the line
        patch.setattr(journal, "append_line", killed)
        with pytest.raises(SystemExit):
            export_sample(tmp_path, LAYOUT, "a", image, mask)
    assert "a" in listed_in_both(tmp_path) and not (tmp_path / PROVENANCE_NAME).exists()
    export_sample(tmp_path, LAYOUT, "b", image, mask)
    assert [r["name"] for r in read_records(tmp_path)] == ["a", "b"]

    unlink = Path.unlink

    def killed_before_the_journal_went(self, *args, **kwargs):
        if self.name == journal.JOURNAL_NAME:
            raise SystemExit("killed")
        return unlink(self, *args, **kwargs)

    with monkeypatch.context() as patch:  # killed after the line, before the journal went
        patch.setattr(Path, "unlink", killed_before_the_journal_went)
        with pytest.raises(SystemExit):
            export_sample(tmp_path, LAYOUT, "c", image, mask)
    export_sample(tmp_path, LAYOUT, "d", image, mask)
    assert [r["name"] for r in read_records(tmp_path)] == ["a", "b", "c", "d"]
    check_split(tmp_path, LAYOUT)


def test_reader_skips_and_reports_a_torn_last_line(tmp_path: Path) -> None:
    image, mask = make_sample(0)
    export_sample(tmp_path, LAYOUT, "a", image, mask)
    with open(tmp_path / PROVENANCE_NAME, "ab") as handle:
        handle.write(b'{"time": "2026-01-01", "layout": "duts-tr", "na')
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable line\(s\) \(line 2\)"):
        records = read_records(tmp_path)
    assert [r["name"] for r in records] == ["a"]
    assert read_log(tmp_path).skipped_lines == [2]
    export_sample(tmp_path, LAYOUT, "b", image, mask)  # starts on a fresh line
    assert [r["name"] for r in read_log(tmp_path).records] == ["a", "b"]


# --- odd JSON already in a split -----------------------------------------------------------

ODD_JSON = {
    "null image": b'{"images": [null], "annotations": []}',
    "segments_info 5": b'{"images": [], "annotations": [{"file_name": "a.jpg", '
    b'"segments_info": 5}]}',
    "deep nesting": b'{"images": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "latin-1 byte": b'{"images": [], "annotations": [], "info": "caf\xe9"}',
    "file_name number": b'{"images": [{"id": 1, "file_name": 7}], "annotations": []}',
    "images object": b'{"images": {}, "annotations": []}',
}


@pytest.mark.parametrize("which", [0, 1], ids=["instance", "semantic"])
@pytest.mark.parametrize("content", list(ODD_JSON.values()), ids=list(ODD_JSON))
def test_odd_json_is_named_and_left_untouched(tmp_path: Path, content: bytes, which: int):
    path = json_paths(tmp_path)[which]
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    image, mask = make_sample(0)
    with pytest.raises(ExportError) as info:
        export_sample(tmp_path, LAYOUT, "a", image, mask)
    assert str(path) in str(info.value) and "not touching" in str(info.value)
    assert path.read_bytes() == content
    assert not sample_paths(tmp_path, LAYOUT, "a").image.exists()


# --- orphans and temp files ---------------------------------------------------------------


def _unlist(root: Path, name: str) -> None:
    """What an interrupted export of an earlier version left: files, no entries."""
    for path in json_paths(root):
        data = json.loads(path.read_text())
        for key in ("images", "annotations"):
            data[key] = [x for x in data[key] if not x["file_name"].startswith(name + ".")]
        path.write_text(json.dumps(data))


def test_orphaned_samples_are_relisted_or_removed_and_reported(tmp_path: Path) -> None:
    build_official(tmp_path, LAYOUT)
    for i, name in enumerate(["kept", "broken", "other"]):
        export_sample(tmp_path, LAYOUT, name, *make_sample(i))
    _unlist(tmp_path, "kept")
    _unlist(tmp_path, "broken")
    sample_paths(tmp_path, LAYOUT, "broken").mask.unlink()
    foreign = sample_paths(tmp_path, LAYOUT, "foreign")  # not made by napari-focus
    foreign.image.write_bytes(sample_paths(tmp_path, LAYOUT, "kept").image.read_bytes())
    result = export_sample(tmp_path, LAYOUT, "new", *make_sample(9))
    messages = " | ".join(result.recovered)
    assert "re-listed orphaned sample 'kept'" in messages
    assert "removed incomplete orphaned sample 'broken'" in messages and "DUTS-TR-Mask" in messages
    assert "foreign" not in messages and foreign.image.exists()
    assert {"kept", "other", "new"} <= listed_in_both(tmp_path)
    assert not any(p.exists() for p in sample_paths(tmp_path, LAYOUT, "broken").all())
    foreign.image.unlink()
    check_split(tmp_path, LAYOUT)
    assert recover_split(tmp_path, LAYOUT) == []


def test_users_hidden_files_survive_the_temp_clean_up(tmp_path: Path) -> None:
    names = [".cat.original.jpg", ".DUTS_Train.20240101.json", ".x.abcdefgh.png"]
    base = dataset_dir(tmp_path, SPEC)
    folders = [base, base / SPEC.image_dir, base / SPEC.mask_dir]
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            (folder / name).write_bytes(b"mine")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    name = f"{atomic.TEMP_PREFIX}{atomic.host_id()}-{int(gone.stdout)}-0123abcd-s.jpg"
    stale = base / SPEC.image_dir / name
    stale.write_bytes(b"half")
    result = export_sample(tmp_path, LAYOUT, "s", *make_sample(0))
    assert not stale.exists() and "temporary file" in " ".join(result.recovered)
    for folder in folders:
        assert all((folder / name).read_bytes() == b"mine" for name in names)


def test_error_policy_on_a_listed_sample(tmp_path: Path) -> None:
    export_sample(tmp_path, LAYOUT, "s", *make_sample(0))
    with pytest.raises(SampleExistsError):
        export_sample(tmp_path, LAYOUT, "s", *make_sample(1))


# --- kill -9 campaign ------------------------------------------------------------------------

_fork = multiprocessing.get_context("fork")
NAMES = ["s0", "s1", "s2"]


def _kill_at(k: int) -> None:
    """SIGKILL this process at the k-th file-system step (write, flush or rename)."""
    calls = [0]

    def wrap(real):  # type: ignore[no-untyped-def]
        def step(*args, **kwargs):  # type: ignore[no-untyped-def]
            calls[0] += 1
            if calls[0] == k:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*args, **kwargs)

        return step

    os.replace = wrap(os.replace)  # type: ignore[assignment]
    os.fsync = wrap(os.fsync)  # type: ignore[assignment]
    os.write = wrap(os.write)  # type: ignore[assignment]


def _campaign_child(root: str, log: str, k: int, seed: int) -> None:
    rng = random.Random(seed)
    _kill_at(k)
    for step in range(6):
        name, policy = rng.choice(NAMES), rng.choice(ON_EXISTS)
        image, mask = make_sample(seed * 100 + step)
        try:
            result = export_sample(root, LAYOUT, name, image, mask, on_exists=policy)
        except SampleExistsError:
            continue
        if result.status != "skipped":
            with open(log, "a") as handle:  # reported written: must stay listed
                handle.write(result.name + "\n")
                handle.flush()
                os.fsync(handle.fileno())
    sys.stdout.flush()
    os._exit(0)


def test_kill_campaign_all_policies(tmp_path: Path) -> None:
    root, log = tmp_path / "root", tmp_path / "reported.txt"
    build_official(root, LAYOUT)
    log.write_text("")
    rng = random.Random(2026)
    kills = 0
    for round_ in range(30):
        k = rng.randint(1, 45)
        child = _fork.Process(target=_campaign_child, args=(str(root), str(log), k, round_))
        child.start()
        child.join(60)
        assert child.exitcode in (0, -signal.SIGKILL), child.exitcode
        kills += child.exitcode == -signal.SIGKILL
        for path in json_paths(root):  # every JSON parses at every moment
            json.loads(path.read_text(encoding="utf-8"))
        check_split(root, LAYOUT, strict=False)  # never a listed sample with torn files
        recover_split(root, LAYOUT)  # what the next export does first
        reported = set(log.read_text().split())
        missing = reported - listed_in_both(root)
        assert not missing, f"round {round_}, kill at step {k}: lost {missing}"
        check_split(root, LAYOUT)
    assert kills >= 20, kills
