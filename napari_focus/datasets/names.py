"""Turning a layer or file name into a safe sample name.

A safe name is a single path component of Unicode letters, digits, ``_`` and ``-``: no
path separators, dots (so no ``..``, and FOCUS's ``file_name.split('.')[0]`` finds the
whole stem), control characters or leading/trailing punctuation, at most
:data:`MAX_NAME_CHARS` characters and :data:`MAX_NAME_BYTES` UTF-8 bytes (room is left
for suffixes such as ``_gt.png`` and ``_12`` within the usual 255-byte file-name limit).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

from .errors import ExportError, UnusableNameError
from .layouts import Layout

MAX_NAME_CHARS = 100
MAX_NAME_BYTES = 150
DASH_PREFIX = "NF-"
_STRIP_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_UNSAFE_RUN = re.compile(r"[^\w-]+")
_WINDOWS_RESERVED = {
    "con", "prn", "aux", "nul",
    *(f"com{i}" for i in range(1, 10)),
    *(f"lpt{i}" for i in range(1, 10)),
}  # fmt: skip


def sanitize_name(raw: str, layout: Layout | None = None) -> str:
    """Safe sample name from ``raw`` (a layer name, a file name or a path's last part).

    A trailing image extension is dropped; every run of other characters becomes ``_``.
    For layouts whose FOCUS loader splits names at ``-`` (COD10K, ISTD) a name without a
    dash is prefixed with :data:`DASH_PREFIX`, and names that loader would skip
    (second ``-`` field ``NonCAM``, :meth:`~.layouts.Layout.training_skips`) are refused.

    Raises:
        UnusableNameError: (an ExportError) when nothing safe is left, or the name is
            reserved, too long or one FOCUS training would skip.
    """
    name = _safe_name(raw, layout)
    if _too_long(name):
        raise UnusableNameError(
            f"sample name {raw!r} is too long ({len(name)} characters; at most "
            f"{MAX_NAME_CHARS} characters and {MAX_NAME_BYTES} UTF-8 bytes)"
        )
    return name


def fitting_name(raw: str, layout: Layout | None = None) -> str:
    """``raw`` (an image's name) as it is when :func:`sanitize_name` takes it for
    ``layout`` (or refuses it for another reason, which the export then says); a name
    too long becomes the start of its safe name with a hash of ``raw`` appended
    (``a_very_long_…_3f2a9c1e``): the same for the same name, another for others. With
    no ``layout``, room is kept for the prefix a dash layout adds."""

    def fits(candidate: str) -> bool:
        try:
            name = _safe_name(candidate, layout)
        except ExportError:  # refused for another reason: the export says which
            return True
        if layout is None and "-" not in name:  # as a dash layout would name it
            name = DASH_PREFIX + name
        return not _too_long(name)

    if fits(raw):
        return raw
    digest = "_" + hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    head = _safe_name(raw, layout)[: MAX_NAME_CHARS - len(digest)]
    while head and not fits(head + digest):  # a dash cut off, UTF-8 bytes: a bit shorter
        head = head[:-1]
    return head + digest


def _too_long(name: str) -> bool:
    return len(name) > MAX_NAME_CHARS or len(name.encode("utf-8")) > MAX_NAME_BYTES


def _safe_name(raw: str, layout: Layout | None) -> str:
    """:func:`sanitize_name` but for its length check."""
    if not isinstance(raw, str):
        raise ExportError(f"sample name must be a string, got {type(raw).__name__}")
    text = unicodedata.normalize("NFC", raw)
    text = "".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in text)
    text = text.strip()
    lowered = text.lower()
    for ext in _STRIP_EXTENSIONS:
        if lowered.endswith(ext) and len(text) > len(ext):
            text = text[: -len(ext)]
            break
    name = _UNSAFE_RUN.sub("_", text).strip("_-")
    name = re.sub(r"_{2,}", "_", name)
    if not name:
        raise UnusableNameError(f"sample name {raw!r} has nothing usable left after sanitising")
    if name.lower() in _WINDOWS_RESERVED:
        raise UnusableNameError(f"sample name {raw!r} is a reserved device name on Windows")
    if layout is not None and layout.name_needs_dash:
        if "-" not in name:
            name = DASH_PREFIX + name
        if layout.training_skips(name + layout.image_ext):
            raise UnusableNameError(
                f"sample name {name!r} would be skipped by FOCUS training for {layout.name} "
                "(its second '-' field is 'NonCAM')"
            )
    return name
