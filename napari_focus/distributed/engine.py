"""``predict_dataset``: FOCUS over many images on a Ray cluster (or a local Ray instance)
with Ray Data: decoding in tasks, one model per actor, outputs written by the actors into
a folder every node sees, a manifest row per input."""

from __future__ import annotations

import contextlib
import math
import os
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..fs_text import is_utf8
from ..interrupts import interrupted_inside
from ..mask_provenance import Found, MadeBy, check_existing_masks, damaged_outputs
from . import journal
from .inputs import Job, find_sources, is_uri, plan_outputs
from .manifest import (
    MANIFEST_NAME,
    carried_rows,
    check_writable,
    earlier_rows,
    empty_row,
    normalize,
    write_manifest,
)
from .resources import DEFAULT_ROWS_PER_CALL, MAX_BLOCKS, check_resources, plan_resources
from .session import init_ray, quiet_ray
from .worker import MODEL_ERROR, FocusWorker, WorkerSettings, decode_batch


@dataclass
class DatasetRun:
    """What a run did: ``rows`` (one per input, manifest columns, input order), the
    manifest path, why inputs matched nothing (a sentence each), workers used and wall
    seconds."""

    rows: list[dict[str, Any]]
    manifest: Path
    unmatched: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # folders not listed, in words
    workers: int = 0
    seconds: float = 0.0
    other_weights: Found = field(default_factory=list)  # kept masks of other weights
    mask_folders: list[Path] = field(default_factory=list)  # earlier outputs left out
    other_names: list[tuple[Path, Path]] = field(default_factory=list)  # (left out, taken)
    kept_beside: int = 0  # outputs there before, kept while their input's others were made

    def count(self, status: str) -> int:
        return sum(1 for row in self.rows if row["status"] == status)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [row for row in self.rows if row["status"] == "failed"]


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C (or another ``KeyboardInterrupt``) stopped a run. Raised once the manifest
    records every output written before the stop; ``run`` is what was done (inputs not
    done are ``pending`` rows), ``cause`` the interrupt itself."""

    def __init__(self, run: DatasetRun, cause: BaseException) -> None:
        super().__init__("the run was interrupted")
        self.run = run
        self.cause = cause

    def __reduce__(self) -> tuple:  # pickles with what was done (as every error here)
        return type(self), (self.run, self.cause)


def _ordered(rows: Iterable[dict[str, Any]], sources: Sequence[str]) -> list[dict[str, Any]]:
    position = {source: i for i, source in enumerate(sources)}
    return sorted(rows, key=lambda r: position.get(r["source"], len(position)))


def predict_dataset(
    inputs: str | os.PathLike | Iterable[str | os.PathLike],
    out: str | os.PathLike,
    *,
    task: str,
    size: str | None = None,
    weights: str | os.PathLike | None = None,
    address: str | None = None,
    num_workers: int | None = None,
    gpus_per_worker: float | None = None,
    cpus_per_worker: float | None = None,
    batch_size: int | None = None,
    precision: str | None = None,
    compile: bool = False,
    tta: bool = False,
    probability: bool = False,
    image_format: str = "png",
    overwrite: bool = False,
    recursive: bool = False,
    manifest: str | os.PathLike | None = None,
    progress: bool = True,
    quiet: bool = False,
    checkpoint_seconds: float = 30.0,
) -> DatasetRun:
    """Segment every input with FOCUS on Ray Data and write the masks into ``out``.

    Args:
        inputs: files, folders, glob patterns, text files listing them, object-store URIs
            (see :mod:`napari_focus.distributed.inputs`).
        out: output folder, on storage every worker mounts (written by the workers).
            Names and formats as ``napari-focus predict``: ``<stem>.png|.tif`` (0/255),
            ``<stem>_probability.png|.tif`` with ``probability``.
        task, size, weights: the model: official hub weights of ``size`` (default
            large), or a local checkpoint (on shared storage; ``size``, if given, names
            its architecture, else the file's metadata or tensor shapes do).
        address: Ray cluster to join (``auto``: the one running on this machine,
            ``host:6379``, ``ray://host:10001``). None: the Ray instance this process
            already initialised, else the cluster of ``$RAY_ADDRESS`` (set inside a Ray
            job), else a new local instance for the run.
        num_workers, gpus_per_worker, cpus_per_worker: the actor pool, one model per
            actor; see :func:`plan_resources` for the defaults.
        batch_size: images per model call (None: the predictor's default); each worker
            call gets ``batch_size`` images (if None: 8 on a GPU, 1 on CPUs).
        precision: passed to the predictor's loader (None: its default).
        compile: compile the model in every worker (``FocusPredictor.compile``).
        overwrite: redo inputs whose outputs exist (default: skip them).
        recursive: folders give the images of their subfolders too, written into the
            same subfolders of ``out`` (``out`` itself is left out of the walk).
        manifest: results path (``.parquet`` or ``.csv``); default
            ``out/focus_manifest.parquet``. Rewritten every ``checkpoint_seconds`` while
            running (inputs not done yet are ``pending``) and at the end.
        progress: Ray Data's progress bars.
        quiet: keep Ray's own log lines (start-up, execution plans, warnings) off the
            terminal; errors of the run still raise.

    Each input is predicted and written once: a worker that dies is restarted by Ray and
    its batches retried; outputs an earlier attempt wrote are not written again. An input
    that fails (unreadable, too small, a write error) is a ``failed`` manifest row.
    Every output written before an interrupt is in the manifest with its scores (the
    workers journal each row as they write, see :mod:`.journal`).

    Raises:
        ValueError: no input images, bad settings, an output folder that is a URI, an
            output folder or manifest that cannot be written or that is not a manifest.
        OutputReplacesInput: a ValueError: a mask or probability map would replace an
            input image (e.g. ``out`` is the input folder).
        MasksOfAnotherTask: a ValueError: masks the run would keep were predicted for
            another task (see :mod:`napari_focus.mask_provenance`); masks of other
            weights of the task are kept and listed in ``DatasetRun.other_weights``.
        RuntimeError: the run itself failed (e.g. the model cannot be loaded on the
            workers); the manifest keeps what was done.
        RunInterrupted: a KeyboardInterrupt, raised after the manifest is written.
    """
    from ..presets import check_task

    started = time.perf_counter()
    task = check_task(task)
    if is_uri(str(out)):
        raise ValueError(
            f"the output folder must be a path every worker mounts (e.g. NFS), not {out}"
        )
    if batch_size is not None and batch_size < 1:
        raise ValueError("batch size must be at least 1")
    check_resources(num_workers, gpus_per_worker, cpus_per_worker)
    if weights is not None:
        if not Path(weights).is_file():
            raise ValueError(f"weights file not found: {weights}")
        weights = str(Path(weights).resolve())
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    out = Path(out).resolve()
    found = find_sources([str(i) for i in items], recursive=recursive, exclude=[out])
    sources, unmatched = found.sources, found.unmatched
    if not sources:
        why = "; ".join(found.unreadable) or f"nothing matches {', '.join(map(str, items))}"
        raise ValueError(f"no input images ({why})")
    if undecodable := [source for source in sources if not is_utf8(source)]:
        more = f" and {len(undecodable) - 1} more" if len(undecodable) > 1 else ""
        raise ValueError(
            f"{undecodable[0]!r}{more}: file names that are not UTF-8, which Ray's tables "
            "cannot carry; rename them to UTF-8 (convmv -f latin1 -t utf8), or use the "
            "local engine (--engine local)"
        )

    manifest_path = Path(manifest) if manifest is not None else out / MANIFEST_NAME
    if manifest_path.suffix.lower() not in (".parquet", ".csv"):
        raise ValueError(
            f"--manifest {manifest_path}: a manifest is a .parquet or .csv file; give a "
            "name that ends in one of them"
        )
    plan = plan_outputs(
        sources, out, image_format=image_format, probability=probability,
        overwrite=overwrite, subfolders=found.subfolders,
    )  # fmt: skip
    made_by = MadeBy.of_run(task, size, weights)
    kept = [path for job in plan.existing for path in job.outputs()]  # maps too
    if not overwrite:  # outputs kept while the missing one is written
        kept += [path for job in plan.todo for path in job.outputs() if Path(path).exists()]
    existing = check_existing_masks(kept, made_by)  # another task's: refused
    damaged = damaged_outputs(  # an empty or cut file at an output's name: not done
        ((job.source, job.outputs()) for job in (*plan.existing, *plan.todo)),
        existing.unreadable,
    )
    todo = [job for job in plan.todo if job.source not in damaged]
    outputs_there = [os.path.exists(path) for job in todo for path in job.outputs()]
    kept_beside = 0 if overwrite else sum(outputs_there)
    previous = earlier_rows(manifest_path)
    check_writable(out, manifest_path)
    out.mkdir(parents=True, exist_ok=True)
    ended = journal.ended_runs(out)  # stopped runs' rows, for outputs they wrote
    kept_jobs = [job for job in plan.existing if job.source not in damaged]
    rows = carried_rows(kept_jobs, previous, journal.read_rows(ended))
    rows += [
        empty_row(job, "failed", damaged[job.source])
        for job in (*plan.existing, *plan.todo)
        if job.source in damaged
    ]
    # a clash writes nothing: its row names no output (the paths are another input's)
    rows += [
        {**empty_row(job, "failed", reason), "mask": "", "probability": ""}
        for job, reason in plan.clashes
    ]

    workers, interrupted, run_journal = 0, None, journal.new_run_folder(out)
    if todo:
        settings = WorkerSettings(
            task=task,
            size=size,
            weights=str(weights) if weights else None,
            precision=precision,
            tta=tta,
            batch_size=batch_size,
            compile=compile,
            overwrite=overwrite,
            run_started_ns=journal.storage_now(out),
            journal=str(run_journal),
        )
        done, workers, interrupted = _run(
            todo,
            settings,
            address=address,
            num_workers=num_workers,
            gpus_per_worker=gpus_per_worker,
            cpus_per_worker=cpus_per_worker,
            rows_per_call=batch_size,
            progress=progress,
            quiet=quiet,
            checkpoint=lambda partial: write_manifest(
                _ordered(rows + partial, sources), manifest_path
            ),
            checkpoint_seconds=checkpoint_seconds,
        )
        rows += done
        if interrupted is not None:  # the inputs not done, for the rerun to go on
            finished = {row["source"] for row in done}
            rows += [empty_row(job, "pending") for job in todo if job.source not in finished]
        outputs = (output for job in todo for output in job.outputs())
        for leftover in journal.leftover_temps(outputs, settings.run_started_ns):
            leftover.unlink(missing_ok=True)
    rows = _ordered(rows, sources)
    write_manifest(rows, manifest_path)
    # their rows are in the manifest now; a stopped run's journal, with its stop file,
    # stays for workers that may still hold batches (the next run reads and removes it)
    journal.remove([*ended] if interrupted is not None else [run_journal, *ended])
    run = DatasetRun(
        rows=rows,
        manifest=manifest_path,
        unmatched=unmatched,
        unreadable=found.unreadable,
        workers=workers,
        seconds=time.perf_counter() - started,
        other_weights=existing.other_weights,
        mask_folders=list(dict.fromkeys(found.mask_folders)),
        other_names=found.other_names,
        kept_beside=kept_beside,
    )
    if interrupted is not None:
        raise RunInterrupted(run, interrupted) from interrupted
    return run


def _run(
    jobs: list[Job],
    settings: WorkerSettings,
    *,
    address: str | None,
    num_workers: int | None,
    gpus_per_worker: float | None,
    cpus_per_worker: float | None,
    rows_per_call: int | None,
    progress: bool,
    quiet: bool,
    checkpoint: Any,
    checkpoint_seconds: float,
) -> tuple[list[dict[str, Any]], int, KeyboardInterrupt | None]:
    """Run the jobs; returns their rows, the workers used and the interrupt that stopped
    the run (None when it ran to the end)."""
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        init_ray(ray, address, quiet)
    done: list[dict[str, Any]] = []
    quieted = contextlib.ExitStack()
    try:
        if quiet:
            quieted.enter_context(quiet_ray())
        node_cpus = max(
            (n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")),
            default=0.0,
        )
        resources = plan_resources(
            ray.cluster_resources(),
            node_cpus,
            num_workers=num_workers,
            gpus_per_worker=gpus_per_worker,
            cpus_per_worker=cpus_per_worker,
        )
        on_gpu = resources.gpus_per_worker > 0
        settings = WorkerSettings(
            **{
                **settings.as_dict(),
                "device": "cuda" if on_gpu else "cpu",
                "threads": max(1, math.floor(resources.cpus_per_worker)),
            }
        )
        rows_per_call = rows_per_call or DEFAULT_ROWS_PER_CALL["gpu" if on_gpu else "cpu"]
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = progress
        blocks = max(1, min(math.ceil(len(jobs) / rows_per_call), MAX_BLOCKS))
        dataset = ray.data.from_items([job.as_dict() for job in jobs], override_num_blocks=blocks)
        # On CPU workers the decoding asks for the same CPUs as the worker, so Ray Data
        # fuses it into the worker (no CPUs held back for idle decoders); next to GPU
        # workers it runs in separate one-CPU tasks that keep the GPUs fed.
        dataset = dataset.map_batches(
            decode_batch,
            batch_size=rows_per_call,
            batch_format="numpy",
            num_cpus=1.0 if on_gpu else resources.cpus_per_worker,
        )
        dataset = dataset.map_batches(
            FocusWorker,
            fn_constructor_kwargs={"settings": settings.as_dict()},
            compute=ray.data.ActorPoolStrategy(
                size=resources.workers,
                max_concurrent_calls_per_actor=resources.calls_per_worker,
                enable_true_multi_threading=resources.calls_per_worker > 1,
            ),
            batch_size=rows_per_call,
            batch_format="numpy",
            num_cpus=resources.cpus_per_worker,
            num_gpus=resources.gpus_per_worker if on_gpu else None,
        )
        pending = {job.source: job for job in jobs}
        last, interval = time.monotonic(), checkpoint_seconds
        batches = iter(dataset.iter_batches(batch_size=None, batch_format="numpy"))
        try:
            for batch in batches:
                for index in range(len(batch["source"])):
                    row = normalize({column: batch[column][index] for column in batch})
                    pending.pop(str(row["source"]), None)
                    done.append(row)
                if time.monotonic() - last > interval:
                    began = time.monotonic()
                    checkpoint(done + [empty_row(job, "pending") for job in pending.values()])
                    last = time.monotonic()
                    # a million rows take seconds to write: keep that under a tenth
                    interval = max(checkpoint_seconds, 10 * (last - began))
        except BaseException as error:  # stop the workers, keep what was done
            journal.request_stop(Path(settings.journal), workers_stay=not started_here)
            with contextlib.suppress(Exception):
                batches.close()  # ends the execution: its actors are stopped
            if started_here:
                ray.shutdown()
            done += _journaled(settings.journal, pending)
            checkpoint(done + [empty_row(job, "pending") for job in pending.values()])
            if isinstance(error, KeyboardInterrupt):
                return done, resources.workers, error
            if interrupted_inside(error):  # Ctrl-C met inside Ray Data's iterator
                return done, resources.workers, KeyboardInterrupt()
            if not isinstance(error, Exception):
                raise
            reasons = re.findall(rf"{re.escape(MODEL_ERROR)}(.+)", str(error))
            if reasons:
                raise RuntimeError(f"cannot load the model: {reasons[-1]}") from error
            raise RuntimeError(f"the Ray run stopped: {error}") from error
        return done, resources.workers, None
    finally:
        if started_here:
            ray.shutdown()
        quieted.close()


def _journaled(folder: str, pending: dict[str, Job]) -> list[dict[str, Any]]:
    """Rows the workers journaled for ``pending`` inputs (removed from it): outputs
    written whose rows had not reached this process when the run stopped."""
    found = []
    for row in map(normalize, journal.read_rows([Path(folder)])):
        if row["status"] == "written" and pending.pop(row["source"], None) is not None:
            found.append(row)
    return found
