"""The shared test fakes: a scripted tool-calling chat model, a session.run that blocks, a safety checker,
a backend that counts."""
from __future__ import annotations

import itertools
import threading

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from tools.safety import Verdict


class ScriptedChatModel(GenericFakeChatModel):
    """Answers with the scripted AIMessages in order (tool calls included); `bind_tools` returns
    itself, so `create_agent` can use it. `seen` keeps the messages of every call."""

    seen: list = []

    def bind_tools(self, tools, **kwargs):
        return self

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        self.seen.append(list(messages))
        return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)


def scripted(*turns) -> ScriptedChatModel:
    """turns: ("tool", name, args) for a tool call, a str for a final answer, or an AIMessage."""
    counter = itertools.count(1)
    messages = []
    for turn in turns:
        if isinstance(turn, AIMessage):
            messages.append(turn)
        elif isinstance(turn, str):
            messages.append(AIMessage(content=turn))
        else:
            _, name, args = turn
            messages.append(AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": f"call_{next(counter)}",
                                                                "type": "tool_call"}]))
    return ScriptedChatModel(messages=iter(messages), seen=[])


def blocking_run(session, *, started: threading.Event | None = None, step: int = 4, steps: int = 10):
    """A stand-in for Session.run that reports round 1 as finished, then sits in round 2 at
    `step`/`steps` until its call is cancelled (deterministic mid-generation screens)."""
    from agent.errors import Cancelled
    from agent.events import RoundFinished, RoundStarted, Step

    def run(idea, options=None, *, call, **kwargs):
        call.emit(RoundStarted(1, 3, idea, "initial prompt", "initial"))
        call.emit(RoundFinished(1, 3, {"round": 1, "change": "initial prompt", "scores": [0.61, 0.58],
                                       "best_score": 0.61, "seeds": [7, 8]}))
        call.emit(RoundStarted(2, 3, idea, "revised", "prompt"))
        call.emit(Step(step, steps))
        if started is not None:
            started.set()
        call.cancel.wait(30)
        raise Cancelled("Run cancelled.")

    return run


class FakeSafety:
    """A safety checker for tests. It allows everything unless told: `prompt="violence"` blocks every
    prompt (or, with `containing`, only those containing it) in that category, `image="nudity"` blocks
    every image (its verdict carrying `scores`). It keeps what it was asked: `prompts` (the texts)
    and `images` (how many)."""

    def __init__(self, *, level: str = "strict", prompt: str | None = None, containing: str = "",
                 image: str | None = None, scores: dict | None = None):
        self.level = level
        self.prompt_category, self.containing = prompt, containing
        self.image_category, self.scores = image, dict(scores or {})
        self.prompts: list[str] = []
        self.images = 0

    def check_prompt(self, text):
        self.prompts.append(text)
        if self.prompt_category and self.containing in text:
            return Verdict(False, self.prompt_category, "test checker blocks every prompt")
        return Verdict(True)

    def check_image(self, image):
        self.images += 1
        if self.image_category:
            return Verdict(False, self.image_category, "test checker blocks every image", dict(self.scores))
        return Verdict(True)


class CountingBackend:
    """The real backend, counting generate calls; `gate` (cleared) holds them until set, `entered` is
    set at the first call, and `fail` (an exception) makes every call raise it."""

    def __init__(self, inner):
        self.inner = inner
        self.calls = 0
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail: Exception | None = None

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def generate(self, request, **kwargs):
        self.calls += 1
        self.entered.set()
        assert self.gate.wait(30)
        if self.fail is not None:
            raise self.fail
        return self.inner.generate(request, **kwargs)
