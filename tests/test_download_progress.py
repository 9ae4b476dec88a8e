"""The official checkpoint's download: progress, cancel, resume and the checks before the
file is taken, against a fake hub on 127.0.0.1 that sends a few MB slowly."""

from __future__ import annotations

import importlib
import threading
import time

import numpy as np
import pytest
from test_download import FILENAME, REPO_ID, FakeHub, _hub_env

from napari_focus.checkpoint_hub import official_checkpoint
from napari_focus.hub_download import DownloadInterrupted, DownloadProgress
from napari_focus.run_control import Cancelled

SIZE = 6 << 20
PIECE = 64 << 10


@pytest.fixture
def slow_hub(monkeypatch):
    """6 MB in pieces of 64 KB, 20 ms apart (about 3 MB/s: two seconds in all)."""
    payload = np.random.default_rng(7).bytes(SIZE)
    with FakeHub(payload, piece=PIECE, pause=0.02) as hub:
        _hub_env(monkeypatch, hub.url, offline=False)
        yield hub


def _repo(cache):
    return cache / ("models--" + REPO_ID.replace("/", "--"))


def _snapshot_files(cache) -> list:
    snapshots = _repo(cache) / "snapshots"
    return [p for p in snapshots.rglob("*") if not p.is_dir()] if snapshots.exists() else []


def _served_settles(hub: FakeHub, seconds: float = 0.5) -> int:
    """The bytes the server has sent once they stop growing for ``seconds``."""
    before = -1
    while hub.served != before:
        before = hub.served
        time.sleep(seconds)
    return before


def test_progress_reports_grow_to_the_total(slow_hub, tmp_path):
    reports: list[DownloadProgress] = []
    path = official_checkpoint("sod", "large", cache_dir=tmp_path, progress=reports.append)
    assert path.read_bytes() == slow_hub.payload
    assert len(reports) >= 3
    assert all(r.total == SIZE and r.filename == FILENAME for r in reports)
    done = [r.done for r in reports]
    assert done == sorted(done) and len(set(done)) == len(done)  # growing
    assert reports[-1].finished and done[-1] == SIZE
    assert not any(r.finished for r in reports[:-1])
    assert all(r.rate > 0 for r in reports)
    assert "of 6 MB" in reports[0].describe() and "MB/s" in reports[0].describe()
    # throttled: far fewer reports than the 96 pieces the server sent
    assert len(reports) < SIZE // PIECE // 3
    assert not list(_repo(tmp_path).glob("blobs/*.incomplete"))


def test_cancel_stops_the_download_and_the_next_call_resumes(slow_hub, tmp_path):
    """Cancelled from another thread (as the widget's Cancel does) a quarter in."""
    stop, quarter = threading.Event(), threading.Event()
    outcome: list[BaseException] = []
    ended_at: list[float] = []

    def on_progress(progress: DownloadProgress) -> None:
        if progress.done >= SIZE // 4:
            quarter.set()

    def download() -> None:
        try:
            official_checkpoint("sod", "large", cache_dir=tmp_path, cancelled=stop.is_set,
                                progress=on_progress)  # fmt: skip
        except BaseException as error:  # checked below
            outcome.append(error)
        ended_at.append(time.perf_counter())

    worker = threading.Thread(target=download)
    worker.start()
    assert quarter.wait(30)
    stop.set()
    cancelled_at, served_at_cancel = time.perf_counter(), slow_hub.served
    worker.join(30)
    assert len(outcome) == 1 and isinstance(outcome[0], Cancelled)
    served = _served_settles(slow_hub)
    print(f"cancel -> download stopped: {ended_at[0] - cancelled_at:.3f} s; served "
          f"{served_at_cancel} bytes at the cancel, {served} in all, of {SIZE}")  # fmt: skip
    assert served - served_at_cancel <= 4 * PIECE, "the server went on sending after the cancel"
    # nothing half-written is in the snapshot folder; the bytes wait in blobs/
    assert _snapshot_files(tmp_path) == []
    partial = _repo(tmp_path) / "blobs" / f"{slow_hub.etag}.incomplete"
    kept = partial.stat().st_size
    assert SIZE // 4 <= kept < SIZE
    assert not (_repo(tmp_path) / "blobs" / slow_hub.etag).exists()
    assert partial.read_bytes() == slow_hub.payload[:kept]

    slow_hub.pause = 0.0
    reports: list[DownloadProgress] = []
    path = official_checkpoint("sod", "large", cache_dir=tmp_path, progress=reports.append)
    assert slow_hub.ranges == [f"bytes={kept}-"]
    assert reports[-1].resumed_from == kept and reports[-1].finished
    assert path.read_bytes() == slow_hub.payload
    assert _snapshot_files(tmp_path) == [path]
    assert not partial.exists()
    assert slow_hub.served - served == SIZE - kept  # only the rest was sent


def test_a_broken_connection_keeps_the_bytes_for_the_next_call(slow_hub, tmp_path):
    slow_hub.pause, slow_hub.cut_at = 0.0, SIZE // 3 + 1000
    with pytest.raises(DownloadInterrupted, match=r"stopped at 2 of 6 MB.*run again to continue"):
        official_checkpoint("sod", "large", cache_dir=tmp_path, progress=lambda _p: None)
    assert _snapshot_files(tmp_path) == []
    partial = _repo(tmp_path) / "blobs" / f"{slow_hub.etag}.incomplete"
    assert partial.stat().st_size == slow_hub.cut_at

    slow_hub.cut_at = None
    path = official_checkpoint("sod", "large", cache_dir=tmp_path, progress=lambda _p: None)
    assert slow_hub.ranges == [f"bytes={SIZE // 3 + 1000}-"]
    assert path.read_bytes() == slow_hub.payload


def test_a_partial_file_of_other_bytes_is_never_taken(slow_hub, tmp_path):
    slow_hub.pause = 0.0
    blobs = _repo(tmp_path) / "blobs"
    blobs.mkdir(parents=True)
    partial = blobs / f"{slow_hub.etag}.incomplete"
    partial.write_bytes(b"not the start of the checkpoint" * 1000)
    with pytest.raises(DownloadInterrupted, match="does not match the file on the hub"):
        official_checkpoint("sod", "large", cache_dir=tmp_path, progress=lambda _p: None)
    assert not partial.exists() and not (blobs / slow_hub.etag).exists()
    assert _snapshot_files(tmp_path) == []
    path = official_checkpoint("sod", "large", cache_dir=tmp_path, progress=lambda _p: None)
    assert path.read_bytes() == slow_hub.payload


@pytest.fixture
def progress_bars(monkeypatch):
    """huggingface_hub's bars on (HF_HUB_DISABLE_PROGRESS_BARS may be set where tests run)."""
    hf_tqdm = importlib.import_module("huggingface_hub.utils.tqdm")
    monkeypatch.setattr(hf_tqdm, "are_progress_bars_disabled", lambda name=None: False)


def _photo(tmp_path):
    from PIL import Image

    Image.new("RGB", (40, 30), (120, 80, 40)).save(tmp_path / "photo.png")
    return tmp_path / "photo.png"


@pytest.mark.parametrize("quiet", [False, True])
def test_predict_shows_a_progress_bar_unless_quiet(slow_hub, tmp_path, monkeypatch,
                                                   progress_bars, quiet):  # fmt: skip
    from huggingface_hub import constants
    from test_cli import run_cli

    slow_hub.pause = 0.0
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    code, err = run_cli("predict", _photo(tmp_path), "--task", "sod", "--device", "cpu",
                        "--out", tmp_path / "masks", *(["--quiet"] if quiet else []))  # fmt: skip
    assert code == 2  # the served bytes are no checkpoint
    assert ("100%" in err and "6.00M/6.00M" in err) is not quiet, err


def _ctrl_c_at_a_third(monkeypatch):
    """Ctrl+C once a third of the file came; returns the download's own byte counter."""
    from napari_focus import hub_download

    add = hub_download._Meter.add

    def interrupt_at_a_third(meter, count: int) -> None:
        add(meter, count)
        if meter.done >= SIZE // 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(hub_download._Meter, "add", interrupt_at_a_third)
    return add


def test_ctrl_c_during_the_download_says_interrupted_and_a_rerun_resumes(
    slow_hub, tmp_path, monkeypatch
):
    from huggingface_hub import constants
    from test_cli import run_cli

    from napari_focus import hub_download

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    add = _ctrl_c_at_a_third(monkeypatch)
    args = ("predict", _photo(tmp_path), "--task", "sod", "--device", "cpu",
            "--out", tmp_path / "masks", "--quiet")  # fmt: skip
    code, err = run_cli(*args)
    assert code == 130 and err == "napari-focus: interrupted\n"
    partial = _repo(tmp_path / "hub") / "blobs" / f"{slow_hub.etag}.incomplete"
    kept = partial.stat().st_size
    assert SIZE // 3 <= kept < SIZE and _snapshot_files(tmp_path / "hub") == []

    monkeypatch.setattr(hub_download._Meter, "add", add)
    slow_hub.pause = 0.0
    code, err = run_cli(*args)
    assert code == 2 and "is not a PyTorch checkpoint: it starts with" in err  # the served bytes
    assert slow_hub.ranges == [f"bytes={kept}-"]
    (path,) = _snapshot_files(tmp_path / "hub")
    assert path.read_bytes() == slow_hub.payload


def test_a_file_on_a_cdn_comes_from_there_without_the_token(slow_hub, tmp_path, monkeypatch):
    slow_hub.pause = 0.0
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    with FakeHub(slow_hub.payload) as cdn:
        cdn.paths = {"/blobs/focus"}
        slow_hub.redirect_to = f"{cdn.url}/blobs/focus"
        path = official_checkpoint("sod", "large", cache_dir=tmp_path, progress=lambda _p: None)
        assert path.read_bytes() == slow_hub.payload
        # huggingface_hub 1.x also sends HEADs to the file's final address; none may
        # carry the token
        methods = [method for method, _ in cdn.requests]
        assert methods.count("GET") == 1 and set(methods) <= {"GET", "HEAD"}
        assert cdn.authorized and not any(cdn.authorized)
    assert slow_hub.count("GET") == 0 and any(slow_hub.authorized)  # HEADs to the hub only


def test_train_interrupted_while_downloading_says_to_run_it_again(slow_hub, tmp_path, monkeypatch):
    from huggingface_hub import constants
    from synthetic_shapes import export_shapes
    from test_cli import run_cli


    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    export_shapes(tmp_path / "datasets", "duts-tr", 2, seed=3, size=48)
    _ctrl_c_at_a_third(monkeypatch)
    code, err = run_cli("train", "--root", tmp_path / "datasets", "--layout", "duts-tr",
                        "--weights", "sod", "--out", tmp_path / "tuned.safetensors",
                        "--steps", "2", "--device", "cpu", "--quiet")  # fmt: skip
    assert code == 130
    assert err == (
        "napari-focus train: interrupted before anything was saved; run the same command "
        "again (a download of the base weights continues from where it stopped)\n"
    )
    partial = _repo(tmp_path / "hub") / "blobs" / f"{slow_hub.etag}.incomplete"
    assert SIZE // 3 <= partial.stat().st_size < SIZE
