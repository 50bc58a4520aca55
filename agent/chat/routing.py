"""Routed mode: a message becomes one constrained JSON choice of action (RouteChoice) from the model, or from
the offline keyword router when that call fails (or in keyword mode: a model that failed the routing probe),
and the choice runs as one of the controller's actions.

A message that names its action by a word no other action uses (upscale, open image 3, list the images)
is routed by that word without a model call (`explicit_route`)."""
from __future__ import annotations

import json
import re

from agent.chat.actions import NAMES, parse, run_action
from agent.chat.agent_mode import cancellable
from agent.errors import Cancelled, LLMError

# every chat action but set_defaults, edit_checklist (slash commands' jobs) and change_picture (a refine of
# the current picture reaches it on the demo model), and a reply in words
ROUTE_ACTIONS = tuple(name for name in NAMES if name not in {"set_defaults", "edit_checklist", "change_picture"}) \
    + ("reply",)


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
                     r"brighter|darker)|\b(?:make|turn|change|give)\b.*\b(?:it|the (?:colou?rs?|image|picture|"
                     r"light(?:ing)?|background|sky))\b", re.I)


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


def effective_action(choice: RouteChoice, has_image: bool) -> str:
    """The action a choice runs: a change asked for with no image yet is a new image (the message is
    the idea), an open_image with no number lists the images."""
    if choice.action in {"refine_last", "edit_image", "upscale_image", "explain_scores"} and not has_image:
        return "create_image"
    if choice.action == "open_image" and not choice.image:
        return "list_images"
    return choice.action


def route_messages(where: str, text: str, home=None) -> list:
    """The routing call's messages: the system prompt, the worked exchanges, then the state and the message."""
    import prompts

    messages = [("system", prompts.read_text("route_system.md", home))]
    for shot in _route_examples(home):  # worked exchanges: small models copy the form
        messages += [("human", f"{shot['state']}\nMessage: {shot['message']}"), ("ai", json.dumps(shot["answer"]))]
    messages.append(("human", f"{where}\nMessage: {text}"))
    return messages


def model_choice(settings, chat_model, where: str, text: str):
    """(the model's RouteChoice or None, what was wrong, the raw answer): one constrained call, at
    temperature 0 (the same message, the same choice)."""
    from agent.llm import bind_structured, build_chat_model, structured_call
    from agent.llm_probe import resolve_method

    model = chat_model if chat_model is not None else build_chat_model(settings, temperature=0)
    method = resolve_method(settings) if chat_model is None else None  # may probe (once)
    return structured_call(bind_structured(model, RouteChoice, method), RouteChoice,
                           route_messages(where, text, settings.home))


# messages whose action is plain (none of them a worked exchange): a model that routes one of them
# wrongly would route worse than the keyword router, so the chat does not let it choose
NO_IMAGE = "There is no image yet."
ROUTE_PROBES = ((NO_IMAGE, "draw a green square", "create_image"),
                ("The current image is #1 (a green square).", "make it darker", "refine_last"),
                ("The current image is #1 (a green square).", "a yellow boat on the sea", "create_image"))


def probe_routing(settings) -> dict:
    """{"ok": every probe message routed right, "right": "k/n", "note", "seconds"}: the routed mode's
    call on ROUTE_PROBES. LLMError when the server cannot be reached or does not answer in time
    (nothing is cached then)."""
    import time

    from agent.llm import llm_error

    t0, right, wrong = time.perf_counter(), 0, []
    for where, text, want in ROUTE_PROBES:
        try:
            choice, problem, _ = model_choice(settings, None, where, text)
        except Exception as exc:
            import openai

            if isinstance(exc, (openai.APIConnectionError, LLMError)):  # unreachable or too slow: not a finding
                raise exc if isinstance(exc, LLMError) else llm_error(exc, settings) from None
            choice, problem = None, llm_error(exc, settings).message
        got = (effective_action(choice, where != NO_IMAGE) if choice is not None
               else f"no choice ({problem[:60]})")
        right += got == want
        if got != want:
            wrong.append(f"{text!r}: {got}, not {want}")
    n = len(ROUTE_PROBES)
    return {"ok": right == n, "right": f"{right}/{n}", "seconds": round(time.perf_counter() - t0, 2),
            "note": "routes the test messages right" if right == n else "; ".join(wrong)}


def route_support(settings) -> tuple[bool, str]:
    """(whether the model routes the probe messages right, why not), probed once and cached with the
    server's other findings (agent.llm_probe)."""
    from agent.llm_probe import finding

    found = finding(settings, "routing", lambda: probe_routing(settings))
    return bool(found.get("ok")), f"{found.get('right', '?')} test messages routed right: {found.get('note', '')}"


class Router:
    """Routed mode for one ChatController: chooses the action for a message and runs it on the controller.
    In keyword mode (a model that routed the probe messages wrongly) the offline router chooses."""

    def __init__(self, chat):
        self.chat = chat

    def route(self, text: str) -> tuple[RouteChoice, str]:
        """(the action for a message, who chose it: "rule", "model" or "offline router"): a message that
        names its action (upscale, enlarge, open image 3, list the images) is routed by that word; any
        other by the model's constrained choice; by the offline keyword router in keyword mode or when
        that call fails (the reason is said in the conversation)."""
        from agent.llm import llm_error

        chat, state = self.chat, self.chat.state
        explicit = explicit_route(text, state.image_id is not None)
        if explicit is not None:  # the message names the action itself: no model call needed
            return explicit, "rule"
        if chat.mode == "keywords":
            return offline_route(text, state.image_id is not None), "offline router"
        where = (f"The current image is #{state.image_id} ({state.idea or 'no idea recorded'})."
                 if state.image_id else NO_IMAGE)
        try:
            choice, problem, _ = cancellable(chat._call, lambda: model_choice(chat.settings, chat._chat_model,
                                                                              where, text))
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
        """The action a routed choice runs (effective_action with this chat's current image)."""
        return effective_action(choice, self.chat.state.image_id is not None)

    def turn(self, text: str) -> str:
        """One message of routed mode: route it, run the action, return the reply."""
        choice, _ = self.route(text)
        action, arg = self.action_for(choice), (choice.text or "").strip()
        if action == "reply":
            return arg or "I can draw, refine, edit or upscale images: describe one, or type /help."
        values = {"create_image": lambda: {"idea": idea_of(text, arg)},
                  "refine_last": lambda: {"instruction": change_of(text, arg)},
                  "edit_image": lambda: {"instruction": change_of(text, arg), "image": choice.image},
                  "upscale_image": lambda: {"image": choice.image, "scale": choice.scale or 2},
                  "open_image": lambda: {"image": choice.image}}.get(action, dict)()
        return run_action(self.chat, action, parse(action, **values))
