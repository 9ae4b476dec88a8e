"""Pipelined batch prediction over files: reading and preparing images in worker
threads ahead of the model, writing behind it, with bounded queues.

The model runs in the calling thread on batches of prepared images; decoding,
resizing and edge injection (PIL, OpenCV: they release the GIL) run in
``workers`` threads, at most a few batches ahead; masks are written by one
writer thread, at most a few batches behind. With ``batch_size`` 1 (the CPU
default) every image's result is what :meth:`FocusPredictor.predict` gives, so
the files are byte-identical to a serial run; larger batches equal it up to
float rounding (see :meth:`FocusPredictor.predict_batch`). Outputs are written
atomically (:mod:`napari_focus.atomic`), so an interrupted run leaves only this
process's temporary files, which the caller removes with
:func:`napari_focus.atomic.remove_own_temps`.
"""

from __future__ import annotations

import errno
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .io import failure_text

if TYPE_CHECKING:
    from .predictor import FocusPredictor, Prediction, PreparedInput

@dataclass(frozen=True)
class Job:
    """One image and where its outputs go (``probability`` None: no probability map).
    Outputs listed in ``keep`` exist already and are left as they are (a mask someone
    may have corrected, when only its probability map is missing). With ``overwrite``
    False (``predict`` without ``--overwrite``) an output that appears while the run goes
    on (saved from napari, say) is not replaced either: the image fails, saying so."""

    source: Path
    mask: Path
    probability: Path | None = None
    keep: tuple[Path, ...] = ()
    overwrite: bool = True


#: write errors after which no image can be written: the run stops instead of predicting
#: every remaining image only to fail it (disk full, quota exceeded, read-only file system)
NO_MORE_WRITES = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


@dataclass
class RunSummary:
    written: int = 0
    failures: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: BaseException | None = None  # the KeyboardInterrupt that stopped the run
    stopped: str | None = None  # why no further image was predicted (a full disk)
    not_done: int = 0  # images neither written nor failed when the run stopped

    @property
    def images_per_second(self) -> float:
        done = self.written + len(self.failures)
        return done / self.seconds if self.seconds > 0 else 0.0


def _read_and_prepare(predictor: FocusPredictor, job: Job, tta: bool) -> PreparedInput:
    from .io import check_single_image, read_image

    image = check_single_image(read_image(job.source), job.source.name)
    return predictor.prepare(image, tta=tta)


def _write(job: Job, prediction: Prediction, record: str | None) -> None:
    from .io import write_mask, write_probability

    outputs = [(job.mask, write_mask, prediction.mask)]
    if job.probability is not None:
        outputs.append((job.probability, write_probability, prediction.probability))
    for path, write, data in outputs:
        if path in job.keep:
            continue
        try:
            write(path, data, record=record, replace=job.overwrite)
        except FileExistsError as error:
            raise AppearedMeanwhile(path.name) from error


class AppearedMeanwhile(FileExistsError):
    """An output file appeared after the run planned to write it; it was kept."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"{name} appeared in the output folder while the run went on; it is kept "
            "(--overwrite replaces it)"
        )
        self.name = name

    def __reduce__(self) -> tuple:  # survives pickling (Ray workers)
        return (type(self), (self.name,))


def run_pipeline(
    predictor: FocusPredictor,
    jobs: Sequence[Job],
    *,
    tta: bool = False,
    batch_size: int | None = None,
    workers: int = 2,
    on_done: Callable[[Job, str | None], None] | None = None,
    record: str | None = None,
) -> RunSummary:
    """Predict and write every job; a failing image is reported and the run goes on.

    ``record``: the text every output keeps saying which model made it
    (:class:`~napari_focus.mask_provenance.MadeBy`), or None.

    ``on_done(job, error)`` is called in the calling thread after each image is
    written (``error`` None) or has failed (the message). A ``KeyboardInterrupt``
    (Ctrl-C, or a SIGTERM turned into one by the caller) stops the run after the
    writes in flight; the summary then holds it in ``interrupted``.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    per_batch = batch_size or predictor.default_batch_size
    summary = RunSummary()
    start = time.perf_counter()
    readers = ThreadPoolExecutor(workers, thread_name_prefix="focus-read")
    writer = ThreadPoolExecutor(1, thread_name_prefix="focus-write")
    ahead: deque[tuple[Job, Future]] = deque()
    behind: deque[tuple[Job, Future]] = deque()
    pending = iter(jobs)
    lookahead = max(2 * per_batch, 2 * workers)

    def report(job: Job, error: str | None) -> None:
        if error is None:
            summary.written += 1
        else:
            summary.failures.append((job.source, error))
        if on_done is not None:
            on_done(job, error)

    def settle_writes(limit: int) -> None:
        while len(behind) > limit:
            job, future = behind.popleft()
            if future.cancelled():  # interrupted before it started: neither written nor failed
                continue
            error = future.exception()
            if error is None or isinstance(error, AppearedMeanwhile):
                report(job, None if error is None else str(error))
            else:
                report(job, f"cannot write: {failure_text(error)}")
                if getattr(error, "errno", None) in NO_MORE_WRITES and summary.stopped is None:
                    summary.stopped = failure_text(error)  # every next image would fail

    try:
        while True:
            for job in pending:
                ahead.append((job, readers.submit(_read_and_prepare, predictor, job, tta)))
                if len(ahead) >= lookahead:
                    break
            if not ahead:
                break
            batch = []
            while ahead and len(batch) < per_batch:
                job, future = ahead.popleft()
                error = future.exception()
                if error is None:
                    batch.append((job, future.result()))
                else:
                    report(job, failure_text(error))
            if not batch:
                continue
            outcomes = predict_isolating(predictor, [prepared for _, prepared in batch], per_batch)
            for (job, _), (outcome, _) in zip(batch, outcomes, strict=True):
                if isinstance(outcome, Exception):
                    report(job, failure_text(outcome))
                else:
                    behind.append((job, writer.submit(_write, job, outcome, record)))
            settle_writes(limit=2 * per_batch)
            if summary.stopped is not None:
                for _, future in ahead:
                    future.cancel()
                break
        settle_writes(limit=0)
    except KeyboardInterrupt as interrupt:
        summary.interrupted = interrupt
        for _, future in ahead:
            future.cancel()
        for _, future in behind:  # writes not started are dropped, those running finish
            future.cancel()
        writer.shutdown(wait=True)
        settle_writes(limit=0)
    finally:
        readers.shutdown(wait=True, cancel_futures=True)
        writer.shutdown(wait=True)
        summary.seconds = time.perf_counter() - start
    summary.not_done = len(jobs) - summary.written - len(summary.failures)
    return summary


def predict_isolating(
    predictor: FocusPredictor, inputs: Sequence[PreparedInput], per_batch: int | None
) -> list[tuple[Prediction | Exception, float]]:
    """(prediction or the exception it raised, seconds) per input. A batch that fails
    as a whole is redone one image at a time, so that only the images that really fail
    are reported; a batch's seconds are shared equally among its images."""
    if not inputs:
        return []
    start = time.perf_counter()
    try:
        predictions = predictor.predict_prepared(inputs, batch_size=per_batch)
    except Exception as error:
        if len(inputs) == 1:
            return [(error, time.perf_counter() - start)]
    else:
        share = (time.perf_counter() - start) / max(1, len(inputs))
        return [(prediction, share) for prediction in predictions]
    results: list[tuple[Prediction | Exception, float]] = []
    for prepared in inputs:
        start = time.perf_counter()
        outcome: Prediction | Exception
        try:
            (outcome,) = predictor.predict_prepared([prepared], batch_size=1)
        except Exception as error:  # report this image, keep going with the others
            outcome = error
        results.append((outcome, time.perf_counter() - start))
    return results
