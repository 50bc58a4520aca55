"""`imagent chat` driven by Textual's Pilot over the tiny pipeline: idea to image, refine (agent
mode with a scripted model), cancel, error paths, resume; plus SVG snapshots of the main screen."""
from __future__ import annotations

import asyncio
import threading
import time

import pytest
from fakes import blocking_run, scripted
from textual.widgets import DataTable, Markdown, ProgressBar, TextArea  # noqa: F401

from agent.chat import ChatController
from agent.errors import BackendError
from tui.app import make_app
from tui.panel import spec_to_text, text_to_spec
from tui.widgets import LogLine, PromptInput

SIZE = (120, 36)
FAST = ("/steps 1", "/rounds 1", "/candidates 1", "/seed 3")


async def wait_idle(pilot, app, timeout: float = 60.0) -> None:
    start = time.monotonic()
    await pilot.pause()
    while app.busy:
        assert time.monotonic() - start < timeout, "the job did not finish"
        await pilot.pause(0.05)
    await pilot.pause()


async def send(pilot, app, text: str, *, wait: bool = True) -> None:
    app.query_one("#prompt", PromptInput).value = text
    await pilot.press("enter")
    if wait:
        await wait_idle(pilot, app)


def log_text(app) -> list[str]:
    out = []
    for w in app.query("#log > *"):
        if isinstance(w, LogLine):
            out.append(str(w.render()))
        elif isinstance(w, Markdown):
            out.append(w.source)
    return out


NOTES: dict[int, list] = {}  # id(app) -> the notifications it raised


@pytest.fixture(autouse=True)
def record_notifications(monkeypatch):
    """Keeps every app.notify(...) (Textual's public API) for notes(app); each is still shown as usual."""
    from textual.app import App
    from textual.notifications import Notification

    show = App.notify

    def notify(self, message, *, title="", severity="information", **kwargs):
        NOTES.setdefault(id(self), []).append(Notification(message, title, severity))
        show(self, message, title=title, severity=severity, **kwargs)

    monkeypatch.setattr(App, "notify", notify)
    yield
    NOTES.clear()


def notes(app) -> list:
    """The notifications the app raised, in order."""
    return list(NOTES.get(id(app), []))


async def test_idea_to_image_fills_log_preview_side_panel_and_table(session):
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        assert isinstance(app.focused, PromptInput)
        for command in FAST:
            await send(pilot, app, command)
        await send(pilot, app, "two red circles")
        lines = log_text(app)
        assert "› two red circles" in lines and any(line.startswith("Made image **#") for line in lines)
        assert len(app.query(".preview")) == 1
        assert "subject: two red circles" in app.query_one("#spec", TextArea).text
        table = app.query_one("#table", DataTable)
        assert table.row_count == 1 and table.get_row_at(0)[0] == "1"
        assert "seed       3" in str(app.query_one("#params").render())
        assert isinstance(app.focused, PromptInput) and app.query_one("#prompt", PromptInput).value == ""
        assert not app.query_one("#progress").visible


async def test_refine_in_agent_mode_with_a_scripted_model(session):
    model = scripted(("tool", "create_image", {"idea": "two red circles"}), "Two red circles, as asked.",
                     ("tool", "refine_last", {"instruction": "warmer light, less clutter"}), "Warmer, tidier.")
    app = make_app(session, chat_model=model)
    async with app.run_test(size=SIZE) as pilot:
        assert app.sub_title == "agent mode"
        for command in FAST:
            await send(pilot, app, command)
        await send(pilot, app, "could you draw two red circles?")
        first = app.controller.state.image_id
        await send(pilot, app, "warmer light and less clutter please")
        lines = log_text(app)
        assert "Warmer, tidier." in lines
        assert any(line.startswith("⚙ refine_last(instruction='warmer light, less clutter')") for line in lines)
        assert any(line.startswith("⚙ refine: lighting: warmer light; avoid: clutter") for line in lines)
        assert app.controller.state.image_id != first and len(app.query(".preview")) == 2
        spec = app.query_one("#spec", TextArea).text
        assert "lighting: warmer light" in spec and "clutter" in spec.split("negatives:")[1]


class SlowBackend:
    """The tiny backend, but every step waits up to 50 ms for a cancel, so a 300-step job runs
    for seconds on any machine (the tiny model alone finishes 300 steps in about a second)."""

    def __init__(self, inner):
        self.inner = inner
        self.name, self.model, self.capabilities = inner.name, inner.model, inner.capabilities

    def generate(self, request, *, progress=None, cancel=None):
        def slow(done, total):
            if cancel is not None:
                cancel.wait(0.05)
            if progress:
                progress(done, total)
        return self.inner.generate(request, progress=slow, cancel=cancel)


async def test_esc_cancels_a_running_generation_and_keeps_the_message(settings, tiny_backend, tiny_scorer):
    from agent.session import Session

    session = Session(settings, backend=SlowBackend(tiny_backend), scorer=tiny_scorer)
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        for command in ("/steps 300", "/rounds 1", "/candidates 1"):
            await send(pilot, app, command)
        await send(pilot, app, "two red circles", wait=False)
        steps = app.query_one("#steps", ProgressBar)
        start = time.monotonic()
        while (steps.progress or 0) < 1:
            assert time.monotonic() - start < 60, "no step progress arrived"
            await pilot.pause(0.05)
        # the UI answers while the model works: typing echoes at once
        await pilot.press("a", "b")
        assert app.query_one("#prompt", PromptInput).value == "ab"
        app.query_one("#prompt", PromptInput).value = ""
        await pilot.press("escape")
        await wait_idle(pilot, app, timeout=30)
        assert steps.progress < 300
        assert app.query_one("#prompt", PromptInput).value == "two red circles"
        assert any(n.title == "Cancelled" for n in notes(app))
        run = session.gallery.runs(limit=1)[0]
        assert run["status"] == "cancelled" and run["chat_id"] == app.controller.chat_id
        assert app.controller.state.image_id is None


async def test_errors_become_notifications_and_nothing_typed_is_lost(session, monkeypatch):
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, app, "/size 33x33")
        note = notes(app)[-1]
        assert note.severity == "error" and "multiples of 8" in note.title and "/size 32x32" in note.message
        assert app.query_one("#prompt", PromptInput).value == "/size 33x33"

        def broken(*args, **kwargs):
            raise BackendError("The model crashed while generating.", "Try fewer steps, or another --model.")

        monkeypatch.setattr(session, "run", broken)
        await send(pilot, app, "two red circles")
        note = notes(app)[-1]
        assert (note.title, note.message) == ("The model crashed while generating.", "Try fewer steps, or another --model.")
        assert app.query_one("#prompt", PromptInput).value == "two red circles"
        assert "✗ The model crashed while generating. Try fewer steps, or another --model." in log_text(app)
        assert not app.busy and isinstance(app.focused, PromptInput)
        await pilot.press("a", "b")  # typing replaces the restored message; it is not appended to it
        assert app.query_one("#prompt", PromptInput).value == "ab"


async def test_resume_shows_the_conversation_with_its_images(session):
    chat = ChatController(session)
    for command in FAST:
        chat.handle(command)
    chat.handle("two red circles")
    app = make_app(session, chat_id=chat.chat_id)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        lines = log_text(app)
        assert "› two red circles" in lines and lines[-1] == f"Resumed conversation {chat.chat_id}."
        assert len(app.query(".preview")) == 1
        assert "subject: two red circles" in app.query_one("#spec", TextArea).text
        assert app.query_one("#table", DataTable).row_count == 1
        await send(pilot, app, "/seed 4")
        assert app.controller.chat_id == chat.chat_id
    assert ChatController(session, chat_id=chat.chat_id).state.defaults.seed == 4


async def test_slash_completion_help_and_palette(session):
    app = make_app(session, styles=["cinematic", "watercolor"])
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("/", "s", "t", "y")
        await pilot.pause(0.1)
        await pilot.press("tab")
        assert app.query_one("#prompt", PromptInput).value == "/style "
        await pilot.press("w", "a")
        await pilot.pause(0.1)
        await pilot.press("tab")
        assert app.query_one("#prompt", PromptInput).value == "/style watercolor"
        await pilot.press("f1")
        await pilot.pause()
        assert any("/undo" in line for line in log_text(app))
        titles = {c.title for c in app.get_system_commands(app.screen)}
        for action in ("New image", "Refine the last image", "Edit the current image", "Upscale the current image x2",
                       "Undo", "Open an earlier image", "Save the current image", "Set style", "Set seed",
                       "Set steps", "Set size", "Set rounds", "Toggle raw prompts", "New conversation",
                       "Cancel the running generation", "Explain the scores", "Help"):
            assert action in titles


def test_spec_text_round_trip():
    spec = {"subject": "a cat", "style": "watercolor", "lighting": "", "composition": "close-up",
            "quality": ["sharp"], "negatives": ["blurry", "text"], "extras": []}
    assert text_to_spec(spec_to_text(spec)) == spec
    with pytest.raises(ValueError, match="subject is empty"):
        text_to_spec("style: x")
    with pytest.raises(ValueError, match="Line 1"):
        text_to_spec("colour: red")


# -- snapshots: fixed size, fixed seeds, no ids, paths or times on screen -----------------------------
def test_snapshot_idle(session, snap_compare):
    assert snap_compare(make_app(session, styles=[]), terminal_size=SIZE)


def test_snapshot_mid_generation(session, snap_compare, monkeypatch):
    started = threading.Event()
    monkeypatch.setattr(session, "run", blocking_run(session, started=started))

    async def run_before(pilot):
        await pilot.pause(0.2)  # laid out first: a progress bar rounds its value to its width
        await send(pilot, pilot.app, "two red circles", wait=False)
        for _ in range(200):
            if started.is_set():
                break
            await asyncio.sleep(0.02)
        await pilot.pause(0.2)

    app = make_app(session, styles=[])
    try:
        assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
    finally:
        app.controller.cancel()


def test_snapshot_finished_round_table(session, snap_compare):
    async def run_before(pilot):
        for command in ("/steps 1", "/rounds 1", "/candidates 2", "/seed 3"):
            await send(pilot, pilot.app, command)
        await send(pilot, pilot.app, "two red circles")
        await pilot.pause(0.2)

    assert snap_compare(make_app(session, styles=[]), terminal_size=SIZE, run_before=run_before)


async def test_esc_closes_the_command_palette_and_enter_then_runs_nothing(session):
    from textual.command import CommandPalette

    app = make_app(session, styles=[])
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+p")
        await pilot.pause()
        assert isinstance(app.screen, CommandPalette)
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, CommandPalette), "Esc closes the palette"
        before = len(app.query(LogLine))
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert len(app.query(LogLine)) == before and not app.busy, "no palette action ran"
