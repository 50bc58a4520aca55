"""imagent as an OpenAI-compatible HTTP service (FastAPI on uvicorn; metrics with prometheus-client).

Endpoints (docs/serve.md has the user guide):
- POST /v1/images/generations   the OpenAI images API (JSON), plus imagent extras (seed, steps, ...)
- POST /v1/images/edits         multipart image (+ OpenAI-style alpha mask): img2img / inpainting
- POST /v1/runs                 the critique loop as a background job: 202 with the job id at once
- GET  /v1/jobs/{id}            status, progress and result; GET /v1/jobs/{id}/events streams them
  (server-sent events); DELETE /v1/jobs/{id} cancels
- GET  /v1/images/{id}          a gallery PNG (its recipe is in the file); /v1/images/{id}/metadata
- GET  /v1/models, /healthz (no token), /metrics (Prometheus text format)

Every request that runs a model goes through one agent.jobs.JobQueue (one worker thread), bounded
at `queue_size` jobs waiting or running; beyond that a request gets 429 with Retry-After. Errors
use OpenAI's body {"error": {"message", "type", "param", "code"}}. With a token, every endpoint
but /healthz needs `Authorization: Bearer TOKEN`. An identical text-to-image request with an
explicit seed is answered from the gallery (Gallery.find_generated) without generating.

`make_app(session, token=..., queue_size=...)` builds the app; nothing loads until a request needs
it. `serving_in_thread(app)` serves it on a free loopback port (tests, embedding).
"""
from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import logging
import secrets
import threading
import time
import uuid
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from agent.capabilities import error_payload
from agent.errors import ConfigError, ImagentError, InvalidInput, SafetyBlocked
from agent.jobs import Job, JobQueue
from agent.session import VERSION, Session
from agent.tool_schemas import RunInput
from tools.generate import GenerateRequest, check_request, parse_size

log = logging.getLogger("imagent.serve")

MAX_UPLOAD_BYTES = 20 * 2**20       # per uploaded file (image, mask)
DEFAULT_QUEUE = 8                   # jobs waiting or running at most
MAX_N = 10                          # images per request (as OpenAI)
OPENAI_STYLES = {"vivid", "natural"}  # OpenAI's `style` values: accepted, no effect
OPEN_PATHS = {"/healthz"}           # no token needed
MODEL_ALIASES = {"imagent"}         # besides the session's model id and its folder name
EVENT_POLL = 0.1                    # seconds between looks at a job for the SSE stream


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


# -- metrics ---------------------------------------------------------------------------------------
class Metrics:
    """The service's Prometheus metrics, in their own registry (one per app)."""

    def __init__(self, depth):
        self.registry = r = CollectorRegistry()
        self.latency = Histogram("imagent_http_request_duration_seconds", "HTTP request latency by route",
                                 ["route", "method"], registry=r,
                                 buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300))
        self.requests = Counter("imagent_http_requests", "HTTP requests by route and status",
                                ["route", "method", "status"], registry=r)
        self.errors = Counter("imagent_errors", "Error responses by kind (the OpenAI error code)", ["kind"],
                              registry=r)
        self.queue_depth = Gauge("imagent_queue_depth", "Jobs waiting or running", registry=r)
        self.queue_depth.set_function(depth)
        self.images = Counter("imagent_images_generated", "Images generated and saved", ["kind"], registry=r)
        self.safety_blocks = Counter("imagent_safety_blocks", "Safety blocks: whole requests (a prompt, or "
                                     "every image) and single images left out of a reply", ["stage"], registry=r)
        self.cache_hits = Counter("imagent_cache_hits", "Generation requests answered from the gallery", registry=r)
        self.cache_misses = Counter("imagent_cache_misses", "Seeded generation requests that had to generate",
                                    registry=r)


# -- the service -----------------------------------------------------------------------------------
class ImagentService:
    """The state behind the HTTP app: the session, the bounded job queue, metrics, run events."""

    def __init__(self, session: Session, *, token: str | None, queue_size: int, cache: bool,
                 max_upload_bytes: int = MAX_UPLOAD_BYTES):
        if queue_size < 1:
            raise InvalidInput(f"--queue {queue_size} is out of range.", "Use 1 or more.")
        self.session = session
        self.token = token or None
        self.queue_size = queue_size
        self.cache = cache
        self.max_upload_bytes = max_upload_bytes
        self.queue = JobQueue(cancel_running=session.cancel)
        self.metrics = Metrics(self.depth)
        self._submit_lock = threading.Lock()
        self._events: dict[str, list[dict]] = {}

    # -- queue -----------------------------------------------------------------------------------
    def depth(self) -> int:
        return sum(1 for j in self.queue.jobs() if j.status in {"queued", "running"})

    def retry_after(self) -> int:
        """Seconds to wait before retrying: the mean time of recent jobs times the jobs ahead."""
        times = [j.finished - j.started for j in self.queue.jobs()[-20:] if j.finished and j.started]
        mean = sum(times) / len(times) if times else 5.0
        return max(1, int(mean * max(1, self.depth()) + 0.999))

    def submit(self, kind: str, arguments: dict, fn) -> Job:
        """Queue `fn(tracker)` unless `queue_size` jobs already wait or run (then 429)."""
        def work(tracker):
            with self.session.work_lock:
                try:
                    return fn(tracker)
                except SafetyBlocked:
                    if kind == "run":  # a background job: no error response counts it
                        self.metrics.safety_blocks.labels(stage="request").inc()
                    raise

        with self._submit_lock:
            if self.depth() >= self.queue_size:
                raise OpenAIError(429, f"The queue is full ({self.queue_size} requests waiting or running). "
                                       "Retry after the time in the Retry-After header.",
                                  type="rate_limit_error", code="queue_full",
                                  headers={"Retry-After": str(self.retry_after())})
            known = {j.id for j in self.queue.jobs()}
            for job_id in [k for k in self._events if k not in known]:
                self._events.pop(job_id, None)
            return self.queue.submit(kind, arguments, work)

    async def result(self, job: Job, request: Request | None = None) -> dict:
        """Wait for a job; its result, or the OpenAIError its failure maps to. A client that goes away
        (`request` disconnected) while its job still waits in the queue cancels it: no one would get
        the images. A job already running finishes and is stored (a seeded retry is a cache hit)."""
        future = asyncio.wrap_future(job.future)  # a job cancelled while queued does not raise here
        gone = asyncio.ensure_future(_disconnected(request)) if request is not None else None
        try:
            await asyncio.wait({future, gone} - {None}, return_when=asyncio.FIRST_COMPLETED)
            if gone is not None and gone.done() and not future.done():
                if job.future.cancel():  # only while still queued: a job that has started runs on
                    log.info("job %s cancelled: its client disconnected while it was queued", job.id)
                await asyncio.wait({future})
        finally:
            if gone is not None:
                gone.cancel()
        await run_in_threadpool(job.done_event.wait, 5.0)
        if job.status != "done":
            raise from_payload(job.error or {"type": "Cancelled", "message": "The job was cancelled."})
        return job.result

    # -- helpers ---------------------------------------------------------------------------------
    def model_ids(self) -> list[str]:
        model = str(self.session.settings.model)
        return list(dict.fromkeys([model, Path(model).name, *MODEL_ALIASES]))

    def check_model(self, model: str | None) -> None:
        if model is not None and model not in self.model_ids():
            raise OpenAIError(400, f"The model '{model}' is not served here; this server generates with "
                                   f"'{self.session.settings.model}'. Omit `model` or use one of: "
                                   f"{', '.join(self.model_ids())}.", param="model", code="model_not_found")

    @staticmethod
    def sampling(body) -> dict:
        cfg = body.cfg
        if body.guidance_scale is not None:
            if cfg is not None and cfg != body.guidance_scale:
                raise OpenAIError(400, "`cfg` and `guidance_scale` are the same setting; give one.", param="cfg")
            cfg = body.guidance_scale
        from tools.adapters import parse_lora

        return dict(negative_prompt=body.negative_prompt, steps=body.steps, cfg=cfg, seed=body.seed,
                    scheduler=body.scheduler, loras=tuple(parse_lora(x) for x in body.loras),
                    refiner=body.refiner, refiner_switch=body.refiner_switch, attention=body.attention,
                    vae_tiling=body.vae_tiling, vae_slicing=body.vae_slicing, lora_fuse=body.lora_fuse)

    @staticmethod
    def size(text: str | None) -> tuple[int | None, int | None]:
        if text is None or text == "auto":
            return None, None
        try:
            width, height = parse_size(text)
            check_request(GenerateRequest(prompt="-", width=width, height=height))  # range, multiples of 8
            return width, height
        except InvalidInput as exc:
            raise OpenAIError(400, f"Invalid size '{text}': {exc}", param="size", code="invalid_value") from None

    def image_json(self, image_id: int, path, record: dict, base_url: str, response_format: str | None) -> dict:
        params = record.get("params") or {}
        out: dict = {}
        if response_format == "url":
            out["url"] = f"{base_url}v1/images/{image_id}"
        else:
            out["b64_json"] = base64.b64encode(Path(path).read_bytes()).decode("ascii")
        out.update(revised_prompt=record.get("revised_prompt") or params.get("prompt"), seed=record.get("seed"),
                   image_id=image_id, metadata_url=f"{base_url}v1/images/{image_id}/metadata")
        return out

    def _defaults(self, fields: dict) -> dict:
        """The request as the session would resolve it (steps/cfg defaults, scheduler name)."""
        from tools.schedulers import check_name

        d = self.session.model_defaults()
        scheduler = fields.get("scheduler") or self.session.settings.scheduler
        return dict(steps=fields["steps"] if fields.get("steps") is not None else d["steps"],
                    cfg=fields["cfg"] if fields.get("cfg") is not None else d["cfg"],
                    scheduler=check_name(scheduler) if scheduler else None)

    def cached(self, prompt: str, fields: dict, n: int) -> list[dict] | None:
        """Gallery rows for seeds seed..seed+n-1 made with exactly these parameters, or None."""
        if not self.cache or fields.get("seed") is None:
            return None
        from tools.generate import OPTION_KEYS

        backend = self.session.backend()  # built, not loaded: only its name and model id are read
        backend = getattr(backend, "primary", backend)  # a chain (tools.fallback): what its first would make
        resolved = self._defaults(fields)
        asked = check_request(GenerateRequest(prompt=prompt, **{k: v for k, v in fields.items() if k != "count"}))
        prompt = asked.prompt  # <lora:...> tags out, as recorded
        options = {k: v for k, v in asked.params().items() if k in OPTION_KEYS}
        rows = []
        for i in range(n):
            row = self.session.gallery.find_generated(
                model=str(backend.model), backend=backend.name, prompt=prompt,
                negative_prompt=fields.get("negative_prompt") or "", seed=fields["seed"] + i,
                width=fields.get("width"), height=fields.get("height"), options=options, **resolved)
            if row is None:
                return None
            rows.append(row)
        checker = self.session.safety()
        for row in rows:  # made under another safety level: check the image again under this one
            if ((row.get("record") or {}).get("safety") or {}).get("level") != getattr(checker, "level", None):
                from tools.images import load_image

                verdict = checker.check_image(load_image(row["path"]))
                if not verdict.allowed:
                    raise SafetyBlocked(f"The image was blocked by the safety policy ({verdict.category}).",
                                        verdict.category or "unsafe", "Change the prompt or the seed.")
        return rows


async def _disconnected(request: Request) -> None:
    """Returns once the client of `request` (whose body was read) has disconnected."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _saved_json(outcome) -> dict:
    return {"run_id": outcome.run_id, "blocked": outcome.blocked, "warnings": outcome.warnings,
            "images": [{"image_id": s.image_id, "path": str(s.path), "seed": s.seed, "record": s.record}
                       for s in outcome.images]}


def _json_safe(value):
    return json.loads(json.dumps(value, default=str))


def is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """A token is required whenever the server is reachable from other machines."""
    if not token and not is_loopback(host):
        raise ConfigError(f"Refusing to serve on {host} without a token: other machines could reach it. "
                          "Pass --token TOKEN (or set IMAGENT_SERVE_TOKEN), or bind to 127.0.0.1.")


# -- the app ---------------------------------------------------------------------------------------
def make_app(session: Session, *, token: str | None = None, queue_size: int = DEFAULT_QUEUE, cache: bool = True,
             max_upload_bytes: int = MAX_UPLOAD_BYTES) -> FastAPI:
    """The FastAPI app over one Session. Nothing loads until a request needs it."""
    svc = ImagentService(session, token=token, queue_size=queue_size, cache=cache,
                         max_upload_bytes=max_upload_bytes)
    metrics = svc.metrics

    @asynccontextmanager
    async def lifespan(app):
        try:
            yield
        finally:
            await run_in_threadpool(svc.queue.shutdown)

    app = FastAPI(title="imagent", version=VERSION, lifespan=lifespan,
                  description="OpenAI-compatible image generation over imagent (see docs/serve.md).")
    app.state.service = svc

    def error_response(err: OpenAIError) -> JSONResponse:
        metrics.errors.labels(kind=err.code or err.type).inc()
        if err.code == "content_policy_violation":
            metrics.safety_blocks.labels(stage="request").inc()
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

    @app.middleware("http")
    async def observe(request: Request, call_next):
        t0 = time.perf_counter()
        if svc.token and request.url.path not in OPEN_PATHS and not _authorized(request, svc.token):
            response = error_response(OpenAIError(
                401, "Missing or wrong token: send the header 'Authorization: Bearer TOKEN' with the server's "
                     "--token.", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"}))
        else:
            response = await call_next(request)
        route = request.scope.get("route")
        label = getattr(route, "path", None) or "unmatched"
        metrics.latency.labels(route=label, method=request.method).observe(time.perf_counter() - t0)
        metrics.requests.labels(route=label, method=request.method, status=str(response.status_code)).inc()
        return response

    @app.exception_handler(OpenAIError)
    async def _openai_error(request, exc: OpenAIError):
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request, exc: RequestValidationError):
        return error_response(from_validation(exc.errors()))

    @app.exception_handler(ImagentError)
    async def _imagent(request, exc: ImagentError):
        return error_response(from_exception(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = f"No such endpoint: {request.method} {request.url.path}." if exc.status_code in (404, 405) \
            else str(exc.detail)
        return error_response(OpenAIError(exc.status_code, message, code=code))

    @app.exception_handler(Exception)
    async def _bug(request, exc: Exception):
        log.exception("request %s %s failed unexpectedly", request.method, request.url.path)
        return error_response(from_exception(exc))

    # -- service endpoints ---------------------------------------------------------------------
    @app.get("/healthz")
    def healthz():
        s = session.settings
        return {"status": "ok", "version": VERSION, "model": str(s.model), "backend": s.backend,
                "safety": s.safety, "cache": svc.cache, "queue": {"depth": svc.depth(), "size": svc.queue_size}}

    @app.get("/metrics")
    def prometheus():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "imagent"}
                                           for m in svc.model_ids()]}

    # -- generations -----------------------------------------------------------------------------
    @app.post("/v1/images/generations")
    async def generations(body: GenerationBody, request: Request):
        svc.check_model(body.model)
        width, height = svc.size(body.size)
        fields = dict(svc.sampling(body), width=width, height=height)
        base_url = str(request.base_url)

        def prepare():
            prompt, idea, spec, extra = body.prompt, None, None, None
            style = None if body.style in OPENAI_STYLES else body.style
            fields_ = dict(fields)
            if style:
                exp = session.expand(body.prompt, style=style, negative=body.negative_prompt)
                prompt, idea, spec = exp.positive, exp.idea, exp.spec.model_dump(mode="json")
                fields_["negative_prompt"], extra = exp.negative, {"expansion": exp.record()}
            session.check_prompt(prompt)
            if fields_.get("scheduler") is None:
                fields_["scheduler"] = session.settings.scheduler
            return prompt, idea, spec, extra, fields_, svc.cached(prompt, fields_, body.n)

        prompt, idea, spec, extra, fields_, rows = await run_in_threadpool(prepare)
        if rows is not None:
            metrics.cache_hits.inc()
            data = [svc.image_json(r["id"], r["path"], r.get("record") or {}, base_url, body.response_format)
                    for r in rows]
            return _images_response(data, rows[0].get("record") or {}, cache="hit", run_id=rows[0]["run_id"])
        if svc.cache and fields_.get("seed") is not None:
            metrics.cache_misses.inc()

        def work(tracker):
            req = GenerateRequest(prompt=prompt, count=body.n, **fields_)
            outcome = session.generate(req, idea=idea, spec=spec, extra=extra, progress=tracker)
            metrics.images.labels(kind="generate").inc(len(outcome.images))
            if outcome.blocked:
                metrics.safety_blocks.labels(stage="image").inc(len(outcome.blocked))
            return _saved_json(outcome)

        job = svc.submit("generate", {"prompt": prompt}, work)
        result = await svc.result(job, request)
        data = await run_in_threadpool(lambda: [
            svc.image_json(i["image_id"], i["path"], i["record"], base_url, body.response_format)
            for i in result["images"]])
        cache = "miss" if svc.cache and fields_.get("seed") is not None else "off"
        return _images_response(data, result["images"][0]["record"], cache=cache, run_id=result["run_id"],
                                blocked=result["blocked"], warnings=result["warnings"])

    # -- edits ----------------------------------------------------------------------------------
    @app.post("/v1/images/edits")
    async def edits(request: Request):
        limit = svc.max_upload_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > 2 * limit + 2**20:
            raise _too_large("image", limit)
        try:
            form = await request.form(max_files=4, max_fields=64)
        except Exception as exc:  # noqa: BLE001  (a malformed multipart body)
            raise OpenAIError(400, f"The request is not a readable multipart form ({exc}).") from None
        uploads = {key: [v for v in form.getlist(key) if isinstance(v, UploadFile)] for key in ("image", "image[]", "mask")}
        images = uploads["image"] + uploads["image[]"]
        if not images:
            raise OpenAIError(400, "Send the image to edit as the multipart file field `image`.", param="image",
                              code="missing_required_parameter")
        if len(images) > 1:
            raise OpenAIError(400, "Send one image; imagent edits one image per request.", param="image")
        masks = uploads["mask"]
        fields = {k: v for k, v in form.multi_items() if isinstance(v, str) and k not in ("image", "image[]", "mask")}
        try:
            body = EditBody.model_validate(fields)
        except ValidationError as exc:
            raise from_validation(exc.errors()) from None
        svc.check_model(body.model)
        width, height = svc.size(body.size)
        image_bytes = await _read_upload(images[0], "image", limit)
        mask_bytes = await _read_upload(masks[0], "mask", limit) if masks else None
        base_url = str(request.base_url)
        sampling = svc.sampling(body)

        def prepare():
            init, mask = _edit_images(image_bytes, mask_bytes, (width, height) if width else None)
            session.check_prompt(body.prompt)
            inputs = _save_uploads(session.settings.home, init, mask)
            return init, mask, inputs

        init, mask, inputs = await run_in_threadpool(prepare)

        def work(tracker):
            fields_ = dict(sampling, scheduler=sampling["scheduler"] or session.settings.scheduler)
            req = GenerateRequest(prompt=body.prompt, count=body.n, init_image=init, mask=mask,
                                  strength=body.strength, **fields_)
            outcome = session.generate(req, kind="edit", inputs=inputs, progress=tracker)
            metrics.images.labels(kind="edit").inc(len(outcome.images))
            if outcome.blocked:
                metrics.safety_blocks.labels(stage="image").inc(len(outcome.blocked))
            return _saved_json(outcome)

        job = svc.submit("edit", {"prompt": body.prompt}, work)
        result = await svc.result(job, request)
        data = await run_in_threadpool(lambda: [
            svc.image_json(i["image_id"], i["path"], i["record"], base_url, body.response_format)
            for i in result["images"]])
        return _images_response(data, result["images"][0]["record"], cache="off", run_id=result["run_id"],
                                blocked=result["blocked"], warnings=result["warnings"])

    # -- runs (the critique loop) as jobs --------------------------------------------------------
    @app.post("/v1/runs", status_code=202)
    async def runs(body: RunBody, request: Request):
        from agent import loop

        svc.check_model(body.model)
        for name in ("controls", "ip_adapter"):
            if getattr(body, name):
                raise OpenAIError(400, f"`{name}` is not taken over HTTP yet (it names files on the server).",
                                  param=name, code="unsupported")
        width, height = svc.size(body.size) if body.size else (body.width, body.height)
        fields = dict(svc.sampling(body), width=width, height=height)
        fields["scheduler"] = fields["scheduler"] or session.settings.scheduler
        base_url = str(request.base_url)

        def prepare():
            loop.LoopOptions(rounds=body.rounds, candidates=body.candidates, threshold=body.threshold,
                             threshold_mode=body.threshold_mode).check()
            session.check_prompt(body.idea)

        await run_in_threadpool(prepare)
        events: list[dict] = []

        def on_event(event):
            if event.kind != "done":
                events.append({"event": event.kind, "data": _json_safe({"round": event.round, **event.data})})

        def work(tracker):
            outcome = session.run(body.idea, rounds=body.rounds, candidates=body.candidates,
                                  threshold=body.threshold, threshold_mode=body.threshold_mode, style=body.style,
                                  raw=body.raw, request_fields=fields, progress=tracker, events=on_event)
            metrics.images.labels(kind="run").inc()
            best = outcome.best
            image = svc.image_json(best.image_id, best.path, best.record, base_url, "url")
            return _json_safe({**outcome.to_json(), "image": image})

        job = svc.submit("run", body.model_dump(exclude_none=True), work)
        svc._events[job.id] = events
        return JSONResponse(_job_json(svc, job, base_url), status_code=202)

    def get_job(job_id: str) -> Job:
        try:
            return svc.queue.get(job_id)
        except InvalidInput as exc:
            raise OpenAIError(404, str(exc), param="job_id", code="not_found") from None

    @app.get("/v1/jobs")
    def list_jobs(request: Request):
        return {"object": "list", "data": [_job_json(svc, j, str(request.base_url), with_result=False)
                                           for j in svc.queue.jobs()]}

    @app.get("/v1/jobs/{job_id}")
    def job_status(job_id: str, request: Request):
        return _job_json(svc, get_job(job_id), str(request.base_url))

    @app.delete("/v1/jobs/{job_id}")
    async def cancel_job(job_id: str, request: Request):
        job = svc.queue.cancel(get_job(job_id).id)
        await run_in_threadpool(svc.queue.wait, job, 2.0)
        return _job_json(svc, job, str(request.base_url), with_result=False)

    @app.get("/v1/jobs/{job_id}/events")
    async def job_events(job_id: str, request: Request):
        from sse_starlette import EventSourceResponse

        job = get_job(job_id)
        base_url = str(request.base_url)

        async def stream():
            sent, last = 0, None
            while True:
                finished = job.done_event.is_set()
                events = svc._events.get(job.id, [])
                while sent < len(events):
                    yield {"event": events[sent]["event"], "data": json.dumps(events[sent]["data"])}
                    sent += 1
                snap = job.tracker.snapshot()
                state = (job.status, snap["ticks"])
                if state != last:
                    last = state
                    yield {"event": "progress", "data": json.dumps(
                        {"status": job.status, "position": svc.queue.position(job), **snap})}
                if finished:
                    yield {"event": job.status, "data": json.dumps(_job_json(svc, job, base_url))}
                    return
                await asyncio.sleep(EVENT_POLL)

        return EventSourceResponse(stream(), ping=15)

    # -- gallery images ----------------------------------------------------------------------------
    def gallery_row(image_id: str) -> dict:
        row = session.gallery.image(int(image_id)) if image_id.isdigit() else None
        if row is None or not Path(row["path"]).is_file():
            raise OpenAIError(404, f"There is no image '{image_id}' in the gallery.", param="image_id",
                              code="not_found")
        return row

    @app.get("/v1/images/{image_id}")
    def get_image(image_id: str):
        row = gallery_row(image_id)
        media = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}.get(
            Path(row["path"]).suffix.lower(), "image/png")  # images made with --format jpeg|webp
        return FileResponse(row["path"], media_type=media, headers={
            "Link": f'</v1/images/{row["id"]}/metadata>; rel="describedby"',
            "X-Imagent-Seed": str(row.get("seed")), "Cache-Control": "private, max-age=31536000, immutable"})

    @app.get("/v1/images/{image_id}/metadata")
    def get_metadata(image_id: str):
        row = gallery_row(image_id)
        return _json_safe({"image_id": row["id"], "run_id": row["run_id"], "seed": row.get("seed"),
                           "width": row.get("width"), "height": row.get("height"), "score": row.get("score"),
                           "created": row.get("created"), "record": row.get("record")})

    return app


def _authorized(request: Request, token: str) -> bool:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(given.strip().encode(), token.encode())


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


def _too_large(param: str, limit: int) -> OpenAIError:
    return OpenAIError(413, f"The {param} upload is over the {limit / 2**20:.0f} MB limit.", param=param,
                       code="file_too_large")


async def _read_upload(upload: UploadFile, param: str, limit: int) -> bytes:
    if upload.size is not None and upload.size > limit:
        raise _too_large(param, limit)
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise _too_large(param, limit)
    return data


def _edit_images(image_bytes: bytes, mask_bytes: bytes | None, size: tuple[int, int] | None):
    """(RGB image, L mask or None) for imagent from OpenAI-style uploads: the mask's transparent
    pixels are the area to edit, which becomes imagent's white (repaint)."""
    from PIL import Image

    from tools.images import open_image

    def opened(data: bytes, param: str):
        try:
            return open_image(data, what=param, name=param)
        except InvalidInput as exc:
            raise OpenAIError(400, str(exc), param=param, code="invalid_image") from None

    with opened(image_bytes, "image") as im:
        init = im.convert("RGB")
    mask = None
    if mask_bytes is not None:
        with opened(mask_bytes, "mask") as m:
            if "A" not in m.getbands() and "transparency" not in m.info:
                raise OpenAIError(400, "The mask has no alpha channel. Send a PNG whose transparent pixels mark "
                                       "the area to edit (as OpenAI's API).", param="mask", code="invalid_image")
            alpha = m.convert("RGBA").getchannel("A")
        if alpha.size != init.size:
            raise OpenAIError(400, f"The mask is {alpha.size[0]}x{alpha.size[1]} but the image is "
                                   f"{init.size[0]}x{init.size[1]}; they must be the same size.", param="mask",
                              code="invalid_image")
        mask = alpha.point(lambda a: 255 if a < 128 else 0).convert("L")
    if size and size != init.size:
        init = init.resize(size, Image.Resampling.LANCZOS)
        mask = mask.resize(size, Image.Resampling.NEAREST) if mask is not None else None
    return init, mask


def _save_uploads(home: Path, init, mask) -> dict:
    """Keep the uploads (as imagent reads them: RGB image, white-is-repaint mask) so the records
    point at real files and `imagent rerun` works."""
    from tools.images import atomic_save_png

    folder = Path(home) / "uploads" / datetime.now().strftime("%Y-%m-%d")
    stem = uuid.uuid4().hex[:12]
    inputs = {"init_image": atomic_save_png(init, folder / f"{stem}-image.png")}
    if mask is not None:
        inputs["mask"] = atomic_save_png(mask, folder / f"{stem}-mask.png")
    return inputs


@contextmanager
def serving_in_thread(app: FastAPI, *, start_timeout: float = 10.0):
    """Serve `app` on a free loopback port in a background thread; yields the base URL
    (http://127.0.0.1:PORT) and stops the server on exit."""
    from agent.serving import uvicorn_in_thread

    with uvicorn_in_thread(app, start_timeout=start_timeout, what="the imagent HTTP server") as url:
        yield url


def serve(app: FastAPI, host: str = "127.0.0.1", port: int = 8000, *, log_level: str = "info") -> None:
    """Serve until interrupted."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=log_level)
