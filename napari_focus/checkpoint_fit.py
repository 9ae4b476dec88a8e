"""From a state dict to a loaded FOCUS model, refusing anything that does not fit.

Every refusal is one :class:`~napari_focus.checkpoints.CheckpointError` naming
the source and what is wrong, raised before the model's weights are allocated:
an architecture of the wrong type or absurd size, missing, unexpected or
mis-shaped keys (or the other model size), tensors without data or of the
wrong kind (integer, bool or complex where weights are floating point), and
weights that are not finite.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from .checkpoint_identity import size_mismatch
from .checkpoints import (
    SIZE_NAMES,
    CheckpointError,
    check_state_dict,
    drop_training_keys,
    infer_size,
    strip_parallel_prefix,
)
from .model import FocusArchitecture, FocusModel, build_model, resolve_architecture
from .run_control import Cancelled

FOCUS_CLASSES = 2  # foreground, background (the official post-processing reads these)
_WEIGHT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def load_model(
    state_dict: Mapping[str, Any],
    architecture: str | Mapping[str, Any] | FocusArchitecture | None,
    source: str,
    cancelled: Callable[[], bool] | None = None,
) -> FocusModel:
    """Build the FOCUS model described by ``architecture`` (detected from the tensor
    shapes when ``None``) and load ``state_dict`` into it as float32, on the CPU.

    ``cancelled`` is asked between tensors while their data are read (a memory-mapped
    file is read here, not when it was opened); when it answers True the load stops
    with :class:`~napari_focus.run_control.Cancelled` and nothing is kept."""
    _stop_if(cancelled)
    state = drop_training_keys(strip_parallel_prefix(_only_tensors(state_dict, source)))
    if architecture is None:
        architecture = infer_size(state)
    arch = _resolve(architecture, source)
    if arch.num_classes != FOCUS_CLASSES:
        raise CheckpointError(
            f"{source}: its head predicts {arch.num_classes} class(es), but every FOCUS task "
            "(sod, cod, sd, dbd, fd) reads its masks from a 2-class head (foreground, "
            "background): the file is no FOCUS checkpoint for any task"
        )
    with torch.device("meta"):
        model = build_model(arch)  # about 0.5 s of Python for FOCUS-L: not split
    _stop_if(cancelled)
    expected = model.state_dict()
    try:
        check_state_dict(expected, state, source)
    except CheckpointError:
        _raise_if_other_size(state, arch, source)
        raise
    check_tensor_kinds(expected, state, source)
    # float32 copies, then assign: no random initialisation, no second copy
    converted = {}
    for key, value in state.items():
        _stop_if(cancelled)
        value = value.to("cpu", torch.float32) if value.is_floating_point() else value.to("cpu")
        check_finite({key: value}, source)
        converted[key] = value
    model.load_state_dict(converted, strict=True, assign=True)
    return model


def _stop_if(cancelled: Callable[[], bool] | None) -> None:
    if cancelled is not None and cancelled():
        raise Cancelled("the model load was cancelled")


def _only_tensors(state: Mapping[str, Any], source: str) -> Mapping[str, Any]:
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{source} is a {type(state).__name__}, not a state dict")
    for key, value in state.items():
        if not isinstance(key, str):
            raise CheckpointError(f"{source}: key {key!r} is not a string")
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{source}: entry {key!r} is a {type(value).__name__}, not a tensor"
            )
    return state


def _resolve(
    architecture: str | Mapping[str, Any] | FocusArchitecture, source: str
) -> FocusArchitecture:
    try:
        return resolve_architecture(architecture)
    except (ValueError, TypeError) as error:
        raise CheckpointError(
            f"the architecture for {source} is not usable: {error}"
        ) from error


def _raise_if_other_size(
    state: Mapping[str, torch.Tensor], arch: FocusArchitecture, source: str
) -> None:
    """A file of another size than the official one asked for gets one line naming the
    size it holds, instead of hundreds of keys."""
    if arch.size_name not in SIZE_NAMES:
        return
    mismatch = size_mismatch(state, arch.size_name, source)
    if mismatch is not None:
        raise mismatch


def check_tensor_kinds(
    expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], source: str
) -> None:
    """Every tensor holds data of a kind the model can use: dense, real floating point
    where the model has weights, integer where it counts (``num_batches_tracked``)."""
    for key, want in expected.items():
        got = state[key]
        problem = None
        if got.is_meta:
            problem = "has no data (a meta tensor)"
        elif got.layout != torch.strided or got.is_quantized:
            problem = f"is a {got.layout} / quantized tensor, not a dense one"
        elif want.is_floating_point() and got.dtype not in _WEIGHT_DTYPES:
            problem = f"is {got.dtype}, not floating point"
        elif not want.is_floating_point() and (
            got.is_floating_point() or got.is_complex() or got.dtype == torch.bool
        ):
            problem = f"is {got.dtype}, not an integer"
        if problem:
            raise CheckpointError(f"{source}: the weight {key!r} {problem}")


def check_finite(state: Mapping[str, torch.Tensor], source: str) -> None:
    """Refuse NaN or infinite weights, naming the first tensor that holds one."""
    for key, value in state.items():
        if not value.is_floating_point() or value.numel() == 0:
            continue
        # NaN propagates into both extremes and an infinity is one of them: a single
        # reduction, no full-size temporary (about 14x cheaper than isfinite().all())
        low, high = torch.aminmax(value)
        if not (bool(torch.isfinite(low)) and bool(torch.isfinite(high))):
            bad = int((~torch.isfinite(value)).sum())
            raise CheckpointError(
                f"{source}: the weight {key!r} holds {bad} NaN or infinite value(s) of "
                f"{value.numel()}; the file is damaged or was saved from a diverged training"
            )
