"""Agent mode: a LangChain tool-calling agent over the controller's actions (thin typed adapters, plus some
general session tools), its LLM calls run so that a cancel stops the turn at once.

The `_TURN` context variable is set in the thread that runs a turn's LLM call: the tools a cancelled turn's
model still asks for do not start. LangChain is imported only inside functions."""
from __future__ import annotations

import threading
from contextvars import ContextVar, copy_context
from typing import Any, Callable

from agent.errors import Cancelled, ImagentError, LLMError
from agent.events import Call, ModeChanged
from tools.upscale import DEFAULT_METHOD

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
        """The agent's tools: conversation-aware adapters over this controller, plus the general
        session tools from agent.lc_tools that these do not cover (safety checks, scoring, ...)."""
        from langchain_core.tools import StructuredTool

        def wrap(fn, name: str, description: str):
            def run(**kwargs):
                turn = _TURN.get()
                if turn is not None:  # the turn was cancelled while the model answered: its tools do not start
                    turn.check()
                shown = ", ".join(f"{k}={v!r}" for k, v in kwargs.items() if v not in (None, "", []))
                self.chat.say("tool", f"{name}({shown})")
                try:
                    return fn(**kwargs)
                except Cancelled:
                    raise
                except ImagentError as exc:  # the model reads the error and tells the user
                    return f"Error: {exc.message} {exc.hint or ''}".strip()
            run.__name__ = name
            return StructuredTool.from_function(func=run, name=name, description=description,
                                                args_schema=_schema(fn))

        mine = [
            wrap(self._t_create, "create_image", "Make an image from a new idea (runs generate, safety, CLIP "
                 "scoring and retries). Use for a new subject."),
            wrap(self._t_refine, "refine_last", "Change the current image in words and run again, e.g. "
                 "instruction='warmer light, less clutter'; optional explicit fields override."),
            wrap(self._t_edit, "edit_image", "img2img on an image (default the current one), or inpaint a "
                 "region given as mask (a file path) or rect ('x,y,w,h' pixels or fractions)."),
            wrap(self._t_upscale, "upscale_image", "Upscale an image (default the current one) by 2, 3 or 4."),
            wrap(self._t_show_defaults, "show_defaults", "Show the defaults new images are made with."),
            wrap(self._t_set_defaults, "set_defaults", "Change defaults: style (preset name or 'off'), size "
                 "('WxH' or 'native'), steps, seed (-1 for random), rounds, candidates."),
            wrap(self._t_list_images, "list_images", "List the images made in this conversation."),
            wrap(self._t_open_image, "open_image", "Reopen an earlier image by number; it becomes current."),
            wrap(self._t_explain_scores, "explain_scores", "Explain the CLIP scores of the last run, round by round."),
        ]
        names = {t.name for t in mine}
        try:
            from agent.lc_tools import make_tools

            general = [t for t in make_tools(self.chat.session, names=list(_GENERAL)) if t.name not in names]
        except ImportError:
            general = []
        return mine + general

    # tool adapters: plain typed signatures (their schema is what the model sees)
    def _t_create(self, idea: str, style: str | None = None) -> str:
        """idea: the user's idea in their words. style: a style preset name, if the user asked for one."""
        return self.chat.create(idea, style=style)

    def _t_refine(self, instruction: str, subject: str | None = None, style: str | None = None,
                  lighting: str | None = None, composition: str | None = None,
                  add_details: list[str] | None = None, avoid: list[str] | None = None) -> str:
        """instruction: the change in the user's words. The other fields set parts of the structured prompt."""
        changes = {k: v for k, v in dict(subject=subject, style=style, lighting=lighting, composition=composition,
                                         add_details=add_details, avoid=avoid).items() if v}
        return self.chat.refine(instruction, changes=changes or None)

    def _t_edit(self, instruction: str, image: int | None = None, mask: str | None = None,
                rect: str | None = None, strength: float = 0.6) -> str:
        """instruction: what the edit should show. image: its number. strength: 0..1, how much changes."""
        return self.chat.edit(instruction, image=image, mask=mask, rect=rect, strength=strength)

    def _t_upscale(self, image: int | None = None, scale: int = 2, method: str = DEFAULT_METHOD) -> str:
        """image: its number (default current). scale: 2, 3 or 4. method: realesrgan (default), lanczos, realesrgan-anime."""
        return self.chat.upscale(image=image, scale=scale, method=method)

    def _t_show_defaults(self) -> str:
        """No arguments."""
        return self.chat.defaults_text()

    def _t_set_defaults(self, style: str | None = None, size: str | None = None, steps: int | None = None,
                        seed: int | None = None, rounds: int | None = None, candidates: int | None = None) -> str:
        """Only the settings to change."""
        values = {k: v for k, v in dict(style=style, size=size, steps=steps, rounds=rounds,
                                        candidates=candidates).items() if v is not None}
        if seed is not None:
            values["seed"] = None if seed < 0 else seed
        return self.chat.set_defaults(**values)

    def _t_list_images(self) -> str:
        """No arguments."""
        return self.chat.list_images()

    def _t_open_image(self, image: int) -> str:
        """image: the image number."""
        return self.chat.open_image(image)

    def _t_explain_scores(self) -> str:
        """No arguments."""
        return self.chat.explain_scores()


# the general tools of agent.lc_tools the chat offers too; run, generate, edit, upscale and
# list_images are covered by the conversation's own tools (which keep its state: current image, ...)
_GENERAL = ("expand", "check_safety", "score", "get_image")


def _schema(fn):
    """A pydantic model of fn's keyword arguments (for StructuredTool); a parameter the action
    catalogue defines (steps, rounds, candidates, strength, scale, method, idea, style) takes its
    description and limits from there (agent.tool_schemas.shared_field)."""
    import inspect
    import typing

    from pydantic import ConfigDict, create_model

    from agent.tool_schemas import grammar_safe, shared_field

    hints = typing.get_type_hints(fn)
    params = {}
    for name, p in inspect.signature(fn).parameters.items():
        default = ... if p.default is inspect.Parameter.empty else p.default
        shared = shared_field(name, default)
        params[name] = (hints.get(name, str), shared if shared is not None else default)
    return create_model(f"{fn.__name__.strip('_')}_args", __config__=ConfigDict(json_schema_extra=grammar_safe),
                        **params)
