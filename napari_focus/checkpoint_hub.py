"""The official checkpoints on the Hugging Face hub: downloaded once (with progress, a
cancel and a resume, see :mod:`napari_focus.hub_download`), then read from the cache;
offline or unreachable, one error naming the repository, the file and the cache."""

from __future__ import annotations

import os
import socket
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from .checkpoints import CheckpointNotAvailable
from .hub_download import ProgressCallback, fetch_into_cache
from .presets import check_size, check_task, hub_location


def _endpoint_reachable(url: str, timeout: float = 5.0) -> bool:
    """Whether a TCP connection to the hub endpoint opens. Behind a proxy (from the
    environment, or the system settings on Windows and macOS) the endpoint is not
    contacted directly, so the answer is left to huggingface_hub (True)."""
    parsed = urllib.parse.urlsplit(url)
    try:
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
    except ValueError:  # a malformed port: huggingface_hub reports the endpoint
        return True
    host = parsed.hostname
    if not host or (urllib.request.getproxies() and not urllib.request.proxy_bypass(host)):
        return True
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def official_checkpoint(
    task: str,
    size: str = "large",
    *,
    cache_dir: str | os.PathLike | None = None,
    revision: str | None = None,
    progress: ProgressCallback | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> Path:
    """Path of the official checkpoint, downloaded from the Hugging Face hub on first use.

    While it downloads, ``progress`` receives a
    :class:`~napari_focus.hub_download.DownloadProgress` a few times a second (in the
    calling thread); without it a progress bar goes to stderr (none under
    ``HF_HUB_DISABLE_PROGRESS_BARS``). ``cancelled`` is asked between pieces of at most
    1 MB; once it answers True the download stops with
    :class:`~napari_focus.run_control.Cancelled`. A download stopped that way, by Ctrl+C
    or by a failed connection stays in the cache as ``blobs/<etag>.incomplete``, and the
    next call continues it.

    Honours ``HF_ENDPOINT``, ``HF_HUB_OFFLINE`` and ``HF_HOME``/``HF_HUB_CACHE``.
    """
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    repo_id, filename = hub_location(check_task(task), check_size(size))
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    endpoint = os.environ.get("HF_ENDPOINT") or None
    # huggingface_hub retries a refused connection for ~25 s; a refused or unresolvable
    # endpoint is known at once, and then only the cache can answer
    unreachable = not offline and not _endpoint_reachable(endpoint or constants.ENDPOINT)
    if not (offline or unreachable):
        fetch_into_cache(repo_id, filename, cache_dir=cache_dir, revision=revision,
                         endpoint=endpoint, progress=progress, cancelled=cancelled)  # fmt: skip
    try:
        return Path(
            hf_hub_download(
                repo_id,
                filename,
                revision=revision,
                cache_dir=cache_dir,
                local_files_only=offline or unreachable,
                endpoint=endpoint,
            )
        )
    except LocalEntryNotFoundError as error:
        cache = Path(cache_dir) if cache_dir else Path(constants.HF_HUB_CACHE)
        why = "HF_HUB_OFFLINE is set" if offline else "the hub could not be reached"
        command = f"hf download {repo_id} {filename} --cache-dir {cache}"
        raise CheckpointNotAvailable(
            f"the FOCUS checkpoint '{filename}' of the Hugging Face repo '{repo_id}' is not in "
            f"the cache at {cache} and {why}. Either download it once with network access "
            f"(`{command}`)",
            filename,
            why,
            command,
        ) from error
