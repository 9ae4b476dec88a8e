"""The COCO instance and semantic JSON files of a split, held in memory under the lock.

Entries are edited in memory (:meth:`SplitJson.put` adds a sample or replaces one in
place, keeping its ids and list positions) and written by the caller, normally staged in
a :class:`~.journal.Transaction` together with the sample's files.

JSON already in a split is checked before use: anything an export cannot work with
(``"images": [null]``, ``segments_info`` that is not a list of objects, absurd nesting,
bytes that are not UTF-8) raises :class:`~.errors.ExportError` naming the file, which is
left untouched.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..mask_files import read_mask_file
from . import rle
from .errors import ExportError
from .jsonstore import read_json
from .layouts import (
    BACKGROUND_CATEGORY,
    FOREGROUND_CATEGORY,
    INSTANCE_CATEGORIES,
    SEMANTIC_CATEGORIES,
    Layout,
)

Ids = tuple[int | None, int | None, tuple[int, int] | None]


def _checked(data: dict[str, Any] | None, categories: list[dict], path: Path) -> dict[str, Any]:
    data = {} if data is None else data

    def bad(what: str) -> ExportError:
        return ExportError(f"{path}: {what}; fix or move the file (not touching it)")

    for key in ("images", "annotations"):
        items = data.setdefault(key, [])
        if not isinstance(items, list):
            raise bad(f"{key!r} is a {type(items).__name__}, not a list")
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise bad(f"{key}[{i}] is {json.dumps(item)[:40]}, not an object")
            if "file_name" in item and not isinstance(item["file_name"], str):
                raise bad(f"{key}[{i}].file_name is not a string")
            info = item.get("segments_info")
            if info is not None and not (
                isinstance(info, list) and all(isinstance(s, dict) for s in info)
            ):
                raise bad(f"{key}[{i}].segments_info is not a list of objects")
    data.setdefault("categories", [dict(c) for c in categories])
    return data


class SplitJson:
    """The instance and semantic JSON files of a split, read under the lock."""

    def __init__(self, spec: Layout, base: Path) -> None:
        self.spec = spec
        self.instance_path = base / spec.instance_json if spec.instance_json else None
        self.semantic_path = base / spec.semantic_json if spec.semantic_json else None
        self.instance: dict[str, Any] = {}
        self.semantic: dict[str, Any] = {}

    @classmethod
    def load(cls, base: Path, spec: Layout) -> SplitJson:
        pair = cls(spec, base)
        if pair.instance_path is not None and pair.semantic_path is not None:
            pair.instance = _checked(
                read_json(pair.instance_path), INSTANCE_CATEGORIES, pair.instance_path
            )
            pair.semantic = _checked(
                read_json(pair.semantic_path), SEMANTIC_CATEGORIES, pair.semantic_path
            )
        return pair

    @property
    def enabled(self) -> bool:
        return self.instance_path is not None

    def files(self) -> list[tuple[Path, dict[str, Any]]]:
        """(path, data) of both files, instance first; empty for a layout without JSON."""
        if self.instance_path is None or self.semantic_path is None:
            return []
        return [(self.instance_path, self.instance), (self.semantic_path, self.semantic)]

    def _stems(self) -> dict[str, str]:
        stems: dict[str, str] = {}
        for data in (self.instance, self.semantic):
            for item in [*data.get("images", []), *data.get("annotations", [])]:
                stem = str(item.get("file_name", "")).split(".")[0]  # as FOCUS takes it
                stems.setdefault(stem.casefold(), stem)
        return stems

    def has(self, name: str) -> bool:
        return self.enabled and name.casefold() in self._stems()

    def spelling(self, name: str) -> str | None:
        return self._stems().get(name.casefold()) if self.enabled else None

    def listed_stems(self) -> set[str]:
        """Case-folded stems of every sample named in either file."""
        return set(self._stems()) if self.enabled else set()

    @staticmethod
    def _matches(item: Mapping[str, Any], name: str) -> bool:
        return str(item.get("file_name", "")).split(".")[0].casefold() == name.casefold()

    def ids_of(self, name: str) -> Ids:
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

    def without(self, name: str) -> list[tuple[Path, dict[str, Any]]]:
        """(path, data) of both files with sample ``name``'s entries left out (semantic
        file first), the in-memory data unchanged; empty if the sample is not listed."""
        if not self.has(name):
            return []
        out = []
        for path, data in reversed(self.files()):
            out.append(
                (path, {**data, **{key: [x for x in data[key] if not self._matches(x, name)]
                                   for key in ("images", "annotations")}})
            )  # fmt: skip
        return out

    def put(self, file_name: str, fg: np.ndarray) -> Ids:
        """Add the entries of sample ``file_name`` to both files in memory; entries of
        a sample of that name are replaced in place (same ids, same list positions)."""
        if not self.enabled:
            return None, None, None
        name = file_name.split(".")[0]
        old = self.ids_of(name)
        slots = {}
        for data in (self.instance, self.semantic):
            for key in ("images", "annotations"):
                hits = [i for i, x in enumerate(data[key]) if self._matches(x, name)]
                slots[(id(data), key)] = hits[0] if hits else None
                data[key] = [x for x in data[key] if not self._matches(x, name)]
        height, width = fg.shape
        image_id = old[0] if old[0] is not None else self._next_image_id()
        ann_id = old[1] if old[1] is not None else _max_id(self.instance["annotations"]) + 1
        if old[2] is not None:
            segs = old[2]
        else:
            first = _max_segment_id(self.semantic["annotations"]) + 1
            segs = (first, first + 1)
        image_entry = {"id": image_id, "file_name": file_name, "width": width, "height": height}
        entries = {
            (id(self.instance), "images"): dict(image_entry),
            (id(self.instance), "annotations"): instance_annotation(
                ann_id, image_id, file_name, fg
            ),
            (id(self.semantic), "images"): dict(image_entry),
            (id(self.semantic), "annotations"): semantic_annotation(
                segs, image_id, file_name, fg
            ),
        }
        for data in (self.instance, self.semantic):
            for key in ("images", "annotations"):
                slot = slots[(id(data), key)]
                entry = entries[(id(data), key)]
                if slot is None:
                    data[key].append(entry)
                else:
                    data[key].insert(slot, entry)
        return image_id, ann_id, segs

    def _next_image_id(self) -> int:
        ids = [_max_id(self.instance["images"]), _max_id(self.semantic["images"])]
        for data in (self.instance, self.semantic):
            ids += [_int(a.get("image_id")) for a in data["annotations"]]
        return max(ids) + 1

    def repair(self, root: Path, spec: Layout, mask_path_of: Any) -> bool:
        """Complete samples an earlier version left in the instance JSON only (in memory);
        True if anything changed. ``mask_path_of(name)`` gives a sample's mask path."""
        if not self.enabled:
            return False
        done = {str(a.get("file_name")) for a in self.semantic["annotations"]}
        pending = [a for a in self.instance["annotations"] if str(a.get("file_name")) not in done]
        changed = False
        for ann in pending:
            file_name = str(ann.get("file_name"))
            try:
                fg = read_mask_file(mask_path_of(file_name.split(".")[0]))
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
                semantic_annotation((first, first + 1), image_id, file_name, fg)
            )
            changed = True
        return changed


def instance_annotation(ann_id: int, image_id: int, file_name: str, fg: np.ndarray) -> dict:
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


def semantic_annotation(
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


def dumps(data: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON, like the official ``json.dump(coco_format, f)``."""
    return json.dumps(data).encode("utf-8")


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _max_id(items: list[Mapping[str, Any]]) -> int:
    return max((_int(x.get("id")) for x in items), default=0)


def _max_segment_id(annotations: list[Mapping[str, Any]]) -> int:
    return max(
        (_int(s.get("id")) for a in annotations for s in (a.get("segments_info") or [])),
        default=0,
    )
