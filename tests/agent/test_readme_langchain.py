"""The README's LangChain-over-MCP example: every tool call in one `client.session(...)`, so one
`imagent mcp` (one loaded model) serves them all. langchain-mcp-adapters needs mcp<2 and imagent
mcp>=2, so the two cannot share this environment: the example runs here against stand-ins for the
adapters' client (the API of langchain_mcp_adapters 0.3: MultiServerMCPClient.session, tools.load_mcp_tools)
that fail a call made outside a session, and check the arguments against imagent's own tool schemas."""
from __future__ import annotations

import ast
import re
import sys
import types
from contextlib import asynccontextmanager
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def _example() -> tuple[str, str]:
    """(the README's LangChain-over-MCP code block, the text before it)."""
    text = README.read_text()
    found = [m for m in re.finditer(r"```python\n(.*?)```", text, flags=re.S) if "langchain_mcp_adapters" in m.group(1)]
    assert len(found) == 1, "one LangChain-over-MCP example in the README"
    return found[0].group(1), text[:found[0].start()]


def test_the_readme_example_loads_the_tools_from_one_open_session():
    code, before = _example()
    tree = ast.parse(code)
    imports = {(n.module, a.name) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert ("langchain_mcp_adapters.client", "MultiServerMCPClient") in imports
    assert ("langchain_mcp_adapters.tools", "load_mcp_tools") in imports
    assert "client.session(" in code and "get_tools(" not in code
    sessions = [w for w in ast.walk(tree) if isinstance(w, ast.AsyncWith)
                and any("client.session(" in ast.unparse(i.context_expr) for i in w.items)]
    assert len(sessions) == 1
    inside = {id(n) for stmt in sessions[0].body for n in ast.walk(stmt)}
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and ast.unparse(n.func).endswith(
        ("ainvoke", "invoke", "load_mcp_tools"))]
    assert calls and all(id(c) in inside for c in calls), "every tool call inside the one session"
    why = before.rstrip().rsplit("\n\n", 1)[-1]         # the paragraph that introduces the example says why
    assert "get_tools()" in why and "every tool call" in why and "model" in why


def test_the_readme_example_makes_every_call_in_one_session(monkeypatch, capsys):
    from agent.tool_schemas import TOOL_BY_NAME

    code, _ = _example()
    log = {"connections": None, "sessions": 0, "open": 0, "calls": []}

    class Tool:
        def __init__(self, name):
            self.name = name

        async def ainvoke(self, args):
            assert log["open"] == 1, "a tool call outside the session starts a fresh imagent mcp (and model)"
            TOOL_BY_NAME[self.name].input.model_validate(args)      # arguments imagent's tool takes
            log["calls"].append(self.name)
            return f"{self.name} ok"

    class MultiServerMCPClient:
        def __init__(self, connections, **_):
            log["connections"] = connections

        @asynccontextmanager
        async def session(self, server_name, **_):
            assert server_name in log["connections"]
            log["sessions"] += 1
            log["open"] += 1
            try:
                yield ("session", server_name)
            finally:
                log["open"] -= 1

        async def get_tools(self, **_):
            raise AssertionError("get_tools(): a new imagent mcp for every tool call")

    async def load_mcp_tools(session, **_):
        assert log["open"] == 1 and session[0] == "session"
        return [Tool(name) for name in TOOL_BY_NAME]

    package = types.ModuleType("langchain_mcp_adapters")
    client_module = types.ModuleType("langchain_mcp_adapters.client")
    tools_module = types.ModuleType("langchain_mcp_adapters.tools")
    client_module.MultiServerMCPClient = MultiServerMCPClient
    tools_module.load_mcp_tools = load_mcp_tools
    package.client, package.tools = client_module, tools_module
    for name, module in (("langchain_mcp_adapters", package), ("langchain_mcp_adapters.client", client_module),
                         ("langchain_mcp_adapters.tools", tools_module)):
        monkeypatch.setitem(sys.modules, name, module)
    exec(compile(code, str(README), "exec"), {"__name__": "readme_example"})
    assert log["sessions"] == 1 and log["open"] == 0 and len(log["calls"]) >= 2
    (connection,) = log["connections"].values()
    assert connection["transport"] == "stdio" and connection["args"] == ["mcp"]
    assert Path(connection["command"]).name == "imagent"
    assert capsys.readouterr().out.count("generate ok") == log["calls"].count("generate")
