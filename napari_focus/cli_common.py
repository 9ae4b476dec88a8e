"""What the command-line commands share: exit codes, signals, progress, loading the
model from the model flags (:mod:`napari_focus.cli_arguments`), and the ``--out``
refusal of ``predict`` (both engines): used by
``predict`` (:mod:`napari_focus.cli_predict`, :mod:`napari_focus.distributed.cli`), ``rank``
(:mod:`napari_focus.series.rank_cli`) and the others."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TextIO

EXIT_FAILED_IMAGES = 1
EXIT_SETUP_ERROR = 2
EXIT_INTERRUPTED = 128 + 2  # Ctrl-C, as a shell reports SIGINT
EXIT_TERMINATED = 128 + 15  # SIGTERM (a cluster's job ending), as a shell reports it


def interrupted_exit(terminated: bool) -> int:
    """The exit code of a command stopped by Ctrl-C, or by SIGTERM (``terminated``)."""
    return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED

class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an interrupt so that a run stops the same orderly way."""


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block SIGTERM raises :class:`Terminated` (in the main thread; in
    another, where signals cannot be caught, nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_terminated(_signum: int, _frame: Any) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)



def plural(count: int, noun: str) -> str:
    """``1 image``, ``3 images``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def other_names_note(
    other_names: Sequence[tuple[Any, Any]], done: str = "predicted once, its mask named after "
    "the file"
) -> str:
    """The note of ``predict`` (both engines) and ``rank`` on files found under two names,
    (left out, taken) each: a link beside the file; ``done``: what became of each file."""
    left, taken = other_names[0]
    more = f" (and {len(other_names) - 1} more)" if len(other_names) > 1 else ""
    return f"note: {left} is another name of {taken}{more}: each file is {done}"


def say(line: str) -> None:
    """Print ``line`` on the current ``sys.stderr``, above a running progress bar."""
    if "tqdm" in sys.modules:  # keeps a running progress bar intact
        from tqdm import tqdm

        tqdm.write(line, file=sys.stderr)
    else:
        print(line, file=sys.stderr, flush=True)


PLAIN_PROGRESS_SECONDS = 30.0  # between the progress lines written to a log file


class PlainProgress:
    """A progress bar's place when stderr is no terminal (a log file, a pipe): a plain
    ``<prefix>: <what> 12/40 images (30%), ...`` line at most every
    :data:`PLAIN_PROGRESS_SECONDS`, instead of every redrawn frame of a bar. It takes
    the calls the commands make on a tqdm bar."""

    def __init__(self, total: int, desc: str, unit: str, prefix: str) -> None:
        self.total, self.desc, self.unit, self.prefix = total, desc, unit, prefix
        self.n, self.postfix = 0, ""
        self._started = self._said = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.n += n
        if 0 < self.n < self.total:  # the end is said by the command's summary
            self._say_now_and_then()

    def set_postfix(self, refresh: bool = False, **values: object) -> None:
        self.postfix = "".join(f", {name} {value}" for name, value in values.items())

    def set_description_str(self, desc: str) -> None:
        if desc != self.desc:
            self.desc = desc
            self._say_now_and_then()

    def close(self) -> None:
        pass

    def _say_now_and_then(self) -> None:
        now = time.monotonic()
        if now - self._said < PLAIN_PROGRESS_SECONDS:
            return
        self._said = now
        line = f"{self.prefix}: {self.desc}"
        if self.n:
            elapsed = now - self._started
            rate = self.n / elapsed if elapsed > 0 else 0.0
            speed = f"{rate:.2f} {self.unit}s/s" if rate >= 1 else f"{1 / rate:.1f} s/{self.unit}"
            left = f", about {(self.total - self.n) / rate:.0f} s left" if rate else ""
            line += (f" {self.n}/{self.total} {self.unit}s ({100 * self.n // self.total}%), "
                     f"{speed}{left}{self.postfix}")  # fmt: skip
        print(line, file=sys.stderr, flush=True)


def progress_bar(total: int, desc: str, unit: str, *, quiet: bool, prefix: str) -> Any:
    """A tqdm bar on a terminal's stderr, :class:`PlainProgress` lines elsewhere, nothing
    with ``--quiet``."""
    from tqdm import tqdm

    if quiet or sys.stderr is None or sys.stderr.isatty():
        return tqdm(total=total, desc=desc, unit=unit, disable=quiet, file=sys.stderr)
    return PlainProgress(total, desc, unit, prefix)


ShowWarning = Callable[[Warning | str, type[Warning], str, int, TextIO | None, str | None], None]


def say_kernel_fallbacks(showwarning: ShowWarning, prefix: str = "napari-focus") -> ShowWarning:
    """A ``warnings.showwarning`` printing a kernel fallback as one ``<prefix>:`` line
    (its message may begin with ``napari-focus:`` already) instead of Python's file, line
    number and source line; other warnings go to ``showwarning``. Used by the commands
    and by the workers of ``predict --engine ray``, whose stderr Ray shows on the driver."""

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        if category.__name__ != "KernelFallbackWarning":  # its module imports torch
            showwarning(message, category, filename, lineno, file, line)
        else:
            say(f"{prefix}: {str(message).removeprefix('napari-focus:').lstrip()}")

    show.says_kernel_fallbacks = True  # type: ignore[attr-defined]
    return show


def predict_summary(
    written: int, skipped: int, failed: int, unmatched: int, out: object, kept: int = 0,
    unreadable: int = 0,
) -> str:  # fmt: skip
    """``predict``'s counts (both engines): ``3 written, 1 skipped (already exist;
    --overwrite to redo), 0 failed, 2 inputs matched no image -> OUT``; the advice only
    when something was skipped, the inputs only when some matched nothing, the folders
    only when some could not be read; ``kept``: existing outputs left as they were
    beside those written (a mask beside a new map)."""
    skipped_text = f"{skipped} skipped" + (
        " (already exist; --overwrite to redo)" if skipped else ""
    )
    kept_text = f" ({kept} existing file(s) among them kept)" if kept else ""
    counts = [f"{written} written{kept_text}", skipped_text, f"{failed} failed"]
    if unmatched:
        counts.append(f"{plural(unmatched, 'input')} matched no image")
    if unreadable:
        counts.append(f"{plural(unreadable, 'folder')} not read")
    return f"{', '.join(counts)} -> {out}"


def out_replaces_input_message(out: object, error: Any) -> str:
    """``predict``'s words for :class:`~napari_focus.prediction_files.OutputReplacesInput`
    (both engines)."""
    return f"--out {out}: {error.what}; choose another --out"


def masks_of_another_task_message(out: object, error: Any) -> str:
    """``predict``'s words for :class:`~napari_focus.mask_provenance.MasksOfAnotherTask`
    (both engines)."""
    from .mask_provenance import first_and_count

    return (
        f"--out {out} holds masks of another task: {first_and_count(error.found)}; this "
        f"run is --task {error.run.task} ({error.run.weights}), and it would keep them as "
        "if they were its own: choose another --out, or add --overwrite to redo them"
    )


def other_weights_note(found: list, run: Any) -> str:
    """``predict``'s note on existing masks of other weights of the same task (kept)."""
    path, record = found[0]
    others = f" and {len(found) - 1} more" if len(found) > 1 else ""
    were = "were" if others else "was"
    return (
        f"note: {path.name}{others} in --out {were} predicted with other weights "
        f"({record.weights}); they are kept, as every existing mask is: add --overwrite to "
        f"redo them with {run.weights}"
    )


def load_predictor_from_args(args: argparse.Namespace) -> Any:
    """A :class:`~napari_focus.FocusPredictor` from ``--weights`` / ``--task`` /
    ``--size`` / ``--device`` / ``--precision`` / ``--compile`` (commands without the
    throughput flags get the defaults). A download of the official weights shows a
    progress bar on stderr unless ``--quiet``."""
    import warnings

    from .checkpoint_identity import TaskMismatchWarning
    from .predictor import FocusPredictor

    warn_if_weights_of_another_task(args)
    with warnings.catch_warnings():  # said above in the command line's words
        warnings.simplefilter("ignore", TaskMismatchWarning)
        predictor = FocusPredictor.load(
            args.task,
            size=args.size,
            weights=args.weights,
            device=args.device,
            precision=getattr(args, "precision", "auto"),
            download_progress=(lambda _progress: None) if getattr(args, "quiet", False) else None,
        )
    if getattr(args, "compile", False):
        if not getattr(args, "quiet", False):
            print("napari-focus: --compile: the first image of each padded size waits for "
                  "torch.compile (a minute or more)", file=sys.stderr)  # fmt: skip
        predictor.compile()
    return predictor


def warn_if_weights_of_another_task(args: argparse.Namespace) -> None:
    """Say on stderr when ``--weights`` records another task than ``--task`` (the file
    loads: every task has the same head; its masks are those of its own task)."""
    import sys

    from .checkpoint_identity import task_mismatch

    message = task_mismatch(args.task, args.weights) if args.weights else None
    if message:
        print(f"napari-focus: warning: {message}", file=sys.stderr)


def load_predictor_or_say_why(args: argparse.Namespace) -> Any | None:
    """:func:`load_predictor_from_args`, or None after saying on stderr why the model
    cannot be loaded (a bad checkpoint, no network)."""
    import sys

    problem = weights_file_problem(args.weights) if args.weights else None
    if problem:
        print(f"napari-focus: --weights {args.weights}: {problem}", file=sys.stderr)
        return None
    try:
        return load_predictor_from_args(args)
    except Exception as error:
        print(f"napari-focus: cannot load the model: {error}", file=sys.stderr)
        return None


CHECKPOINT_SUFFIXES = (".pth", ".pt", ".safetensors")


def weights_file_problem(weights: str) -> str | None:
    """What is wrong with ``--weights`` before it is read, in the command line's words:
    no such file, a folder (the checkpoints in it are named), an empty file."""
    from pathlib import Path

    path = Path(weights)
    if path.is_dir():
        found = sorted(p.name for p in path.iterdir() if p.suffix in CHECKPOINT_SUFFIXES)
        more = f" and {len(found) - 5} more" if len(found) > 5 else ""
        inside = f" (in it: {', '.join(found[:5])}{more})" if found else ""
        return f"a folder, not a checkpoint file; give the .pth or .safetensors file{inside}"
    if not path.exists():
        return (
            "no such file; check the path, or leave --weights out to download the official "
            "weights of --task and --size"
        )
    if path.is_file() and path.stat().st_size == 0:
        return "the file is empty (0 bytes; an interrupted download?); download it again"
    return None


class StopRequest:
    """What :func:`first_signal_asks_to_stop` hands the block: ``signum`` is the first
    SIGINT or SIGTERM received (None until then), ``received`` every one."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.received: set[int] = set()


@contextlib.contextmanager
def first_signal_asks_to_stop(
    message: Callable[[int], str], on_first: Callable[[], None] | None = None
) -> Iterator[StopRequest]:
    """Within the block the first Ctrl-C (or SIGTERM, a batch scheduler's stop) only asks
    to stop: it sets the request's ``signum``, calls ``on_first`` and says
    ``message(signum)``, so that the work under way ends in order; a second one
    interrupts at once (:class:`KeyboardInterrupt`, or :class:`Terminated`). In another
    thread than the main one, where signals cannot be caught, nothing changes."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def ask(signum: int, _frame: Any) -> None:
        request.received.add(signum)
        if request.signum is not None:
            raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt
        request.signum = signum
        if on_first is not None:
            on_first()
        say(message(signum))

    previous = {s: signal.signal(s, ask) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield request
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
