"""The chat app's widgets and messages: the worker's messages to the app, the slash-command input with completion and history, log lines, the image widget choice."""
from __future__ import annotations

from textual.binding import Binding
from textual.message import Message
from textual.suggester import Suggester
from textual.widgets import Input, Static

from agent import events as ev
from agent.chat import COMMAND_HELP
from agent.errors import ImagentError


class ChatUpdate(Message):
    """An event from the controller (posted from the worker thread)."""

    def __init__(self, event: ev.Event) -> None:
        super().__init__()
        self.event = event


class JobDone(Message):
    """The worker finished one user message: `error` is None, an ImagentError, or another exception."""

    def __init__(self, text: str, reply: str | None, error: BaseException | None) -> None:
        super().__init__()
        self.text, self.reply, self.error = text, reply, error


class SlashSuggester(Suggester):
    """Completes slash command names, and style names after /style."""

    def __init__(self, styles=None, *, home=None) -> None:
        super().__init__(use_cache=False, case_sensitive=False)
        self._styles = styles
        self._home = home  # the settings' home: the user's own presets are offered too

    def styles(self) -> list[str]:
        if self._styles is None:
            try:
                from agent.expand import load_styles

                self._styles = list(load_styles(self._home))
            except ImagentError:
                self._styles = []
        return self._styles

    async def get_suggestion(self, value: str) -> str | None:
        if not value.startswith("/"):
            return None
        head, space, rest = value.partition(" ")
        if not space:
            for name in COMMAND_HELP:
                if name.startswith(head[1:].lower()) and len(head) > 1:
                    return "/" + name + (" " if COMMAND_HELP[name][0] else "")
            return None
        if head == "/style" and rest:
            for name in self.styles():
                if name.startswith(rest.lower()):
                    return f"/style {name}"
        return None


class PromptInput(Input):
    """The message input: Tab accepts the completion, Up/Down walk the history."""

    BINDINGS = [
        Binding("tab", "complete", "Complete", show=False, priority=True),
        Binding("up", "history(-1)", "Previous", show=False),
        Binding("down", "history(1)", "Next", show=False),
    ]

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.cursor_blink = False  # a steady cursor: calmer, and screens are reproducible
        self.history: list[str] = []
        self._at = 0

    def remember(self, text: str) -> None:
        if text and (not self.history or self.history[-1] != text):
            self.history.append(text)
        self._at = len(self.history)

    def action_complete(self) -> None:
        if self._suggestion:
            self.value = self._suggestion
            self.cursor_position = len(self.value)

    def action_history(self, delta: int) -> None:
        if not self.history:
            return
        self._at = max(0, min(len(self.history), self._at + delta))
        self.value = self.history[self._at] if self._at < len(self.history) else ""
        self.cursor_position = len(self.value)


class LogLine(Static):
    """One line of the chat log (user, tool, notice or error)."""


def pick_image_widget():
    """The best image widget for this terminal: Sixel or the Terminal Graphics Protocol where the
    terminal speaks one, else half-block cells. Import before the app starts (it asks the terminal)."""
    from textual_image.widget import HalfcellImage, Image, SixelImage, TGPImage

    return Image if Image in (SixelImage, TGPImage) else HalfcellImage
