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
    text = str(exc).strip()
    return shorten(text.splitlines()[0].strip(), limit) if text else type(exc).__name__


def shorten(text: str, limit: int = 200) -> str:
    """The text, or as many whole words of it as fit in `limit` characters followed by an ellipsis
    (a single word longer than half the limit is cut inside it)."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip() + "…"
