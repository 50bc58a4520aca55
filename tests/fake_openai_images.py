"""A loopback HTTP server that answers like the OpenAI images API, with a failure mode chosen
per test (FakeImagesAPI.mode): errors by status code, slow answers, malformed bodies. Shared by
the OpenAI backend tests and the fallback-chain tests."""
from __future__ import annotations

import base64
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image


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
        if mode == "down":
            return self.reply(500, {"error": {"message": "The server had an error processing your request.",
                                              "type": "server_error", "code": None}})
        if mode == "badsize":
            return self.reply(400, {"error": {"message": "Invalid value: '1000x1000'. Supported values are: "
                                                         "'1024x1024', '1024x1536', '1536x1024'.",
                                              "type": "invalid_request_error", "code": "invalid_value"}})
        if mode == "notfound":
            return self.reply(404, {"error": {"message": "The model 'gpt-image-9' does not exist.",
                                              "type": "invalid_request_error", "code": "model_not_found"}})
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


@pytest.fixture
def free_port() -> int:
    """A loopback port nothing listens on (bound, then closed): connecting is refused."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
