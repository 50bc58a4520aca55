"""The chat's actions, once: each one's input model (fields, limits, descriptions), its help text and the controller call it makes.

The chat agent's tools (agent_mode), the routed mode's choices (routing), the slash commands
(slash: their parsing and their help) are views of `catalogue()`: `/edit ... strength=2`, an
`edit_image` tool call with strength 2 and a routed edit all fail in `parse` with the same words
as every other front door (tools.limits). A parameter the action catalogue defines (idea,
style, steps, rounds, candidates, require, drop, strength, scale, method) takes its description
and limits from there (agent.tool_schemas.shared_field).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.errors import InvalidInput
from tools.limits import IDEA_CHARS, LIMITS, PATH_CHARS
from tools.upscale import DEFAULT_METHOD

EDIT_STRENGTH = 0.6  # the chat's img2img default: keeps the picture recognisable


@dataclass(frozen=True)
class ChatAction:
    """One thing the chat does: its name (the agent's tool, the routed choice), its input model, its
    help (the tool's description and the slash command's help) and the controller call."""

    name: str
    input: type[BaseModel]
    help: str
    call: Callable[[object, BaseModel], str]


# the actions' names, in the order the agent's tools list them (known without building the models)
NAMES = ("create_image", "refine_last", "edit_image", "upscale_image", "show_defaults", "set_defaults",
         "list_images", "open_image", "explain_scores", "edit_checklist", "change_picture")


@functools.cache
def catalogue() -> dict[str, ChatAction]:
    """The chat's actions by name, built on first use (the input models take a tenth of a second to
    build: not at the chat UI's start)."""
    built = _build()
    assert tuple(a.name for a in built) == NAMES
    return {a.name: a for a in built}


def _build() -> tuple[ChatAction, ...]:
    from agent.tool_schemas import DropId, RequireText, Text, grammar_safe, shared_field

    class _ChatInput(BaseModel):
        model_config = ConfigDict(extra="forbid", json_schema_extra=grammar_safe)

    class CreateImage(_ChatInput):
        idea: Text = shared_field("idea", ...)
        style: str | None = shared_field("style", None)

    class RefineLast(_ChatInput):
        instruction: Text = Field(..., max_length=IDEA_CHARS,  # empty: the controller asks what to change
                                  description="The change in the user's words, e.g. 'warmer light, less clutter'.")
        subject: str | None = Field(None, max_length=400, description="A new subject for the structured prompt.")
        style: str | None = Field(None, max_length=200, description="A new style for the structured prompt.")
        lighting: str | None = Field(None, max_length=200, description="A new lighting for the structured prompt.")
        composition: str | None = Field(None, max_length=200, description="A new composition for the structured prompt.")
        add_details: list[str] | None = Field(None, max_length=8, description="Details to add.")
        avoid: list[str] | None = Field(None, max_length=8, description="Things to keep out of the image.")

    class EditImage(_ChatInput):
        instruction: Text = Field("", max_length=IDEA_CHARS,
                                  description="What the edit should show (default: the image's own prompt).")
        image: int | None = Field(None, ge=1, description="The image's number. Default: the current image.")
        mask: Text | None = Field(None, min_length=1, max_length=PATH_CHARS,
                                  description="Inpaint where this mask file is white (a path).")
        rect: str | None = Field(None, max_length=80, description="Inpaint this rectangle: 'x,y,w,h' in pixels or "
                                                                  "fractions of the image.")
        strength: float = shared_field("strength", EDIT_STRENGTH)

    class UpscaleImage(_ChatInput):
        image: int | None = Field(None, ge=1, description="The image's number. Default: the current image.")
        scale: int = shared_field("scale", 2)
        method: str = shared_field("method", DEFAULT_METHOD)

    class OpenImage(_ChatInput):
        image: int = Field(..., ge=1, description="The image's number (list_images shows them).")

    class SetDefaults(_ChatInput):
        style: str | None = Field(None, max_length=64, description="Style preset for new images ('off': none).")
        size: str | None = Field(None, max_length=16, description="Image size 'WxH' (multiples of 8), or 'native'.")
        steps: int | None = shared_field("steps", None)
        seed: int | None = Field(None, ge=-1, le=int(LIMITS["seed"].high),
                                 description="Fixed seed for new images; -1 for a new one each time.")
        rounds: int | None = shared_field("rounds", None)
        candidates: int | None = shared_field("candidates", None)
        raw: bool | None = Field(None, description="Use the user's words as the prompt, no expansion.")
        lora: str | None = Field(None, max_length=400, description="LoRA adapters for new images "
                                                                   "('NAME[:WEIGHT] ...'), or 'off'.")
        control: str | None = Field(None, max_length=400, description="ControlNet conditions for new "
                                                                      "images ('KIND:IMAGE[:SCALE] ...'), or 'off'.")

    class EditChecklist(_ChatInput):
        require: list[RequireText] = shared_field("require", [])
        drop: list[DropId] = shared_field("drop", [])

    class ChangePicture(_ChatInput):
        change: Text = Field(..., min_length=1, max_length=IDEA_CHARS,
                             description="The change to the current picture in the user's words, e.g. 'add a "
                                         "blue square', 'make the circle orange', 'remove the square'.")

    class NoInput(_ChatInput):
        pass

    def _set_defaults(chat, a: SetDefaults) -> str:
        values = a.model_dump(exclude_none=True)
        if "seed" in values and values["seed"] < 0:
            values["seed"] = None  # -1: a new seed each run
        if not values:
            return chat.defaults_text()
        return chat.set_defaults(**values)

    def _refine(chat, a: RefineLast) -> str:
        changes = a.model_dump(exclude={"instruction"}, exclude_none=True)
        return chat.refine(a.instruction, changes={k: v for k, v in changes.items() if v} or None)

    return (
        ChatAction("create_image", CreateImage, "Make an image from a new idea (runs generate, safety, CLIP scoring "
                   "and retries). Use for a new subject.", lambda chat, a: chat.create(a.idea, style=a.style)),
        ChatAction("refine_last", RefineLast, "Change the current image in words and run again, e.g. 'warmer light, "
                   "less clutter' (explicit fields such as lighting override the words).", _refine),
        ChatAction("edit_image", EditImage, "img2img on an image (default the current one), or inpaint a region "
                   "given as mask (a file path) or rect ('x,y,w,h' pixels or fractions).",
                   lambda chat, a: chat.edit(a.instruction, image=a.image, mask=a.mask, rect=a.rect,
                                             strength=a.strength)),
        ChatAction("upscale_image", UpscaleImage, "Upscale an image (default the current one) by 2, 3 or 4.",
                   lambda chat, a: chat.upscale(image=a.image, scale=a.scale, method=a.method)),
        ChatAction("show_defaults", NoInput, "Show the defaults new images are made with.",
                   lambda chat, a: chat.defaults_text()),
        ChatAction("set_defaults", SetDefaults, "Change the defaults new images are made with; give only the "
                   "settings to change.", _set_defaults),
        ChatAction("list_images", NoInput, "List the images made in this conversation.",
                   lambda chat, a: chat.list_images()),
        ChatAction("open_image", OpenImage, "Reopen an earlier image by number; it becomes the current one.",
                   lambda chat, a: chat.open_image(a.image)),
        ChatAction("explain_scores", NoInput, "Explain the scores of the last run, round by round.",
                   lambda chat, a: chat.explain_scores()),
        ChatAction("edit_checklist", EditChecklist, "Correct the checklist the next run of the current idea "
                   "checks: add requirements in words (require), remove them by id or number (drop); with "
                   "neither, show it.", lambda chat, a: chat.edit_checklist(require=a.require, drop=a.drop)),
        ChatAction("change_picture", ChangePicture, "Change the current picture as the user asks (add, remove, "
                   "recolour, recount or move an object, change the background): its checklist is edited and the "
                   "picture repaired from itself, keeping the rest; the reply shows the checklist's diff.",
                   lambda chat, a: chat.followups.turn(a.change)),
    )


def parse(name: str, **values) -> BaseModel:
    """The checked input of action `name` (None values are left to the defaults); a value outside its
    limit fails with the words of every front door (tools.limits), any other problem names the field."""
    try:
        return catalogue()[name].input(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        raise invalid(exc, values) from None


def invalid(exc: ValidationError, values: dict | None = None) -> InvalidInput:
    """The InvalidInput for an action input's validation error (what `parse` raises)."""
    from agent.capabilities import range_error

    ranged = range_error(exc)
    if ranged is not None:
        return ranged
    e = exc.errors()[0]
    if e["loc"] and e["loc"][0] == "idea":
        from agent.expand import check_idea

        try:
            check_idea((values or {}).get("idea", e.get("input")))
        except InvalidInput as bad:  # its words for an empty or a long idea
            return bad
    field = ".".join(str(x) for x in e["loc"]) or "input"
    return InvalidInput(f"{field}: {e['msg']}.", "Type /help for the commands and their arguments.",
                        param=field if e["loc"] else None)


def run_action(chat, name: str, inp: BaseModel) -> str:
    """Run a checked action input on the controller; returns the reply."""
    return catalogue()[name].call(chat, inp)


def field_help(model: type[BaseModel], name: str) -> str:
    """A field's description (the slash command's help for a setting)."""
    return model.model_fields[name].description or ""
