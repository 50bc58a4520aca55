"""The arrows point one way: tui -> agent -> tools. Checked on every import statement (also the
lazy ones inside functions), so a new backward import fails here."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def imports(package: str):
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield path.relative_to(ROOT).as_posix(), alias.name
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                yield path.relative_to(ROOT).as_posix(), node.module


def _top(name: str) -> str:
    return name.split(".")[0]


def test_tools_never_import_agent_langchain_textual_or_mcp():
    bad = [(f, m) for f, m in imports("tools")
           if _top(m) in {"agent", "tui", "textual", "mcp", "mcp_types"} or _top(m).startswith("langchain")]
    assert not bad, bad


def test_agent_never_imports_the_tui_or_textual():
    bad = [(f, m) for f, m in imports("agent") if _top(m) in {"tui", "textual", "textual_image"}]
    assert not bad, bad


def test_only_the_mcp_module_imports_mcp():
    bad = [(f, m) for pkg in ("agent", "tools", "tui") for f, m in imports(pkg)
           if _top(m) in {"mcp", "mcp_types"} and f != "agent/mcp_server.py"]
    assert not bad, bad


def test_the_loop_is_plain_python():
    bad = [m for f, m in imports("agent") if f == "agent/loop.py" and _top(m).startswith("langchain")]
    assert not bad, bad


def test_the_chat_command_is_registered_from_the_tui():
    from agent.cli import commands

    assert commands()["chat"][0] == "tui.command"


def test_ray_is_imported_lazily_and_only_by_the_ray_modules():
    import os
    import subprocess
    import sys

    allowed = {"agent/ray_batch.py", "agent/ray_serve.py"}
    bad = [(f, m) for pkg in ("agent", "tools", "tui") for f, m in imports(pkg) if _top(m) == "ray" and f not in allowed]
    assert not bad, bad
    code = ("import sys, agent.ray_batch, agent.ray_serve, agent.commands.batch, agent.commands.serve; "
            "assert 'ray' not in sys.modules, 'ray imported at import time'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
