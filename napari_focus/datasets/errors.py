"""Errors raised by the dataset exporter."""

from __future__ import annotations


class ExportError(ValueError):
    """An export was refused or failed; the message says why. Nothing visible was damaged."""


class SampleExistsError(ExportError):
    """A sample with the requested name already exists and the policy is ``"error"``."""

    def __init__(self, message: str, name: str) -> None:
        super().__init__(message)
        self.name = name

    def cli_message(self) -> str:
        """The message in the command line's words (``--on-exists skip``, not ``on_exists=``)."""
        reason = str(self).split("; choose on_exists", 1)[0]
        return f"{reason}; use --on-exists skip, rename or replace"


class ExportWriteError(ExportError):
    """A file could not be written (the disk is full, permission denied, a read-only file
    system...). The message names the file and the cause; ``reason`` is the cause in
    plain words. The split still lists the previous sample (or, when the failure came
    after the commit point, the next export completes the new one)."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
