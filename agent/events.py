"""The typed events a call sends up, and `Call`: the control of one call (its cancel event and its event sink).

Every long call (generate, edit, upscale, run, rerun, a chat turn, a queued server or MCP job)
gets its own `Call`; the Session hands its cancel event and a step callback down to the backend
and the loop, and everything the call reports goes to its `sink` as one of the small dataclasses
below. Front ends `match` on them; nothing is dispatched on strings.

    call = Call(sink=print)
    session.generate(request, call=call)      # another thread: call.cancel()

A call's cancel stops that call only: nothing is shared between calls, so a new call never
clears another's cancel.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Union

from agent.errors import Cancelled


# -- pixel work -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    """A denoising step (or an upscale tile) done: `done` of `total`; restarts for every image."""

    done: int
    total: int
    label: str = ""


@dataclass(frozen=True)
class Phase:
    """A named phase of a call started (expanding, loading a model, saving, done)."""

    label: str


# -- the critique loop ---------------------------------------------------------------------------
@dataclass(frozen=True)
class RoundStarted:
    round: int
    rounds: int              # the most rounds this run may take
    prompt: str
    change: str
    repair: str              # initial | prompt | edit | layout


@dataclass(frozen=True)
class CandidateScored:
    round: int
    seed: int
    score: float | None
    blocked: bool
    checks: tuple = ()           # each requirement's verdict (tools.requirements.RequirementVerdict.to_json)


@dataclass(frozen=True)
class RoundFinished:
    round: int
    rounds: int
    row: dict                # the round's record (agent.loop.RoundRecord.to_json): the table row


@dataclass(frozen=True)
class Revised:
    round: int
    prompt: str
    change: str


@dataclass(frozen=True)
class LoopFinished:
    rounds: int              # the rounds that ran
    best_round: int
    best_seed: int
    best_score: float
    met: bool


# -- results and the chat --------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageSaved:
    """An image was written and recorded (the chat shows it as the current one)."""

    image_id: int
    path: str


@dataclass(frozen=True)
class Message:
    """A chat message: role is user, assistant, tool, notice or error."""

    role: str
    text: str
    data: dict | None = None


@dataclass(frozen=True)
class StateChanged:
    """The chat's state (agent.chat.ChatState) changed: defaults, current image, rounds."""

    state: Any


@dataclass(frozen=True)
class ModeChanged:
    """The chat's mode (agent or offline) was chosen: `line` says which and why."""

    line: str


@dataclass(frozen=True)
class ChatCleared:
    """A new conversation began (/new): the old transcript is gone from view."""

    chat_id: str


Event = Union[Step, Phase, RoundStarted, CandidateScored, RoundFinished, Revised, LoopFinished, ImageSaved,
              Message, StateChanged, ModeChanged, ChatCleared]
Sink = Callable[[Event], None]


@dataclass
class Call:
    """The control of one call: `cancel` (set from any thread to stop it at its next step) and
    `sink` (where its events go; None drops them)."""

    sink: Sink | None = None
    cancel: threading.Event = field(default_factory=threading.Event)

    def emit(self, event: Event) -> None:
        if self.sink is not None:
            self.sink(event)

    def stop(self) -> None:
        """Ask the call to stop at its next step (thread-safe)."""
        self.cancel.set()

    @property
    def cancelled(self) -> bool:
        return self.cancel.is_set()

    def check(self, what: str = "Cancelled.") -> None:
        """Raise Cancelled when the call was asked to stop."""
        if self.cancel.is_set():
            raise Cancelled(what)

    def steps(self, label: str = "") -> Callable[[int, int], None]:
        """The step callback a backend takes (done, total) -> a Step event."""
        return lambda done, total: self.emit(Step(done, total, label))

    def with_sink(self, sink: Sink) -> "Call":
        """The same call (one cancel) sending its events to `sink` instead; `sink` may pass them on."""
        return Call(sink=sink, cancel=self.cancel)


def call_of(call: Call | None) -> Call:
    """`call`, or a fresh one (nobody can cancel it, its events go nowhere)."""
    return call if call is not None else Call()


__all__ = ["Step", "Phase", "RoundStarted", "CandidateScored", "RoundFinished", "Revised", "LoopFinished",
           "ImageSaved", "Message", "StateChanged", "ModeChanged", "ChatCleared", "Event", "Sink", "Call", "call_of"]
