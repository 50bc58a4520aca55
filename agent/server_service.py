"""The state behind the HTTP app: the session, the bounded job queue, Prometheus metrics, the gallery cache.

agent.server re-exports every name here.
"""
from __future__ import annotations

import asyncio
import base64
import logging
import threading
from pathlib import Path

from fastapi import Request
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.concurrency import run_in_threadpool

from agent.errors import InvalidInput, SafetyBlocked
from agent.jobs import Job, JobQueue
from agent.server_models import OpenAIError, from_payload
from agent.session import Session
from tools.generate import GenerateRequest, check_request, parse_size

log = logging.getLogger("imagent.serve")

MAX_UPLOAD_BYTES = 20 * 2**20       # per uploaded file (image, mask)
MODEL_ALIASES = {"imagent"}         # besides the session's model id and its folder name
BACKGROUND = {"run", "follow_up"}   # job kinds answered at once (202) and polled: no response waits for them


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
        self.queue = JobQueue()
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
        """Queue `fn(call)` (the job's own agent.events.Call) unless `queue_size` jobs already wait
        or run (then 429)."""
        def work(call):
            try:
                return fn(call)
            except SafetyBlocked:
                if kind in BACKGROUND:  # a background job: no error response counts it
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
