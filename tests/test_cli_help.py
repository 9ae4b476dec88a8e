"""The command line speaks its own words: fast help for every option, exit codes, flags
(not Python keyword arguments) in its messages."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

import napari_focus
from napari_focus.cli import main

PACKAGE_PARENT = Path(napari_focus.__file__).resolve().parents[1]


def _run(*code: str) -> subprocess.CompletedProcess:
    env_path = str(PACKAGE_PARENT)
    return subprocess.run(
        [sys.executable, "-c", "\n".join(code)],
        env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_help_and_version_do_not_import_torch() -> None:
    """`napari-focus --help` stays fast: nothing on the CLI's import path loads PyTorch."""
    result = _run(
        "import sys, contextlib, io",
        "from napari_focus.cli import build_parser",
        "parser = build_parser()",
        "for argv in (['--help'], ['--version'], ['predict', '--help'], ['export', '--help'],",
        "             ['rank', '--help'], ['annotate', '--help'], ['doctor', '--help']):",
        "    out = io.StringIO()",
        "    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):",
        "        parser.parse_args(argv)",
        "    print(out.getvalue())",
        "print('TORCH LOADED' if 'torch' in sys.modules else 'TORCH NOT LOADED')",
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.rstrip().endswith("TORCH NOT LOADED")
    assert f"napari-focus {napari_focus.__version__}" in out
    assert "exit codes:" in out and "salient objects" in out and "camouflaged" in out
    assert "--on-exists {error,skip,rename,replace}" in out


def test_python_dash_m_runs_the_command_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "napari_focus", "predict", "--help"],
        env={"PYTHONPATH": str(PACKAGE_PARENT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: napari-focus predict")


def test_every_option_has_help() -> None:
    import argparse

    from napari_focus.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        for action in command._actions:
            assert action.help, f"napari-focus {name} {action.option_strings or action.dest}"


def test_export_conflict_is_reported_with_the_flag(tmp_path: Path) -> None:
    images, masks, root = tmp_path / "images", tmp_path / "masks", tmp_path / "datasets"
    images.mkdir()
    masks.mkdir()
    Image.fromarray(np.full((40, 48, 3), 120, np.uint8)).save(images / "cat.png")
    mask = np.zeros((40, 48), np.uint8)
    mask[10:30, 10:30] = 255
    Image.fromarray(mask).save(masks / "cat.png")
    args = ["export", str(images), str(masks), "--root", str(root), "--layout", "generic"]
    outputs = []
    for _ in range(2):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            outputs.append((main(args), err.getvalue()))
    assert outputs[0][0] == 0
    code, message = outputs[1]
    assert code == 1
    assert "already exists" in message and "use --on-exists skip, rename or replace" in message
    assert "on_exists=" not in message
