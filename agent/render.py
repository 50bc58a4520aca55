"""Render a PromptSpec into the positive/negative text a model family reads (pure functions).

Families:
  demo    the built-in demo-world model: it only understands its tiny caption grammar, so the
          subject is passed alone and intact ("two red circles").
  sd      Stable Diffusion 1.x/2.x: comma-separated tags, subject first; negatives as tags.
  sdxl    SDXL and SD3: fuller prose sentences; negatives as tags.
  flux    FLUX: prose; FLUX ignores negative prompts, so the negative is empty.
  openai  the OpenAI images API: prose; it has no negative prompt, so negatives become "Avoid: ...".
"""
from __future__ import annotations

import json
from pathlib import Path

from agent.errors import InvalidInput
from agent.schemas import PromptSpec, RenderedPrompt

FAMILIES = ("demo", "sd", "sdxl", "flux", "openai")


def check_family(family: str) -> str:
    name = (family or "").strip().lower()
    if name not in FAMILIES:
        raise InvalidInput(f"Unknown model family '{family}'.", f"Use one of: {', '.join(FAMILIES)}.")
    return name


def guess_family(model: str | None, backend: str = "diffusers") -> str:
    """Guess the family from the backend and a model id or folder (model_index.json `_class_name`)."""
    if backend == "openai":
        return "openai"
    text = str(model or "demo")
    if text == "demo" or "demo" in Path(text).name.lower():
        return "demo"
    index = Path(text).expanduser() / "model_index.json"
    class_name = ""
    if index.is_file():
        try:
            class_name = str(json.loads(index.read_text()).get("_class_name", ""))
        except (OSError, ValueError):
            class_name = ""
    hay = (class_name + " " + text).lower()
    if "flux" in hay:
        return "flux"
    if "xl" in hay or "stablediffusion3" in hay or "stable-diffusion-3" in hay or "sd3" in hay:
        return "sdxl"
    if "openai" in hay or "dall-e" in hay or "gpt-image" in hay:
        return "openai"
    return "sd"


def render(spec: PromptSpec, family: str) -> RenderedPrompt:
    family = check_family(family)
    if family == "demo":
        return RenderedPrompt(family=family, positive=spec.subject, negative="")
    negatives = _unique(spec.negatives)
    if family == "sd":
        tags = [spec.subject, spec.style, spec.lighting, spec.composition, *spec.quality, *spec.extras]
        return RenderedPrompt(family=family, positive=", ".join(_unique(tags)), negative=", ".join(negatives))
    prose = _prose(spec)
    if family == "openai":
        if negatives:
            prose += f" Avoid: {', '.join(negatives)}."
        return RenderedPrompt(family=family, positive=prose, negative="")
    if family == "flux":
        return RenderedPrompt(family=family, positive=prose, negative="")
    return RenderedPrompt(family=family, positive=prose, negative=", ".join(negatives))


def _prose(spec: PromptSpec) -> str:
    first = _cap(spec.subject.rstrip("."))
    if spec.style:
        first += f", {spec.style.rstrip('.')}"
    sentences = [first]
    scene = ", ".join(x.rstrip(".") for x in (spec.lighting, spec.composition) if x)
    if scene:
        sentences.append(_cap(scene))
    if spec.extras:
        sentences.append(_cap(", ".join(spec.extras)))
    if spec.quality:
        sentences.append(_cap(", ".join(spec.quality)))
    return ". ".join(sentences) + "."


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _unique(items) -> list[str]:
    seen, out = set(), []
    for item in items:
        text = (item or "").strip()
        if text and text.lower() not in seen:
            seen.add(text.lower())
            out.append(text)
    return out
