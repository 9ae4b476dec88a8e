"""Inference-only transformations of a loaded FOCUS model: precision and CPU fast paths.

The model definitions in :mod:`napari_focus.model` stay plain, trainable
``nn.Module``s; everything here is applied by the predictor after loading.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from numbers import Integral
from typing import Any

import torch
from torch import nn

from .model import FocusModel
from .model.deform_attn import MSDeformAttn
from .model.folded import fold_backbone

PRECISIONS = ("auto", "float32", "float16", "bfloat16")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

# ``auto`` is float16 on CUDA and float32 elsewhere. The bar for a half type to become
# the CUDA default: this share of final-mask pixels equal to float32 on every measured
# image. On an H100 (docs/benchmarks.md) float16 kept 99.97 % on both official tiny
# cases and at least 99.67 % (mean 99.93 %) on 30 photos through FOCUS-L, at 2.4x the
# float32 throughput; bfloat16 fell to 98.4 % on one photo, so it stays opt-in.
AUTO_HALF_MIN_AGREEMENT = 0.995
AUTO_HALF_ON_CUDA = True


def cpu_bfloat16_supported() -> bool:
    """oneDNN's own check of the processor (AVX-512 BF16, AMX or AVX-512 core)."""
    return torch.backends.mkldnn.is_available() and bool(
        torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )


def check_batch_size(batch_size: Any) -> int:
    """``batch_size`` as an int of at least 1 (a NumPy integer too), else ``ValueError``."""
    whole = isinstance(batch_size, Integral) and not isinstance(batch_size, bool)
    if not whole or batch_size < 1:
        raise ValueError(f"batch_size must be a whole number of at least 1, got {batch_size!r}")
    return int(batch_size)


def resolve_precision(precision: str, device: torch.device) -> str:
    """Validate ``precision`` for ``device``; returns ``"float32"``, ``"float16"`` or
    ``"bfloat16"``. Raises ``ValueError`` saying what to use instead."""
    asked = precision
    precision = str(precision).strip().lower()  # "Float16", as task and device are taken
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {asked!r}")
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
    """The numeric mode of a forward pass at ``precision``: autocast for the half types;
    IEEE float32 for float32 (on CUDA, TF32 turned off for the pass)."""
    if precision != "float32":
        return torch.autocast(device.type, dtype=DTYPES[precision])
    if device.type == "cuda":
        return _CUDNN_TF32_OFF.region()
    return contextlib.nullcontext()


class _ProcessFlagOff:
    """cuDNN runs float32 convolutions as TF32 by default on Ampere and later GPUs,
    which moved the backbone's res3/res4 features 3e-3 off the official float32
    outputs (H100, docs/benchmarks.md); float32 matmuls are IEEE by default already.
    The switch is one per process and forwards overlap (the widget's job and the
    series prefetch threads), so the first region to enter turns it off and the last
    to leave restores what the user had."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inside = 0
        self._saved = True

    @contextlib.contextmanager
    def region(self) -> Iterator[None]:
        with self._lock:
            if self._inside == 0:
                self._saved = torch.backends.cudnn.allow_tf32
                torch.backends.cudnn.allow_tf32 = False
            self._inside += 1
        try:
            yield
        finally:
            with self._lock:
                self._inside -= 1
                if self._inside == 0:
                    torch.backends.cudnn.allow_tf32 = self._saved


_CUDNN_TF32_OFF = _ProcessFlagOff()


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


def linear_shapes(model: FocusModel) -> list[tuple[int, int, int]]:
    """``(tokens, in, out)`` of the ViT's linear layers at a 512x704 input."""
    block = model.backbone.blocks[0]
    tokens = (512 // model.backbone.patch_size) * (704 // model.backbone.patch_size) + 1
    shapes = [
        (tokens, linear.in_features, linear.out_features)
        for linear in (
            block.attn.qkv,
            *(m for m in block.mlp.children() if isinstance(m, nn.Linear)),
        )
    ]
    return shapes


def apply_cpu_fast_path(model: FocusModel, device: torch.device, precision: str) -> str | None:
    """For float32 inference on CPU: fold the backbone's BatchNorms into its
    convolutions, channels-last (see :mod:`napari_focus.model.folded`), and route the
    linear layers through the faster of MKL and oneDNN on this machine (see
    :mod:`napari_focus.cpu_linear`). Returns the linear path, or None elsewhere."""
    from . import cpu_linear

    if device.type != "cpu" or precision != "float32":
        # the model may come from a float32 CPU predictor: undo its fast path
        model.backbone.cpu_fast_path, model.backbone.folded = False, None
        cpu_linear.route_linears(model, "mkl")
        return None
    model.backbone.cpu_fast_path = True
    model.backbone.folded = fold_backbone(model.backbone)  # now rather than at the first image
    path = cpu_linear.choose(linear_shapes(model), model.architecture.size_name)
    cpu_linear.route_linears(model, path)
    return path
