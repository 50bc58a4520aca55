"""`imagent chat`: the Textual app over agent.chat.ChatController, drawing its typed events and sending it the user's messages.

Built by one factory, `make_app(session, ...)`, shared by the CLI and the tests. The controller
does the work in a thread worker (the event loop never blocks on a model); what it reports comes
back as `ChatUpdate` messages (messages go up), and the app calls the controller's methods
(method calls go down). Only Textual is imported here at module level; the chat agent, LangChain
and the pixel tools load on first use inside the worker.
"""
from __future__ import annotations

import os
import threading
from functools import partial
from pathlib import Path
from typing import Iterable

from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Label, ProgressBar, Static, TextArea

from agent import events as ev
from agent.chat import COMMAND_HELP, ChatController, help_text
from agent.errors import Cancelled, ImagentError
from agent.outcomes import RoundRow
from tools.generate import printable
from tui.panel import params_text, spec_to_text, text_to_spec
from tui.widgets import ChatUpdate, JobDone, LogLine, PromptInput, SlashSuggester

KEYS = "Keys: Esc cancels a running generation, Ctrl+P opens the command palette."


class ImagentApp(App):
    CSS_PATH = "app.tcss"
    TITLE = "imagent"
    BINDINGS = [
        Binding("escape", "cancel", "Cancel", priority=True),
        Binding("f1", "help", "Help"),
        Binding("f2", "images", "Images"),
        Binding("f3", "scores", "Scores"),
        Binding("f4", "edit_prompt", "Edit prompt"),
        Binding("f5", "run_prompt", "Run prompt"),
        Binding("f6", "undo", "Undo"),
        Binding("ctrl+n", "new_chat", "New chat"),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    def __init__(self, session, *, chat_model=None, chat_id: str | None = None, image_widget=None,
                 offline: bool = False, styles=None) -> None:
        super().__init__()
        self.session = session
        self.controller = ChatController(session, chat_model=chat_model, chat_id=chat_id,
                                         listener=self._from_controller, offline=offline)
        self.image_widget = image_widget
        self.busy = False
        self._styles = styles

    # -- layout ------------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="◆")
        with Horizontal(id="body"):
            with Vertical(id="main"):
                yield VerticalScroll(id="log", can_focus=False)
                with Vertical(id="progress"):
                    with Horizontal(classes="bar"):
                        yield Label("round", classes="bar-label")
                        yield ProgressBar(id="rounds", show_eta=False)
                    with Horizontal(classes="bar"):
                        yield Label("step", classes="bar-label")
                        yield ProgressBar(id="steps", show_eta=False)
                yield Static("", id="status")
                yield PromptInput(id="prompt", placeholder="Describe an image, or /help",
                                  suggester=SlashSuggester(self._styles, home=self.controller.settings.home))
            with Vertical(id="side"):
                yield Label("Structured prompt  [dim](F4 edit · F5 run)[/]", classes="side-title")
                yield TextArea(id="spec", soft_wrap=True, show_line_numbers=False)
                yield Label("Parameters", classes="side-title")
                yield Static("", id="params")
                yield Label("Rounds", classes="side-title")
                yield DataTable(id="table", cursor_type="none", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = self.controller.mode_line().split(":")[0]
        table = self.query_one("#table", DataTable)
        table.can_focus = False
        table.add_columns("#", "change", "scores", "best", "checks")
        self.query_one("#progress").visible = False
        self._notice(self.controller.mode_line())
        if self.controller.resumed:
            self._replay()
        self._show_state()
        self._set_status()
        self.query_one("#prompt", PromptInput).focus()
        self.set_timer(0.5, self._preload)

    def _preload(self) -> None:
        """Import what the first reply needs in the background, once the prompt is up."""
        def load() -> None:
            import textual.widgets._markdown  # noqa: F401

        threading.Thread(target=load, name="imagent-preload", daemon=True).start()

    # -- helpers that draw ---------------------------------------------------------------------------
    @property
    def log_view(self) -> VerticalScroll:
        return self.query_one("#log", VerticalScroll)

    def _mount_log(self, widget) -> None:
        self.log_view.mount(widget)
        self.log_view.scroll_end(animate=False)

    def _notice(self, text: str) -> None:
        self._mount_log(LogLine(printable(text), classes="notice", markup=False))

    def _add_message(self, role: str, text: str) -> None:
        text = printable(text)  # the user's, the model's and tools' text: no terminal escapes reach the screen
        if role == "assistant":
            from textual.widgets import Markdown  # markdown-it is slow to import: not before the first reply

            self._mount_log(Markdown(text, classes="assistant"))
        elif role == "user":
            self._mount_log(LogLine(f"› {text}", classes="user", markup=False))
        elif role == "tool":
            self._mount_log(LogLine(f"⚙ {text}", classes="tool", markup=False))
        elif role == "error":
            self._mount_log(LogLine(f"✗ {text}", classes="error", markup=False))
        else:
            self._mount_log(LogLine(text, classes="notice", markup=False))

    def _add_image(self, image_id, path: str) -> None:
        if not Path(path).is_file():
            self._notice(f"(image #{image_id} is missing on disk)")
            return
        box = Vertical(classes="preview")
        self._mount_log(box)
        box.mount(self._image(path))
        box.mount(Label(f"image #{image_id}", classes="caption"))
        self.log_view.scroll_end(animate=False)

    def _image(self, path: str):
        widget = self.image_widget
        if widget is None:
            from textual_image.widget import HalfcellImage as widget
        return widget(path, classes="picture")

    def _replay(self) -> None:
        for m in self.controller.messages():
            self._add_message(m["role"], m["content"])
        state = self.controller.state
        if state.image_path:
            self._add_image(state.image_id, state.image_path)
        self._notice(f"Resumed conversation {self.controller.chat_id}.")

    def _show_state(self) -> None:
        state = self.controller.state
        area = self.query_one("#spec", TextArea)
        if not area.has_focus:
            area.text = spec_to_text(state.spec)
        self.query_one("#params", Static).update(params_text(self.controller))
        self._fill_table(state.rounds)

    def _fill_table(self, rounds: list[dict]) -> None:
        table = self.query_one("#table", DataTable)
        table.clear()
        for r in rounds:
            self._table_row(table, r)

    @staticmethod
    def _table_row(table: DataTable, r: dict) -> None:
        row = RoundRow.of(r)
        table.add_row(str(row.round), printable(row.change[:22], keep=""), row.scores_text(2, " ", "-"),
                      row.best_text(), row.checks_text())

    def _set_status(self, text: str | None = None) -> None:
        if text is None:
            text = ("working… Esc cancels" if self.busy else
                    f"ready · {self.controller.mode_line().split(':')[0]} · /help, Ctrl+P for actions")
        self.query_one("#status", Static).update(text)

    # -- events from the controller (posted from the worker thread) -----------------------------------
    def _from_controller(self, event: ev.Event) -> None:
        self.post_message(ChatUpdate(event))

    def on_chat_update(self, message: ChatUpdate) -> None:
        match message.event:
            case ev.Message(role=role, text=text) if role != "user":  # the user's line is drawn at once, on submit
                self._add_message(role, text)
            case ev.ImageSaved(image_id=image_id, path=path):
                self._add_image(image_id, path)
            case ev.StateChanged():
                self._show_state()
            case ev.Step(done=done, total=total):
                self._bar("#steps", done, total)
            case ev.RoundStarted(round=r, rounds=n):
                if r == 1:
                    self.query_one("#table", DataTable).clear()
                self._bar("#rounds", r - 1, n)
                self._bar("#steps", 0, 1)
                self._set_status(f"round {r}/{n} · Esc cancels")
            case ev.RoundFinished(round=r, rounds=n, row=row):
                self._table_row(self.query_one("#table", DataTable), dict(row))
                self._bar("#rounds", r, n)
            case ev.LoopFinished(rounds=n):
                self._bar("#rounds", n, n)
            case ev.ModeChanged(line=line):
                self.sub_title = line.split(":")[0]
                self._set_status()
            case ev.ChatCleared():
                self.log_view.remove_children()
                self._notice(self.controller.mode_line())

    def _bar(self, which: str, done: int, total: int) -> None:
        self.query_one("#progress").visible = True  # shown by the first progress: quick commands do not flicker
        bar = self.query_one(which, ProgressBar)
        if not bar.size.width:  # just shown, not laid out yet: a bar rounds its value to its width
            self.call_after_refresh(self._bar, which, done, total)
            return
        bar.update(total=max(1, total), progress=done)

    # -- input ---------------------------------------------------------------------------------------
    @on(Input.Submitted, "#prompt")
    def on_prompt_submitted(self, event: Input.Submitted) -> None:
        self.submit(event.value)

    def submit(self, text: str) -> None:
        text = text.strip()
        if not text:
            return
        prompt = self.query_one("#prompt", PromptInput)
        if text.split(" ")[0] in {"/quit", "/exit", "/q"}:
            self.exit()
            return
        if self.busy:
            self.notify("Still working on the last message; your text is kept. Esc cancels the running job.",
                        title="Busy", severity="warning")
            return
        prompt.remember(text)
        prompt.value = ""
        self._add_message("user", text)
        self._start(text, partial(self.controller.handle, text))

    def _start(self, text: str, job) -> None:
        self.busy = True
        for bar in self.query(ProgressBar):
            bar.update(total=1, progress=0)
        self._set_status()
        self._work(text, job)

    @work(thread=True, exclusive=True, group="chat")
    def _work(self, text: str, job) -> None:
        _yield_cpu_to_the_ui()
        try:
            reply = job()
        except BaseException as exc:  # the UI shows every failure; none is swallowed
            self.post_message(JobDone(text, None, exc))
            return
        self.post_message(JobDone(text, reply, None))

    def on_job_done(self, message: JobDone) -> None:
        self.busy = False
        self.query_one("#progress").visible = False
        self._set_status()
        prompt = self.query_one("#prompt", PromptInput)
        exc = message.error
        if exc is not None:
            if not prompt.value and not message.text.startswith("/run"):
                prompt.value = message.text  # nothing the user typed is lost: Enter sends it again,
                prompt.select_all()          # and typing replaces it (it is not appended to)
            if isinstance(exc, Cancelled):
                self.notify("Stopped. Your message is back in the input; Enter runs it again.", title="Cancelled")
            elif isinstance(exc, ImagentError):
                self.notify(exc.hint or "Fix the input and press Enter again.", title=exc.message,
                            severity="error", timeout=10)
            else:
                self.notify(f"{type(exc).__name__}: {exc}. This is a bug in imagent; your message is kept. "
                            "Run with IMAGENT_DEBUG=1 for details.", title="Internal error", severity="error",
                            timeout=15)
                self._add_message("error", f"internal error: {type(exc).__name__}: {exc}")
        elif message.reply is None:
            self.exit()
        if not isinstance(self.focused, TextArea):
            prompt.focus()

    # -- actions (bindings and the command palette) -------------------------------------------------------
    def action_cancel(self) -> None:
        if len(self.screen_stack) > 1:  # a palette or dialog is open: Esc closes it (the binding has priority)
            self.screen.dismiss()
            return
        if self.busy:
            self.controller.cancel()
            self._set_status("cancelling… (an LLM call stops at once, a generation after its current step)")
        elif self.focused is not self.query_one("#prompt"):
            self.query_one("#prompt", PromptInput).focus()

    def _command(self, text: str) -> None:
        if self.busy:
            self.notify("Wait for the running job, or press Esc to cancel it.", title="Busy", severity="warning")
            return
        self._add_message("user", text)
        self._start(text, partial(self.controller.handle, text))

    def action_help(self) -> None:
        self._add_message("assistant", help_text() + "\n\n" + KEYS)

    def action_images(self) -> None:
        self._command("/images")

    def action_scores(self) -> None:
        self._command("/scores")

    def action_undo(self) -> None:
        self._command("/undo")

    def action_new_chat(self) -> None:
        self._command("/new")

    def action_edit_prompt(self) -> None:
        self.query_one("#spec", TextArea).focus()

    def action_run_prompt(self) -> None:
        try:
            spec = text_to_spec(self.query_one("#spec", TextArea).text)
        except ValueError as exc:
            self.notify(str(exc), title="The structured prompt cannot be read", severity="error")
            return
        if self.busy:
            self.notify("Wait for the running job, or press Esc to cancel it.", title="Busy", severity="warning")
            return
        self._add_message("user", "/run (edited prompt)")
        self.query_one("#prompt", PromptInput).focus()
        self._start("/run", partial(self.controller.run_edited, spec))

    def action_prefill(self, text: str) -> None:
        prompt = self.query_one("#prompt", PromptInput)
        prompt.value = text
        prompt.cursor_position = len(text)
        prompt.focus()

    def action_show_chat_id(self) -> None:
        self.notify(f"imagent chat --resume {self.controller.chat_id}", title="This conversation")

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("New image", "Describe an idea in the input", partial(self.action_prefill, ""))
        yield SystemCommand("Refine the last image", "Change it in words (/refine)",
                            partial(self.action_prefill, "/refine "))
        yield SystemCommand("Edit the current image", "img2img or inpaint a region (/edit)",
                            partial(self.action_prefill, "/edit "))
        yield SystemCommand("Upscale the current image x2", "Lanczos x2 (/upscale)", partial(self._command, "/upscale x2"))
        yield SystemCommand("Run the structured prompt", "Run the side panel's prompt again (F5)", self.action_run_prompt)
        yield SystemCommand("Edit the structured prompt", "Focus the side panel's editor (F4)", self.action_edit_prompt)
        yield SystemCommand("Cancel the running generation", "Stops after the current step (Esc)", self.action_cancel)
        yield SystemCommand("Undo", "Undo the last change (F6)", self.action_undo)
        yield SystemCommand("List images", "This chat's images (F2)", self.action_images)
        yield SystemCommand("Open an earlier image", "Make it current (/open #ID)", partial(self.action_prefill, "/open #"))
        yield SystemCommand("Explain the scores", "The last run's round table (F3)", self.action_scores)
        yield SystemCommand("Save the current image", "Copy it somewhere (/save PATH)", partial(self.action_prefill, "/save "))
        yield SystemCommand("Show defaults", "Style, size, steps, seed, rounds", partial(self._command, "/defaults"))
        for name in ("style", "seed", "steps", "size", "rounds", "candidates"):
            yield SystemCommand(f"Set {name}", COMMAND_HELP[name][1], partial(self.action_prefill, f"/{name} "))
        yield SystemCommand("Toggle raw prompts", "Use your words as written (/raw)", partial(self._command, "/raw"))
        yield SystemCommand("Switch mode", "Agent (tool-calling model) or offline (/mode)", partial(self.action_prefill, "/mode "))
        yield SystemCommand("New conversation", "Start over, keeping defaults (Ctrl+N)", self.action_new_chat)
        yield SystemCommand("Show the conversation id", "For imagent chat --resume", self.action_show_chat_id)
        yield SystemCommand("Help", "Commands and keys (F1)", self.action_help)

    def on_unmount(self) -> None:
        if self.busy:  # leaving while a job runs: stop it at its next step
            self.controller.cancel()


def _yield_cpu_to_the_ui(niceness: int = 10) -> None:
    """Lower this worker thread's CPU priority (Linux: per thread; the compute threads a model
    starts from it inherit it), so typing stays responsive while a model runs on every core."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
    except (AttributeError, OSError):  # not Linux, or not allowed: only responsiveness suffers
        pass


def make_app(session, *, chat_model=None, chat_id: str | None = None, image_widget=None, offline: bool = False,
             styles=None) -> ImagentApp:
    """The one factory for `imagent chat` and the tests. `image_widget` None: half-block previews."""
    return ImagentApp(session, chat_model=chat_model, chat_id=chat_id, image_widget=image_widget,
                      offline=offline, styles=styles)
