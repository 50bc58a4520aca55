"""Pydantic models at the agent's boundaries. Every field is documented (the docs double as the
JSON schema an LLM is asked to fill)."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_LIST_ITEMS = 12
MAX_FIELD_CHARS = 400


class PromptSpec(BaseModel):
    """A structured image prompt: what to draw and how. Rendered into positive/negative text for
    a model family by `agent.render.render`."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    subject: str = Field(
        ..., min_length=1, max_length=MAX_FIELD_CHARS,
        description="The main subject and action, concrete and literal, e.g. 'a cat typing on a laptop'. "
                    "Keep the user's own words for the subject.")
    style: str = Field(
        "", max_length=MAX_FIELD_CHARS,
        description="Medium and visual style, e.g. 'watercolor illustration' or 'cinematic film still'.")
    lighting: str = Field(
        "", max_length=MAX_FIELD_CHARS,
        description="Light and mood, e.g. 'soft window light at dusk'.")
    composition: str = Field(
        "", max_length=MAX_FIELD_CHARS,
        description="Framing and camera, e.g. 'close-up, shallow depth of field, centered'.")
    quality: list[str] = Field(
        default_factory=list, max_length=MAX_LIST_ITEMS,
        description="Short quality words, e.g. ['highly detailed', 'sharp focus'].")
    negatives: list[str] = Field(
        default_factory=list, max_length=MAX_LIST_ITEMS,
        description="Things to keep OUT of the image, as short phrases, e.g. ['blurry', 'text', 'watermark'].")
    extras: list[str] = Field(
        default_factory=list, max_length=MAX_LIST_ITEMS,
        description="Any other short details worth adding (setting, colours, era), one phrase each.")

    @field_validator("quality", "negatives", "extras", mode="before")
    @classmethod
    def _phrases(cls, value):
        """Accept a comma-separated string too; drop empty and duplicate phrases, keep order."""
        if value is None:
            return []
        if isinstance(value, str):
            value = value.split(",")
        out: list[str] = []
        for item in value:
            text = str(item).strip()
            if text and text.lower() not in {o.lower() for o in out}:
                out.append(text[:MAX_FIELD_CHARS])
        return out


class RenderedPrompt(BaseModel):
    """A PromptSpec turned into the text one model family reads."""

    family: str = Field(..., description="demo | sd | sdxl | flux | openai")
    positive: str = Field(..., description="The prompt text passed to the model.")
    negative: str = Field("", description="The negative prompt ('' where the family has none).")


class Expansion(BaseModel):
    """The result of expanding an idea: the structured prompt, its rendering and how it was made."""

    idea: str = Field(..., description="The user's original idea, verbatim.")
    spec: PromptSpec
    rendered: RenderedPrompt
    expander: str = Field(..., description="'template' or 'llm:MODEL'.")
    style_preset: str | None = Field(None, description="The style preset applied, if any.")
    warnings: list[str] = Field(default_factory=list, description="What the user should know (fallbacks, cuts).")

    @property
    def positive(self) -> str:
        return self.rendered.positive

    @property
    def negative(self) -> str:
        return self.rendered.negative

    def record(self) -> dict:
        """What goes into PNG metadata and the gallery next to `idea` and `spec`."""
        return {"family": self.rendered.family, "expander": self.expander, "style_preset": self.style_preset}
