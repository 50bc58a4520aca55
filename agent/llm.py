"""Build the chat model the agent talks to, ask it for structured answers, and turn its failures
into clear LLMErrors.

One small factory shared by prompt expansion, requirements, revision and the chat agent. It builds
a LangChain `ChatOpenAI`, which speaks to OpenAI or any OpenAI-compatible server (llama.cpp,
vLLM, Ollama, LM Studio) through a base URL. Nothing is created at import time.

Local servers differ from OpenAI's API, so the client here:
- sends `max_tokens` on every call (`settings.llm_max_tokens`), by its old name too where a base
  URL is set (llama-cpp-python reads only `max_tokens`; a runaway answer otherwise fills the
  context, and the server keeps generating after the client gave up);
- sends an assistant turn with tool calls with content "" rather than null (llama-cpp-python
  refuses null with HTTP 500, which breaks every tool loop after the first call);
- does not retry a 5xx whose body says the request itself was refused (a validation error of
  the request, a grammar that does not compile): retrying cannot help, and the hint names the
  structured-output method to change. Other 429/5xx, timeouts and dropped connections are retried
  with backoff, `settings.llm_max_retries` times.

Structured output (`structured_call`) goes one of five ways (`METHODS`, best first):
  json_schema         response_format json_schema (OpenAI, vLLM, Ollama, llama.cpp's llama-server)
  json_object_schema  response_format json_object with a "schema" (llama-cpp-python's grammar)
  function_calling    one tool forced with tool_choice
  json_mode           response_format json_object, the shape described in the prompt
  plain               nothing asked of the server; the JSON is read out of the text
The schema sent is `llm_schema(Model)`: strings bounded at 120 characters and lists at 6 items
(llama.cpp compiles the schema into a grammar: a maxLength of 4000 does not compile, and no bound
lets a small model ramble until max_tokens cuts its JSON); the pydantic model still enforces
every limit of its own on the parsed answer. `agent.llm_probe` finds which methods a server handles.
"""
from __future__ import annotations

import copy
import json
import re

from agent.config import Settings
from agent.errors import LLMError

NO_KEY = "not-needed"  # local OpenAI-compatible servers accept any key
METHODS = ("json_schema", "json_object_schema", "function_calling", "json_mode", "plain")
LOCAL_TEMPERATURE = 0.3  # llama-cpp-python defaults to 0.8: SmolLM2-135M then drifts from the idea
INITIAL_RETRY_DELAY, MAX_RETRY_DELAY = 0.5, 8.0  # the openai client's backoff (seconds)
# a 5xx body that says the request itself is wrong: retrying the same request cannot help
REFUSAL = re.compile(r"validation error|failed to parse|grammar|not supported|unsupported|response_format|"
                     r"tool_choice|json_schema|invalid", re.I)
_CLIENT_CLASS = None


def describe_server(settings: Settings) -> str:
    return settings.llm_base_url or "api.openai.com"


def build_chat_model(settings: Settings, *, model: str | None = None, temperature: float | None = None,
                     **kwargs):
    """A `ChatOpenAI` for `model` (default `settings.llm_model`), or LLMError saying what to set."""
    name = model or settings.llm_model
    if not name:
        raise LLMError("No LLM is configured.",
                       "Set IMAGENT_LLM_MODEL (plus IMAGENT_LLM_BASE_URL for a local server such as "
                       "llama.cpp, vLLM or Ollama), or pass --llm MODEL.")
    key = settings.llm_api_key
    if not key and not settings.llm_base_url:
        raise LLMError(f"No API key for the OpenAI model '{name}'.",
                       "Set IMAGENT_LLM_API_KEY or OPENAI_API_KEY, or point IMAGENT_LLM_BASE_URL at a local "
                       "OpenAI-compatible server.")
    if temperature is None:
        temperature = settings.llm_temperature
    if temperature is None and settings.llm_base_url:
        temperature = LOCAL_TEMPERATURE
    if temperature is not None:
        kwargs["temperature"] = temperature
    kwargs.setdefault("timeout", settings.llm_timeout)
    kwargs.setdefault("max_retries", settings.llm_max_retries)
    kwargs.setdefault("max_tokens", settings.llm_max_tokens)
    import openai

    return _client_class()(model=name, base_url=settings.llm_base_url, api_key=key or NO_KEY,
                           http_client=openai.DefaultHttpxClient(event_hooks={"response": [_mark_refusal]}),
                           http_async_client=openai.DefaultAsyncHttpxClient(
                               event_hooks={"response": [_amark_refusal]}), **kwargs)


def _client_class():
    """ChatOpenAI, adjusted for the servers that are not OpenAI (see the module docstring)."""
    global _CLIENT_CLASS
    if _CLIENT_CLASS is None:
        try:
            from langchain_openai import ChatOpenAI
        except ImportError:  # pragma: no cover - a declared dependency
            raise LLMError("langchain-openai is not installed.", "pip install langchain-openai") from None

        class ImagentChatOpenAI(ChatOpenAI):
            def _get_request_payload(self, input_, *, stop=None, **kwargs):
                payload = super()._get_request_payload(input_, stop=stop, **kwargs)
                if self.openai_api_base and "max_completion_tokens" in payload:
                    payload.setdefault("max_tokens", payload["max_completion_tokens"])
                for message in payload.get("messages", []):
                    if message.get("role") == "assistant" and message.get("content") is None:
                        message["content"] = ""
                return payload

        _CLIENT_CLASS = ImagentChatOpenAI
    return _CLIENT_CLASS


def _refused(response) -> bool:
    return response.status_code >= 500 and bool(REFUSAL.search(response.text or ""))


def _mark_refusal(response) -> None:
    """httpx response hook: a 5xx that refuses the request is not retried (openai obeys x-should-retry)."""
    if response.status_code >= 500:
        response.read()
        if _refused(response):
            response.headers["x-should-retry"] = "false"


async def _amark_refusal(response) -> None:
    if response.status_code >= 500:
        await response.aread()
        if _refused(response):
            response.headers["x-should-retry"] = "false"


# -- structured output --------------------------------------------------------------------------------
ANSWER_MAX_LENGTH = 120  # each string of a structured answer, as the grammar bounds it (400 still compiles)
ANSWER_MAX_ITEMS = 6     # each list: a small model in a loop repeats items until max_tokens cuts the JSON


def llm_schema(model_cls) -> dict:
    """The JSON schema of a pydantic model as sent to an LLM: $refs inlined, no titles; every string
    at most ANSWER_MAX_LENGTH and every list at most ANSWER_MAX_ITEMS long, whatever the model allows
    (a large maxLength does not compile into a llama.cpp grammar; no bound at all lets a small model
    ramble until max_tokens cuts its JSON). The pydantic model still checks the parsed answer."""
    schema = model_cls.model_json_schema() if hasattr(model_cls, "model_json_schema") else copy.deepcopy(model_cls)
    defs = schema.pop("$defs", {})

    def walk(node):
        if isinstance(node, dict):
            if "$ref" in node and node["$ref"].startswith("#/$defs/"):
                return walk(copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[1]]))
            out = {k: walk(v) for k, v in node.items() if k not in ("maxLength", "title")}
            if out.get("type") == "string" and "enum" not in out:
                out["maxLength"] = min(node.get("maxLength", ANSWER_MAX_LENGTH), ANSWER_MAX_LENGTH)
            if out.get("type") == "array":
                out["maxItems"] = min(node.get("maxItems", ANSWER_MAX_ITEMS), ANSWER_MAX_ITEMS)
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)


def bind_structured(chat_model, model_cls, method: str | None):
    """`chat_model` set up to answer in `model_cls`'s shape by `method` (None: a forced tool when
    the model can bind tools, else plain)."""
    schema, name = llm_schema(model_cls), model_cls.__name__
    if method == "json_schema":
        return chat_model.bind(response_format={"type": "json_schema", "json_schema": {"name": name, "schema": schema}})
    if method == "json_object_schema":
        return chat_model.bind(response_format={"type": "json_object", "schema": schema})
    if method == "json_mode":
        return chat_model.bind(response_format={"type": "json_object"})
    if method == "plain":
        return chat_model
    tool = {"type": "function", "function": {"name": name, "description": (model_cls.__doc__ or name).strip()[:300],
                                             "parameters": schema}}
    try:
        return chat_model.bind_tools([tool], tool_choice=name)
    except NotImplementedError:
        if method == "function_calling":
            raise LLMError(f"{type(chat_model).__name__} cannot call tools.",
                           "Use another IMAGENT_LLM_METHOD (json_schema, json_mode or plain).") from None
        return chat_model


def structured_call(runnable, model_cls, messages) -> tuple[object | None, str, str]:
    """Invoke a `bind_structured` runnable: (a validated model_cls or None, what was wrong, the raw
    answer text). Client errors (HTTP, timeouts) propagate; `llm_error` explains them."""
    from pydantic import ValidationError

    answer = runnable.invoke(messages)
    raw = raw_text(answer)
    calls = getattr(answer, "tool_calls", None) or []
    if calls:
        data = calls[0].get("args")
    else:
        data = extract_json(raw)
        if data is None:
            cut = (getattr(answer, "response_metadata", None) or {}).get("finish_reason") == "length"
            return None, ("the answer was cut off at the token limit (IMAGENT_LLM_MAX_TOKENS)" if cut
                          else "the answer held no JSON object"), raw
    if not isinstance(data, dict):
        return None, "the answer was not a JSON object", raw
    try:
        return model_cls.model_validate(data), "", raw
    except ValidationError as exc:
        return None, short_error(exc), raw


def extract_json(text: str):
    """The JSON object in a model's text: the whole text, a ```json block, or the span from the
    first '{' to the last '}'. None when there is none."""
    text = (text or "").strip()
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.S)
    for candidate in (text, fenced.group(1) if fenced else None,
                      text[text.find("{"):text.rfind("}") + 1] if "{" in text else None):
        if candidate:
            try:
                data = json.loads(candidate)
            except ValueError:
                continue
            if isinstance(data, dict):
                return data
    return None


def raw_text(message) -> str:
    if message is None:
        return ""
    calls = getattr(message, "tool_calls", None) or []
    if calls:
        return json.dumps(calls[0].get("args", {}))
    bad = getattr(message, "invalid_tool_calls", None) or []
    if bad:
        return str(bad[0].get("args") or "")
    content = getattr(message, "content", message)
    return content if isinstance(content, str) else json.dumps(content, default=str)


def short_error(exc) -> str:
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        errs = exc.errors()
        parts = [f"{'.'.join(str(x) for x in e['loc']) or 'answer'}: {e['msg']}" for e in errs[:3]]
        return "; ".join(parts) + (f" (+{len(errs) - 3} more)" if len(errs) > 3 else "")
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


# -- errors -------------------------------------------------------------------------------------------
METHOD_HINT = ("The server may not support this structured-output method: `imagent llm check` tries each one; "
               "set IMAGENT_LLM_METHOD to one that works (json_object_schema, function_calling, json_mode or plain).")


def total_wait(settings: Settings) -> float:
    """The longest a call waits before giving up on timeouts: every try plus the backoff between them."""
    retries = settings.llm_max_retries
    return (1 + retries) * settings.llm_timeout + sum(min(INITIAL_RETRY_DELAY * 2 ** i, MAX_RETRY_DELAY)
                                                      for i in range(retries))


def llm_error(exc: BaseException, settings: Settings, model: str | None = None) -> LLMError:
    """Translate a client exception into an LLMError with a next step (no traceback for the user)."""
    if isinstance(exc, LLMError):
        return exc
    where = describe_server(settings)
    name = model or settings.llm_model or "?"
    try:
        import openai
    except ImportError:  # pragma: no cover
        openai = None
    if openai is not None:
        if isinstance(exc, openai.APITimeoutError):
            tries = 1 + settings.llm_max_retries
            waited = (f"within {settings.llm_timeout:g} s" if tries == 1 else
                      f"in {tries} tries of {settings.llm_timeout:g} s (about {total_wait(settings):.0f} s in all)")
            return LLMError(f"The LLM server at {where} did not answer {waited}.",
                            "Raise IMAGENT_LLM_TIMEOUT, lower IMAGENT_LLM_MAX_RETRIES, use a smaller model, or "
                            "check the server's load.")
        if isinstance(exc, openai.APIConnectionError):
            return LLMError(f"Cannot reach the LLM server at {where}.",
                            "Is it running? Check IMAGENT_LLM_BASE_URL (e.g. http://127.0.0.1:8080/v1).")
        if isinstance(exc, openai.AuthenticationError):
            return LLMError(f"The LLM server at {where} rejected the API key.",
                            "Set a valid IMAGENT_LLM_API_KEY (or OPENAI_API_KEY).")
        if isinstance(exc, openai.NotFoundError):
            return LLMError(f"The LLM server at {where} does not serve model '{name}'.",
                            "Check IMAGENT_LLM_MODEL or --llm against the server's model list.")
        if isinstance(exc, openai.RateLimitError):
            return LLMError(f"The LLM server at {where} is rate limiting (still after "
                            f"{settings.llm_max_retries} retries).", "Wait a minute, or raise IMAGENT_LLM_MAX_RETRIES.")
        if isinstance(exc, openai.APIStatusError):
            text = server_message(exc)
            if "context" in text.lower() and ("length" in text.lower() or "window" in text.lower()):
                return LLMError(f"The request does not fit the model's context at {where}: {text}",
                                "Start the server with a larger context (llama.cpp: -c 4096 / --n_ctx 4096), or "
                                "lower IMAGENT_LLM_MAX_TOKENS.")
            if isinstance(exc, (openai.BadRequestError, openai.UnprocessableEntityError)) or REFUSAL.search(text):
                return LLMError(f"The LLM server at {where} refused the request (HTTP {exc.status_code}): {text}",
                                METHOD_HINT)
            return LLMError(f"The LLM server at {where} answered HTTP {exc.status_code}: {text}",
                            "Retry later, or check the server's log.")
        if isinstance(exc, getattr(openai, "LengthFinishReasonError", ())):
            return LLMError(f"The LLM's answer was cut off at the token limit ({settings.llm_max_tokens}).",
                            "Raise IMAGENT_LLM_MAX_TOKENS, or use a model that answers shorter.")
    return LLMError(f"The LLM call failed: {type(exc).__name__}: {_first_line(exc)}",
                    "Check the LLM settings (IMAGENT_LLM_MODEL, IMAGENT_LLM_BASE_URL).")


def server_message(exc) -> str:
    """The server's own error message on one line (a pydantic validation error spans several)."""
    body = getattr(exc, "body", None)
    text = body.get("message") if isinstance(body, dict) else None
    if not isinstance(text, str) or not text:
        text = str(getattr(exc, "message", None) or exc)
    text = re.sub(r"\s*For further information visit \S+", "", text)
    text = re.split(r'\s+File "', text)[0]  # llama-cpp-python appends its traceback
    text = " ".join(text.split())
    return text[:300] + ("..." if len(text) > 300 else "")


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "message", None) or exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
