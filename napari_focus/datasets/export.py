"""Write one corrected sample into a FOCUS training split.

Order of work, all of it under the root's lock (see :mod:`.jsonstore`):

1. the split is put in order (:mod:`.recovery`): an interrupted transaction is completed,
   stale temp files of killed exports are deleted, and samples left half-listed or
   orphaned by an interrupted export are completed, re-listed or removed (each reported
   in :attr:`ExportResult.recovered`);
2. the name is checked against the files on disk and the JSON entries, and the
   ``on_exists`` policy applied;
3. image, mask(s), semantic file and both JSON files are written completely under temp
   names; then, as one journaled transaction (:mod:`.journal`), a replaced sample's
   entries are left out of the JSON files, the files are swapped in and the JSON files
   with the new entries (in place, same ids) follow;
4. one provenance line is appended, before the journal goes (the journal carries it: a
   killed export's line is written by the next one, never twice).

A failure before the journal is written changes nothing (the old sample stays listed).
A kill after it leaves the sample unlisted, never listed with half-swapped files, and
the next export (or :func:`recover_split`) completes it: the split then lists the new
sample. Every JSON parses at every moment.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..transforms import to_rgb_uint8
from .errors import ExportError, SampleExistsError, UnusableNameError
from .image_bytes import check_encodable, encode, image_bytes
from .journal import Transaction
from .jsonstore import root_lock
from .layouts import Layout, get_layout
from .names import sanitize_name
from .provenance import (
    PROVENANCE_NAME,
    Provenance,
    build_record,
    check_proposal,
    record_line,
)
from .recovery import recover_samples, tidy_split
from .splitjson import Ids, SplitJson, dumps

OnExists = Literal["error", "skip", "rename", "replace"]
ON_EXISTS = ("error", "skip", "rename", "replace")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplePaths:
    """Every file one sample has in a layout."""

    image: Path
    mask: Path
    semantic: Path | None
    extra_masks: tuple[Path, ...]

    def all(self) -> list[Path]:
        files = [self.image, self.mask, *self.extra_masks]
        return files if self.semantic is None else [*files, self.semantic]


@dataclass(frozen=True)
class ExportResult:
    """What an export did. ``status`` is ``written``, ``renamed`` (written under a
    suffixed name), ``replaced`` or ``skipped`` (the paths then name the existing sample
    and nothing was written; ``provenance`` is None). ``recovered`` says what was put in
    order in the split first (an interrupted export completed, an orphaned sample
    re-listed or removed), one message each."""

    layout: str
    name: str
    status: str
    image: Path
    mask: Path
    semantic: Path | None
    extra_masks: tuple[Path, ...]
    instance_json: Path | None
    semantic_json: Path | None
    image_id: int | None
    annotation_id: int | None
    segment_ids: tuple[int, int] | None
    provenance: Path | None
    recovered: tuple[str, ...] = ()

    @property
    def files(self) -> list[Path]:
        """Image, mask(s) and semantic file of the sample."""
        return SamplePaths(self.image, self.mask, self.semantic, self.extra_masks).all()


def dataset_dir(root: str | Path, layout: Layout | str) -> Path:
    spec = get_layout(layout) if isinstance(layout, str) else layout
    return Path(root) / spec.dataset_dir


def sample_paths(root: str | Path, layout: Layout | str, name: str) -> SamplePaths:
    spec = get_layout(layout) if isinstance(layout, str) else layout
    base = dataset_dir(root, spec)
    return SamplePaths(
        image=base / spec.image_dir / f"{name}{spec.image_ext}",
        mask=base / spec.mask_dir / f"{name}{spec.mask_suffix}",
        semantic=None
        if spec.semantic_dir is None
        else base / spec.semantic_dir / f"{name}{spec.mask_suffix}",
        extra_masks=tuple(base / d / f"{name}{spec.mask_suffix}" for d in spec.extra_mask_dirs),
    )


def export_sample(
    root: str | Path,
    layout: str,
    name: str,
    image: np.ndarray,
    mask: np.ndarray,
    *,
    on_exists: OnExists = "error",
    provenance: Provenance | Mapping[str, Any] | None = None,
) -> ExportResult:
    """Export ``image`` and its corrected ``mask`` as sample ``name`` of ``layout``.

    Args:
        root: the FOCUS ``datasets/`` folder (``DETECTRON2_DATASETS``); created if missing.
        layout: one of :data:`~napari_focus.datasets.LAYOUTS`.
        name: layer or file name; sanitised by :func:`.names.sanitize_name`.
        image: (H, W), (H, W, 1|3|4) array; uint8, uint16, bool or float (converted by
            :func:`napari_focus.transforms.to_rgb_uint8`; alpha dropped). The image
            file is written in this array's frame, never with an EXIF orientation
            (see :mod:`.image_bytes`), so that it matches the mask for every reader.
        mask: (H, W) array, ``> 0`` = foreground (bool, integer or finite float; no
            negative values), as a Labels layer holds it. Read a mask *file* with
            :func:`napari_focus.mask_files.read_mask_file` (``> 128`` as the official
            evaluation), not as an image: JPEG noise and soft edges are no foreground.
        on_exists: what to do when the name is taken (files on disk or JSON entries):
            ``error`` (raise :class:`SampleExistsError`), ``skip``, ``rename`` (append
            ``_1``, ``_2``, ... until free) or ``replace`` (overwrite the files and
            update the JSON entries in place, keeping their ids).
        provenance: a :class:`~.provenance.Provenance` or a mapping of its fields.

    Raises:
        ExportError: invalid input, unsafe name, unwritable root or a damaged JSON file;
            nothing is written in those cases.
    """
    spec = get_layout(layout)
    if on_exists not in ON_EXISTS:
        raise ExportError(f"on_exists must be one of {', '.join(ON_EXISTS)}, got {on_exists!r}")
    wanted = sanitize_name(name, spec)
    rgb = _check_image(image)
    check_encodable(rgb.shape, spec)
    fg = _check_mask(mask, rgb.shape[:2])
    info = Provenance.coerce(provenance)
    check_proposal(info, fg.shape)
    mask_u8 = np.where(fg, 255, 0).astype(np.uint8)
    image_data, image_file = image_bytes(info.source_path, rgb, spec)
    payload = {
        "image": image_data,
        "mask": encode(mask_u8, spec.mask_format),
        # exactly the official convert(): uint8 + 1 wraps 255 (foreground) to 0
        "semantic": encode(mask_u8 + 1, spec.mask_format),
    }
    root = Path(root)
    with root_lock(root):
        return _export_locked(
            root, spec, wanted, fg, payload, on_exists, info, (image, image_file)
        )


def _export_locked(
    root: Path,
    spec: Layout,
    wanted: str,
    fg: np.ndarray,
    payload: dict[str, bytes],
    on_exists: str,
    info: Provenance,
    source: tuple[np.ndarray, str],
) -> ExportResult:
    base = dataset_dir(root, spec)
    store, recovered = put_in_order(root, spec)
    for message in recovered:
        log.info("%s", message)

    name, status = _resolve_name(root, spec, store, wanted, on_exists)
    paths = sample_paths(root, spec, name)
    if status == "skipped":
        return _result(spec, name, status, paths, store, store.ids_of(name), None, recovered)

    with Transaction(base) as tx:
        # a listed sample is first left out of the JSON files, so that no reader ever
        # sees its entries next to half-swapped files; the journal re-lists it
        for path, data in store.without(name):
            tx.stage(path, dumps(data))
        for path in [paths.image, paths.mask, *paths.extra_masks]:
            tx.stage(path, payload["image"] if path == paths.image else payload["mask"])
        if paths.semantic is not None:
            tx.stage(paths.semantic, payload["semantic"])
        ids = store.put(name + spec.image_ext, fg)
        for path, data in store.files():
            tx.stage(path, dumps(data))
        record = build_record(
            info,
            layout=spec.name,
            name=name,
            status=status,
            files=[p.relative_to(root).as_posix() for p in paths.all()],
            image=source[0],
            image_file=source[1],
            mask=fg,
        )
        # the journal carries the line: a killed export's sample still gets it
        tx.commit(provenance=(root, record_line(record)))
    return _result(spec, name, status, paths, store, ids, root / PROVENANCE_NAME, recovered)


def recover_split(root: str | Path, layout: str) -> list[str]:
    """Put a split in order as an export does first (complete an interrupted export,
    delete stale temp files, re-list or remove orphaned samples); a message per action.
    Worth calling before training from a split whose last export may have been killed.
    """
    root = Path(root)
    with root_lock(root):
        return put_in_order(root, get_layout(layout))[1]


def put_in_order(root: Path, spec: Layout) -> tuple[SplitJson, list[str]]:
    """What :func:`recover_split` does (the caller holds the root lock): the split's
    JSON files as they are then, and a message per action."""
    base = dataset_dir(root, spec)
    messages = tidy_split(root, base, spec)
    store = SplitJson.load(base, spec)
    messages += recover_samples(root, base, spec, store, lambda n: sample_paths(root, spec, n))
    return store, messages


def _result(
    spec: Layout,
    name: str,
    status: str,
    paths: SamplePaths,
    store: SplitJson,
    ids: Ids,
    prov: Path | None,
    recovered: list[str],
) -> ExportResult:
    return ExportResult(
        layout=spec.name,
        name=name,
        status=status,
        image=paths.image,
        mask=paths.mask,
        semantic=paths.semantic,
        extra_masks=paths.extra_masks,
        instance_json=store.instance_path,
        semantic_json=store.semantic_path,
        image_id=ids[0],
        annotation_id=ids[1],
        segment_ids=ids[2],
        provenance=prov,
        recovered=tuple(recovered),
    )


def _resolve_name(
    root: Path, spec: Layout, store: SplitJson, wanted: str, on_exists: str
) -> tuple[str, str]:
    def taken(candidate: str) -> bool:
        on_disk = any(p.exists() for p in sample_paths(root, spec, candidate).all())
        other_split = _other_split_image(root, spec, candidate) is not None
        return on_disk or other_split or store.has(candidate)

    if not taken(wanted):
        return wanted, "written"
    other_split = _other_split_image(root, spec, wanted)
    if other_split is not None and on_exists != "rename":
        shared = ", ".join(f"{d}/" for d in spec.extra_mask_dirs)
        raise UnusableNameError(
            f"sample name {wanted!r} is that of the test image {other_split}, whose mask "
            f"in {shared} the official test split is built from"
        )
    if on_exists == "error":
        if not spec.has_json:
            listed = "its files are on disk"
        elif store.has(wanted):
            listed = "listed in the JSON files"
        else:
            listed = "present on disk but not in the JSON files (probably an interrupted export)"
        raise SampleExistsError(
            f"sample {wanted!r} already exists in {spec.name} under {root} ({listed})",
            wanted,
        )
    if on_exists == "rename":
        for i in range(1, 100_000):
            candidate = f"{wanted}_{i}"
            if not taken(candidate):
                return candidate, "renamed"
        raise ExportError(f"no free name for {wanted!r}")  # pragma: no cover
    # skip / replace act on the existing sample, spelled as the JSON spells it
    existing = store.spelling(wanted) or wanted
    return existing, "skipped" if on_exists == "skip" else "replaced"


def _other_split_image(root: Path, spec: Layout, name: str) -> Path | None:
    """The image of another split named ``name`` whose mask the sample's would replace."""
    base = dataset_dir(root, spec)
    found = (base / folder / f"{name}{spec.image_ext}" for folder in spec.other_split_image_dirs)
    return next((path for path in found if path.exists()), None)


def _check_image(image: np.ndarray) -> np.ndarray:
    try:
        return to_rgb_uint8(np.asarray(image))
    except ValueError as exc:
        raise ExportError(f"image not exportable: {exc}") from exc


def _check_mask(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    array = np.asarray(mask)
    if array.ndim != 2:
        raise ExportError(f"mask must be 2-D (H, W), got shape {array.shape}")
    if array.shape != tuple(shape):
        raise ExportError(f"mask shape {array.shape} does not match the image size {shape}")
    if array.dtype == np.bool_:
        return array.copy()
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ExportError(f"mask dtype {array.dtype} is not boolean, integer or float")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise ExportError("mask holds NaN or infinite values")
    if (array < 0).any():
        raise ExportError("mask holds negative values; expected 0 = background, >0 = foreground")
    return array > 0
