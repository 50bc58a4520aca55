"""Which mode a chat runs in (agent, routed, keywords or router), and the line that says why, from its model and settings.

Agent mode is announced only after the server was seen calling a tool and taking its result back
(agent.llm_probe.tool_support, probed once per server and model and cached)."""
from __future__ import annotations

from agent.errors import LLMError


def pick_mode(settings, chat_model=None, offline: bool = False) -> tuple[str, str]:
    """(mode, the line that says why): "agent" (a model that calls tools), "routed" (a configured model
    that does not, on its server, but chooses actions right), "keywords" (one that does neither: the
    offline router chooses, the model writes the prompts) or "router" (no model, or offline)."""
    if offline:
        return "router", "offline mode (switched off the model)"
    if chat_model is not None:
        if _can_call_tools(chat_model):
            name = getattr(chat_model, "model_name", None) or type(chat_model).__name__
            return "agent", f"agent mode: tool-calling model {name}"
        return "router", (f"offline mode: {type(chat_model).__name__} cannot call tools, so a plain "
                          "message is an idea to draw")
    if settings.llm_model:
        return _configured_mode(settings)
    return "router", ("offline mode: no chat model configured (set IMAGENT_LLM_MODEL for agent mode); "
                      "a plain message is an idea to draw, /help lists the commands")


def _configured_mode(settings) -> tuple[str, str]:
    """agent mode where the server was seen handling tools, else routed mode where the model routes the
    probe messages right, else keyword mode; offline when the server cannot be reached."""
    from agent.chat.routing import route_support
    from agent.llm import describe_server
    from agent.llm_probe import tool_support

    name, where = settings.llm_model, describe_server(settings)
    if not settings.llm_base_url:  # OpenAI itself calls tools
        return "agent", f"agent mode: tool-calling model {name}"
    try:
        ok, why = tool_support(settings)
        if ok:
            return "agent", f"agent mode: tool-calling model {name} (tool calls checked on {where})"
        routes, how = route_support(settings)  # probed only for a model that does not call tools
    except LLMError as exc:
        return "router", (f"offline mode: {exc.message} A plain message is an idea to draw; /mode agent "
                          "tries the model again.")
    if routes:
        return "routed", (f"routed mode: {name} does not call tools on {where} ({why}); each message is one "
                          "JSON choice of action")
    return "keywords", (f"keyword mode: {name} neither calls tools on {where} ({why}) nor chooses actions "
                        f"reliably ({how}); the offline router picks each action by its words, and {name} "
                        "still writes the prompts")


def _can_call_tools(model) -> bool:
    try:
        from langchain_core.language_models import BaseChatModel
    except ImportError:  # pragma: no cover
        return False
    bind = getattr(type(model), "bind_tools", None)
    return bind is not None and bind is not BaseChatModel.bind_tools
