"""Finding an existing mask (ground truth or earlier work) for an image, by file stem."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..mask_files import MASK_EXTENSIONS, MASK_SUFFIXES, read_mask_file


class MaskFolder:
    """The mask files of ``mask_folder``, each folder listed once: finding the masks of
    many images (a ranking, a folder of images with their masks beside them) costs one
    listing per folder, not one per image. Files added after a folder was listed are
    not seen; make a new one for a later look."""

    def __init__(self, mask_folder: str | os.PathLike) -> None:
        self.root = Path(mask_folder)
        self._listings: dict[Path, dict[str, Path]] = {}

    def _listing(self, folder: Path) -> dict[str, Path]:
        if folder not in self._listings:
            files = folder.iterdir() if folder.is_dir() else ()
            self._listings[folder] = {p.name.lower(): p for p in files if p.is_file()}
        return self._listings[folder]

    def find(
        self, image_path: str | os.PathLike, *, relative: str | os.PathLike | None = None
    ) -> Path | None:
        """:func:`reference_mask_path` of ``image_path`` in this folder."""
        found = self.named_after(image_path, relative=relative)
        image = Path(image_path).resolve()
        if found is not None and found.parent.resolve() != image.parent and _shares_stem(image):
            return None  # it may be the other image's mask
        return found

    def named_after(
        self, image_path: str | os.PathLike, *, relative: str | os.PathLike | None = None
    ) -> Path | None:
        """The first mask file named after ``image_path`` (never the image itself), also
        when another image beside it has its stem (:meth:`find` then gives None)."""
        found = self.all_named_after(image_path, relative=relative)
        return found[0] if found else None

    def all_named_after(
        self, image_path: str | os.PathLike, *, relative: str | os.PathLike | None = None
    ) -> list[Path]:
        """Every mask file named after ``image_path`` in the first folder that has one,
        in the order of precedence (:func:`reference_mask_path`)."""
        image = Path(image_path)
        stem = image.stem
        folders = [self.root]
        if relative is not None and Path(relative).parent != Path("."):
            folders.insert(0, self.root / Path(relative).parent)
        image_resolved = image.resolve()
        for folder in folders:
            by_name = self._listing(folder)
            names = [f"{stem}{suffix}{ext}".lower() for ext in MASK_EXTENSIONS
                     for suffix in MASK_SUFFIXES]  # fmt: skip
            found = [by_name[name] for name in names if name in by_name]
            found = [path for path in found if path.resolve() != image_resolved]
            if found:
                return found
        return []


def _shares_stem(image: Path) -> bool:
    """Whether another image beside ``image`` has its stem (``a.png`` and ``a.jpg``):
    a mask named by the stem in another folder cannot tell which of them it belongs to
    (``napari-focus predict`` writes one and fails the other)."""
    from ..io import IMAGE_EXTENSIONS

    for extension in IMAGE_EXTENSIONS:
        for variant in {extension, extension.upper()}:
            other = image.with_name(image.stem + variant)
            if other.name == image.name or not other.is_file():
                continue
            try:  # on a case-insensitive disk "a.PNG" is "a.png" itself
                if not other.samefile(image):
                    return True
            except OSError:
                continue
    return False


def reference_mask_path(
    image_path: str | os.PathLike,
    mask_folder: str | os.PathLike,
    *,
    relative: str | os.PathLike | None = None,
) -> Path | None:
    """Path of the mask for ``image_path`` in ``mask_folder``, or None.

    Candidates, in order: ``<stem>.png``, ``<stem>_gt.png``, ``<stem>_mask.png``, then the
    same with ``.bmp``, ``.tif`` and ``.tiff`` (extensions compared case-insensitively).
    With ``relative`` (the image's path relative to its image folder) the matching
    sub-folder of ``mask_folder`` is searched first, then ``mask_folder`` itself. The
    image file itself is never returned (masks may live beside their images), nor a
    mask in another folder when another image beside this one has the same stem
    (``a.png`` and ``a.jpg``: the mask cannot tell which it belongs to). For many
    images of one folder, :class:`MaskFolder` lists it once.
    """
    return MaskFolder(mask_folder).find(image_path, relative=relative)


def find_reference_mask(
    image_path: str | os.PathLike,
    mask_folder: str | os.PathLike,
    *,
    relative: str | os.PathLike | None = None,
) -> np.ndarray | None:
    """The mask for ``image_path`` as a bool ``(H, W)`` array (the rule of
    :mod:`napari_focus.mask_files`: ``> 128`` for 8-bit masks, ``> 0`` for 0/1 ones, any
    channel of a colour mask), or None when :func:`reference_mask_path` finds no file."""
    path = reference_mask_path(image_path, mask_folder, relative=relative)
    if path is None:
        return None
    return read_mask_file(path)
