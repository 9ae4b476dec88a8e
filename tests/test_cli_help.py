"""The command line speaks its own words: fast help for every option, exit codes, flags
(not Python keyword arguments) in its messages."""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
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


def test_export_refuses_a_task_that_is_not_the_layouts(tmp_path: Path) -> None:
    """--layout cod10k-train --task sod would record 'sod' for samples of a COD split."""
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    args = ["export", str(images), str(masks), "--root", str(tmp_path / "datasets"),
            "--layout", "cod10k-train", "--task", "sod"]  # fmt: skip
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(args)
    assert code == 2
    assert err.getvalue().strip() == (
        "napari-focus: --task sod does not fit --layout cod10k-train, a cod split (the task "
        "is recorded with each sample); leave --task out, or give the sod split's layout "
        "(duts-tr)"
    )
    assert not (tmp_path / "datasets").exists()


def test_every_help_fits_80_columns_and_keeps_names_whole(monkeypatch) -> None:
    """Read in an 80-column terminal: no line wider, no name or flag split at its hyphen
    (`camo-` / `train`), every layout and preset named whole."""
    import argparse

    from napari_focus.cli import build_parser
    from napari_focus.datasets.layouts import LAYOUTS
    from napari_focus.training.cli import PRESET_NAMES

    monkeypatch.setenv("COLUMNS", "80")
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {"": parser.format_help()}
    helps.update({name: command.format_help() for name, command in sub.choices.items()})
    for name, text in helps.items():
        lines = text.splitlines()
        assert not [line for line in lines if len(line) > 80], (name, text)
        assert not [line for line in lines if re.search(r"\w-$", line)], (name, text)
    for layout in LAYOUTS:
        assert layout in helps["export"] and layout in helps["train"]
    assert all(preset in helps["train"] for preset in PRESET_NAMES)
    assert "130" in helps["predict"] and "--resume" in helps["train"]


def test_readme_synopsis_lists_every_option_of_every_command() -> None:
    """The README's `## Command line` block and `--help` name the same options."""
    import argparse

    from napari_focus.cli import build_parser

    readme = PACKAGE_PARENT / "README.md"
    if not readme.is_file():
        pytest.skip("needs the source checkout's README.md")
    section = readme.read_text(encoding="utf-8").split("## Command line", 1)[1]
    block = section.split("```text", 1)[1].split("```", 1)[0]
    in_readme: dict[str, set[str]] = {"": set()}
    command = ""
    for line in block.splitlines():
        if line.startswith("napari-focus "):
            command = line.split()[1] if not line.split()[1].startswith("-") else ""
            in_readme.setdefault(command, set())
        in_readme[command] |= set(re.findall(r"--[a-z][a-z-]*", line))
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(in_readme) - {""} == set(sub.choices)
    for name, command_parser in sub.choices.items():
        options = {
            flag
            for action in command_parser._actions
            for flag in action.option_strings
            if flag.startswith("--") and flag != "--help"
        }
        assert in_readme[name] == options, name


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["predict", "photo.png", "--task", "sod", "--overwite"],
         "napari-focus predict: error: unrecognized arguments: --overwite "
         "(did you mean --overwrite?)"),
        (["doctor", "--bild"], "napari-focus doctor: error: unrecognized arguments: --bild "
         "(did you mean --build?)"),
        (["rank", "photos", "--task", "sod", "--report-dir", "r"],
         "(did you mean --report?)"),
        (["predict", "photo.png", "--task", "sod", "-z"],
         "(`napari-focus predict --help` lists the options)"),
    ],
)  # fmt: skip
def test_a_mistyped_option_is_named_with_the_command_and_the_option_meant(argv, said) -> None:
    """The command's usage, not the top-level one, and the closest option it has."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    message = err.getvalue()
    assert said in message
    assert message.startswith(f"usage: napari-focus {argv[0]} ")
