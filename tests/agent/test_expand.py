"""Prompt expansion: PromptSpec, template expander, family rendering, the LLM path (scripted fake chat
models, and the real langchain-openai client against a loopback chat-completions server), bad input."""
from __future__ import annotations

import json

import pytest
from langchain_core.messages import AIMessage
from fakes import scripted
from loopback_llm import LoopbackLLM, Slow, Status

from agent.config import load_settings
from agent.errors import ConfigError, InvalidInput, LLMError
from agent.expand import TemplateExpander, expand_idea, get_style, load_styles
from agent.llm import build_chat_model
from agent.render import guess_family, render
from agent.schemas import PromptSpec

GOOD = {"subject": "a cat typing on a laptop at night", "style": "cinematic film still",
        "lighting": "blue monitor glow", "composition": "medium shot", "quality": ["highly detailed"],
        "negatives": ["blurry", "text"], "extras": ["cluttered desk"]}


def tool_answer(args) -> AIMessage:
    return AIMessage(content="", tool_calls=[{"name": "PromptSpec", "args": args, "id": "c1"}])


def sd_settings(**kw):
    return load_settings(model="runwayml/stable-diffusion-v1-5", **kw)


# -- structure, template, rendering -------------------------------------------------------------------
def test_template_expander_is_deterministic_and_keeps_the_idea():
    s = sd_settings()
    a = expand_idea("a cat coding at night", s, style="cinematic")
    b = expand_idea("a  cat coding at night ", s, style="cinematic")
    assert a == b and a.expander == "template" and a.style_preset == "cinematic"
    assert a.spec.subject == "a cat coding at night"
    assert a.spec.style == "cinematic film still"
    assert a.spec.lighting.startswith("moody low-key night")  # "night" picks the night lighting rule
    assert a.positive.startswith("a cat coding at night, cinematic film still, moody")
    assert "film grain" in a.positive and "blurry" in a.negative and "cartoon" in a.negative
    plain = expand_idea("a cat coding at night", s)
    assert plain.spec.style == "" and plain.spec != a.spec


def test_negatives_never_contradict_the_idea():
    e = expand_idea("an oil painting with text on a sign", sd_settings(), style="photographic")
    assert "painting" not in e.spec.negatives and "text" not in e.spec.negatives
    assert "blurry" in e.spec.negatives
    user = expand_idea("a red cat", sd_settings(), negative="dogs, red")
    assert user.spec.negatives[-2:] == ["dogs", "red"]  # the user's own negatives always count


@pytest.mark.parametrize("family", ["demo", "sd", "sdxl", "flux", "openai"])
def test_render_per_family(family):
    r = render(PromptSpec(**GOOD), family)
    if family == "demo":
        assert (r.positive, r.negative) == (GOOD["subject"], "")
    elif family == "sd":
        assert r.positive == ("a cat typing on a laptop at night, cinematic film still, blue monitor glow, "
                              "medium shot, highly detailed, cluttered desk")
        assert r.negative == "blurry, text"
    else:
        assert r.positive.startswith("A cat typing on a laptop at night, cinematic film still. Blue monitor glow")
        assert r.positive.endswith(".")
        assert r.negative == ("blurry, text" if family == "sdxl" else "")
        assert ("Avoid: blurry, text." in r.positive) == (family == "openai")


def test_demo_world_idea_reaches_the_demo_model_verbatim():
    s = load_settings()  # default model: the demo
    e = expand_idea("two red circles", s, style="watercolor")
    assert e.rendered.family == "demo" and e.positive == "two red circles" and e.negative == ""
    llm = scripted(tool_answer({**GOOD, "subject": "two vivid crimson circles"}))
    assert expand_idea("two red circles", s, chat_model=llm).positive == "two red circles"


def test_guess_family(tmp_path):
    for name, cls in (("xl", "StableDiffusionXLPipeline"), ("fx", "FluxPipeline"), ("sd15", "StableDiffusionPipeline")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model_index.json").write_text(json.dumps({"_class_name": cls}))
    assert guess_family(str(tmp_path / "xl")) == "sdxl"
    assert guess_family(str(tmp_path / "fx")) == "flux"
    assert guess_family(str(tmp_path / "sd15")) == "sd"
    assert guess_family("stabilityai/stable-diffusion-xl-base-1.0") == "sdxl"
    assert guess_family("black-forest-labs/FLUX.1-schnell") == "flux"
    assert guess_family("demo") == "demo" and guess_family(None) == "demo"
    assert guess_family("anything", backend="openai") == "openai"


def test_styles_are_data_and_user_overridable(imagent_home):
    styles = load_styles(imagent_home)
    assert len(styles) >= 20
    assert all("{prompt}" in s.positive and s.description and s.negative for s in styles.values())
    folder = imagent_home / "prompts" / "styles"
    folder.mkdir(parents=True)
    (folder / "mine.json").write_text(json.dumps({"name": "mine", "description": "d", "positive": "clay {prompt}",
                                                  "negative": "metal"}))
    assert expand_idea("a cat", sd_settings(), style="MINE").positive.startswith("a cat, clay")
    (folder / "broken.json").write_text("{not json")
    with pytest.raises(ConfigError, match="broken.json"):
        load_styles(imagent_home)
    assert "mine" not in load_styles(), "home=None reads the packaged presets only"


# -- bad input ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("idea", ["", "   ", None])
def test_empty_idea(idea):
    with pytest.raises(InvalidInput, match="empty"):
        expand_idea(idea, sd_settings())


def test_idea_of_thousands_of_words():
    with pytest.raises(InvalidInput, match="3000 words") as info:
        expand_idea("cat " * 3000, sd_settings())
    # the words of every front door (no CLI flag); the error names the parameter for the CLI to add its own
    assert "run with raw" in info.value.hint and "--" not in info.value.hint and info.value.param == "idea"


def test_unknown_style_lists_close_matches():
    with pytest.raises(InvalidInput, match="Unknown style 'watercolour'") as info:
        get_style("watercolour")
    assert "watercolor" in info.value.hint


def test_spec_validation():
    with pytest.raises(ValueError):
        PromptSpec(subject="  ")
    spec = PromptSpec(subject="x", quality="sharp, sharp , detailed", negatives=None)
    assert spec.quality == ["sharp", "detailed"] and spec.negatives == []


# -- LLM path: scripted fake chat models --------------------------------------------------------------
def test_llm_valid_answer():
    llm = scripted(tool_answer(GOOD))
    e = expand_idea("a cat coding at night", sd_settings(), chat_model=llm, style="cinematic")
    assert e.spec == PromptSpec(**GOOD) and e.expander.startswith("llm:") and not e.warnings
    human = llm.seen[0][-1].content
    assert "Idea: a cat coding at night" in human and "cinematic" in human and "comma-separated tags" in human
    assert "subject" in llm.seen[0][0].content  # the system prompt file


def test_llm_junk_then_repaired():
    llm = scripted(AIMessage(content="Sure! A cat, at night, coding."), tool_answer(GOOD))
    e = expand_idea("a cat coding at night", sd_settings(), chat_model=llm)
    assert e.spec.subject == GOOD["subject"] and len(llm.seen) == 2
    repair = llm.seen[1]
    assert repair[-2].content == "Sure! A cat, at night, coding."
    assert "could not be used" in repair[-1].content


def test_llm_missing_field_then_repaired():
    llm = scripted(tool_answer({"style": "watercolor"}), tool_answer(GOOD))
    e = expand_idea("a cat", sd_settings(), chat_model=llm)
    assert e.spec.subject == GOOD["subject"]
    assert "subject" in llm.seen[1][-1].content and "Field required" in llm.seen[1][-1].content


def test_llm_junk_twice_is_an_error_or_the_template(monkeypatch):
    junk = [AIMessage(content="no"), tool_answer({"subject": ""})]
    with pytest.raises(LLMError, match="even after one repair attempt"):
        expand_idea("a cat", sd_settings(llm_fallback="error"), chat_model=scripted(*junk))
    e = expand_idea("a cat", sd_settings(), chat_model=scripted(*junk))  # default fallback: template
    assert e.expander == "template" and e.spec.subject == "a cat"
    assert "LLM expansion failed" in e.warnings[0] and "template" in e.warnings[0]


def test_no_llm_configured_uses_the_template_and_build_says_what_to_set():
    assert expand_idea("a cat", sd_settings()).expander == "template"
    with pytest.raises(LLMError, match="No LLM is configured") as info:
        build_chat_model(sd_settings())
    assert "IMAGENT_LLM_MODEL" in info.value.hint
    with pytest.raises(LLMError, match="No API key"):
        build_chat_model(sd_settings(llm_model="gpt-4o-mini"))


# -- LLM path: the real langchain-openai client over HTTP ------------------------------------------------
def http_settings(server, **kw):
    kw.setdefault("llm_fallback", "error")
    kw.setdefault("llm_timeout", 5.0)
    kw.setdefault("llm_method", "json_schema")  # scripted replies: no capability probe first
    kw.setdefault("llm_example", "default")
    return sd_settings(llm_model="local-model", llm_base_url=server.base_url, **kw)


@pytest.mark.parametrize("method", ["json_schema", "function_calling", "json_mode"])
def test_openai_compatible_server_end_to_end(method):
    with LoopbackLLM([GOOD]) as server:
        e = expand_idea("a cat coding at night", http_settings(server, llm_method=method))
    assert e.spec == PromptSpec(**GOOD) and e.expander == "llm:local-model"
    body = server.requests[0]
    assert body["model"] == "local-model" and body["messages"][0]["role"] == "system"
    assert ("tools" in body) == (method == "function_calling")
    assert ("response_format" in body) == (method != "function_calling")


def test_server_junk_then_repaired_over_http():
    with LoopbackLLM(["I think a cat would look nice", GOOD]) as server:
        e = expand_idea("a cat", http_settings(server))
    assert e.spec.subject == GOOD["subject"] and len(server.requests) == 2
    assert server.requests[1]["messages"][-2]["content"] == "I think a cat would look nice"


def test_server_500_then_ok_is_retried():
    with LoopbackLLM([Status(500), Status(503), GOOD]) as server:
        e = expand_idea("a cat", http_settings(server, llm_max_retries=2))
    assert e.spec.subject == GOOD["subject"] and len(server.requests) == 3


def test_server_errors_beyond_the_retries_are_clear():
    with LoopbackLLM([Status(500)]) as server:
        with pytest.raises(LLMError, match="answered HTTP 500"):
            expand_idea("a cat", http_settings(server, llm_max_retries=1))
    assert len(server.requests) == 2


def test_slow_server_times_out_with_a_clear_message_or_falls_back():
    with LoopbackLLM([Slow(2.0, GOOD)]) as server:
        with pytest.raises(LLMError, match=r"did not answer within 0.3 s") as info:
            expand_idea("a cat", http_settings(server, llm_timeout=0.3, llm_max_retries=0))
        assert "IMAGENT_LLM_TIMEOUT" in info.value.hint
        e = expand_idea("a cat", http_settings(server, llm_timeout=0.3, llm_max_retries=0, llm_fallback="template"))
    assert e.expander == "template" and "did not answer" in e.warnings[0]


def test_unreachable_server():
    with LoopbackLLM([GOOD]) as server:
        url = server.base_url
    s = sd_settings(llm_model="m", llm_base_url=url, llm_max_retries=0, llm_fallback="error")
    with pytest.raises(LLMError, match="Cannot reach the LLM server"):
        expand_idea("a cat", s)


def test_system_prompt_is_user_overridable(imagent_home):
    (imagent_home / "prompts").mkdir(parents=True)
    (imagent_home / "prompts" / "expand_system.md").write_text("CUSTOM SYSTEM PROMPT")
    llm = scripted(tool_answer(GOOD))
    expand_idea("a cat", sd_settings(), chat_model=llm)
    assert llm.seen[0][0].content == "CUSTOM SYSTEM PROMPT"


def test_template_expander_alone_needs_no_settings():
    spec = TemplateExpander().expand("a mountain landscape at sunset", get_style("oil-painting"))
    assert spec.composition == "wide shot, rule of thirds" and spec.lighting == "warm golden hour light"
    assert spec.style == "oil painting"
