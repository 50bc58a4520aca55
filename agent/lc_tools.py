"""imagent's capabilities as LangChain tools that any tool-calling agent can bind.

    from agent.api import open_session
    from agent.lc_tools import make_tools
    tools = make_tools(open_session())          # run, follow_up, generate, edit, upscale, expand, ...
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
from agent.events import Call, Sink
from agent.jobs import JobQueue
from agent.session import Session
from agent.tool_schemas import TOOLS, ToolSpec


def compact(result: dict) -> dict:
    """The result without each image's full metadata (kept in the artifact), a follow-up's run's too."""
    out = dict(result)
    if isinstance(out.get("images"), list):
        out["images"] = [{k: v for k, v in im.items() if k != "metadata"} for im in out["images"]]
    out.pop("record", None)
    if isinstance(out.get("run"), dict):  # follow_up: the run it made
        out["run"] = {k: v for k, v in out["run"].items() if k != "record"}
    return out


def error_text(exc: BaseException) -> str:
    return _text(error_payload(exc)["error"])


def _text(err: dict) -> str:
    return f"Error: {err['message']}" + (f" Hint: {err['hint']}" if err.get("hint") else "")


def make_tools(session: Session, *, paths: PathPolicy | None = None, sink: Sink | None = None,
               names: list[str] | None = None, queue: JobQueue | None = None) -> list:
    """LangChain tools over `session` (all of agent.tool_schemas.TOOLS, or those in `names`).

    `paths`: where caller-given file paths may point (default: anywhere; pass
    `PathPolicy.confined(inputs, outputs)` to fence an untrusted model in). `sink` receives the
    typed events (agent.events) of long calls. Pixel work runs through one agent.jobs.JobQueue,
    so parallel tool calls queue instead of competing for memory: `queue`, to share one between
    several tool sets over the same session (default: a new one for these tools).
    """
    caps = Capabilities(session, paths)
    queue = queue if queue is not None else JobQueue()
    specs = [t for t in TOOLS if names is None or t.name in names]
    unknown = set(names or ()) - {t.name for t in specs}
    if unknown:
        raise ImagentError(f"Unknown tool name(s): {', '.join(sorted(unknown))}.",
                           f"Use: {', '.join(t.name for t in TOOLS)}.")
    return [_tool(caps, spec, queue, sink) for spec in specs]


def _tool(caps: Capabilities, spec: ToolSpec, queue: JobQueue, sink: Sink | None):
    from langchain_core.tools import StructuredTool
    from pydantic import ValidationError

    def call(**kwargs):
        try:
            inp = caps.validate(spec.name, kwargs)
            if not spec.long_running:
                result = caps.call(spec.name, inp)
            else:
                job = queue.submit(spec.name, kwargs,
                                   lambda c: caps.call(spec.name, inp, call=Call(sink=sink, cancel=c.cancel)))
                queue.wait(job)
                if job.error is not None:
                    return _text(job.error), {"error": job.error}
                result = job.result
        except (ImagentError, ValidationError) as exc:
            return error_text(exc), error_payload(exc)
        return json.dumps(compact(result), default=str), result

    call.__name__ = spec.name
    return StructuredTool.from_function(
        func=call, name=spec.name, description=spec.description, args_schema=spec.input,
        response_format="content_and_artifact",
        handle_validation_error=lambda exc: error_text(exc) if isinstance(exc, ValidationError) else f"Error: {exc}")
