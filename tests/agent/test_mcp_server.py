"""The MCP server through the SDK's in-process client: every tool, errors, path confinement,
progress, jobs, resources; once over streamable HTTP on 127.0.0.1."""
from __future__ import annotations

import asyncio
import base64
import io
import os

import pytest
from PIL import Image

from agent.capabilities import PathPolicy
from agent.mcp_server import JOB_TOOLS, build_server, preview_png
from agent.tool_schemas import TOOLS

mcp = pytest.importorskip("mcp")


@pytest.fixture
def folders(tmp_path):
    ins, outs = tmp_path / "inputs", tmp_path / "outputs"
    ins.mkdir()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(ins / "red.png")
    Image.new("L", (32, 32), 255).save(ins / "mask.png")
    return ins, outs


@pytest.fixture
def app(session, folders):
    app = build_server(session, PathPolicy.confined(*folders))
    yield app
    app.close()


def call(app, name, args, **kwargs):
    """One tool call through an in-process MCP client."""
    async def main():
        async with mcp.Client(app.server) as client:
            return await client.call_tool(name, args, **kwargs)
    return asyncio.run(main())


def data(result):
    assert result.structured_content is not None
    return result.structured_content


def test_lists_every_tool_with_described_fields(app):
    async def main():
        async with mcp.Client(app.server) as client:
            return (await client.list_tools()).tools
    tools = {t.name: t for t in asyncio.run(main())}
    assert set(tools) == {t.name for t in TOOLS} | set(JOB_TOOLS)
    for spec in TOOLS:
        props = tools[spec.name].input_schema["properties"]
        assert props and all(p.get("description") for p in props.values()), spec.name
    assert tools["list_images"].annotations.read_only_hint is True


def test_generate_returns_image_seed_metadata_and_resource(app, folders):
    progress = []

    async def on_progress(done, total, message):
        progress.append((done, total, message))

    res = call(app, "generate", {"prompt": "two red circles", "steps": 3, "seed": 42},
               progress_callback=on_progress)
    assert not res.is_error, res.content
    out = data(res)
    im = out["images"][0]
    assert im["seed"] == 42 and im["metadata"]["params"]["steps"] == 3
    assert os.path.realpath(im["path"]).startswith(os.path.realpath(folders[1]))
    kinds = [c.type for c in res.content]
    assert kinds == ["text", "image", "resource_link"]
    png = base64.b64decode(res.content[1].data)
    assert Image.open(io.BytesIO(png)).size == (32, 32)
    assert str(res.content[2].uri) == f"imagent://images/{im['image_id']}"
    assert progress and progress[-1][0] == 3 and [p[0] for p in progress] == sorted(p[0] for p in progress)

    async def read():
        async with mcp.Client(app.server) as client:
            return await client.read_resource(f"imagent://images/{im['image_id']}")
    blob = asyncio.run(read()).contents[0]
    assert base64.b64decode(blob.blob) == open(im["path"], "rb").read() and blob.mime_type == "image/png"


def test_every_other_tool(app, folders):
    gen = data(call(app, "generate", {"prompt": "a blue square", "steps": 2, "seed": 1}))["images"][0]
    image_id = gen["image_id"]

    edited = call(app, "edit", {"prompt": "a green square", "image": "red.png", "strength": 0.5, "steps": 2,
                                "seed": 3})
    assert not edited.is_error, edited.content
    assert data(edited)["mode"] == "img2img" and data(edited)["images"][0]["seed"] == 3
    inpaint = data(call(app, "edit", {"prompt": "a cat", "image_id": image_id, "mask": "mask.png", "steps": 2}))
    assert inpaint["mode"] == "inpaint"

    up = call(app, "upscale", {"image_id": image_id, "scale": 2, "method": "lanczos"})
    assert not up.is_error, up.content
    assert (data(up)["width"], data(up)["height"]) == (64, 64)

    exp = data(call(app, "expand", {"idea": "a cat coding at night", "style": "watercolor", "family": "sd"}))
    assert exp["positive"] and exp["spec"]["subject"]

    safe = data(call(app, "check_safety", {"prompt": "a blue square", "image_id": image_id}))
    assert safe["allowed"] is True and "image" in safe

    score = data(call(app, "score", {"image_id": image_id}))
    assert score["text"] == "a blue square" and isinstance(score["score"], float) and score["formula"]

    listed = data(call(app, "list_images", {"limit": 10}))
    assert listed["count"] >= 4 and listed["images"][-1]["image_id"] == image_id
    got = call(app, "get_image", {"image_id": image_id})
    assert data(got)["images"][0]["metadata"]["seed"] == 1 and [c.type for c in got.content][1] == "image"

    ran = call(app, "run", {"idea": "two red circles", "rounds": 1, "candidates": 1, "steps": 2, "seed": 5,
                            "threshold": 0.5, "threshold_mode": "absolute"})
    assert not ran.is_error, ran.content
    assert data(ran)["images"][0]["image_id"] and "rounds" in data(ran)
    result = data(ran)
    assert [c["id"] for c in result["checks"]] == ["holistic"] and "met" in result and "failed" in result
    assert result["checklist"]["requirements"][0]["noun"] == "circle", "the checklist travels with the result"


def test_errors_are_tool_errors_with_hints(app):
    bad = call(app, "generate", {"prompt": "x", "steps": 0})
    assert bad.is_error and "steps" in bad.content[0].text and data(bad)["error"]["hint"]
    bad = call(app, "generate", {"prompt": "x", "width": 33, "steps": 1})
    assert bad.is_error and "multiple of 8" in bad.content[0].text and "Hint:" in bad.content[0].text
    bad = call(app, "generate", {"prompt": "x", "colour": "red"})
    assert bad.is_error and "colour" in bad.content[0].text
    bad = call(app, "paint", {})
    assert bad.is_error and "Unknown tool" in bad.content[0].text
    bad = call(app, "get_image", {"image_id": 999})
    assert bad.is_error and "list_images" in bad.content[0].text
    # the server is still fine
    assert not call(app, "list_images", {}).is_error


def test_blocked_prompt_is_a_tool_error(session, folders, monkeypatch):
    from agent.config import load_settings
    from agent.session import Session

    strict = Session(load_settings(model=session.settings.model, clip_model=session.settings.clip_model,
                                   safety="standard"), backend=session.backend(), scorer=session.scorer())
    app = build_server(strict, PathPolicy.confined(*folders))
    try:
        res = call(app, "generate", {"prompt": "a naked woman, explicit porn", "steps": 1})
        assert res.is_error and data(res)["error"]["type"] == "SafetyBlocked" and data(res)["error"]["category"]
        assert strict.gallery.count_images() == 0
    finally:
        app.close()


@pytest.mark.parametrize("path", ["../secret.png", "/etc/passwd", "sub/../../secret.png", "link.png",
                                  "dirlink/secret.png"])
def test_paths_are_confined(app, folders, tmp_path, path):
    ins, _ = folders
    Image.new("RGB", (32, 32)).save(tmp_path / "secret.png")
    (ins / "sub").mkdir()
    (ins / "link.png").symlink_to(tmp_path / "secret.png")
    (ins / "dirlink").symlink_to(tmp_path)
    for tool, args in (("edit", {"prompt": "x", "image": path, "steps": 1}),
                       ("upscale", {"image": path, "method": "lanczos"}),
                       ("score", {"image": path, "text": "x"}),
                       ("edit", {"prompt": "x", "image": "red.png", "mask": path, "steps": 1})):
        res = call(app, tool, args)
        assert res.is_error, (tool, path)
        text = res.content[0].text
        assert "no such file in the input folder" in text, text
        assert str(tmp_path / "secret.png") not in text
        # the same answer as for a file that does not exist at all (nothing tells which exists outside)
        missing = call(app, tool, {**args, **{k: path.replace("secret", "nothere").replace("passwd", "nothere")
                                              for k, v in args.items() if v == path}})
        assert missing.content[0].text == text.replace("secret", "nothere").replace("passwd", "nothere"), tool


def test_jobs_start_and_poll(app):
    async def main():
        async with mcp.Client(app.server) as client:
            started = (await client.call_tool("start_job", {"tool": "generate",
                                                            "arguments": {"prompt": "two red circles", "steps": 1,
                                                                          "seed": 9}})).structured_content
            second = (await client.call_tool("start_job", {"tool": "generate",
                                                           "arguments": {"prompt": "a cat", "steps": 1}})
                      ).structured_content
            done = await client.call_tool("job_status", {"job_id": started["job_id"], "wait_seconds": 30})
            listed = (await client.call_tool("list_jobs", {})).structured_content
            await client.call_tool("job_status", {"job_id": second["job_id"], "wait_seconds": 30})
            bad = await client.call_tool("start_job", {"tool": "generate", "arguments": {"steps": 2}})
            missing = await client.call_tool("job_status", {"job_id": "nope"})
            return started, done, listed, bad, missing
    started, done, listed, bad, missing = asyncio.run(main())
    assert started["status"] in {"queued", "running", "done"}
    snap = done.structured_content
    assert snap["status"] == "done" and snap["result"]["images"][0]["seed"] == 9
    assert [c.type for c in done.content] == ["text", "image", "resource_link"]
    assert len(listed["jobs"]) >= 2
    assert bad.is_error and "prompt" in bad.content[0].text
    assert missing.is_error and "no job" in missing.content[0].text


def test_queue_serializes_concurrent_calls(app, monkeypatch):
    import threading
    import time

    active, peak = [0], [0]
    lock = threading.Lock()
    real = app.caps.generate

    def counting(inp, call=None):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.05)
        try:
            return real(inp, call=call)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(app.caps, "generate", counting)

    async def main():
        async with mcp.Client(app.server) as client:
            return await asyncio.gather(*[client.call_tool("generate", {"prompt": "a cat", "steps": 1, "seed": i})
                                          for i in range(3)])
    results = asyncio.run(main())
    assert all(not r.is_error for r in results) and peak[0] == 1


def test_preview_is_size_limited(tmp_path):
    big = tmp_path / "big.png"
    Image.effect_noise((1500, 900), 60).convert("RGB").save(big)
    png, size, downscaled = preview_png(big, max_side=512, max_bytes=200_000)
    assert downscaled and max(size) <= 512 and len(png) <= 200_000
    small = tmp_path / "small.png"
    Image.new("RGB", (40, 40)).save(small)
    assert preview_png(small) == (small.read_bytes(), (40, 40), False)


def test_streamable_http_on_loopback(app):
    from agent.mcp_server import serving_http_in_thread

    with serving_http_in_thread(app) as url:
        assert url.startswith("http://127.0.0.1:")

        async def main():
            async with mcp.Client(url) as client:
                names = [t.name for t in (await client.list_tools()).tools]
                res = await client.call_tool("generate", {"prompt": "two red circles", "steps": 1, "seed": 2})
                return names, res
        names, res = asyncio.run(main())
        assert "run" in names and not res.is_error and res.structured_content["images"][0]["seed"] == 2


def test_cancel_queued_and_running_jobs(app, monkeypatch):
    import threading

    from agent.errors import Cancelled

    started = threading.Event()

    def blocking(inp, call=None):
        started.set()
        if not call.cancel.wait(20):
            raise AssertionError("never cancelled")
        raise Cancelled("Cancelled at step 1.")

    monkeypatch.setattr(app.caps, "generate", blocking)

    async def main():
        async with mcp.Client(app.server) as client:
            a = (await client.call_tool("start_job", {"tool": "generate", "arguments": {"prompt": "a"}})
                 ).structured_content
            b = (await client.call_tool("start_job", {"tool": "generate", "arguments": {"prompt": "b"}})
                 ).structured_content
            assert started.wait(10)
            cb = (await client.call_tool("cancel_job", {"job_id": b["job_id"]})).structured_content
            ca = (await client.call_tool("cancel_job", {"job_id": a["job_id"]})).structured_content
            return b, cb, ca
    b, cb, ca = asyncio.run(main())
    assert b["position"] == 1
    assert cb["status"] == "cancelled" and ca["status"] == "cancelled"


def test_imagent_mcp_over_stdio(tiny_sd_path, imagent_home, tmp_path):
    import sys

    params = mcp.StdioServerParameters(
        command=sys.executable, args=["-m", "agent.cli", "mcp", "--model", str(tiny_sd_path), "--safety", "off",
                                      "--inputs", str(tmp_path / "in"), "--outputs", str(tmp_path / "out")],
        env={**os.environ, "IMAGENT_HOME": str(imagent_home)})

    async def main():
        async with mcp.Client(params) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            listed = await client.call_tool("list_images", {})
            bad = await client.call_tool("edit", {"prompt": "x", "image": "../../etc/passwd"})
            return names, listed, bad
    names, listed, bad = asyncio.run(main())
    assert {"run", "generate", "start_job"} <= names
    assert listed.structured_content["count"] == 0
    assert bad.is_error and "no such file in the input folder" in bad.content[0].text
    assert (tmp_path / "in").is_dir()


def test_a_missing_file_inside_and_a_file_outside_read_the_same(app, folders, tmp_path):
    Image.new("RGB", (32, 32)).save(tmp_path / "secret.png")
    outside = call(app, "edit", {"prompt": "x", "image": "../secret.png", "steps": 1}).content[0].text
    missing = call(app, "edit", {"prompt": "x", "image": "../absent.png", "steps": 1}).content[0].text
    assert outside.replace("secret", "absent") == missing and "no such file in the input folder" in missing


def test_mcp_inputs_that_is_a_file_is_invalid_input(tmp_path, capsys):
    from agent.capabilities import PathPolicy
    from agent.cli import main
    from agent.errors import InvalidInput

    afile = tmp_path / "notes.txt"
    afile.write_text("x")
    with pytest.raises(InvalidInput, match="is a file, not a folder"):
        PathPolicy.confined(afile, tmp_path / "out")
    assert main(["mcp", "--inputs", str(afile), "--outputs", str(tmp_path / "out")]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_loras_follow_the_path_policy(app, session, folders, tmp_path):
    from diffusers import UNet2DConditionModel
    from tiny_models import save_tiny_lora

    ins, _ = folders
    unet = UNet2DConditionModel.from_pretrained(str(session.settings.model) + "/unet")
    save_tiny_lora(unet, tmp_path / "outside.safetensors")
    save_tiny_lora(unet, ins / "mine.safetensors")
    save_tiny_lora(unet, session.settings.loras_dir / "named.safetensors")
    args = {"prompt": "two red circles", "steps": 1, "seed": 3}
    for bad in ("../outside.safetensors", str(tmp_path / "outside.safetensors")):
        res = call(app, "generate", {**args, "loras": [bad]})
        assert res.is_error and "no such file in the input folder" in res.content[0].text, bad
        missing = call(app, "generate", {**args, "loras": [bad.replace("outside", "absent")]}).content[0].text
        assert res.content[0].text.replace("outside", "absent") == missing, "outside and missing read the same"
    for good, source, weight in (("mine.safetensors:0.5", ins / "mine.safetensors", 0.5),
                                 ("named", session.settings.loras_dir / "named.safetensors", 1.0)):
        res = call(app, "generate", {**args, "loras": [good]})
        assert not res.is_error, (good, res.content[0].text)
        params = data(res)["images"][0]["metadata"]["params"]
        assert params["loras"] == [{"source": str(source.resolve()), "weight": weight}], params["loras"]
