"""Telling a Ctrl-C apart from a failure when a library turned it into an error of its own
(torch's file writer, Ray Data's iterator: "release unlocked lock")."""

from __future__ import annotations


def interrupted_inside(error: BaseException) -> bool:
    """Whether a :class:`KeyboardInterrupt` is ``error`` or among its causes and the
    exceptions it was raised while handling."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False
