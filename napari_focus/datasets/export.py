"""Write one corrected sample into a FOCUS training split.

Order of work, all of it under the root's lock (see :mod:`.jsonstore`):

1. stale temp files of earlier, killed exports are removed from the split's folders, and
   a sample that reached the instance JSON but not the semantic JSON is completed;
2. the name is checked against the files on disk and the JSON entries, and the
   ``on_exists`` policy applied;
3. on ``replace``, the sample's JSON entries are removed first (semantic JSON, then
   instance JSON);
4. image, mask(s) and semantic file are each written to a temp name in their folder and
   renamed into place;
5. the entries are appended to the instance JSON, then to the semantic JSON (the one
   FOCUS training iterates), each file replaced atomically;
6. one provenance line is appended.

So a crash leaves every JSON parseable and pointing only at complete files. What it may
leave is an *orphan*: complete files with no JSON entry, which FOCUS ignores (it only
loads what the JSON lists). Orphans still count as existing names, so the next export
of that name needs ``on_exists="replace"`` (the error message says so).
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from ..io import atomic_write
from ..transforms import to_rgb_uint8
from . import rle
from .errors import ExportError, SampleExistsError
from .jsonstore import read_json, root_lock, write_json
from .layouts import (
    BACKGROUND_CATEGORY,
    FOREGROUND_CATEGORY,
    INSTANCE_CATEGORIES,
    SEMANTIC_CATEGORIES,
    Layout,
    get_layout,
)
from .names import sanitize_name
from .provenance import Provenance, append_record, build_record, check_proposal

OnExists = Literal["error", "skip", "rename", "replace"]
ON_EXISTS = ("error", "skip", "rename", "replace")
JPEG_QUALITY = 95
_TEMP_FILE = re.compile(r"^\..+\.[a-z0-9_]{8}\.(jpg|png|bmp|json)$")


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
    and nothing was written; ``provenance`` is None)."""

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
            :func:`napari_focus.transforms.to_rgb_uint8`; alpha dropped).
        mask: (H, W) array, ``> 0`` = foreground (bool, integer or finite float; no
            negative values).
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
    fg = _check_mask(mask, rgb.shape[:2])
    info = Provenance.coerce(provenance)
    check_proposal(info, fg.shape)
    mask_u8 = np.where(fg, 255, 0).astype(np.uint8)
    payload = {
        "image": _source_bytes(info.source_path, rgb, spec) or _encode(rgb, spec.image_format),
        "mask": _encode(mask_u8, spec.mask_format),
        # exactly the official convert(): uint8 + 1 wraps 255 (foreground) to 0
        "semantic": _encode(mask_u8 + 1, spec.mask_format),
    }
    root = Path(root)
    with root_lock(root):
        return _export_locked(root, spec, wanted, rgb, fg, payload, on_exists, info, image)


def _export_locked(
    root: Path,
    spec: Layout,
    wanted: str,
    rgb: np.ndarray,
    fg: np.ndarray,
    payload: dict[str, bytes],
    on_exists: str,
    info: Provenance,
    source: np.ndarray,
) -> ExportResult:
    base = dataset_dir(root, spec)
    _remove_stale_temps(base, spec)
    store = _JsonPair.load(base, spec)
    store.repair(root, spec)

    name, status = _resolve_name(root, spec, store, wanted, on_exists)
    paths = sample_paths(root, spec, name)
    if status == "skipped":
        ids = store.ids_of(name)
        return _result(spec, name, status, paths, store, ids, None)

    old_ids = store.ids_of(name) if status == "replaced" else (None, None, None)
    if status == "replaced" and old_ids != (None, None, None):
        store.remove(name)
    height, width = fg.shape
    try:
        for path in [paths.image, paths.mask, *paths.extra_masks]:
            data = payload["image"] if path == paths.image else payload["mask"]
            _write_bytes(path, data)
        if paths.semantic is not None:
            _write_bytes(paths.semantic, payload["semantic"])
    except OSError as exc:
        raise ExportError(f"could not write sample {name!r} under {root}: {exc}") from exc
    ids = store.add(name + spec.image_ext, fg, height, width, old_ids)

    record = build_record(
        info,
        layout=spec.name,
        name=name,
        status=status,
        files=[p.relative_to(root).as_posix() for p in paths.all()],
        image=source,
        mask=fg,
    )
    try:
        prov_path = append_record(root, record)
    except OSError as exc:
        raise ExportError(f"sample {name!r} exported but provenance not written: {exc}") from exc
    return _result(spec, name, status, paths, store, ids, prov_path)


def _result(
    spec: Layout,
    name: str,
    status: str,
    paths: SamplePaths,
    store: _JsonPair,
    ids: tuple[int | None, int | None, tuple[int, int] | None],
    prov: Path | None,
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
    )


def _resolve_name(
    root: Path, spec: Layout, store: _JsonPair, wanted: str, on_exists: str
) -> tuple[str, str]:
    def taken(candidate: str) -> bool:
        on_disk = any(p.exists() for p in sample_paths(root, spec, candidate).all())
        return on_disk or store.has(candidate)

    if not taken(wanted):
        return wanted, "written"
    if on_exists == "error":
        listed = (
            "listed in the JSON files"
            if store.has(wanted)
            else ("present on disk but not in the JSON files (probably an interrupted export)")
        )
        raise SampleExistsError(
            f"sample {wanted!r} already exists in {spec.name} under {root} ({listed}); "
            "choose on_exists='skip', 'rename' or 'replace'",
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


class _JsonPair:
    """The instance and semantic JSON files of a split, read under the lock."""

    def __init__(self, spec: Layout, base: Path) -> None:
        self.spec = spec
        self.instance_path = base / spec.instance_json if spec.instance_json else None
        self.semantic_path = base / spec.semantic_json if spec.semantic_json else None
        self.instance: dict[str, Any] = {}
        self.semantic: dict[str, Any] = {}
        self._slots: dict[tuple[int, str], int] = {}

    @classmethod
    def load(cls, base: Path, spec: Layout) -> _JsonPair:
        pair = cls(spec, base)
        if pair.instance_path is not None and pair.semantic_path is not None:
            pair.instance = _normalised(read_json(pair.instance_path), INSTANCE_CATEGORIES)
            pair.semantic = _normalised(read_json(pair.semantic_path), SEMANTIC_CATEGORIES)
        return pair

    @property
    def enabled(self) -> bool:
        return self.instance_path is not None

    def _stems(self) -> dict[str, str]:
        stems: dict[str, str] = {}
        for data in (self.instance, self.semantic):
            for item in [*data.get("images", []), *data.get("annotations", [])]:
                file_name = str(item.get("file_name", ""))
                stem = file_name.split(".")[0]  # as the FOCUS loaders take the stem
                stems.setdefault(stem.casefold(), stem)
        return stems

    def has(self, name: str) -> bool:
        return self.enabled and name.casefold() in self._stems()

    def spelling(self, name: str) -> str | None:
        return self._stems().get(name.casefold()) if self.enabled else None

    def _matches(self, item: Mapping[str, Any], name: str) -> bool:
        return str(item.get("file_name", "")).split(".")[0].casefold() == name.casefold()

    def ids_of(self, name: str) -> tuple[int | None, int | None, tuple[int, int] | None]:
        if not self.enabled:
            return None, None, None
        image_id = ann_id = segs = None
        for data in (self.instance, self.semantic):
            for item in data["images"]:
                if self._matches(item, name) and image_id is None:
                    image_id = item.get("id")
        for item in self.instance["annotations"]:
            if self._matches(item, name) and ann_id is None:
                ann_id = item.get("id")
                image_id = item.get("image_id", image_id)
        for item in self.semantic["annotations"]:
            info = item.get("segments_info") or []
            if self._matches(item, name) and segs is None and len(info) >= 2:
                segs = (info[0].get("id"), info[1].get("id"))
        return image_id, ann_id, segs

    def remove(self, name: str) -> None:
        """Drop the sample's entries: semantic JSON first, so that an interruption
        leaves at most an instance-only entry, which :meth:`repair` completes. Their
        list positions are kept so that :meth:`add` puts the new entries back there."""
        for data, path in (
            (self.semantic, self.semantic_path),
            (self.instance, self.instance_path),
        ):
            assert path is not None
            for key in ("images", "annotations"):
                hits = [i for i, x in enumerate(data[key]) if self._matches(x, name)]
                if hits:
                    self._slots[(id(data), key)] = hits[0]
                data[key] = [x for x in data[key] if not self._matches(x, name)]
            _write_json(path, data)

    def _put(self, data: dict[str, Any], key: str, entry: dict[str, Any]) -> None:
        slot = self._slots.pop((id(data), key), None)
        if slot is None:
            data[key].append(entry)
        else:
            data[key].insert(slot, entry)

    def add(
        self,
        file_name: str,
        fg: np.ndarray,
        height: int,
        width: int,
        old: tuple[int | None, int | None, tuple[int, int] | None],
    ) -> tuple[int | None, int | None, tuple[int, int] | None]:
        if not self.enabled:
            return None, None, None
        assert self.instance_path is not None and self.semantic_path is not None
        image_id = old[0] if old[0] is not None else self._next_image_id()
        ann_id = old[1] if old[1] is not None else _max_id(self.instance["annotations"]) + 1
        if old[2] is not None:
            segs = old[2]
        else:
            first = _max_segment_id(self.semantic["annotations"]) + 1
            segs = (first, first + 1)
        image_entry = {"id": image_id, "file_name": file_name, "width": width, "height": height}
        self._put(self.instance, "images", dict(image_entry))
        self._put(
            self.instance, "annotations", _instance_annotation(ann_id, image_id, file_name, fg)
        )
        _write_json(self.instance_path, self.instance)
        self._put(self.semantic, "images", dict(image_entry))
        self._put(self.semantic, "annotations", _semantic_annotation(segs, image_id, file_name, fg))
        _write_json(self.semantic_path, self.semantic)
        return image_id, ann_id, segs

    def _next_image_id(self) -> int:
        ids = [_max_id(self.instance["images"]), _max_id(self.semantic["images"])]
        for data in (self.instance, self.semantic):
            ids += [_int(a.get("image_id")) for a in data["annotations"]]
        return max(ids) + 1

    def repair(self, root: Path, spec: Layout) -> None:
        """Complete samples an interrupted export left in the instance JSON only."""
        if not self.enabled:
            return
        done = {str(a.get("file_name")) for a in self.semantic["annotations"]}
        pending = [a for a in self.instance["annotations"] if str(a.get("file_name")) not in done]
        changed = False
        for ann in pending:
            file_name = str(ann.get("file_name"))
            mask_path = sample_paths(root, spec, file_name.split(".")[0]).mask
            try:
                with Image.open(mask_path) as img:
                    fg = np.asarray(img.convert("L")) > 0
            except (OSError, ValueError):
                continue  # nothing on disk to complete it from; leave it as it is
            image_id = ann.get("image_id")
            entry = next((i for i in self.instance["images"] if i.get("id") == image_id), None)
            if entry is None or (entry.get("height"), entry.get("width")) != fg.shape:
                continue
            if not any(i.get("id") == image_id for i in self.semantic["images"]):
                self.semantic["images"].append(dict(entry))
            first = _max_segment_id(self.semantic["annotations"]) + 1
            self.semantic["annotations"].append(
                _semantic_annotation((first, first + 1), image_id, file_name, fg)
            )
            changed = True
        if changed:
            assert self.semantic_path is not None
            _write_json(self.semantic_path, self.semantic)


def _instance_annotation(ann_id: int, image_id: int, file_name: str, fg: np.ndarray) -> dict:
    return {
        "id": ann_id,
        "image_id": image_id,
        "file_name": file_name,
        "category_id": FOREGROUND_CATEGORY,
        "segmentation": rle.encode(fg),
        "area": rle.area(fg),
        "bbox": rle.bbox(fg),
        "iscrowd": 0,
    }


def _semantic_annotation(
    segs: tuple[int, int], image_id: Any, file_name: str, fg: np.ndarray
) -> dict:
    bg = ~fg
    return {
        "image_id": image_id,
        "file_name": file_name,
        "segments_info": [
            {"id": segs[0], "category_id": FOREGROUND_CATEGORY, "area": rle.area(fg),
             "bbox": rle.bbox(fg), "iscrowd": 0},
            {"id": segs[1], "category_id": BACKGROUND_CATEGORY, "area": rle.area(bg),
             "bbox": rle.bbox(bg), "iscrowd": 0},
        ],
    }  # fmt: skip


def _normalised(data: dict[str, Any] | None, categories: list[dict]) -> dict[str, Any]:
    data = {} if data is None else data
    for key in ("images", "annotations"):
        if not isinstance(data.setdefault(key, []), list):
            raise ExportError(f"JSON key {key!r} is not a list; not touching the file")
    data.setdefault("categories", [dict(c) for c in categories])
    return data


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _max_id(items: list[Mapping[str, Any]]) -> int:
    return max((_int(x.get("id")) for x in items), default=0)


def _max_segment_id(annotations: list[Mapping[str, Any]]) -> int:
    return max(
        (_int(s.get("id")) for a in annotations for s in (a.get("segments_info") or [])),
        default=0,
    )


def _write_json(path: Path, data: dict[str, Any]) -> None:
    try:
        write_json(path, data)
    except OSError as exc:
        raise ExportError(f"could not write {path}: {exc}") from exc


def _write_bytes(path: Path, data: bytes) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            handle.write(data)

    atomic_write(path, write)


def _remove_stale_temps(base: Path, spec: Layout) -> None:
    """Delete temp files left by killed exports (safe: every export holds the lock)."""
    folders = {base, *(base / d for d in (spec.image_dir, spec.mask_dir, *spec.extra_mask_dirs))}
    if spec.semantic_dir:
        folders.add(base / spec.semantic_dir)
    for folder in folders:
        try:
            entries = list(folder.iterdir())
        except OSError:
            continue
        for entry in entries:
            if _TEMP_FILE.match(entry.name) and entry.is_file():
                entry.unlink(missing_ok=True)


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


def _encode(array: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    options: dict[str, Any] = {"quality": JPEG_QUALITY, "subsampling": 0} if fmt == "JPEG" else {}
    Image.fromarray(array).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _source_bytes(source: str | None, rgb: np.ndarray, spec: Layout) -> bytes | None:
    """The source file's bytes when it already is in the split's format with the very
    pixels being exported: copying it avoids a second lossy JPEG encoding."""
    if not source:
        return None
    try:
        data = Path(source).read_bytes()
        with Image.open(io.BytesIO(data)) as img:
            if img.format != spec.image_format:
                return None
            pixels = np.asarray(img.convert("RGB"))
    except (OSError, ValueError):
        return None
    return data if np.array_equal(pixels, rgb) else None
