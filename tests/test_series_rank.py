"""The `rank` command: a folder ordered by proposal uncertainty (a stand-in predictor
whose uncertainty is set by the image), its CSV and report, end to end with the tiny
model."""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import math
from pathlib import Path

import numpy as np
from PIL import Image

from napari_focus.quality import folder_report
from napari_focus.series import RankRow, add_rank_parser, rank_folder, write_ranking_csv


def write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


class FakePredictor:
    """Probability = the image's first channel / 255: uncertainty is set by the image."""

    def __init__(self) -> None:
        self.calls = 0

    def predict(self, image, tta=False):
        from napari_focus import Prediction

        self.calls += 1
        prob = image[..., 0].astype(np.float32) / 255
        return Prediction(probability=prob, mask=(prob > 0.5).astype(np.uint8))


def test_rank_says_running_out_of_memory_in_words(tmp_path):
    class Exhausted(FakePredictor):
        def predict(self, image, tta=False):
            raise MemoryError()

    write_png(tmp_path / "a.png", np.zeros((32, 32, 3), np.uint8))
    [row] = rank_folder(tmp_path, Exhausted())
    assert row.error.startswith("the computer ran out of memory for this image")


def test_rank_folder_orders_by_uncertainty_and_reports_failures(tmp_path):
    images, gt = tmp_path / "images", tmp_path / "gt"
    for name, level in [("sure", 250), ("doubtful", 128), ("middle", 200)]:
        write_png(images / f"{name}.png", np.full((32, 32, 3), level, np.uint8))
    write_png(gt / "middle_gt.png", np.full((32, 32), 255, np.uint8))
    (images / "broken.png").write_bytes(b"not a png")
    calls: list[tuple[int, int, str]] = []
    predictor = FakePredictor()
    rows = rank_folder(images, predictor, gt_folder=gt, progress=lambda *a: calls.append(a))
    assert [r.name for r in rows] == ["doubtful", "middle", "sure", "broken"]
    assert [r.rank for r in rows] == [1, 2, 3, 4]
    assert rows[3].error and math.isnan(rows[3].uncertainty)
    assert rows[1].metrics["mae"] == 0  # the binary mask is scored, not the probability map
    assert rows[1].reference.endswith("middle_gt.png") and rows[0].metrics == {}
    assert [c[:2] for c in calls] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert predictor.calls == 3

    path = write_ranking_csv(rows, tmp_path / "rank.csv")
    with open(path, newline="", encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    assert [r["path"] for r in table] == ["doubtful.png", "middle.png", "sure.png", "broken.png"]
    assert table[0]["mae"] == "" and float(table[1]["iou"]) == 1
    assert table[3]["uncertainty"] == "" and table[3]["error"]
    assert isinstance(rows[0], RankRow)

    write_png(gt / "sure.png", np.full((20, 30), 255, np.uint8))  # drawn on another image
    rows = rank_folder(images, predictor, gt_folder=gt)
    failed = {r.name: r.error for r in rows if r.error}
    assert failed["sure"] == (
        f"its ground truth {gt / 'sure.png'} is 30x20 pixels, the image 32x32: give the mask "
        "drawn on this image"
    )
    (images / "gone.png").symlink_to(tmp_path / "moved away.png")  # a dangling link
    failed = {r.name: r.error for r in rank_folder(images, predictor) if r.error}
    assert failed["gone"] == f"gone.png is a link to {str(tmp_path / 'moved away.png')!r}, " \
        "which does not exist"
    (images / "gone.png").unlink()
    (gt / "sure.png").write_bytes(b"junk")  # the mask is broken, not the image
    failed = {r.name: r.error for r in rank_folder(images, predictor, gt_folder=gt) if r.error}
    assert failed["sure"].startswith(
        f"its ground truth {gt / 'sure.png'}: sure.png is not an image file that can be read"
    ), failed["sure"]


def test_rank_folder_with_masks_beside_the_images(tmp_path):
    write_png(tmp_path / "p.png", np.full((32, 32, 3), 200, np.uint8))
    write_png(tmp_path / "p_gt.png", np.full((32, 32), 255, np.uint8))
    write_png(tmp_path / "q.jpg", np.full((32, 32, 3), 100, np.uint8))
    write_png(tmp_path / "q.png", np.zeros((32, 32), np.uint8))  # DUTS style: mask = stem.png
    rows = rank_folder(tmp_path, FakePredictor(), gt_folder=tmp_path)
    assert [r.path for r in rows] == ["q.jpg", "p.png"]
    assert rows[0].metrics["iou"] == 1 and rows[1].metrics["mae"] == 0


def test_ranking_lists_the_mask_folder_once_not_once_per_image(tmp_path, monkeypatch):
    """Masks beside 40 images: finding them was one folder listing per image (twice),
    which made a folder of 3,000 images and their masks take minutes before ranking."""
    for i in range(40):
        write_png(tmp_path / f"im{i:02d}.png", np.full((32, 32, 3), 60 + i, np.uint8))
        write_png(tmp_path / f"im{i:02d}_gt.png", np.zeros((32, 32), np.uint8))
    listings = []
    iterdir = Path.iterdir
    monkeypatch.setattr(Path, "iterdir", lambda self: listings.append(self) or iterdir(self))
    rows = rank_folder(tmp_path, FakePredictor(), gt_folder=tmp_path)
    assert len(rows) == 40 and all(r.reference.endswith("_gt.png") for r in rows)
    assert len(listings) <= 3, len(listings)


def test_a_file_with_a_link_beside_it_is_ranked_once_under_its_own_name(tmp_path):
    write_png(tmp_path / "b.png", np.full((32, 32, 3), 128, np.uint8))
    write_png(tmp_path / "c.png", np.full((32, 32, 3), 250, np.uint8))
    (tmp_path / "a_latest.png").symlink_to("b.png")  # sorts before the file it names
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.png").symlink_to(tmp_path / "c.png")  # another folder: first kept
    predictor = FakePredictor()
    rows = rank_folder(tmp_path, predictor, recursive=True)
    assert [r.path for r in rows] == ["b.png", "c.png"] and predictor.calls == 2
    code, err = run_rank_cli("rank", tmp_path, "--task", "sod", "--out", tmp_path / "r.csv",
                             "--weights", tmp_path / "missing.pth")  # fmt: skip
    assert code == 2
    assert "note: a_latest.png is another name of b.png: each file is ranked once" in err
    assert f"note: images in subfolders of {tmp_path} are not ranked; add --recursive" in err
    code, err = run_rank_cli("rank", tmp_path, "--task", "sod", "--gt", tmp_path / "sub",
                             "--weights", tmp_path / "missing.pth")  # fmt: skip
    assert code == 2 and "images in subfolders" not in err  # the masks' folder is no images'


def run_rank_cli(*args) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="napari-focus")
    add_rank_parser(parser.add_subparsers(dest="command", required=True))
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            parsed = parser.parse_args([str(a) for a in args])
            code = parsed.func(parsed)
        except SystemExit as exit_:
            code = exit_.code
    return code, err.getvalue()


def test_rank_never_replaces_a_file_that_is_not_a_ranking(tmp_path):
    write_png(tmp_path / "images" / "a.png", np.zeros((40, 40, 3), np.uint8))
    notes = tmp_path / "notes.csv"
    notes.write_text("sample,comment\na,blurry\n", encoding="utf-8")
    earlier = write_ranking_csv([RankRow(path="a.png", name="a", uncertainty=0.1, rank=1)],
                                tmp_path / "earlier.csv")  # fmt: skip
    earlier.write_bytes(b"\xef\xbb\xbf" + earlier.read_bytes())  # saved again by Excel
    missing_weights = tmp_path / "x.pth"  # reaching the model says "no such file"
    common = ("rank", tmp_path / "images", "--task", "sod", "--weights", missing_weights)
    code, err = run_rank_cli(*common, "--out", notes)
    assert code == 2 and f"--out: {notes} exists and is not a ranking CSV" in err
    assert notes.read_text(encoding="utf-8") == "sample,comment\na,blurry\n"
    code, err = run_rank_cli(*common, "--out", earlier)  # a rerun may replace its ranking
    assert code == 2 and f"--weights {missing_weights}: no such file" in err
    mine = tmp_path / "mine"  # a folder of the user's own with a metrics.csv and a page
    mine.mkdir()
    (mine / "metrics.csv").write_text("run,score\n1,0.5\n", encoding="utf-8")
    (mine / "report.html").write_text("<html>my notes</html>", encoding="utf-8")
    code, err = run_rank_cli(*common, "--out", earlier, "--report", mine)
    assert code == 2 and f"--report: {mine / 'metrics.csv'} exists and is not of an" in err
    assert (mine / "metrics.csv").read_text(encoding="utf-8") == "run,score\n1,0.5\n"
    write_ranking_csv([RankRow(path="a.png", name="a", rank=1)], mine / "metrics.csv")
    code, err = run_rank_cli(*common, "--out", earlier, "--report", mine)
    assert code == 2 and f"--report: {mine / 'report.html'} exists and is not of an" in err
    assert (mine / "report.html").read_text(encoding="utf-8") == "<html>my notes</html>"
    folder_report([RankRow(path="a.png", name="a", rank=1)], mine)  # a rerun replaces it
    code, err = run_rank_cli(*common, "--out", earlier, "--report", mine)
    assert code == 2 and f"--weights {missing_weights}: no such file" in err


def test_rank_cli_end_to_end_with_the_tiny_model(focus_reference, tiny_checkpoint, tmp_path):
    images, gt = tmp_path / "images", tmp_path / "gt"
    source = Image.open(focus_reference / "input.png").convert("RGB")
    images.mkdir()
    for i, box in enumerate([(0, 0, 130, 90), (100, 60, 260, 180), (40, 20, 200, 140)]):
        source.crop(box).resize((64, 48), Image.BILINEAR).save(images / f"img{i}.png")
    square = np.zeros((48, 64), np.uint8)
    square[10:38, 16:48] = 255
    write_png(gt / "img1_mask.png", square)
    out_csv, report = tmp_path / "rank.csv", tmp_path / "report"

    code, err = run_rank_cli(
        "rank", images, "--task", "sod", "--weights", tiny_checkpoint, "--device", "cpu",
        "--gt", gt, "--out", out_csv, "--report", report, "--quiet",
    )  # fmt: skip
    assert code == 0, err
    assert "ranked 3 images, 0 failed" in err
    assert f"note: 2 of the images have no ground-truth mask in --gt {gt} " in err
    with open(out_csv, newline="", encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    assert sorted(r["path"] for r in table) == ["img0.png", "img1.png", "img2.png"]
    assert [int(r["rank"]) for r in table] == [1, 2, 3]
    scores = [float(r["uncertainty"]) for r in table]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    assert all(float(r["seconds"]) > 0 and r["width"] == "64" and r["height"] == "48"
               for r in table)  # fmt: skip
    with_gt = [r for r in table if r["iou"] != ""]
    assert [r["path"] for r in with_gt] == ["img1.png"]
    assert 0 <= float(with_gt[0]["iou"]) <= 1 and 0 <= float(with_gt[0]["mae"]) <= 1
    assert (report / "metrics.csv").is_file() and "<svg" in (report / "report.html").read_text()

    assert run_rank_cli("rank", tmp_path / "nope", "--task", "sod")[0] == 2


def test_rank_says_which_of_several_gt_masks_an_image_is_scored_against(
    focus_reference, tiny_checkpoint, tmp_path
):
    """img0.png and img0_gt.png in --gt are both named after img0: export would refuse the
    pair; rank scores against the first, and says so once, before the model loads."""
    from napari_focus.series.references import MaskFolder

    images, gt = tmp_path / "images", tmp_path / "gt"
    source = Image.open(focus_reference / "input.png").convert("RGB")
    images.mkdir()
    source.resize((64, 48)).save(images / "img0.jpg")
    source.resize((64, 48)).save(images / "img1.jpg")
    square = np.zeros((48, 64), np.uint8)
    square[10:38, 16:48] = 255
    write_png(gt / "img0_gt.png", square)
    write_png(gt / "img0.png", 255 - square)
    write_png(gt / "img1_mask.png", square)
    assert [p.name for p in MaskFolder(gt).all_named_after(images / "img0.jpg")] == [
        "img0.png", "img0_gt.png"
    ]  # fmt: skip
    code, err = run_rank_cli(
        "rank", images, "--task", "sod", "--weights", tiny_checkpoint, "--device", "cpu",
        "--gt", gt, "--out", tmp_path / "rank.csv",
    )  # fmt: skip
    assert code == 0, err
    assert err.count("several masks") == 1, err
    assert (f"note: --gt: several masks in {gt} are named after 1 image (img0.jpg: img0.png, "
            "img0_gt.png); each is scored against the first of them") in err  # fmt: skip
    assert run_rank_cli("rank", images, "--task", "sod", "--gt", tmp_path / "nope")[0] == 2
    code, err = run_rank_cli("rank", images, "--task", "sod", "--weights", tmp_path / "x.pth")
    assert code == 2 and f"--weights {tmp_path / 'x.pth'}: no such file" in err
    (tmp_path / "cut.pth").write_bytes(b"PK\x03\x04")
    code, err = run_rank_cli("rank", images, "--task", "sod", "--weights", tmp_path / "cut.pth")
    assert code == 2 and "cannot load the model" in err


def test_rank_lists_a_folder_with_its_masks_beside_once(
    focus_reference, tiny_checkpoint, tmp_path, monkeypatch
):
    """--gt the image folder itself: the folder is scanned once, and the masks beside
    the images are neither ranked nor counted in the progress bar's total."""
    from napari_focus import cli_common
    from napari_focus.series import rank

    totals: list[int] = []
    bar = cli_common.progress_bar
    counted = lambda total, *a, **k: totals.append(total) or bar(total, *a, **k)  # noqa: E731
    monkeypatch.setattr(cli_common, "progress_bar", counted)
    source = Image.open(focus_reference / "input.png").convert("RGB").resize((64, 48))
    for i in range(2):
        source.save(tmp_path / f"img{i}.png")
        write_png(tmp_path / f"img{i}_gt.png", np.full((48, 64), 255 * i, np.uint8))
    scans = []
    scan = rank.scan_folder
    monkeypatch.setattr(rank, "scan_folder", lambda *a, **k: scans.append(a) or scan(*a, **k))
    code, err = run_rank_cli(
        "rank", tmp_path, "--task", "sod", "--weights", tiny_checkpoint, "--device", "cpu",
        "--gt", tmp_path, "--out", tmp_path / "out" / "rank.csv", "--quiet",
    )  # fmt: skip
    assert code == 0, err
    assert "ranked 2 images, 0 failed" in err and len(scans) == 1 and totals == [2]


def test_an_interrupted_rank_says_how_far_it_got_and_keeps_the_earlier_csv(
    focus_reference, tiny_checkpoint, tmp_path, monkeypatch
):
    from napari_focus.cli_common import Terminated
    from napari_focus.series import rank as rank_module

    images = tmp_path / "images"
    source = Image.open(focus_reference / "input.png").convert("RGB").resize((64, 48))
    images.mkdir()
    for i in range(3):
        source.rotate(20 * i).save(images / f"img{i}.png")
    out_csv = tmp_path / "rank.csv"
    write_ranking_csv([RankRow(path="old.png", name="old", rank=1, uncertainty=0.5)], out_csv)
    earlier = out_csv.read_bytes()
    real = rank_module.uncertainty
    for stop, code_expected in ((Terminated, 143), (KeyboardInterrupt, 130)):
        calls: list[int] = []

        def stopped_at_the_second(probability, method, stop=stop, calls=calls):
            calls.append(1)
            if len(calls) == 2:  # as SIGTERM (or Ctrl-C) arrives during the second image
                raise stop
            return real(probability, method)

        monkeypatch.setattr(rank_module, "uncertainty", stopped_at_the_second)
        code, err = run_rank_cli(
            "rank", images, "--task", "sod", "--weights", tiny_checkpoint, "--device", "cpu",
            "--out", out_csv, "--quiet",
        )  # fmt: skip
        assert code == code_expected, err
        assert (f"napari-focus: interrupted after 1 of 3 images; nothing was written "
                f"({out_csv} is unchanged)") in err  # fmt: skip
        assert out_csv.read_bytes() == earlier and "Traceback" not in err


def test_rank_recursive_leaves_a_series_folder_out(tmp_path):
    """The widget's series folder inside the image folder holds autosaves and proposals
    as PNGs: no images of the user's (predict --recursive leaves them out too)."""
    from napari_focus.series import STATE_NAME

    images = tmp_path / "images"
    write_png(images / "a.png", np.full((32, 32, 3), 200, np.uint8))
    write_png(images / "napari_focus" / "work" / "a.png", np.zeros((32, 32), np.uint8))
    (images / "napari_focus" / STATE_NAME).write_text("{}")
    rows = rank_folder(images, FakePredictor(), recursive=True)
    assert [r.path for r in rows] == ["a.png"]
