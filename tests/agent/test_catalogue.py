"""One action catalogue: a limit and its message are the same at every front door (the CLI, the
chat's slash commands, MCP/LangChain tool calls, batch lines); only the CLI adds its flag."""
from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from agent.batch import BatchOptions, Item, Line, item_request_fields
from agent.capabilities import Capabilities, error_payload
from agent.chat import ChatController
from agent.cli import main
from agent.errors import InvalidInput
from agent.tool_schemas import GenerateInput, RunInput, help_of
from tools.generate import GenerateRequest, check_request
from tools.limits import LIMITS

WORDS = "steps 600 is out of range."
HINT = "Use 1 to 500 steps."


def test_steps_600_reads_the_same_everywhere(session, tiny_sd_path, tmp_path, capsys):
    # the CLI: the shared words, then its own flag
    assert main(["generate", "x", "--steps", "600", "--model", str(tiny_sd_path), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"imagent: error: {WORDS}\n  {HINT} (option --steps)" in err

    # the chat's slash command
    with pytest.raises(InvalidInput) as info:
        ChatController(session).handle("/steps 600")
    assert (info.value.message, info.value.hint, info.value.param) == (WORDS, HINT, "steps")

    # a tool call (MCP and LangChain validate through the same input model)
    with pytest.raises(ValidationError) as bad:
        Capabilities(session).validate("generate", {"prompt": "x", "steps": 600})
    assert error_payload(bad.value)["error"] == {"type": "InvalidInput", "message": WORDS, "hint": HINT,
                                                "param": "steps"}

    # a batch line
    item = Item(key="k", line=Line(1, {"prompt": "x", "steps": 600}), point={})
    with pytest.raises(InvalidInput) as info:
        item_request_fields(session, item, BatchOptions())
    assert info.value.message == f"Line 1: {WORDS}" and info.value.hint.startswith(HINT)

    # and the Python API's request check
    with pytest.raises(InvalidInput) as info:
        check_request(GenerateRequest("x", steps=600))
    assert (info.value.message, info.value.hint) == (WORDS, HINT)


def test_the_input_models_carry_the_shared_limits():
    for model, name in ((GenerateInput, "steps"), (GenerateInput, "count"), (GenerateInput, "cfg"),
                        (RunInput, "candidates"), (RunInput, "rounds")):
        schema = model.model_json_schema()["properties"][name]
        bounds = {k: v for k, v in (schema.get("anyOf", [schema])[0]).items() if k in {"minimum", "maximum"}}
        limit = LIMITS[name]
        assert bounds == {"minimum": limit.low, "maximum": limit.high}, (name, bounds)


def test_cli_help_is_the_catalogues(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert " ".join(help_of(GenerateInput, "steps").split()) in out
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert " ".join(help_of(RunInput, "candidates").split()) in out
    assert json.dumps(LIMITS["candidates"].high) in out


def test_the_chat_agents_tools_take_the_catalogues_fields_and_stay_grammar_safe(session):
    from langchain_core.utils.function_calling import convert_to_openai_tool

    from agent.tool_schemas import GRAMMAR_SAFE_LENGTH, UpscaleInput
    from loopback_llm import _max_length

    tools = {t.name: t for t in ChatController(session).tool_agent.tools()}
    defaults = tools["set_defaults"].args_schema.model_json_schema()["properties"]
    steps = defaults["steps"]["anyOf"][0]
    assert (steps["minimum"], steps["maximum"]) == (LIMITS["steps"].low, LIMITS["steps"].high)
    assert defaults["candidates"]["description"] == RunInput.model_fields["candidates"].description
    upscale = tools["upscale_image"].args_schema.model_json_schema()["properties"]
    assert upscale["method"]["description"] == UpscaleInput.model_fields["method"].description
    with pytest.raises(ValidationError):  # the catalogue's limit holds for the chat agent too
        tools["set_defaults"].args_schema.model_validate({"steps": 600})
    for tool in tools.values():
        assert _max_length(convert_to_openai_tool(tool)) <= GRAMMAR_SAFE_LENGTH, tool.name


def test_langchain_tools_stay_grammar_safe_as_langchain_converts_them(session):
    """LangChain binds a tool through a subset model that drops the input model's config: the long
    text limits must stay out of that schema too (llama.cpp fails to compile maxLength 4000)."""
    from langchain_core.utils.function_calling import convert_to_openai_tool

    from agent.lc_tools import make_tools
    from agent.tool_schemas import GRAMMAR_SAFE_LENGTH
    from loopback_llm import _max_length

    tools = make_tools(session)
    assert {t.name for t in tools} >= {"run", "generate", "edit", "check_safety", "score"}
    for tool in tools:
        assert _max_length(convert_to_openai_tool(tool)) <= GRAMMAR_SAFE_LENGTH, tool.name
    with pytest.raises(ValidationError):  # still enforced when the call is validated
        tools[0].args_schema.model_validate({"idea": "x" * 2001})


def test_the_chats_actions_are_one_list_its_slash_commands_tools_and_routes_are_views_of(session, tiny_sd_path):
    """agent.chat.actions: /edit ... strength=2 and an edit_image tool call with strength 2 fail with the
    catalogue's words; the tool's description is the slash command's help; every routed choice is an action."""
    from agent.chat.actions import NAMES, catalogue
    from agent.chat.routing import ROUTE_ACTIONS
    from agent.chat.slash import COMMAND_HELP

    chat = ChatController(session)
    chat.handle("/steps 1")
    chat.handle("/rounds 1")
    chat.handle("/candidates 1")
    chat.handle("two red circles")
    made = len(chat.state.images)
    with pytest.raises(InvalidInput) as info:
        chat.handle("/edit a blue square strength=2")
    assert (info.value.message, info.value.param) == ("strength 2.0 is out of range.", "strength")
    tools = {t.name: t for t in chat.tool_agent.tools()}
    for said in (tools["edit_image"].invoke({"instruction": "a blue square", "strength": 2}),  # LangChain checks
                 tools["edit_image"].func(instruction="a blue square", strength=2)):  # the action checks
        assert said.startswith("Error: strength 2") and "is out of range." in said, said  # the model reads it
        assert LIMITS["strength"].text() in said
    assert len(chat.state.images) == made, "nothing was generated"

    action = catalogue()
    assert tools["refine_last"].description == action["refine_last"].help == COMMAND_HELP["refine"][1]
    assert tools["edit_image"].args_schema is action["edit_image"].input
    assert set(NAMES) == set(action) and set(NAMES) <= set(tools)
    assert set(ROUTE_ACTIONS) - {"reply"} <= set(action)
    with pytest.raises(InvalidInput, match="image"):
        chat.handle("/open #x")
