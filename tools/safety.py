"""Safety checks on prompts and images.

Contract: a checker has `level`, `check_prompt(text) -> Verdict` and `check_image(image) -> Verdict`.
`build_checker(level)` makes the checker for a policy level (off | standard | strict). The session
calls both checks on every path; a model never decides whether they run.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    category: str | None = None
    reason: str | None = None
    scores: dict[str, float] = field(default_factory=dict)


ALLOWED = Verdict(True)


class NoChecks:
    """Policy level 'off': everything passes (the user chose this explicitly)."""

    level = "off"

    def check_prompt(self, text: str) -> Verdict:
        return ALLOWED

    def check_image(self, image: Image.Image) -> Verdict:
        return ALLOWED


def build_checker(level: str):
    if level == "off":
        return NoChecks()
    raise NotImplementedError("safety levels other than 'off' arrive with the critique-loop work")
