"""The LLM path on servers that are not OpenAI: a loopback server that behaves like llama-cpp-python's
(tests/loopback_llm.py, llama_cpp=True), the real langchain-openai client, and every LLM use
(expansion, requirements, revision). Issue 14."""
from __future__ import annotations

import json
import tomllib
from pathlib import Path

import httpx
import pytest
from loopback_llm import LoopbackLLM, Status, ToolCall

from agent.config import load_settings
from agent.errors import LLMError
from agent.expand import EXAMPLE_PROBES, expand_idea
from agent.spec_checks import drop_conflicts
from agent.schemas import PromptSpec

GOOD = {"subject": "a cat typing on a laptop at night", "style": "cinematic film still",
        "lighting": "blue monitor glow", "composition": "medium shot", "quality": ["highly detailed"],
        "negatives": ["blurry", "text"], "extras": ["cluttered desk"]}
ROOT = Path(__file__).resolve().parents[2]


def settings_for(server, **kw):
    kw.setdefault("llm_fallback", "error")
    kw.setdefault("llm_timeout", 5.0)
    kw.setdefault("llm_example", "default")  # the example-form probe has its own tests
    return load_settings(model="runwayml/stable-diffusion-v1-5", llm_model="local-model",
                         llm_base_url=server.base_url, **kw)


def post(server, body):
    return httpx.post(server.base_url + "/chat/completions", json={"model": "m", "max_tokens": 8, **body}, timeout=5)


# -- the loopback server itself ---------------------------------------------------------------------------
def test_the_loopback_server_refuses_what_llama_cpp_refuses():
    hello = [{"role": "user", "content": "hi"}]
    with LoopbackLLM([GOOD], llama_cpp=True, n_ctx=200) as server:
        r = post(server, {"messages": hello, "response_format": {"type": "json_schema", "json_schema": {
            "name": "x", "schema": {"type": "object"}}}})
        assert r.status_code == 500 and "1 validation error" in r.json()["error"]["message"]
        tool_turn = [*hello, {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c", "content": "ok"}]
        assert post(server, {"messages": tool_turn}).status_code == 500
        tool_turn[1]["content"] = ""
        assert post(server, {"messages": tool_turn}).status_code == 200
        big = {"type": "object", "properties": {"idea": {"type": "string", "maxLength": 4000}}}
        r = post(server, {"messages": hello, "response_format": {"type": "json_object", "schema": big}})
        assert r.status_code == 500 and r.json()["error"]["message"] == "failed to parse grammar"
        big["properties"]["idea"]["maxLength"] = 400
        assert post(server, {"messages": hello, "response_format": {"type": "json_object", "schema": big}}).status_code == 200
        r = post(server, {"messages": [{"role": "user", "content": "x" * 2000}]})
        assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
        tools = [{"type": "function", "function": {"name": "ping", "parameters": {"type": "object"}}}]
        prose = post(server, {"messages": hello, "tools": tools, "tool_choice": "auto"}).json()
        assert "tool_calls" not in prose["choices"][0]["message"], "tool_choice auto: the model answers in prose"
        forced = post(server, {"messages": hello, "tools": tools,
                               "tool_choice": {"type": "function", "function": {"name": "ping"}}}).json()
        assert forced["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "ping"
    with LoopbackLLM([ToolCall("ping", {"word": "hi"})], llama_cpp=True) as server:
        chosen = post(server, {"messages": hello, "tools": tools, "tool_choice": "auto"}).json()
        assert chosen["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "ping"


# -- 1. a 500 that refuses the method ----------------------------------------------------------------------
def test_a_500_that_refuses_the_method_is_not_retried_and_says_which_method():
    with LoopbackLLM([GOOD], llama_cpp=True) as server:
        with pytest.raises(LLMError) as info:
            expand_idea("a cat", settings_for(server, llm_method="json_schema", llm_max_retries=2))
    assert len(server.requests) == 1, "a refusal of the request is not retried"
    err = info.value
    assert "'response_format', 'type'" in err.message and "json_schema" in err.message, err.message
    assert "File" not in err.message, "no traceback in the message"
    assert "IMAGENT_LLM_METHOD" in err.hint and "imagent llm check" in err.hint


def test_a_plain_500_is_still_retried():
    with LoopbackLLM([Status(500), GOOD]) as server:
        e = expand_idea("a cat", settings_for(server, llm_method="json_schema", llm_max_retries=2))
    assert e.spec.subject == GOOD["subject"] and len(server.requests) == 2


# -- 4. revision honours IMAGENT_LLM_METHOD -------------------------------------------------------------------
def revise_once(settings):
    from agent.critique import reviser_for
    from agent.revise import Attempt
    from agent.session import Session

    session = Session(settings)
    reviser = reviser_for(session, "llm", None, lambda s: (s.subject, ""), "sd")
    spec = PromptSpec(subject="two red circles")
    out = reviser.revise(Attempt(spec, "two red circles", "", 5.0), [], "two red circles", ["two red circles"])
    return reviser, out


@pytest.mark.parametrize("method", ["function_calling", "json_mode", "json_object_schema"])
def test_revision_honours_the_method(method, monkeypatch):
    revised = {**GOOD, "subject": "two red circles, large"}
    with LoopbackLLM([revised], llama_cpp=True) as server:
        monkeypatch.setenv("IMAGENT_LLM_METHOD", method)
        reviser, out = revise_once(settings_for(server))
    assert not reviser.warnings and out.spec.subject == "two red circles, large"
    assert len(server.requests) == 1
    body = server.requests[0]
    assert ("tools" in body) == (method == "function_calling")
    assert ("schema" in body.get("response_format", {})) == (method == "json_object_schema")


# -- 5. max_tokens on every call --------------------------------------------------------------------------------
def test_every_llm_call_bounds_its_answer(monkeypatch):
    from agent.requirements import llm_checklist
    from agent.llm import build_chat_model

    with LoopbackLLM([GOOD], llama_cpp=True) as server:
        s = settings_for(server, llm_method="json_object_schema")
        expand_idea("a cat", s)
        revise_once(s)
        llm_checklist("a cat", build_chat_model(s), method="json_object_schema")
        assert server.unbounded == 0 and all(b["max_tokens"] == 512 for b in server.requests)
        monkeypatch.setenv("IMAGENT_LLM_MAX_TOKENS", "200")
        expand_idea("a cat", load_settings(model="runwayml/stable-diffusion-v1-5", llm_model="m",
                                           llm_base_url=server.base_url, llm_method="json_object_schema"))
    assert server.requests[-1]["max_tokens"] == 200


def test_max_tokens_is_a_checked_setting(monkeypatch):
    from agent.errors import ConfigError

    monkeypatch.setenv("IMAGENT_LLM_MAX_TOKENS", "0")
    with pytest.raises(ConfigError, match="IMAGENT_LLM_MAX_TOKENS"):
        load_settings()


# -- 6. the timeout message states the real wait ------------------------------------------------------------------
def test_the_timeout_message_states_the_whole_wait():
    from agent.llm import llm_error
    import openai

    s = load_settings(llm_model="m", llm_base_url="http://127.0.0.1:9/v1", llm_timeout=60, llm_max_retries=2)
    err = llm_error(openai.APITimeoutError(request=httpx.Request("POST", "http://x")), s)
    assert "3 tries of 60 s" in err.message and "about 182 s in all" in err.message, err.message
    one = llm_error(openai.APITimeoutError(request=httpx.Request("POST", "http://x")),
                    s.with_overrides(llm_max_retries=0))
    assert "within 60 s" in one.message and "tries" not in one.message


# -- 9. negatives never contradict the idea, short words included ----------------------------------------------------
def test_negatives_naming_short_idea_words_are_dropped():
    spec = PromptSpec(subject="a cat coding at night", negatives=["cat", "red", "blurry", "a dog"])
    assert drop_conflicts(spec, "a cat coding at night").negatives == ["red", "blurry", "a dog"]
    spec = PromptSpec(subject="two red circles", negatives=["red", "circles", "text", "a square"])
    assert drop_conflicts(spec, "two red circles").negatives == ["text", "a square"]


# -- 10. the MCP SDK the code needs is the one declared -------------------------------------------------------------
def test_the_declared_mcp_sdk_is_the_one_the_server_imports():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    mcp = next(d for d in deps if d.split(">")[0].split("<")[0].split("=")[0].strip() == "mcp")
    assert ">=2" in mcp.replace(" ", ""), mcp
    assert any(d.startswith("mcp-types") for d in deps)
    assert "import mcp_types" in (ROOT / "agent" / "mcp_server.py").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "langchain-mcp-adapters" in readme and "mcp<2" in readme.replace(" ", "")


def test_imagent_mcp_without_the_2x_sdk_says_what_to_install(monkeypatch, capsys):
    import sys

    from agent.cli import main

    monkeypatch.setitem(sys.modules, "mcp_types", None)  # as with mcp 1.x installed
    monkeypatch.delitem(sys.modules, "agent.mcp_server", raising=False)
    code = main(["mcp"])
    err = capsys.readouterr().err
    assert code != 70 and "internal error" not in err
    assert "mcp>=2" in err and "langchain-mcp-adapters" in err, err


# -- also: MCP progress carries a total; a relative threshold above the maximum warns -------------------------------
def test_progress_snapshots_carry_a_total():
    from agent.events import RoundStarted, Step
    from agent.jobs import ProgressTracker

    t = ProgressTracker()
    t(RoundStarted(1, 2, "a cat", "initial prompt", "initial"))
    t(Step(3, 12))
    snap = t.snapshot()
    assert snap["message"] == "round 1/2, step 3/12" and snap["total"] == 12 and snap["progress"] == 3
    t(Step(12, 12))
    t(Step(2, 12))  # the next image
    snap = t.snapshot()
    assert snap["progress"] == 14 and snap["total"] == 24


def test_a_relative_threshold_above_the_scores_maximum_warns():
    from agent import loop

    class Scorer:
        formula = "clipscore"

    info = loop.calibrate(loop.LoopOptions(threshold=1.5), "two red circles", Scorer(), lambda idea: [])
    assert not info.get("warning")
    info = loop.calibrate(loop.LoopOptions(threshold=1.5), "two red circles",
                          type("S", (Scorer,), {"score": lambda self, ims, t: [2.0, 2.0]})(), lambda idea: [1, 2])
    assert info["target"] == 3.0 and "2.5" in info["warning"] and "never" in info["warning"]


# -- 7. schemas the grammars compile ----------------------------------------------------------------------------------
def test_tool_schemas_have_no_grammar_breaking_max_length_but_still_enforce_it():
    from pydantic import ValidationError
    from langchain_core.utils.function_calling import convert_to_openai_tool

    from agent.tool_schemas import GRAMMAR_SAFE_LENGTH, TOOLS, RunInput
    from loopback_llm import _max_length

    for spec in TOOLS:
        schema = spec.input.model_json_schema()
        assert _max_length(schema) <= GRAMMAR_SAFE_LENGTH, spec.name
        tool = convert_to_openai_tool(spec.input)
        assert _max_length(tool) <= GRAMMAR_SAFE_LENGTH, spec.name
    assert "At most 2000 characters." in RunInput.model_json_schema()["properties"]["idea"]["description"]
    with pytest.raises(ValidationError):
        RunInput(idea="x" * 2001)
    with LoopbackLLM([{"idea": "two red circles"}], llama_cpp=True) as server:
        tool = convert_to_openai_tool(RunInput)
        r = post(server, {"messages": [{"role": "user", "content": "draw"}], "tools": [tool],
                          "tool_choice": {"type": "function", "function": {"name": tool["function"]["name"]}}})
    assert r.status_code == 200, r.text


def test_mcp_tool_schemas_are_grammar_safe():
    from agent.mcp_server import ImagentMCP
    from agent.tool_schemas import GRAMMAR_SAFE_LENGTH
    from loopback_llm import _max_length

    tools = ImagentMCP.tools(None)
    assert tools and all(_max_length(t.input_schema) <= GRAMMAR_SAFE_LENGTH for t in tools)


def test_the_schemas_sent_for_expansion_and_requirements_are_small_and_bounded():
    from agent.llm import ANSWER_MAX_ITEMS, ANSWER_MAX_LENGTH, llm_schema
    from loopback_llm import _max_length

    schema = llm_schema(PromptSpec)
    assert _max_length(schema) == ANSWER_MAX_LENGTH and "$defs" not in json.dumps(schema)
    assert schema["required"] == ["subject"] and schema["properties"]["subject"]["maxLength"] == ANSWER_MAX_LENGTH
    assert schema["properties"]["negatives"]["maxItems"] == ANSWER_MAX_ITEMS
    assert "maxLength" not in json.dumps(llm_schema(__import__("agent.chat", fromlist=["RouteChoice"]).RouteChoice)
                                         ["properties"]["action"]), "no bound on an enum"
    with LoopbackLLM([GOOD], llama_cpp=True, grammar_max_length=ANSWER_MAX_LENGTH) as server:
        e = expand_idea("a cat", settings_for(server, llm_method="json_object_schema"))
        from agent.llm import build_chat_model
        from agent.requirements import llm_checklist

        cl, warnings = llm_checklist("a cat", build_chat_model(settings_for(server)), method="json_object_schema")
    assert e.expander == "llm:local-model" and server.statuses == [200, 200], "both schemas compiled"
    assert cl.source == "parser" and "Field required" in warnings[0], "GOOD is no checklist: the rules, and why" 


# -- 3. semantic checks on every family: repaired once, then the idea's own words or the template, saying why -------
LOST = {**GOOD, "subject": "1.x", "style": "Stable Diffusion"}
LOST_ALL = {**LOST, "style": "<code>", "lighting": "...", "composition": "<pre>"}


@pytest.mark.parametrize("family", ["sd", "sdxl", "flux", "openai"])
def test_a_subject_that_lost_the_idea_is_repaired_once_then_the_ideas_words_say_why(family):
    with LoopbackLLM([LOST], llama_cpp=True) as server:
        e = expand_idea("two red circles", settings_for(server, llm_method="function_calling", llm_fallback="template"),
                        family=family)
    assert len(server.requests) == 2, "one repair"
    assert "lost the idea's 'circle'" in server.requests[1]["messages"][-1]["content"]
    # the model's fields that passed stay; its subject is replaced by the idea's own words, and it says so
    assert e.expander == "llm:local-model" and e.spec.subject == "two red circles"
    assert e.spec.lighting == GOOD["lighting"] and e.spec.composition == GOOD["composition"]
    assert "replaced by the idea's own words" in e.warnings[0] and "lost the idea's 'circle'" in e.warnings[0]


def test_with_nothing_else_usable_the_template_takes_it_and_says_why():
    with LoopbackLLM([LOST_ALL], llama_cpp=True) as server:
        e = expand_idea("two red circles", settings_for(server, llm_method="function_calling", llm_fallback="template"),
                        family="sd")
    assert len(server.requests) == 2, "one repair"
    assert e.expander == "template" and e.spec.subject == "two red circles"
    assert "lost the idea's 'circle'" in e.warnings[0] and "template" in e.warnings[0]


@pytest.mark.parametrize("field,value,why", [
    ("style", "<pre><code>", "is not a description"),
    ("lighting", "...", "is not a description"),
    ("style", "short comma-separated tags, please", "copies the instructions"),
    ("composition", "Framing and camera, e.g. wide", "copies the instructions"),
])
def test_junk_or_copied_fields_are_repaired(field, value, why):
    with LoopbackLLM([{**GOOD, field: value}, GOOD], llama_cpp=True) as server:
        e = expand_idea("a cat typing on a laptop", settings_for(server, llm_method="json_object_schema"))
    assert len(server.requests) == 2 and why in server.requests[1]["messages"][-1]["content"]
    assert e.spec == PromptSpec(**GOOD) and not e.warnings


def test_the_checks_hold_for_scripted_models_too_and_junk_list_items_are_dropped():
    from fakes import scripted
    from langchain_core.messages import AIMessage

    answer = {**GOOD, "negatives": ["blurry", "<br>", "cat", "..."], "quality": ["```", "sharp focus"]}
    llm = scripted(AIMessage(content=json.dumps(answer)))
    e = expand_idea("a cat typing on a laptop", load_settings(model="runwayml/stable-diffusion-v1-5"), chat_model=llm)
    assert e.spec.negatives == ["blurry"] and e.spec.quality == ["sharp focus"] and len(llm.seen) == 1
    lost = scripted(AIMessage(content=json.dumps(LOST_ALL)), AIMessage(content=json.dumps(LOST_ALL)))
    e = expand_idea("two red circles", load_settings(model="runwayml/stable-diffusion-v1-5"), chat_model=lost)
    assert e.expander == "template" and "lost the idea" in e.warnings[0]


def test_the_demo_family_keeps_the_idea_verbatim_without_a_repair():
    with LoopbackLLM([LOST], llama_cpp=True) as server:
        e = expand_idea("two red circles", settings_for(server, llm_method="function_calling"), family="demo")
    assert len(server.requests) == 1 and e.spec.subject == "two red circles" and e.expander == "llm:local-model"


def test_a_revision_that_lost_the_idea_falls_back_to_the_rules_with_why(monkeypatch):
    with LoopbackLLM([{**GOOD, "subject": "1.x", "negatives": ["red"]}], llama_cpp=True) as server:
        monkeypatch.setenv("IMAGENT_LLM_METHOD", "json_object_schema")
        reviser, out = revise_once(settings_for(server))
    assert "lost the idea's 'circle'" in reviser.warnings[0] and out.change.startswith("failed items first")
    with LoopbackLLM([{**GOOD, "subject": "two big red circles", "negatives": ["red", "blur"]}],
                     llama_cpp=True) as server:
        reviser, out = revise_once(settings_for(server))
    assert not reviser.warnings and out.spec.negatives == ["blur"], "negatives never contradict the intent"


def test_one_worked_example_is_sent_as_an_exchange_and_copying_it_is_repaired():
    copied = {**GOOD, "subject": "two red circles in the snow", "style": "wildlife photograph",
              "lighting": "soft overcast winter light"}
    fixed = {**GOOD, "subject": "two red circles", "style": "flat vector art"}
    with LoopbackLLM([copied, fixed], llama_cpp=True) as server:
        e = expand_idea("two red circles", settings_for(server, llm_method="plain"))
    first = server.requests[0]["messages"]
    assert [m["role"] for m in first] == ["system", "user", "assistant", "user"]
    assert first[1]["content"] == "Idea: a fox in the snow\nWrite short comma-separated tags."
    assert json.loads(first[2]["content"])["subject"] and first[3]["content"].startswith("Idea: two red circles\n")
    assert len(first[0]["content"]) < 1000, "a compact prompt for small models"
    repair = server.requests[1]["messages"][-1]["content"]
    assert "style and lighting copy the example" in repair and "borrows 'snow'" in repair
    assert e.spec.style == "flat vector art"


def test_the_main_noun_stays_in_the_subject_and_the_others_anywhere_in_the_prompt():
    from agent.spec_checks import missing_nouns

    idea = "a llama wearing sunglasses on the deck of a spaceship with the Earth in the background"
    assert missing_nouns("a llama on a spaceship deck", idea, "the Earth behind, sunglasses") == []
    assert missing_nouns("a llama on a spaceship deck", idea, "starry sky") == ["earth"]
    assert missing_nouns("a spaceship with the Earth", idea, "a llama") == ["llama"], "the main noun: in the subject"
    quoted = "a yellow wall with 'Hello, world.' written on it"
    assert missing_nouns(quoted, quoted) == [], "nouns compare as words (no quotes or punctuation)"


@pytest.mark.parametrize("idea,nouns", [
    ("two red circles", ["circle"]),
    ("a kitten", ["kitten"]),
    ("Portrait of a tiger wearing a train conductor's hat", ["tiger"]),
    ("A photograph of the inside of a subway train. There are raccoons on the seats.", ["train"]),
    ("a beach with apartment buildings next to it", ["building"]),
    ("a yellow wall with 'Hello, world.' written on it", ["wall", "hello"]),
])
def test_the_nouns_a_subject_must_keep(idea, nouns):
    from agent.spec_checks import idea_nouns

    assert idea_nouns(idea) == nouns  # no pronouns, framing words or participles


def test_local_servers_get_a_low_temperature_unless_set(monkeypatch):
    with LoopbackLLM([GOOD]) as server:
        expand_idea("a cat", settings_for(server, llm_method="json_schema"))
        monkeypatch.setenv("IMAGENT_LLM_TEMPERATURE", "0.9")
        expand_idea("a cat", load_settings(llm_model="m", llm_base_url=server.base_url, llm_method="json_schema",
                                           llm_example="default", llm_fallback="error"))
    assert [b["temperature"] for b in server.requests] == [0.3, 0.9]
    from agent.llm import build_chat_model

    monkeypatch.delenv("IMAGENT_LLM_TEMPERATURE")
    assert build_chat_model(load_settings(llm_model="gpt-4o-mini", llm_api_key="sk-x")).temperature is None


def test_fields_still_wrong_after_the_repair_are_left_out_when_the_subject_holds():
    junk = {**GOOD, "style": "<pre><code>", "lighting": "..."}
    with LoopbackLLM([junk], llama_cpp=True) as server:
        e = expand_idea("a cat typing on a laptop", settings_for(server, llm_method="json_object_schema"))
    assert len(server.requests) == 2 and e.expander == "llm:local-model"
    assert (e.spec.style, e.spec.lighting, e.spec.composition) == ("", "", GOOD["composition"])
    assert "lighting, style left out" in e.warnings[0] and "is not a description" in e.warnings[0]


# -- the worked example's form, probed per server and model ---------------------------------------
def _example(name):
    return json.loads((ROOT / "prompts" / name).read_text())


def _idea_of(body) -> str:
    return body["messages"][-1]["content"].splitlines()[0].removeprefix("Idea: ")


def test_a_model_that_answers_the_test_ideas_cleanly_gets_the_compact_example_once():
    from agent.llm_probe import cached

    def model(body):  # keeps each idea whole, its own words elsewhere
        return {**GOOD, "subject": _idea_of(body), "style": "oil painting", "lighting": "warm lamp light"}

    with LoopbackLLM([model]) as server:
        settings = settings_for(server, llm_method="json_schema", llm_example="auto")
        e = expand_idea("a cat typing on a laptop", settings)
        expand_idea("a dog asleep on a sofa", settings)
    compact = _example("expand_example_compact.json")
    ideas = [_idea_of(b) for b in server.requests]
    assert ideas == [*EXAMPLE_PROBES, "a cat typing on a laptop", "a dog asleep on a sofa"], "probed once, cached"
    shot = server.requests[2]["messages"][2]["content"]
    assert shot == json.dumps(compact["answer"], separators=(",", ":")) and ", " not in shot.split('"subject"')[0]
    assert cached(settings)["example"]["form"] == "compact" and e.spec.style == "oil painting"


def test_a_model_that_copies_the_compact_example_keeps_the_default_one():
    compact, default = _example("expand_example_compact.json"), _example("expand_example.json")

    def model(body):  # copies the example it was shown
        shown = json.loads(body["messages"][2]["content"])
        return {**GOOD, "subject": _idea_of(body), **{k: shown[k] for k in ("style", "lighting", "composition")}} \
            if shown == compact["answer"] else {**GOOD, "subject": _idea_of(body)}

    with LoopbackLLM([model]) as server:
        settings = settings_for(server, llm_method="json_schema", llm_example="auto")
        e = expand_idea("a cat typing on a laptop", settings)
    assert len(server.requests) == 2, "the probe stops at the first unclean answer"
    assert server.requests[1]["messages"][2]["content"] == json.dumps(default["answer"])
    assert e.spec.style == GOOD["style"] and not e.warnings
    from agent.llm_probe import cached

    found = cached(settings)["example"]
    assert found["form"] == "default" and "copy the example" in found["note"]


def test_the_example_form_can_be_set_and_a_wrong_one_is_refused():
    from agent.errors import ConfigError

    with LoopbackLLM([GOOD]) as server:
        expand_idea("a cat typing on a laptop", settings_for(server, llm_method="json_schema", llm_example="compact"))
    assert len(server.requests) == 1, "no probe when the form is set"
    assert json.loads(server.requests[0]["messages"][2]["content"]) == _example("expand_example_compact.json")["answer"]
    with pytest.raises(ConfigError, match="llm_example"):
        load_settings(llm_example="short")
