"""Reading the training samples that :func:`napari_focus.datasets.export_sample` wrote.

Every FOCUS layout is read the way the official training reads it: the samples listed in
the split's semantic JSON (the file FOCUS training iterates), each with its image and its
``annotations_detectron2`` semantic file (0 = foreground, 1 = background, 255 = ignore).
The ``generic`` layout (``images/*.png`` + ``masks/*.png``) has no JSON and no semantic
file: its samples are the image files that have a mask, and the mask (read by
:func:`napari_focus.mask_files.read_mask_file`, ``> 128`` = foreground) gives the classes.
Images are read by :func:`napari_focus.io.read_image`, in their EXIF orientation, as the
official training's detectron2 ``read_image`` reads them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..datasets import LAYOUTS, get_layout, recover_split, sample_paths
from ..datasets.export import dataset_dir
from ..datasets.provenance import last_records
from ..io import check_image_file, read_image
from ..mask_files import read_mask_file
from ..transforms import to_rgb_uint8

FOREGROUND = 0
BACKGROUND = 1
IGNORE = 255


class DatasetError(ValueError):
    """The training data cannot be read (no samples, unreadable files, bad labels)."""


class NoTrainingSamples(DatasetError):
    """No sample of the layouts asked for; ``elsewhere``: layouts of the root that hold
    some (exported for another task, say). :meth:`text` says it in a front end's words."""

    def __init__(self, root: Path, layouts: Sequence[str], elsewhere: Sequence[str]) -> None:
        self.root, self.layouts, self.elsewhere = root, tuple(layouts), tuple(elsewhere)
        super().__init__(self.text("napari-focus export", "give that --layout"))

    def __reduce__(self) -> tuple:  # back from the Improve tab's training process
        return (type(self), (self.root, self.layouts, self.elsewhere))

    def text(self, how_to_export: str, how_to_choose: str) -> str:
        said = (
            f"no training samples under {self.root} for layout(s) {', '.join(self.layouts)}: "
            f"export corrected masks there first ({how_to_export})"
        )
        if self.elsewhere:
            said += f"; it holds {', '.join(self.elsewhere)} samples: {how_to_choose}"
        return said


class UnknownValidationNames(DatasetError):
    """Validation samples were named that the exported samples do not hold."""


@dataclass(frozen=True)
class Sample:
    """One training sample: where its files are. ``target`` is the semantic file for the
    FOCUS layouts and the 0/255 mask for ``generic``."""

    layout: str
    name: str
    image: Path
    target: Path
    target_is_semantic: bool

    @property
    def key(self) -> str:
        return f"{self.layout}/{self.name}"

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """``(H, W, 3)`` uint8 RGB and ``(H, W)`` uint8 classes (0 fg, 1 bg, 255 ignore)."""
        try:
            rgb = to_rgb_uint8(read_image(self.image))
            if self.target_is_semantic:
                target = _semantic_classes(read_image(self.target))
            else:
                target = np.where(read_mask_file(self.target), FOREGROUND, BACKGROUND)
        except (OSError, ValueError) as error:
            raise DatasetError(f"sample {self.key}: cannot read its files: {error}") from error
        if target.shape != rgb.shape[:2]:
            raise DatasetError(
                f"sample {self.key}: mask {target.shape} and image {rgb.shape[:2]} differ in size"
            )
        if self.target_is_semantic:
            bad = ~np.isin(target, (FOREGROUND, BACKGROUND, IGNORE))
            if bad.any():
                raise DatasetError(
                    f"sample {self.key}: {self.target.name} holds values other than 0, 1 and "
                    "255; it is not a FOCUS semantic file (re-export the sample)"
                )
        return rgb, target.astype(np.uint8)

    def unreadable_reason(self) -> str | None:
        """Why a file of the sample cannot be read, when its header already shows it
        (empty, in no image format, a link to nothing); no pixels are decoded."""
        try:
            for path in (self.image, self.target):
                check_image_file(path)
        except (OSError, ValueError) as error:
            return f"{self.key}: cannot read its files: {error}"
        return None

    def unusable(self, error: Exception) -> DatasetError:
        """``error`` (e.g. an image too elongated for the model) as the error of this
        sample, naming it and its image file."""
        return DatasetError(f"sample {self.key} ({self.image}): {error}")

    def sha256(self) -> str:
        """Hash of the image file's bytes followed by the target file's bytes."""
        digest = hashlib.sha256()
        for path in (self.image, self.target):
            digest.update(path.read_bytes())
        return digest.hexdigest()


def _semantic_classes(pixels: np.ndarray) -> np.ndarray:
    if pixels.ndim == 3 and (pixels == pixels[..., :1]).all():
        pixels = pixels[..., 0]
    if pixels.ndim != 2 or pixels.dtype != np.uint8:
        raise ValueError(f"a semantic file is 8-bit gray, got {pixels.dtype} {pixels.shape}")
    return pixels


def list_samples(root: str | Path, layout: str) -> tuple[list[Sample], list[str]]:
    """The samples of one layout under ``root`` and the problems met (missing files of
    listed samples), in the split's order."""
    spec = get_layout(layout)
    root = Path(root)
    problems: list[str] = []
    samples: list[Sample] = []
    if spec.semantic_json is None:
        image_dir = dataset_dir(root, spec) / spec.image_dir
        names = sorted(p.stem for p in image_dir.glob(f"*{spec.image_ext}") if p.is_file())
        names = [n for n in names if not n.startswith(".")]
    else:
        listed = _json_file_names(dataset_dir(root, spec) / spec.semantic_json)
        names = [name.split(".")[0] for name in listed if not spec.training_skips(name)]
        if len(names) < len(listed):
            problems.append(
                f"{spec.name}: {len(listed) - len(names)} of its listed samples left out, as FOCUS "
                "training leaves them out (second '-' field 'NonCAM': no camouflaged object)"
            )
    for name in names:
        paths = sample_paths(root, spec, name)
        target = paths.semantic if paths.semantic is not None else paths.mask
        missing = [p for p in (paths.image, target) if not p.is_file()]
        if missing:
            problems.append(f"{spec.name}/{name}: missing {', '.join(str(p) for p in missing)}")
            continue
        samples.append(Sample(spec.name, name, paths.image, target, paths.semantic is not None))
    return samples, problems


def _json_file_names(path: Path) -> list[str]:
    """The file names the semantic JSON lists, each sample (name before the first dot,
    as FOCUS takes it) once."""
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        entries = data.get("annotations", [])
        names = [str(entry["file_name"]) for entry in entries]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise DatasetError(f"{path} is not a readable FOCUS semantic JSON: {error}") from error
    first: dict[str, str] = {}
    for name in names:
        first.setdefault(name.split(".")[0], name)
    return list(first.values())


def collect_samples(root: str | Path, layouts: Iterable[str]) -> tuple[list[Sample], list[str]]:
    """Samples of every layout, in order, and the problems met (samples left out: a file
    missing, or one whose header shows it cannot be read); raises :class:`DatasetError`
    when there are none."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset root {root} is not a folder")
    layouts = list(dict.fromkeys(get_layout(name).name for name in layouts))  # each once
    if not layouts:
        raise DatasetError("name at least one layout to train on")
    samples: list[Sample] = []
    problems: list[str] = []
    for layout in layouts:
        if dataset_dir(root, get_layout(layout)).is_dir():
            # complete an export that was interrupted, as the next export would
            problems += [f"{layout}: {m}" for m in recover_split(root, layout)]
        found, issues = list_samples(root, layout)
        unreadable = {sample: sample.unreadable_reason() for sample in found}
        samples += [sample for sample in found if unreadable[sample] is None]
        problems += issues + [reason for reason in unreadable.values() if reason is not None]
        if not found and not issues:
            problems.append(f"{layout}: no samples under {root}; it adds nothing to training")
    if not samples:
        raise NoTrainingSamples(root, layouts, _layouts_with_samples(root, layouts))
    return samples, problems


def _layouts_with_samples(root: Path, besides: Sequence[str]) -> list[str]:
    """The other layouts of ``root`` that hold samples (a damaged one counts as none)."""
    found = []
    for name in LAYOUTS:
        if name in besides or not dataset_dir(root, get_layout(name)).is_dir():
            continue
        try:
            if list_samples(root, name)[0]:
                found.append(name)
        except (DatasetError, OSError):
            continue
    return found


def same_source_groups(root: str | Path, samples: Sequence[Sample]) -> dict[str, str]:
    """Sample key -> the key that stands for every sample of the same source pixels (the
    provenance log's ``source_sha256``: one photo exported into several layouts), the
    smallest of them; samples without a record stand for themselves."""
    source = {
        where: str(record["source_sha256"])
        for where, record in last_records(Path(root)).items()
        if record.get("status") != "removed" and record.get("source_sha256")
    }
    members: dict[str, list[str]] = {}
    for sample in samples:
        digest = source.get((sample.layout, sample.name.casefold()), f"key:{sample.key}")
        members.setdefault(digest, []).append(sample.key)
    return {key: min(keys) for keys in members.values() for key in keys}


def split_samples(
    samples: Sequence[Sample],
    *,
    val_fraction: float = 0.2,
    val_names: Iterable[str] | None = None,
    seed: int = 0,
    groups: Mapping[str, str] | None = None,
) -> tuple[list[Sample], list[Sample]]:
    """Training and validation samples.

    ``val_names`` (sample names or ``layout/name`` keys) picks the validation samples;
    otherwise a fixed share ``val_fraction`` is held out, chosen by a seeded hash of the
    keys, so that the split does not change when new samples are exported (each sample
    keeps its side). At least one sample stays on each side when there are two or more.
    ``groups`` (:func:`same_source_groups`) keeps the samples of one source on one side:
    validation never scores an image the training saw in another layout.
    """
    group = (lambda sample: groups.get(sample.key, sample.key)) if groups else (
        lambda sample: sample.key
    )
    if val_names is not None:
        wanted = set(val_names)
        val = [s for s in samples if s.name in wanted or s.key in wanted]
        unknown = wanted - {s.name for s in val} - {s.key for s in val}
        if unknown:
            example = samples[0].key if samples else "duts-tr/img_001"
            # the export gives names without a dash an "NF-" prefix in some layouts
            prefixed = sorted(s.name for s in samples if s.name in {f"NF-{n}" for n in unknown})
            meant = f" (did you mean {', '.join(prefixed)}?)" if prefixed else ""
            raise UnknownValidationNames(
                f"no exported sample is named {', '.join(sorted(unknown))}{meant}; name "
                f"samples as they were exported or as layout/name (e.g. {example})"
            )
        held = {group(s) for s in val}  # with the other copies of their images
        val = [s for s in samples if group(s) in held]
        train = [s for s in samples if group(s) not in held]
    elif len(samples) < 2 or val_fraction <= 0:
        return list(samples), []
    else:
        def score(key: str) -> str:
            return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()

        members: dict[str, list[Sample]] = {}
        for sample in samples:
            members.setdefault(group(sample), []).append(sample)
        count = min(max(1, round(len(samples) * val_fraction)), len(samples) - 1)
        chosen: set[str] = set()
        size = 0
        for key in sorted(members, key=score):  # a group by its smallest key, as a sample
            if size >= count:
                break
            fits = size + len(members[key]) <= count or not chosen  # no more than asked
            if fits and size + len(members[key]) <= len(samples) - 1:
                chosen.add(key)
                size += len(members[key])
        val = [s for s in samples if group(s) in chosen]
        train = [s for s in samples if group(s) not in chosen]
    if not train:
        raise DatasetError(
            "every sample is in the validation set: nothing left to train on; hold out fewer "
            "samples (fewer --val names, or a smaller --val-fraction)"
        )
    return train, val
