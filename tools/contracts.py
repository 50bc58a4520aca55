"""The contracts the agent builds on, in one place: what a backend, a safety checker, a scorer, an upscaler and a verifier provide.

Typed Protocols (structural: any object with these members fits, nothing to inherit). The
critique loop (agent.loop) and the session take their tools as these; the implementations live
beside them in tools/ (diffusers_backend, openai_backend, fallback; safety; score; upscale;
verify). The reviser's contract, which speaks the agent's structured prompt, is agent.revise.Reviser.
"""
from __future__ import annotations

import threading
from typing import Callable, Protocol, Sequence

from PIL import Image

from tools.generate import GenerateRequest, GenerateResult, ImageBackend, ProgressFn
from tools.requirements import Checklist, RequirementVerdict
from tools.safety import Verdict
from tools.verify import Verifier

__all__ = ["ImageBackend", "SafetyChecker", "ImageScorer", "ImageUpscaler", "Verifier", "Composer",
           "GenerateRequest", "GenerateResult", "ProgressFn", "Checklist", "RequirementVerdict", "Verdict"]


class SafetyChecker(Protocol):
    """Checks prompts and images against a policy (tools.safety.build_checker makes one)."""

    level: str

    def check_prompt(self, text: str) -> Verdict: ...

    def check_image(self, image: Image.Image) -> Verdict: ...


class ImageScorer(Protocol):
    """Scores images against a text (tools.score.Scorer: CLIP); higher is closer."""

    formula: str

    def score(self, images: Sequence[Image.Image], text: str | Sequence[str]) -> list[float]: ...


class ImageUpscaler(Protocol):
    """Enlarges an image (tools.upscale.Upscaler: Real-ESRGAN, Lanczos, SD x4, hires-fix)."""

    def upscale(self, image: Image.Image, scale: int, method: str, *, progress: ProgressFn | None = None,
                cancel: threading.Event | None = None, **options): ...


# plan, base image (or None) -> tools.compose.ComposeResult: the edit and layout repairs
Composer = Callable[[object, Image.Image | None], object]
