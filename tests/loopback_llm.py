"""A scripted OpenAI-compatible chat-completions server on 127.0.0.1 (stdlib http.server, one thread).

Each POST /v1/chat/completions takes the next scripted reply: a JSON-able answer (sent as the
assistant's content, or as a tool call when the request asks for tools), `Status(code)` for an
HTTP error, or `Slow(seconds, reply)`. The last reply repeats. Requests are kept in `.requests`.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Status:
    code: int
    body: str = '{"error": {"message": "scripted failure", "type": "server_error"}}'


@dataclass
class Slow:
    seconds: float
    reply: object


def completion(content: str | None, model: str, tool_args: str | None = None) -> dict:
    message: dict = {"role": "assistant", "content": content}
    if tool_args is not None:
        message = {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "PromptSpec", "arguments": tool_args}}]}
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


class LoopbackLLM:
    def __init__(self, replies: list):
        self.replies = list(replies)
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # as real servers do (uvicorn, llama.cpp); avoids 40 ms delayed-ACK stalls

            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                reply = server._next(body)
                if isinstance(reply, Slow):
                    time.sleep(reply.seconds)
                    reply = reply.reply
                if isinstance(reply, Status):
                    self._send(reply.code, reply.body.encode(), {"retry-after-ms": "1"})
                    return
                text = reply if isinstance(reply, str) else json.dumps(reply)
                tool_args = text if body.get("tools") else None
                payload = completion(None if tool_args else text, body.get("model", "?"), tool_args)
                self._send(200, json.dumps(payload).encode())

            def _send(self, code, data, headers=None):
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout tests)
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def _next(self, body: dict):
        with self._lock:
            self.requests.append(body)
            return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> "LoopbackLLM":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
