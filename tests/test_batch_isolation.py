"""A batch in which one image fails in the model: only that image fails, in the local
pipeline's predict step and in the distributed worker (run here without Ray), and the
worker prepares images outside its model lock."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from napari_focus import FocusPredictor
from napari_focus.distributed.worker import FocusWorker, WorkerSettings
from napari_focus.io import read_image
from napari_focus.pipeline import predict_isolating

FAILING_SHAPE = (50, 70)  # images of this size make the model raise, as an OOM would


@pytest.fixture(scope="module")
def photos(focus_reference) -> list[np.ndarray]:
    source = Image.open(focus_reference / "input.png").convert("RGB")
    return [
        np.asarray(source.resize((80, 64))),
        np.asarray(source.resize(FAILING_SHAPE[::-1])),
        np.asarray(source.transpose(Image.FLIP_LEFT_RIGHT).resize((64, 64))),
    ]


def fail_on_marked_shape(monkeypatch, predictor: FocusPredictor) -> list[int]:
    """Make every forward holding an image of FAILING_SHAPE raise; returns the batch
    sizes the model was called with."""
    original = predictor.predict_prepared
    calls: list[int] = []

    def predict_prepared(inputs, *, batch_size=None):
        calls.append(len(inputs))
        if any(item.original_hw == FAILING_SHAPE for item in inputs):
            raise RuntimeError("CUDA out of memory (injected)")
        return original(inputs, batch_size=batch_size)

    monkeypatch.setattr(predictor, "predict_prepared", predict_prepared)
    return calls


def test_only_the_failing_image_fails(tiny_checkpoint, photos, monkeypatch):
    predictor = FocusPredictor.from_checkpoint(tiny_checkpoint, device="cpu")
    expected = [predictor.predict(photos[0]), predictor.predict(photos[2])]
    calls = fail_on_marked_shape(monkeypatch, predictor)

    outcomes = predict_isolating(predictor, [predictor.prepare(p) for p in photos], 3)
    assert calls == [3, 1, 1, 1]  # the batch, then each image alone
    (first, s0), (failed, s1), (last, s2) = outcomes
    assert isinstance(failed, RuntimeError) and "out of memory" in str(failed)
    np.testing.assert_array_equal(first.mask, expected[0].mask)
    np.testing.assert_array_equal(last.mask, expected[1].mask)
    assert min(s0, s1, s2) > 0
    assert predict_isolating(predictor, [], 3) == []


def test_worker_writes_the_others_and_prepares_outside_its_lock(
    tiny_checkpoint, photos, monkeypatch, tmp_path
):
    settings = WorkerSettings(task="sod", weights=str(tiny_checkpoint), batch_size=4)
    worker = FocusWorker(settings.as_dict())
    fail_on_marked_shape(monkeypatch, worker.predictor)
    prepare = worker.predictor.prepare
    lock_held_while_preparing: list[bool] = []

    def watched_prepare(image, *, tta=False):
        lock_held_while_preparing.append(worker.model_lock.locked())
        return prepare(image, tta=tta)

    monkeypatch.setattr(worker.predictor, "prepare", watched_prepare)
    names = ["a", "b", "c", "broken"]
    batch = {
        "source": [f"/in/{n}.png" for n in names],
        "name": names,
        "mask": [str(tmp_path / f"{n}.png") for n in names],
        "probability": [""] * 4,
        "pixels": [np.ascontiguousarray(p).tobytes() for p in photos] + [b""],
        "height": [p.shape[0] for p in photos] + [0],
        "width": [p.shape[1] for p in photos] + [0],
        "error": ["", "", "", "OSError: cannot identify image file"],
    }
    rows = worker(batch)

    assert rows["status"] == ["written", "failed", "written", "failed"]
    assert "out of memory" in rows["error"][1] and "cannot identify" in rows["error"][3]
    assert lock_held_while_preparing == [False, False, False]
    reference = FocusPredictor.from_checkpoint(tiny_checkpoint, device="cpu")
    for name, photo in (("a", photos[0]), ("c", photos[2])):
        written = read_image(tmp_path / f"{name}.png")
        np.testing.assert_array_equal(written > 0, reference.predict(photo).mask > 0)
    assert not (tmp_path / "b.png").exists()
    assert rows["seconds"][0] > 0 and np.isnan(rows["uncertainty"][1])


def test_an_overwrite_cut_short_leaves_no_row_for_the_old_mask(
    tiny_checkpoint, photos, monkeypatch, tmp_path
):
    """--overwrite, the worker killed between the journal row and the new mask: the row
    (the new mask's scores) does not vouch for the old mask, which stays as it was; the
    next run predicts that image again."""
    import os
    import time

    from napari_focus import io
    from napari_focus.distributed import journal

    old = tmp_path / "a.png"
    old.write_bytes(b"the mask of an earlier run")
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))
    folder = tmp_path / journal.JOURNAL_FOLDER / "run"
    settings = WorkerSettings(task="sod", weights=str(tiny_checkpoint), overwrite=True,
                              run_started_ns=time.time_ns(), journal=str(folder))  # fmt: skip
    worker = FocusWorker(settings.as_dict())

    def killed(_path, _mask, **_how):
        raise KeyboardInterrupt  # as the worker's process ends mid-write

    monkeypatch.setattr(io, "write_mask", killed)
    batch = {
        "source": ["/in/a.png"], "name": ["a"], "mask": [str(old)], "probability": [""],
        "pixels": [np.ascontiguousarray(photos[0]).tobytes()],
        "height": [photos[0].shape[0]], "width": [photos[0].shape[1]], "error": [""],
    }  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        worker(batch)
    assert len(list(folder.glob("*.jsonl"))) == 1  # the row was journaled
    assert journal.read_rows([folder]) == []
    assert old.read_bytes() == b"the mask of an earlier run"


def test_running_out_of_memory_is_said_in_words_not_allocator_statistics() -> None:
    import torch

    from napari_focus.io import failure_text

    statistics = (
        "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of "
        "79.11 GiB of which 1.2 GiB is free. Of the allocated memory 75 GiB is allocated by "
        "PyTorch, and 1.3 GiB is reserved but unallocated. See documentation for Memory "
        "Management (https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)"
    )
    for error in (torch.OutOfMemoryError(statistics), RuntimeError(statistics)):
        text = failure_text(error)  # predict's, predict --engine ray's and rank's words
        assert text.startswith("the GPU ran out of memory for this image, even alone")
        assert "Tried to allocate" not in text and "float16" in text
    assert failure_text(MemoryError()).startswith("the computer ran out of memory")
    assert failure_text(ValueError("a plain reason")) == "a plain reason"
    assert failure_text(AssertionError()) == "AssertionError"


def test_a_ray_worker_keeps_a_mask_saved_after_its_check(
    tiny_checkpoint, photos, monkeypatch, tmp_path
):
    """Saved there (from napari, say) between the worker's look and its write: kept, and
    the image fails saying so, as with the local engine."""
    from napari_focus.distributed import worker as worker_module

    saved = tmp_path / "a.png"
    saved.write_bytes(b"corrected by hand")
    monkeypatch.setattr(worker_module, "_needs_write", lambda _path, _settings, _by: True)
    worker = FocusWorker(WorkerSettings(task="sod", weights=str(tiny_checkpoint)).as_dict())
    batch = {
        "source": ["/in/a.png"], "name": ["a"], "mask": [str(saved)], "probability": [""],
        "pixels": [np.ascontiguousarray(photos[0]).tobytes()],
        "height": [photos[0].shape[0]], "width": [photos[0].shape[1]], "error": [""],
    }  # fmt: skip
    rows = worker(batch)
    assert rows["status"] == ["failed"]
    assert rows["error"] == [
        "a.png appeared in the output folder while the run went on; it is kept (--overwrite "
        "replaces it)"
    ]
    assert saved.read_bytes() == b"corrected by hand"


def test_a_ray_worker_keeps_a_file_that_appeared_before_its_check(
    tiny_checkpoint, photos, tmp_path
):
    """A file at a mask's name that the run did not write (copied there while it went on):
    kept and the image failed, as the local engine does; it was recorded as written,
    with the scores of a mask that is not on disk. An earlier attempt's mask of this run
    is taken as written, as before."""
    import time

    from napari_focus.io import write_mask
    from napari_focus.mask_provenance import MadeBy

    settings = WorkerSettings(task="sod", weights=str(tiny_checkpoint),
                              run_started_ns=time.time_ns() - 10**9)  # fmt: skip
    worker = FocusWorker(settings.as_dict())
    copied, earlier, older = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"
    copied.write_bytes(b"copied by hand")
    record = MadeBy.of_run("sod", None, str(tiny_checkpoint)).text()
    write_mask(earlier, np.ones((8, 8), np.uint8), record=record)
    older.write_bytes(b"a mask of an earlier run, kept; its probability map is added")
    old = settings.run_started_ns - 10**9
    os.utime(older, ns=(old, old))
    before = earlier.read_bytes()
    pixels = np.ascontiguousarray(photos[0]).tobytes()
    height, width = photos[0].shape[:2]
    batch = {
        "source": ["/in/a.png", "/in/b.png", "/in/c.png"], "name": ["a", "b", "c"],
        "mask": [str(copied), str(earlier), str(older)],
        "probability": ["", "", str(tmp_path / "c_probability.png")],
        "pixels": [pixels] * 3, "height": [height] * 3, "width": [width] * 3,
        "error": [""] * 3,
    }  # fmt: skip
    rows = worker(batch)
    assert rows["status"] == ["failed", "written", "written"]
    assert rows["error"][0].startswith("a.png appeared in the output folder while the run")
    assert copied.read_bytes() == b"copied by hand" and earlier.read_bytes() == before
    assert older.read_bytes().startswith(b"a mask of an earlier run")
    assert (tmp_path / "c_probability.png").is_file()

