"""Errors raised by the dataset exporter."""

from __future__ import annotations


class ExportError(ValueError):
    """An export was refused or failed; the message says why. Nothing visible was damaged."""


class UnusableNameError(ExportError):
    """A sample name the layout cannot take (nothing safe left, reserved, too long, a name
    FOCUS training would skip). ``reason`` says why; ``str()`` adds the remedy in the
    Python API's words, the interfaces their own (a field, a file to rename)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"{reason}; choose another name")
        self.reason = reason

    def __reduce__(self) -> tuple:  # survives pickling (worker processes)
        return (type(self), (self.reason,))


class SampleExistsError(ExportError):
    """A sample with the requested name already exists and the policy is ``"error"``.
    ``reason`` says what exists; ``str()`` adds the remedy in the Python API's words,
    :meth:`cli_message` in the command line's."""

    def __init__(self, reason: str, name: str) -> None:
        super().__init__(f"{reason}; choose on_exists='skip', 'rename' or 'replace'")
        self.reason = reason
        self.name = name

    def __reduce__(self) -> tuple:  # survives pickling (worker processes)
        return (type(self), (self.reason, self.name))

    def cli_message(self) -> str:
        return f"{self.reason}; use --on-exists skip, rename or replace"


class ExportWriteError(ExportError):
    """A file could not be written (the disk is full, permission denied, a read-only file
    system...). The message names the file and the cause; ``reason`` is the cause in
    plain words. The split still lists the previous sample (or, when the failure came
    after the commit point, the next export completes the new one)."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
