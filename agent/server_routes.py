"""The HTTP service's generation, edit, run, follow-up, job and gallery-image endpoints, and reading the edit uploads.

agent.server.make_app registers them with `add_routes`; agent.server re-exports the names here.
"""
from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from agent.errors import InvalidInput
from agent.jobs import Job
from agent.requests import RunOptions
from agent.server_models import (EditBody, FollowUpBody, GenerationBody, OpenAIError, RunBody, _images_response,
                                 _job_json, _json_safe, _saved_json, from_validation, loop_event_json)
from agent.server_service import ImagentService
from tools.generate import GenerateRequest

OPENAI_STYLES = {"vivid", "natural"}  # OpenAI's `style` values: accepted, no effect
EVENT_POLL = 0.1                    # seconds between looks at a job for the SSE stream


def add_routes(app: FastAPI, svc: ImagentService) -> None:
    """Register the generation, edit, run, job and gallery-image endpoints on `app`, over `svc`."""
    session, metrics = svc.session, svc.metrics

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

        def work(call):
            req = GenerateRequest(prompt=prompt, count=body.n, **fields_)
            outcome = session.generate(req, idea=idea, spec=spec, extra=extra, call=call)
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

        def work(call):
            fields_ = dict(sampling, scheduler=sampling["scheduler"] or session.settings.scheduler)
            req = GenerateRequest(prompt=body.prompt, count=body.n, init_image=init, mask=mask,
                                  strength=body.strength, **fields_)
            outcome = session.generate(req, kind="edit", inputs=inputs, call=call)
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
            from agent.checklist_edits import check_edits

            loop.LoopOptions(rounds=body.rounds, candidates=body.candidates, threshold=body.threshold,
                             threshold_mode=body.threshold_mode).check()
            session.check_prompt(body.idea)
            check_edits(body.require, body.drop, body.checklist_json())  # a 400 now, not a failed job

        await run_in_threadpool(prepare)
        events: list[dict] = []
        streamed = _streaming(events)

        def work(call):
            options = RunOptions(rounds=body.rounds, candidates=body.candidates, threshold=body.threshold,
                                 threshold_mode=body.threshold_mode, style=body.style, raw=body.raw,
                                 request_fields=fields, checklist=body.checklist_json(), require=tuple(body.require),
                                 drop=tuple(body.drop))
            outcome = session.run(body.idea, options, call=streamed(call))
            metrics.images.labels(kind="run").inc()
            best = outcome.best
            image = svc.image_json(best.image_id, best.path, best.record, base_url, "url")
            return _json_safe({**outcome.to_json(), "image": image})

        job = svc.submit("run", body.model_dump(exclude_none=True), work)
        svc._events[job.id] = events
        return JSONResponse(_job_json(svc, job, base_url), status_code=202)

    # -- follow-ups: a picture changed in words or by typed edits, as jobs like runs ----------------------
    @app.post("/v1/followups", status_code=202)
    async def followups(body: FollowUpBody, request: Request):
        from agent.capabilities import follow_up_options, gallery_id, preview_follow_up

        svc.check_model(body.model)
        image = gallery_id(body.image)
        if image is None:
            raise OpenAIError(400, "Over HTTP, `image` is a gallery image id (e.g. 12 or '#12', the `image_id` of "
                                   "a run's result); this server reads no file paths.", param="image",
                              code="invalid_value")
        change = body.change_value()
        options = follow_up_options(session.settings, body)
        base_url = str(request.base_url)

        def prepare():  # a bad image or change is a 400 now, not a failed job; so is a blocked idea
            _, idea = preview_follow_up(session, image, change, options)
            if idea is not None:
                session.check_prompt(idea)

        await run_in_threadpool(prepare)
        events: list[dict] = []
        streamed = _streaming(events)

        def work(call):
            result = session.follow_up(image, change, options, call=streamed(call))
            picture = None
            if result.outcome is not None:
                metrics.images.labels(kind="follow_up").inc()
                best = result.outcome.best
                picture = svc.image_json(best.image_id, best.path, best.record, base_url, "url")
            return _json_safe({**result.to_json(), "image": picture})

        job = svc.submit("follow_up", body.model_dump(exclude_none=True), work)
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


def _streaming(events: list[dict]):
    """`streamed(call)` for a loop job: its events go to the job's progress, and its round events
    (agent.server_models.loop_event_json) into `events`, the job's SSE stream."""
    def streamed(call):
        def sink(event):
            call.emit(event)
            wire = loop_event_json(event)
            if wire is not None:
                events.append(wire)
        return call.with_sink(sink)
    return streamed


# -- the edit uploads ------------------------------------------------------------------------------
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
