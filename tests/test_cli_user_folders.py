"""The command line on folders as annotators have them: names that are one file on
macOS and Windows (case, Unicode normalization), broken files beside good ones, and
the umask. Every refusal names the file, what is wrong and what to do."""

from __future__ import annotations

import os
import stat
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_cli import needs_qt, run_cli

from napari_focus.datasets.cli import pair_files
from napari_focus.io import UnreadableImageError, read_image
from napari_focus.prediction_files import plan_outputs

CASE_NOTE = "names that differ only in case are one file on macOS and Windows"


@pytest.fixture
def weights(tiny_checkpoint) -> Path:
    return tiny_checkpoint


@pytest.fixture
def photo(focus_reference) -> Image.Image:
    source = Image.open(focus_reference / "input.png").convert("RGB")
    return source.resize((72, 48), Image.BILINEAR)


def test_outputs_of_names_one_file_apart_only_in_case_are_claimed_once(tmp_path):
    out = tmp_path / "out"
    nfd, nfc = unicodedata.normalize("NFD", "é.png"), unicodedata.normalize("NFC", "é.jpg")
    sources = ["/d/A.png", "/d/a.png", "/d/a.JPG", f"/d/{nfd}", f"/d/{nfc}", "/d/b.png"]
    plan = plan_outputs(sources, out, probability=True)
    assert [e.source for e in plan.todo] == ["/d/A.png", f"/d/{nfd}", "/d/b.png"]
    reasons = {entry.source: reason for entry, reason in plan.clashes}
    assert reasons["/d/a.png"] == f"same output name as /d/A.png ({CASE_NOTE}); rename one"
    assert reasons["/d/a.JPG"] == reasons["/d/a.png"]
    assert "differ only in how their accents are encoded" in reasons[f"/d/{nfc}"]
    # a probability map that is another input's mask but for the case
    plan = plan_outputs(["/d/x.png", "/e/X_PROBABILITY.png"], out, probability=True)
    [(clash, reason)] = plan.clashes
    assert clash.source == "/e/X_PROBABILITY.png"
    assert reason.startswith("its mask X_PROBABILITY.png would be the probability map of /d/x.png")


def test_a_file_in_out_that_differs_only_in_case_is_never_replaced(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "Cat.png").write_bytes(b"someone's mask")
    for overwrite in (False, True):
        plan = plan_outputs(["/d/cat.jpg", "/d/dog.jpg"], out, overwrite=overwrite)
        assert [e.source for e in plan.todo] == ["/d/dog.jpg"] and not plan.existing
        [(_, reason)] = plan.clashes
        assert reason == (
            f"its mask cat.png would replace Cat.png, already in {out} ({CASE_NOTE}); "
            "rename the image, move Cat.png away or choose another --out"
        )
    (out / "cat.png").write_bytes(b"this input's earlier mask")  # both exist: no clash here
    assert [e.source for e in plan_outputs(["/d/cat.jpg"], out).existing] == ["/d/cat.jpg"]


def test_predict_writes_one_mask_per_case_insensitive_name(photo, weights, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    photo.save(images / "A.png")
    photo.convert("L").save(images / "a.png")
    photo.save(images / "b.JPG")
    photo.save(images / "b.jpg")
    out = tmp_path / "masks"
    code, err = run_cli("predict", images, "--task", "sod", "--weights", weights, "--out", out,
                        "--device", "cpu", "--quiet")  # fmt: skip
    assert code == 1, err
    assert "2 written" in err and "2 failed" in err
    first = images / "A.png"
    assert f"failed: {images / 'a.png'}: same output name as {first} ({CASE_NOTE})" in err
    assert f"failed: {images / 'b.jpg'}: same output name as {images / 'b.JPG'}" in err
    assert sorted(p.name for p in out.iterdir()) == ["A.png", "b.png"]


def test_export_refuses_two_images_of_one_sample_name(photo, tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    mask = Image.fromarray(np.full((48, 72), 255, np.uint8))
    for name in ("Leaf.png", "leaf.jpg", "my photo.png", "my_photo.png"):
        photo.save(images / name)
        mask.save(masks / (Path(name).stem + ".png"))
    photo.save(images / "IMG_7.JPG")
    mask.save(masks / "img_7.png")  # masks named on a Windows machine pair all the same
    pairs, problems = pair_files(images, masks, "duts-tr")
    assert [(i.name, m.name) for i, m in pairs] == [
        ("IMG_7.JPG", "img_7.png"), ("Leaf.png", "Leaf.png"), ("my photo.png", "my photo.png"),
    ]  # fmt: skip
    assert problems == [
        f"{images / 'leaf.jpg'}: its sample name 'leaf' is also that of {images / 'Leaf.png'} "
        "(sample names are made safe and compared regardless of case, as macOS and Windows "
        "compare file names); rename one",
        f"{images / 'my_photo.png'}: its sample name 'my_photo' is also that of "
        f"{images / 'my photo.png'} (sample names are made safe and compared regardless of "
        "case, as macOS and Windows compare file names); rename one",
    ]
    root = tmp_path / "datasets"
    code, err = run_cli("export", images, masks, "--root", root, "--layout", "duts-tr")
    assert code == 1 and "3 written" in err and "0 failed, 2 unpaired" in err, err
    listed = sorted(p.stem for p in (root / "DUTS/DUTS-TR/DUTS-TR-Image").iterdir())
    assert listed == ["IMG_7", "Leaf", "my_photo"]


def test_an_image_named_like_another_s_mask_keeps_its_own(photo, tmp_path):
    """Images x.png and x_mask.png, masks x.png and x_mask.png: each image takes the
    mask of its exact name (x_mask.png is x_mask's, not a second mask of x)."""
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for name in ("x.png", "x_mask.png"):
        photo.save(images / name)
        Image.fromarray(np.full((48, 72), 255, np.uint8)).save(masks / name)
    pairs, problems = pair_files(images, masks, "generic")
    assert sorted((i.name, m.name) for i, m in pairs) == [
        ("x.png", "x.png"), ("x_mask.png", "x_mask.png")
    ]  # fmt: skip
    assert problems == []
    # an image of that name in another subfolder has other masks: d1's is d1's own
    tree, tree_masks = tmp_path / "tree", tmp_path / "tree masks"
    (tree / "d1").mkdir(parents=True)
    (tree / "d2").mkdir()
    (tree_masks / "d1").mkdir(parents=True)
    photo.save(tree / "d1" / "cell.jpg")
    photo.save(tree / "d2" / "cell_mask.jpg")
    Image.fromarray(np.full((48, 72), 255, np.uint8)).save(tree_masks / "d1" / "cell_mask.png")
    pairs, _ = pair_files(tree, tree_masks, "generic", recursive=True)
    assert [(i.relative_to(tree).as_posix(), m.name) for i, m in pairs] == [
        ("d1/cell.jpg", "cell_mask.png")
    ]


def test_export_gives_a_mask_to_the_image_of_its_exact_name(photo, tmp_path):
    """leaf.png and Leaf.jpg, one mask leaf.png: it is leaf.png's, whatever the order of
    the names; Leaf.jpg is refused, not given the other image's mask."""
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    photo.save(images / "leaf.png")
    photo.convert("L").convert("RGB").save(images / "Leaf.jpg")
    Image.fromarray(np.full((48, 72), 255, np.uint8)).save(masks / "leaf.png")
    pairs, problems = pair_files(images, masks, "duts-tr")
    assert [(i.name, m.name) for i, m in pairs] == [("leaf.png", "leaf.png")]
    assert problems == [
        f"{images / 'Leaf.jpg'}: its sample name 'Leaf' is also that of {images / 'leaf.png'} "
        "(sample names are made safe and compared regardless of case, as macOS and Windows "
        "compare file names); rename one"
    ]


def test_the_png_beside_a_jpeg_of_its_stem_is_its_mask(photo, tmp_path):
    """DUTS-TE style: d.jpg and its mask d.png in one folder pair as the series and
    rank --gt pair them; a PNG photo with no JPEG of its stem stays an image."""
    folder = tmp_path / "duts-te"
    folder.mkdir()
    photo.save(folder / "d.jpg")
    Image.fromarray(np.full((48, 72), 255, np.uint8)).save(folder / "d.png")
    photo.save(folder / "e.png")
    Image.fromarray(np.full((48, 72), 255, np.uint8)).save(folder / "e_mask.png")
    pairs, problems = pair_files(folder, folder, "generic")
    assert [(i.name, m.name) for i, m in pairs] == [("d.jpg", "d.png"), ("e.png", "e_mask.png")]
    assert problems == []


def test_export_of_masks_beside_their_images(photo, tmp_path):
    """MASKS_DIR is IMAGES_DIR: a file is never its own mask, and a mask beside its image
    (``a_mask.png``, ``b_gt.tif``) is no image to export."""
    folder = tmp_path / "same"
    folder.mkdir()
    mask = Image.fromarray(np.full((48, 72), 255, np.uint8))
    photo.save(folder / "a.png")
    mask.save(folder / "a_mask.png")
    photo.save(folder / "b.jpg")
    mask.save(folder / "b_gt.tif")
    photo.save(folder / "c.png")  # no mask of its own
    pairs, problems = pair_files(folder, folder, "generic")
    assert [(i.name, m.name) for i, m in pairs] == [("a.png", "a_mask.png"), ("b.jpg", "b_gt.tif")]
    assert problems == [f"{folder / 'c.png'}: no mask in {folder}"]
    mask.save(folder / "b_mask.png")  # a second mask of b.jpg: say which to keep
    _, problems = pair_files(folder, folder, "generic")
    assert problems[0] == (
        f"{folder / 'b.jpg'}: several masks match: b_gt.tif, b_mask.png; keep one of them "
        "in the masks folder (move the others away)"
    )
    (folder / "b_mask.png").unlink()
    mask.save(folder / "C_Mask.png")  # regardless of case, as no name matches exactly
    (folder / "sub").mkdir()
    photo.save(folder / "sub" / "a.png")  # no mask of its own: the photo a.png is none
    pairs, problems = pair_files(folder, folder, "generic", recursive=True)
    assert [(i.relative_to(folder).as_posix(), m.name) for i, m in pairs] == [
        ("a.png", "a_mask.png"), ("b.jpg", "b_gt.tif"), ("c.png", "C_Mask.png"),
    ]  # fmt: skip
    assert problems == [
        f"{folder / 'sub' / 'a.png'}: same stem as {folder / 'a.png'} (a split is one folder "
        "of samples); rename one"
    ]
    (folder / "C_Mask.png").unlink()
    (folder / "sub" / "a.png").unlink()
    (folder / "sub").rmdir()
    root = tmp_path / "datasets"
    code, err = run_cli("export", folder, folder, "--root", root, "--layout", "generic")
    assert code == 1 and "2 written" in err and "1 unpaired" in err, err
    assert sorted(p.stem for p in (root / "images").iterdir()) == ["a", "b"]


def test_export_recursive_leaves_its_own_dataset_root_out(photo, tmp_path):
    """--root inside IMAGES_DIR: a second export does not take the dataset's copies for
    images; an empty --root is refused."""
    folder, masks = tmp_path / "photos", tmp_path / "photos" / "masks"
    masks.mkdir(parents=True)
    photo.save(folder / "a.png")
    Image.fromarray(np.full((48, 72), 255, np.uint8)).save(masks / "a.png")
    root = folder / "datasets"
    args = ("export", folder, masks, "--root", root, "--layout", "generic", "--recursive")
    assert run_cli(*args)[0] == 0
    code, err = run_cli(*args, "--on-exists", "skip")
    assert code == 0 and "1 skipped" in err and "unpaired" not in err.replace("0 unpaired", "")
    code, err = run_cli("export", folder, masks, "--root", "", "--layout", "generic")
    assert code == 2 and "--root is empty" in err
    code, err = run_cli("export", folder, masks, "--root", folder, "--layout", "generic",
                        "--recursive")  # fmt: skip
    assert code == 2 and "--root is IMAGES_DIR: with --recursive" in err


def test_an_interrupted_export_says_how_far_it_got(photo, tmp_path, monkeypatch):
    from napari_focus.datasets import cli as export_cli

    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for name in ("a", "b", "c"):
        photo.save(images / f"{name}.png")
        Image.fromarray(np.full((48, 72), 255, np.uint8)).save(masks / f"{name}.png")
    real = export_cli.export_sample
    calls: list[str] = []

    def ctrl_c_at_the_second(root, layout, name, *rest, **how):
        calls.append(name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(root, layout, name, *rest, **how)

    monkeypatch.setattr(export_cli, "export_sample", ctrl_c_at_the_second)
    root = tmp_path / "datasets"
    code, err = run_cli("export", images, masks, "--root", root, "--layout", "generic")
    assert code == 130, err
    assert (f"napari-focus: interrupted: 1 written, 0 renamed, 0 replaced, 0 skipped, 0 "
            "failed, 0 unpaired, 2 not done (the same command with --on-exists skip goes "
            f"on) -> {root} (generic)") in err  # fmt: skip
    monkeypatch.undo()
    code, err = run_cli("export", images, masks, "--root", root, "--layout", "generic",
                        "--on-exists", "skip")  # fmt: skip
    assert code == 0 and "2 written, 0 renamed, 0 replaced, 1 skipped" in err, err

    # the advice follows the policy: skip would keep old samples that replace had to do,
    # and the same rename command would add the samples written again
    monkeypatch.setattr(export_cli, "export_sample", ctrl_c_at_the_second)
    for policy, advice in [
        ("replace", "the same command goes on: the samples replaced are replaced again"),
        ("rename", "from b.png on, in name order: export those images from a folder of "
                   "their own"),
    ]:  # fmt: skip
        calls.clear()
        code, err = run_cli("export", images, masks, "--root", root, "--layout", "generic",
                            "--on-exists", policy)  # fmt: skip
        assert code == 130 and f"2 not done ({advice}" in err, err


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("empty.png", b"", "empty.png is empty (0 bytes"),
        ("empty.tif", b"", "empty.tif is empty (0 bytes"),
        ("notes.png", b"shopping list", "notes.png is not an image file that can be read"),
        ("notes.tif", b"shopping list", "notes.tif is not a TIFF file that can be read"),
        ("cut.png", None, "cut.png is truncated"),
        ("cut.jpg", None, "cut.jpg is truncated"),
        ("cut.tif", None, "cut.tif is truncated"),
    ],
)
def test_broken_files_say_what_is_wrong(photo, tmp_path, name, content, words):
    path = tmp_path / name
    if content is None:  # a good file cut short, as an interrupted copy leaves it
        photo.save(path)
        data = path.read_bytes()
        content = data[: len(data) // 2] if name.endswith(".tif") else data[:300]
    path.write_bytes(content)
    with pytest.raises(UnreadableImageError) as caught:
        read_image(path)
    assert str(caught.value).startswith(words)
    assert str(caught.value).endswith("copy the image again, or leave it out")
    if words.endswith("is truncated"):  # in plain words, without the decoder's
        assert str(caught.value) == (
            f"{name} is truncated: the file ends before its image does (an interrupted copy "
            "or download?); copy the image again, or leave it out"
        )
    assert isinstance(caught.value, OSError)  # callers catching OSError still do


def test_predict_on_a_mixed_folder_under_umask_027(photo, weights, tmp_path):
    """Every kind of image a folder holds gets its mask (group-readable under umask 027);
    each broken file fails with its reason, and the others are written."""
    images = tmp_path / "dossier à trier"
    images.mkdir()
    photo.save(images / "rgb.jpg")
    photo.convert("L").save(images / "gray.png")
    photo.convert("RGBA").save(images / "rgba.png")
    photo.convert("P").save(images / "palette.png")
    import tifffile

    tifffile.imwrite(images / "deep 16-bit.tif", np.asarray(photo).astype(np.uint16) * 257)
    tifffile.imwrite(images / "gray8.tif", np.asarray(photo.convert("L")))
    rotated = photo.copy()
    exif = rotated.getexif()
    exif[0x0112] = 6
    rotated.save(images / "portrait ünïcode.jpg", exif=exif)
    (images / "zero.png").write_bytes(b"")
    (images / "readme.png").write_text("not an image")
    (images / "notes.txt").write_text("not an input at all")
    out = tmp_path / "masks"
    previous = os.umask(0o027)
    try:
        code, err = run_cli("predict", images, "--task", "sod", "--weights", weights,
                            "--out", out, "--device", "cpu", "--quiet")  # fmt: skip
    finally:
        os.umask(previous)
    assert code == 1, err
    assert "7 written, 0 skipped" in err and "2 failed" in err
    assert "zero.png is empty (0 bytes" in err and "readme.png is not an image file" in err
    written = {p.name: p for p in out.iterdir()}
    assert sorted(written) == sorted(
        ["rgb.png", "gray.png", "rgba.png", "palette.png", "deep 16-bit.png", "gray8.png",
         "portrait ünïcode.png"]
    )  # fmt: skip
    assert read_image(written["portrait ünïcode.png"]).shape == (72, 48)  # upright
    for path in written.values():
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, path


def test_rank_reports_a_broken_file_in_plain_words(photo, weights, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    photo.save(images / "one.png")
    (images / "empty.png").write_bytes(b"")
    code, err = run_cli("rank", images, "--task", "sod", "--weights", weights, "--device",
                        "cpu", "--out", tmp_path / "ranking.csv", "--quiet")  # fmt: skip
    assert code == 1 and "ranked 1 image, 1 failed" in err
    assert "failed: empty.png: empty.png is empty (0 bytes" in err  # no exception type name


def test_a_link_to_an_image_not_fetched_yet_fails_with_the_reason(photo, weights, tmp_path):
    """git-annex and DataLad trees show images not fetched yet as links to missing files:
    predict, export and rank fail them with that reason (they were left out unsaid)."""
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    photo.save(images / "here.png")
    (images / "away.png").symlink_to("../.git/annex/objects/Xy/away.png")
    (images / "loop.png").symlink_to("loop.png")  # no file behind it at all: left out
    reason = "away.png is a link to '../.git/annex/objects/Xy/away.png', which does not exist"
    for given, out in (([images], tmp_path / "first"), ([str(images / "*.png")], masks)):
        code, err = run_cli("predict", *given, "--task", "sod", "--weights", weights,
                            "--device", "cpu", "--out", out, "--quiet")  # fmt: skip
        assert code == 1 and "1 written, 0 skipped, 1 failed" in err, err
        assert f"failed: {images / 'away.png'}: {reason}" in err
    Image.fromarray(np.zeros((48, 72), np.uint8)).save(masks / "away.png")
    code, err = run_cli("export", images, masks, "--root", tmp_path / "ds", "--task", "sod")
    assert code == 1 and f"failed: away.png: {reason}" in err, err
    code, err = run_cli("rank", images, "--task", "sod", "--weights", weights, "--device",
                        "cpu", "--out", tmp_path / "ranking.csv", "--quiet")  # fmt: skip
    assert code == 1 and f"failed: away.png: {reason}" in err, err
    assert "failed: loop.png: loop.png is a link that leads back to itself" in err


def test_a_rerun_with_probability_keeps_a_mask_corrected_in_place(photo, weights, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    photo.save(images / "cat.png")
    photo.save(images / "dog.png")
    out = tmp_path / "masks"
    args = ["predict", images, "--task", "sod", "--weights", weights, "--out", out,
            "--device", "cpu", "--quiet"]  # fmt: skip
    assert run_cli(*args)[0] == 0
    corrected = np.zeros((48, 72), np.uint8)
    corrected[10:30, 20:50] = 255
    Image.fromarray(corrected).save(out / "cat.png")  # the annotator's correction
    before = (out / "cat.png").read_bytes()
    (out / "dog.png").unlink()
    code, err = run_cli(*args, "--probability")
    assert code == 0 and "2 written (1 existing file(s) among them kept)" in err, err
    assert (out / "cat.png").read_bytes() == before
    assert (out / "cat_probability.png").is_file() and (out / "dog.png").is_file()
    code, err = run_cli(*args, "--probability", "--overwrite")  # said explicitly: redone
    assert code == 0 and "kept" not in err
    assert (out / "cat.png").read_bytes() != before


def test_export_names_the_mask_that_is_wrong(photo, tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    turned = photo.copy()
    exif = turned.getexif()
    exif[0x0112] = 6  # stored 72x48, shown 48x72
    turned.save(images / "phone.jpg", exif=exif)
    Image.fromarray(np.zeros((48, 72), np.uint8)).save(masks / "phone.png")  # stored frame
    photo.save(images / "small.png")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(masks / "small.png")
    photo.save(images / "empty.png")
    (masks / "empty.png").write_bytes(b"")
    photo.save(images / "good.png")
    Image.fromarray(np.full((48, 72), 255, np.uint8)).save(masks / "good.png")
    code, err = run_cli("export", images, masks, "--root", tmp_path / "ds", "--task", "cod")
    assert code == 1 and "1 written" in err and "3 failed" in err, err
    assert (
        f"failed: phone.jpg: its mask {masks / 'phone.png'} is 72x48 pixels, the image 48x72: "
        "the image is shown turned by its EXIF orientation and the mask is in its stored, "
        "unturned frame. Make the mask on the upright image"
    ) in err
    assert (
        f"failed: small.png: its mask {masks / 'small.png'} is 10x10 pixels, the image "
        "72x48: a mask has the size of its image; check that the right files pair up"
    ) in err
    assert f"failed: empty.png: its mask {masks / 'empty.png'}: empty.png is empty" in err


def test_weights_that_are_no_checkpoint_file_name_the_flag(photo, weights, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    photo.save(images / "one.png")
    snapshot = tmp_path / "snapshot"  # a downloaded model folder instead of its file
    snapshot.mkdir()
    (snapshot / "focus_large_sod.pth").write_bytes(b"")
    (snapshot / "README.md").write_text("model card")
    cases = [
        (snapshot, "a folder, not a checkpoint file; give the .pth or .safetensors file "
                   "(in it: focus_large_sod.pth)"),
        (tmp_path / "gone.pth", "no such file; check the path, or leave --weights out"),
        (snapshot / "focus_large_sod.pth", "the file is empty (0 bytes"),
    ]  # fmt: skip
    for given, words in cases:
        for command in ("predict", "rank"):
            out = tmp_path / f"{command}.out"
            code, err = run_cli(command, images, "--task", "sod", "--weights", given,
                                "--device", "cpu", "--out", out)  # fmt: skip
            assert code == 2 and f"napari-focus: --weights {given}: {words}" in err, err


def test_ray_names_a_manifest_that_is_no_parquet_or_csv_file(photo, tmp_path):
    pytest.importorskip("ray")
    images = tmp_path / "images"
    images.mkdir()
    photo.save(images / "one.png")
    code, err = run_cli("predict", images, "--task", "sod", "--engine", "ray", "--out",
                        tmp_path / "out", "--manifest", tmp_path / "m.json")  # fmt: skip
    assert code == 2 and f"--manifest {tmp_path / 'm.json'}: a manifest is a .parquet" in err


def test_a_tiff_stack_is_named_as_one_in_predict_and_rank(photo, weights, tmp_path):
    import tifffile

    images = tmp_path / "images"
    images.mkdir()
    photo.save(images / "one.png")
    gray = np.asarray(photo.convert("L"))
    tifffile.imwrite(images / "stack.tif", np.stack([gray] * 5))
    with tifffile.TiffWriter(images / "pages.tif") as pages:  # a page per write
        for _ in range(3):
            pages.write(gray)
    tifffile.imwrite(images / "bands.tif", np.dstack([gray] * 5))  # 5 channels
    code, err = run_cli("predict", images, "--task", "sod", "--weights", weights, "--out",
                        tmp_path / "out", "--device", "cpu", "--quiet")  # fmt: skip
    assert code == 1 and "1 written" in err and "3 failed" in err
    words = "stack.tif holds 5 planes (array of shape (5, 48, 72)), not one picture"
    assert f"failed: {images / 'stack.tif'}: {words}" in err
    pages_words = "pages.tif holds 3 planes (array of shape (3, 48, 72)), not one picture"
    assert f"failed: {images / 'pages.tif'}: {pages_words}" in err
    assert (f"failed: {images / 'bands.tif'}: bands.tif has 5 channels (array of shape "
            "(48, 72, 5)); FOCUS segments gray, RGB or RGBA images") in err  # fmt: skip
    code, err = run_cli("rank", images, "--task", "sod", "--weights", weights, "--out",
                        tmp_path / "rank.csv", "--device", "cpu", "--quiet")  # fmt: skip
    assert code == 1 and f"failed: stack.tif: {words}" in err and "pages.tif" in err


def test_a_folder_input_leaves_out_hidden_files(photo, tmp_path):
    from napari_focus.input_files import collect_inputs

    folder = tmp_path / "from a mac"
    folder.mkdir()
    photo.save(folder / "photo.jpg")
    (folder / "._photo.jpg").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    found, unmatched = collect_inputs([str(folder)])
    assert [p.name for p in found] == ["photo.jpg"] and not unmatched
    found, _ = collect_inputs([str(folder / "._photo.jpg")])  # named explicitly: taken
    assert [p.name for p in found] == ["._photo.jpg"]


def test_a_folder_where_a_mask_goes_is_no_existing_mask(tmp_path):
    out = tmp_path / "out"
    (out / "cat.png").mkdir(parents=True)
    plan = plan_outputs(["/d/cat.jpg"], out)
    assert not plan.todo and not plan.existing
    [(_, reason)] = plan.clashes
    assert reason == (
        f"its mask cat.png cannot be written: {out / 'cat.png'} is a folder; move it away "
        "or choose another --out"
    )


def test_an_input_that_matches_nothing_is_said_for_what_it_is(tmp_path, monkeypatch):
    """A mistyped folder is said not to exist; a folder without images, and a pattern
    matching none, are said as such (each before the model loads, exit 2)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "Été 2024" / "day 1").mkdir(parents=True)
    Image.new("RGB", (40, 40)).save(tmp_path / "Été 2024" / "day 1" / "plage.png")
    (tmp_path / "gone.png").symlink_to(tmp_path / "moved away.png")
    os.mkfifo(tmp_path / "pipe.png")
    for given, said in [
        ("Ete 2024", "'Ete 2024' does not exist (no such file or folder); check the path"),
        ("Été 2024", "no image file (.png .jpg"),
        ("Été 2024/*.jpeg", "no image matches 'Été 2024/*.jpeg'"),
        ("gone.png", f"'gone.png' is a link to '{tmp_path / 'moved away.png'}', which does "
                     "not exist"),
        ("pipe.png", "'pipe.png' is not a regular file (a pipe, socket or device?)"),
    ]:
        code, err = run_cli("predict", given, "--task", "sod", "--out", "masks")
        assert code == 2 and said in err, (given, err)
        assert "in the folder 'Été 2024'" in err or given != "Été 2024"
    if needs_qt.args[0]:  # no Qt binding: annotate says that first
        return
    code, err = run_cli("annotate", "cat.png")
    assert code == 2 and "'cat.png' does not exist" in err


def test_export_into_the_folders_it_reads_is_refused(photo, tmp_path):
    """--root whose layout folders are IMAGES_DIR or MASKS_DIR would replace the user's
    own masks with the exported copies (or read them back as sources)."""
    images, masks = tmp_path / "g" / "images", tmp_path / "g" / "masks"
    images.mkdir(parents=True)
    masks.mkdir()
    photo.save(images / "a.png")
    soft = np.tile(np.arange(0, 240, 5, dtype=np.uint8), (72, 2))[:, :72]
    Image.fromarray(soft).save(masks / "a.png")  # a soft mask: binarized by the export
    before = (masks / "a.png").read_bytes()
    code, err = run_cli("export", images, images.parent / "masks", "--root", tmp_path / "g",
                        "--layout", "generic", "--on-exists", "replace")  # fmt: skip
    assert code == 2, err
    assert (f"napari-focus: --root {tmp_path / 'g'}: the generic layout writes its images "
            f"into {images}, which is IMAGES_DIR; choose a --root apart from IMAGES_DIR "
            "and MASKS_DIR") in err  # fmt: skip
    assert (masks / "a.png").read_bytes() == before


def test_a_jpeg_mask_is_named_when_the_image_is_unpaired(photo, tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    photo.save(images / "a.png")
    Image.fromarray(np.full((48, 72), 255, np.uint8)).save(masks / "a.jpg")
    code, err = run_cli("export", images, masks, "--root", tmp_path / "ds", "--layout",
                        "generic")  # fmt: skip
    assert code == 1
    assert (f"unpaired: {images / 'a.png'}: no mask in {masks} (a.jpg is there, but masks "
            "are read from lossless files: .png, .bmp, .tif, .tiff; save it as PNG)") in err


@pytest.mark.parametrize("signum", [2, 15])  # SIGINT, SIGTERM
def test_a_signal_during_export_ends_after_the_sample_being_written(photo, tmp_path, signum):
    """The first Ctrl-C (or SIGTERM) lets the sample under way finish, its provenance
    line included, then stops: every listed sample has its line, none is half done."""
    import signal
    import subprocess
    import sys

    from napari_focus.datasets import read_records

    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    big = photo.resize((720, 480))
    for i in range(40):
        big.rotate(i).save(images / f"p{i:02d}.png")
        Image.fromarray(np.full((480, 720), 255, np.uint8)).save(masks / f"p{i:02d}.png")
    root = tmp_path / "ds"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
        str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")]))}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "napari_focus.cli", "export", str(images), str(masks),
         "--root", str(root), "--layout", "generic"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    assert proc.stdout is not None
    first = proc.stdout.readline()  # "written: p00.png -> p00 (generic)"
    assert first.startswith("written: "), first
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in err and "stopping after the sample under way" in err
    written = 1 + out.count("written: ")
    assert f"napari-focus: interrupted: {written} written" in err, err
    assert 1 <= written < 40
    assert len(read_records(root)) == written  # a provenance line for every sample
    assert len(list((root / "images").iterdir())) == written
    assert not list(root.rglob(".napari_focus-journal*"))


def test_a_broken_mask_is_named_once(photo, tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    photo.save(images / "a.png")
    (masks / "a_mask.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"x" * 50)
    code, err = run_cli("export", images, masks, "--root", tmp_path / "ds", "--layout",
                        "generic")  # fmt: skip
    assert code == 1
    assert f"failed: a.png: its mask {masks / 'a_mask.png'}: a_mask.png is truncated" in err


def test_an_images_dir_without_images_is_said_and_nothing_is_created(tmp_path):
    """Like predict and rank: a folder of notes (or images only in subfolders without
    --recursive) starts nothing, exit 2, and no dataset folder appears."""
    images, masks, root = tmp_path / "photos", tmp_path / "masks", tmp_path / "datasets"
    (images / "day 2").mkdir(parents=True)
    masks.mkdir()
    (images / "notes.txt").write_text("to label\n")
    code, err = run_cli("export", images, masks, "--root", root, "--task", "sod")
    assert code == 2, err
    assert "no image file (.png .jpg" in err and f"in IMAGES_DIR {images} (add --recursive" in err
    Image.new("RGB", (8, 8)).save(images / "day 2" / "a.png")
    code, err = run_cli("export", images, masks, "--root", root, "--task", "sod")
    assert code == 2 and "add --recursive" in err, err
    Image.new("L", (8, 8)).save(masks / "a.png")  # masks, and still no image: exit 2
    code, err = run_cli("export", images, masks, "--root", root, "--task", "sod")
    assert code == 2 and f"in IMAGES_DIR {images} (add --recursive" in err, err
    (masks / "a.png").unlink()
    code, err = run_cli("export", images, masks, "--root", root, "--task", "sod", "--recursive")
    assert code == 1 and "unpaired" in err, err  # an image now, without its mask
    assert not (root / "DUTS").exists() or not any((root / "DUTS").rglob("*.png"))


def test_compile_says_the_wait_before_the_first_image(weights, tmp_path, monkeypatch):
    """torch.compile makes the first image wait a minute or more with nothing on the
    screen (about 40 s on the tiny model here): the command says so before it starts.
    The compilation itself is stood in for; tests/test_ops_compiled.py traces the op."""
    from napari_focus import FocusPredictor

    compiled: list[str] = []
    monkeypatch.setattr(FocusPredictor, "compile", lambda self: compiled.append(self.device.type))
    Image.new("RGB", (64, 48)).save(tmp_path / "a.png")
    code, err = run_cli("predict", tmp_path / "a.png", "--task", "sod", "--weights", weights,
                        "--out", tmp_path / "m", "--compile")  # fmt: skip
    assert code == 0 and compiled == ["cpu"], err
    assert "napari-focus: --compile: the first image of each padded size waits for" in err
