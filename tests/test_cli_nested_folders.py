"""Folders as annotators keep them: subfolders (predict --recursive mirrors them into
--out, export --recursive pairs them back, rank --gt never scores two images against one
mask), list files for the local engine, and too-small images named in pixels."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_cli import run_cli

from napari_focus.datasets.cli import pair_files
from napari_focus.input_files import find_inputs


@pytest.fixture
def tree(focus_reference, tmp_path) -> Path:
    """imgs/a.png, imgs/b.jpg, imgs/sub/a.png (a stem twice), imgs/sub/deeper/c.png,
    imgs/.hidden/x.png (left out)."""
    source = Image.open(focus_reference / "input.png").convert("RGB")
    root = tmp_path / "imgs"
    for rel, size in (("a.png", (80, 64)), ("b.jpg", (72, 48)), ("sub/a.png", (64, 64)),
                      ("sub/deeper/c.png", (70, 50)), (".hidden/x.png", (64, 64))):  # fmt: skip
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        source.resize(size, Image.BILINEAR).save(root / rel)
    return root


def _predict(*args) -> tuple[int, str]:
    return run_cli("predict", *args, "--task", "sod", "--device", "cpu", "--quiet")


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_predict_recursive_mirrors_subfolders_and_export_pairs_them_back(
    tree, tiny_checkpoint, tmp_path
):
    out = tmp_path / "masks"
    code, err = run_cli("predict", tree, "--task", "sod", "--device", "cpu", "--weights",
                        tiny_checkpoint, "--out", out)  # fmt: skip
    assert code == 0, err
    assert _files(out) == ["a.png", "b.png"]
    assert f"images in subfolders of {tree} are not included; add --recursive" in err

    code, err = _predict(tree, "--recursive", "--weights", tiny_checkpoint, "--out", out)
    assert code == 0, err  # a.png and sub/a.png each have their own mask
    assert "2 written" in err and "2 skipped" in err and "not included" not in err
    assert _files(out) == ["a.png", "b.png", "sub/a.png", "sub/deeper/c.png"]
    with Image.open(out / "sub/a.png") as mask:
        assert mask.size == (64, 64)

    root = tmp_path / "datasets"
    code, err = run_cli("export", tree, out, "--root", root, "--layout", "generic")
    assert code == 0, err
    assert f"images in subfolders of {tree} are not included; add --recursive" in err
    code, err = run_cli("export", tree, out, "--root", root, "--layout", "generic",
                        "--recursive", "--on-exists", "skip")  # fmt: skip
    assert code == 1, err  # sub/a.png is a second sample "a" of the one flat split
    assert f"{tree / 'sub/a.png'}: same stem as {tree / 'a.png'} (a split is one folder " in err
    assert "no image in" not in err  # every mask found its image
    assert sorted(p.name for p in (root / "masks").iterdir()) == ["a.png", "b.png", "c.png"]


def test_export_recursive_takes_flat_masks_by_stem(tree, tmp_path):
    masks = tmp_path / "flat"
    masks.mkdir()
    for name in ("b.png", "c.png", "orphan.png"):
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(masks / name)
    pairs, problems = pair_files(tree, masks, "generic", recursive=True)
    assert [(i.relative_to(tree).as_posix(), m.name) for i, m in pairs] == [
        ("b.jpg", "b.png"),
        ("sub/deeper/c.png", "c.png"),
    ]
    assert f"{tree / 'a.png'}: no mask in {masks}" in problems
    assert f"{tree / 'sub/a.png'}: no mask in {masks / 'sub'} or {masks}" in problems
    assert f"{masks / 'orphan.png'}: no image in {tree}" in problems


def test_rank_gt_refuses_to_score_two_images_against_one_mask(tree, tiny_checkpoint, tmp_path):
    pytest.importorskip("py_sod_metrics")
    gt = tmp_path / "gt"
    gt.mkdir()
    for name, size in (("a.png", (80, 64)), ("b.png", (72, 48)), ("c.png", (70, 50))):
        Image.fromarray(np.full(size[::-1], 255, np.uint8)).save(gt / name)
    out = tmp_path / "rank.csv"
    code, err = run_cli("rank", tree, "--task", "sod", "--weights", tiny_checkpoint, "--gt", gt,
                        "--recursive", "--out", out, "--device", "cpu", "--quiet")  # fmt: skip
    assert code == 1, err
    assert f"--gt: {gt / 'a.png'} would be the ground truth of a.png, sub/a.png" in err
    assert f"failed: sub/a.png: its ground truth {gt / 'a.png'} is also that of a.png" in err
    assert "failed: a.png:" in err and "ranked 2 images, 2 failed" in err
    text = out.read_text(encoding="utf-8")
    assert "b.jpg" in text and str(gt / "c.png") in text  # unique masks are scored

    (gt / "sub").mkdir()  # the mask of sub/a.png in the same subfolder: both scored
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(gt / "sub/a.png")
    code, err = run_cli("rank", tree, "--task", "sod", "--weights", tiny_checkpoint, "--gt", gt,
                        "--recursive", "--out", out, "--device", "cpu", "--quiet")  # fmt: skip
    assert code == 0, err
    assert "ranked 4 images, 0 failed" in err

    Image.open(tree / "a.png").save(tree / "a.jpg")  # one stem beside: gt/a.png is either's
    code, err = run_cli("rank", tree, "--task", "sod", "--weights", tiny_checkpoint, "--gt", gt,
                        "--recursive", "--out", out, "--device", "cpu", "--quiet")  # fmt: skip
    assert code == 1, err
    assert f"--gt: {gt / 'a.png'} would be the ground truth of a.jpg, a.png" in err
    assert f"failed: a.jpg: its ground truth {gt / 'a.png'} is also that of a.png" in err
    assert "ranked 3 images, 2 failed" in err


def test_local_predict_reads_list_files(tree, tiny_checkpoint, tmp_path):
    listing = tmp_path / "lists" / "batch.txt"
    listing.parent.mkdir()
    listing.write_text(
        f"# the day's images\n{tree / 'b.jpg'}\n\n../imgs/sub/deeper\nmissing.png\n",
        encoding="utf-8",
    )
    out = tmp_path / "masks"
    code, err = _predict(listing, "--weights", tiny_checkpoint, "--out", out)
    assert code == 1, err  # missing.png matched nothing
    assert f"{str(listing.parent / 'missing.png')!r} does not exist" in err
    assert f"(listed in {listing})" in err
    assert _files(out) == ["b.png", "c.png"]

    empty = tmp_path / "empty.lst"
    empty.write_text("# nothing yet\n", encoding="utf-8")
    found = find_inputs([str(empty)])
    assert not found.images and "names no image" in found.unmatched[0][1]


def test_a_list_file_saved_with_a_byte_order_mark_names_its_first_image(tree):
    """Notepad saves UTF-8 with a BOM: the first entry is still the path written."""
    from napari_focus.input_files import read_list_file

    listing = tree / "list.txt"
    listing.write_text("a.png\nsub/a.png\n", encoding="utf-8-sig")
    assert read_list_file(listing) == [str(tree / "a.png"), str(tree / "sub/a.png")]
    listing.write_text("a.png\r\nsub/a.png\r\n", encoding="utf-16")  # PowerShell's `>`
    assert read_list_file(listing) == [str(tree / "a.png"), str(tree / "sub/a.png")]
    listing.write_bytes("a.png\ncaf\u00e9.png\n".encode("latin-1"))  # another code page
    code, err = _predict(listing, "--out", tree.parent / "masks")
    assert code == 2 and f"cannot read the list file {str(listing)!r}" in err
    assert "it is not UTF-8 text; save it as UTF-8" in err


@pytest.mark.skipif(sys.platform == "win32", reason="symbolic links need privileges")
def test_linked_images_are_named_by_their_links(tree, tiny_checkpoint, tmp_path):
    """A git-annex or DataLad tree links each image to a file named by its hash: the
    mask is named after the link; one file named twice is predicted once."""
    from napari_focus.input_files import find_inputs

    store, linked = tmp_path / "annex", tmp_path / "dataset"
    store.mkdir()
    (linked / "sub").mkdir(parents=True)
    (tree / "a.png").rename(store / "MD5E-s1234--0123abcd.png")
    (linked / "sub" / "cat.png").symlink_to(store / "MD5E-s1234--0123abcd.png")
    found = find_inputs([str(linked), str(store / "MD5E-s1234--0123abcd.png")], recursive=True)
    assert found.images == [linked / "sub" / "cat.png"]
    assert found.subfolders[found.images[0]] == "sub"
    code, err = _predict(linked, "--recursive", "--weights", tiny_checkpoint,
                         "--out", tmp_path / "masks")  # fmt: skip
    assert code == 0, err
    assert _files(tmp_path / "masks") == ["sub/cat.png"]


@pytest.mark.skipif(sys.platform == "win32", reason="symbolic links need privileges")
def test_a_link_beside_its_file_leaves_the_mask_to_the_file(tree, tiny_checkpoint, tmp_path):
    """``alias.png -> real.png`` in one folder: one mask, named after the file itself
    (the link sorted first took it, and real.png was reported unpaired by export), and
    a note says why alias.png has none."""
    folder = tmp_path / "pair"
    folder.mkdir()
    (tree / "a.png").rename(folder / "real.png")
    (folder / "alias.png").symlink_to("real.png")
    code, err = run_cli("predict", folder, "--task", "sod", "--device", "cpu", "--weights",
                        tiny_checkpoint, "--out", tmp_path / "masks")  # fmt: skip
    assert code == 0, err
    assert _files(tmp_path / "masks") == ["real.png"]
    assert (f"napari-focus: note: {folder / 'alias.png'} is another name of "
            f"{folder / 'real.png'}: each file is predicted once, its mask named after the "
            "file") in err  # fmt: skip


def test_a_too_small_image_is_named_with_its_size_in_pixels(tree, tiny_checkpoint, tmp_path):
    Image.new("RGB", (20, 16)).save(tree / "tiny.png")
    code, err = _predict(tree / "tiny.png", tree / "b.jpg", "--weights", tiny_checkpoint,
                         "--out", tmp_path / "masks")  # fmt: skip
    assert code == 1, err
    assert "failed: " in err and "tiny.png is 20x16 pixels; FOCUS needs at least 32x32" in err
    assert "array of shape" not in err


def test_an_out_inside_the_input_folder_is_not_read_as_input(tree, tiny_checkpoint):
    out = tree / "masks"
    for _ in range(2):
        code, err = _predict(tree, "--recursive", "--weights", tiny_checkpoint, "--out", out)
        assert code == 0, err
    assert "0 written" in err and "4 skipped" in err
    assert _files(out) == ["a.png", "b.png", "sub/a.png", "sub/deeper/c.png"]


def test_images_of_the_user_s_in_an_out_inside_the_input_folder_are_named(
    tree, tiny_checkpoint
):
    """--out a subfolder holding photos: they are not read (the output folder is left out
    of the walk), which a note says; the masks predict wrote there are not counted."""
    out = tree / "sub"  # holds sub/a.png, a photo, and sub/deeper/c.png
    code, err = run_cli("predict", tree, "--recursive", "--task", "sod", "--device", "cpu",
                        "--weights", tiny_checkpoint, "--out", out)  # fmt: skip
    assert code == 0, err
    assert (f"napari-focus: note: --out {out} lies in the input folder {tree}, so its 2 "
            "image file(s) without a napari-focus record (e.g. a.png) are not read as "
            "inputs") in err  # fmt: skip


def test_series_folders_and_the_masks_folder_are_not_walked_as_images(tree, tmp_path):
    """The widget's series folder (autosaves, proposals) and a masks folder kept inside
    the image folder hold PNGs that are no images of the user's."""
    from napari_focus.series.state_file import STATE_NAME

    series = tree / "napari_focus"
    (series / "work").mkdir(parents=True)
    (series / STATE_NAME).write_text("{}")
    Image.new("L", (64, 64)).save(series / "work" / "a.png")
    masks = tree / "masks"
    (masks / "sub").mkdir(parents=True)
    for rel in ("a.png", "b.png", "sub/a.png"):
        Image.new("L", (8, 8), 255).save(masks / rel)
    found = find_inputs([str(tree)], recursive=True, exclude=[masks])
    assert [p.relative_to(tree).as_posix() for p in found.images] == [
        "a.png", "b.jpg", "sub/a.png", "sub/deeper/c.png"
    ]
    pairs, problems = pair_files(tree, masks, "generic", recursive=True)
    assert [(i.relative_to(tree).as_posix(), m.relative_to(masks).as_posix())
            for i, m in pairs] == [("a.png", "a.png"), ("b.jpg", "b.png")]  # fmt: skip
    assert [problem.split(":")[0] for problem in problems] == [  # no mask taken as an image
        str(tree / "sub" / "a.png"), str(tree / "sub" / "deeper" / "c.png")
    ]


@pytest.mark.skipif(sys.platform == "win32", reason="folder links need privileges there")
def test_linked_subfolders_are_walked_once_and_a_link_up_never_loops(
    tree, tiny_checkpoint, tmp_path
):
    """A collection put together from links: --recursive follows a linked folder as a
    file browser shows it; a link back up the tree, or to a folder walked already, adds
    nothing (and never loops)."""
    from napari_focus.series import scan_folder

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    Image.open(tree / "a.png").save(elsewhere / "far.png")
    (tree / "linked").symlink_to(elsewhere, target_is_directory=True)
    (tree / "sub" / "up").symlink_to(tree, target_is_directory=True)  # a loop
    (tree / "again").symlink_to(tree / "sub" / "deeper", target_is_directory=True)

    out = tmp_path / "masks"
    code, err = _predict(tree, "--recursive", "--weights", tiny_checkpoint, "--out", out)
    assert code == 0, err
    assert _files(out) == ["a.png", "b.png", "linked/far.png", "sub/a.png", "sub/deeper/c.png"]
    assert scan_folder(tree, recursive=True) == [
        "a.png", "b.jpg", "linked/far.png", "sub/a.png", "sub/deeper/c.png"
    ]  # fmt: skip
    code, err = run_cli("export", tree, out, "--root", tmp_path / "ds", "--layout", "generic",
                        "--recursive", "--on-exists", "rename")  # fmt: skip
    assert "far.png" in " ".join(p.name for p in (tmp_path / "ds" / "masks").iterdir()), err


def test_an_earlier_run_s_masks_inside_the_image_folder_are_not_images(tree, tiny_checkpoint):
    """A first predict wrote its masks into imgs/run1 (with their subfolders); a later
    --recursive predict elsewhere, and rank, leave that folder out with its subfolders
    and say so, while the user's own images, PNGs included, are all still read."""
    code, err = _predict(tree, "--recursive", "--weights", tiny_checkpoint, "--out", tree / "run1")
    assert code == 0, err
    assert _files(tree / "run1") == ["a.png", "b.png", "sub/a.png", "sub/deeper/c.png"]
    photos = ["a.png", "b.jpg", "sub/a.png", "sub/deeper/c.png"]
    found = find_inputs([str(tree)], recursive=True)
    assert [p.relative_to(tree).as_posix() for p in found.images] == photos
    assert found.mask_folders == [tree / "run1"]

    other = tree.parent / "run2"
    code, err = run_cli("predict", tree, "--recursive", "--task", "sod", "--device", "cpu",
                        "--weights", tiny_checkpoint, "--out", other)  # fmt: skip
    assert code == 0, err
    assert (f"napari-focus: note: left out {tree / 'run1'} and its subfolders: its images "
            "are masks napari-focus wrote") in err  # fmt: skip
    assert _files(other) == ["a.png", "b.png", "sub/a.png", "sub/deeper/c.png"]

    # a mask corrected and saved without its record, below the output: still left out
    corrected = tree / "run1" / "sub" / "deeper" / "c.png"
    Image.open(corrected).save(corrected)
    ranking = tree.parent / "rank.csv"
    code, err = run_cli("rank", tree, "--recursive", "--task", "sod", "--device", "cpu",
                        "--weights", tiny_checkpoint, "--out", ranking)  # fmt: skip
    assert code == 0, err
    assert f"left out {tree / 'run1'} and its subfolders" in err
    ranked = ranking.read_text()
    assert "run1" not in ranked and "deeper/c.png" in ranked

    # the output folder given itself: its masks were asked for, all of them; also an
    # output tree with masks in its subfolders only; and one read through another input
    found = find_inputs([str(tree / "run1")], recursive=True)
    assert len(found.images) == 4 and found.mask_folders == []
    shutil.copytree(tree / "run1" / "sub", tree.parent / "tree_only" / "sub")
    found = find_inputs([str(tree.parent / "tree_only")], recursive=True)
    assert len(found.images) == 2 and found.mask_folders == []
    found = find_inputs([str(tree), str(tree / "run1"), f"{tree}/"], recursive=True)
    assert len(found.images) == 8 and found.mask_folders == []

    # the widget's series keeps listing them (a saved series' items stay where they were)
    from napari_focus.series import scan_folder

    assert "run1/a.png" in scan_folder(tree, recursive=True)
    left_out: list[Path] = []
    assert "run1/a.png" not in scan_folder(tree, recursive=True, mask_folders=left_out)
    assert left_out == [tree / "run1"]


def test_masks_copied_among_photos_never_hide_them(tree, tiny_checkpoint):
    """Only a folder whose every image is a napari-focus mask is an earlier output: masks
    copied in at either end of a folder of PNG photos, or beside a JPEG, leave it in."""
    code, err = _predict(tree, "--weights", tiny_checkpoint, "--out", tree.parent / "masks")
    assert code == 0, err
    shots = tree / "shots"
    shots.mkdir()
    for name in ("m.png", "n.png"):
        Image.open(tree / "a.png").save(shots / name)
    for name in ("0_mask.png", "z_mask.png"):
        shutil.copy(tree.parent / "masks" / "a.png", shots / name)
    mixed = tree / "mixed"
    mixed.mkdir()
    shutil.copy(tree.parent / "masks" / "a.png", mixed / "0.png")
    shutil.copy(tree / "b.jpg", mixed / "z.jpg")
    found = find_inputs([str(tree)], recursive=True)
    named = {p.relative_to(tree).as_posix() for p in found.images}
    assert {"shots/m.png", "shots/n.png", "shots/0_mask.png", "mixed/z.jpg"} <= named
    assert found.mask_folders == []
