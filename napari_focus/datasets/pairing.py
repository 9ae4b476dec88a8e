"""Which image goes with which mask in ``napari-focus export``: by file stem, the
layout's own mask naming first; an exact name before one that differs only in case."""

from __future__ import annotations

import glob
from collections.abc import Callable
from pathlib import Path

from ..mask_files import LOSSY_EXTENSIONS, MASK_EXTENSIONS, MASK_SUFFIXES
from ..prediction_files import PROBABILITY_SUFFIX, same_file_key
from .errors import ExportError
from .layouts import get_layout


def pair_files(
    images_dir: Path,
    masks_dir: Path,
    layout: str,
    *,
    recursive: bool = False,
    leave_out: tuple[Path, ...] = (),
) -> tuple[list[tuple[Path, Path]], list[str]]:
    """(image, mask) pairs and one message per image or mask that could not be paired.

    With ``recursive`` the images of subfolders are paired too, each with a mask in the
    same subfolder of ``masks_dir`` (as ``predict --recursive`` writes them), else in
    ``masks_dir`` itself (as a glob pattern's masks go flat), the rule of ``rank --gt``
    and the series; the folders ``leave_out`` (the dataset root) are not walked.

    A mask named exactly after an image is that image's, even where another image's
    name differs from it only in case. Masks may lie beside their images (``masks_dir``
    is ``images_dir``): a file is never its own mask, and a file that is another image's
    mask (``a_mask.png`` beside ``a.png``) is no image."""
    convention = get_layout(layout).mask_suffix.rsplit(".", 1)[0]  # "" or e.g. "_gt"
    skipped = (*leave_out, masks_dir)
    files = _files_below(images_dir, recursive, _is_image, leave_out=skipped)
    masks: dict[str, dict[str, list[Path]]] = {}  # subfolder -> stem -> mask files
    for p in _files_below(masks_dir, recursive, _is_mask, leave_out=(*leave_out, images_dir)):
        below = p.parent.relative_to(masks_dir).as_posix()
        masks.setdefault(below, {}).setdefault(p.stem, []).append(p)
    # the layout's own naming, then the names the series and rank --gt accept
    suffixes = list(dict.fromkeys([convention, *MASK_SUFFIXES]))
    images_too = {p.resolve() for p in files}
    candidates = {
        image: _candidates(image, images_dir, masks, suffixes, images_too) for image in files
    }
    exact = {m for found, is_exact in candidates.values() if is_exact for m in found}
    masks_of_images = {m.resolve() for found, _ in candidates.values() for m in found}
    images = [image for image in files if image.resolve() not in masks_of_images]

    pairs: list[tuple[Path, Path]] = []
    problems: list[str] = []
    used: set[Path] = set()
    samples: dict[str, Path] = {}
    # each image's mask of its own exact name: no other image's mask (x_mask.png of x.png)
    own = {m for image in images for m in candidates[image][0] if m.stem == image.stem}
    # an image with a mask of its exact name first: it keeps its sample name
    for image in sorted(images, key=lambda i: not candidates[i][1]):
        found, is_exact = candidates[image]
        if not is_exact:  # a mask of another image's exact name is that image's
            found = [m for m in found if m not in exact]
        # x_mask.png, the mask of the image x_mask.png, is no second mask of x.png
        found = [m for m in found if m.stem == image.stem or m not in own]
        used.update(found)  # the mask of an image refused below is not an orphan
        sample_key, sample = _sample_key(image.stem, layout)
        below = image.parent.relative_to(images_dir).as_posix()
        if sample_key in samples:
            other = samples[sample_key]
            apart = "" if other.parent == image.parent else " (a split is one folder of samples)"
            if other.stem == image.stem:
                problems.append(f"{image}: same stem as {other}{apart}; rename one")
            else:
                problems.append(
                    f"{image}: its sample name {sample!r} is also that of {other} (sample "
                    "names are made safe and compared regardless of case, as macOS and "
                    "Windows compare file names); rename one"
                )
        elif not found:
            where = masks_dir if below == "." else f"{masks_dir / below} or {masks_dir}"
            problems.append(f"{image}: no mask in {where}{_lossy_hint(image, masks_dir)}")
        elif len(found) > 1:
            problems.append(
                f"{image}: several masks match: {', '.join(m.name for m in found)}; keep "
                "one of them in the masks folder (move the others away)"
            )
        else:
            samples[sample_key] = image
            pairs.append((image, found[0]))
    images_set = set(files)
    for by_stem in masks.values():
        for group in by_stem.values():
            problems += [
                f"{m}: no image in {images_dir}"
                for m in group
                if m not in used and m not in images_set and m.resolve() not in masks_of_images
            ]
    order = {image: i for i, image in enumerate(images)}
    return sorted(pairs, key=lambda pair: order[pair[0]]), problems


def _candidates(
    image: Path,
    images_dir: Path,
    masks: dict[str, dict[str, list[Path]]],
    suffixes: list[str],
    images: set[Path],
) -> tuple[list[Path], bool]:
    """The masks named after ``image`` (in its subfolder of the masks, else at their top)
    and whether they match its name exactly (else regardless of case). Never the image
    file itself, nor another of the ``images`` (resolved) of the same stem: where masks
    lie beside images, ``sub/a.png`` is no mask of ``a.png``; ``a_mask.png`` is."""
    names = [image.stem + suffix for suffix in suffixes]
    below = image.parent.relative_to(images_dir).as_posix()
    stem = image.stem.casefold()

    def usable(mask: Path) -> bool:
        if mask.stem.casefold() != stem or mask.resolve() not in images:
            return True
        # beside a JPEG, the lossless file of its stem is its mask (MSRA10K keeps them
        # so), as the series and rank --gt find it
        return image.suffix.lower() in LOSSY_EXTENSIONS and mask.parent == image.parent

    for folder in dict.fromkeys([below, "."]):
        found, is_exact = _masks_named(masks.get(folder, {}), names, usable)
        if found:
            return found, is_exact
    return [], False


def _is_image(path: Path) -> bool:
    from ..io import IMAGE_EXTENSIONS

    return path.suffix.lower() in IMAGE_EXTENSIONS


def _is_mask(path: Path) -> bool:
    probability = path.stem.endswith(PROBABILITY_SUFFIX)
    return not probability and path.suffix.lower() in MASK_EXTENSIONS


def _files_below(
    folder: Path, recursive: bool, wanted, leave_out: tuple[Path, ...] = ()
) -> list[Path]:
    """The files of ``folder`` (and of its subfolders when ``recursive``) that ``wanted``
    takes, sorted; hidden files and folders (``.name``), the folders ``leave_out`` and
    the widget's series folders left out."""
    from ..folder_walk import is_file_or_broken_link, walk_files
    from ..input_files import subfolders_to_walk

    skipped = {path.resolve() for path in leave_out}

    def keep(dirpath: str, names: list[str]) -> list[str]:
        return subfolders_to_walk(dirpath, names, skipped)

    files = []
    for dirpath, filenames in walk_files(folder, keep if recursive else None):
        files += [
            Path(dirpath, name) for name in filenames
            if not name.startswith(".") and wanted(Path(name))
            and is_file_or_broken_link(Path(dirpath, name))
        ]  # fmt: skip
    return sorted(files)


def _masks_named(
    by_stem: dict[str, list[Path]], names: list[str], usable: Callable[[Path], bool]
) -> tuple[list[Path], bool]:
    """The ``usable`` masks of one folder named ``names``: exactly (True), else
    regardless of case (as a case-insensitive file system, macOS or Windows, pairs them)."""
    found = [m for name in names for m in by_stem.get(name, []) if usable(m)]
    if found:
        return found, True
    keys = {same_file_key(name) for name in names}
    return [m for stem, group in by_stem.items() if same_file_key(stem) in keys
            for m in group if usable(m)], False  # fmt: skip


def _sample_key(stem: str, layout: str) -> tuple[str, str]:
    """The sample name an image stem exports as, and the key under which two names are
    one sample (one file on a case-insensitive file system)."""
    from .names import fitting_name, sanitize_name

    spec = get_layout(layout)
    try:
        name = sanitize_name(fitting_name(stem, spec), spec)
    except ExportError:  # refused when exported, with the reason
        name = stem
    return same_file_key(name), name


def has_images(
    images_dir: Path, masks_dir: Path, *, recursive: bool, leave_out: tuple[Path, ...] = ()
) -> bool:
    """Whether :func:`pair_files` finds any image file in ``images_dir`` to pair."""
    return bool(_files_below(images_dir, recursive, _is_image, (*leave_out, masks_dir)))


def _lossy_hint(image: Path, masks_dir: Path) -> str:
    """Why a file of the image's name in the masks folder is no mask: its format."""
    from ..io import IMAGE_EXTENSIONS

    lossy = [
        p.name
        for p in sorted(masks_dir.glob(f"{glob.escape(image.stem)}.*"))
        if p.suffix.lower() in IMAGE_EXTENSIONS and p.suffix.lower() not in MASK_EXTENSIONS
        and p.resolve() != image.resolve()
    ]
    if not lossy:
        return ""
    return (
        f" ({lossy[0]} is there, but masks are read from lossless files: "
        f"{', '.join(MASK_EXTENSIONS)}; save it as PNG)"
    )
