"""Official-checkpoint download through huggingface_hub, against a local fake hub.

A threading HTTP server on 127.0.0.1 answers the two requests ``hf_hub_download``
makes for ``geshang/focus_large_sod`` / ``focus_large_sod.pth``: a HEAD on
``/{repo}/resolve/{revision}/{file}`` (commit, ETag, size; no Xet headers, so the
plain HTTP path is used) and the GET of the file. It serves a detectron2-style
checkpoint holding the tiny_mlp weights. Nothing here touches the network.
"""

from __future__ import annotations

import hashlib
import io
import socket
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from napari_focus import FocusPredictor
from napari_focus.checkpoint_hub import official_checkpoint
from napari_focus.checkpoint_identity import HubFileMismatch
from napari_focus.checkpoints import TRAINING_ONLY_PREFIXES, CheckpointError, CheckpointNotAvailable

REPO_ID = "geshang/focus_large_sod"
FILENAME = "focus_large_sod.pth"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
REVISIONS = ("main", "v1.0", COMMIT)


class FakeHub:
    """Serves one file of one repo, the way the Hugging Face hub's /resolve endpoint does:
    with Range requests (206), in pieces of ``piece`` bytes with ``pause`` seconds between
    them (a slow connection), counting the bytes it managed to send (``served``); with
    ``cut_at`` it closes the connection once it has sent the file up to that offset."""

    def __init__(self, payload: bytes, *, piece: int = 1 << 20, pause: float = 0.0) -> None:
        self.payload = payload
        self.etag = hashlib.sha256(payload).hexdigest()
        self.requests: list[tuple[str, str]] = []
        self.ranges: list[str] = []  # the Range headers of the GETs
        self.served = 0
        self.piece, self.pause = piece, pause
        self.cut_at: int | None = None
        self.redirect_to: str | None = None  # the file's address on a CDN
        self.paths = {f"/{REPO_ID}/resolve/{revision}/{FILENAME}" for revision in REVISIONS}
        self.authorized: list[bool] = []  # per request: an Authorization header came
        self._lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep the test output clean
                pass

            def _route(self) -> bool:
                with hub._lock:
                    hub.requests.append((self.command, self.path))
                    hub.authorized.append("Authorization" in self.headers)
                if self.path in hub.paths and hub.redirect_to and "/resolve/" in self.path:
                    self.send_response(302)
                    self.send_header("Location", hub.redirect_to)
                    self.send_header("X-Repo-Commit", COMMIT)
                    self.send_header("X-Linked-Etag", f'"{hub.etag}"')
                    self.send_header("X-Linked-Size", str(len(hub.payload)))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return False
                if self.path in hub.paths:
                    return True
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.send_header("X-Error-Message", "Entry not found")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return False

            def _headers(self, start: int = 0) -> None:
                size = len(hub.payload)
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(size - start))
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{hub.etag}"')
                self.send_header("X-Linked-Etag", f'"{hub.etag}"')
                self.send_header("X-Linked-Size", str(len(hub.payload)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()

            def do_HEAD(self) -> None:
                if self._route():
                    self._headers()

            def do_GET(self) -> None:
                if not self._route():
                    return
                asked = self.headers.get("Range")
                start = 0
                if asked:
                    with hub._lock:
                        hub.ranges.append(asked)
                    start = int(asked.removeprefix("bytes=").split("-")[0])
                self._headers(start)
                view = memoryview(hub.payload)
                try:
                    end = len(view) if hub.cut_at is None else max(start, hub.cut_at)
                    for offset in range(start, end, hub.piece):
                        if hub.pause:
                            time.sleep(hub.pause)
                        sent = view[offset : min(offset + hub.piece, end)]
                        self.wfile.write(sent)
                        with hub._lock:
                            hub.served += len(sent)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client stopped reading

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    def count(self, method: str | None = None) -> int:
        with self._lock:
            return sum(1 for m, _ in self.requests if method is None or m == method)

    def file_downloads(self) -> int:
        return self.count("GET")


@pytest.fixture(scope="module")
def served_state(tiny_mlp) -> dict[str, torch.Tensor]:
    """The tiny weights as float16 (half the bytes to serve), training-only keys included."""
    _, state = tiny_mlp
    return {k: v.half() if v.is_floating_point() else v for k, v in state.items()}


@pytest.fixture(scope="module")
def hub(served_state):
    buffer = io.BytesIO()
    torch.save({"model": served_state, "iteration": 5}, buffer)
    with FakeHub(buffer.getvalue()) as server:
        assert server.server.server_address[0] == "127.0.0.1"
        yield server
    assert not server.thread.is_alive()


def _hub_env(monkeypatch: pytest.MonkeyPatch, endpoint: str, *, offline: bool) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    # huggingface_hub reads these once, at import. Its own offline switch stays off (as when
    # HF_HUB_OFFLINE is set after the import): napari_focus must honour the variable itself.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    # huggingface_hub's import-time default endpoint becomes a closed local port: code that
    # ignored HF_ENDPOINT fails here instead of reaching out to huggingface.co
    decoy = _closed_port_url()
    monkeypatch.setattr(constants, "ENDPOINT", decoy)
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", decoy + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)


@pytest.fixture
def online(hub, monkeypatch):
    _hub_env(monkeypatch, hub.url, offline=False)
    return hub


@pytest.fixture(scope="module")
def warm_cache(hub, tmp_path_factory) -> tuple[Path, Path]:
    """A cache folder into which the checkpoint was downloaded once: (cache_dir, file path)."""
    cache = tmp_path_factory.mktemp("warm_cache")
    with pytest.MonkeyPatch.context() as monkeypatch:
        _hub_env(monkeypatch, hub.url, offline=False)
        path = official_checkpoint("sod", "large", cache_dir=cache)
    return cache, path


def _closed_port_url() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# ----------------------------------------------------------------------------- tests
def test_download_then_served_from_cache(online, tmp_path):
    cache = tmp_path / "cache"
    before = online.file_downloads()
    path = official_checkpoint("sod", "large", cache_dir=cache)
    assert online.file_downloads() == before + 1
    assert (
        "GET",
        f"/{REPO_ID}/resolve/main/{FILENAME}",
    ) in online.requests
    assert path.is_file()
    assert path.read_bytes() == online.payload
    assert path.name == FILENAME
    assert cache.resolve() in path.resolve().parents or cache.resolve() in path.parents
    assert COMMIT in path.parts  # the hub cache layout: snapshots/<commit>/<file>

    again = official_checkpoint("SOD", "large", cache_dir=cache)
    assert again == path
    assert online.file_downloads() == before + 1, "the cached file was downloaded again"


def test_revision_is_passed_to_the_hub(online, tmp_path):
    official_checkpoint("sod", "large", cache_dir=tmp_path, revision="v1.0")
    assert ("GET", f"/{REPO_ID}/resolve/v1.0/{FILENAME}") in online.requests


def test_downloaded_checkpoint_loads_with_explicit_architecture(
    online, warm_cache, tiny_mlp, served_state
):
    arch, _ = tiny_mlp
    _, path = warm_cache
    predictor = FocusPredictor.from_checkpoint(path, "sod", architecture=arch, device="cpu")
    loaded = predictor.model.state_dict()
    expected = {k: v for k, v in served_state.items() if not k.startswith(TRAINING_ONLY_PREFIXES)}
    assert set(loaded) == set(expected)
    for key, value in expected.items():
        assert torch.equal(loaded[key], value.float() if value.is_floating_point() else value), key


def test_from_pretrained_downloads_then_checks_the_size(online, tmp_path):
    # the served tiny weights are not a "large" model: the download works, the shape check refuses
    with pytest.raises(CheckpointError) as info:
        FocusPredictor.from_pretrained("sod", "large", cache_dir=tmp_path, device="cpu")
    message = str(info.value)
    assert isinstance(info.value, HubFileMismatch)
    assert FILENAME in message and f"the hub endpoint HF_ENDPOINT={online.url}" in message
    assert "holds a custom architecture, by its tensor shapes" in message
    assert f"not the FOCUS-L (large) that {REPO_ID} publishes" in message
    # what to do names the repository's cache folder, which holds the served file
    repo_cache = tmp_path / "models--geshang--focus_large_sod"
    assert f"delete the folder {repo_cache} to download it again" in message
    assert info.value.path.is_relative_to(repo_cache)
    assert "--size" not in message  # nothing the user typed asked for a size
    assert ("GET", f"/{REPO_ID}/resolve/main/{FILENAME}") in online.requests


def test_a_served_file_of_another_size_is_said_in_command_line_words(online, tmp_path, monkeypatch):
    from huggingface_hub import constants
    from PIL import Image
    from test_cli import run_cli

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    Image.new("RGB", (40, 30), (120, 80, 40)).save(tmp_path / "photo.png")
    out = tmp_path / "masks"
    code, err = run_cli("predict", tmp_path / "photo.png", "--task", "sod", "--device", "cpu",
                        "--out", out, "--quiet")  # fmt: skip
    assert code == 2, err
    assert f"not the FOCUS-L (large) that {REPO_ID} publishes" in err
    assert "--size" not in err and "Traceback" not in err
    assert "give a file you trust with --weights" in err
    assert not out.exists() or not any(out.iterdir())


def test_offline_with_empty_cache_says_what_to_do(hub, monkeypatch, tmp_path):
    _hub_env(monkeypatch, hub.url, offline=True)
    before = hub.count()
    cache = tmp_path / "empty_cache"
    with pytest.raises(CheckpointNotAvailable) as info:
        official_checkpoint("sod", "large", cache_dir=cache)
    message = str(info.value)
    assert REPO_ID in message
    assert FILENAME in message
    assert str(cache) in message
    assert "--weights" in message
    assert "HF_HUB_OFFLINE" in message
    assert isinstance(info.value, FileNotFoundError)
    assert hub.count() == before, "offline mode contacted the server"


def test_offline_from_pretrained_raises_not_available(hub, monkeypatch, tmp_path):
    _hub_env(monkeypatch, hub.url, offline=True)
    with pytest.raises(CheckpointNotAvailable, match="focus_large_sod"):
        FocusPredictor.from_pretrained("sod", "large", cache_dir=tmp_path, device="cpu")


def test_offline_default_cache_is_named(hub, monkeypatch, tmp_path):
    from huggingface_hub import constants

    _hub_env(monkeypatch, hub.url, offline=True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "default_cache"))
    with pytest.raises(CheckpointNotAvailable) as info:
        official_checkpoint("cod", "giant")
    message = str(info.value)
    assert "geshang/focus_giant_cod" in message and "focus_giant_cod.pth" in message
    assert str(tmp_path / "default_cache") in message


def test_offline_with_warm_cache_uses_it_without_network(hub, warm_cache, monkeypatch):
    cache, path = warm_cache
    _hub_env(monkeypatch, hub.url, offline=True)
    before = hub.count()
    assert official_checkpoint("sod", "large", cache_dir=cache) == path
    assert hub.count() == before, "offline mode contacted the server"


def test_unreachable_hub_with_warm_cache_uses_it(warm_cache, monkeypatch):
    cache, path = warm_cache
    _hub_env(monkeypatch, _closed_port_url(), offline=False)
    assert official_checkpoint("sod", "large", cache_dir=cache) == path


def test_unreachable_hub_with_empty_cache_fails_at_once(monkeypatch, tmp_path):
    """A refused connection is final: no 25 s of huggingface_hub retries."""
    import huggingface_hub
    from huggingface_hub.utils import _http

    _hub_env(monkeypatch, _closed_port_url(), offline=False)
    monkeypatch.setattr(urllib.request, "getproxies", dict)  # no proxy on this machine
    asked: list[dict] = []
    download = huggingface_hub.hf_hub_download
    monkeypatch.setattr(huggingface_hub, "hf_hub_download",
                        lambda *a, **k: asked.append(k) or download(*a, **k))  # fmt: skip
    pauses: list[float] = []
    monkeypatch.setattr(_http.time, "sleep", pauses.append)  # a retry waits first
    with pytest.raises(CheckpointNotAvailable, match="the hub could not be reached"):
        official_checkpoint("sod", "large", cache_dir=tmp_path / "empty_cache")
    assert [k["local_files_only"] for k in asked] == [True]  # only the cache was asked
    assert pauses == [], "huggingface_hub retried the connection"


def test_reachability_probe_leaves_proxies_and_odd_endpoints_to_the_hub(monkeypatch):
    from napari_focus.checkpoint_hub import _endpoint_reachable

    closed = _closed_port_url()
    monkeypatch.setattr(urllib.request, "getproxies", dict)
    assert not _endpoint_reachable(closed)
    # a proxy from the environment or the system settings: no direct probe
    monkeypatch.setattr(urllib.request, "getproxies", lambda: {"http": "http://proxy:3128"})
    monkeypatch.setattr(urllib.request, "proxy_bypass", lambda host: False)
    assert _endpoint_reachable(closed)
    monkeypatch.setattr(urllib.request, "proxy_bypass", lambda host: True)  # NO_PROXY
    assert not _endpoint_reachable(closed)
    assert _endpoint_reachable("http://127.0.0.1:99999")  # malformed: the hub says so


def test_warm_cache_is_not_downloaded_again(online, warm_cache):
    cache, path = warm_cache
    before = online.file_downloads()
    assert official_checkpoint("sod", "large", cache_dir=cache) == path
    assert online.file_downloads() == before
    assert path.read_bytes() == online.payload


def test_unknown_task_or_size_is_refused_before_any_request(online, tmp_path):
    before = online.count()
    with pytest.raises(ValueError, match="task"):
        official_checkpoint("nope", "large", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="size"):
        official_checkpoint("sod", "huge", cache_dir=tmp_path)
    assert online.count() == before


def test_load_takes_a_local_file_else_the_hub(online, tmp_path, monkeypatch, tiny_checkpoint):
    from huggingface_hub import constants

    requests = online.count()
    local = FocusPredictor.load("sod", weights=tiny_checkpoint, device="cpu")
    assert local.architecture.embed_dim == 64  # the size from the file
    with pytest.raises(CheckpointError, match="not the FOCUS-L"):  # a given size wins
        FocusPredictor.load("sod", size="large", weights=tiny_checkpoint, device="cpu")
    assert online.count() == requests  # a local file never asks the hub

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(CheckpointError) as info:  # no file: the official large weights
        FocusPredictor.load("sod", device="cpu")
    assert FILENAME in str(info.value) and "holds a custom architecture" in str(info.value)
    assert ("GET", f"/{REPO_ID}/resolve/main/{FILENAME}") in online.requests
    assert list((tmp_path / "hub").rglob(FILENAME))
