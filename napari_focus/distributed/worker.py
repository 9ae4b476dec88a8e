"""The two stages a distributed run maps over its inputs: decoding (Ray tasks) and
prediction + writing (one FOCUS model per actor). Plain functions and classes: Ray Data
runs them, nothing here imports Ray."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..io import failure_text
from ..mask_provenance import MadeBy, read_made_by
from ..pipeline import AppearedMeanwhile, predict_isolating
from . import journal
from .inputs import read_source

#: start of the error a worker raises when it cannot load the model (found by the driver
#: in Ray's wrapped error)
MODEL_ERROR = "napari-focus worker cannot load the model: "
JOB_COLUMNS = ("source", "name", "mask", "probability")
#: Columns of the rows the workers return (see :mod:`.manifest` for their meaning).
RESULT_COLUMNS = (
    *JOB_COLUMNS,
    "status",
    "error",
    "uncertainty",
    "foreground",
    "seconds",
    "width",
    "height",
    "worker",
)


def decode_batch(batch: dict[str, Any]) -> dict[str, list]:
    """Read each source as ``(H, W, 3)`` uint8 RGB (the conversion ``predict`` applies
    itself), carried as raw bytes so images of any size share a batch. An image that
    cannot be read keeps its row, with ``error`` set."""
    from ..io import check_single_image
    from ..prediction_files import source_name
    from ..transforms import to_rgb_uint8

    out: dict[str, list] = {c: [] for c in (*JOB_COLUMNS, "pixels", "height", "width", "error")}
    for index in range(len(batch["source"])):
        for column in JOB_COLUMNS:
            out[column].append(str(batch[column][index]))
        try:
            source = str(batch["source"][index])
            image = check_single_image(read_source(source), source_name(source))
            rgb = np.ascontiguousarray(to_rgb_uint8(image))
            out["pixels"].append(rgb.tobytes())
            out["height"].append(int(rgb.shape[0]))
            out["width"].append(int(rgb.shape[1]))
            out["error"].append("")
        except Exception as error:  # a corrupt file is a failed row, not a failed run
            out["pixels"].append(b"")
            out["height"].append(0)
            out["width"].append(0)
            out["error"].append(failure_text(error))
    return out


@dataclass(frozen=True)
class WorkerSettings:
    """What every actor needs to load the model and write its outputs."""

    task: str
    size: str | None = None  # None: large, or what a local checkpoint holds
    weights: str | None = None
    device: str = "cpu"
    threads: int = 1  # torch threads of a CPU worker
    precision: str | None = None  # None: the loader's default
    tta: bool = False
    batch_size: int | None = None  # images per forward (None: the predictor's default)
    compile: bool = False
    overwrite: bool = False
    run_started_ns: int = 0  # storage clock at the start of the run (see FocusWorker)
    journal: str = ""  # the run's journal folder (see .journal); "" for none

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_predictor(settings: WorkerSettings) -> Any:
    import warnings

    from ..checkpoint_identity import TaskMismatchWarning
    from ..predictor import FocusPredictor

    options: dict[str, Any] = {"device": settings.device}
    if settings.precision is not None:
        options["precision"] = settings.precision
    with warnings.catch_warnings():  # the driver said it once, in the command line's words
        warnings.simplefilter("ignore", TaskMismatchWarning)
        return FocusPredictor.load(
            settings.task, size=settings.size, weights=settings.weights, **options
        )


def _say_kernel_fallbacks_in_words() -> None:
    """In this worker process, a kernel fallback is one ``napari-focus:`` line (Ray shows
    it on the driver, prefixed with the worker) instead of a Python warning."""
    import warnings

    from ..cli_common import say_kernel_fallbacks

    if not getattr(warnings.showwarning, "says_kernel_fallbacks", False):
        warnings.showwarning = say_kernel_fallbacks(warnings.showwarning)


def _needs_write(path: str, settings: WorkerSettings, made_by: MadeBy) -> bool:
    """Whether to write ``path``. A file from before the run (modified before
    ``run_started_ns``) is replaced with ``overwrite``, else kept (a mask beside the
    probability map a rerun adds). One modified since is this run's own when it has the
    run's record (an earlier attempt of the batch, on a worker that died after writing
    it): not written again; any other appeared meanwhile and is kept, failing the image
    (:class:`AppearedMeanwhile`, as the local engine does), unless ``overwrite``."""
    try:
        modified = os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return True
    if modified < settings.run_started_ns:
        return settings.overwrite
    if read_made_by(path) == made_by:
        return False
    if settings.overwrite:
        return True
    raise AppearedMeanwhile(Path(path).name)


class FocusWorker:
    """One FOCUS model, loaded once; each call predicts a batch of decoded images, writes
    their masks (and probability maps) and returns one result row per input.

    Calls may run in two threads at once: the model serves one at a time, so one batch
    is predicted while the previous one is written and scored."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = WorkerSettings(**settings)
        _say_kernel_fallbacks_in_words()
        if self.settings.device == "cpu":
            import torch

            torch.set_num_threads(max(1, self.settings.threads))
        try:
            self.predictor = load_predictor(self.settings)
            if self.settings.compile:
                self.predictor.compile()
        except Exception as error:
            raise RuntimeError(f"{MODEL_ERROR}{error}") from error
        self.model_lock = threading.Lock()
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        settings = self.settings
        self.made_by = MadeBy.of_run(settings.task, settings.size, settings.weights)
        self.record = self.made_by.text()

    def _write(self, row: dict[str, Any], prediction: Any) -> None:
        from ..io import write_mask, write_probability
        from ..quality import uncertainty

        writes: list[tuple[str, Callable[..., Any], np.ndarray]] = [
            (row["mask"], write_mask, prediction.mask)
        ]
        if row["probability"]:
            writes.append((row["probability"], write_probability, prediction.probability))
        row["uncertainty"] = uncertainty(prediction.probability)
        row["foreground"] = float(np.count_nonzero(prediction.mask)) / prediction.mask.size
        # before the journal row: a file that appeared meanwhile gets none
        writes = [w for w in writes if _needs_write(w[0], self.settings, self.made_by)]
        if self.settings.journal:  # first: an output on disk always has its row there
            # an output this replaces (overwrite) is not the row's until rewritten
            since = self.settings.run_started_ns if self.settings.overwrite else 0
            with contextlib.suppress(OSError):
                journal.append(
                    self.settings.journal,
                    {**row, "status": "written", journal.WRITTEN_SINCE: since},
                )
        for path, write, data in writes:
            try:  # one saved there since the check is kept, as the local engine keeps it
                write(path, data, record=self.record, replace=self.settings.overwrite)
            except FileExistsError as error:
                raise AppearedMeanwhile(Path(path).name) from error
        row["status"] = "written"

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        count = len(batch["source"])
        if journal.stop_requested(self.settings.journal):  # the run was stopped
            return _not_done(batch, self.worker)
        rows = [
            {
                **{c: str(batch[c][i]) for c in JOB_COLUMNS},
                "status": "failed",
                "error": str(batch["error"][i]),
                "uncertainty": float("nan"),
                "foreground": float("nan"),
                "seconds": float("nan"),
                "width": int(batch["width"][i]),
                "height": int(batch["height"][i]),
                "worker": self.worker,
            }
            for i in range(count)
        ]
        readable = [i for i in range(count) if not rows[i]["error"]]
        images = [
            np.frombuffer(batch["pixels"][i], dtype=np.uint8).reshape(
                rows[i]["height"], rows[i]["width"], 3
            )
            for i in readable
        ]
        # resizing and edge injection outside the model lock: they overlap the forward of
        # the batch the other thread is predicting
        ready = []
        for i, image in zip(readable, images, strict=True):
            try:
                ready.append((i, self.predictor.prepare(image, tta=self.settings.tta)))
            except Exception as error:  # this image failed, the others go on
                rows[i]["error"] = failure_text(error)
        with self.model_lock:
            predictions = predict_isolating(
                self.predictor, [p for _, p in ready], self.settings.batch_size
            )
        for (i, _), (result, seconds) in zip(ready, predictions, strict=True):
            row = rows[i]
            row["seconds"] = seconds
            if isinstance(result, Exception):
                row["error"] = failure_text(result)
                continue
            if journal.stop_requested(self.settings.journal):
                row["status"], row["error"] = "pending", ""
                continue
            try:
                self._write(row, result)
            except Exception as error:  # disk full, permissions: this input failed
                row["status"], row["error"] = "failed", failure_text(error)
        return {c: [row[c] for row in rows] for c in RESULT_COLUMNS}


def _not_done(batch: dict[str, Any], worker: str) -> dict[str, list]:
    """Rows for a batch a stopped run no longer wants (nothing predicted or written)."""
    count = len(batch["source"])
    rows = [
        {**{c: str(batch[c][i]) for c in JOB_COLUMNS}, "status": "pending", "error": "",
         "uncertainty": float("nan"), "foreground": float("nan"), "seconds": float("nan"),
         "width": int(batch["width"][i]), "height": int(batch["height"][i]), "worker": worker}
        for i in range(count)
    ]  # fmt: skip
    return {c: [row[c] for row in rows] for c in RESULT_COLUMNS}
