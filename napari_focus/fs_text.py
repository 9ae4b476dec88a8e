"""File names in text files. On Linux a file name may hold bytes that are not UTF-8 (an
old Latin-1 archive, a Samba share): Python gives each such byte as a surrogate escape
(``caf\\udce9.png``), which strict UTF-8 refuses to encode. The writers here keep those
names: JSON escapes them (``\\udce9``, read back as the same name), CSV holds the name's
own bytes, as ``ls`` shows them."""

from __future__ import annotations

import json
from typing import Any

#: the ``errors`` of CSV files (written and read): a name's undecodable bytes as they are
CSV_ERRORS = "surrogateescape"


def is_utf8(text: str) -> bool:
    """Whether ``text`` encodes as UTF-8 (no undecodable byte of a file name in it)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def json_text(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` that writes non-ASCII text as it is, unless some text holds an
    undecodable byte of a file name: then everything non-ASCII is escaped."""
    text = json.dumps(value, ensure_ascii=False, **kwargs)
    return text if is_utf8(text) else json.dumps(value, ensure_ascii=True, **kwargs)
