"""What torch.compile needs of the compiled kernels: a fake implementation, the
output's shape and dtype without running the kernel, registered with each loaded op."""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger("napari_focus.ops.build")  # said with the build's messages


def _fake_ms_deform_attn(value: torch.Tensor, *levels_and_samples: torch.Tensor) -> torch.Tensor:
    batch, _, heads, dim = value.shape
    queries = levels_and_samples[2].shape[1]  # sampling_locations (B, Q, M, L, P, 2)
    return value.new_empty((batch, queries, heads * dim))


def register_fake(kind: str) -> None:
    """The output's shape and dtype without running the kernel: what torch.compile
    traces the op with (``predict --compile``). Once per process, like torch's registry
    of the op; a failure only costs torch.compile a graph break at the op."""
    if kind in _FAKES_REGISTERED:
        return
    try:
        torch.library.register_fake(f"napari_focus_{kind}::ms_deform_attn")(_fake_ms_deform_attn)
    except Exception as exc:
        logger.warning("napari-focus: no torch.compile support for the %s kernel: %s", kind, exc)
        return
    _FAKES_REGISTERED.add(kind)


_FAKES_REGISTERED: set[str] = set()
