"""Check what the configured LLM server and model can do.

  imagent llm check                  probe the server: structured-output methods, tools, context
  imagent llm check --json           the same findings as JSON
  imagent llm check --llm MODEL      another model on the same server

Each structured-output method (json_schema, json_object_schema, function_calling, json_mode,
plain) gets one tiny request (64 tokens, no retries); then a tool call with tool_choice "auto" and
its result sent back, as the chat agent does; where that fails, three plain messages routed as the
chat's routed mode does (a model that routes one wrongly gets keyword mode); on a local server, two test
ideas expanded with the compact worked example (a model that answers both cleanly gets it: fewer tokens
per expansion; else the default example). The findings are cached in
$IMAGENT_HOME/llm_capabilities.json per server and model: with IMAGENT_LLM_METHOD unset (auto),
expansion, requirements and revision use the best method found, and the chat uses agent mode only
where tools work.
"""
from __future__ import annotations

from agent.commands.common import emit, note, settings_from


def add_arguments(p) -> None:
    p.add_argument("action", choices=["check"], help="check: probe the server and model")
    p.add_argument("--llm", metavar="MODEL", help="the model to check (default: $IMAGENT_LLM_MODEL)")
    p.add_argument("--json", action="store_true", help="print the findings as JSON")


def run(args) -> int:
    from agent.chat.routing import probe_routing
    from agent.errors import LLMError
    from agent.llm_probe import cache_path, check, save

    overrides = {"llm_model": args.llm} if args.llm else {}
    settings = settings_from(args, **overrides)
    try:
        found = check(settings)
    except LLMError as exc:  # --json: the finding on stdout too; the error and its exit code as ever
        if args.json:
            from agent.llm import describe_server

            configured = bool(settings.llm_model)
            emit(args, {"configured": configured, "ok": False,
                        "server": describe_server(settings) if configured else None,
                        "model": settings.llm_model or None, "error": exc.message, "hint": exc.hint}, [])
        raise
    best = settings.llm_method if settings.llm_method != "auto" else found["best"]
    if settings.llm_base_url and any(r["ok"] for r in found["methods"].values()):
        from agent.expand import probe_example_form
        from agent.llm import build_chat_model, llm_error

        try:
            found["example"] = probe_example_form(settings, build_chat_model(settings), best)
            save(settings, {"example": found["example"]})
        except Exception as exc:  # not a finding about the model: nothing cached, probed again on first use
            found["example"] = {"form": "default", "seconds": 0.0,
                                "note": f"not probed: {llm_error(exc, settings).message}"}
    if not found["tools"]["ok"]:  # the chat's routed mode: does the model choose actions right?
        found["routing"] = probe_routing(settings)
        save(settings, {"routing": found["routing"]})
    lines = [f"server:  {found['server']}", f"model:   {found['model']}", "structured output:"]
    for method, result in found["methods"].items():
        mark = "ok  " if result["ok"] else ("part" if result["accepted"] else "no  ")
        lines.append(f"  {mark} {method:<19}{result['seconds']:>6.2f} s  {result['note']}")
    tools = found["tools"]
    lines.append(f"tools:   {'ok' if tools['ok'] else 'no'} ({tools['note']})")
    lines.append(f"context: {found['context'] or 'not reported by the server'}")
    lines.append(f"method:  {best}" + (" (IMAGENT_LLM_METHOD)" if settings.llm_method != "auto" else
                                       " (the best that works; set IMAGENT_LLM_METHOD to override)"))
    example = found.get("example") or {}
    if example:
        lines.append(f"example: {example['form']} ({example['note']}; {example['seconds']:.1f} s)"
                     + (f"; IMAGENT_LLM_EXAMPLE sets {settings.llm_example}" if settings.llm_example != "auto" else ""))
    routing = found.get("routing") or {}
    if routing:
        lines.append(f"routing: {'ok' if routing['ok'] else 'no'} ({routing['right']} test messages routed right"
                     + ("" if routing["ok"] else f": {routing['note']}") + ")")
    lines.append("chat:    " + ("agent mode (tool calls)" if tools["ok"] else
                                "routed mode (a JSON choice of action)" if routing.get("ok") else
                                "keyword mode (the offline router chooses the action; the model writes the prompts)"))
    lines.append(f"cached in {cache_path(settings)}")
    emit(args, {**found, "method": best, "cache": str(cache_path(settings))}, lines)
    if not any(r["ok"] for r in found["methods"].values()):
        note("imagent: no structured-output method gave a usable answer: expansion will fall back to the template. "
             "Try a larger model, or check the server's log.")
        return 1
    return 0
