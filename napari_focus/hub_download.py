"""Downloading an official checkpoint into the Hugging Face cache, with progress, cancel
and resume (no napari, no Qt).

huggingface_hub (2.x) downloads into a temporary file of its own and deletes it when the
download stops, so a stopped download of gigabytes would start over. Here the bytes go to
``blobs/<etag>.incomplete`` in the repository's cache folder (the name older
huggingface_hub versions resume from too), which the next call continues with an HTTP
Range request. Only a complete file whose SHA-256 is the hub's ETag is renamed to
``blobs/<etag>``; ``hf_hub_download`` then finds that blob and links it into the snapshot
folder without downloading it again. Nothing half-written is ever named like the
checkpoint.
"""

from __future__ import annotations

import hashlib
import os
import re
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import Any, BinaryIO

from .atomic import fsync_dir
from .filelock import LockTimeout, held
from .run_control import Cancelled

PIECE = 1 << 20  # bytes read at most between two checks of the cancel flag
REPORT_EVERY_S = 0.25  # progress callbacks at most this often (and once at the end)
RATE_WINDOW_S = 3.0  # the rate is measured over the last seconds
READ_TIMEOUT_S = 30.0  # a server silent this long ends the attempt (the next resumes)
MB = 1e6
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

ProgressCallback = Callable[["DownloadProgress"], None]


class DownloadInterrupted(OSError):
    """The connection failed mid-download; the bytes so far stay for a resume."""


@dataclass(frozen=True)
class DownloadProgress:
    """Where a download stands: bytes ``done`` of ``total`` (the file's size), the
    ``rate`` in bytes per second over the last seconds, and the bytes a resumed download
    found in the cache (``resumed_from``)."""

    filename: str
    done: int
    total: int
    rate: float
    resumed_from: int = 0

    @property
    def finished(self) -> bool:
        return self.done >= self.total

    def describe(self) -> str:
        """``"120 of 1,500 MB, 11.3 MB/s"``."""
        return f"{self.done / MB:,.0f} of {self.total / MB:,.0f} MB, {self.rate / MB:.1f} MB/s"


class _Meter:
    """Counts bytes; calls ``report`` at most every :data:`REPORT_EVERY_S`, or moves a
    progress bar when there is no ``report``."""

    def __init__(self, filename: str, total: int, start: int, report: ProgressCallback | None):
        self.filename, self.total, self.start, self.done = filename, total, start, start
        self._report = report
        self._last = time.monotonic()
        self._reported = -1  # the bytes done the last report said
        self._window: deque[tuple[float, int]] = deque([(self._last, start)])
        self._bar: Any = None
        if report is None:
            from huggingface_hub.utils import tqdm  # off under HF_HUB_DISABLE_PROGRESS_BARS

            self._bar = tqdm(total=total, initial=start, unit="B", unit_scale=True,
                             unit_divisor=1024, desc=filename)  # fmt: skip

    def add(self, count: int) -> None:
        self.done += count
        if self._bar is not None:
            self._bar.update(count)
        now = time.monotonic()
        if now - self._last >= REPORT_EVERY_S:
            self._send(now)

    def _send(self, now: float) -> None:
        self._last = now
        self._window.append((now, self.done))
        while len(self._window) > 2 and now - self._window[1][0] >= RATE_WINDOW_S:
            self._window.popleft()
        since, then = self._window[0]
        rate = (self.done - then) / (now - since) if now > since else 0.0
        self._reported = self.done
        if self._report is not None:
            self._report(DownloadProgress(self.filename, self.done, self.total, rate, self.start))

    def close(self, finished: bool) -> None:
        if finished and self._reported != self.done:  # the last report says it finished
            self._send(time.monotonic())
        if self._bar is not None:
            self._bar.close()


def repo_cache_folder(repo_id: str, cache_dir: str | os.PathLike | None) -> Path:
    """The repository's folder in the Hugging Face cache (``models--owner--name``)."""
    from huggingface_hub import constants

    return Path(cache_dir or constants.HF_HUB_CACHE) / ("models--" + repo_id.replace("/", "--"))


def fetch_into_cache(
    repo_id: str,
    filename: str,
    *,
    cache_dir: str | os.PathLike | None,
    revision: str | None,
    endpoint: str | None,
    progress: ProgressCallback | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> None:
    """Put the file's blob into the cache unless the cache holds it, continuing a
    download an earlier call left. Says nothing when the hub does not answer the file's
    metadata: ``hf_hub_download`` then reports that, or finds the file in the cache.

    Raises :class:`~napari_focus.run_control.Cancelled` once ``cancelled()`` is true
    (checked at least every :data:`PIECE` bytes) and :class:`DownloadInterrupted` when
    the connection fails; both leave the bytes fetched so far for the next call."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url, try_to_load_from_cache
    from huggingface_hub.utils import build_hf_headers

    known = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir, revision=revision)
    if isinstance(known, str):
        return
    url = hf_hub_url(repo_id, filename, revision=revision, endpoint=endpoint)
    try:
        metadata = get_hf_file_metadata(url, timeout=10)
    except Exception:  # hf_hub_download makes the same request and says why
        return
    etag, size = metadata.etag, metadata.size
    if not etag or not size or not metadata.commit_hash or "/" in etag:
        return
    folder = repo_cache_folder(repo_id, cache_dir)
    blob = folder / "blobs" / etag
    if blob.exists():
        return
    blob.parent.mkdir(parents=True, exist_ok=True)
    # as huggingface_hub does: an LFS file from the CDN address the hub named; a Xet file
    # from the hub's address, which redirects to the Xet bridge serving it over HTTP
    xet = getattr(metadata, "xet_file_data", None) is not None
    source = url if xet else metadata.location
    headers = {k.lower(): v for k, v in build_hf_headers().items()}
    token = headers.pop("authorization", None)
    if token and urllib.parse.urlsplit(source).netloc == urllib.parse.urlsplit(url).netloc:
        headers["authorization"] = token  # for the hub only; never sent on to a CDN
    # the lock huggingface_hub takes for this blob: one download of it at a time
    lock = folder.parent / ".locks" / folder.name / f"{etag}.lock"
    with _locked(lock, cancelled):
        if not blob.exists():
            _download(source, headers, blob, size, filename, progress, cancelled)


@contextmanager
def _locked(path: Path, cancelled: Callable[[], bool] | None) -> Iterator[None]:
    """Hold the lock of ``path``, waiting for another download of the file meanwhile
    (a cancel stops the wait)."""
    while True:
        try:
            with held(path, timeout=0.5):
                yield
            return
        except LockTimeout:
            if cancelled is not None and cancelled():
                raise Cancelled("cancelled while another download of the file ran") from None


def _opener() -> urllib.request.OpenerDirector:
    """urllib with the proxies of the environment and the system, and certifi's
    certificates besides the system's (python.org's Python on macOS has none)."""
    context = ssl.create_default_context()
    try:
        import certifi

        context.load_verify_locations(certifi.where())
    except (ImportError, OSError):
        pass
    return urllib.request.build_opener(urllib.request.HTTPSHandler(context=context))


def _download(
    url: str,
    headers: dict[str, str],
    blob: Path,
    size: int,
    filename: str,
    progress: ProgressCallback | None,
    cancelled: Callable[[], bool] | None,
) -> None:
    partial = blob.with_name(blob.name + ".incomplete")
    digest = hashlib.sha256() if _SHA256.match(blob.name) else None
    with open(partial, "ab") as out:  # created as open() creates files: the umask applies
        start = out.tell()
        if start >= size:  # not this file's beginning (or complete but unchecked): anew
            out.truncate(0)
            start = 0
        if digest is not None and start:
            _hash_file(partial, start, digest)
        request = urllib.request.Request(url, headers={"Accept-Encoding": "identity"})
        for name, value in headers.items():  # none follows a redirect to another host
            request.add_unredirected_header(name.capitalize(), value)
        if start:
            request.add_header("Range", f"bytes={start}-")
        meter: _Meter | None = None
        try:
            with _opener().open(request, timeout=READ_TIMEOUT_S) as response:
                if start and response.status != 206:  # the server sends the whole file
                    out.truncate(0)
                    start, digest = 0, hashlib.sha256() if digest is not None else None
                meter = _Meter(filename, size, start, progress)
                _copy(response, out, meter, digest, cancelled)
        except (OSError, HTTPException) as error:
            done = meter.done if meter is not None else start
            raise DownloadInterrupted(
                f"the download of {filename} stopped at {done / MB:,.0f} of {size / MB:,.0f} "
                f"MB ({_reason(error)}); run again to continue it from there"
            ) from error
        finally:
            if meter is not None:
                meter.close(finished=meter.done == size)
        done = meter.done
        out.flush()
        os.fsync(out.fileno())  # on disk before it takes the name that says "complete"
    if done < size:  # the server closed the connection early
        raise DownloadInterrupted(
            f"the download of {filename} stopped at {done / MB:,.0f} of {size / MB:,.0f} MB "
            "(the connection closed); run again to continue it from there"
        )
    if digest is not None and digest.hexdigest() != blob.name:
        partial.unlink(missing_ok=True)
        raise DownloadInterrupted(
            f"the download of {filename} does not match the file on the hub (another "
            "SHA-256); it was deleted: run again to download it anew"
        )
    os.replace(partial, blob)
    fsync_dir(blob.parent)


def _copy(
    response: Any,
    out: BinaryIO,
    meter: _Meter,
    digest: Any,
    cancelled: Callable[[], bool] | None,
) -> None:
    while meter.done < meter.total:
        if cancelled is not None and cancelled():
            raise Cancelled(f"cancelled the download of {meter.filename}")
        piece = response.read1(PIECE)
        if not piece:
            break
        out.write(piece)
        if digest is not None:
            digest.update(piece)
        meter.add(len(piece))


def _hash_file(path: Path, length: int, digest: Any) -> None:
    with open(path, "rb") as source:
        while length > 0:
            block = source.read(min(length, 16 * PIECE))
            if not block:
                break
            digest.update(block)
            length -= len(block)


def _reason(error: BaseException) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return str(error.reason)
    return str(error) or type(error).__name__
