"""What the command-line commands share: exit codes and loading the model from the
parsed flags (used by ``predict`` in :mod:`napari_focus.cli` and by ``rank`` in
:mod:`napari_focus.series.rank`, which must not import each other)."""

from __future__ import annotations

import argparse
from typing import Any

EXIT_FAILED_IMAGES = 1
EXIT_SETUP_ERROR = 2


def load_predictor_from_args(args: argparse.Namespace) -> Any:
    """A :class:`~napari_focus.FocusPredictor` from ``--weights`` / ``--task`` /
    ``--size`` / ``--device`` (``args.size_given``: the size the user typed, if any)."""
    from .predictor import FocusPredictor

    if args.weights:
        return FocusPredictor.from_checkpoint(
            args.weights, args.task, architecture=args.size_given, device=args.device
        )
    return FocusPredictor.from_pretrained(args.task, args.size, device=args.device)
