"""FocusPredictor: everything between a user's numpy image and the FOCUS model."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint_fit import load_model
from .checkpoints import (
    metadata_architecture,
    official_checkpoint,
    read_checkpoint,
    save_inference_checkpoint,
)
from .devices import resolve_device
from .model import FocusArchitecture, FocusModel
from .model.postprocess import final_mask, resize_mask_logits, semantic_probabilities
from .presets import check_task, input_preset
from .transforms import normalize_and_pad, resize_rgb, resized_shape, to_rgb_uint8

PRECISIONS = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class Prediction:
    """Result at the input image's resolution.

    probability: float32 ``(H, W)`` in [0, 1], the foreground channel of FOCUS's
        ``sem_seg``.
    mask: uint8 ``(H, W)``, 1 = foreground: the official final mask, or under
        TTA ``sem_seg[0] > sem_seg[1]`` of the averaged probabilities.
    """

    probability: np.ndarray
    mask: np.ndarray


class FocusPredictor:
    """Runs FOCUS on numpy images.

    Build one with :meth:`from_pretrained` (official hub weights),
    :meth:`from_checkpoint` (a local file) or :meth:`from_state_dict`.

    ``precision`` (``"float32"``, ``"float16"``, ``"bfloat16"``) applies to
    CUDA and MPS through autocast; the deformable attention, the pixel decoder
    and the post-processing stay in float32.
    """

    def __init__(
        self,
        model: FocusModel,
        task: str | None = None,
        *,
        device: str | torch.device | None = None,
        precision: str = "float32",
        source: str | None = None,
    ) -> None:
        self.device = resolve_device(device)
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        if precision != "float32" and self.device.type == "cpu":
            raise ValueError(
                f"precision {precision!r} needs a CUDA or MPS device; on CPU use float32"
            )
        self.precision = precision
        self.task = check_task(task) if task else None
        self.source = source
        self.model = model.to(self.device).eval()
        self.input = input_preset()

    # ---------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(
        cls,
        task: str,
        size: str = "large",
        *,
        device: str | torch.device | None = None,
        cache_dir: str | os.PathLike | None = None,
        revision: str | None = None,
        precision: str = "float32",
    ) -> FocusPredictor:
        """Official weights ``geshang/focus_{size}_{task}``, downloaded once and cached."""
        device = resolve_device(device)  # before any download
        path = official_checkpoint(task, size, cache_dir=cache_dir, revision=revision)
        return cls.from_checkpoint(
            path, task, architecture=size, device=device, precision=precision
        )

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        task: str | None = None,
        *,
        architecture: str | Mapping[str, Any] | FocusArchitecture | None = None,
        device: str | torch.device | None = None,
        precision: str = "float32",
    ) -> FocusPredictor:
        """Load an official ``.pth`` (detectron2 dict or bare state dict) or a
        ``.safetensors`` file. The size is read from the file's metadata or
        detected from tensor shapes unless ``architecture`` is given."""
        device = resolve_device(device)  # before reading the file
        state, metadata = read_checkpoint(path)
        if architecture is None:
            architecture = metadata_architecture(metadata, str(path))
        task = task or metadata.get("task") or None
        return cls.from_state_dict(
            state,
            task,
            architecture=architecture,
            device=device,
            precision=precision,
            source=str(path),
        )

    @classmethod
    def from_state_dict(
        cls,
        state_dict: Mapping[str, torch.Tensor],
        task: str | None = None,
        *,
        architecture: str | Mapping[str, Any] | FocusArchitecture | None = None,
        device: str | torch.device | None = None,
        precision: str = "float32",
        source: str | None = None,
    ) -> FocusPredictor:
        device = resolve_device(device)
        model = load_model(state_dict, architecture, source or "the state dict")
        return cls(model, task, device=device, precision=precision, source=source)

    def save_inference_checkpoint(
        self, path: str | os.PathLike, *, dtype: torch.dtype = torch.float16
    ) -> Path:
        """Write only the inference weights as ``.safetensors`` (float16 by default),
        with architecture and task in the metadata: :meth:`from_checkpoint` needs
        nothing else and memory-maps it."""
        return save_inference_checkpoint(
            self.model.state_dict(),
            path,
            architecture=self.architecture.to_dict(),
            task=self.task,
            dtype=dtype,
            source=self.source,
        )

    @property
    def architecture(self) -> FocusArchitecture:
        return self.model.architecture

    # -------------------------------------------------------------- inference
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "float32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=PRECISIONS[self.precision])

    @torch.inference_mode()
    def _sem_seg(
        self, rgb: np.ndarray, short_side: int, max_long_side: int, with_mask: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        height, width = rgb.shape[:2]
        target = resized_shape(height, width, short_side, max_long_side)
        x = normalize_and_pad(resize_rgb(rgb, target), self.input, self.device)
        with self._autocast():
            out = self.model(x)
        logits = out["pred_logits"][0]
        masks = resize_mask_logits(
            out["pred_masks"][0], tuple(x.shape[-2:]), target, (height, width)
        )
        sem_seg = semantic_probabilities(logits, masks)
        return sem_seg, final_mask(logits, masks) if with_mask else None

    def predict(self, image: np.ndarray, *, tta: bool = False) -> Prediction:
        """Segment one image (see :func:`napari_focus.transforms.to_rgb_uint8` for the
        accepted inputs). ``tta`` averages ``sem_seg`` over the official scales
        (short side 320-1120) and horizontal flips."""
        rgb = to_rgb_uint8(image)
        if not tta:
            sem_seg, mask = self._sem_seg(
                rgb, self.input.short_side, self.input.max_long_side, with_mask=True
            )
            assert mask is not None
        else:
            total = None
            passes = 0
            flips = (False, True) if self.input.tta_flip else (False,)
            for short_side in self.input.tta_short_sides:
                for flip in flips:
                    view = np.ascontiguousarray(rgb[:, ::-1]) if flip else rgb
                    sem, _ = self._sem_seg(
                        view, short_side, self.input.tta_max_long_side, with_mask=False
                    )
                    sem = sem.flip(-1) if flip else sem
                    total = sem if total is None else total + sem
                    passes += 1
            sem_seg = total / passes
            mask = (sem_seg[0] > sem_seg[1]).to(torch.uint8)
        probability = sem_seg[0].clamp(0, 1).float().cpu().numpy()
        return Prediction(probability=probability, mask=mask.cpu().numpy().astype(np.uint8))
