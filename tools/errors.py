"""Errors raised by tools. Each carries a message that says what to do next.

`agent.errors` re-exports these, so front ends catch one hierarchy.
"""
from __future__ import annotations


class ImagentError(Exception):
    """Base of every error a user should see as a clear one-line message (no traceback).

    `param`: the input parameter the error is about, as every front door names it (tools.limits).
    `retryable`: the same request may succeed later or elsewhere (a timeout, a rate limit, a
    server error, an unreachable service); a backend fallback chain (tools.fallback) passes only
    these on to its next backend. Bad input, safety blocks and refusals are never retryable.
    """

    exit_code = 1
    retryable = False

    def __init__(self, message: str, hint: str | None = None, *, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.param = param  # the input parameter at fault (steps, count, ...): a CLI names its flag

    def __str__(self) -> str:
        return f"{self.message} {self.hint}".strip() if self.hint else self.message


class InvalidInput(ImagentError):
    """Bad arguments: sizes, prompts, images, masks, ranges."""

    exit_code = 2


class DiskFull(InvalidInput):
    """The disk (or quota) is full: a PNG or a gallery record could not be written."""


class ModelNotFound(ImagentError):
    """A model (diffusers folder, hub id, CLIP, upscaler) could not be found or loaded."""

    exit_code = 3


class BackendError(ImagentError):
    """A backend failed at run time (API error, timeout, out of memory). The backend that raises
    it says whether it is `retryable` (it knows the cause: a status code, a timeout)."""

    exit_code = 4

    def __init__(self, message: str, hint: str | None = None, *, retryable: bool = False, param: str | None = None):
        super().__init__(message, hint, param=param)
        self.retryable = retryable


class SafetyBlocked(ImagentError):
    """A prompt or an image was blocked by the safety policy."""

    exit_code = 5

    def __init__(self, message: str, category: str, hint: str | None = None):
        super().__init__(message, hint)
        self.category = category


class Cancelled(ImagentError):
    """The user cancelled a running job."""

    exit_code = 130
