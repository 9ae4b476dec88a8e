"""Which images a prediction reads: files, folders (with their subfolders under
``recursive``), glob patterns and list files (one input a line), resolved and
deduplicated in order; and why an input matched no image."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .folder_walk import is_file_or_broken_link, walk_files
from .prediction_files import is_uri

LIST_SUFFIXES = (".txt", ".lst", ".list")


def read_list_file(path: Path) -> list[str]:
    """The entries of a list file, one a line (blank lines and ``#`` comments left out);
    a relative entry is relative to the list's folder."""
    raw = path.read_bytes()
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):  # Windows PowerShell's `>` writes UTF-16
        text = raw.decode("utf-16")
    else:
        try:
            text = raw.decode("utf-8-sig")  # sig: Notepad's byte-order mark
        except UnicodeDecodeError as error:
            raise UnicodeDecodeError(
                error.encoding, error.object, error.start, error.end,
                f"{error.reason}: it is not UTF-8 text; save it as UTF-8",
            ) from None  # fmt: skip
    entries = []
    for line in text.splitlines():
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        if not is_uri(entry) and not Path(entry).is_absolute():
            entry = str(path.parent / entry)
        entries.append(entry)
    return entries


def is_list_file(item: str) -> bool:
    """Whether the input ``item`` is a list file (``.txt``, ``.lst``, ``.list``) to expand."""
    return Path(item).suffix.lower() in LIST_SUFFIXES and Path(item).is_file()


@dataclass
class FoundInputs:
    """What the inputs of a prediction name: the images (absolute paths as named, links
    not followed; one file named twice is taken once; in order), for each image the
    subfolder its outputs go to (POSIX, ``""`` = the output folder itself; only images
    found below a folder input under ``recursive``), and the inputs that matched
    nothing, each with the reason."""

    images: list[Path] = field(default_factory=list)
    subfolders: dict[Path, str] = field(default_factory=dict)
    unmatched: list[tuple[str, str]] = field(default_factory=list)
    #: (name left out, name taken) for a file found under two names (a link beside it)
    other_names: list[tuple[Path, Path]] = field(default_factory=list)
    #: subfolders left out of a walk: they hold masks napari-focus wrote (earlier runs)
    mask_folders: list[Path] = field(default_factory=list)
    #: folders (inputs or below them) that could not be listed, each in words
    unreadable: list[str] = field(default_factory=list)


def find_inputs(
    inputs: Sequence[str], *, recursive: bool = False, exclude: Sequence[Path] = ()
) -> FoundInputs:
    """Expand files, folders (their images, sorted; with ``recursive`` also those of
    their subfolders, which keep their place below the output folder), glob patterns
    (whose matches go flat into the output folder) and list files (:data:`LIST_SUFFIXES`:
    entries of any of these kinds, one a line). Hidden files and folders, such as the
    ``._name`` that macOS leaves on shared drives, are left out of folders, as series
    and export leave them; so are the folders ``exclude`` (the output folder, whose
    masks are no inputs when it lies inside an input folder)."""
    found = FoundInputs()
    walk = {Path(folder).resolve() for folder in exclude} if recursive else None
    _expand(inputs, walk, found, listed_in=None, lists=set())
    found.images, found.other_names = one_name_each(found.images)
    found.subfolders = {image: found.subfolders[image] for image in found.images}
    if found.mask_folders:  # one left out of one input's walk but read through another
        taken = {parent for image in found.images for parent in image.parents}
        found.mask_folders = [f for f in dict.fromkeys(found.mask_folders) if f not in taken]
    return found


def _expand(
    inputs: Sequence[str], walk: set[Path] | None, found: FoundInputs,
    listed_in: str | None, lists: set[Path],
) -> None:  # fmt: skip
    """``walk``: None (folders give their own images), or the folders to leave out of
    the walk below folder inputs."""
    from .io import IMAGE_EXTENSIONS

    for item in inputs:
        path = Path(item)
        matches: list[tuple[Path, str]] = []
        if is_list_file(item):
            if path.resolve() in lists:  # a list that lists itself, or one listed twice
                continue
            lists.add(path.resolve())
            try:
                entries = read_list_file(path)
            except (OSError, UnicodeDecodeError) as error:
                reason = f"cannot read the list file {item!r}: {error}"
                found.unmatched.append((item, reason))
                continue
            _expand(entries, walk, found, listed_in=item, lists=lists)
            if not entries:
                found.unmatched.append((item, f"the list file {item!r} names no image (one "
                                        "image file, folder or glob pattern a line)"))  # fmt: skip
            continue
        if is_uri(item):
            matches = []
        elif path.is_dir():
            images, unreadable = _folder_images(path, walk, found.mask_folders)
            found.unreadable = list(dict.fromkeys([*found.unreadable, *unreadable]))
            matches = [(p, _subfolder(p, path)) for p in images]
            if not matches and unreadable:
                continue  # the folder (or all below it) could not be read: said so
        elif path.is_file():
            matches = [(path, "")]
        elif glob.has_magic(item):
            matches = sorted(
                (Path(p), "")
                for p in glob.glob(item, recursive=True)
                if is_file_or_broken_link(Path(p)) and Path(p).suffix.lower() in IMAGE_EXTENSIONS
            )
        if not matches:
            reason = unmatched_reason(item)
            if is_uri(item):
                reason = f"{item!r} is a URI: object stores are read by --engine ray"
            if listed_in is not None:
                reason = f"{reason} (listed in {listed_in})"
            found.unmatched.append((item, reason))
        for image, subfolder in matches:
            # named by the link, not by what it points to (git-annex and DataLad trees
            # link every image to a file named by its hash); find_inputs takes each once
            named = Path(os.path.abspath(image))
            found.images.append(named)
            found.subfolders.setdefault(named, subfolder)


def _folder_images(
    folder: Path, walk: set[Path] | None, mask_folders: list[Path]
) -> tuple[list[Path], list[str]]:
    """The images of ``folder`` (sorted) and the folders of it that could not be listed."""
    from .io import IMAGE_EXTENSIONS
    from .mask_provenance import OutputFolders, walk_leaving_out_outputs

    def keep(dirpath: str, names: list[str]) -> list[str]:
        return subfolders_to_walk(dirpath, names, walk or set())

    def images_of(outputs: OutputFolders) -> list[Path]:
        images = []
        for dirpath, filenames in walk_files(folder, None if walk is None else keep, said):
            if outputs.leaves_out(dirpath, filenames):
                continue
            images += [
                Path(dirpath, name) for name in filenames
                if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS
                and is_file_or_broken_link(Path(dirpath, name))
            ]  # fmt: skip
        return images

    said: list[str] = []  # a second walk (no outputs to leave out) says it again
    enabled = walk is not None  # a walk of subfolders (--recursive)
    images, left_out = walk_leaving_out_outputs(images_of, folder, IMAGE_EXTENSIONS, enabled)
    mask_folders += [Path(os.path.abspath(path)) for path in left_out]
    return sorted(images), list(dict.fromkeys(said))


def subfolders_to_walk(dirpath: str, dirnames: list[str], leave_out: set[Path]) -> list[str]:
    """The subfolders of ``dirpath`` a walk for images goes into, sorted: not hidden, not
    in ``leave_out`` (resolved paths: an output or mask folder), and not a series folder
    of the widget (its autosaves and proposals are no images of the user's)."""
    from .series.state_file import STATE_NAME

    return sorted(
        d for d in dirnames
        if not d.startswith(".") and Path(dirpath, d).resolve() not in leave_out
        and not os.path.exists(os.path.join(dirpath, d, STATE_NAME))
    )  # fmt: skip


def _subfolder(image: Path, folder: Path) -> str:
    relative = image.parent.relative_to(folder).as_posix()
    return "" if relative == "." else relative


def one_name_each(paths: Iterable[Path]) -> tuple[list[Path], list[tuple[Path, Path]]]:
    """``paths`` with each file once, in order, and (name left out, name taken) for each
    file found under another name too. The first name is taken, except that the file's
    own name replaces a link to it lying beside it (a ``latest.png`` next to its image)."""
    kept: list[Path] = []
    where: dict[Path, int] = {}  # the file behind -> its place in kept
    others: list[tuple[Path, Path]] = []
    for path in paths:
        try:
            behind = path.resolve()
        except (OSError, RuntimeError):  # a loop of links: a name of its own
            behind = path
        place = where.setdefault(behind, len(kept))
        if place == len(kept):
            kept.append(path)
            continue
        taken = kept[place]
        if taken == path:
            continue
        if taken.parent == path.parent and taken.is_symlink() and not path.is_symlink():
            kept[place], taken, path = path, path, taken
        others.append((path, taken))
    return kept, others


def collect_inputs(inputs: Sequence[str]) -> tuple[list[Path], list[str]]:
    """:func:`find_inputs` as (the image paths, the inputs that matched nothing)."""
    found = find_inputs(inputs)
    return found.images, [item for item, _ in found.unmatched]


def unmatched_reason(item: str) -> str:
    """Why an input ``item`` that :func:`collect_inputs` found no image in matched none."""
    from .io import IMAGE_EXTENSIONS

    path = Path(item)
    if path.is_dir():
        return f"no image file ({' '.join(IMAGE_EXTENSIONS)}) in the folder {item!r}"
    if not is_uri(item) and not glob.has_magic(item) and not os.path.lexists(path):
        return f"{item!r} does not exist (no such file or folder); check the path"
    if path.is_symlink() and not path.exists():
        return f"{item!r} is a link to {os.readlink(path)!r}, which does not exist"
    if os.path.lexists(path) and not path.is_file() and not path.is_dir():
        return f"{item!r} is not a regular file (a pipe, socket or device?); give image files"
    return f"no image matches {item!r}"


def images_in_subfolders(folder: Path, leave_out: Sequence[Path] = ()) -> bool:
    """Whether a subfolder of ``folder`` holds an image (what a run without --recursive
    leaves out); hidden folders, the widget's series folders and ``leave_out`` (an output
    folder, the masks) do not count. Stops at the first one found."""
    from .io import IMAGE_EXTENSIONS

    skipped = {Path(path).resolve() for path in leave_out}

    def keep(dirpath: str, names: list[str]) -> list[str]:
        return subfolders_to_walk(dirpath, names, skipped)

    for dirpath, filenames in walk_files(folder, keep):
        if Path(dirpath) != Path(folder) and any(
            Path(name).suffix.lower() in IMAGE_EXTENSIONS and not name.startswith(".")
            for name in filenames
        ):
            return True
    return False
