"""LangChain tools over the session: schemas shared with MCP, a scripted agent that uses them."""
from __future__ import annotations

import json

import pytest
from fakes import scripted
from langchain_core.messages import AIMessage, ToolMessage

from agent.lc_tools import make_tools
from agent.tool_schemas import TOOLS


def test_tools_use_the_shared_schemas(session):
    tools = make_tools(session)
    assert [t.name for t in tools] == [t.name for t in TOOLS]
    for tool, spec in zip(tools, TOOLS):
        assert tool.args_schema is spec.input
        for name, field in spec.input.model_fields.items():
            assert field.description, f"{spec.name}.{name} has no description"


def test_generate_tool_returns_compact_text_and_full_artifact(session):
    gen = {t.name: t for t in make_tools(session)}["generate"]
    msg = gen.invoke({"type": "tool_call", "id": "c1", "name": "generate",
                      "args": {"prompt": "two red circles", "steps": 2, "seed": 5}})
    assert isinstance(msg, ToolMessage)
    data = json.loads(msg.content)
    assert data["images"][0]["seed"] == 5 and "metadata" not in data["images"][0]
    assert msg.artifact["images"][0]["metadata"]["params"]["steps"] == 2


def test_bad_arguments_come_back_as_text(session):
    tools = {t.name: t for t in make_tools(session)}
    msg = tools["generate"].invoke({"type": "tool_call", "id": "c1", "name": "generate",
                                    "args": {"prompt": "x", "steps": 0}})
    assert msg.content.startswith("Error:") and "steps" in msg.content
    msg = tools["edit"].invoke({"type": "tool_call", "id": "c2", "name": "edit",
                                "args": {"prompt": "x", "image": "/no/such/file.png"}})
    assert msg.content.startswith("Error:") and "does not exist" in msg.content


def test_agent_drives_the_tools(session):
    from langchain.agents import create_agent

    script = [
        AIMessage(content="", tool_calls=[{"id": "t1", "name": "generate",
                                           "args": {"prompt": "two red circles", "steps": 2, "seed": 11}}]),
        AIMessage(content="", tool_calls=[{"id": "t2", "name": "list_images", "args": {"limit": 5}},
                                          {"id": "t3", "name": "check_safety", "args": {"prompt": "a blue square"}}]),
        AIMessage(content="Done: one image."),
    ]
    agent = create_agent(scripted(*script), make_tools(session))
    state = agent.invoke({"messages": [("user", "draw two red circles")]})
    tool_msgs = [m for m in state["messages"] if isinstance(m, ToolMessage)]
    assert [m.name for m in tool_msgs] == ["generate", "list_images", "check_safety"]
    made = json.loads(tool_msgs[0].content)["images"][0]
    listed = json.loads(tool_msgs[1].content)["images"]
    assert listed[0]["image_id"] == made["image_id"] and listed[0]["seed"] == 11
    assert json.loads(tool_msgs[2].content)["allowed"] is True
    assert state["messages"][-1].content == "Done: one image."


def test_unknown_tool_name_is_rejected(session):
    from agent.errors import ImagentError

    with pytest.raises(ImagentError, match="Unknown tool"):
        make_tools(session, names=["generate", "paint"])


def test_tool_sets_over_one_session_can_share_one_queue(session):
    from agent.jobs import JobQueue

    queue = JobQueue()
    first, second = ({t.name: t for t in make_tools(session, queue=queue)} for _ in range(2))
    first["generate"].invoke({"prompt": "two red circles", "steps": 1, "seed": 1})
    second["generate"].invoke({"prompt": "a blue square", "steps": 1, "seed": 2})
    assert [j.arguments["prompt"] for j in queue.jobs()] == ["two red circles", "a blue square"]
    alone = {t.name: t for t in make_tools(session)}  # no queue given: a new one, not this one
    alone["generate"].invoke({"prompt": "a cat", "steps": 1, "seed": 3})
    assert len(queue.jobs()) == 2
