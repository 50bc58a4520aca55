"""imagent's capabilities as LangChain tools that any tool-calling agent can bind.

    from agent.api import open_session
    from agent.lc_tools import make_tools
    tools = make_tools(open_session())          # run, generate, edit, upscale, expand, check_safety, ...
    agent = langchain.agents.create_agent(chat_model, tools)

Thin: each tool is a StructuredTool whose `args_schema` is the shared input model from
agent.tool_schemas (the MCP server offers the very same schemas) and whose body is
agent.capabilities. A tool returns (content, artifact): `content` is compact JSON for the model
(ids, paths, seeds, prompts, scores; the full metadata is left out), `artifact` is the complete
result dict for the program around the agent (paths to show, full metadata). Errors (bad
arguments, blocked prompts, missing files) come back to the model as the tool's text
"Error: ... Hint: ..." so it can correct itself; they do not raise.
"""
from __future__ import annotations

import json

from agent.capabilities import Capabilities, PathPolicy, error_payload
from agent.errors import ImagentError
from agent.session import ProgressSink, Session
from agent.tool_schemas import TOOLS, ToolSpec


def compact(result: dict) -> dict:
    """The result without each image's full metadata (kept in the artifact)."""
    out = dict(result)
    if isinstance(out.get("images"), list):
        out["images"] = [{k: v for k, v in im.items() if k != "metadata"} for im in out["images"]]
    out.pop("record", None)
    return out


def error_text(exc: BaseException) -> str:
    err = error_payload(exc)["error"]
    return f"Error: {err['message']}" + (f" Hint: {err['hint']}" if err.get("hint") else "")


def make_tools(session: Session, *, paths: PathPolicy | None = None, progress: ProgressSink | None = None,
               names: list[str] | None = None) -> list:
    """LangChain tools over `session` (all of agent.tool_schemas.TOOLS, or those in `names`).

    `paths`: where caller-given file paths may point (default: anywhere; pass
    `PathPolicy.confined(inputs, outputs)` to fence an untrusted model in). `progress` receives
    agent.session.Progress events during long calls. Pixel work is serialized per session.
    """
    caps = Capabilities(session, paths)
    specs = [t for t in TOOLS if names is None or t.name in names]
    unknown = set(names or ()) - {t.name for t in specs}
    if unknown:
        raise ImagentError(f"Unknown tool name(s): {', '.join(sorted(unknown))}.",
                           f"Use: {', '.join(t.name for t in TOOLS)}.")
    return [_tool(caps, spec, progress) for spec in specs]


def _tool(caps: Capabilities, spec: ToolSpec, progress: ProgressSink | None):
    from langchain_core.tools import StructuredTool
    from pydantic import ValidationError

    def call(**kwargs):
        try:
            result = caps.call(spec.name, kwargs, progress=progress)
        except (ImagentError, ValidationError) as exc:
            return error_text(exc), error_payload(exc)
        return json.dumps(compact(result), default=str), result

    call.__name__ = spec.name
    return StructuredTool.from_function(
        func=call, name=spec.name, description=spec.description, args_schema=spec.input,
        response_format="content_and_artifact",
        handle_validation_error=lambda exc: error_text(exc) if isinstance(exc, ValidationError) else f"Error: {exc}")
