"""FocusPredictor: everything between a user's numpy image and the FOCUS model."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint_fit import load_model
from .checkpoint_hub import official_checkpoint
from .checkpoint_identity import (
    CheckpointSizeMismatch,
    HubFileMismatch,
    TaskMismatchWarning,
    recorded_size_mismatch,
    recorded_task,
    task_mismatch,
)
from .checkpoints import metadata_architecture, read_checkpoint, save_inference_checkpoint
from .devices import default_batch_size, resolve_device
from .hub_download import DownloadProgress
from .model import FocusArchitecture, FocusModel
from .model.deform_attn import MSDeformAttn
from .model.postprocess import final_masks, resize_mask_logits, semantic_probabilities
from .ops import preload_kernel
from .presets import check_size, check_task, hub_location, input_preset
from .runtime import (
    DTYPES,
    apply_cpu_fast_path,
    autocast,
    cast_autocast_weights,
    check_batch_size,
    resolve_precision,
)
from .transforms import PreparedView, is_one_image, prepare_view, to_rgb_uint8, upload_views

#: what :meth:`FocusPredictor.predict` takes: an image array or an image file's path
ImageInput = np.ndarray | str | os.PathLike


@dataclass(frozen=True, eq=False)  # arrays: == of two results would raise, so identity
class Prediction:
    """Result at the input image's resolution.

    probability: float32 ``(H, W)`` in [0, 1], the foreground channel of FOCUS's
        ``sem_seg``.
    mask: uint8 ``(H, W)``, 1 = foreground: the official final mask, or under
        TTA ``sem_seg[0] > sem_seg[1]`` of the averaged probabilities.
    """

    probability: np.ndarray
    mask: np.ndarray


@dataclass(frozen=True)
class PreparedInput:
    """An image prepared on the host (:meth:`FocusPredictor.prepare`): one view, or
    the TTA views with their flips, plus the size the results come back at."""

    views: tuple[PreparedView, ...]
    flips: tuple[bool, ...]
    original_hw: tuple[int, int]
    tta: bool


class FocusPredictor:
    """Runs FOCUS on numpy images.

    Build one with :meth:`from_pretrained` (official hub weights),
    :meth:`from_checkpoint` (a local file) or :meth:`from_state_dict`.

    ``precision``: ``"auto"`` (float16 on CUDA, float32 elsewhere; see
    :mod:`napari_focus.runtime`), ``"float32"``, ``"float16"``
    (CUDA, MPS) or ``"bfloat16"`` (CUDA, MPS, and CPUs with AVX-512 BF16 / AMX as
    an opt-in fast mode). Half types run the backbone and the transformer decoder
    under autocast with their weights converted once here; the deformable
    attention's sampling, the pixel decoder and the post-processing stay float32.
    """

    def __init__(
        self,
        model: FocusModel,
        task: str | None = None,
        *,
        device: str | torch.device | None = None,
        precision: str = "auto",
        source: str | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.task = check_task(task) if task else None
        self.weights_task = self.task  # the task the weights were trained for, if known
        self.source = source
        self.model = model.to(self.device).eval()
        cast_autocast_weights(self.model, DTYPES[self.precision])
        # "mkl" or "onednn" on CPU in float32 (measured once per machine), else None
        self.cpu_linear_path = apply_cpu_fast_path(self.model, self.device, self.precision)
        self.input = input_preset()
        self._compiled: torch.nn.Module | None = None

    # ---------------------------------------------------------------- loading
    @classmethod
    def load(
        cls,
        task: str,
        *,
        size: str | None = None,
        weights: str | os.PathLike | None = None,
        device: str | torch.device | None = None,
        precision: str = "auto",
        cancelled: Callable[[], bool] | None = None,
        download_progress: Callable[[DownloadProgress], None] | None = None,
    ) -> FocusPredictor:
        """The model a user names: the local checkpoint ``weights`` (its size read from
        the file unless ``size`` is given), else the official hub weights of ``size``
        (default large). The one rule the CLI, the widget and the cluster workers use.

        ``cancelled``, here and in the other constructors, is asked between tensors
        while the weights are read, and between pieces of a download; once it answers
        True the load stops with :class:`~napari_focus.run_control.Cancelled` (a
        download resumes next time). ``download_progress``: see :func:`official_checkpoint`."""
        options = {"device": device, "precision": precision, "cancelled": cancelled}
        if weights:
            return cls.from_checkpoint(weights, task, architecture=size, **options)
        return cls.from_pretrained(
            task, size or "large", download_progress=download_progress, **options
        )

    @classmethod
    def from_pretrained(
        cls,
        task: str,
        size: str = "large",
        *,
        device: str | torch.device | None = None,
        cache_dir: str | os.PathLike | None = None,
        revision: str | None = None,
        precision: str = "auto",
        cancelled: Callable[[], bool] | None = None,
        download_progress: Callable[[DownloadProgress], None] | None = None,
    ) -> FocusPredictor:
        """Official weights ``geshang/focus_{size}_{task}``, downloaded once and cached."""
        device = resolve_device(device)  # before any download
        path = official_checkpoint(task, size, cache_dir=cache_dir, revision=revision,
                                   progress=download_progress, cancelled=cancelled)  # fmt: skip
        try:
            return cls.from_checkpoint(
                path, task, architecture=size, device=device, precision=precision,
                cancelled=cancelled,
            )  # fmt: skip
        except CheckpointSizeMismatch as mismatch:
            raise HubFileMismatch(mismatch, hub_location(task, size)[0], path) from mismatch

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        task: str | None = None,
        *,
        architecture: str | Mapping[str, Any] | FocusArchitecture | None = None,
        device: str | torch.device | None = None,
        precision: str = "auto",
        cancelled: Callable[[], bool] | None = None,
    ) -> FocusPredictor:
        """Load an official ``.pth`` (detectron2 dict or bare state dict) or a
        ``.safetensors`` file. The size is read from the file's metadata or
        detected from tensor shapes unless ``architecture`` is given."""
        device = resolve_device(device)  # before reading the file
        state, metadata = read_checkpoint(path)
        recorded = metadata_architecture(metadata, str(path))
        if architecture is None:
            architecture = recorded
        elif isinstance(architecture, str) and recorded is not None:
            mismatch = recorded_size_mismatch(recorded, check_size(architecture), str(path))
            if mismatch is not None:
                raise mismatch
        task = check_task(task) if task else None
        other_task = task_mismatch(task, path, cli=False) if task else None
        if other_task:
            warnings.warn(other_task, TaskMismatchWarning, stacklevel=2)
        recorded_for = recorded_task(path)
        predictor = cls.from_state_dict(
            state,
            task or metadata.get("task") or None,
            architecture=architecture,
            device=device,
            precision=precision,
            source=str(path),
            cancelled=cancelled,
        )
        if recorded_for is not None:  # what its masks show, whatever task was asked
            predictor.weights_task = recorded_for[0]
        return predictor

    @classmethod
    def from_state_dict(
        cls,
        state_dict: Mapping[str, torch.Tensor],
        task: str | None = None,
        *,
        architecture: str | Mapping[str, Any] | FocusArchitecture | None = None,
        device: str | torch.device | None = None,
        precision: str = "auto",
        source: str | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> FocusPredictor:
        device = resolve_device(device)
        model = load_model(state_dict, architecture, source or "the state dict", cancelled)
        return cls(model, task, device=device, precision=precision, source=source)

    def save_inference_checkpoint(
        self, path: str | os.PathLike, *, dtype: torch.dtype = torch.float16
    ) -> Path:
        """Write only the inference weights as ``.safetensors`` (float16 by default),
        with architecture and task in the metadata (the task the weights were trained
        for, :attr:`weights_task`, not one asked for besides): :meth:`from_checkpoint`
        needs nothing else and memory-maps it.

        Raises:
            ValueError: a float32 copy was asked of a half-precision predictor, whose
                weights were converted when it was built (``precision="auto"`` on CUDA).
        """
        if dtype == torch.float32 and self.precision != "float32":
            raise ValueError(
                f"this predictor converted its weights to {self.precision} when it was "
                "built, so a float32 copy would not be exact; build it with "
                'precision="float32" to save one'
            )
        return save_inference_checkpoint(
            self.model.state_dict(),
            path,
            architecture=self.architecture.to_dict(),
            task=self.weights_task,
            dtype=dtype,
            source=self.source,
        )

    @property
    def default_batch_size(self) -> int:
        """Images per forward when ``batch_size`` is not given."""
        return default_batch_size(self.device)

    @property
    def architecture(self) -> FocusArchitecture:
        return self.model.architecture

    def compile(self, backend: str = "inductor", mode: str | None = None) -> None:
        """Run later forwards through ``torch.compile`` with ``backend`` and ``mode``
        (``"reduce-overhead"`` replays CUDA graphs); each new padded input size compiles
        again; see docs/benchmarks.md for when it pays off."""
        if any(m.backend != "torch" for m in self.model.modules() if isinstance(m, MSDeformAttn)):
            preload_kernel(self.device)  # its first use, traced, would break the graph
        self._compiled = torch.compile(self.model, backend=backend, mode=mode, dynamic=False)

    # -------------------------------------------------------------- inference
    def prepare(self, image: ImageInput, *, tta: bool = False) -> PreparedInput:
        """Validate, convert, resize and edge-inject one image on the host (no model,
        thread-safe): the part of :meth:`predict` a pipeline runs ahead of the model.
        A path (``str`` or ``os.PathLike``) is read with :func:`napari_focus.io.read_image`,
        upright by its EXIF orientation as the command line reads it."""
        if isinstance(image, str | os.PathLike):
            from .io import check_single_image, read_image

            image = check_single_image(read_image(image), Path(image).name)
        rgb = to_rgb_uint8(image)
        preset = self.input
        if not tta:
            view = prepare_view(rgb, preset.short_side, preset.max_long_side, preset)
            return PreparedInput((view,), (False,), rgb.shape[:2], tta=False)
        views, flips = [], []
        for short_side in preset.tta_short_sides:
            for flip in (False, True) if preset.tta_flip else (False,):
                source = np.ascontiguousarray(rgb[:, ::-1]) if flip else rgb
                views.append(prepare_view(source, short_side, preset.tta_max_long_side, preset))
                flips.append(flip)
        return PreparedInput(tuple(views), tuple(flips), rgb.shape[:2], tta=True)

    def predict(self, image: ImageInput, *, tta: bool = False) -> Prediction:
        """Segment one image: an array (see :func:`napari_focus.transforms.to_rgb_uint8`
        for the accepted ones) or an image file's path (see :meth:`prepare`). ``tta``
        averages ``sem_seg`` over the official scales (short side 320-1120) and
        horizontal flips."""
        return self.predict_prepared([self.prepare(image, tta=tta)], batch_size=1)[0]

    def predict_batch(
        self, images: Iterable[ImageInput], *, tta: bool = False, batch_size: int | None = None
    ) -> list[Prediction]:
        """:meth:`predict` of several images (arrays or paths), in order.

        Images whose padded model input has the same size run together, up to
        ``batch_size`` per forward (default: 1 on CPU, 4 on CUDA, 8 on GPUs of 24 GiB
        or more); each image is padded on its own, as alone (padding images to a common
        larger canvas would change FOCUS's outputs). With ``batch_size`` 1 the results
        are those of :meth:`predict`, bit for bit. A larger batch equals them up to
        float rounding: the math libraries sum in another order for another batch
        size (two copies of one image in one batch already differ in the last bits),
        so probabilities move by about 1e-5 and a mask pixel can flip where the
        model's two answers for it are that close. Every image is prepared before the
        model runs (host memory grows with their number, tens of MB each with ``tta``):
        for a folder, :func:`napari_focus.pipeline.run_pipeline` streams.
        """
        if isinstance(images, str | os.PathLike) or is_one_image(images):
            raise TypeError(
                "predict_batch takes several images (a list of arrays or paths, or an "
                "(N, H, W[, C]) stack); for one image use predict()"
            )
        prepared = []
        for i, image in enumerate(images):
            try:
                prepared.append(self.prepare(image, tta=tta))
            except (ValueError, TypeError) as error:  # a file's name it; an array's its place
                if isinstance(image, str | os.PathLike):
                    raise
                kind = ValueError if isinstance(error, ValueError) else TypeError
                raise kind(f"images[{i}]: {error}") from error
        return self.predict_prepared(prepared, batch_size=batch_size)

    def predict_prepared(
        self, inputs: Sequence[PreparedInput], *, batch_size: int | None = None
    ) -> list[Prediction]:
        """Run the model on inputs from :meth:`prepare`; results in the same order."""
        if batch_size is None:
            batch_size = self.default_batch_size
        batch_size = check_batch_size(batch_size)
        # every view of every input, grouped by padded size (order kept within a group)
        groups: dict[tuple[int, int], list[tuple[int, int]]] = {}
        for i, item in enumerate(inputs):
            for v, view in enumerate(item.views):
                groups.setdefault(view.padded_hw, []).append((i, v))
        sem_segs: dict[tuple[int, int], torch.Tensor] = {}
        masks: dict[int, torch.Tensor] = {}
        left = [len(item.views) for item in inputs]
        results: list[Prediction | None] = [None] * len(inputs)
        for members in groups.values():
            for start in range(0, len(members), batch_size):
                chunk = members[start : start + batch_size]
                views = [inputs[i].views[v] for i, v in chunk]
                targets = [inputs[i].original_hw for i, _ in chunk]
                with_mask = [not inputs[i].tta for i, _ in chunk]
                for (i, v), sem, mask in zip(
                    chunk, *self._forward(views, targets, with_mask), strict=True
                ):
                    sem_segs[i, v] = sem.flip(-1) if inputs[i].flips[v] else sem
                    if mask is not None:
                        masks[i] = mask
                    left[i] -= 1
                    if not left[i]:  # complete: to the host, free the device copies
                        results[i] = self._finish(inputs[i], i, sem_segs, masks)
        return results  # type: ignore[return-value]

    @staticmethod
    def _finish(
        item: PreparedInput,
        index: int,
        sem_segs: dict[tuple[int, int], torch.Tensor],
        masks: dict[int, torch.Tensor],
    ) -> Prediction:
        views = [sem_segs.pop((index, v)) for v in range(len(item.views))]
        if item.tta:  # summed in view order, as one image at a time would
            total = views[0]
            for sem in views[1:]:
                total = total + sem
            sem_seg = total / len(views)
            mask = (sem_seg[0] > sem_seg[1]).to(torch.uint8)
        else:
            sem_seg, mask = views[0], masks.pop(index)
        return Prediction(
            probability=sem_seg[0].clamp(0, 1).float().cpu().numpy(),
            mask=mask.cpu().numpy().astype(np.uint8),
        )

    @torch.inference_mode()
    def _forward(
        self,
        views: list[PreparedView],
        output_hw: list[tuple[int, int]],
        with_mask: list[bool],
    ) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
        """One forward of views of one padded size, then the post-processing on the
        device, batched over views that share their resized and output sizes."""
        images, edges = upload_views(views, self.input, self.device)
        with autocast(self.device, self.precision):
            model = self.model if self._compiled is None else self._compiled
            out = model(images, edges)
        logits, pred_masks = out["pred_logits"], out["pred_masks"]
        sem_segs: list[torch.Tensor | None] = [None] * len(views)
        masks: list[torch.Tensor | None] = [None] * len(views)
        by_size: dict[tuple, list[int]] = {}
        for j, view in enumerate(views):
            by_size.setdefault((view.resized_hw, output_hw[j]), []).append(j)
        for (resized_hw, target), members in by_size.items():
            every = len(members) == len(views)
            cls = logits if every else torch.stack([logits[j] for j in members])
            mask_logits = resize_mask_logits(
                pred_masks if every else torch.stack([pred_masks[j] for j in members]),
                tuple(images.shape[-2:]),
                resized_hw,
                target,
            )
            sem = semantic_probabilities(cls, mask_logits)
            want = [j for j in members if with_mask[j]]
            final = final_masks(cls, mask_logits) if want else None
            for k, j in enumerate(members):
                sem_segs[j] = sem[k]
                if with_mask[j] and final is not None:
                    masks[j] = final[k]
        return sem_segs, masks  # type: ignore[return-value]
