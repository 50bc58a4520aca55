"""imagent as an MCP server (the official MCP python SDK; the only module that imports `mcp`).

Tools (input schemas from agent.tool_schemas, shared with the LangChain tools): run, follow_up,
generate, edit, upscale, expand, check_safety, score, list_images, get_image; plus start_job, job_status,
cancel_job and list_jobs to run long work in the background and poll it.

- Results: a text block with the result as JSON (seed, ids, paths, full metadata), the same as
  `structuredContent`, and for every image a PNG preview as image content (downscaled when the
  file is larger than the limits) plus a resource link `imagent://images/ID` whose
  `resources/read` returns the full PNG with its metadata.
- Work: every call that runs a model (run, follow_up, generate, edit, upscale, score, check_safety) goes
  through one JobQueue with one worker thread, so concurrent calls wait their turn. During a
  call the server sends progress notifications (when the client asked for them with a
  progress token). A client that cancels its request cancels the work.
- Safety: every call goes through the Session, so the policy applies exactly as on the CLI.
- Paths: files a caller names are confined to the input and output folders (PathPolicy.confined:
  `..` and symlinks are resolved before the check); results are written only to the output folder.
- Errors: a tool error result whose text is the message and the hint (and `structuredContent`
  {error: {type, message, hint}}); the server keeps running.

`build_server(session, paths)` returns an `ImagentMCP` whose `.server` is the SDK's low-level
Server: serve it over stdio (`serve_stdio`), streamable HTTP (`serve_http`), or hand it to
`mcp.Client(server)` in-process (the tests do).
"""
from __future__ import annotations

from contextlib import contextmanager

import asyncio
import base64
import io
import json
import logging
import sys
from pathlib import Path
from typing import Literal

import anyio
import mcp_types as types
from mcp.server.lowlevel import Server
from mcp.shared.exceptions import MCPError
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.capabilities import Capabilities, PathPolicy, error_payload
from agent.errors import ImagentError, InvalidInput
from agent.jobs import Job, JobQueue
from agent.session import VERSION, Session
from agent.tool_schemas import TOOL_BY_NAME, TOOLS
from tools.images import open_image

log = logging.getLogger("imagent.mcp")

URI_PREFIX = "imagent://images/"
MAX_PREVIEW_SIDE = 1024          # image content larger than this (either side) is downscaled
MAX_PREVIEW_BYTES = 1_000_000    # ... and so is a PNG over this many bytes
MAX_RESOURCE_BYTES = 64 * 2**20  # resources/read refuses files over this (read the path instead)
QUEUED = {"run", "follow_up", "generate", "edit", "upscale", "score", "check_safety"}  # run a model: one at a time
PROGRESS_INTERVAL = 0.25         # seconds between progress notifications at most

INSTRUCTIONS = """imagent makes images from rough ideas. `run` is the main tool: it expands the idea,
generates candidates, checks safety, scores them with CLIP and revises until the image fits.
`follow_up` changes a picture it made (by image_id) in words ("add a blue square") or typed edits,
and returns the checklist's diff, the new picture and its verdicts, or a question to ask.
`generate` is one shot from an exact prompt; `edit`, `upscale`, `score` work on gallery images
(by image_id) or on files in the server's input folder. Long calls report progress; start_job +
job_status run them in the background. Results carry the seed and full metadata; images come as
a preview plus an imagent://images/ID resource with the full PNG."""


# -- MCP-only tools: background jobs --------------------------------------------------------------
class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StartJobInput(_Input):
    """Start a long call in the background; returns a job id at once."""

    tool: Literal["run", "follow_up", "generate", "edit", "upscale"] = Field(..., description="Which tool to run as "
                                                                                              "a job.")
    arguments: dict = Field(default_factory=dict, description="The tool's arguments, exactly as for a direct call.")


class JobStatusInput(_Input):
    """Status, progress and (when finished) the result of a job."""

    job_id: str = Field(..., min_length=1, max_length=64, description="The id start_job returned.")
    wait_seconds: float = Field(0.0, ge=0.0, le=60.0,
                                description="Wait up to this long for the job to finish before answering "
                                            "(long polling). 0 answers at once.")


class CancelJobInput(_Input):
    """Cancel a queued job, or stop a running one at its next step."""

    job_id: str = Field(..., min_length=1, max_length=64, description="The id start_job returned.")


class ListJobsInput(_Input):
    """List this server's recent jobs (newest last), without their results."""


JOB_TOOLS = {
    "start_job": (StartJobInput, "Start run, follow_up, generate, edit or upscale in the background and return "
                                 "its job_id at once; poll with job_status."),
    "job_status": (JobStatusInput, "A job's status (queued, running, done, failed, cancelled), progress, and "
                                   "when done its result with the images."),
    "cancel_job": (CancelJobInput, "Cancel a queued job, or stop a running job at its next step."),
    "list_jobs": (ListJobsInput, "List recent jobs with status and progress."),
}


class ToolFailure(Exception):
    """A job ended with an error payload (already shaped by error_payload)."""

    def __init__(self, error: dict):
        super().__init__(error.get("message"))
        self.error = error


def preview_png(path: Path, max_side: int = MAX_PREVIEW_SIDE, max_bytes: int = MAX_PREVIEW_BYTES
                ) -> tuple[bytes, tuple[int, int], bool]:
    """PNG bytes to show inline: the file itself when small enough, else a downscaled copy.
    Returns (png, size of the png, whether it was downscaled)."""
    data = path.read_bytes()
    with open_image(data, name=str(path)) as im:
        size, fmt = im.size, im.format
        if fmt == "PNG" and max(size) <= max_side and len(data) <= max_bytes:
            return data, size, False
        image = im.convert("RGBA" if "A" in im.getbands() else "RGB")
    scale = min(1.0, max_side / max(size))
    while True:
        w, h = max(1, round(size[0] * scale)), max(1, round(size[1] * scale))
        small = image.resize((w, h), Image.Resampling.LANCZOS) if (w, h) != image.size else image
        buf = io.BytesIO()
        small.save(buf, format="PNG", optimize=True)
        if buf.tell() <= max_bytes or max(w, h) <= 32:
            return buf.getvalue(), (w, h), (w, h) != size
        scale *= 0.7


def _json_safe(value):
    return json.loads(json.dumps(value, default=str))


class ImagentMCP:
    """The MCP front door over one Session: tools, resources, the job queue."""

    def __init__(self, session: Session, paths: PathPolicy, *, queue: JobQueue | None = None,
                 max_preview_side: int = MAX_PREVIEW_SIDE, max_preview_bytes: int = MAX_PREVIEW_BYTES):
        self.session = session
        self.caps = Capabilities(session, paths)
        self.queue = queue or JobQueue()
        self.max_preview_side = max_preview_side
        self.max_preview_bytes = max_preview_bytes
        self.server = Server("imagent", version=VERSION, title="imagent", instructions=INSTRUCTIONS,
                             on_list_tools=self._list_tools, on_call_tool=self._call_tool,
                             on_list_resources=self._list_resources,
                             on_list_resource_templates=self._list_templates,
                             on_read_resource=self._read_resource,
                             get_tool_input_schema=self._input_schema)

    # -- tools ------------------------------------------------------------------------------------
    def tools(self) -> list[types.Tool]:
        out = [types.Tool(name=t.name, description=t.description, input_schema=t.input.model_json_schema(),
                          annotations=types.ToolAnnotations(read_only_hint=t.read_only or None,
                                                            open_world_hint=False))
               for t in TOOLS]
        out += [types.Tool(name=name, description=desc, input_schema=model.model_json_schema(),
                           annotations=types.ToolAnnotations(read_only_hint=name in {"job_status", "list_jobs"},
                                                             open_world_hint=False))
                for name, (model, desc) in JOB_TOOLS.items()]
        return out

    def _input_schema(self, name: str):
        if name in TOOL_BY_NAME:
            return TOOL_BY_NAME[name].input.model_json_schema()
        if name in JOB_TOOLS:
            return JOB_TOOLS[name][0].model_json_schema()
        return None

    async def _list_tools(self, ctx, params) -> types.ListToolsResult:
        return types.ListToolsResult(tools=self.tools())

    async def _call_tool(self, ctx, params: types.CallToolRequestParams) -> types.CallToolResult:
        name, args = params.name, dict(params.arguments or {})
        try:
            if name in JOB_TOOLS:
                return await self._job_tool(name, args)
            if name not in TOOL_BY_NAME:
                raise InvalidInput(f"Unknown tool '{name}'.",
                                   f"Use one of: {', '.join([*TOOL_BY_NAME, *JOB_TOOLS])}.")
            inp = self.caps.validate(name, args)
            if name in QUEUED:
                job = self._submit(name, args, inp)
                result = await self._await_job(ctx, job)
            else:
                result = await anyio.to_thread.run_sync(lambda: self.caps.call(name, inp))
            return self._ok(result, attach=TOOL_BY_NAME[name].returns_images)
        except ToolFailure as exc:
            return self._error({"error": exc.error})
        except (ImagentError, ValidationError) as exc:
            return self._error(error_payload(exc))
        except Exception as exc:  # a bug: report it, keep serving
            log.exception("tool %s failed unexpectedly", name)
            return self._error(error_payload(exc))

    def _submit(self, name: str, args: dict, inp) -> Job:
        return self.queue.submit(name, args, lambda call: self.caps.call(name, inp, call=call))

    async def _await_job(self, ctx, job: Job) -> dict:
        """Wait for a queued job, sending progress notifications; a cancelled request cancels it."""
        fut = asyncio.wrap_future(job.future)
        last = 0
        try:
            while True:
                done, _ = await asyncio.wait({fut}, timeout=PROGRESS_INTERVAL)
                snap = job.tracker.snapshot()
                if snap["ticks"] != last and ctx is not None:
                    last = snap["ticks"]
                    await ctx.session.report_progress(snap["progress"], snap["total"], snap["message"] or None)
                if done:
                    break
        except BaseException:  # the client cancelled (or the connection went away): stop the work
            self.queue.cancel(job.id)
            raise
        if job.status != "done":
            raise ToolFailure(job.error or {"type": "Cancelled", "message": "The job was cancelled.", "hint": None})
        return job.result

    async def _job_tool(self, name: str, args: dict) -> types.CallToolResult:
        model = JOB_TOOLS[name][0]
        inp = model.model_validate(args)
        if name == "start_job":
            tool_inp = self.caps.validate(inp.tool, inp.arguments)  # bad arguments fail now, not later
            job = self._submit(inp.tool, inp.arguments, tool_inp)
            return self._ok({**job.snapshot(), "position": self.queue.position(job)})
        if name == "list_jobs":
            return self._ok({"jobs": [j.snapshot(with_result=False) for j in self.queue.jobs()]})
        if name == "cancel_job":
            job = self.queue.cancel(inp.job_id)
            await anyio.to_thread.run_sync(self.queue.wait, job, 2.0)
            return self._ok(job.snapshot(with_result=False))
        job = self.queue.get(inp.job_id)
        if inp.wait_seconds:
            await anyio.to_thread.run_sync(self.queue.wait, job, inp.wait_seconds)
        snap = {**job.snapshot(), "position": self.queue.position(job)}
        attach = job.status == "done" and TOOL_BY_NAME[job.tool].returns_images
        return self._ok(snap, attach=attach, images=(job.result or {}).get("images") if attach else None)

    # -- results ----------------------------------------------------------------------------------
    def _ok(self, result: dict, *, attach: bool = False, images: list | None = None) -> types.CallToolResult:
        payload = _json_safe(result)
        content: list = [types.TextContent(type="text", text=json.dumps(payload))]
        if attach:
            for im in images if images is not None else payload.get("images") or []:
                content += self._image_blocks(im)
        return types.CallToolResult(content=content, structured_content=payload)

    def _image_blocks(self, im: dict) -> list:
        path = Path(im["path"])
        if not path.is_file():
            return []
        png, size, downscaled = preview_png(path, self.max_preview_side, self.max_preview_bytes)
        uri = f"{URI_PREFIX}{im['image_id']}"
        note = (f"preview downscaled to {size[0]}x{size[1]}; full image at {uri}" if downscaled
                else f"full image also at {uri}")
        return [types.ImageContent(type="image", data=base64.b64encode(png).decode("ascii"), mime_type="image/png",
                                   meta={"imagent/image_id": im["image_id"], "imagent/note": note}),
                types.ResourceLink(type="resource_link", uri=uri, name=path.name, mime_type=_mime(path),
                                   size=path.stat().st_size,
                                   description=f"image {im['image_id']}, seed {im.get('seed')}, full size PNG "
                                               f"with metadata")]

    @staticmethod
    def _error(payload: dict) -> types.CallToolResult:
        err = payload["error"]
        text = err["message"] + (f"\nHint: {err['hint']}" if err.get("hint") else "")
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)],
                                    structured_content=_json_safe(payload), is_error=True)

    # -- resources: gallery images ------------------------------------------------------------------
    async def _list_resources(self, ctx, params) -> types.ListResourcesResult:
        rows = await anyio.to_thread.run_sync(lambda: self.session.gallery.images(limit=50))
        return types.ListResourcesResult(resources=[
            types.Resource(uri=f"{URI_PREFIX}{r['id']}", name=Path(r["path"]).name, mime_type=_mime(Path(r["path"])),
                           description=f"seed {r.get('seed')}: {(r.get('prompt') or '')[:120]}")
            for r in rows])

    async def _list_templates(self, ctx, params) -> types.ListResourceTemplatesResult:
        return types.ListResourceTemplatesResult(resource_templates=[types.ResourceTemplate(
            uri_template=URI_PREFIX + "{image_id}", name="gallery image", mime_type="image/png",
            description="A gallery image by id: the full file with its metadata.")])

    async def _read_resource(self, ctx, params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
        uri = str(params.uri)
        if not uri.startswith(URI_PREFIX) or not uri[len(URI_PREFIX):].isdigit():
            raise MCPError(types.INVALID_PARAMS, f"Unknown resource '{uri}'; image resources look like "
                                                 f"{URI_PREFIX}ID (ids from list_images).")
        row = await anyio.to_thread.run_sync(self.session.gallery.image, int(uri[len(URI_PREFIX):]))
        path = Path(row["path"]) if row else None
        if path is None or not path.is_file():
            raise MCPError(types.INVALID_PARAMS, f"There is no image file for '{uri}'. Call list_images for the ids.")
        if path.stat().st_size > MAX_RESOURCE_BYTES:
            raise MCPError(types.INVALID_PARAMS, f"{path.name} is over {MAX_RESOURCE_BYTES >> 20} MiB; read it "
                                                 f"from {path} instead.")
        data = await anyio.to_thread.run_sync(path.read_bytes)
        return types.ReadResourceResult(contents=[types.BlobResourceContents(
            uri=uri, mime_type=_mime(path), blob=base64.b64encode(data).decode("ascii"))])

    def close(self) -> None:
        self.queue.shutdown()


def _mime(path: Path) -> str:
    return {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
            ".webp": "image/webp"}.get(path.suffix.lower(), "application/octet-stream")


def build_server(session: Session, paths: PathPolicy, **kwargs) -> ImagentMCP:
    return ImagentMCP(session, paths, **kwargs)


# -- transports -----------------------------------------------------------------------------------
def serve_stdio(app: ImagentMCP) -> None:
    """Serve over stdin/stdout until the client closes the connection. Diagnostics go to stderr."""
    from mcp.server.stdio import stdio_server

    async def main():
        async with stdio_server() as (read, write):
            await app.server.run(read, write, app.server.create_initialization_options())

    try:
        anyio.run(main)
    finally:
        app.close()


LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def http_app(app: ImagentMCP, host: str = "127.0.0.1"):
    """The Starlette app serving streamable HTTP at /mcp (DNS-rebinding protection on loopback)."""
    return app.server.streamable_http_app(streamable_http_path="/mcp", host=host)


@contextmanager
def serving_http_in_thread(app: ImagentMCP, *, start_timeout: float = 10.0):
    """Serve streamable HTTP on a free loopback port in a background thread (tests, benchmarks,
    embedding): yields the URL of the /mcp endpoint and stops the server on exit."""
    from agent.serving import uvicorn_in_thread

    with uvicorn_in_thread(http_app(app), start_timeout=start_timeout, what="the MCP HTTP server") as url:
        yield url + "/mcp"


def serve_http(app: ImagentMCP, host: str = "127.0.0.1", port: int = 8765, *, log_level: str = "warning") -> None:
    """Serve streamable HTTP at http://HOST:PORT/mcp until interrupted."""
    import uvicorn

    if host not in LOOPBACK:
        print(f"imagent: warning: serving on {host}, reachable from other machines, without authentication.",
              file=sys.stderr)
    from agent.serving import log_config

    config = uvicorn.Config(http_app(app, host), host=host, port=port, log_level=log_level, log_config=log_config())
    try:
        uvicorn.Server(config).run()
    finally:
        app.close()
