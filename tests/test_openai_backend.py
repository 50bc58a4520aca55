"""The OpenAI images backend against a loopback HTTP server that speaks the images API."""
from __future__ import annotations

import base64
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from tools.errors import BackendError, InvalidInput, SafetyBlocked
from tools.generate import GenerateRequest
from tools.openai_backend import OpenAIBackend


def png_b64(color) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), color).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


class FakeImagesAPI(BaseHTTPRequestHandler):
    mode = "ok"
    seen: list = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        length = int(self.headers.get("content-length", 0))
        body = self.rfile.read(length)
        FakeImagesAPI.seen.append((self.path, self.headers.get("content-type", ""), body))
        mode = FakeImagesAPI.mode
        if mode == "slow":
            time.sleep(2)
        if mode == "auth":
            return self.reply(401, {"error": {"message": "Incorrect API key", "type": "invalid_request_error",
                                              "code": "invalid_api_key"}})
        if mode == "rate":
            return self.reply(429, {"error": {"message": "Rate limit reached", "type": "requests",
                                              "code": "rate_limit_exceeded"}})
        if mode == "policy":
            return self.reply(400, {"error": {"message": "Your request was rejected by the safety system.",
                                              "type": "image_generation_user_error",
                                              "code": "content_policy_violation"}})
        if mode == "truncated":
            return self.reply_raw(200, b'{"created": 1, "data": [{"b64_json": "iVBORw0KGgo')
        if mode == "cut":  # announces more bytes than it sends, then closes
            return self.reply_raw(200, b'{"created": 1, "data": [{"b64', length=4096)
        if mode == "nodata":
            return self.reply(200, {"created": 1})
        if mode == "nulldata":
            return self.reply(200, {"created": 1, "data": None})
        if mode == "emptydata":
            return self.reply(200, {"created": 1, "data": []})
        if mode == "notimage":
            return self.reply(200, {"created": 1, "data": [{"b64_json": base64.b64encode(b"hello, not a png").decode()}]})
        if mode == "badb64":
            return self.reply(200, {"created": 1, "data": [{"b64_json": "***not base64***"}]})
        if mode == "notjson":
            return self.reply_raw(200, b"<html>gateway says hi</html>", content_type="text/html")
        color = (0, 0, 255) if self.path.endswith("/edits") else (255, 0, 0)
        self.reply(200, {"created": 1, "data": [{"b64_json": png_b64(color), "revised_prompt": "a red thing"}]})

    def reply(self, status, payload):
        self.reply_raw(status, json.dumps(payload).encode())

    def reply_raw(self, status, data, length=None, content_type="application/json"):
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(length or len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except BrokenPipeError:  # the client gave up (timeout test)
            pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeImagesAPI)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    FakeImagesAPI.mode, FakeImagesAPI.seen = "ok", []
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()


def backend(url, timeout=10.0):
    return OpenAIBackend("gpt-image-1", api_key="sk-test", base_url=url, timeout=timeout, max_retries=0)


def test_generate_returns_images_and_records_seed_as_not_reproducible(server):
    result = backend(server).generate(GenerateRequest("a red circle", count=2, seed=5, width=1024, height=1024))
    assert [im.getpixel((0, 0)) for im in result.images] == [(255, 0, 0), (255, 0, 0)]
    assert result.seeds == [5, 6] and result.reproducible is False
    assert result.revised_prompts == ["a red thing", "a red thing"]
    path, ctype, body = FakeImagesAPI.seen[0]
    sent = json.loads(body)
    assert path == "/v1/images/generations"
    assert sent["model"] == "gpt-image-1" and sent["prompt"] == "a red circle" and sent["size"] == "1024x1024"


def test_masked_edit_sends_image_and_transparent_mask(server):
    init = Image.new("RGB", (64, 64), (0, 255, 0))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))
    result = backend(server).generate(GenerateRequest("make it blue", init_image=init, mask=mask, seed=1))
    assert result.images[0].getpixel((0, 0)) == (0, 0, 255)
    path, ctype, body = FakeImagesAPI.seen[0]
    assert path == "/v1/images/edits" and ctype.startswith("multipart/form-data")
    assert b'name="image"' in body and b'name="mask"' in body


def test_img2img_without_mask_is_refused_clearly(server):
    with pytest.raises(InvalidInput, match="--mask"):
        backend(server).generate(GenerateRequest("x", init_image=Image.new("RGB", (64, 64)), strength=0.5))


@pytest.mark.parametrize("mode, error, fragment", [
    ("auth", BackendError, "API key"),
    ("rate", BackendError, "rate limit"),
    ("policy", SafetyBlocked, "content policy"),
])
def test_api_errors_become_clear_messages(server, mode, error, fragment):
    FakeImagesAPI.mode = mode
    with pytest.raises(error) as info:
        backend(server).generate(GenerateRequest("a cat", seed=1))
    assert fragment in str(info.value)
    assert info.value.hint


@pytest.mark.parametrize("mode,fragment", [
    ("truncated", "not valid JSON"),
    ("cut", "OpenAI"),
    ("notjson", "not valid JSON"),
    ("nodata", "no images"),
    ("nulldata", "no images"),
    ("emptydata", "no images"),
    ("notimage", "cannot read"),
    ("badb64", "base64"),
])
def test_malformed_answers_become_backend_errors(server, mode, fragment):
    """A truncated or non-JSON body, a 200 without `data`, and base64 that is not an image are
    BackendError with a message and a hint, never a raw JSONDecodeError / KeyError / IndexError."""
    FakeImagesAPI.mode = mode
    with pytest.raises(BackendError) as info:
        backend(server).generate(GenerateRequest("a red circle", seed=1))
    assert fragment in info.value.message, info.value.message
    assert info.value.hint


def test_timeout_becomes_clear_message(server):
    FakeImagesAPI.mode = "slow"
    with pytest.raises(BackendError, match="did not answer within 0.5 s"):
        backend(server, timeout=0.5).generate(GenerateRequest("a cat", seed=1))


def test_missing_key_says_what_to_set():
    with pytest.raises(BackendError, match="OPENAI_API_KEY"):
        OpenAIBackend(api_key=None).generate(GenerateRequest("a cat", seed=1))


def test_cli_backend_openai_end_to_end(server, capsys, monkeypatch, tmp_path):
    from agent.cli import main

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", server)
    code = main(["generate", "a red circle", "--backend", "openai", "--seed", "3", "--safety", "off",
                 "--out", str(tmp_path), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    record = json.loads(out)["images"][0]
    assert record["backend"] == "openai" and record["model"] == "gpt-image-1"
    assert "takes no seed" in err
