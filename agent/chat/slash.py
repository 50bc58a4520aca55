"""The slash commands: their list and help, and the parser that turns a command's text into one controller
action call (`/size 512x512` -> controller.set_defaults(size="512x512"))."""
from __future__ import annotations

import functools
import re
import shlex
from collections.abc import Mapping

from agent.chat import replies
from agent.chat.actions import catalogue, field_help, parse, run_action
from agent.chat.state import _int
from agent.errors import InvalidInput


def _help() -> dict[str, tuple[str, str]]:
    """The commands, their argument syntax and their help: an action's help and a setting's
    description are agent.chat.actions' (the agent's tools show the same words)."""
    actions = catalogue()
    settings = actions["set_defaults"].input

    def _action(name: str) -> str:
        return actions[name].help

    def _setting(name: str, more: str = "") -> str:
        return (field_help(settings, name) + (" " + more if more else "")).strip()

    return {
        "help": ("", "This list."),
        "style": ("[NAME|off]", _setting("style", "No name: list the presets.")),
        "seed": ("[N|random]", _setting("seed").replace("-1", "random")),
        "steps": ("[N]", _setting("steps")),
        "size": ("[WxH|native]", _setting("size")),
        "rounds": ("[N]", _setting("rounds")),
        "candidates": ("[N]", _setting("candidates")),
        "raw": ("[on|off]", _setting("raw")),
        "lora": ("[NAME[:W] ...|off]", _setting("lora", "E.g. /lora demo-tall:0.8.")),
        "control": ("[KIND:IMAGE[:S] [KIND=MODEL] ...|off]",
                    _setting("control", "E.g. /control canny:photo.png:0.8 canny=ORG/CONTROLNET.")),
        "defaults": ("", _action("show_defaults")),
        "refine": ("WORDS", _action("refine_last")),
        "run": ("", "Run the current structured prompt again (after editing it); /run WORDS: a new idea."),
        "require": ("[WORDS]", "Add a requirement to the checklist the next run of this idea checks, e.g. "
                               "/require a blue square left of a red circle; no words: show the checklist."),
        "drop": ("[ID ...]", "Remove requirements from that checklist by id or number, e.g. /drop o2 "
                             "(an object's relations go too); no id: show the checklist."),
        "edit": ("[#ID] WORDS [mask=PATH|rect=X,Y,W,H] [strength=S]", _action("edit_image")),
        "upscale": ("[#ID] [x2|x3|x4] [method=NAME]", _action("upscale_image")),
        "images": ("", _action("list_images")),
        "open": ("#ID", _action("open_image")),
        "scores": ("", _action("explain_scores")),
        "prompt": ("", "Show the current structured prompt."),
        "save": ("PATH", "Copy the current image to PATH."),
        "undo": ("", "Undo the last change (defaults, prompt, current image)."),
        "new": ("", "Start a new conversation."),
        "mode": ("[agent|offline]", "Show or switch the mode."),
        "quit": ("", "Leave."),
    }


class _CommandHelp(Mapping):
    """{command: (argument syntax, help)}: the names are known at once, the help texts are built on
    first use (from the actions' input models, which are not built at the chat UI's start)."""

    NAMES = ("help", "style", "seed", "steps", "size", "rounds", "candidates", "raw", "lora", "control",
             "defaults", "refine", "run", "require", "drop", "edit", "upscale", "images", "open", "scores",
             "prompt", "save", "undo", "new", "mode", "quit")

    @functools.cached_property
    def _built(self) -> dict:
        built = _help()
        assert tuple(built) == self.NAMES
        return built

    def __getitem__(self, name: str):
        return self._built[name]

    def __iter__(self):
        return iter(self.NAMES)

    def __len__(self) -> int:
        return len(self.NAMES)

    def __contains__(self, name) -> bool:
        return name in self.NAMES


COMMAND_HELP = _CommandHelp()
COMMANDS = tuple(COMMAND_HELP)


def help_text() -> str:
    lines = ["**Commands** (a plain message is an idea to draw)", ""]
    lines += [f"- `/{name}{(' ' + args) if args else ''}`: {what}" for name, (args, what) in COMMAND_HELP.items()]
    return "\n".join(lines)  # key hints are the front end's (tui.app adds its keys)


class SlashCommands:
    """The slash commands of one ChatController: `run("/name args")` calls `_cmd_name(args)`, which parses the
    arguments and calls one of the controller's actions."""

    def __init__(self, chat):
        self.chat = chat

    def run(self, text: str) -> str:
        """Run a slash command (text starts with "/") on the controller; returns the reply."""
        name, _, rest = text[1:].partition(" ")
        name, rest = name.lower(), rest.strip()
        if name not in COMMAND_HELP:
            close = [c for c in COMMANDS if c.startswith(name[:2])] if name else []
            raise InvalidInput(f"Unknown command /{name}.",
                               (f"Did you mean /{close[0]}? " if close else "") + "Type /help for the list.")
        handler = getattr(self, f"_cmd_{name}")
        return handler(rest)

    def _cmd_help(self, rest: str) -> str:
        return help_text()

    def _cmd_style(self, rest: str) -> str:
        if not rest:
            from agent.expand import load_styles

            return replies.style_text(self.chat.state.defaults.style, load_styles(self.chat.settings.home))
        return self.chat.set_defaults(style=rest)

    def _cmd_seed(self, rest: str) -> str:
        return self.chat.set_defaults(seed=rest or "random")

    def _cmd_steps(self, rest: str) -> str:
        return self.chat.set_defaults(steps=rest) if rest else self.chat.defaults_text()

    def _cmd_size(self, rest: str) -> str:
        return self.chat.set_defaults(size=rest) if rest else self.chat.defaults_text()

    def _cmd_rounds(self, rest: str) -> str:
        return self.chat.set_defaults(rounds=rest) if rest else self.chat.defaults_text()

    def _cmd_candidates(self, rest: str) -> str:
        return self.chat.set_defaults(candidates=rest) if rest else self.chat.defaults_text()

    def _cmd_lora(self, rest: str) -> str:
        return self.chat.set_defaults(lora=rest) if rest else self.chat.defaults_text()

    def _cmd_control(self, rest: str) -> str:
        return self.chat.set_defaults(control=rest) if rest else self.chat.defaults_text()

    def _cmd_raw(self, rest: str) -> str:
        return self.chat.set_defaults(raw=rest if rest else not self.chat.state.defaults.raw)

    def _cmd_defaults(self, rest: str) -> str:
        return self.chat.defaults_text()

    def _cmd_refine(self, rest: str) -> str:
        return run_action(self.chat, "refine_last", parse("refine_last", instruction=rest))

    def _cmd_run(self, rest: str) -> str:
        if rest:
            return self.chat.create(rest)
        return self.chat.rerun_spec()

    def _cmd_require(self, rest: str) -> str:
        return run_action(self.chat, "edit_checklist", parse("edit_checklist", require=[rest] if rest else None))

    def _cmd_drop(self, rest: str) -> str:
        ids = rest.replace(",", " ").split()
        return run_action(self.chat, "edit_checklist", parse("edit_checklist", drop=ids or None))

    def _cmd_edit(self, rest: str) -> str:
        words, opts = _options(rest, {"mask", "rect", "strength", "image"})
        image = opts.get("image")
        if words and re.fullmatch(r"#\d+", words[0]):
            image = words.pop(0)
        inp = parse("edit_image", instruction=" ".join(words), image=_image_id(image) if image else None,
                    mask=opts.get("mask"), rect=opts.get("rect"), strength=_float(opts.get("strength"), "strength"))
        return run_action(self.chat, "edit_image", inp)

    def _cmd_upscale(self, rest: str) -> str:
        words, opts = _options(rest, {"method", "scale", "image"})
        image, scale = opts.get("image"), opts.get("scale", "2")
        for w in words:
            if re.fullmatch(r"#?\d+", w) and w.startswith("#"):
                image = w
            elif re.fullmatch(r"x?\d", w.lower()):
                scale = w.lower().lstrip("x")
            else:
                raise InvalidInput(f"/upscale does not understand '{w}'.", "Try /upscale x2, /upscale #12 x4 method=lanczos.")
        inp = parse("upscale_image", image=_image_id(image) if image else None, scale=_int(scale, "scale"),
                    method=opts.get("method"))
        return run_action(self.chat, "upscale_image", inp)

    def _cmd_images(self, rest: str) -> str:
        return self.chat.list_images()

    def _cmd_open(self, rest: str) -> str:
        if not rest:
            raise InvalidInput("Which image?", "Give its number, e.g. /open #3 (/images lists them).")
        return run_action(self.chat, "open_image", parse("open_image", image=_image_id(rest)))

    def _cmd_scores(self, rest: str) -> str:
        return self.chat.explain_scores()

    def _cmd_prompt(self, rest: str) -> str:
        return replies.prompt_text(self.chat.state.spec)

    def _cmd_save(self, rest: str) -> str:
        return self.chat.save_image(rest)

    def _cmd_undo(self, rest: str) -> str:
        return self.chat.undo()

    def _cmd_new(self, rest: str) -> str:
        return self.chat.new_chat()

    def _cmd_mode(self, rest: str) -> str:
        return self.chat.set_mode(rest.lower()) if rest else self.chat.mode_line()

    def _cmd_quit(self, rest: str) -> str:  # the front end leaves before this is reached
        return "Bye."


def _options(rest: str, known: set[str]) -> tuple[list[str], dict]:
    try:
        tokens = shlex.split(rest)
    except ValueError as exc:
        raise InvalidInput(f"Cannot read the arguments ({exc}).", "Close the quotes.") from None
    words, opts = [], {}
    for tok in tokens:
        key, eq, value = tok.partition("=")
        if eq and key.lower() in known:
            opts[key.lower()] = value
        else:
            words.append(tok)
    return words, opts


def _float(value, name: str) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        raise InvalidInput(f"{name} '{value}' is not a number.", f"Use e.g. {name}=0.6.", param=name) from None


def _image_id(value) -> int:
    text = str(value).strip().lstrip("#")
    if not text.isdigit():
        raise InvalidInput(f"'{value}' is not an image number.", "Use e.g. /open #3 (/images lists them).")
    return int(text)
