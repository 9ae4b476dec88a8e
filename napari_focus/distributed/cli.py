"""``napari-focus predict ... --engine ray``: the predict command on a Ray cluster."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ENGINES = ("local", "ray")


def series_hint(
    images: Path, series: Path, masks: Path, count: int, clashes: int = 0,
    subfolders: bool = False,
) -> str:  # fmt: skip
    """What ``--series`` prepared, and how to open it in the widget's Series tab (the
    names of its fields). ``clashes``: inputs that failed for another input's output
    name (those pairs start without a mask: the mask could be either's); ``subfolders``:
    the series takes images of subfolders (its checkbox must be ticked)."""
    shared = (
        ", but images that share a stem with another start without one: rename one of "
        "them and predict again"
        if clashes
        else ""
    )
    return (
        f"series of {images} in {series}, {count} image{'' if count == 1 else 's'}, most "
        "doubtful first; in napari, "
        f"open it in the FOCUS widget's Series tab with 'image folder' {images}, 'series "
        f"folder' {series} and 'start masks' {masks} (each image starts from its predicted "
        f"mask{shared}){', include subfolders ticked' if subfolders else ''}, then Open "
        "folder"
    )


def add_ray_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--engine`` and the Ray options to the ``predict`` parser."""
    from ..cli_arguments import path_argument, positive_float

    group = parser.add_argument_group(
        "distributed (--engine ray, needs Ray: napari-focus's 'ray' extra)"
    )
    group.add_argument(
        "--engine",
        choices=ENGINES,
        default="local",
        help="local: this process; ray: a Ray cluster, or a local Ray instance without --address",
    )
    group.add_argument("--address", help="Ray cluster to join: auto, HOST:6379 or ray://HOST:10001")
    group.add_argument(
        "--num-workers",
        type=int,
        metavar="N",
        help="model copies (default: one per GPU; on CPUs one per node)",
    )
    group.add_argument(
        "--gpus-per-worker",
        type=float,
        metavar="F",
        help="GPUs per model copy, e.g. 0.5 for two per GPU (default: 1 with GPUs, else 0)",
    )
    group.add_argument(
        "--cpus-per-worker",
        type=positive_float,
        metavar="F",
        help="CPUs per model copy (default: 1 next to a GPU; on CPUs a node's CPUs "
        "divided among its workers); a CPU worker runs that many torch threads",
    )
    group.add_argument(
        "--manifest",
        metavar="PATH",
        type=path_argument,
        help="results per image, .parquet or .csv (default: OUT/focus_manifest.parquet)",
    )
    group.add_argument(
        "--series",
        metavar="DIR",
        type=path_argument,
        help="also prepare a labeling series in DIR, most doubtful image first",
    )


def _malformed_address(address: str | None) -> bool:
    """Whether ``address`` is of none of the forms ``ray.init`` takes here: auto, local,
    ``HOST:PORT`` or ``ray://HOST:PORT``."""
    if not address or address in ("auto", "local"):
        return False
    scheme, _, rest = address.rpartition("://")
    host, _, port = rest.rpartition(":")
    return scheme not in ("", "ray") or not host or not port.isdigit()


def _unreachable_address(address: str | None, timeout: float = 3.0) -> str | None:
    """Why a ``HOST:PORT`` or ``ray://HOST:PORT`` cluster address cannot be reached (Ray
    itself retries for minutes), or None when it answers or is not of that form."""
    import socket

    if not address or address == "auto":
        return None
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        return None
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return None
    except OSError as error:
        return error.strerror or type(error).__name__


def _summary(run: Any, out: Path, interrupted: bool) -> str:
    from ..cli_common import predict_summary

    workers = f"{run.workers} Ray worker{'' if run.workers == 1 else 's'}"
    status = "interrupted: " if interrupted else ""
    counts = predict_summary(run.count("written"), run.count("skipped"), len(run.failed),
                             len(run.unmatched), out, run.kept_beside,
                             len(run.unreadable))  # fmt: skip
    return f"napari-focus: {status}{counts} ({workers}, {run.seconds:.1f} s)"


def _fail(message: str) -> int:
    from ..cli_common import EXIT_SETUP_ERROR

    print(f"napari-focus: {message}", file=sys.stderr)
    return EXIT_SETUP_ERROR


def run_predict_ray(args: argparse.Namespace) -> int:
    """Run ``predict`` with ``--engine ray``; exit codes as the local engine's."""
    from ..cli_common import EXIT_FAILED_IMAGES

    if args.device not in ("auto", "cpu", "cuda"):
        return _fail(
            f"--device {args.device} does not apply to --engine ray: workers use a GPU "
            "when --gpus-per-worker is above 0, else their CPUs"
        )
    try:
        import ray  # noqa: F401
    except ImportError:
        return _fail(
            "--engine ray needs Ray: pip install 'ray[data]>=2.60,<3' (napari-focus's 'ray' "
            "extra)"
        )
    if _malformed_address(args.address):
        return _fail(f"--address {args.address}: give the head node as HOST:PORT (its port, "
                     "6379 unless changed), ray://HOST:PORT for Ray Client, or auto")  # fmt: skip
    unreachable = _unreachable_address(args.address)
    if unreachable:
        return _fail(
            f"--address {args.address}: nothing answers there ({unreachable}); start the "
            "cluster's head (`ray start --head`) or check the address"
        )
    from ..atomic import WriteError
    from ..cli_common import (
        masks_of_another_task_message,
        other_names_note,
        other_weights_note,
        out_replaces_input_message,
        warn_if_weights_of_another_task,
    )
    from ..mask_provenance import MadeBy, MasksOfAnotherTask, mask_folders_note
    from ..prediction_files import OutputReplacesInput
    from .engine import predict_dataset
    from .manifest import RANKING_NAME, image_folder_of, order_series, write_ranking

    gpus = args.gpus_per_worker
    if gpus is None:  # --device cuda: workers on GPUs, refused where the cluster has none
        gpus = {"cpu": 0.0, "cuda": 1.0}.get(args.device)
    elif args.device == "cuda" and gpus == 0:
        return _fail("--device cuda asks for a GPU and --gpus-per-worker 0 for none; leave "
                     "one of them out")  # fmt: skip
    if gpus == 0 and getattr(args, "precision", None) == "float16":  # on any workers' CPUs
        return _fail("--precision float16 needs a GPU and the workers run on CPUs; use "
                     "float32, or bfloat16 on CPUs with AVX-512 BF16 / AMX")  # fmt: skip
    out = Path(args.out or f"focus_{args.task}_masks")
    from ..cli_common import sigterm_as_interrupt, weights_file_problem

    problem = weights_file_problem(args.weights) if args.weights else None
    if problem:  # the workers load the file this machine resolves
        return _fail(f"--weights {args.weights}: {problem}")
    warn_if_weights_of_another_task(args)  # once here, not once per worker
    problem = _series_problem(args.series, args.inputs) if args.series else None
    if problem:
        return _fail(problem)
    from ..series.rank_cli import replaceable_ranking
    from .manifest import MANIFEST_NAME

    ranking_path = Path(args.manifest or out / MANIFEST_NAME).with_name(RANKING_NAME)
    if not replaceable_ranking(ranking_path):  # the run writes its ranking there
        return _fail(f"{ranking_path} exists and is not a ranking CSV: the run would replace "
                     "it with its ranking; move it away, or choose another --out or "
                     "--manifest")  # fmt: skip
    if not args.recursive and not args.quiet:
        from ..cli_predict import note_images_in_subfolders

        note_images_in_subfolders(args.inputs, out)
    from .engine import RunInterrupted

    try:
        with sigterm_as_interrupt():
            run = predict_dataset(
                args.inputs,
                out,
                task=args.task,
                size=args.size,
                weights=args.weights,
                address=args.address,
                num_workers=args.num_workers,
                gpus_per_worker=gpus,
                cpus_per_worker=args.cpus_per_worker,
                batch_size=getattr(args, "batch_size", None),
                precision=getattr(args, "precision", None),
                compile=getattr(args, "compile", False),
                tta=args.tta,
                probability=args.probability,
                image_format=args.format,
                overwrite=args.overwrite,
                recursive=args.recursive,
                manifest=args.manifest,
                progress=not args.quiet,
                quiet=args.quiet,
            )
    except RunInterrupted as stop:
        return _say_interrupted(stop, out)
    except OutputReplacesInput as error:
        return _fail(out_replaces_input_message(out, error))
    except MasksOfAnotherTask as error:
        return _fail(masks_of_another_task_message(out, error))
    except WriteError as error:  # the manifest, at the end or a checkpoint: the masks stay
        print(f"napari-focus: {error}; the masks written so far stay: make room (or choose "
              "another --out) and run the same command again: it skips them",
              file=sys.stderr)  # fmt: skip
        return EXIT_FAILED_IMAGES
    except (ValueError, RuntimeError, ConnectionError) as error:  # flags, model, cluster
        return _fail(str(error))

    for reason in [*run.unmatched, *run.unreadable]:
        print(f"napari-focus: {reason}", file=sys.stderr)
    if run.mask_folders and not args.quiet:
        print(f"napari-focus: note: {mask_folders_note(run.mask_folders)}", file=sys.stderr)
    if run.other_names and not args.quiet:
        print(f"napari-focus: {other_names_note(run.other_names)}", file=sys.stderr)
    if run.other_weights:
        made_by = MadeBy.of_run(args.task, args.size, args.weights)
        print(f"napari-focus: {other_weights_note(run.other_weights, made_by)}", file=sys.stderr)
    folder = image_folder_of(run.rows, out)  # the ranking names images by paths below it
    try:
        ranking: Path | None = write_ranking(
            run.rows, run.manifest.with_name(RANKING_NAME), folder
        )
    except OSError as error:  # the masks and the manifest are on disk: say so, no traceback
        ranking = None
        print(f"napari-focus: the ranking was not written: {error}. The masks and the "
              "manifest were; run the same command again once that is mended: it skips "
              "the masks that exist and writes the ranking", file=sys.stderr)  # fmt: skip
    print(
        f"{_summary(run, out, interrupted=False)}; manifest {run.manifest}"
        + (f", ranking {ranking}" if ranking else ""),
        file=sys.stderr,
    )
    for row in run.failed:
        print(f"  failed: {row['source']}: {row['error']}", file=sys.stderr)
    if ranking is None:
        return EXIT_FAILED_IMAGES
    if args.series:
        if folder is None:
            return _fail("--series needs local input images")
        if folder.parent == folder:  # images from several drives or linked from far away
            return _fail(f"--series: the input images have no common folder but {folder}; "
                         "give images of one folder tree")  # fmt: skip
        from ..series import SeriesStateError
        from ..series.open_state import SeriesOfAnotherFolder

        try:
            state = order_series(args.series, folder, ranking, exclude=[out])
        except (SeriesStateError, OSError) as error:  # found only now: the work is kept
            if isinstance(error, SeriesOfAnotherFolder):
                error = f"it keeps the series of {error.saved}, not of {error.folder}"
            print(f"napari-focus: --series {args.series}: {error}. The masks, the manifest "
                  "and the ranking are written: run the same command with another --series "
                  "(it skips the masks that exist)", file=sys.stderr)  # fmt: skip
            return EXIT_FAILED_IMAGES
        if state.recovered_from is not None:
            restored = "its backup" if state.restored_backup else "nothing: it starts afresh"
            print(f"napari-focus: note: the series state in --series {args.series} could not "
                  f"be read; it was set aside as {state.recovered_from.name} and the series "
                  f"resumed from {restored}", file=sys.stderr)  # fmt: skip
        clashes = sum(1 for row in run.failed if not row["mask"])  # no output of its own
        hint = series_hint(folder, Path(args.series), out, len(state.queue), clashes,
                           subfolders=state.settings.get("recursive", False))  # fmt: skip
        print(f"napari-focus: {hint}", file=sys.stderr)
    return EXIT_FAILED_IMAGES if run.failed or run.unmatched or run.unreadable else 0


def _series_problem(series: str, inputs: list[str]) -> str | None:
    """What makes ``--series`` unusable, said before any work: a file, a folder that
    cannot be written, or the series of other images (known here when the input is one
    folder: the series is that of the folder or of a subfolder holding its images)."""
    from ..atomic import WriteError, check_writable_folder
    from ..series import SeriesStateError, read_state_file
    from ..series.open_state import saved_image_folder
    from ..series.state import STATE_NAME
    from ..series.state_file import NewerVersionError

    folder = Path(series)
    if folder.exists() and not folder.is_dir():
        return f"--series {series} is a file; give a folder to keep the labeling series in"
    try:
        check_writable_folder(folder)
    except WriteError as error:
        return f"--series {series}: {error.reason}; choose another --series folder"
    try:
        data = read_state_file(folder / STATE_NAME) if (folder / STATE_NAME).is_file() else None
    except NewerVersionError as error:  # left alone, never replaced
        return f"--series {series}: {str(error).rstrip('.')}; or choose another --series folder"
    except SeriesStateError:
        return None  # set aside and started afresh, as the widget does, and said then
    if data is None or len(inputs) != 1 or not Path(inputs[0]).is_dir():
        return None
    saved, images = saved_image_folder(data, folder), Path(inputs[0]).resolve()
    if saved is not None and (not saved.is_dir() or saved.resolve().is_relative_to(images)):
        return None
    theirs = f"the images of {saved}" if saved is not None else "image layers"
    return (
        f"--series {series} keeps the series of {theirs}, not of {inputs[0]}; choose another "
        "--series folder"
    )


def _say_interrupted(stop: Any, out: Path) -> int:
    """The local engine's summary of an interrupted run, and its exit code."""
    from ..cli_common import Terminated, interrupted_exit

    run = stop.run
    pending = run.count("pending")
    print(
        f"{_summary(run, out, interrupted=True)}; {pending} not done (run the same command "
        f"again to go on); manifest {run.manifest}",
        file=sys.stderr,
    )
    for row in run.failed:
        print(f"  failed: {row['source']}: {row['error']}", file=sys.stderr)
    return interrupted_exit(isinstance(stop.cause, Terminated))
