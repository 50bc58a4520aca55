"""The chat on small local models (issue 14, item 8): agent mode only where the server was seen
calling tools; routed mode (one constrained JSON choice of action) where it was not; the offline
router when the choice fails, said in the conversation; tool loops that llama.cpp accepts."""
from __future__ import annotations

import json

import pytest
from loopback_llm import LoopbackLLM, ToolCall

from agent.chat import ChatController, idea_of, offline_route
from agent.session import Session

FAST = ("/steps 1", "/rounds 1", "/candidates 1", "/seed 11")
PROBES = {"draw a green square": {"action": "create_image", "text": "a green square"},  # the routing probe
          "make it darker": {"action": "refine_last", "text": "darker"},
          "a yellow boat on the sea": {"action": "create_image", "text": "a yellow boat on the sea"}}
ROUTES = {**PROBES, "draw two red circles": {"action": "create_image", "text": "two red circles"},
          "make it warmer": {"action": "refine_last", "text": "warmer"},
          "upscale it": {"action": "upscale_image", "scale": 2}}


def small_model(routes=ROUTES, tools=False):
    """A llama.cpp server with a small model: answers the probes, routes by the table, expands an
    idea into a spec that keeps it; calls tools (with tool_choice auto) only when `tools`."""
    def reply(body):
        messages = body["messages"]
        text = json.dumps(messages)
        last = messages[-1].get("content") or ""
        if "How many circles" in text:
            return {"colour": "red", "count": 2}
        if body.get("tools") and not isinstance(body.get("tool_choice"), dict):
            if not tools:
                return "Sure, I would love to draw that."
            if messages[-1]["role"] == "tool":
                return "Here you are."
            names = [t["function"]["name"] for t in body["tools"]]
            return ToolCall("draw", {"idea": "x"}) if "draw" in names else ToolCall("show_defaults", {})
        if "You choose what imagent does" in messages[0]["content"]:
            return routes.get(last.split("Message:")[-1].strip(), "no idea")
        if last.startswith("Idea:"):
            idea = last.split("\n")[0][len("Idea:"):].strip()
            return {"subject": idea, "style": "flat colours", "negatives": ["blurry"]}
        return {"nothing": "useful"}  # requirements, revision: the rules take over
    return reply


@pytest.fixture
def llm_session(settings, tiny_backend, tiny_scorer):
    def make(server):
        s = settings.with_overrides(llm_model="smollm2", llm_base_url=server.base_url, llm_timeout=5.0)
        return Session(s, backend=tiny_backend, scorer=tiny_scorer)
    return make


def fast(chat):
    for command in FAST:
        chat.handle(command)
    return chat


def test_routed_mode_when_the_server_does_not_call_tools(llm_session):
    with LoopbackLLM([small_model()], llama_cpp=True) as server:
        chat = fast(ChatController(llm_session(server)))
        assert chat.mode == "routed" and "does not call tools" in chat.mode_line()
        assert "agent mode" not in chat.mode_line()
        assert "Made image" in chat.handle("draw two red circles")
        assert chat.state.idea == "two red circles"
        first = chat.state.image_id
        chat.handle("make it warmer")
        assert chat.state.spec["lighting"] == "warmer" and chat.state.image_id != first
        assert "Upscaled x2" in chat.handle("upscale it")
        assert server.unbounded == 0 and server.statuses.count(500) == 1, "only the probe of json_schema"
    routes = [b for b in server.requests if "You choose what imagent does" in b["messages"][0]["content"]]
    assert len(routes) == 3 + 2, "the routing probe's 3 messages, then 'upscale it' names its action: no model call"
    routes = routes[3:]
    assert all("schema" in b["response_format"] for b in routes), "constrained by a grammar"
    assert [m["role"] for m in routes[0]["messages"]][:3] == ["system", "user", "assistant"], "worked exchanges"
    assert "upscale_image" in json.dumps(routes[0]["response_format"]["schema"])


def test_a_failed_choice_goes_to_the_offline_router_and_says_so(llm_session):
    with LoopbackLLM([small_model(routes=PROBES)], llama_cpp=True) as server:
        chat = fast(ChatController(llm_session(server)))
        assert "Made image" in chat.handle("draw two red circles")
        assert chat.state.idea == "two red circles"
        assert "Upscaled x2" in chat.handle("upscale it")
    notices = [m["content"] for m in chat.messages() if m["role"] == "notice"]
    assert len(notices) == 1 and "the offline router took the message" in notices[0]


def test_a_model_that_routes_the_probe_messages_wrongly_gets_keyword_mode(llm_session):
    wrong = {**ROUTES, "make it darker": {"action": "list_images"}}  # a small model that answers list_images
    with LoopbackLLM([small_model(routes=wrong)], llama_cpp=True) as server:
        chat = fast(ChatController(llm_session(server)))
        assert chat.mode == "keywords" and "2/3 test messages routed right" in chat.mode_line()
        assert "'make it darker': list_images, not refine_last" in chat.mode_line()
        probes = len(server.requests)
        assert "Made image" in chat.handle("draw two red circles")
        chat.handle("make it warmer")
        assert chat.state.spec["lighting"] == "warmer", "the offline router made it a refinement"
        sent = server.requests[probes:]
    assert not [b for b in sent if "You choose what imagent does" in b["messages"][0]["content"]], \
        "no routing call in keyword mode"
    assert any(b["messages"][-1]["content"].startswith("Idea:") for b in sent), "the model still expands"
    again = ChatController(llm_session(server))  # the probe is cached per server and model
    assert again.mode == "keywords" and len(server.requests) == len(sent) + probes


def test_a_routing_probe_that_times_out_is_not_a_finding(llm_session):
    import time

    model = small_model()

    def slow_routes(body):  # the routing calls take longer than the client waits
        if "You choose what imagent does" in body["messages"][0]["content"]:
            time.sleep(1.0)
        return model(body)

    with LoopbackLLM([slow_routes], llama_cpp=True) as server:
        session = llm_session(server)
        session.settings = session.settings.with_overrides(llm_timeout=0.3, llm_max_retries=0)
        chat = ChatController(session)
        assert chat.mode == "router" and "offline mode" in chat.mode_line()
        server.replies = [model]
        assert ChatController(session).mode == "routed", "probed again, not a cached failure"


def test_agent_mode_on_a_server_that_calls_tools_sends_content_it_accepts(llm_session):
    with LoopbackLLM([small_model(tools=True)], llama_cpp=True) as server:
        chat = ChatController(llm_session(server))
        assert chat.mode == "agent" and "tool calls checked" in chat.mode_line()
        assert chat.handle("what are my defaults?") == "Here you are."
    assert 500 not in server.statuses, "content '' (not null) in the assistant's tool-call turn"
    turn = server.requests[-1]["messages"]
    assert turn[-2]["role"] == "assistant" and turn[-2]["content"] == "" and turn[-2]["tool_calls"]
    assert all(b.get("max_tokens") for b in server.requests)


def test_an_unreachable_server_is_offline_mode_and_says_why(settings, tiny_backend, tiny_scorer):
    s = settings.with_overrides(llm_model="smollm2", llm_base_url="http://127.0.0.1:9/v1", llm_max_retries=0)
    chat = ChatController(Session(s, backend=tiny_backend, scorer=tiny_scorer))
    assert chat.mode == "router" and "Cannot reach the LLM server" in chat.mode_line()


@pytest.mark.parametrize("message,has_image,action,text", [
    ("draw me a picture of two red circles", False, "create_image", "two red circles"),
    ("upscale it x4", True, "upscale_image", ""),
    ("upscale it", False, "create_image", "upscale it"),
    ("make it warmer", True, "refine_last", "warmer"),
    ("a cat on a sofa", True, "create_image", "a cat on a sofa"),
])
def test_the_offline_router(message, has_image, action, text):
    choice = offline_route(message, has_image)
    assert (choice.action, choice.text) == (action, text)
    assert offline_route("upscale it x4", True).scale == 4


def test_messages_that_name_their_action_need_no_model_and_odd_values_mean_none():
    from agent.chat import RouteChoice, change_of, explicit_route

    assert explicit_route("upscale the image by 4", True).scale == 4
    assert explicit_route("upscale it", False) is None, "nothing to upscale: the model (or create) decides"
    assert explicit_route("show me image 3", True).image == 3
    assert explicit_route("list my images", False).action == "list_images"
    assert explicit_route("make it warmer", True) is None
    odd = RouteChoice(action="upscale_image", image=0, scale=7)
    assert (odd.image, odd.scale) == (None, None)
    assert change_of("make it warmer", "no idea recorded") == "warmer", "an echo of the state line is ignored"
    assert change_of("make it warmer", "warmer light") == "warmer light"


def test_the_idea_stays_in_the_users_words():
    assert idea_of("draw two red circles", "two red circles") == "two red circles"
    assert idea_of("draw two red circles", "three blue squares") == "two red circles"


# -- 6. Esc and Ctrl-C cancel an LLM call in flight ----------------------------------------------------------------------
def cancel_after(chat, seconds):
    import threading

    timer = threading.Timer(seconds, chat.cancel)
    timer.start()
    return timer


@pytest.mark.parametrize("tools", [False, True])
def test_cancel_stops_a_turn_waiting_for_the_llm_at_once(llm_session, tools):
    import time

    from loopback_llm import Slow
    from agent.errors import Cancelled

    model = small_model(tools=tools)
    with LoopbackLLM([model], llama_cpp=True) as server:
        chat = ChatController(llm_session(server))
        assert chat.mode == ("agent" if tools else "routed")
        server.replies = [Slow(1.5, model)]  # every answer from now on takes 1.5 s
        cancel_after(chat, 0.2)
        t0 = time.perf_counter()
        with pytest.raises(Cancelled):
            chat.handle("what are my defaults?" if tools else "draw two red circles")
        assert time.perf_counter() - t0 < 1.0, "the turn ends at the cancel, not when the server answers"
        time.sleep(1.8)  # the abandoned answer arrives: its tool call must not start
    assert not [m for m in chat.messages() if m["role"] == "tool"]
    assert chat.messages()[-1]["role"] == "notice" and "Cancelled" in chat.messages()[-1]["content"]


def test_tools_that_do_not_fit_a_small_context_switch_to_routed_mode(llm_session):
    with LoopbackLLM([small_model(tools=True)], llama_cpp=True, n_ctx=900) as server:
        chat = fast(ChatController(llm_session(server)))
        assert chat.mode == "agent"
        assert "Made image" in chat.handle("draw two red circles")
        assert chat.mode == "routed" and "do not fit the context" in chat.mode_line()
    notices = [m["content"] for m in chat.messages() if m["role"] == "notice"]
    assert any("does not fit the model's context" in n and "routed mode" in n for n in notices)
