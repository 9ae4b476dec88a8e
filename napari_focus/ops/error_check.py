"""Does an error raised inside a compiled kernel reach Python? Checked once per build,
in a separate process, because the failure mode is a crash.

Some compiler wrappers (a GCC built elsewhere, called through ``-B`` with that
GCC's support libraries) link an unwinder that cannot pass C++ exceptions into
libtorch. A kernel built with one works on good inputs, but any input its
checks refuse kills the process instead of raising ``RuntimeError``. The
answer is kept in the build's marker file, so each build is checked once.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
from pathlib import Path

from ..atomic import atomic_write_text

logger = logging.getLogger("napari_focus.ops.build")

# Loads the library in a fresh interpreter and feeds the op an input its checks refuse.
_ERROR_PROBE = """
import sys
import torch
torch.ops.load_library(sys.argv[1])
op = getattr(torch.ops, sys.argv[2]).ms_deform_attn
value = torch.zeros(1, 2, 1, 8)  # 2 positions, but the one level below needs 16
shapes = torch.tensor([[4, 4]])
starts = torch.zeros(1, dtype=torch.int64)
try:
    op(value, shapes, starts, torch.zeros(1, 1, 1, 1, 1, 2), torch.ones(1, 1, 1, 1, 1))
except RuntimeError:
    sys.exit(0)
sys.exit(3)
"""


class ProbeNotRunError(RuntimeError):
    """The separate process could not run or finish; it says nothing about the kernel."""


def errors_reach_python(library: Path, namespace: str, timeout: float = 300) -> str | None:
    """``None`` when an input the kernel ``torch.ops.<namespace>.ms_deform_attn`` in
    ``library`` refuses raises a Python ``RuntimeError``, else what happened.

    Raises:
        ProbeNotRunError: the interpreter could not be started or did not finish.
    """
    try:
        result = subprocess.run(
            [sys.executable, "-c", _ERROR_PROBE, str(library), namespace],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ProbeNotRunError(f"it did not finish in {timeout:.0f} s") from exc
    except OSError as exc:
        raise ProbeNotRunError(f"{sys.executable} could not be started ({exc})") from exc
    if result.returncode == 0:
        return None
    if result.returncode == 3:
        return "an input its checks must refuse was accepted"
    if result.returncode < 0:
        try:
            how = f"was killed by {signal.Signals(-result.returncode).name}"
        except ValueError:
            how = f"was killed by signal {-result.returncode}"
    else:
        how = f"exited with status {result.returncode}"
    last = (result.stderr.strip().splitlines() or [""])[-1][:200]
    detail = f" ({last})" if last else ""
    return (
        f"an error raised inside it does not reach Python: the process {how}{detail}. "
        "The C++ compiler links a runtime that cannot pass exceptions to PyTorch; "
        "build with the system compiler (set CXX, e.g. CXX=/usr/bin/g++)"
    )


def recorded_check(marker_path: Path, library: Path, namespace: str) -> str | None:
    """:func:`errors_reach_python` for one build, run once and kept in its marker file
    (the caller holds the build folder's lock). A check that could not run is logged
    and tried again by the next process."""
    try:
        marker = json.loads(marker_path.read_text())
    except (OSError, ValueError):
        marker = {}
    if not isinstance(marker, dict):
        marker = {}
    if "errors_reach_python" in marker:
        if marker["errors_reach_python"] is not False:
            return None
        return str(marker.get("error_problem") or "an error raised inside it does not reach Python")
    try:
        problem = errors_reach_python(library, namespace)
    except ProbeNotRunError as exc:
        logger.warning(
            "napari-focus: could not check that %s errors reach Python: %s", namespace, exc
        )
        return None
    marker.update(errors_reach_python=problem is None, error_problem=problem)
    atomic_write_text(marker_path, json.dumps(marker) + "\n")
    return problem
