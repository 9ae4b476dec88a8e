"""Inference-only transformations of a loaded FOCUS model: precision and CPU fast paths.

The model definitions in :mod:`napari_focus.model` stay plain, trainable
``nn.Module``s; everything here is applied by the predictor after loading.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from .model import FocusModel
from .model.deform_attn import MSDeformAttn

PRECISIONS = ("auto", "float32", "float16", "bfloat16")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

# ``auto`` resolves to float32 on every device. Half precision becomes the CUDA
# default only once a GPU measurement on the official weights shows at least this
# share of final-mask pixels equal to float32 (none exists yet; see docs/benchmarks.md).
AUTO_HALF_MIN_AGREEMENT = 0.995
AUTO_HALF_ON_CUDA = False


def cpu_bfloat16_supported() -> bool:
    """oneDNN's own check of the processor (AVX-512 BF16, AMX or AVX-512 core)."""
    return torch.backends.mkldnn.is_available() and bool(
        torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )


def resolve_precision(precision: str, device: torch.device) -> str:
    """Validate ``precision`` for ``device``; returns ``"float32"``, ``"float16"`` or
    ``"bfloat16"``. Raises ``ValueError`` saying what to use instead."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "float16" if AUTO_HALF_ON_CUDA and device.type == "cuda" else "float32"
    if precision == "float16" and device.type == "cpu":
        raise ValueError(
            "precision 'float16' needs a CUDA or MPS device; on CPU use float32, or "
            "bfloat16 on processors with AVX-512 BF16 / AMX"
        )
    if precision == "bfloat16":
        if device.type == "cpu" and not cpu_bfloat16_supported():
            raise ValueError(
                "precision 'bfloat16' on CPU needs a processor with AVX-512 (BF16 or AMX "
                "for speed); this one lacks it, use float32"
            )
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError("this GPU does not support bfloat16; use float16 or float32")
    return precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast region of a forward pass at ``precision`` (a no-op for float32)."""
    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[precision])


def _float32_modules(model: FocusModel) -> set[nn.Module]:
    """Modules that compute in float32 whatever the autocast state: the deformable
    attention's sampling offsets and weights, and the whole pixel decoder."""
    keep: set[nn.Module] = set(model.sem_seg_head.pixel_decoder.modules())
    for module in model.modules():
        if isinstance(module, MSDeformAttn):
            keep.update((module.sampling_offsets, module.attention_weights))
    return keep


def cast_autocast_weights(model: FocusModel, dtype: torch.dtype) -> int:
    """Convert, once, the weights that autocast would cast to ``dtype`` on every
    forward (linear, convolution and attention projections of the backbone and the
    transformer decoder). Norms, layer scales, embeddings and the float32 regions
    keep their float32 weights. Returns the number of tensors converted."""
    if dtype == torch.float32:
        return 0
    keep = _float32_modules(model)
    converted = 0
    for module in model.modules():
        if module in keep:
            continue
        if isinstance(module, nn.Linear | nn.Conv2d | nn.ConvTranspose2d):
            names = ("weight", "bias")
        elif isinstance(module, nn.MultiheadAttention):
            names = ("in_proj_weight", "in_proj_bias")
        else:
            continue
        for name in names:
            param = getattr(module, name, None)
            if param is not None and param.dtype != dtype:
                param.data = param.data.to(dtype)
                converted += 1
    return converted
