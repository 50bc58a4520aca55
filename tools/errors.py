"""Errors raised by tools. Each carries a message that says what to do next.

`agent.errors` re-exports these, so front ends catch one hierarchy.
"""
from __future__ import annotations


class ImagentError(Exception):
    """Base of every error a user should see as a clear one-line message (no traceback)."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

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
    """A backend failed at run time (API error, timeout, out of memory)."""

    exit_code = 4


class SafetyBlocked(ImagentError):
    """A prompt or an image was blocked by the safety policy."""

    exit_code = 5

    def __init__(self, message: str, category: str, hint: str | None = None):
        super().__init__(message, hint)
        self.category = category


class Cancelled(ImagentError):
    """The user cancelled a running job."""

    exit_code = 130
