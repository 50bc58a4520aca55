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

This module assembles the app (auth, metrics and error middleware, the service endpoints) and
serves it; the parts are agent.server_models (request/response bodies, OpenAI errors),
agent.server_service (queue, metrics, cache) and agent.server_routes (generations, edits, runs, jobs,
gallery images). Their names are re-exported here.
"""
from __future__ import annotations

import ipaddress
import logging
import secrets
import time
from contextlib import asynccontextmanager, contextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from agent.errors import ConfigError, ImagentError
from agent.server_models import (ERROR_MAP, MAX_N, EditBody, GenerationBody, OpenAIError, RunBody,  # noqa: F401
                                 _images_response, _job_json, _json_safe, _saved_json, from_exception,
                                 from_payload, from_validation)
from agent.server_routes import (EVENT_POLL, OPENAI_STYLES, _edit_images, _read_upload, _save_uploads,  # noqa: F401
                                 _too_large, add_routes)
from agent.server_service import MAX_UPLOAD_BYTES, MODEL_ALIASES, ImagentService, Metrics  # noqa: F401
from agent.session import VERSION, Session

log = logging.getLogger("imagent.serve")

DEFAULT_QUEUE = 8                   # jobs waiting or running at most
OPEN_PATHS = {"/healthz"}           # no token needed


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

    add_routes(app, svc)
    return app


def _authorized(request: Request, token: str) -> bool:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(given.strip().encode(), token.encode())


@contextmanager
def serving_in_thread(app: FastAPI, *, start_timeout: float = 10.0):
    """Serve `app` on a free loopback port in a background thread; yields the base URL
    (http://127.0.0.1:PORT) and stops the server on exit."""
    from agent.serving import uvicorn_in_thread

    with uvicorn_in_thread(app, start_timeout=start_timeout, what="the imagent HTTP server") as url:
        yield url


def serve(app: FastAPI, host: str = "127.0.0.1", port: int = 8000, *, log_level: str = "info") -> None:
    """Serve until interrupted; uvicorn's messages and access log go to stderr."""
    import uvicorn

    from agent.serving import log_config

    uvicorn.run(app, host=host, port=port, log_level=log_level, log_config=log_config())
