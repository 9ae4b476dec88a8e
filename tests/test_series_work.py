"""Series work without a GUI: image checks, the proposal store, the job board, and
cancelling a forward between model stages."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_focus.quality import uncertainty
from napari_focus.run_control import Cancelled, RunControl, stage_modules, watch_model
from napari_focus.series import ImageQueue, PrefetchCache, Status
from napari_focus.series.images import UnusableImageError, load_series_image
from napari_focus.series.prefetch import JobBoard
from napari_focus.series.proposal_store import ProposalStore


def test_series_images_are_single_images_or_fail_with_a_reason(tmp_path):
    Image.fromarray(np.zeros((40, 50), np.uint8)).save(tmp_path / "gray.png")
    Image.fromarray(np.zeros((40, 50, 4), np.uint8), "RGBA").save(tmp_path / "rgba.png")
    tifffile.imwrite(tmp_path / "deep.tif", np.zeros((40, 50), np.uint16))
    tifffile.imwrite(
        tmp_path / "planes.tif", np.zeros((4, 40, 50), np.uint8), photometric="minisblack"
    )
    tifffile.imwrite(tmp_path / "one.tif", np.zeros((40, 50, 1), np.uint8))
    Image.fromarray(np.zeros((10, 50), np.uint8)).save(tmp_path / "speck.png")
    (tmp_path / "text.png").write_text("not an image")
    assert load_series_image(tmp_path / "gray.png").shape == (40, 50)
    assert load_series_image(tmp_path / "rgba.png").shape == (40, 50, 4)
    assert load_series_image(tmp_path / "deep.tif").dtype == np.uint16
    assert load_series_image(tmp_path / "one.tif").shape == (40, 50)
    for name, words in (
        ("planes.tif", "4 planes"),
        ("speck.png", "at least"),
        ("text.png", "text.png is not an image file that can be read"),
    ):
        with pytest.raises(UnusableImageError, match=words):
            load_series_image(tmp_path / name)


def test_failed_items_are_passed_over_and_retried_after_reopening(tmp_path):
    from napari_focus.series import load_or_create

    for name in ("a", "b", "c"):
        Image.fromarray(np.zeros((40, 50), np.uint8)).save(tmp_path / f"{name}.png")
    state = load_or_create(tmp_path / "out", tmp_path)
    state.mark_failed("b.png", "cannot read b.png: broken")
    assert state.queue.item("b.png").failure == "cannot read b.png: broken"
    assert state.queue.next().key == "c.png"  # b is passed over
    assert state.queue.previous().key == "a.png"
    reopened = load_or_create(tmp_path / "out", tmp_path)
    assert reopened.queue.item("b.png").status is Status.PENDING


def test_a_file_unreadable_for_a_moment_keeps_its_decision(tmp_path):
    """A drive gone for a moment fails every image shown meanwhile: the decisions made
    on them (rejected, accepted) come back when the series is opened again."""
    from napari_focus.series import load_or_create

    for name in ("a", "b", "c"):
        Image.fromarray(np.zeros((40, 50), np.uint8)).save(tmp_path / f"{name}.png")
    state = load_or_create(tmp_path / "out", tmp_path)
    state.mark("a.png", Status.REJECTED)
    state.mark("b.png", Status.SKIPPED)
    for _ in range(2):  # failing twice keeps the decision, not "failed"
        state.mark_failed("a.png", "cannot read a.png: Input/output error")
    state.mark_failed("c.png", "cannot read c.png: Input/output error")
    state.mark_failed("b.png", "cannot read b.png: Input/output error")
    state.mark("b.png", Status.PROPOSED)  # read again in this session and shown
    assert state.queue.item("a.png").status is Status.FAILED
    reopened = load_or_create(tmp_path / "out", tmp_path)
    statuses = {item.key: item.status for item in reopened.queue}
    assert statuses == {"a.png": Status.REJECTED, "b.png": Status.PROPOSED,
                        "c.png": Status.PENDING}  # fmt: skip
    assert all(item.failure is None and item.failed_from is None for item in reopened.queue)


def test_proposal_store_round_trip_and_stale_images(tmp_path):
    image = tmp_path / "img.png"
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(image)
    store = ProposalStore(tmp_path / "series", "sod|large|hf://x|float32")
    probability = np.random.default_rng(0).random((30, 40)).astype(np.float32)
    mask = (probability > 0.4).astype(np.uint8)
    assert store.load("img.png", image) is None and not store.has("img.png")
    store.save("img.png", image, probability, mask, score=0.25)
    loaded = store.load("img.png", image)
    np.testing.assert_array_equal(loaded.mask, mask)
    np.testing.assert_allclose(loaded.probability, probability, atol=1e-3)
    assert loaded.uncertainty == store.uncertainty("img.png", image) == 0.25
    assert (
        ProposalStore(tmp_path / "series", "cod|large|hf://x|float32").load("img.png", image)
        is None
    )
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the image changed
    assert store.load("img.png", image) is None
    assert store.uncertainty("img.png", image) is None


def _image_file(path: Path) -> Path:
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(path)
    return path


def test_an_image_layer_s_proposal_is_not_kept_on_disk(tmp_path):
    """A layer's name says nothing of its pixels: a later layer of that name (another
    image) must not get the proposal, so none is kept for layers."""
    store = ProposalStore(tmp_path / "series", "sod|large|hf://x|float32")
    probability = np.random.default_rng(3).random((30, 40)).astype(np.float32)
    store.save("cells", None, probability, probability > 0.5, score=0.5)
    assert not store.path("cells").exists()
    store.path("cells").parent.mkdir(parents=True, exist_ok=True)
    _image_file(tmp_path / "x.png")
    store.save("x.png", tmp_path / "x.png", probability, probability > 0.5, score=0.5)
    store.path("x.png").rename(store.path("cells"))  # a file under the layer's name
    assert store.load("cells", None) is None and store.uncertainty("cells", None) is None


@pytest.mark.parametrize("damage", ["empty", "cut in half", "not a zip", "one byte flipped"])
def test_a_damaged_proposal_file_is_no_proposal(tmp_path, damage):
    """As documented: None for an unreadable file (the model computes it again), never
    an exception out of the store (it was BadZipFile, EOFError, ...)."""
    store = ProposalStore(tmp_path / "series", "sod|large|hf://x|float32")
    probability = np.random.default_rng(2).random((64, 64)).astype(np.float32)
    image = _image_file(tmp_path / "a.png")
    data = store.save("a.png", image, probability, probability > 0.5, score=0.5).read_bytes()
    damaged = {
        "empty": b"",
        "cut in half": data[: len(data) // 2],
        "not a zip": b"PK\x03\x04" + bytes(100),
        "one byte flipped": data[:200] + bytes([data[200] ^ 0xFF]) + data[201:],
    }[damage]
    store.path("a.png").write_bytes(damaged)
    assert store.load("a.png", image) is None
    assert store.uncertainty("a.png", image) in (None, 0.5)  # the score may be intact


def test_stored_score_is_read_without_the_maps(tmp_path, monkeypatch):
    store = ProposalStore(tmp_path / "series", "sod|large|hf://x|float32")
    probability = np.random.default_rng(1).random((300, 400)).astype(np.float32)
    image = _image_file(tmp_path / "a.png")
    store.save("a.png", image, probability, probability > 0.5)
    assert store.uncertainty("a.png", image) == pytest.approx(uncertainty(probability))

    with np.load(store.path("a.png")) as data:  # a file without a score: computed from it
        members = {name: data[name] for name in data.files if name != "uncertainty"}
    np.savez(store.path("a.png"), **members)
    assert store.uncertainty("a.png", image) == pytest.approx(uncertainty(probability), abs=1e-4)

    read: list[str] = []
    getitem = np.lib.npyio.NpzFile.__getitem__

    def watched_getitem(self, name):
        read.append(name)
        return getitem(self, name)

    store.save("b.png", image, probability, probability > 0.5, score=0.5)
    monkeypatch.setattr(np.lib.npyio.NpzFile, "__getitem__", watched_getitem)
    assert store.uncertainty("b.png", image) == 0.5
    assert "probability" not in read and "mask" not in read and "uncertainty" in read


def test_job_board_reprioritises_without_losing_claims():
    queue = ImageQueue.from_names(["a", "b", "c", "d"])
    cache = PrefetchCache(capacity=4, lookahead=2)
    board = JobBoard()
    jobs = cache.schedule(queue)
    board.replace([(k, t, None) for k, t in jobs])
    assert [job[0] for job in board.pending()] == ["a", "b", "c"]
    running = board.take()
    assert running[0] == "a" and board.running == "a"
    queue.jump(2)  # the user jumped to "c": it goes first, "b" is released
    dropped = board.replace([job for job in board.pending() if job[0] == "c"])
    cache.release(*[job[0] for job in dropped])
    assert "b" not in cache.in_flight and "a" in cache.in_flight  # "a" still runs
    assert cache.store("a", "result of a", running[1])  # kept when it arrives
    assert board.take()[0] == "c" and board.take() is None


def test_cancel_stops_a_forward_between_stages(tiny_mlp):
    from napari_focus import FocusPredictor
    from napari_focus.model.vit import Block

    arch, state = tiny_mlp
    predictor = FocusPredictor.from_state_dict(state, "sod", architecture=arch, device="cpu")
    kinds = {type(m).__name__ for m in stage_modules(predictor.model)}
    assert {"Block", "EncoderLayer", "CrossAttentionLayer", "Bottleneck"} <= kinds
    image = np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    control = RunControl()
    seen_blocks: list[int] = []
    original = Block.forward

    def counting(self, x):
        seen_blocks.append(1)
        if len(seen_blocks) == 1:
            control.cancel()  # pressed while the first ViT block runs
        return original(self, x)

    Block.forward = counting
    try:
        with pytest.raises(Cancelled), watch_model(predictor.model, control):
            predictor.predict(image)
    finally:
        Block.forward = original
    assert len(seen_blocks) == 1  # stopped before the second block
    # the hooks are gone and another thread's forward was never affected
    result = predictor.predict(image)
    assert result.mask.shape == (64, 80)

    finished = threading.Event()

    def elsewhere():
        predictor.predict(image)  # a second thread runs the same model meanwhile
        finished.set()

    watching = RunControl()
    with watch_model(predictor.model, watching):
        watching.cancel()  # cancels this thread's run only
        thread = threading.Thread(target=elsewhere)
        thread.start()
        thread.join(60)
    assert finished.is_set()
    stage, in_stage, total = control.snapshot()
    assert total >= in_stage >= 0 and isinstance(stage, str)


def test_the_state_file_holds_one_item_a_line(tmp_path):
    import json

    from napari_focus.series import load_or_create
    from napari_focus.series.state_file import state_text

    for name in ("a", "b", "ü c"):
        Image.fromarray(np.zeros((40, 50), np.uint8)).save(tmp_path / f"{name}.png")
    state = load_or_create(tmp_path / "out", tmp_path)
    state.mark("b.png", Status.REJECTED)
    text = state.state_path.read_text("utf-8")
    assert json.loads(text) == state.to_json() and "ü c" in text  # UTF-8, not escaped
    lines = text.splitlines()
    assert lines[0].startswith('{"schema": "napari-focus-queue"') and lines[-1] == "]}"
    assert [json.loads(line.rstrip(","))["key"] for line in lines[1:-1]] == [
        "a.png", "b.png", "ü c.png"
    ]
    empty = {**state.to_json(), "items": []}
    assert json.loads(state_text(empty)) == empty
