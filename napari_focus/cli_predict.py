"""`napari-focus predict`: inputs, the pipelined run, its throughput options."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from .cli_arguments import path_argument, positive_int
from .cli_common import (
    EXIT_FAILED_IMAGES,
    EXIT_SETUP_ERROR,
    Terminated,
    interrupted_exit,
    load_predictor_or_say_why,
    masks_of_another_task_message,
    other_names_note,
    other_weights_note,
    out_replaces_input_message,
    plural,
    predict_summary,
    progress_bar,
    sigterm_as_interrupt,
)
from .input_files import find_inputs
from .mask_provenance import (
    MadeBy,
    MasksOfAnotherTask,
    check_existing_masks,
    damaged_outputs,
    mask_folders_note,
)
from .prediction_files import OutputReplacesInput, plan_outputs


def run_predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .atomic import WriteError, check_writable_folder, remove_own_temps, remove_stale_temps
    from .pipeline import Job

    out_dir = Path(args.out or f"focus_{args.task}_masks")
    found = find_inputs(args.inputs, recursive=args.recursive, exclude=[out_dir])
    images, unmatched = found.images, found.unmatched
    for _, reason in unmatched:
        print(f"napari-focus: {reason}", file=sys.stderr)
    for text in found.unreadable:
        print(f"napari-focus: {text}", file=sys.stderr)
    if found.other_names and not args.quiet:
        print(f"napari-focus: {other_names_note(found.other_names)}", file=sys.stderr)
    if found.mask_folders and not args.quiet:
        print(f"napari-focus: note: {mask_folders_note(found.mask_folders)}", file=sys.stderr)
    if not args.recursive and not args.quiet:
        note_images_in_subfolders(args.inputs, out_dir)
    if args.recursive and not args.quiet:
        note_images_in_out(args.inputs, out_dir)
    if not images:
        from .io import IMAGE_EXTENSIONS

        print("napari-focus: nothing to do: no input images (files, folders or glob patterns "
              f"of {' '.join(IMAGE_EXTENSIONS)} images)", file=sys.stderr)  # fmt: skip
        return EXIT_SETUP_ERROR
    try:
        plan = plan_outputs(
            [str(image) for image in images],
            out_dir,
            image_format=args.format,
            probability=args.probability,
            overwrite=args.overwrite,
            subfolders={str(image): found.subfolders[image] for image in images},
        )
    except OutputReplacesInput as error:
        print(f"napari-focus: {out_replaces_input_message(out_dir, error)}", file=sys.stderr)
        return EXIT_SETUP_ERROR
    jobs = [
        Job(Path(entry.source), entry.mask, entry.probability,
            keep=() if args.overwrite else tuple(p for p in entry.paths() if p.exists()),
            overwrite=args.overwrite)
        for entry in plan.todo
    ]  # fmt: skip
    made_by = MadeBy.of_run(args.task, args.size, args.weights)
    kept_masks = [p for e in plan.existing for p in e.paths()]  # probability maps too
    kept_masks += [p for job in jobs for p in job.keep]
    try:
        existing = check_existing_masks(kept_masks, made_by)
    except MasksOfAnotherTask as error:
        print(f"napari-focus: {masks_of_another_task_message(out_dir, error)}", file=sys.stderr)
        return EXIT_SETUP_ERROR
    if existing.other_weights:
        note = other_weights_note(existing.other_weights, made_by)
        print(f"napari-focus: {note}", file=sys.stderr)
    failures = [(Path(entry.source), reason) for entry, reason in plan.clashes]
    damaged = damaged_outputs(  # an empty or cut file at an output's name: not done
        ((entry.source, entry.paths()) for entry in (*plan.existing, *plan.todo)),
        existing.unreadable,
    )
    failures += [(Path(source), reason) for source, reason in damaged.items()]
    jobs = [job for job in jobs if str(job.source) not in damaged]
    skipped = sum(entry.source not in damaged for entry in plan.existing)

    try:  # before anything slow, and whether or not there is work: the same command
        from .predictor import resolve_device  # with more images would fail then
        from .runtime import resolve_precision

        resolve_precision(args.precision, resolve_device(args.device))
    except ValueError as error:
        print(f"napari-focus: --precision {args.precision}: {error}", file=sys.stderr)
        return EXIT_SETUP_ERROR
    written, interrupted, run_failures = 0, None, []
    if jobs:
        try:
            check_writable_folder(out_dir)
        except WriteError as error:
            print(f"napari-focus: --out {out_dir}: {error.reason}; choose another --out",
                  file=sys.stderr)  # fmt: skip
            return EXIT_SETUP_ERROR
        folders = _output_folders(out_dir, jobs)
        for folder in folders:  # what killed runs left behind
            if folder.is_dir():
                remove_stale_temps(folder)
        predictor = load_predictor_or_say_why(args)
        if predictor is None:
            return EXIT_SETUP_ERROR
        written, interrupted, run_failures = _run_jobs(
            predictor, jobs, args, tqdm, made_by.text()
        )
        failures += run_failures
        removed = [path for folder in folders for path in remove_own_temps(folder)]
        if removed:
            print(f"napari-focus: removed {len(removed)} partial file(s)", file=sys.stderr)

    status = "interrupted: " if interrupted else ""
    kept = sum(len(job.keep) for job in jobs)
    counts = predict_summary(written, skipped, len(failures), len(unmatched), out_dir, kept,
                             len(found.unreadable))  # fmt: skip
    print(f"napari-focus: {status}{counts}", file=sys.stderr)
    left = len(jobs) - written - len(run_failures)
    if interrupted is not None and left:
        again = ("the same command without --overwrite goes on with them (with it, every "
                 "mask is made again)") if args.overwrite else (
                 "the same command goes on with them (it skips the masks written)")  # fmt: skip
        print(f"napari-focus: {plural(left, 'image')} not done; {again}", file=sys.stderr)
    for image, message in failures:
        print(f"  failed: {image}: {message}", file=sys.stderr)
    if interrupted is not None:
        return interrupted_exit(interrupted == signal.SIGTERM)
    return EXIT_FAILED_IMAGES if failures or unmatched or found.unreadable else 0


def _run_jobs(
    predictor, jobs, args: argparse.Namespace, tqdm, record: str
) -> tuple[int, int | None, list]:
    """Run the pipeline with a progress bar; SIGTERM and Ctrl-C stop it in order. Every
    output keeps ``record`` (which model made it). Returns (written, the signal number if
    interrupted, failures)."""
    from .pipeline import run_pipeline

    bar = progress_bar(len(jobs), "FOCUS", "image", quiet=args.quiet, prefix="napari-focus")

    def on_done(job, error: str | None) -> None:
        if error is not None and not args.quiet:  # the summary lists it either way
            tqdm.write(f"FAILED {job.source}: {error}", file=sys.stderr)
        bar.update(1)

    try:
        with sigterm_as_interrupt():
            summary = run_pipeline(
                predictor,
                jobs,
                tta=args.tta,
                batch_size=args.batch_size,
                workers=args.workers,
                on_done=on_done,
                record=record,
            )
    finally:
        bar.close()
    interrupted = None
    if summary.interrupted is not None:
        terminated = isinstance(summary.interrupted, Terminated)
        interrupted = int(signal.SIGTERM if terminated else signal.SIGINT)
    processed = summary.written + len(summary.failures)
    if not args.quiet and summary.written:  # the rate counts the failed ones too
        print(
            f"napari-focus: {plural(processed, 'image')} in "
            f"{summary.seconds:.1f} s, "
            f"{summary.images_per_second:.2f} images/s",
            file=sys.stderr,
        )
    if summary.stopped is not None and summary.not_done:
        print(f"napari-focus: stopped: {summary.stopped}; {summary.not_done} more image(s) not "
              "done: make room (or choose another --out) and run the same command again: it "
              "skips the masks written", file=sys.stderr)  # fmt: skip
    return summary.written, interrupted, summary.failures


def _output_folders(out_dir: Path, jobs: list) -> list[Path]:
    """``out_dir`` and the subfolders of it that the jobs write into."""
    below = {path.parent for job in jobs for path in (job.mask, job.probability) if path}
    return [out_dir, *sorted(folder for folder in below if folder != out_dir.resolve())]


def add_input_arguments(predict: argparse.ArgumentParser) -> None:
    """The INPUTS of `predict` and --recursive."""
    predict.add_argument(
        "inputs",
        nargs="+",
        type=path_argument,
        help="image files, folders, glob patterns, or list files (.txt, .lst, .list) "
        "naming these one a line (relative to the list's folder; # starts a comment)",
    )
    predict.add_argument(
        "--recursive",
        action="store_true",
        help="also the images in subfolders of a folder input; their masks go into the "
        "same subfolders of --out (a glob pattern's matches go flat into --out)",
    )


def note_images_in_subfolders(inputs: list[str], out_dir: Path) -> None:
    """Say which folder inputs hold images in subfolders that a run without --recursive
    leaves out."""
    from .input_files import images_in_subfolders

    for item in inputs:
        if not Path(item).is_dir() or not images_in_subfolders(Path(item), [out_dir]):
            continue
        print(f"napari-focus: note: images in subfolders of {item.rstrip('/')} are not included; "
              "add --recursive to include them (their masks go into the same subfolders "
              "of --out)", file=sys.stderr)  # fmt: skip


def note_images_in_out(inputs: list[str], out_dir: Path) -> None:
    """Say that the images of an --out inside a folder input are not read (--recursive
    leaves the output folder out of its walk): images of the user's there are skipped."""
    import itertools
    import os

    from .io import IMAGE_EXTENSIONS
    from .mask_provenance import read_made_by

    if not out_dir.is_dir():
        return
    out = out_dir.resolve()
    holder = next(
        (i for i in inputs if Path(i).is_dir() and out.is_relative_to(Path(i).resolve())), None
    )
    if holder is None or out == Path(holder).resolve():
        return
    files = (
        Path(dirpath, name)
        for dirpath, _, names in os.walk(out)
        for name in sorted(names)
        if Path(name).suffix.lower() in IMAGE_EXTENSIONS and not name.startswith(".")
    )
    looked = list(itertools.islice(files, 1000))  # enough to say it; a rerun has many masks
    theirs = [path for path in looked if read_made_by(path) is None]  # not predict's
    if theirs:
        some = f"{len(theirs)}{'+' if len(looked) == 1000 else ''}"
        print(f"napari-focus: note: --out {out_dir} lies in the input folder {holder}, so "
              f"its {some} image file(s) without a "
              f"napari-focus record (e.g. {theirs[0].name}) are not read as inputs; choose "
              "an --out outside the image folders to predict them",
              file=sys.stderr)  # fmt: skip


def add_throughput_arguments(predict: argparse.ArgumentParser) -> None:
    """--batch-size, --workers, --precision and --compile of `predict`."""
    predict.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        metavar="N",
        help="images per forward pass (images of one padded size run together); "
        "default 1 on CPU, 4 on CUDA, 8 on GPUs with 24 GiB or more. Files equal those of "
        "batch size 1 up to float rounding: probabilities within about 1e-5 (1 grey level "
        "in a PNG), a mask pixel can flip where the model is that undecided",
    )
    predict.add_argument(
        "--workers",
        type=positive_int,
        default=2,
        metavar="N",
        help="threads reading and preparing images ahead of the model (default 2)",
    )
    predict.add_argument(
        "--precision",
        choices=("auto", "float32", "float16", "bfloat16"),
        default="auto",
        help="auto (float16 on CUDA, else float32), float32, float16 (CUDA, MPS) or "
        "bfloat16 (CUDA, MPS, or a faster, slightly less exact mode on CPUs with "
        "AVX-512 BF16 / AMX)",
    )
    predict.add_argument(
        "--compile",
        action="store_true",
        help="compile the model with torch.compile first (a minute or more before the "
        "first image, again for each new image size; on CPU it measured no gain)",
    )
