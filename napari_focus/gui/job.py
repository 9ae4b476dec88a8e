"""The background job behind the Run button: load (or reuse) a predictor, segment planes.

Runs in a napari worker thread: it only reads layer data and returns arrays;
the widget creates and changes layers when the job returns.
"""

from __future__ import annotations

import importlib
import threading
import warnings
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..checkpoint_identity import HubFileMismatch, TaskMismatchWarning
from ..checkpoints import CheckpointNotAvailable
from ..devices import out_of_memory, release_cached_memory
from ..hub_download import DownloadProgress, ProgressCallback
from ..predictor import FocusPredictor
from ..presets import official_weights_id
from ..run_control import Cancelled, RunControl, kernel_build_stage, watch_model
from .planes import LayerPlanes

LOADING = "loading"  # the stage of a model load (then the model's description)
DOWNLOADING = "downloading"  # the stage of an official checkpoint's download


def uninterruptible(stage: str) -> bool:
    """A stage a cancel cannot stop at once (downloading or loading a model): the widget
    lets the user go on and drops its result when it ends (a download stops at its next
    piece, a read at its next tensor). (A first kernel build is only waited for, with the
    cancel checked: it goes on in a thread of its own.)"""
    return stage.startswith((LOADING, DOWNLOADING))


def left_running(stage: str, series_waits: bool = False) -> str:
    """The status once Cancel left an :func:`uninterruptible` stage to end by itself;
    ``series_waits``: the series' proposals wait for the same model, whose load goes on."""
    if series_waits:
        what = "download" if stage.startswith(DOWNLOADING) else "model load"
        return f"Run cancelled; the {what} goes on for the series' proposals (Cancel stops it)"
    if stage.startswith(DOWNLOADING):
        return "cancelled; the download stops (the next Run continues it from there)"
    return "cancelled; the model load stops in the background"


def load_stages(key: ModelKey, show: Callable[[str], None]) -> ProgressCallback:
    """A download progress callback showing ``"downloading <file>: 120 of 1,500 MB,
    11.3 MB/s"`` through ``show`` (a stage setter: the GUI polls it), then the loading
    stage again once the file is complete."""

    def on_progress(progress: DownloadProgress) -> None:
        if progress.finished:
            show(f"{LOADING} {key.describe()}")
        else:
            show(f"{DOWNLOADING} {progress.filename}: {progress.describe()}")

    return on_progress


def import_ahead_of_layers() -> None:
    """Called by workers: napari imports pandas the first time it builds a Labels layer
    (about 0.2 s holding the GUI thread); imported here, it is already there by then."""
    importlib.import_module("pandas")


def proposal_name(image_name: str, task: str) -> str:
    """Name of the Labels layer holding the proposal for an image and task."""
    return f"{image_name} [FOCUS {task.upper()}]"


@dataclass(frozen=True)
class ModelKey:
    """What identifies a loaded model; a change of any field means loading again."""

    task: str
    size: str
    weights: str | None  # local checkpoint path, or None for the official hub weights
    device: str
    precision: str = "auto"

    @property
    def weights_id(self) -> str:
        """The local checkpoint path, or ``hf://<repo>/<file>`` of the official weights."""
        if self.weights:
            return self.weights
        return official_weights_id(self.task, self.size)

    def describe(self) -> str:
        return f"FOCUS {self.task.upper()} from {self.weights_id} on {self.device}"


@dataclass(frozen=True)
class Progress:
    message: str
    fraction: float | None  # None: indeterminate (downloading, loading)


@dataclass
class JobResult:
    predictor: FocusPredictor
    key: ModelKey
    indices: list[tuple[int, ...]]
    probabilities: list[np.ndarray] = field(default_factory=list)
    masks: list[np.ndarray] = field(default_factory=list)
    tta: bool = False  # what the proposals were computed with


def load_predictor(
    key: ModelKey,
    cancelled: Callable[[], bool] | None = None,
    download_progress: ProgressCallback | None = None,
) -> FocusPredictor:
    # the size list names the hub download; a local file carries its own size
    with warnings.catch_warnings():  # the Model tab says it in its own words
        warnings.simplefilter("ignore", TaskMismatchWarning)
        return FocusPredictor.load(
            key.task,
            size=None if key.weights else key.size,
            weights=key.weights,
            device=key.device,
            precision=key.precision,
            cancelled=cancelled,
            download_progress=download_progress or (lambda _progress: None),
        )


def load_alone(key: ModelKey, control: RunControl) -> FocusPredictor:
    """Load without sharing: a load cancelled meanwhile is dropped (raises Cancelled)."""
    control.check()
    predictor = load_predictor(
        key, lambda: control.cancelled, load_stages(key, control.set_stage)
    )
    control.check()
    return predictor


class SharedModel:
    """The model the widget's background jobs share. Run and the series prefetch may
    both need a model that is not loaded yet: the first to ask loads it, the other waits
    for that load instead of loading a second copy (two FOCUS-G models do not fit a
    laptop). Called from worker threads; the widget keeps what they return.

    A load stops between two tensors once no caller wants its model any more (all
    cancelled); a download, or a part of the read that cannot be split, goes on in its
    thread, and when it ends the model is dropped (its memory freed) unless another
    caller waits for the same model, who then gets it. The cancelled caller gets
    :class:`~napari_focus.run_control.Cancelled`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: ModelKey | None = None
        self._predictor: FocusPredictor | None = None
        self._asking_lock = threading.Lock()
        self._asking: list[tuple[ModelKey, RunControl]] = []  # callers in get()

    def get(self, key: ModelKey, control: RunControl | None = None) -> FocusPredictor:
        control = control or RunControl()
        asking = (key, control)
        with self._asking_lock:
            self._asking.append(asking)
        try:
            with self._lock:
                # read once: forget() on the GUI thread may clear the attributes meanwhile
                predictor = self._predictor if self._key == key else None
                if predictor is None:
                    # the old model goes first (freed as its last reference goes: no
                    # collection, which would stop napari's thread too, is needed)
                    self._key, self._predictor = None, None
                    control.check()  # cancelled while another load held the lock
                    nobody_wants_it = lambda: not self.waiting(key)  # noqa: E731
                    stages = load_stages(key, lambda stage: self._show_stage(key, stage))
                    predictor = load_predictor(key, nobody_wants_it, stages)
                    self._key, self._predictor = key, predictor
                if control.cancelled and not self.waiting(key, besides=asking):
                    self._drop()  # nobody wants it any more
                control.check()
                return predictor
        finally:
            with self._asking_lock:
                self._asking.remove(asking)

    def _show_stage(self, key: ModelKey, stage: str) -> None:
        """The load's stage (a download's progress) goes to every caller waiting for it."""
        with self._asking_lock:
            for asked, control in self._asking:
                if asked == key:
                    control.set_stage(stage)

    @property
    def loading(self) -> bool:
        """A load is under way (perhaps one whose caller cancelled it)."""
        return self._lock.locked()

    def _drop(self) -> None:
        device = getattr(self._predictor, "device", None)
        self._key, self._predictor = None, None
        release_cached_memory(device)

    def waiting(self, key: ModelKey, besides: Any = None) -> int:
        """How many callers not cancelled are loading ``key`` or waiting for it."""
        with self._asking_lock:
            return sum(
                1
                for entry in self._asking
                if entry is not besides and entry[0] == key and not entry[1].cancelled
            )

    def forget(self, predictor: Any) -> None:
        """Drop the reference to ``predictor`` (the widget frees it). Never waits for a
        load in progress: a model loaded meanwhile for old settings is replaced by the
        next :meth:`get`."""
        if predictor is not None and self._predictor is predictor:
            self._key, self._predictor = None, None


def gui_message(error: BaseException) -> str:
    """An error's text in the widget's words (the library speaks of CLI flags)."""
    if isinstance(error, CheckpointNotAvailable):
        if error.why:  # what to do first: a status line shows four lines of it
            return (
                f"no weights: {error.filename} is not downloaded and {error.why}. Choose "
                f"'local checkpoint' in the Model tab and pick {error.filename}, or press Run "
                f"once the hub can be reached to download it (in a terminal: `{error.command}`)"
            )
        return error.message_with(
            f"choose weights: 'local checkpoint' in the Model tab and pick {error.filename}"
        )
    if isinstance(error, HubFileMismatch):
        return error.message_with(
            "choose weights: 'local checkpoint' in the Model tab and pick a file you trust"
        )
    memory = out_of_memory(error)
    if memory == "host":
        return (
            "the computer ran out of memory for this image: close other programs, or choose "
            "model size large in the Model tab, then press Run again"
        )
    if memory == "gpu":
        return (
            "the GPU ran out of memory for this image: in the Model tab choose model size "
            "large, precision float16 or device cpu, then press Run again"
        )
    return str(error) or type(error).__name__


@dataclass(frozen=True)
class JobFailure:
    """An expected failure (bad checkpoint, no network, bad image), returned, not raised,
    so the widget reports it once, in words, and stays usable."""

    error: Exception


def run_job(
    key: ModelKey,
    predictor: FocusPredictor | None,
    planes: LayerPlanes,
    indices: list[tuple[int, ...]],
    tta: bool,
    control: RunControl | None = None,
    load: Callable[[ModelKey, RunControl], FocusPredictor] = load_alone,
) -> Generator[Progress, None, JobResult | JobFailure | None]:
    """Yields progress; returns the per-plane probabilities and official masks, a
    :class:`JobFailure`, or None when ``control`` was cancelled.

    Stages (in ``control``, which the widget polls for the elapsed time): loading the
    model, compiling the deformable-attention kernel (first run on a machine only),
    segmenting plane k/N (checked for a cancel between model stages), post-processing.
    """
    control = control or RunControl()
    try:
        with kernel_build_stage(control):
            result = yield from _segment(key, predictor, planes, indices, tta, control, load)
    except Cancelled:
        return None
    except (ValueError, OSError, RuntimeError) as error:
        return JobFailure(error)
    yield Progress("Done", 1.0)
    return result


def _segment(
    key: ModelKey,
    predictor: FocusPredictor | None,
    planes: LayerPlanes,
    indices: list[tuple[int, ...]],
    tta: bool,
    control: RunControl,
    load: Callable[[ModelKey, RunControl], FocusPredictor],
) -> Generator[Progress, None, JobResult]:
    """Load the model if needed, then segment each plane; raises :class:`Cancelled`."""
    import_ahead_of_layers()
    if predictor is None:
        control.set_stage(f"{LOADING} {key.describe()}")
        yield Progress(f"Loading {key.describe()}…", None)
        predictor = load(key, control)
    result = JobResult(predictor=predictor, key=key, indices=indices, tta=tta)
    for done, index in enumerate(indices):
        control.check()
        where = f" plane {done + 1}/{len(indices)}" if len(indices) > 1 else ""
        control.set_stage(f"segmenting{where}")
        yield Progress(f"Segmenting{where}…", done / len(indices))
        with watch_model(predictor.model, control):
            prediction = predictor.predict(planes.plane(index), tta=tta)
        result.probabilities.append(prediction.probability)
        result.masks.append(prediction.mask)
    return result
