"""Processes the plugin spawns (fine-tuning, the quality metrics) from a napari launch
script written without ``if __name__ == "__main__":``."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import napari_focus

PACKAGE_PARENT = Path(napari_focus.__file__).resolve().parents[1]

SCRIPT = """
import multiprocessing, os, sys
from napari_focus.spawning import main_script_not_rerun

with open(sys.argv[1], "a") as log:
    log.write(__name__ + "\\n")
context = multiprocessing.get_context("spawn")
child = context.Process(target=os.getpid)
if sys.argv[2] == "hidden":
    with main_script_not_rerun():
        child.start()
else:
    child.start()
child.join(60)
print("exit", child.exitcode, getattr(sys.modules["__main__"], "__file__", None) is not None)
"""


def test_an_unguarded_launch_script_is_not_run_again_by_the_children(tmp_path: Path) -> None:
    script = tmp_path / "launch_napari.py"
    script.write_text(textwrap.dedent(SCRIPT))
    env = {"PYTHONPATH": str(PACKAGE_PARENT), "PATH": "/usr/bin:/bin"}
    runs = {}
    for how in ("plain", "hidden"):
        log = tmp_path / f"{how}.log"
        done = subprocess.run(
            [sys.executable, str(script), str(log), how], capture_output=True, text=True,
            env=env, timeout=120, cwd=tmp_path,
        )  # fmt: skip
        runs[how] = (log.read_text().split(), done.stdout.split())
    # without it the child runs the script again as __mp_main__ (a second napari window)
    assert runs["plain"][0] == ["__main__", "__mp_main__"]
    assert runs["hidden"] == (["__main__"], ["exit", "0", "True"])  # __file__ given back
