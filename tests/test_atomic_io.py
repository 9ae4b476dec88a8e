"""Atomic writes (package temp names, umask modes, full disk), pixel limits of the
readers, and the output checks done before any work."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_focus import atomic
from napari_focus.atomic import (
    STALE_AFTER_S,
    TEMP_PREFIX,
    WriteError,
    atomic_write,
    atomic_write_bytes,
    check_writable_file,
    check_writable_folder,
    host_id,
    is_temp_name,
    parse_temp_name,
    remove_own_temps,
    remove_stale_temps,
    temp_final_name,
    temp_path,
)
from napari_focus.io import ImageTooLargeError, pixel_limit, read_image, write_mask

USER_HIDDEN_FILES = [  # names the old clean-up pattern took for temp files
    ".cat.original.jpg",
    ".DUTS_Train.20240101.json",
    ".scan.abcdefgh.png",
    ".mask.backup_1.bmp",
    ".notes.tmp",
    ".x.12345678.json",
]


@contextlib.contextmanager
def umask(value: int) -> Iterator[None]:
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


# --- atomic writes -------------------------------------------------------------------------


def test_temp_names_are_recognisable_and_keep_the_extension(tmp_path: Path) -> None:
    tmp = temp_path(tmp_path / "mask.png")
    assert tmp.parent == tmp_path and tmp.suffix == ".png"
    assert tmp.name.startswith(TEMP_PREFIX) and is_temp_name(tmp.name)
    parsed = parse_temp_name(tmp.name)
    assert parsed is not None and parsed.ours
    assert (parsed.host, parsed.pid, parsed.final) == (host_id(), os.getpid(), "mask.png")
    long_name = "é" * 120 + ".tiff"
    long = temp_path(tmp_path / long_name)
    assert len(long.name.encode()) <= 240 and long.suffix == ".tiff"
    assert parse_temp_name(long.name).final == temp_final_name(long_name) != long_name
    assert not any(is_temp_name(n) for n in USER_HIDDEN_FILES)
    legacy = parse_temp_name(f"{TEMP_PREFIX}4242-0123abcd-mask-1.png")  # older versions
    assert legacy is not None and (legacy.host, legacy.pid, legacy.final) == (
        None,
        4242,
        "mask-1.png",
    )
    assert not legacy.ours


def _dead_pid() -> int:
    """The id of a process that has ended (on this machine)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return int(done.stdout)


def test_host_id_tells_machines_apart() -> None:
    other = subprocess.run(
        [sys.executable, "-c", "import socket; socket.gethostname = lambda: 'node-b.cluster'; "
         "from napari_focus.atomic import host_id; print(host_id())"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    mine = host_id()
    assert len(mine) == 8 and set(mine) <= set("abcdefghijklmnopqrstuvwxyz234567")
    assert other.stdout.strip() != mine


def test_clean_up_only_touches_package_temps(tmp_path: Path) -> None:
    for name in USER_HIDDEN_FILES:
        (tmp_path / name).write_bytes(b"user data")
    stale = tmp_path / f"{TEMP_PREFIX}{host_id()}-{_dead_pid()}-0123abcd-a.png"
    stale.write_bytes(b"half")
    mine = temp_path(tmp_path / "b.png")
    mine.write_bytes(b"being written")
    assert remove_stale_temps(tmp_path) == [stale]
    assert mine.exists()  # this process's file may still be in progress
    assert remove_own_temps(tmp_path) == [mine]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(USER_HIDDEN_FILES)


def test_clean_up_on_shared_storage_leaves_other_machines_files_until_stale(tmp_path):
    """A process id says nothing about another machine: a temporary file a node of a
    cluster is writing into a shared folder is kept until it is STALE_AFTER_S old."""
    other = "abcdefgh" if host_id() != "abcdefgh" else "bcdefghi"
    dead = _dead_pid()  # no such process here; on the other node it may be running
    old = time.time() - STALE_AFTER_S - 60

    def temp(host: str | None, pid: int, name: str, *, aged: bool = False) -> Path:
        head = f"{host}-" if host else ""
        path = tmp_path / f"{TEMP_PREFIX}{head}{pid}-0123abcd-{name}"
        path.write_bytes(b"half")
        if aged:
            os.utime(path, (old, old))
        return path

    in_flight = temp(other, dead, "a.png")
    same_pid_elsewhere = temp(other, os.getpid(), "b.png")
    legacy = temp(None, dead, "c.png")  # an older version's name: host unknown
    killed_here = temp(host_id(), dead, "d.png")
    stale_elsewhere = temp(other, dead, "e.png", aged=True)
    stale_legacy = temp(None, dead, "f.png", aged=True)

    assert remove_own_temps(tmp_path) == []
    removed = remove_stale_temps(tmp_path)
    assert sorted(removed) == sorted([killed_here, stale_elsewhere, stale_legacy])
    assert in_flight.exists() and same_pid_elsewhere.exists() and legacy.exists()
    assert sorted(remove_stale_temps(tmp_path, everything=True)) == sorted(
        [in_flight, same_pid_elsewhere, legacy]
    )


@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_honour_the_umask(tmp_path: Path, mask: int, expected: int) -> None:
    from napari_focus.checkpoints import save_inference_checkpoint
    from napari_focus.datasets import export_sample
    from napari_focus.io import write_probability
    from napari_focus.quality import write_csv
    from napari_focus.series import load_or_create

    torch = pytest.importorskip("torch")
    image = np.zeros((40, 60, 3), np.uint8)
    with umask(mask):
        written = [
            write_mask(tmp_path / "m.png", np.ones((40, 60))),
            write_mask(tmp_path / "m.tif", np.ones((40, 60))),
            write_probability(tmp_path / "p.tif", np.zeros((40, 60))),
            write_csv([{"name": "a"}], tmp_path / "r.csv"),
            save_inference_checkpoint(
                {"w": torch.zeros(2)}, tmp_path / "w.safetensors", architecture={}, task="sod"
            ),
        ]
        result = export_sample(tmp_path / "ds", "duts-tr", "a", image, np.ones((40, 60)))
        written += [*result.files, result.instance_json, result.semantic_json, result.provenance]
        (tmp_path / "imgs").mkdir()
        Image.fromarray(image).save(tmp_path / "imgs" / "x.png")
        state = load_or_create(tmp_path / "series", tmp_path / "imgs")
        state.save()  # a rewrite: the previous file becomes the backup
        written += [state.state_path, state.backup_path, state.autosave("x.png", image[..., 0])]
    for path in written:
        assert mode(Path(path)) == expected, path


def test_a_file_replaced_keeps_its_permissions(tmp_path: Path) -> None:
    """A colleague with umask 077 exports into a shared split: the split's index files
    keep the mode they had (as ``open(path, "w")`` keeps it); the new sample follows the
    colleague's umask."""
    from napari_focus.atomic import atomic_write_text
    from napari_focus.datasets import export_sample

    image = np.zeros((40, 60, 3), np.uint8)
    with umask(0o022):
        first = export_sample(tmp_path / "ds", "duts-tr", "a", image, np.ones((40, 60)))
    with umask(0o077):
        second = export_sample(tmp_path / "ds", "duts-tr", "b", image, np.ones((40, 60)))
    assert second.instance_json == first.instance_json
    for shared in (second.instance_json, second.semantic_json, second.provenance):
        assert mode(Path(shared)) == 0o644, shared
    assert all(mode(Path(path)) == 0o600 for path in second.files)
    read_only = tmp_path / "notes.txt"
    read_only.write_text("old")
    read_only.chmod(0o444)
    atomic_write_text(read_only, "new")  # written first, then given the old mode
    assert read_only.read_text() == "new" and mode(read_only) == 0o444


def test_full_disk_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = atomic_write_bytes(tmp_path / "a.json", b"old")

    def fill(tmp: str) -> None:
        Path(tmp).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(WriteError, match="the disk is full") as info:
        atomic_write(target, fill)
    assert isinstance(info.value, OSError) and info.value.errno == errno.ENOSPC
    assert info.value.path == target and str(target) in str(info.value)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_a_failed_rename_leaves_no_temp(tmp_path: Path, monkeypatch) -> None:
    def refuse(src, dst):  # type: ignore[no-untyped-def]
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(atomic.os, "replace", refuse)
    with pytest.raises(WriteError, match="read-only"):
        atomic_write_bytes(tmp_path / "a.bin", b"x")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs (a real full disk); skipped where mounting is not allowed."""
    where = tmp_path / "tmpfs"
    where.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(where)],
                          capture_output=True)  # fmt: skip
    if proc.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=False)


def test_real_full_disk(tiny_tmpfs: Path) -> None:
    mask = np.random.default_rng(0).integers(0, 2, (600, 600))
    first = write_mask(tiny_tmpfs / "keep.png", np.ones((8, 8)))
    with pytest.raises(WriteError, match="the disk is full"):
        for i in range(100):
            write_mask(tiny_tmpfs / f"m{i}.png", mask)
            write_mask(tiny_tmpfs / "keep.png", mask)
    assert not [p for p in tiny_tmpfs.iterdir() if is_temp_name(p.name)]
    assert read_image(first).shape in ((8, 8), (600, 600))  # the old or the new, complete



def test_checkpoints_on_a_real_full_disk(tiny_tmpfs: Path) -> None:
    """torch.save and safetensors report a full disk as their own errors (RuntimeError,
    SafetensorError): the training state and the weights say it in words all the same."""
    import torch

    from napari_focus.checkpoints import save_inference_checkpoint
    from napari_focus.training.state import RunState, save_state

    big = {"w": torch.ones(200_000)}  # 800 kB: more than the disk holds
    with pytest.raises(WriteError, match=r"resume\.pt: the disk is full"):
        save_state(tiny_tmpfs / "run", run=RunState(), trainable=big, optimizer={}, scaler={},
                   identity={})  # fmt: skip
    with pytest.raises(WriteError, match=r"w\.safetensors: the disk is full"):
        save_inference_checkpoint(big, tiny_tmpfs / "w.safetensors", architecture={},
                                  task="sod", dtype=torch.float32)  # fmt: skip
    assert not [p for p in tiny_tmpfs.rglob("*") if p.is_file()]

# --- checks before work ------------------------------------------------------------------


def test_output_checks(tmp_path: Path) -> None:
    (tmp_path / "file.txt").write_text("x")
    assert check_writable_folder(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # checked, nothing created
    check_writable_file(tmp_path / "out.csv")
    with pytest.raises(WriteError, match="is a file, not a folder"):
        check_writable_folder(tmp_path / "file.txt" / "sub")
    with pytest.raises(WriteError, match="is a folder"):
        check_writable_file(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_output_check_in_a_special_file_system() -> None:
    with pytest.raises(WriteError, match="/proc does not take new files or folders"):
        check_writable_folder("/proc/napari-focus-out")


# --- pixel limits ----------------------------------------------------------------------------


def png_bomb(path: Path, side: int) -> Path:
    Image.new("1", (side, side)).save(path)
    return path


def tiff_bomb(path: Path, side: int) -> Path:
    tile = np.zeros((512, 512), np.uint8)
    count = (-(-side // 512)) ** 2
    tifffile.imwrite(path, (tile for _ in range(count)), shape=(side, side), dtype=np.uint8,
                     tile=(512, 512), compression="zlib")  # fmt: skip
    return path


def test_png_and_tiff_bombs_are_refused_before_decoding(tmp_path: Path) -> None:
    limit = pixel_limit()
    assert limit == Image.MAX_IMAGE_PIXELS
    side = int((2 * limit) ** 0.5) + 64  # above PIL's own error threshold
    tiff = tiff_bomb(tmp_path / "bomb.tif", side)
    assert tiff.stat().st_size < 2_000_000
    for path in (png_bomb(tmp_path / "bomb.png", side), tiff):
        with pytest.raises(ImageTooLargeError, match="NAPARI_FOCUS_MAX_PIXELS") as info:
            read_image(path)
        assert str(info.value).startswith(f"{path.name}: ")
    between = png_bomb(tmp_path / "between.png", int(limit**0.5) + 64)  # PIL only warns
    with pytest.raises(ImageTooLargeError, match="above the limit"):
        read_image(between)


def test_the_limit_is_configurable(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "a.tif"
    tifffile.imwrite(path, np.zeros((40, 60), np.uint8))
    Image.fromarray(np.zeros((40, 60), np.uint8)).save(tmp_path / "a.png")
    monkeypatch.setenv("NAPARI_FOCUS_MAX_PIXELS", "1000")
    for name in ("a.tif", "a.png"):
        with pytest.raises(ImageTooLargeError, match="2,400 pixels"):
            read_image(tmp_path / name)
        assert read_image(tmp_path / name, max_pixels=None).shape == (40, 60)
    monkeypatch.setenv("NAPARI_FOCUS_MAX_PIXELS", "0")
    assert pixel_limit() is None
    monkeypatch.setenv("NAPARI_FOCUS_MAX_PIXELS", "-5")
    with pytest.raises(ValueError, match="is below 0"):
        pixel_limit()
    monkeypatch.setenv("NAPARI_FOCUS_MAX_PIXELS", "lots")
    with pytest.raises(ValueError, match="NAPARI_FOCUS_MAX_PIXELS"):
        pixel_limit()


def test_a_raised_limit_is_not_undone_by_pils_own_check(tmp_path: Path, monkeypatch) -> None:
    """NAPARI_FOCUS_MAX_PIXELS above twice PIL's limit (where PIL refuses by itself): the
    file is read as asked (here a forged header with no pixels, so it fails as a file
    that ends early, not as one too large)."""
    import struct
    import zlib

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after
    side = int((2 * Image.MAX_IMAGE_PIXELS) ** 0.5) + 64
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data)
        )

    path = tmp_path / "large.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    with pytest.raises(ImageTooLargeError, match="Set NAPARI_FOCUS_MAX_PIXELS"):
        read_image(path)
    monkeypatch.setenv("NAPARI_FOCUS_MAX_PIXELS", "0")
    with pytest.raises(OSError) as info:
        read_image(path)
    assert not isinstance(info.value, ImageTooLargeError), info.value
    assert "MAX_IMAGE_PIXELS" not in str(info.value)


def test_tiff_reading_is_unchanged(tmp_path: Path) -> None:
    data = np.arange(40 * 60 * 3, dtype=np.uint16).reshape(1, 40, 60, 3)
    tifffile.imwrite(tmp_path / "a.tif", data)
    np.testing.assert_array_equal(read_image(tmp_path / "a.tif"), data[0])


@pytest.mark.parametrize("samples", [3, 4])
def test_a_tiff_with_its_colours_in_separate_planes_is_one_colour_image(tmp_path, samples):
    """PlanarConfiguration 2 (RRR..GGG..BBB): an RGB(A) image a photo viewer shows as
    such, read as (H, W, samples), as for the usual interleaved storage (it was read as
    `samples` gray planes and refused)."""
    pixels = np.random.default_rng(0).integers(0, 255, (40, 50, samples), dtype=np.uint8)
    options = {"extrasamples": ["unassalpha"]} if samples == 4 else {}
    tifffile.imwrite(tmp_path / "planar.tif", np.moveaxis(pixels, -1, 0), photometric="rgb",
                     planarconfig="separate", **options)  # fmt: skip
    tifffile.imwrite(tmp_path / "contig.tif", pixels, photometric="rgb", **options)
    for name in ("planar.tif", "contig.tif"):
        np.testing.assert_array_equal(read_image(tmp_path / name), pixels)
    stack = np.zeros((5, 40, 50), np.uint8)  # planes of a stack stay planes
    tifffile.imwrite(tmp_path / "stack.tif", stack)
    assert read_image(tmp_path / "stack.tif").shape == (5, 40, 50)


@pytest.mark.parametrize("hard_links", [True, False])
def test_a_write_that_must_not_replace_keeps_what_is_there(tmp_path, monkeypatch, hard_links):
    from napari_focus.atomic import atomic_write_text, temp_files

    if not hard_links:  # e.g. some network shares: the check-then-rename path

        def no_links(source, target):
            raise OSError(errno.EPERM, "Operation not permitted")

        monkeypatch.setattr(os, "link", no_links)
    target = tmp_path / "weights.safetensors"
    write = lambda tmp: Path(tmp).write_text("new")  # noqa: E731
    atomic.atomic_write(target, write, replace=False)
    assert target.read_text() == "new"
    atomic_write_text(target, "the user's")
    with pytest.raises(FileExistsError):
        atomic.atomic_write(target, lambda tmp: Path(tmp).write_text("newer"), replace=False)
    assert target.read_text() == "the user's"
    assert temp_files(tmp_path) == []


def test_a_file_set_aside_never_replaces_one_set_aside_before(tmp_path):
    from napari_focus.atomic import set_aside

    names = []
    for content in (b"first", b"second", b"third"):
        (tmp_path / "a.png").write_bytes(content)
        names.append(set_aside(tmp_path / "a.png", tmp_path / "a.stale-20261124-120000.png"))
    assert [p.name for p in names] == [
        "a.stale-20261124-120000.png", "a.stale-20261124-120000-2.png",
        "a.stale-20261124-120000-3.png",
    ]  # fmt: skip
    assert [p.read_bytes() for p in names] == [b"first", b"second", b"third"]
    assert not (tmp_path / "a.png").exists()
    state = tmp_path / "state.json"
    for _ in range(2):
        state.write_text("{")
        aside = set_aside(state, tmp_path / "state.json.bad-20261124-120000")
    assert aside.name == "state.json.bad-20261124-120000-2"
