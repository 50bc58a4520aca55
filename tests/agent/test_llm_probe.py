"""Capability probing per server and model (agent.llm_probe), its cache, the automatic method and
`imagent llm check`, against loopback servers that behave like llama-cpp-python and like OpenAI."""
from __future__ import annotations

import json

import pytest
from loopback_llm import LoopbackLLM, ToolCall

from agent.cli import main
from agent.config import load_settings
from agent.expand import expand_idea
from agent.llm_probe import cache_path, cached, check, resolve_method, tool_support

GOOD = {"subject": "a cat typing on a laptop at night", "style": "cinematic film still",
        "lighting": "blue monitor glow", "composition": "medium shot", "quality": ["highly detailed"],
        "negatives": ["blurry"], "extras": []}
PROBE_ANSWER = {"colour": "red", "count": 2}


def model_like(body):
    """A model that answers the probe's question and any other with GOOD."""
    return PROBE_ANSWER if "How many circles" in json.dumps(body["messages"]) else GOOD


def settings_for(server, **kw):
    kw.setdefault("llm_fallback", "error")
    kw.setdefault("llm_timeout", 5.0)
    kw.setdefault("llm_example", "default")  # the example-form probe has its own tests
    return load_settings(model="runwayml/stable-diffusion-v1-5", llm_model="local-model",
                         llm_base_url=server.base_url, **kw)


def test_check_on_a_llama_cpp_server():
    with LoopbackLLM([model_like], llama_cpp=True) as server:
        s = settings_for(server)
        found = check(s)
    methods = found["methods"]
    assert not methods["json_schema"]["accepted"] and "validation error" in methods["json_schema"]["note"]
    assert all(methods[m]["ok"] for m in ("json_object_schema", "function_calling", "json_mode", "plain"))
    assert found["best"] == "json_object_schema"
    assert not found["tools"]["ok"] and "in words" in found["tools"]["note"]
    assert found["context"] is None
    assert all(b["max_tokens"] == 64 for b in server.requests) and server.unbounded == 0
    assert cached(s)["best"] == "json_object_schema"
    assert f"{server.base_url}|local-model" in json.loads(cache_path(s).read_text())


def test_check_finds_tools_and_the_context_where_the_server_has_them():
    def choose(body):
        if body.get("tools") and body.get("tool_choice") == "auto":
            return ToolCall("draw", {"idea": "two red circles"})
        return model_like(body)

    models = {"object": "list", "data": [{"id": "local-model", "object": "model", "max_model_len": 8192}]}
    with LoopbackLLM([choose], model_list=models) as server:  # OpenAI-like (vLLM): json_schema works
        found = check(settings_for(server))
    assert found["best"] == "json_schema" and found["tools"]["ok"] and found["context"] == 8192
    second = server.requests[-1]["messages"]
    assert second[-2]["role"] == "assistant" and second[-2]["content"] == "" and second[-1]["role"] == "tool"


def test_auto_method_probes_once_then_uses_the_cache():
    with LoopbackLLM([model_like], llama_cpp=True) as server:
        s = settings_for(server)
        assert s.llm_method == "auto"
        e = expand_idea("a cat coding at night", s)
        assert e.expander == "llm:local-model" and e.spec.subject == GOOD["subject"]
        kinds = [b.get("response_format", {}).get("type") for b in server.requests]
        assert kinds == ["json_schema", "json_object", None, "json_object", None, "json_object"], \
            "the probe tries each method once, then the expansion uses the best"
        assert "schema" in server.requests[-1]["response_format"]
        n = len(server.requests)
        expand_idea("a cat on a laptop", s)
        assert len(server.requests) == n + 1, "the second expansion does not probe again"
        assert resolve_method(s.with_overrides(llm_method="json_mode")) == "json_mode"


def test_auto_method_for_openai_itself_needs_no_probe():
    s = load_settings(llm_model="gpt-4o-mini", llm_api_key="sk-test")
    assert resolve_method(s) == "json_schema" and cached(s) is None


def test_tool_support_is_probed_once():
    with LoopbackLLM([model_like], llama_cpp=True) as server:
        s = settings_for(server)
        ok, why = tool_support(s)
        n = len(server.requests)
        assert (ok, tool_support(s)) == (False, (False, why)) and len(server.requests) == n
    assert "instead of calling the tool" in why


def test_llm_check_command(capsys, monkeypatch):
    with LoopbackLLM([model_like], llama_cpp=True) as server:
        monkeypatch.setenv("IMAGENT_LLM_BASE_URL", server.base_url)
        monkeypatch.setenv("IMAGENT_LLM_MODEL", "local-model")
        assert main(["llm", "check"]) == 0
        out = capsys.readouterr().out
        assert "no   json_schema" in out and "ok   json_object_schema" in out
        assert "method:  json_object_schema (the best" in out and "routing: no (0/3 test messages" in out
        assert "keyword mode" in out, "a model that does not route the test messages right"
        assert "example: default (compact: 'three green apples" in out, "its subject drops the test idea"
        assert main(["llm", "check", "--json"]) == 0
        data = json.loads(capsys.readouterr().out)
    assert data["best"] == "json_object_schema" and data["tools"]["ok"] is False


def test_llm_check_without_an_llm_or_a_server(capsys, monkeypatch):
    assert main(["llm", "check"]) != 0
    assert "IMAGENT_LLM_MODEL" in capsys.readouterr().err
    monkeypatch.setenv("IMAGENT_LLM_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("IMAGENT_LLM_MODEL", "m")
    code = main(["llm", "check"])
    err = capsys.readouterr().err
    assert code != 0 and "Cannot reach the LLM server" in err and "internal error" not in err


def test_llm_check_json_without_an_llm_or_a_server_still_answers_in_json(capsys, monkeypatch):
    """A script reading `imagent llm check --json` gets an object saying why, not an empty stdout;
    the error and its exit code stay as they are."""
    assert main(["llm", "check", "--json"]) == 6
    out, err = capsys.readouterr()
    assert json.loads(out) == {"configured": False, "ok": False, "server": None, "model": None,
                               "error": "No LLM is configured.", "hint": json.loads(out)["hint"]}
    assert "IMAGENT_LLM_MODEL" in json.loads(out)["hint"] and "No LLM is configured" in err
    monkeypatch.setenv("IMAGENT_LLM_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("IMAGENT_LLM_MODEL", "m")
    assert main(["llm", "check", "--json"]) == 6
    data = json.loads(capsys.readouterr().out)
    assert (data["configured"], data["ok"], data["server"], data["model"]) == (True, False, "http://127.0.0.1:9/v1", "m")
    assert "Cannot reach the LLM server" in data["error"]


@pytest.mark.parametrize("answer", ["Sure! Here it is.", {"colour": 3}])
def test_a_model_that_cannot_answer_in_json_is_told_apart(answer):
    with LoopbackLLM([answer], llama_cpp=True) as server:
        found = check(settings_for(server))
    assert not any(r["ok"] for r in found["methods"].values())
    assert found["methods"]["plain"]["accepted"] and "did not fit" in found["methods"]["plain"]["note"]
    assert found["best"] == "json_object_schema", "nothing fits: the first the server accepts"


def test_a_cached_method_that_is_refused_later_is_probed_again():
    from agent.llm_probe import save

    with LoopbackLLM([model_like], llama_cpp=True) as server:
        s = settings_for(server, llm_fallback="template")
        save(s, {"best": "json_schema"})  # found on another server at this address, say
        e = expand_idea("a cat on a laptop", s)
        assert e.expander == "template" and "probed again next time" in e.warnings[0] and cached(s) is None
        e = expand_idea("a cat on a laptop", s)
    assert e.expander == "llm:local-model" and cached(s)["best"] == "json_object_schema"


def test_a_server_that_times_out_stops_the_probe_at_once():
    from loopback_llm import Slow

    from agent.errors import LLMError

    with LoopbackLLM([Slow(1.0, PROBE_ANSWER)]) as server:
        s = settings_for(server, llm_timeout=0.3)
        with pytest.raises(LLMError, match="did not answer within 0.3 s"):
            resolve_method(s)
    assert len(server.requests) == 1 and cached(s) is None
