"""Fault campaign of the dataset export, run by hand (it needs root for the tmpfs part).

Uses only ``export_sample``, so it also runs against an older checkout for a before/after
comparison (``PYTHONPATH=<checkout> python benchmarks/fault_campaign.py``):

* full disk: a 2 MiB tmpfs filled to leave N bytes free, then a ``replace``; counts
  the samples no longer listed (lost) over N = 0 .. 120 KiB;
* kill -9: a child SIGKILLs itself at a random file-system step (write, flush or
  rename) while exporting with random policies; after the next export every sample
  ever reported written must be listed and every JSON must parse;
* users' hidden files in the split folders that look like temp names: how many an
  export deletes;
* decompression bombs (PNG and TIFF) in an ``napari-focus export`` run: crashes, and
  pairs exported after them.

    python benchmarks/fault_campaign.py [--kills 30] [--disk-steps 60]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from napari_focus.datasets import ON_EXISTS, SampleExistsError, export_sample

LAYOUT, BASE = "duts-tr", "DUTS"
JSONS = ("DUTS_Train.json", "DUTS_Semantic_Train.json")


def sample(seed: int, h: int = 120, w: int = 160) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8), rng.random((h, w)) < 0.3


def listed(root: Path) -> set[str]:
    names = []
    for name in JSONS:
        data = json.loads((root / BASE / name).read_text(encoding="utf-8"))
        names.append({a["file_name"].split(".")[0] for a in data["annotations"]})
    return names[0] & names[1]


def full_disk(steps: int) -> tuple[int, int, int]:
    """(attempts that hit ENOSPC, samples lost, other exceptions)"""
    hits = lost = other = 0
    with tempfile.TemporaryDirectory() as scratch:
        mount = Path(scratch)
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", scratch],
                          capture_output=True).returncode:  # fmt: skip
            print("full disk: cannot mount a tmpfs here (needs root); skipped")
            return 0, 0, 0
        try:
            for step in range(steps):
                root = mount / "root"
                shutil.rmtree(root, ignore_errors=True)
                (mount / "filler").unlink(missing_ok=True)
                export_sample(root, LAYOUT, "s", *sample(0))
                free = shutil.disk_usage(mount).free
                leave = step * 2048
                with contextlib.suppress(OSError), open(mount / "filler", "wb") as handle:
                    handle.write(b"\0" * max(0, free - leave))
                try:
                    export_sample(root, LAYOUT, "s", *sample(1), on_exists="replace")
                except Exception as exc:
                    hits += "No space" in str(exc) or "disk is full" in str(exc)
                    other += not ("No space" in str(exc) or "disk is full" in str(exc))
                (mount / "filler").unlink(missing_ok=True)
                with contextlib.suppress(Exception):
                    export_sample(root, LAYOUT, "probe", *sample(2))  # the next export
                lost += "s" not in listed(root)
        finally:
            subprocess.run(["umount", scratch], check=False)
    return hits, lost, other


def _kill_at(k: int) -> None:
    calls = [0]

    def wrap(real):  # type: ignore[no-untyped-def]
        def step(*args, **kwargs):  # type: ignore[no-untyped-def]
            calls[0] += 1
            if calls[0] == k:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*args, **kwargs)

        return step

    os.replace, os.fsync, os.write = wrap(os.replace), wrap(os.fsync), wrap(os.write)


def _child(root: str, log: str, k: int, seed: int) -> None:
    rng = random.Random(seed)
    _kill_at(k)
    for step in range(6):
        name, policy = rng.choice(["s0", "s1", "s2"]), rng.choice(ON_EXISTS)
        try:
            result = export_sample(root, LAYOUT, name, *sample(seed * 100 + step),
                                   on_exists=policy)  # fmt: skip
        except SampleExistsError:
            continue
        if result.status != "skipped":
            with open(log, "a") as handle:
                handle.write(result.name + "\n")
                handle.flush()
                os.fsync(handle.fileno())
    os._exit(0)


def kills(count: int) -> tuple[int, int, int]:
    """(kills, rounds that lost a reported sample, JSON files that did not parse)"""
    fork = multiprocessing.get_context("fork")
    rng = random.Random(2026)
    killed = lost = broken = 0
    with tempfile.TemporaryDirectory() as scratch:
        root, log = Path(scratch) / "root", Path(scratch) / "log"
        export_sample(root, LAYOUT, "seed", *sample(99))
        log.write_text("")
        round_ = 0
        while killed < count:
            round_ += 1
            child = fork.Process(target=_child, args=(str(root), str(log), rng.randint(1, 45),
                                                      round_))  # fmt: skip
            child.start()
            child.join(60)
            killed += child.exitcode == -signal.SIGKILL
            for name in JSONS:
                try:
                    json.loads((root / BASE / name).read_text(encoding="utf-8"))
                except ValueError:
                    broken += 1
            export_sample(root, LAYOUT, "probe", *sample(7), on_exists="replace")
            lost += bool(set(log.read_text().split()) - listed(root))
    return killed, lost, broken


def hidden_files() -> tuple[int, int]:
    names = [".cat.original.jpg", ".DUTS_Train.20240101.json", ".x.abcdefgh.png",
             ".mask.backup_1.bmp", ".scan.12345678.jpg", ".notes.tmp"]  # fmt: skip
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / BASE / "DUTS-TR" / "DUTS-TR-Image"
        folder.mkdir(parents=True)
        for name in names:
            (folder / name).write_bytes(b"mine")
        export_sample(scratch, LAYOUT, "a", *sample(0))
        return sum(not (folder / n).exists() for n in names), len(names)


def bombs() -> tuple[int, int, int]:
    """(bomb files, exit status, pairs exported after the first bomb)"""
    from napari_focus.datasets.cli import add_export_parser

    side = int((2 * Image.MAX_IMAGE_PIXELS) ** 0.5) + 64
    with tempfile.TemporaryDirectory() as scratch:
        images, masks = Path(scratch) / "img", Path(scratch) / "msk"
        images.mkdir()
        masks.mkdir()
        Image.new("1", (side, side)).save(images / "a_bomb.png")
        tile = np.zeros((512, 512), np.uint8)
        tifffile.imwrite(images / "b_bomb.tif", (tile for _ in range((-(-side // 512)) ** 2)),
                         shape=(side, side), dtype=np.uint8, tile=(512, 512),
                         compression="zlib")  # fmt: skip
        for stem in ("a_bomb", "b_bomb", "c_ok", "d_ok"):
            image, mask = sample(len(stem) + ord(stem[0]))
            if stem.endswith("ok"):
                Image.fromarray(image).save(images / f"{stem}.png")
            Image.fromarray(mask.astype(np.uint8) * 255).save(masks / f"{stem}.png")
        parser = argparse.ArgumentParser()
        add_export_parser(parser.add_subparsers(dest="command"))
        args = parser.parse_args(["export", str(images), str(masks), "--root",
                                  str(Path(scratch) / "root"), "--layout", LAYOUT])  # fmt: skip
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
                code = args.func(args)
        except Exception as exc:
            code = f"crash ({type(exc).__name__})"
        return 2, code, out.getvalue().count("_ok.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=30)
    parser.add_argument("--disk-steps", type=int, default=60)
    args = parser.parse_args()
    hits, lost, other = full_disk(args.disk_steps)
    print(f"full disk: {args.disk_steps} replaces on a nearly full tmpfs, {hits} hit ENOSPC, "
          f"{other} other errors, {lost} samples lost")  # fmt: skip
    killed, lost, broken = kills(args.kills)
    print(f"kill -9: {killed} kills, {lost} rounds lost a reported sample, "
          f"{broken} unparseable JSON reads")
    deleted, total = hidden_files()
    print(f"hidden user files: {deleted} of {total} deleted by an export")
    count, code, after = bombs()
    print(f"bombs: {count} bomb files, export exit status {code}, {after} of 2 good pairs exported")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
