"""Where each FOCUS training split keeps its files, as data.

Facts taken from the official FOCUS preparation scripts (``utils/prepare/prepare_*.py``)
and dataset registrations (``focus/data/datasets/register_*.py``); all paths are relative
to the FOCUS ``datasets/`` folder (``DETECTRON2_DATASETS``):

Per layout: dataset folder; image folder and extension; mask folder and naming;
semantic folder; instance JSON; semantic JSON (all inside the dataset folder).

* duts-tr: ``DUTS``; ``DUTS-TR/DUTS-TR-Image`` ``.jpg``; ``DUTS-TR/DUTS-TR-Mask``
  ``.png``; ``annotations_detectron2/DUTS-TR`` ``.png``; ``DUTS_Train.json``;
  ``DUTS_Semantic_Train.json``.
* cod10k-train: ``COD10K-v3``; ``Train/Image`` ``.jpg``; ``Train/GT_Object`` ``.png``;
  ``annotations_detectron2/Train``; ``COD_Train.json``; ``COD_SEMANTIC_Train.json``.
* camo-train: ``CAMO-V.1.0-CVIU2019``; ``Images/Train`` ``.jpg``;
  ``cod_semantic_train`` ``.png`` (also copied to ``GT``, the all-splits mask folder the
  official script builds the JSON from); ``annotations_detectron2/cod_semantic_train``;
  ``COD_Train.json``; ``COD_SEMANTIC_Train.json``.
* istd-train: ``ISTD_Dataset``; ``train/train_A`` ``.png``; ``train/train_B`` ``.png``;
  ``annotations_detectron2/train``; ``ISTD_train.json``; ``COD_SEMANTIC_train.json``.
* defocus-train: ``DEFOCUS/dataset``; ``train_data/1204source`` ``.bmp``;
  ``train_data/1204gt`` ``.bmp``; ``annotations_detectron2/1204gt`` ``.bmp``;
  ``DEFOCUS_TRAIN_INSTANCE.json``; ``DEFOCUS_TRAIN_SEMANTIC.json``.
* casia-train: ``CASIA``; ``TRAIN/image`` ``.jpg`` (PNG data, see below);
  ``TRAIN/gt`` ``<name>_gt.png``; ``annotations_detectron2/TRAIN`` ``<name>_gt.png``;
  ``CASIA_TRAIN.json``; ``CASIA_SEMSNTIC_TRAIN.json``.
* generic: the root itself; ``images`` ``.png``; ``masks`` ``.png`` (0/255); no
  semantic file, no JSON.

(``CASIA_SEMSNTIC`` and ISTD's ``COD_SEMANTIC_train.json`` are the official spellings.)

* Masks are single-channel 0/255 (the official ``pre_process`` thresholds at 128).
* The semantic file is the mask plus one in uint8, so 0 -> 1 (background) and 255 -> 0
  (foreground, wrapped around): pixel values are exactly {0, 1}, matching the contiguous
  class ids (0 = foreground, 1 = background) the FOCUS dataset mapper trains on.
* CASIA training images are written by the official script as PNG data under a ``.jpg``
  name; we do the same (lossless, which matters for forgery traces).
* COD10K and ISTD registrations evaluate ``file_name.split('-')[1]`` (and skip
  ``NonCAM``, see :meth:`Layout.training_skips`), so their sample names must contain a
  ``-``; every registration takes ``file_name.split('.')[0]`` as the stem, so names never
  contain dots.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    """One export target. Folders are relative to ``dataset_dir``, itself relative to root."""

    name: str
    dataset_dir: str
    image_dir: str
    image_ext: str
    image_format: str  # PIL format name of the bytes written (may differ from the extension)
    mask_dir: str
    mask_suffix: str  # appended to the sample name, e.g. ".png" or "_gt.png"
    mask_format: str
    semantic_dir: str | None = None
    instance_json: str | None = None
    semantic_json: str | None = None
    extra_mask_dirs: tuple[str, ...] = ()  # folders the official scripts also read masks from
    # image folders of the other splits whose masks share extra_mask_dirs: their names
    # are not free (CAMO's GT holds the test masks too)
    other_split_image_dirs: tuple[str, ...] = ()
    name_needs_dash: bool = False
    task: str | None = None

    @property
    def has_json(self) -> bool:
        return self.instance_json is not None and self.semantic_json is not None

    def training_skips(self, file_name: str) -> bool:
        """Whether the official loader of this split leaves out the sample its JSON lists
        as ``file_name`` (with the extension): COD10K and ISTD skip a name whose second
        ``-`` field, extension included, is ``NonCAM`` (COD10K's all-background images)."""
        fields = file_name.split("-")
        return self.name_needs_dash and len(fields) > 1 and fields[1] == "NonCAM"


_LAYOUTS = (
    Layout(
        name="duts-tr",
        task="sod",
        dataset_dir="DUTS",
        image_dir="DUTS-TR/DUTS-TR-Image",
        image_ext=".jpg",
        image_format="JPEG",
        mask_dir="DUTS-TR/DUTS-TR-Mask",
        mask_suffix=".png",
        mask_format="PNG",
        semantic_dir="annotations_detectron2/DUTS-TR",
        instance_json="DUTS_Train.json",
        semantic_json="DUTS_Semantic_Train.json",
    ),
    Layout(
        name="cod10k-train",
        task="cod",
        dataset_dir="COD10K-v3",
        image_dir="Train/Image",
        image_ext=".jpg",
        image_format="JPEG",
        mask_dir="Train/GT_Object",
        mask_suffix=".png",
        mask_format="PNG",
        semantic_dir="annotations_detectron2/Train",
        instance_json="COD_Train.json",
        semantic_json="COD_SEMANTIC_Train.json",
        name_needs_dash=True,
    ),
    Layout(
        name="camo-train",
        task="cod",
        dataset_dir="CAMO-V.1.0-CVIU2019",
        image_dir="Images/Train",
        image_ext=".jpg",
        image_format="JPEG",
        mask_dir="cod_semantic_train",
        mask_suffix=".png",
        mask_format="PNG",
        semantic_dir="annotations_detectron2/cod_semantic_train",
        instance_json="COD_Train.json",
        semantic_json="COD_SEMANTIC_Train.json",
        extra_mask_dirs=("GT",),
        other_split_image_dirs=("Images/Test",),
    ),
    Layout(
        name="istd-train",
        task="sd",
        dataset_dir="ISTD_Dataset",
        image_dir="train/train_A",
        image_ext=".png",
        image_format="PNG",
        mask_dir="train/train_B",
        mask_suffix=".png",
        mask_format="PNG",
        semantic_dir="annotations_detectron2/train",
        instance_json="ISTD_train.json",
        semantic_json="COD_SEMANTIC_train.json",
        name_needs_dash=True,
    ),
    Layout(
        name="defocus-train",
        task="dbd",
        dataset_dir="DEFOCUS/dataset",
        image_dir="train_data/1204source",
        image_ext=".bmp",
        image_format="BMP",
        mask_dir="train_data/1204gt",
        mask_suffix=".bmp",
        mask_format="BMP",
        semantic_dir="annotations_detectron2/1204gt",
        instance_json="DEFOCUS_TRAIN_INSTANCE.json",
        semantic_json="DEFOCUS_TRAIN_SEMANTIC.json",
    ),
    Layout(
        name="casia-train",
        task="fd",
        dataset_dir="CASIA",
        image_dir="TRAIN/image",
        image_ext=".jpg",
        image_format="PNG",
        mask_dir="TRAIN/gt",
        mask_suffix="_gt.png",
        mask_format="PNG",
        semantic_dir="annotations_detectron2/TRAIN",
        instance_json="CASIA_TRAIN.json",
        semantic_json="CASIA_SEMSNTIC_TRAIN.json",
    ),
    Layout(
        name="generic",
        dataset_dir=".",
        image_dir="images",
        image_ext=".png",
        image_format="PNG",
        mask_dir="masks",
        mask_suffix=".png",
        mask_format="PNG",
    ),
)

LAYOUT_SPECS: dict[str, Layout] = {layout.name: layout for layout in _LAYOUTS}
LAYOUTS: tuple[str, ...] = tuple(LAYOUT_SPECS)

# Category lists written into JSON files that do not exist yet (official values).
INSTANCE_CATEGORIES = [{"id": 1, "name": "foreground", "supercategory": "foreground"}]
SEMANTIC_CATEGORIES = [
    {"id": 1, "name": "foreground", "supercategory": "foreground", "is_thing": 1},
    {"id": 2, "name": "background", "supercategory": "background", "is_thing": 0},
]
FOREGROUND_CATEGORY = 1
BACKGROUND_CATEGORY = 2


def get_layout(name: str) -> Layout:
    """The layout called ``name`` (case-insensitive); ValueError listing the choices."""
    key = str(name).lower()
    if key not in LAYOUT_SPECS:
        raise ValueError(f"unknown layout {name!r}; expected one of {', '.join(LAYOUTS)}")
    return LAYOUT_SPECS[key]


def layout_for_task(task: str) -> str:
    """Default export layout of a FOCUS task (``"sod"`` -> ``"duts-tr"``), from the presets."""
    from ..presets import task_info

    return task_info(task)["layout"]


def root_of_export(layout: str, image: str | Path) -> Path | None:
    """The ``datasets/`` root an image exported into ``layout`` was written under
    (``root/DUTS/DUTS-TR/DUTS-TR-Image/x.jpg`` -> ``root``), or None when ``image`` does
    not lie in that layout's image folder."""
    try:
        spec = get_layout(layout)
    except ValueError:
        return None
    folder = Path(image).parent
    inside = Path(spec.dataset_dir, spec.image_dir).parts
    inside = tuple(part for part in inside if part != ".")
    if not folder.is_absolute() or folder.parts[-len(inside) :] != inside:
        return None
    return folder.parents[len(inside) - 1]
