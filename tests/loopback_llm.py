"""A scripted OpenAI-compatible chat-completions server on 127.0.0.1 (stdlib http.server, one thread).

Each POST /v1/chat/completions takes the next scripted reply: a JSON-able answer (sent as the
assistant's content, or as a tool call when the request asks for tools), `Status(code)` for an
HTTP error, `Slow(seconds, reply)`, `ToolCall(name, args)` for a tool call the model chooses, or a
callable `reply(body)` returning one of those (a responder that reads the request). The last reply
repeats. Requests are kept in `.requests`; GET /v1/models lists the one model.

`LoopbackLLM(replies, llama_cpp=True)` behaves like llama-cpp-python's server (0.3.x) where it
differs from OpenAI's, as seen with SmolLM2-135M:
- `response_format` of type json_schema fails the request model's validation: HTTP 500
  "1 validation error for CreateChatCompletionRequest ..." (only text and json_object exist;
  json_object takes an optional "schema" that is compiled into a grammar);
- an assistant message with `content: null` (LangChain's tool-call turns) is a validation error too (500);
- a schema (json_object "schema", or the parameters of a tool forced by `tool_choice`) with a
  `maxLength` above `grammar_max_length` fails: HTTP 500 "failed to parse grammar";
- tools are only honoured when `tool_choice` names one (then the answer is that tool's call);
  with "auto" the model answers in prose unless the script says `ToolCall(...)`;
- `n_ctx`: a request whose prompt (estimated at 4 characters a token) does not fit is refused with
  HTTP 400 context_length_exceeded, as the real server words it (`max_tokens` is cut to what is left);
- `max_completion_tokens` is ignored (only `max_tokens` counts); requests without `max_tokens`
  are counted in `.unbounded` (the real server then generates until the context is full).
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


@dataclass
class ToolCall:
    name: str
    args: dict


def completion(content: str | None, model: str, tool_args: str | None = None, tool_name: str = "PromptSpec",
               finish: str = "stop", content_with_tools: str | None = None) -> dict:
    message: dict = {"role": "assistant", "content": content}
    if tool_args is not None:
        message = {"role": "assistant", "content": content_with_tools, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": tool_name, "arguments": tool_args}}]}
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


def _error(message: str, kind: str = "internal_server_error", code=None, param=None) -> str:
    return json.dumps({"error": {"message": message, "type": kind, "param": param, "code": code}})


def _max_length(schema) -> int:
    """The largest maxLength anywhere in a JSON schema."""
    if isinstance(schema, dict):
        here = schema.get("maxLength") if isinstance(schema.get("maxLength"), int) else 0
        return max([here, *(_max_length(v) for v in schema.values())])
    if isinstance(schema, list):
        return max([0, *(_max_length(v) for v in schema)])
    return 0


def prompt_tokens(body: dict) -> int:
    """A rough token count of what the server puts in the prompt (4 characters a token)."""
    return (len(json.dumps(body.get("messages", []))) + len(json.dumps(body.get("tools", [])))) // 4


def llama_cpp_refusal(body: dict, grammar_max_length: int, n_ctx: int | None) -> Status | None:
    """The error llama-cpp-python's server answers this request with, or None."""
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") not in ("text", "json_object"):
        return Status(500, _error(  # as llama-cpp-python 0.3.36 words it (traceback included)
            "1 validation error:\n  {'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), 'msg': "
            f"\"Input should be 'text' or 'json_object'\", 'input': '{fmt.get('type')}', 'ctx': {{'expected': "
            "\"'text' or 'json_object'\"}}\n\n  File \"llama_cpp/server/app.py\", line 376, in create_chat_completion"))
    for i, m in enumerate(body.get("messages", [])):
        if m.get("role") == "assistant" and "content" in m and m["content"] is None:
            return Status(500, _error(
                f"1 validation error for CreateChatCompletionRequest\nmessages.{i}.typed-dict.content\n  Input "
                "should be a valid string [type=string_type, input_value=None, input_type=NoneType]"))
    schemas = []
    if isinstance(fmt, dict) and fmt.get("type") == "json_object" and "schema" in fmt:
        schemas.append(fmt["schema"])
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        name = choice.get("function", {}).get("name")
        schemas += [t["function"].get("parameters", {}) for t in body.get("tools", [])
                    if t.get("function", {}).get("name") == name]
    if any(_max_length(s) > grammar_max_length for s in schemas):
        return Status(500, _error("failed to parse grammar"))
    if n_ctx is not None:
        want = prompt_tokens(body)
        completion_tokens = body.get("max_tokens")
        if want >= n_ctx:  # max_tokens is cut to what is left (as llama_cpp.Llama does); only the prompt counts
            return Status(400, _error(
                f"This model's maximum context length is {n_ctx} tokens. However, you requested "
                f"{want + (completion_tokens or 0)} tokens ({want} in the messages, {completion_tokens} in the "
                "completion). Please reduce the length of the messages or completion.",
                "invalid_request_error", "context_length_exceeded", "messages"))
    return None


class LoopbackLLM:
    def __init__(self, replies: list, *, llama_cpp: bool = False, grammar_max_length: int = 400,
                 n_ctx: int | None = None, model_list: dict | None = None):
        self.replies = list(replies)
        self.requests: list[dict] = []
        self.llama_cpp = llama_cpp
        self.grammar_max_length = grammar_max_length
        self.n_ctx = n_ctx
        self.model_list = model_list
        self.unbounded = 0
        self.statuses: list[int] = []  # the HTTP status of every chat answer, in order
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # as real servers do (uvicorn, llama.cpp); avoids 40 ms delayed-ACK stalls

            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                if self.path.rstrip("/").endswith("/models"):
                    data = server.model_list or {"object": "list", "data": [
                        {"id": "local-model", "object": "model", "owned_by": "me", "permissions": []}]}
                    self._send(200, json.dumps(data).encode())
                else:
                    self._send(404, _error("not found", "not_found").encode())

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                reply = server._next(body)
                for _ in range(3):  # a responder may answer Slow(...), a Slow reply may be a responder
                    if callable(reply) and not isinstance(reply, (Status, ToolCall, Slow)):
                        reply = reply(body)
                    if isinstance(reply, Slow):
                        time.sleep(reply.seconds)
                        reply = reply.reply
                if server.llama_cpp:
                    refusal = llama_cpp_refusal(body, server.grammar_max_length, server.n_ctx)
                    reply = refusal or reply
                    if body.get("max_tokens") is None:
                        server.unbounded += 1
                if isinstance(reply, Status):
                    server.statuses.append(reply.code)
                    self._send(reply.code, reply.body.encode(), {"retry-after-ms": "1"})
                    return
                server.statuses.append(200)
                self._send(200, json.dumps(server._answer(body, reply)).encode())

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

    def _answer(self, body: dict, reply) -> dict:
        model = body.get("model", "?")
        tools = body.get("tools") or []
        choice = body.get("tool_choice")
        forced = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
        if isinstance(reply, ToolCall):
            if tools and (not self.llama_cpp or forced in (None, reply.name)):
                return completion(None, model, json.dumps(reply.args), reply.name,
                                  content_with_tools="" if self.llama_cpp else None)
            reply = reply.args  # a server that ignores the tools: the model says it in words
        text = reply if isinstance(reply, str) else json.dumps(reply)
        if tools and (forced or not self.llama_cpp):
            name = forced or tools[0].get("function", {}).get("name", "PromptSpec")
            return completion(None, model, text, name, content_with_tools="" if self.llama_cpp else None)
        return completion(text, model)

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
