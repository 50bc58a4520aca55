"""The chat controller: one conversation over a Session, with its state, undo, events and persistence, and
the actions that the slash commands, the router and the agent's tools call.

`ChatController` holds no Textual: front ends call `handle(text)` (from a worker thread; it
blocks while images are made) and receive typed events (agent.events: Message, ImageSaved,
StateChanged, ModeChanged, ChatCleared, and the steps and rounds of the running call) through the
`listener` they pass in. Each turn is one agent.events.Call: `cancel()` stops that turn only. State (defaults, the current structured prompt and image, the last round
table) and every message are stored in the gallery database, so `ChatController(session,
chat_id=ID)` resumes a conversation with its images.
"""
from __future__ import annotations

import copy
import math
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from agent.chat import replies
from agent.chat.agent_mode import ToolAgent
from agent.chat.followups import FollowUps
from agent.chat.modes import pick_mode
from agent.chat.refine import apply_fields, rect_mask, refine_spec
from agent.chat.routing import Router
from agent.chat.slash import SlashCommands, _image_id
from agent.chat.state import ChatState, Defaults
from agent.errors import Cancelled, ImagentError, InvalidInput
from agent.events import (Call, ChatCleared, Event, ImageSaved, Message, ModeChanged, StateChanged)
from agent.requests import RunOptions
from tools.limits import check_range
from tools.upscale import DEFAULT_METHOD

Listener = Callable[[Event], None]


# -- the controller ------------------------------------------------------------------------------
class ChatController:
    """One conversation over one Session. Not thread-safe: one `handle` at a time (the UI runs
    it in an exclusive worker); `cancel()` may be called from any thread."""

    def __init__(self, session, *, chat_model=None, chat_id: str | None = None, listener: Listener | None = None,
                 offline: bool = False):
        self.session = session
        self.settings = session.settings
        self.gallery = session.gallery
        self.listener = listener or (lambda event: None)
        self._chat_model = chat_model
        self._followup_model = None   # built on first use from the settings (routed and keyword modes)
        self._undo: list[tuple[str, dict]] = []
        self._call = Call(sink=self.listener)   # the running turn's control (a fresh one per turn)
        self.offline = offline
        self.slash = SlashCommands(self)   # slash commands
        self.router = Router(self)   # routed mode
        self.tool_agent = ToolAgent(self)   # agent mode
        self.followups = FollowUps(self)    # a plain message after a picture changes it (offline mode)
        self.mode, self.mode_reason = pick_mode(self.settings, self._chat_model, self.offline)
        if chat_id:
            row = self.gallery.chat(chat_id)
            if row is None:
                known = ", ".join(c["id"] for c in self.gallery.chats(5)) or "none yet"
                raise InvalidInput(f"No chat with id '{chat_id}'.", f"Recent chats: {known}. "
                                   "Start a new one with `imagent chat`.")
            self.chat_id = chat_id
            self.state = ChatState.from_dict(row.get("state"))
            self.resumed = True
        else:
            self.state = ChatState(defaults=Defaults(style=self.settings.style))
            self.chat_id = self.gallery.start_chat("", self.state.to_dict())
            self.resumed = False

    # -- mode ----------------------------------------------------------------------------------
    def mode_line(self) -> str:
        return self.mode_reason

    def set_mode(self, mode: str) -> str:
        if mode in {"offline", "router"}:
            self.offline = True
        elif mode == "agent":
            self.offline = False
            if self._chat_model is None and not self.settings.llm_model:
                raise InvalidInput("No chat model is configured.",
                                   "Set IMAGENT_LLM_MODEL (and IMAGENT_LLM_BASE_URL for a local server), then restart.")
        else:
            raise InvalidInput(f"Unknown mode '{mode}'.", "Use /mode agent or /mode offline.")
        self.mode, self.mode_reason = pick_mode(self.settings, self._chat_model, self.offline)
        self.listener(ModeChanged(self.mode_reason))
        return self.mode_reason

    # -- events and persistence -------------------------------------------------------------------
    def say(self, role: str, text: str, data: dict | None = None) -> None:
        """Record a message (user, assistant, tool, notice, error) and send it up."""
        self.gallery.add_chat_message(self.chat_id, role, text, data)
        self.listener(Message(role, text, data))

    def _save_state(self) -> None:
        self.gallery.save_chat(self.chat_id, state=self.state.to_dict())
        self.listener(StateChanged(self.state))

    def _checkpoint(self, label: str) -> None:
        self._undo.append((label, copy.deepcopy(self.state.to_dict())))
        del self._undo[:-50]

    def messages(self) -> list[dict]:
        return self.gallery.chat_messages(self.chat_id)

    def cancel(self) -> None:
        """Stop the running turn: an LLM call at once, a generation at its next step (thread-safe)."""
        self._call.stop()

    # -- the entry point ---------------------------------------------------------------------------
    def handle(self, text: str) -> str | None:
        """Handle one user message; returns the reply text ("/quit" returns None).
        Raises ImagentError (after recording it in the conversation) for the front end to show."""
        text = (text or "").strip()
        if not text:
            return ""
        if text in {"/quit", "/exit", "/q"}:
            return None
        if text.startswith("/"):
            return self._turn(text, lambda: self.slash.run(text))
        if self.mode == "agent":
            return self._turn(text, lambda: self.tool_agent.turn(text))
        if self.mode in {"routed", "keywords"}:
            return self._turn(text, lambda: self.router.turn(text))
        return self._turn(text, lambda: self.followups.turn(text))

    def chat_model_for_followups(self):
        """The chat model that reads follow-ups as typed edits (None: the rules do): the one passed in
        or configured, unless the chat is offline."""
        if self.mode not in ("routed", "keywords"):  # offline: rules; agent mode: the model chose the words
            return None
        if self._chat_model is not None or not self.settings.llm_model:
            return self._chat_model
        if self._followup_model is None:
            from agent.llm import build_chat_model

            self._followup_model = build_chat_model(self.settings)
        return self._followup_model

    def is_demo(self) -> bool:
        from agent.render import guess_family

        return guess_family(self.settings.model, self.settings.backends[0]) == "demo"

    def run_edited(self, spec: dict) -> str:
        """Run an edited structured prompt (the side panel's editor), as one turn of the conversation."""
        return self._turn("/run (edited prompt)", lambda: self.rerun_spec(spec))

    def _turn(self, text: str, action: Callable[[], str]) -> str:
        self._call = Call(sink=self.listener)
        self.say("user", text)
        if self.gallery.chat(self.chat_id).get("title") in (None, ""):
            self.gallery.save_chat(self.chat_id, title=text[:60])
        undo_depth = len(self._undo)
        try:
            reply = action()
        except BaseException as exc:
            del self._undo[undo_depth:]  # a failed action changed nothing worth undoing
            if isinstance(exc, Cancelled):
                self.say("notice", "Cancelled. Nothing more was made; your message is kept above.")
            elif isinstance(exc, ImagentError):
                self.say("error", exc.message + (f" {exc.hint}" if exc.hint else ""))
            raise
        if reply:
            self.say("assistant", reply)
        return reply

    # -- actions (shared by the router and the agent's tools) -------------------------------------------
    def create(self, idea: str, *, style: str | None = None) -> str:
        """Run the critique loop on a new idea with the current defaults."""
        self._checkpoint("new image")
        if style:
            from agent.expand import get_style

            get_style(style, home=self.settings.home)
            self.state.defaults.style = style
        return self._run(idea, spec=None)

    def refine(self, words: str, *, changes: dict | None = None) -> str:
        """Change the current structured prompt in words (or by explicit fields) and run again. The
        demo model reads no prompt words beyond its grammar: there the words are read as a
        follow-up (a change of the picture), or refused when they would change nothing it draws."""
        if self.is_demo() and not changes and self.state.image_path:
            fu = self.followups.read(words)
            if fu.changes and {c.kind for c in fu.changes} != {"words"}:
                return self.followups.apply(words, fu.changes)
            if fu.question or fu.new_idea:
                return fu.question or (f"'{words}' reads as a new picture; say it as a message (or "
                                       "'new: ...') to draw it.")
            return self.followups.words(words)
        if self.state.spec is None:
            if self.state.idea:
                self.state.spec = self.session.expand(self.state.idea, style=self.state.defaults.style,
                                                      use_llm=False).spec.model_dump(mode="json")
            else:
                raise InvalidInput("There is nothing to refine yet.", "Describe an image first, e.g. two red circles.")
        self._checkpoint(f"refine: {words}")
        if changes:
            spec, notes = apply_fields(self.state.spec, changes)
        else:
            spec, notes = refine_spec(self.state.spec, words)
        self.say("tool", "refine: " + "; ".join(notes))
        # keep the current image's seed (as A1111 and Fooocus do) unless a seed is set with /seed
        keep = self.state.seed if self.state.defaults.seed is None else None
        return self._run(self.state.idea or spec.get("subject", ""), spec=spec, seed=keep)

    def rerun_spec(self, spec: dict | None = None) -> str:
        """Run again with `spec` (an edited structured prompt) or the current one."""
        spec = spec or self.state.spec
        if not spec:
            raise InvalidInput("There is no structured prompt yet.", "Describe an image first.")
        from agent.schemas import PromptSpec

        try:
            spec = PromptSpec.model_validate(spec).model_dump(mode="json")
        except Exception as exc:  # pydantic ValidationError: say which field
            raise InvalidInput(f"The structured prompt is not valid: {str(exc).splitlines()[0]}",
                               "The subject must not be empty; lists are comma-separated.") from None
        self._checkpoint("run edited prompt")
        return self._run(self.state.idea or spec["subject"], spec=spec)

    def set_spec(self, spec: dict) -> None:
        """Replace the current structured prompt without running (the side panel's editor)."""
        from agent.schemas import PromptSpec

        self._checkpoint("edit prompt")
        self.state.spec = PromptSpec.model_validate(spec).model_dump(mode="json")
        self._save_state()

    def edit(self, words: str = "", *, image: int | str | None = None, mask: str | None = None,
             rect: str | None = None, strength: float = 0.6) -> str:
        """img2img on an image (default: the current one), or inpaint a mask file / rectangle."""
        path, record = self._image(image)
        if mask and rect:
            raise InvalidInput("Give either mask=PATH or rect=X,Y,W,H, not both.")
        base_prompt = (record.get("params") or {}).get("prompt") or self.state.idea or ""
        inpaint = bool(mask or rect)
        prompt = (words or base_prompt) if inpaint else ", ".join(p for p in (base_prompt, words) if p)
        if not prompt:
            raise InvalidInput("Say what the edit should show.", "For example: /edit a blue square rect=8,8,16,16")
        mask_path = mask
        if rect:
            from tools.images import atomic_save_png, load_image, unique_path

            size = load_image(path).size
            mask_path = str(atomic_save_png(rect_mask(size, rect), unique_path(self.settings.home / "masks", "rect")))
        d = self.state.defaults
        check_range("strength", strength)  # the front doors checked it (agent.chat.actions); 1/strength below
        steps = d.steps or self.session.model_defaults()["steps"]
        # img2img runs steps x strength steps: at least one
        fields_ = {"strength": strength, "steps": max(steps, math.ceil(1 / strength - 1e-9))}
        if d.seed is not None:
            fields_["seed"] = d.seed
        req, inputs = self.session.edit_request(prompt, path, mask_path=mask_path, **fields_)
        self._checkpoint("edit")
        what = "inpaint" if inpaint else "img2img"
        self.say("tool", f"{what} on image #{self._id_of(path)}: {prompt}")
        outcome = self.session.generate(req, idea=self.state.idea, spec=self.state.spec, call=self._call,
                                        kind="edit", inputs=inputs, chat_id=self.chat_id)
        best = outcome.images[0]
        self._set_current(best.image_id, best.path, best.seed)
        self.state.rounds, self.state.run_id = [], outcome.run_id
        self._save_state()
        return f"Edited ({what}): image **#{best.image_id}**, seed {best.seed}."

    def upscale(self, *, image: int | str | None = None, scale: int = 2, method: str = DEFAULT_METHOD) -> str:
        path, _ = self._image(image)
        self._checkpoint("upscale")
        self.say("tool", f"upscale x{scale} ({method}) of image #{self._id_of(path)}")
        outcome = self.session.upscale(path, scale=scale, method=method, call=self._call)
        self._set_current(outcome.image_id, outcome.path, self.state.seed)
        self._save_state()
        w, h = outcome.record["width"], outcome.record["height"]
        return f"Upscaled x{scale} with {method}: image **#{outcome.image_id}** ({w}x{h})."

    def set_defaults(self, **values) -> str:
        """Change defaults: style, size ('WxH'|'native'), steps, seed (int|None), rounds, candidates, raw."""
        d = self.state.defaults.updated(home=self.settings.home, **values)
        self._checkpoint("change defaults")
        self.state.defaults = d
        self._save_state()
        return self.defaults_text()

    def edit_checklist(self, require=(), drop=()) -> str:
        """Correct the checklist the next run of the current idea checks (agent.checklist_edits.edit_checklist:
        `require` texts added, `drop` ids or numbers removed); nothing given: show it. Kept for
        this idea's runs (refine, /run) until a new idea."""
        if not self.state.idea:
            raise InvalidInput("There is no idea yet whose checklist to change.",
                               "Describe an image first (e.g. two red circles), then /require or /drop.")
        subject = (self.state.spec or {}).get("subject")
        checklist, notes = self.session.checklist(self.state.idea, subject, given=self.state.checklist,
                                                  require=tuple(require or ()), drop=tuple(drop or ()))
        if require or drop:
            self._checkpoint("edit checklist")
            self.state.checklist = checklist.to_json()
            self._save_state()
        return replies.checklist_text(self.state.idea, checklist.to_json(), notes)

    def defaults_text(self) -> str:
        d = self.state.defaults
        return replies.defaults_text(d, d.steps or self.session.model_defaults()["steps"])

    def list_images(self, limit: int = 20) -> str:
        ids = list(reversed(self.state.images))[:limit]
        return replies.images_table([(image_id, self.gallery.image(image_id)) for image_id in ids],
                                    self.state.image_id)

    def open_image(self, image: int | str) -> str:
        image_id = _image_id(image)
        row = self.gallery.image(image_id)
        if row is None:
            raise InvalidInput(f"There is no image #{image_id} in the gallery.", "/images lists this chat's images.")
        if not Path(row["path"]).is_file():
            raise InvalidInput(f"Image #{image_id} was recorded but its file {row['path']} is gone.",
                               "Pick another with /images.")
        self._checkpoint(f"open #{image_id}")
        record = row.get("record") or {}
        self.state.image_id, self.state.image_path, self.state.seed = image_id, row["path"], row.get("seed")
        if record.get("spec"):
            self.state.spec = record["spec"]
        if record.get("idea"):
            self.state.idea = record["idea"]
        kept = (record.get("loop") or {}).get("checklist") or record.get("checklist") or {}
        self.state.checklist = kept if str(kept.get("source", "")).endswith("+edited") else None  # its idea's
        if image_id not in self.state.images:
            self.state.images.append(image_id)
        self._save_state()
        self.listener(ImageSaved(image_id, row["path"]))
        return f"Opened image **#{image_id}** (seed {row.get('seed')}). /refine or /edit work on it now."

    def explain_scores(self) -> str:
        return replies.scores_text(self.state.rounds, self.state.threshold, self.state.checks)

    def save_image(self, dest: str) -> str:
        if not self.state.image_path:
            raise InvalidInput("There is no current image to save.", "Make one first, or /open #ID.")
        if not dest:
            raise InvalidInput("Where to?", "For example: /save ~/Pictures/cat.png")
        target = Path(dest).expanduser()
        if target.is_dir():
            target = target / Path(self.state.image_path).name
        suffix = Path(self.state.image_path).suffix.lower() or ".png"  # .png, or .jpg/.webp (--format)
        if target.suffix.lower() != suffix:
            target = target.with_suffix(suffix)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(self.state.image_path, target)  # a copy keeps the metadata
        return f"Saved image #{self.state.image_id} to `{target}`."

    def undo(self) -> str:
        if not self._undo:
            return "Nothing to undo."
        label, snapshot = self._undo.pop()
        made = self.state.images  # images stay in the chat's list; undo changes what is current
        self.state = ChatState.from_dict(snapshot)
        self.state.images = made
        self._save_state()
        if self.state.image_path:
            self.listener(ImageSaved(self.state.image_id, self.state.image_path))
        return f"Undid {label}." + (f" Current image: #{self.state.image_id}." if self.state.image_id else "")

    def new_chat(self) -> str:
        defaults = copy.deepcopy(self.state.defaults)
        self.state = ChatState(defaults=defaults)
        self._undo.clear()
        self.chat_id = self.gallery.start_chat("", self.state.to_dict())
        self.tool_agent.reset()
        self.listener(ChatCleared(self.chat_id))
        self._save_state()
        return f"New conversation **{self.chat_id}** (defaults kept)."

    # -- running the loop ---------------------------------------------------------------------------
    def _run(self, idea: str, *, spec: dict | None, seed: int | None = None, checklist: dict | None = None,
             start: str | None = None, extra: dict | None = None, hint: str | None = None) -> str:
        from agent.expand import check_idea

        idea = check_idea(idea)
        d = self.state.defaults
        if checklist is None:
            checklist = self.state.checklist if idea == self.state.idea else None  # /require, /drop: this idea's
        self.say("tool", f"run: {idea}" + (" (edited prompt)" if spec else "") +
                 (" (edited checklist)" if checklist else "") + f" · {d.rounds} round(s) x {d.candidates}")
        fields = d.request_fields(self.settings)
        if seed is not None:
            fields["seed"] = seed
        options = RunOptions(rounds=d.rounds, candidates=d.candidates, style=d.style, raw=d.raw,
                             request_fields=fields, spec=spec, checklist=checklist, start=start, extra=extra)
        outcome = self.session.run(idea, options, call=self._call, chat_id=self.chat_id)
        best = outcome.best
        self.state.idea, self.state.checklist = idea, checklist
        self.state.spec = outcome.spec
        self.state.run_id = outcome.run_id
        self.state.rounds = [_plain(r) for r in outcome.rounds]
        self.state.threshold = outcome.threshold["target"]
        self.state.checks = list(outcome.checks)
        self._set_current(best.image_id, best.path, best.seed)
        self._save_state()
        return replies.run_reply(best.image_id, best.seed, outcome.score, len(self.state.rounds), outcome.met,
                                 self.state.checks, **({"hint": hint} if hint else {}))

    def _set_current(self, image_id: int, path, seed: int | None) -> None:
        self.state.image_id, self.state.image_path, self.state.seed = image_id, str(path), seed
        if image_id not in self.state.images:
            self.state.images.append(image_id)
        self.listener(ImageSaved(image_id, str(path)))

    def _image(self, image) -> tuple[str, dict]:
        if image in (None, ""):
            if not self.state.image_path:
                raise InvalidInput("There is no current image.", "Make one first, or /open #ID.")
            row = self.gallery.image(self.state.image_id) if self.state.image_id else None
            return self.state.image_path, (row or {}).get("record") or {}
        text = str(image).strip()
        if text.lstrip("#").isdigit():
            row = self.gallery.image(int(text.lstrip("#")))
            if row is None:
                raise InvalidInput(f"There is no image {text}.", "/images lists this chat's images.")
            return row["path"], row.get("record") or {}
        path = Path(text).expanduser()
        if not path.is_file():
            raise InvalidInput(f"No image at {text}.", "Give an image number (#12) or a PNG path.")
        return str(path), {}

    def _id_of(self, path) -> str:
        if self.state.image_path and str(path) == self.state.image_path and self.state.image_id:
            return str(self.state.image_id)
        return Path(str(path)).name


def _plain(record) -> dict:
    if isinstance(record, dict):
        return record
    if hasattr(record, "model_dump"):
        return record.model_dump(mode="json")
    if hasattr(record, "__dataclass_fields__"):
        return asdict(record)
    return dict(record)
