"""A sample taken back out of a split (an image accepted, then rejected): its JSON
entries and files go as one journaled transaction, a kill in between is completed by
the next export, and recovery never lists it again."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_datasets import check_split, make_sample

from napari_focus.datasets import (
    LAYOUTS,
    export_sample,
    get_layout,
    read_records,
    recover_split,
    remove_sample,
    sample_paths,
)
from napari_focus.datasets.export import dataset_dir
from napari_focus.datasets.splitjson import SplitJson


def _listed(root: Path, layout: str) -> set[str]:
    spec = get_layout(layout)
    return SplitJson.load(dataset_dir(root, spec), spec).listed_stems()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_removed_sample_leaves_the_split_and_the_others_stay(tmp_path: Path, layout) -> None:
    keep, gone = (
        export_sample(tmp_path, layout, name, *make_sample(i)).name
        for i, name in enumerate(["keep", "Gone"])
    )  # as the layout names them (a COD10K name gets its fields)
    kept = {p: p.read_bytes() for p in sample_paths(tmp_path, layout, keep).all()}
    files = sample_paths(tmp_path, layout, gone).all()
    listing = bool(get_layout(layout).instance_json)

    asked = gone.lower() if listing else gone  # listed names match regardless of case
    removed = remove_sample(tmp_path, layout, asked)
    assert removed.removed and removed.name == gone
    assert sorted(removed.files) == sorted(files)
    assert not any(path.exists() for path in files)
    assert {p: p.read_bytes() for p in kept} == kept
    if listing:
        assert removed.listed and _listed(tmp_path, layout) == {keep.casefold()}
        check_split(tmp_path, layout)
    last = read_records(tmp_path)[-1]
    assert (last["name"], last["status"], last["layout"]) == (gone, "removed", layout)

    again = remove_sample(tmp_path, layout, gone)
    assert not again.removed and again.files == ()
    export_sample(tmp_path, layout, gone, *make_sample(5))  # the name is free again
    assert all(path.exists() for path in files)


def test_a_removal_killed_after_its_commit_is_completed_by_the_next_export(
    tmp_path: Path, monkeypatch
) -> None:
    layout = "duts-tr"
    for i, name in enumerate(["a", "b"]):
        export_sample(tmp_path, layout, name, *make_sample(i))
    mask = sample_paths(tmp_path, layout, "a").mask
    unlink = Path.unlink

    def killed_at_the_mask(self, *args, **kwargs):
        if self == mask:
            raise SystemExit("killed")
        return unlink(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(Path, "unlink", killed_at_the_mask)
        with pytest.raises(SystemExit):
            remove_sample(tmp_path, layout, "a")
    assert mask.exists() and _listed(tmp_path, layout) == {"b"}  # unlisted, files half gone
    export_sample(tmp_path, layout, "c", *make_sample(2))
    assert not any(path.exists() for path in sample_paths(tmp_path, layout, "a").all())
    assert _listed(tmp_path, layout) == {"b", "c"}
    check_split(tmp_path, layout)
    assert [r["status"] for r in read_records(tmp_path)] == ["written"] * 2 + [
        "removed", "written"
    ]  # fmt: skip


def test_files_of_a_removed_sample_put_back_by_hand_are_not_listed_again(
    tmp_path: Path,
) -> None:
    """Recovery re-lists complete files the provenance log says this package wrote;
    a sample whose last line says it was removed is left to whoever put them back."""
    layout = "duts-tr"
    export_sample(tmp_path, layout, "a", *make_sample(0))
    saved = {p: p.read_bytes() for p in sample_paths(tmp_path, layout, "a").all()}
    remove_sample(tmp_path, layout, "a")
    for path, data in saved.items():
        path.write_bytes(data)
    recover_split(tmp_path, layout)
    assert _listed(tmp_path, layout) == set()
    assert all(path.exists() for path in saved)
