"""Routed mode: a message becomes one constrained JSON choice of action (RouteChoice) from the model, or from
the offline keyword router when that call fails, and the choice runs as one of the controller's actions.

A message that names its action by a word no other action uses (upscale, open image 3, list the images)
is routed by that word without a model call (`explicit_route`)."""
from __future__ import annotations

import json
import re

from agent.chat.agent_mode import cancellable
from agent.errors import Cancelled

ROUTE_ACTIONS = ("create_image", "refine_last", "edit_image", "upscale_image", "open_image", "list_images",
                 "show_defaults", "explain_scores", "reply")


def _route_choice():
    from typing import Literal

    from pydantic import BaseModel, ConfigDict, Field, field_validator

    class RouteChoice(BaseModel):
        """The one action that answers the user's message, with its arguments."""

        model_config = ConfigDict(extra="ignore")
        action: Literal[ROUTE_ACTIONS] = Field(  # type: ignore[valid-type]
            ..., description="create_image: a new picture; refine_last: change the current picture; edit_image: "
                             "repaint part of it; upscale_image: enlarge it; open_image, list_images, "
                             "show_defaults, explain_scores; reply: answer in words.")
        text: str = Field("", max_length=2000, description="create_image: the idea in the user's words; "
                                                           "refine_last/edit_image: the change; reply: the answer.")
        image: int | None = Field(None, description="An image number, only if the user named one.")
        scale: int | None = Field(None, description="upscale_image: 2, 3 or 4.")

        @field_validator("image", "scale", mode="before")
        @classmethod
        def _sane(cls, value, info):  # a small model's 0 or 7 means "none", not a failed choice
            ok = {"image": range(1, 2**31), "scale": range(2, 5)}[info.field_name]
            return value if isinstance(value, int) and not isinstance(value, bool) and value in ok else None

    return RouteChoice


RouteChoice = _route_choice()


def _route_examples(home=None) -> list[dict]:
    """The worked routing exchanges of prompts/route_examples.json (overridable in the settings'
    home; [] when broken)."""
    import prompts

    try:
        data = json.loads(prompts.read_text("route_examples.json", home))
    except (OSError, ValueError):
        return []
    return [d for d in data if isinstance(d, dict) and {"state", "message", "answer"} <= set(d)] \
        if isinstance(data, list) else []


_DRAW = re.compile(r"^(?:please\s+)?(?:draw|make|create|paint|generate|render|show)(?:\s+me)?\s+"
                   r"(?:(?:an?\s+)?(?:image|picture|photo|drawing|painting)\s+of\s+)?", re.I)
_UPSCALE = re.compile(r"\b(?:upscale|enlarge|bigger|higher resolution|x[234]|larger)\b", re.I)
_REFINE = re.compile(r"^(?:make it|now|more|less|fewer|add|without|remove|no |with |change|warmer|cooler|"
                     r"brighter|darker)", re.I)


def idea_of(message: str, chosen: str = "") -> str:
    """The idea to draw: the model's text when it is the user's own words, else the message without
    a leading 'draw me a picture of'."""
    chosen = " ".join(chosen.split())
    if chosen and chosen.lower() in " ".join(message.lower().split()):
        return chosen
    return _DRAW.sub("", message.strip()).strip() or message.strip()


_OPEN = re.compile(r"\b(?:open|show|reopen|go back to)\s+(?:me\s+)?(?:the\s+)?(?:image|picture)\s+#?(\d+)\b", re.I)
_LIST = re.compile(r"^(?:list|show)(?: me)?(?: all)? (?:my |the )?(?:images|pictures)\b", re.I)


def explicit_route(text: str, has_image: bool) -> RouteChoice | None:
    """The choice for a message that names its action by a word no other action uses, else None."""
    if has_image and _UPSCALE.search(text):
        scale = re.search(r"(?:x|by\s+)([234])\b", text.lower())
        return RouteChoice(action="upscale_image", scale=int(scale.group(1)) if scale else 2)
    opened = _OPEN.search(text)
    if opened:
        return RouteChoice(action="open_image", image=int(opened.group(1)))
    if _LIST.search(text.strip()):
        return RouteChoice(action="list_images")
    return None


def change_of(message: str, chosen: str = "") -> str:
    """The change to make: the model's text when it shares a word with the message (a small model
    may echo the state line instead), else the message without a leading 'make it'."""
    from agent.spec_checks import idea_words

    if chosen and idea_words(chosen) & idea_words(message):
        return chosen
    return re.sub(r"^(?:please\s+)?(?:make it|now)\s+", "", message.strip(), flags=re.I) or message.strip()


def offline_route(text: str, has_image: bool) -> RouteChoice:
    """A keyword router for when the model's choice failed: upscale words, a change to the current
    image, else a new idea."""
    explicit = explicit_route(text, has_image)
    if explicit is not None:
        return explicit
    if has_image and _REFINE.search(text.strip()):
        return RouteChoice(action="refine_last", text=change_of(text))
    return RouteChoice(action="create_image", text=idea_of(text))


class Router:
    """Routed mode for one ChatController: chooses the action for a message and runs it on the controller."""

    def __init__(self, chat):
        self.chat = chat

    def route(self, text: str) -> tuple[RouteChoice, str]:
        """(the action for a message, who chose it: "rule", "model" or "offline router"): a message that
        names its action (upscale, enlarge, open image 3, list the images) is routed by that word; any
        other by the model's constrained choice; by the offline keyword router when that call fails
        (the reason is said in the conversation)."""
        from agent.llm import bind_structured, build_chat_model, llm_error, structured_call
        from agent.llm_probe import resolve_method

        import prompts

        chat, state = self.chat, self.chat.state
        explicit = explicit_route(text, state.image_id is not None)
        if explicit is not None:  # the message names the action itself: no model call needed
            return explicit, "rule"
        where = (f"The current image is #{state.image_id} ({state.idea or 'no idea recorded'})."
                 if state.image_id else "There is no image yet.")
        messages = [("system", prompts.read_text("route_system.md", self.chat.settings.home))]
        for shot in _route_examples(chat.settings.home):  # worked exchanges: small models copy the form
            messages += [("human", f"{shot['state']}\nMessage: {shot['message']}"), ("ai", json.dumps(shot["answer"]))]
        messages.append(("human", f"{where}\nMessage: {text}"))

        def choose():  # temperature 0: the same message, the same choice
            model = (chat._chat_model if chat._chat_model is not None else
                     build_chat_model(chat.settings, temperature=0))
            method = resolve_method(chat.settings) if chat._chat_model is None else None  # may probe (once)
            return structured_call(bind_structured(model, RouteChoice, method), RouteChoice, messages)

        try:
            choice, problem, _ = cancellable(chat._call, choose)
        except Cancelled:
            raise
        except Exception as exc:  # the call failed: the offline router still acts
            choice, problem = None, llm_error(exc, chat.settings).message
        if choice is None:
            chat.say("notice", f"The model could not choose an action ({problem}); the offline router took "
                               "the message.")
            return offline_route(text, state.image_id is not None), "offline router"
        return choice, "model"

    def action_for(self, choice: RouteChoice) -> str:
        """The action a routed choice runs: a change asked for with no image yet is a new image."""
        if choice.action in {"refine_last", "edit_image", "upscale_image", "explain_scores"} \
                and self.chat.state.image_id is None:
            return "create_image"  # nothing to change yet: the message is the idea
        if choice.action == "open_image" and not choice.image:
            return "list_images"
        return choice.action

    def turn(self, text: str) -> str:
        """One message of routed mode: route it, run the action, return the reply."""
        choice, _ = self.route(text)
        action, arg = self.action_for(choice), (choice.text or "").strip()
        if action == "create_image":
            return self.chat.create(idea_of(text, arg))
        if action == "refine_last":
            return self.chat.refine(change_of(text, arg))
        if action == "edit_image":
            return self.chat.edit(change_of(text, arg), image=choice.image)
        if action == "upscale_image":
            return self.chat.upscale(image=choice.image, scale=choice.scale or 2)
        if action == "open_image":
            return self.chat.open_image(choice.image)
        if action == "list_images":
            return self.chat.list_images()
        if action == "show_defaults":
            return self.chat.defaults_text()
        if action == "explain_scores":
            return self.chat.explain_scores()
        return arg or "I can draw, refine, edit or upscale images: describe one, or type /help."
