"""`imagent serve`: the HTTP service on uvicorn over the tiny random SD, through the official
openai client (generations, edits, errors), httpx (runs, jobs, SSE, images, token) and
prometheus_client's parser (metrics). Real parts throughout; the backend is wrapped only to
count (and, for queue tests, hold) its calls."""
from __future__ import annotations

import base64
import io
import json
import time

import httpx
import openai
import pytest
from fakes import CountingBackend, FakeSafety
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from agent.cli import main
from agent.errors import BackendError
from agent.server import is_loopback, make_app, serving_in_thread
from agent.session import Session
from tools.metadata import read_metadata

TOKEN = "s3cret-token"
FAST = {"steps": 2}


@pytest.fixture
def backend(tiny_backend):
    return CountingBackend(tiny_backend)


@pytest.fixture
def serve(settings, backend, tiny_scorer):
    """start(**make_app kwargs, safety=None) -> (base URL, session); every server stops at the end."""
    from contextlib import ExitStack

    with ExitStack() as stack:
        def start(safety=None, **kwargs):
            session = Session(settings, backend=backend, scorer=tiny_scorer, safety=safety)
            url = stack.enter_context(serving_in_thread(make_app(session, **kwargs)))
            return url, session
        yield start


def client(url, token="unused"):
    return openai.OpenAI(base_url=f"{url}/v1", api_key=token, max_retries=0, timeout=60)


def png(item) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(item.b64_json)))


def metrics(url, token=None) -> dict:
    """{(sample name, frozenset(labels)): value} from /metrics."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    text = httpx.get(f"{url}/metrics", headers=headers).text
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def value(m: dict, name: str, **labels) -> float:
    return m.get((name, frozenset(labels.items())), 0.0)


def assert_openai_error(response: httpx.Response, status: int, code: str | None = None):
    assert response.status_code == status, response.text
    err = response.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if code:
        assert err["code"] == code, err
    return err


def test_generations_b64_and_url_through_the_openai_client(serve, backend, tmp_path):
    url, session = serve()
    c = client(url)
    res = c.images.generate(prompt="two red circles", size="32x32", n=2, extra_body={"seed": 7, **FAST})
    assert len(res.data) == 2 and backend.calls == 1
    assert [d.model_extra["seed"] for d in res.data] == [7, 8]
    for item in res.data:
        im = png(item)
        assert im.size == (32, 32) and im.format == "PNG"
        assert item.revised_prompt == "two red circles"
    assert res.model_extra["cache"] == "miss" and res.model_extra["run_id"]

    # response_format=url points at GET /v1/images/{id}: the PNG with its recipe; /metadata the record
    res = c.images.generate(prompt="a blue square", size="32x32", response_format="url", extra_body=FAST)
    item = res.data[0]
    assert item.b64_json is None and item.url.endswith(f"/v1/images/{item.model_extra['image_id']}")
    got = httpx.get(item.url)
    assert got.status_code == 200 and got.headers["content-type"] == "image/png"
    (tmp_path / "x.png").write_bytes(got.content)
    record = read_metadata(tmp_path / "x.png")["record"]
    assert record["params"]["prompt"] == "a blue square" and record["params"]["steps"] == 2
    meta = httpx.get(item.model_extra["metadata_url"]).json()
    assert meta["seed"] == item.model_extra["seed"] == record["seed"]
    assert res.model_extra["cache"] == "off"  # no seed: never from the cache

    # `style` is an imagent preset: the prompt is expanded (revised_prompt says how); OpenAI's
    # "vivid"/"natural" are accepted and change nothing
    styled = c.images.generate(prompt="a cat", style="watercolor", size="32x32", extra_body=FAST)
    assert "watercolor" in styled.data[0].revised_prompt.lower() and styled.data[0].revised_prompt != "a cat"
    vivid = c.images.generate(prompt="a cat", style="vivid", size="32x32", extra_body=FAST)
    assert vivid.data[0].revised_prompt == "a cat"


def test_bad_input_comes_back_as_openai_errors(serve, backend):
    url, _ = serve()
    c = client(url)
    with pytest.raises(openai.BadRequestError) as info:
        c.images.generate(prompt="two red circles", size="100x100", extra_body=FAST)
    assert info.value.body["param"] == "size" and "multiple of 8" in info.value.message
    # the model is the session's: another name is a 400 saying which one is served
    with pytest.raises(openai.BadRequestError) as info:
        c.images.generate(prompt="two red circles", model="dall-e-3")
    assert info.value.code == "model_not_found" and info.value.body["param"] == "model"
    # imagent's own validation (InvalidInput) and misspelt fields are 400s too
    with pytest.raises(openai.BadRequestError, match="control character"):
        c.images.generate(prompt="two red \x1b circles", extra_body=FAST)
    with pytest.raises(openai.BadRequestError) as info:
        c.images.generate(prompt="x", extra_body={"seeds": 3})
    assert info.value.body["param"] == "seeds"
    with pytest.raises(openai.BadRequestError):
        c.images.generate(prompt="x", n=11)
    assert backend.calls == 0
    backend.fail = BackendError("The model ran out of memory.", "Try a smaller --size.")
    with pytest.raises(openai.InternalServerError) as info:
        c.images.generate(prompt="two red circles", extra_body=FAST)
    assert info.value.status_code == 502 and info.value.code == "backend_error" and "memory" in info.value.message
    backend.fail = None
    assert_openai_error(httpx.get(f"{url}/v1/images/999"), 404, "not_found")
    assert_openai_error(httpx.get(f"{url}/v1/jobs/nope"), 404, "not_found")
    assert_openai_error(httpx.get(f"{url}/v1/nothing"), 404)
    m = metrics(url)
    assert value(m, "imagent_errors_total", kind="invalid_value") >= 4
    assert value(m, "imagent_errors_total", kind="model_not_found") == 1
    assert value(m, "imagent_errors_total", kind="not_found") == 3


def test_seeded_identical_request_is_a_cache_hit_without_the_backend(serve, backend):
    url, session = serve()
    c = client(url)
    args = dict(prompt="two red circles", size="32x32", n=2, extra_body={"seed": 11, "cfg": 5, **FAST})
    first = c.images.generate(**args)
    assert backend.calls == 1 and first.model_extra["cache"] == "miss"
    second = c.images.generate(**args)
    assert backend.calls == 1 and second.model_extra["cache"] == "hit"
    assert [d.model_extra["image_id"] for d in second.data] == [d.model_extra["image_id"] for d in first.data]
    assert [d.b64_json for d in second.data] == [d.b64_json for d in first.data]
    # any parameter changed is a miss: steps, cfg (as guidance_scale), negative, size, n beyond the stored seeds
    for change in ({"extra_body": {"seed": 11, "cfg": 5, "steps": 3}},
                   {"extra_body": {"seed": 11, "guidance_scale": 6, **FAST}},
                   {"extra_body": {"seed": 11, "cfg": 5, "negative_prompt": "blur", **FAST}},
                   {"extra_body": {"seed": 11, "cfg": 5, "vae_slicing": True, **FAST}},   # options are parameters
                   {"size": "40x40"}, {"n": 3}):
        calls = backend.calls
        res = c.images.generate(**{**args, **change})
        assert backend.calls == calls + 1 and res.model_extra["cache"] == "miss", change
    # no seed: never served from the cache
    calls = backend.calls
    for _ in range(2):
        c.images.generate(prompt="two red circles", size="32x32", extra_body=FAST)
    assert backend.calls == calls + 2
    m = metrics(url)
    assert value(m, "imagent_cache_hits_total") == 1 and value(m, "imagent_cache_misses_total") == 7
    assert value(m, "imagent_images_generated_total", kind="generate") == 2 + 5 * 2 + 3 + 2

    # --no-cache: the same seeded request generates again
    url2, _ = serve(cache=False)
    calls = backend.calls
    res = client(url2).images.generate(**args)
    assert backend.calls == calls + 1 and res.model_extra["cache"] == "off"


def test_edits_with_an_openai_mask_repaint_only_the_transparent_area(serve, backend):
    url, session = serve()
    buf = io.BytesIO()
    source = Image.new("RGB", (32, 32), (200, 30, 30))
    source.save(buf, format="PNG")
    mask = Image.new("RGBA", (32, 32), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, 16, 32))  # transparent left half = edit here
    mbuf = io.BytesIO()
    mask.save(mbuf, format="PNG")
    res = client(url).images.edit(image=("red.png", buf.getvalue(), "image/png"),
                                  mask=("mask.png", mbuf.getvalue(), "image/png"), prompt="a blue square",
                                  extra_body={"seed": 3, **FAST})
    out = png(res.data[0]).convert("RGB")
    assert out.size == (32, 32) and backend.calls == 1
    right = [out.getpixel((x, y)) for x in range(16, 32) for y in range(32)]
    assert set(right) == {(200, 30, 30)}  # the opaque half is kept exactly
    assert any(out.getpixel((x, y)) != (200, 30, 30) for x in range(16) for y in range(32))
    record = session.gallery.image(res.data[0].model_extra["image_id"])["record"]
    assert record["params"]["mode"] == "inpaint" and record["seed"] == 3
    stored_mask = Image.open(record["inputs"]["mask"])
    assert stored_mask.getpixel((0, 0)) == 255 and stored_mask.getpixel((31, 0)) == 0  # imagent: white = repaint

    # no mask: img2img over the whole image, resized to `size`
    res = client(url).images.edit(image=("red.png", buf.getvalue(), "image/png"), prompt="a blue square",
                                  size="40x40", extra_body=FAST)
    assert png(res.data[0]).size == (40, 40)
    # unreadable image and a mask without alpha: 400; over the upload limit: 413
    with pytest.raises(openai.BadRequestError) as info:
        client(url).images.edit(image=("x.png", b"not an image", "image/png"), prompt="a")
    assert info.value.body["param"] == "image"
    with pytest.raises(openai.BadRequestError, match="alpha"):
        client(url).images.edit(image=("red.png", buf.getvalue(), "image/png"),
                                mask=("m.png", buf.getvalue(), "image/png"), prompt="a")
    small, _ = serve(max_upload_bytes=1000)
    big = io.BytesIO()
    Image.effect_noise((64, 64), 50).save(big, format="PNG")
    r = httpx.post(f"{small}/v1/images/edits", files={"image": ("big.png", big.getvalue(), "image/png")},
                   data={"prompt": "a"})
    assert_openai_error(r, 413, "file_too_large")
    assert backend.calls == 2


def test_token_is_required_when_set_and_off_loopback(serve, capsys):
    url, _ = serve(token=TOKEN)
    with pytest.raises(openai.AuthenticationError):
        client(url, "wrong").images.generate(prompt="two red circles", extra_body=FAST)
    assert_openai_error(httpx.get(f"{url}/v1/models"), 401, "invalid_api_key")
    assert_openai_error(httpx.get(f"{url}/metrics"), 401)
    assert httpx.get(f"{url}/healthz").json()["status"] == "ok"  # health is open
    models = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert "imagent" in [m["id"] for m in models["data"]]
    assert value(metrics(url, TOKEN), "imagent_errors_total", kind="invalid_api_key") == 3

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("example.com")
    capsys.readouterr()
    assert main(["serve", "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--token" in err and "0.0.0.0" in err


def test_a_blocked_prompt_is_a_content_policy_violation(serve, backend):
    url, session = serve(safety=FakeSafety(prompt="violence", containing="forbidden"))
    with pytest.raises(openai.BadRequestError) as info:
        client(url).images.generate(prompt="a forbidden thing", extra_body={"seed": 1, **FAST})
    assert info.value.code == "content_policy_violation" and "violence" in info.value.message
    r = httpx.post(f"{url}/v1/runs", json={"idea": "a forbidden thing"})
    assert_openai_error(r, 400, "content_policy_violation")
    assert backend.calls == 0 and session.gallery.count_images() == 0
    assert value(metrics(url), "imagent_safety_blocks_total", stage="request") == 2


def sse(response):
    """(event, data) pairs from a text/event-stream response."""
    event, data = "message", []
    for line in response.iter_lines():
        if not line:
            if data:
                yield event, json.loads("\n".join(data))
            event, data = "message", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())


def test_run_is_a_job_with_server_sent_events_and_a_result(serve, backend):
    url, session = serve()
    r = httpx.post(f"{url}/v1/runs", json={"idea": "two red circles", "rounds": 1, "candidates": 1,
                                           "size": "32x32", "seed": 5, **FAST})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] in {"queued", "running", "done"} and job["events_url"].endswith("/events")
    with httpx.stream("GET", job["events_url"], timeout=60) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = list(sse(resp))
    names = [e for e, _ in events]
    assert "progress" in names and "round_start" in names and "round_end" in names
    assert names[-1] == "done", names
    round_end = next(d for e, d in events if e == "round_end")
    assert round_end["round"] == 1
    final = events[-1][1]
    assert final["status"] == "done" and final["result"]["best"]["seed"] is not None
    status = httpx.get(job["url"]).json()
    assert status["status"] == "done" and status["result"]["image"]["url"] == final["result"]["image"]["url"]
    image = httpx.get(status["result"]["image"]["url"])
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
    assert value(metrics(url), "imagent_images_generated_total", kind="run") == 1
    assert_openai_error(httpx.post(f"{url}/v1/runs", json={"idea": "x", "rounds": 0}), 400)


def test_full_queue_is_429_with_retry_after_and_a_running_job_cancels(serve, backend):
    url, session = serve(queue_size=1)
    backend.gate.clear()
    try:
        job = httpx.post(f"{url}/v1/runs", json={"idea": "two red circles", "rounds": 2, "candidates": 1,
                                                 "size": "32x32", **FAST}).json()
        assert backend.entered.wait(30)
        assert value(metrics(url), "imagent_queue_depth") == 1
        with pytest.raises(openai.RateLimitError) as info:
            client(url).images.generate(prompt="two red circles", extra_body=FAST)
        assert int(info.value.response.headers["retry-after"]) >= 1 and info.value.code == "queue_full"
        r = httpx.delete(job["url"], timeout=30)
        assert r.status_code == 200
    finally:
        backend.gate.set()
    deadline = time.monotonic() + 30
    while (status := httpx.get(job["url"]).json())["status"] not in {"done", "failed", "cancelled"}:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert status["status"] == "cancelled" and status["error"]["code"] == "cancelled"
    assert session.gallery.runs(limit=1)[0]["status"] == "cancelled"
    m = metrics(url)
    assert value(m, "imagent_queue_depth") == 0 and value(m, "imagent_errors_total", kind="queue_full") == 1
    # latency is recorded per route template
    assert value(m, "imagent_http_request_duration_seconds_count", route="/v1/jobs/{job_id}",
                 method="GET") >= 1
    assert value(m, "imagent_http_request_duration_seconds_count", route="/v1/runs", method="POST") == 1


def test_a_client_gone_while_its_request_is_queued_cancels_it_a_run_outlives_its_sse_stream(serve, backend):
    """A generation whose client disconnects while it still waits in the queue is cancelled (no one
    would get it); a run job is a background job: closing its event stream leaves it running
    (an EventSource reconnects; DELETE /v1/jobs/ID cancels)."""
    url, session = serve()
    backend.gate.clear()
    try:
        run = httpx.post(f"{url}/v1/runs", json={"idea": "two red circles", "rounds": 1, "candidates": 1,
                                                 "size": "32x32", **FAST}).json()
        assert backend.entered.wait(30)                                  # the run holds the worker
        with httpx.stream("GET", run["events_url"], timeout=30) as resp:  # read one event, then hang up
            assert next(sse(resp))[0] in {"round_start", "progress"}
        with pytest.raises(httpx.ReadTimeout):                           # the client gives up and disconnects
            httpx.post(f"{url}/v1/images/generations", json={"prompt": "a blue square", "size": "32x32", **FAST},
                       timeout=1.0)
        deadline = time.monotonic() + 10
        while (jobs := {j["tool"]: j for j in httpx.get(f"{url}/v1/jobs").json()["data"]})["generate"]["status"] \
                == "queued":
            assert time.monotonic() < deadline, "the queued job of a gone client was not cancelled"
            time.sleep(0.05)
        assert jobs["generate"]["status"] == "cancelled" and jobs["generate"]["started"] is None   # never ran
        assert jobs["run"]["status"] == "running"
    finally:
        backend.gate.set()
    deadline = time.monotonic() + 30
    while (status := httpx.get(run["url"]).json())["status"] not in {"done", "failed", "cancelled"}:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert status["status"] == "done"                                    # the run finished without a watcher


def test_imagent_serve_keeps_stdout_for_results_its_access_log_goes_to_stderr(tiny_sd_path, tmp_path):
    """`imagent serve` as a user runs it: uvicorn's access log ("GET /healthz ... 200") is a
    diagnostic, so it goes to stderr with uvicorn's other messages; stdout stays empty."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out, err = open(tmp_path / "stdout", "w+b"), open(tmp_path / "stderr", "w+b")
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "serve", "--port", str(port), "--model",
                             str(tiny_sd_path), "--safety", "off"], stdout=out, stderr=err,
                            env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1"))
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "stderr").read_text()
                time.sleep(0.2)
        time.sleep(0.5)  # the access line is written after the answer
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert (tmp_path / "stdout").read_text() == ""
    assert '"GET /healthz HTTP/1.1" 200' in (tmp_path / "stderr").read_text()
