"""What the command-line commands share: exit codes, the ``--out`` refusal of
``predict`` (both engines) and loading the model from the parsed flags (used by
``predict`` in :mod:`napari_focus.cli` and by ``rank`` in :mod:`napari_focus.series.rank`,
which must not import each other)."""

from __future__ import annotations

import argparse
from typing import Any

EXIT_FAILED_IMAGES = 1
EXIT_SETUP_ERROR = 2


def out_replaces_input_message(out: object, error: Any) -> str:
    """``predict``'s words for :class:`~napari_focus.prediction_files.OutputReplacesInput`
    (both engines)."""
    return f"--out {out}: {error.what}; choose another --out"


def load_predictor_from_args(args: argparse.Namespace) -> Any:
    """A :class:`~napari_focus.FocusPredictor` from ``--weights`` / ``--task`` /
    ``--size`` / ``--device`` / ``--precision`` / ``--compile`` (commands without the
    throughput flags get the defaults)."""
    from .predictor import FocusPredictor

    predictor = FocusPredictor.load(
        args.task,
        size=args.size,
        weights=args.weights,
        device=args.device,
        precision=getattr(args, "precision", "auto"),
    )
    if getattr(args, "compile", False):
        predictor.compile()
    return predictor
