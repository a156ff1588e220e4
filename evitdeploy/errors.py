"""One exception type for problems the user can fix; the CLI renders it once."""

from __future__ import annotations

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_BACKEND_UNAVAILABLE = 3


class UserError(Exception):
    """A problem with the user's input or environment, with the fix spelled out."""

    def __init__(self, message: str, hint: str = "", exit_code: int = EXIT_USAGE):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class BackendUnavailable(UserError):
    """A backend package is not installed; says which extra installs it."""

    def __init__(self, backend: str, install: str):
        super().__init__(f"{backend} is not installed", f"install it with: {install}", EXIT_BACKEND_UNAVAILABLE)
        self.backend = backend


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception from a backend, for a one-line error (cut at a word)."""
    from evitdeploy.device.integrity import first_line as device_first_line  # one implementation: the device cannot import this module

    return device_first_line(exc, limit)


def shorten(text: str, limit: int = 200) -> str:
    """As many whole words of `text` as fit in `limit` characters, then an ellipsis."""
    from evitdeploy.device.integrity import shorten as device_shorten

    return device_shorten(text, limit)


def one_line(text) -> str:
    """Control characters (a newline in a path, an escape sequence) written as repr-style escapes."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in str(text))
