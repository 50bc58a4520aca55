"""Build the chat model the agent talks to, and turn its failures into clear LLMErrors.

One small factory shared by prompt expansion, the critique loop and the chat agent. It builds a
LangChain `ChatOpenAI`, which speaks to OpenAI or any OpenAI-compatible server (llama.cpp,
vLLM, Ollama, LM Studio) through a base URL. Nothing is created at import time.

The OpenAI client retries rate limits (429), server errors (5xx), timeouts and dropped
connections with exponential backoff (honouring Retry-After), `settings.llm_max_retries` times.
"""
from __future__ import annotations

from agent.config import Settings
from agent.errors import LLMError

NO_KEY = "not-needed"  # local OpenAI-compatible servers accept any key


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
    try:
        from langchain_openai import ChatOpenAI
    except ImportError:  # pragma: no cover - a declared dependency
        raise LLMError("langchain-openai is not installed.", "pip install langchain-openai") from None
    if temperature is not None:
        kwargs["temperature"] = temperature
    return ChatOpenAI(model=name, base_url=settings.llm_base_url, api_key=key or NO_KEY,
                      timeout=settings.llm_timeout, max_retries=settings.llm_max_retries, **kwargs)


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
            return LLMError(f"The LLM server at {where} did not answer within {settings.llm_timeout:g} s.",
                            "Raise IMAGENT_LLM_TIMEOUT, use a smaller model, or check the server's load.")
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
        if isinstance(exc, openai.BadRequestError):
            return LLMError(f"The LLM server at {where} refused the request: {_first_line(exc)}",
                            "If it does not support structured output, try IMAGENT_LLM_METHOD=json_mode "
                            "or function_calling.")
        if isinstance(exc, openai.APIStatusError):
            return LLMError(f"The LLM server at {where} answered HTTP {exc.status_code}: {_first_line(exc)}",
                            "Retry later, or check the server's log.")
    return LLMError(f"The LLM call failed: {type(exc).__name__}: {_first_line(exc)}",
                    "Check the LLM settings (IMAGENT_LLM_MODEL, IMAGENT_LLM_BASE_URL).")


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "message", None) or exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
