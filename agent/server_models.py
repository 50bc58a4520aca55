"""The HTTP service's request and response bodies, and its errors in OpenAI's shape {"error": {...}}.

agent.server re-exports every name here.
"""
from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.capabilities import error_payload
from agent.jobs import Job
from agent.tool_schemas import FollowUpInput, RunInput

if TYPE_CHECKING:
    from agent.server_service import ImagentService

MAX_N = 10                          # images per request (as OpenAI)


# -- errors in OpenAI's shape ----------------------------------------------------------------------
class OpenAIError(Exception):
    """An HTTP error with OpenAI's body {"error": {message, type, param, code}}."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


# imagent error type name (agent.capabilities.error_payload) -> (HTTP status, OpenAI type, code)
ERROR_MAP = {
    "InvalidInput": (400, "invalid_request_error", "invalid_value"),
    "ConfigError": (400, "invalid_request_error", "invalid_value"),
    "SafetyBlocked": (400, "invalid_request_error", "content_policy_violation"),
    "ModelNotFound": (500, "server_error", "model_not_found"),
    "BackendError": (502, "server_error", "backend_error"),
    "LLMError": (502, "server_error", "llm_error"),
    "Cancelled": (503, "server_error", "cancelled"),
}


def from_payload(error: dict, param: str | None = None) -> OpenAIError:
    """An OpenAIError from an imagent error payload ({type, message, hint, category?})."""
    status, type_, code = ERROR_MAP.get(error.get("type"), (500, "server_error", "internal_error"))
    message = " ".join(x for x in (error.get("message"), error.get("hint")) if x)
    return OpenAIError(status, message or "The request failed.", type=type_, code=code, param=param)


def from_exception(exc: BaseException, param: str | None = None) -> OpenAIError:
    if isinstance(exc, OpenAIError):
        return exc
    if isinstance(exc, ValidationError):
        return from_validation(exc.errors())
    return from_payload(error_payload(exc)["error"], param)


def from_validation(errors) -> OpenAIError:
    """A 400 naming the first bad field (as `param`) and every problem."""
    def where(e) -> str:
        loc = [str(x) for x in e.get("loc", ()) if x not in ("body", "query", "path")]
        return ".".join(loc)
    problems = "; ".join(f"{where(e) or 'body'}: {e.get('msg')}" for e in errors)
    first = where(errors[0]) if errors else None
    return OpenAIError(400, f"Invalid request: {problems}.", param=first or None, code="invalid_value")


# -- request bodies --------------------------------------------------------------------------------
class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is a 400, not silently ignored


class _Extras(_Body):
    """imagent's sampling extras, shared by generations, edits and runs."""

    negative_prompt: str = Field("", max_length=4000)
    steps: int | None = Field(None, ge=1, le=500)
    cfg: float | None = Field(None, ge=0.0, le=50.0)
    guidance_scale: float | None = Field(None, ge=0.0, le=50.0)
    seed: int | None = Field(None, ge=0, lt=2**63)
    scheduler: str | None = Field(None, max_length=64)
    loras: list[str] = Field([], max_length=8)   # 'PATH_OR_NAME[:WEIGHT]', as --lora
    refiner: str | None = Field(None, max_length=400)
    refiner_switch: float = Field(0.8, gt=0.0, lt=1.0)
    attention: Literal["sdpa", "sliced"] = "sdpa"
    vae_tiling: bool = False
    vae_slicing: bool = False
    lora_fuse: bool = False


class _OpenAIFields(_Body):
    model: str | None = Field(None, max_length=512)
    n: int = Field(1, ge=1, le=MAX_N)
    size: str | None = Field(None, max_length=32)
    response_format: Literal["b64_json", "url"] | None = None
    # OpenAI fields imagent accepts and ignores (documented)
    quality: str | None = None
    user: str | None = None
    background: str | None = None
    moderation: str | None = None
    output_compression: int | None = None
    output_format: Literal["png"] | None = None


class GenerationBody(_OpenAIFields, _Extras):
    prompt: str = Field(..., min_length=1, max_length=4000)
    style: str | None = Field(None, max_length=64)


class EditBody(_OpenAIFields, _Extras):
    prompt: str = Field(..., min_length=1, max_length=4000)
    strength: float = Field(0.75, gt=0.0, le=1.0)
    input_fidelity: str | None = None  # OpenAI; ignored


class RunBody(RunInput):
    size: str | None = Field(None, max_length=32)
    guidance_scale: float | None = Field(None, ge=0.0, le=50.0)
    model: str | None = Field(None, max_length=512)


class FollowUpBody(FollowUpInput):
    """POST /v1/followups: the follow_up tool's fields; `image` is a gallery id here (no file paths)."""

    model: str | None = Field(None, max_length=512)


# -- response bodies -------------------------------------------------------------------------------
def _saved_json(outcome) -> dict:
    return {"run_id": outcome.run_id, "blocked": outcome.blocked, "warnings": outcome.warnings,
            "images": [{"image_id": s.image_id, "path": str(s.path), "seed": s.seed, "record": s.record}
                       for s in outcome.images]}


def loop_event_json(event) -> dict | None:
    """A loop event as GET /v1/jobs/{id}/events streams it ({"event": NAME, "data": {...}}), or
    None for events the stream does not carry (steps, the end: the job's status says it)."""
    from dataclasses import asdict

    from agent.events import CandidateScored, Revised, RoundFinished, RoundStarted

    match event:
        case RoundStarted():
            name, data = "round_start", {"round": event.round, "prompt": event.prompt, "change": event.change,
                                         "repair": event.repair}
        case CandidateScored():
            name, data = "candidate", {**asdict(event), "checks": list(event.checks)}
        case RoundFinished():
            name, data = "round_end", {"round": event.round, **event.row}
        case Revised():
            name, data = "revised", asdict(event)
        case _:
            return None
    return {"event": name, "data": _json_safe(data)}


def _json_safe(value):
    return json.loads(json.dumps(value, default=str))


def _images_response(data: list[dict], record: dict, *, cache: str, run_id: str, blocked=(), warnings=()) -> dict:
    return {"created": int(time.time()), "data": data, "output_format": "png",
            "size": f"{record.get('width')}x{record.get('height')}", "model": record.get("model"),
            "cache": cache, "run_id": run_id, "blocked": list(blocked), "warnings": list(warnings)}


def _job_json(svc: ImagentService, job: Job, base_url: str, *, with_result: bool = True) -> dict:
    snap = job.snapshot(with_result=with_result)
    if snap.get("error"):
        err = from_payload(snap["error"])
        snap["error"] = {**err.body()["error"], "imagent_type": snap["error"].get("type")}
    return _json_safe({"id": job.id, "object": "imagent.job", **snap, "position": svc.queue.position(job),
                       "url": f"{base_url}v1/jobs/{job.id}", "events_url": f"{base_url}v1/jobs/{job.id}/events"})
