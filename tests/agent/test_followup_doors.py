"""Follow-ups at every door for other agents: MCP, LangChain and HTTP take a picture (a gallery id, or a
path where the door takes paths) and a change (in words or as typed edits), and return the checklist's
diff, the new picture and its verdicts, or a question when nothing was made; a bad change reads the
same everywhere. Offline, on the shipped demo model; the oracle checks the pictures."""
from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from agent.capabilities import PathPolicy
from tools.demo import oracle
from tools.images import load_image

mcp = pytest.importorskip("mcp")

BAD_TARGET = "The change names 'o7', which is not an object of the picture's checklist."
BAD_KIND = "Unknown change kind 'explode'."
NEITHER = "Give exactly one of `change` (the change in words) or `changes` (typed edits)."


@pytest.fixture(scope="module")
def first(demo_session, tmp_path_factory):
    """The picture every door follows up on: a red circle (o1), in the gallery."""
    out = demo_session.run("a red circle", request_fields={"seed": 3}, out_dir=tmp_path_factory.mktemp("first"))
    assert oracle.check(load_image(out.best.path), "a red circle", "strict").correct
    return out.best


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("mcp")
    return root / "in", root / "out"


@pytest.fixture(scope="module")
def mcp_app(demo_session, folders):
    from agent.mcp_server import build_server

    app = build_server(demo_session, PathPolicy.confined(*folders))
    yield app
    app.close()


@pytest.fixture(scope="module")
def lc_tool(demo_session):
    from agent.lc_tools import make_tools

    return {t.name: t for t in make_tools(demo_session)}["follow_up"]


@pytest.fixture(scope="module")
def http_url(demo_session):
    from agent.server import make_app, serving_in_thread

    with serving_in_thread(make_app(demo_session)) as url:
        yield url


def mcp_call(app, args):
    async def go():
        async with mcp.Client(app.server) as client:
            return await client.call_tool("follow_up", args)
    return asyncio.run(go())


def lc_call(tool, args):
    msg = tool.invoke({"type": "tool_call", "id": "c1", "name": "follow_up", "args": args})
    return msg.content, msg.artifact


def http_job(url, body) -> dict:
    r = httpx.post(f"{url}/v1/followups", json=body)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["tool"] == "follow_up" and job["url"].endswith(f"/v1/jobs/{job['id']}")
    for _ in range(1200):
        status = httpx.get(job["url"]).json()
        if status["status"] not in {"queued", "running"}:
            return status
        time.sleep(0.1)
    raise AssertionError(f"the follow-up job did not finish: {status}")


def shows(path, caption) -> bool:
    return oracle.check(load_image(path), caption, "strict").correct


def test_mcp_follow_up_in_words_adds_to_the_picture_and_returns_its_diff_and_verdicts(mcp_app, first, folders,
                                                                                       demo_session):
    res = mcp_call(mcp_app, {"image": first.image_id, "change": "add a blue square", "seed": 3})
    assert not res.is_error, res.content
    out = res.structured_content
    assert out["diff"] == ["+ a blue square"] and out["changes"] == [{"kind": "add", "value": "a blue square"}]
    assert out["question"] is None and out["new_idea"] is None
    run, image = out["run"], out["images"][0]
    assert run["best"]["image_id"] == image["image_id"] != first.image_id
    assert run["checklist"]["source"] == "demo-grammar+edited"
    assert {c["id"] for c in run["checks"]} >= {"o1", "o2"} and run["met"], run["checks"]
    assert image["path"].startswith(str(folders[1].resolve())), "written to the server's output folder"
    assert shows(image["path"], "a red circle and a blue square")
    assert image["metadata"]["followup"]["from_image"] == first.image_id
    assert [c.type for c in res.content] == ["text", "image", "resource_link"], "the picture comes attached"
    assert demo_session.gallery.image(image["image_id"]) is not None

    # a remote door: a path outside its folders reads as a missing file (the existing PathPolicy), the id works
    outside = mcp_call(mcp_app, {"image": str(first.path), "change": "add a blue square"})
    assert outside.is_error and "no such file in the input folder" in outside.structured_content["error"]["message"]


def test_langchain_follow_up_with_typed_edits_recolours_the_picture(lc_tool, first):
    content, artifact = lc_call(lc_tool, {"image": str(first.path), "seed": 3,  # a local door: a path works
                                          "changes": [{"kind": "recolour", "target": "o1", "value": "orange"}]})
    assert not content.startswith("Error"), content
    assert artifact["diff"] == ["red -> orange: the circle"]
    assert artifact["changes"] == [{"kind": "recolour", "target": "o1", "value": "orange"}]
    path = artifact["images"][0]["path"]
    assert shows(path, "an orange circle") and not shows(path, "a red circle")
    said = json.loads(content)  # what the model reads: the diff and verdicts, no full metadata
    assert said["diff"] == artifact["diff"] and said["run"]["checks"] == artifact["run"]["checks"]
    assert "metadata" not in said["images"][0] and "record" not in said["run"]


def test_http_follow_up_in_words_is_a_job_whose_result_has_the_diff_verdicts_and_image(http_url, first,
                                                                                       demo_session):
    status = http_job(http_url, {"image": f"#{first.image_id}", "change": "add a blue square", "seed": 3})
    assert status["status"] == "done", status
    out = status["result"]
    assert out["diff"] == ["+ a blue square"] and out["run"]["met"]
    assert {c["id"] for c in out["run"]["checks"]} >= {"o1", "o2"}
    image = out["image"]
    assert image["image_id"] == out["run"]["best"]["image_id"]
    assert image["url"].endswith(f"/v1/images/{image['image_id']}")
    assert httpx.get(image["url"]).status_code == 200
    assert shows(demo_session.gallery.image(image["image_id"])["path"], "a red circle and a blue square")

    r = httpx.post(f"{http_url}/v1/followups", json={"image": str(first.path), "change": "add a blue square"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "image", "HTTP takes gallery ids, not paths"
    assert "reads no file paths" in r.json()["error"]["message"]


@pytest.mark.parametrize("args, words", [
    ({"changes": [{"kind": "remove", "target": "o7"}]}, BAD_TARGET),
    ({"changes": [{"kind": "explode", "target": "o1"}]}, BAD_KIND),
    ({"change": "add a blue square", "changes": [{"kind": "remove", "target": "o1"}]}, NEITHER),
    ({}, NEITHER),
])
def test_a_bad_change_reads_the_same_on_every_door_and_makes_nothing(mcp_app, lc_tool, http_url, first,
                                                                      demo_session, args, words):
    made = demo_session.gallery.count_images()
    body = {"image": first.image_id, **args}
    bad = mcp_call(mcp_app, body)
    assert bad.is_error and bad.structured_content["error"]["message"] == words, bad.content
    content, artifact = lc_call(lc_tool, body)
    assert artifact["error"]["message"] == words and content.startswith(f"Error: {words}")
    r = httpx.post(f"{http_url}/v1/followups", json=body)
    assert r.status_code == 400 and r.json()["error"]["message"].startswith(words), "refused at once, not a job"
    assert r.json()["error"]["code"] == "invalid_value"
    assert demo_session.gallery.count_images() == made, "nothing was generated"


def test_a_message_that_is_neither_a_change_nor_a_new_picture_returns_its_question_and_no_run(
        mcp_app, lc_tool, http_url, first, demo_session):
    made = demo_session.gallery.count_images()
    body = {"image": first.image_id, "change": "make it wobble sideways"}
    res = mcp_call(mcp_app, body)
    assert not res.is_error, res.content
    out = res.structured_content
    assert out["run"] is None and out["images"] == [] and out["diff"] == []
    assert "add a blue square" in out["question"], "it says what it can read"
    _, artifact = lc_call(lc_tool, body)
    assert artifact["question"] == out["question"] and artifact["run"] is None
    status = http_job(http_url, body)
    assert status["status"] == "done" and status["result"]["question"] == out["question"]
    assert status["result"]["run"] is None and status["result"]["image"] is None

    async def as_job():  # MCP's background jobs take follow_up as they take run
        async with mcp.Client(mcp_app.server) as client:
            job = (await client.call_tool("start_job", {"tool": "follow_up", "arguments": body})).structured_content
            return (await client.call_tool("job_status", {"job_id": job["job_id"], "wait_seconds": 30})
                    ).structured_content
    job = asyncio.run(as_job())
    assert job["status"] == "done" and job["result"]["question"] == out["question"], job

    new = mcp_call(mcp_app, {"image": first.image_id, "change": "new: two green squares"}).structured_content
    assert new["new_idea"] == "two green squares" and new["run"] is None, "a new idea: the agent starts a run"
    assert demo_session.gallery.count_images() == made, "nothing was generated"
