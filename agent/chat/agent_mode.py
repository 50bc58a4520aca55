"""Agent mode: a LangChain tool-calling agent over the chat's actions (agent.chat.actions), plus some
general session tools; its LLM calls run so that a cancel stops the turn at once.

The `_TURN` context variable is set in the thread that runs a turn's LLM call: the tools a cancelled turn's
model still asks for do not start. LangChain is imported only inside functions."""
from __future__ import annotations

import threading
from contextvars import ContextVar, copy_context
from typing import Any, Callable

from agent.chat.actions import catalogue, invalid, parse, run_action
from agent.errors import Cancelled, ImagentError, LLMError
from agent.events import Call, ModeChanged

# set in the thread that runs one turn's LLM call: the tools of a cancelled turn do not start
_TURN: ContextVar[Call | None] = ContextVar("imagent_turn", default=None)
MAX_RECURSION = 24


def cancellable(call: Call, fn: Callable[[], Any]):
    """Run an LLM call in a helper thread and wait for it, or for Esc / Ctrl-C: a cancel returns at
    once (the abandoned request ends at its max_tokens or timeout, and the tools it may still ask
    for do not start)."""
    box, done = {}, threading.Event()
    stop = call.cancel

    def work():
        _TURN.set(call)
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the waiting thread
            box["error"] = exc
        finally:
            done.set()

    ctx = copy_context()
    threading.Thread(target=ctx.run, args=(work,), daemon=True, name="imagent-llm-call").start()
    try:
        while not done.wait(0.05):
            if stop.is_set():
                raise Cancelled("Cancelled.")
    except KeyboardInterrupt:
        stop.set()
        raise Cancelled("Cancelled.") from None
    if "error" in box:
        raise box["error"]
    return box["value"]


class ToolAgent:
    """Agent mode for one ChatController: builds the LangChain agent once (per conversation) and runs a turn."""

    def __init__(self, chat):
        self.chat = chat
        self._agent = None

    def reset(self) -> None:
        """Forget the built agent: the next turn builds it again (a new conversation)."""
        self._agent = None

    def turn(self, text: str) -> str:
        """One message of agent mode: the model (with the conversation so far) calls tools, then replies."""
        from langchain_core.messages import AIMessage, HumanMessage

        chat = self.chat
        agent = self._build()
        history = []
        for m in chat.messages()[:-1][-40:]:  # the new message is the last one
            if m["role"] == "user" and not m["content"].startswith("/"):
                history.append(HumanMessage(m["content"]))
            elif m["role"] == "assistant":
                history.append(AIMessage(m["content"]))
        history.append(HumanMessage(text))
        tools_before = sum(m["role"] == "tool" for m in chat.messages())
        try:
            result = cancellable(chat._call, lambda: agent.invoke({"messages": history},
                                                                  config={"recursion_limit": MAX_RECURSION}))
        except ImagentError:
            raise
        except Exception as exc:
            from agent.llm import llm_error

            err = llm_error(exc, chat.settings)
            ran = sum(m["role"] == "tool" for m in chat.messages()) > tools_before
            if "context" in err.message and not ran and chat._chat_model is None:
                # the tools do not fit a small server's context: one JSON choice per message does
                chat.mode, chat.mode_reason = "routed", (f"routed mode: the tools do not fit the context of "
                                                         f"{chat.settings.llm_model}; each message is one JSON "
                                                         "choice of action")
                chat.listener(ModeChanged(chat.mode_reason))
                chat.say("notice", f"{err.message} Switched to routed mode.")
                return chat.router.turn(text)
            raise LLMError(err.message, (err.hint or "") + " Or switch to /mode offline.") from None
        final = result["messages"][-1]
        content = final.content if isinstance(final.content, str) else str(final.content)
        return content.strip() or "Done."

    def _build(self):
        """The LangChain agent (built on the first turn): the chat model, the tools, the system prompt."""
        if self._agent is not None:
            return self._agent
        from langchain.agents import create_agent

        import prompts

        model = self.chat._chat_model
        if model is None:
            from agent.llm import build_chat_model

            model = build_chat_model(self.chat.settings)
        self._agent = create_agent(model, self.tools(), system_prompt=prompts.read_text("chat_system.md", self.chat.settings.home))
        return self._agent

    def tools(self) -> list:
        """The agent's tools: the chat's actions (agent.chat.actions: their input models are the
        schemas the model sees), plus the general session tools from agent.lc_tools that these do
        not cover (safety checks, scoring, ...)."""
        from langchain_core.tools import StructuredTool

        def wrap(action):
            def run(**kwargs):
                turn = _TURN.get()
                if turn is not None:  # the turn was cancelled while the model answered: its tools do not start
                    turn.check()
                shown = ", ".join(f"{k}={v!r}" for k, v in kwargs.items() if v not in (None, "", []))
                self.chat.say("tool", f"{action.name}({shown})")
                try:
                    return run_action(self.chat, action.name, parse(action.name, **kwargs))
                except Cancelled:
                    raise
                except ImagentError as exc:  # the model reads the error and tells the user
                    return _error_text(exc)
            run.__name__ = action.name
            return StructuredTool.from_function(func=run, name=action.name, description=action.help,
                                                args_schema=action.input,  # arguments that fail it: the model reads why
                                                handle_validation_error=lambda exc: _error_text(invalid(exc)))

        mine = [wrap(action) for action in catalogue().values()]
        names = {t.name for t in mine}
        try:
            from agent.lc_tools import make_tools

            general = [t for t in make_tools(self.chat.session, names=list(_GENERAL)) if t.name not in names]
        except ImportError:
            general = []
        return mine + general


def _error_text(exc: ImagentError) -> str:
    return f"Error: {exc.message} {exc.hint or ''}".strip()


# the general tools of agent.lc_tools the chat offers too; run, generate, edit, upscale and
# list_images are covered by the conversation's own tools (which keep its state: current image, ...)
_GENERAL = ("expand", "check_safety", "score", "get_image")
