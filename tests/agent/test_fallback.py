"""The backend fallback chain (`--backend openai,diffusers`, tools.fallback): a loopback server
that answers like the OpenAI images API with a 500, a 429 or too slowly (or a port nothing
listens on) chained before the tiny random SD. What is passed on and what is not, the record
(PNG metadata, gallery row, --json), the loop, batch, the service and the CLI. The local
backend is wrapped only to count its calls."""
from __future__ import annotations

import base64
import io
import json

import httpx
import numpy as np
import openai
import pytest
from fake_openai_images import FakeImagesAPI, free_port, server  # noqa: F401  (fixtures)
from fakes import CountingBackend
from PIL import Image

from agent.cli import main
from agent.config import load_settings
from agent.errors import BackendError, ConfigError, InvalidInput, SafetyBlocked
from agent.session import Session
from tools.fallback import FallbackBackend
from tools.generate import GenerateRequest
from tools.images import load_image
from tools.metadata import read_metadata
from tools.openai_backend import OpenAIBackend

FAST = dict(prompt="two red circles", seed=11, steps=2)


def openai_at(url: str, timeout: float = 10.0) -> OpenAIBackend:
    return OpenAIBackend("gpt-image-1", api_key="sk-test", base_url=url, timeout=timeout, max_retries=0)


@pytest.fixture
def local(tiny_backend):
    return CountingBackend(tiny_backend)


@pytest.fixture
def chained(settings, tiny_scorer, local, server):
    """chained(url=the fake API, timeout) -> a Session whose backend is [OpenAI at url, the tiny SD]."""
    def make(url=server, timeout=10.0):
        return Session(settings, backend=FallbackBackend([openai_at(url, timeout), local]), scorer=tiny_scorer)
    return make


@pytest.mark.parametrize("mode, fragment", [
    ("down", "OpenAI error 500"),
    ("rate", "rate limit or quota reached (429)"),
    ("slow", "did not answer within 0.5 s"),
    ("refused", "Cannot reach the OpenAI API"),
])
def test_a_retryable_failure_passes_the_request_on_and_the_record_says_why(chained, server, free_port, local,
                                                                          tiny_backend, mode, fragment):
    url = f"http://127.0.0.1:{free_port}/v1" if mode == "refused" else server
    FakeImagesAPI.mode = "ok" if mode == "refused" else mode
    session = chained(url, timeout=0.5)
    outcome = session.generate(GenerateRequest(**FAST))
    saved = outcome.images[0]

    # the image is the local backend's: the tiny SD alone makes the same pixels for this seed
    assert local.calls == 1 and (mode == "refused" or len(FakeImagesAPI.seen) == 1)
    alone = tiny_backend.generate(GenerateRequest(**FAST)).images[0]
    assert np.array_equal(np.asarray(load_image(saved.path)), np.asarray(alone))

    # the record names who made it and why openai was skipped: PNG metadata, gallery row, --json
    skip = saved.record["fallback"]
    assert saved.record["backend"] == "diffusers" and saved.record["model"] == tiny_backend.model
    assert [s["backend"] for s in skip] == ["openai"] and fragment in skip[0]["error"], skip
    assert read_metadata(saved.path)["record"]["fallback"] == skip
    assert session.gallery.image(saved.image_id)["record"]["fallback"] == skip
    assert outcome.to_json()["images"][0]["fallback"] == skip
    assert any("openai was skipped" in w and fragment in w for w in outcome.warnings), outcome.warnings


def test_the_first_backend_makes_the_image_when_it_can(chained, local):
    outcome = chained().generate(GenerateRequest(**FAST))
    record = outcome.images[0].record
    assert record["backend"] == "openai" and "fallback" not in record
    assert local.calls == 0 and len(FakeImagesAPI.seen) == 1


@pytest.mark.parametrize("mode, error, fragment", [
    ("policy", SafetyBlocked, "content policy"),
    ("badsize", BackendError, "rejected the request"),
    ("auth", BackendError, "API key"),
    ("notfound", BackendError, "error 404"),
])
def test_a_refusal_or_bad_request_is_not_passed_on(chained, local, mode, error, fragment):
    FakeImagesAPI.mode = mode
    session = chained()
    with pytest.raises(error, match=fragment):
        session.generate(GenerateRequest(**FAST))
    assert local.calls == 0 and session.gallery.count_images() == 0
    run = session.gallery.runs()[0]
    assert run["status"] == "failed" and fragment in run["error"]


def test_when_every_backend_fails_the_error_lists_each_and_why(settings, tiny_scorer, server, free_port):
    FakeImagesAPI.mode = "down"
    chain = FallbackBackend([openai_at(server), openai_at(f"http://127.0.0.1:{free_port}/v1")])
    with pytest.raises(BackendError) as info:
        Session(settings, backend=chain, scorer=tiny_scorer).generate(GenerateRequest(**FAST))
    message = info.value.message
    assert message.startswith("Every backend of openai,openai failed:")
    assert "openai: OpenAI error 500" in message and "openai: Cannot reach the OpenAI API" in message
    assert info.value.hint and info.value.retryable and info.value.exit_code == 4


def test_a_backend_that_cannot_do_the_mode_is_passed_over(chained, local):
    init = Image.new("RGB", (32, 32), (200, 30, 30))
    outcome = chained().generate(GenerateRequest(init_image=init, strength=0.5, **FAST))
    assert outcome.images[0].record["fallback"] == [{"backend": "openai", "error": "cannot do img2img"}]
    assert FakeImagesAPI.seen == [] and local.calls == 1
    with pytest.raises(InvalidInput, match="No backend of openai,openai can do img2img"):
        FallbackBackend([openai_at("http://127.0.0.1:9/v1")] * 2).generate(GenerateRequest(init_image=init, **FAST))


def test_the_loop_records_which_backend_made_each_round(chained):
    FakeImagesAPI.mode = "down"
    outcome = chained().run("two red circles", rounds=1, candidates=1, raw=True, request_fields={"steps": 2})
    record = outcome.best.record
    assert record["backend"] == "diffusers" and record["fallback"][0]["backend"] == "openai"
    assert "OpenAI error 500" in outcome.rounds[0]["fallback"][0]["error"]
    assert any(w.startswith("Round 1: diffusers made the images") for w in outcome.warnings), outcome.warnings


def test_a_batch_record_names_the_backend_and_the_skip(chained, tmp_path):
    from agent.batch import BatchOptions, Sweep, open_batch, plan, read_lines, run_batch

    FakeImagesAPI.mode = "rate"
    src = tmp_path / "i.txt"
    src.write_text("two red circles\n")
    _, lines = read_lines(src)
    options, out = BatchOptions(steps=1), tmp_path / "out"
    log, done = open_batch(src, out, fmt="txt", sweep=Sweep(), options=options, resume=False)
    assert run_batch(chained(), plan(lines, Sweep()), log, done, options, out).ok == 1
    record = json.loads((out / "records.jsonl").read_text().splitlines()[0])
    assert record["backend"] == "diffusers" and "429" in record["fallback"][0]["error"]


def test_the_service_falls_back_and_its_record_names_the_skip(chained):
    from agent.server import make_app, serving_in_thread

    FakeImagesAPI.mode = "down"
    with serving_in_thread(make_app(chained())) as url:
        c = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)
        res = c.images.generate(prompt="two red circles", size="32x32", extra_body={"seed": 3, "steps": 2})
        item = res.data[0]
        assert Image.open(io.BytesIO(base64.b64decode(item.b64_json))).size == (32, 32)
        meta = httpx.get(item.model_extra["metadata_url"]).json()["record"]
    assert meta["backend"] == "diffusers" and "OpenAI error 500" in meta["fallback"][0]["error"]
    assert any("openai was skipped" in w for w in res.model_extra["warnings"])


# -- settings and the command line -------------------------------------------------------------
def test_a_chain_comes_from_the_environment_or_config_json(imagent_home, monkeypatch):
    monkeypatch.setenv("IMAGENT_BACKEND", "openai, diffusers")
    settings = load_settings()
    assert settings.backend == "openai,diffusers" and settings.backends == ("openai", "diffusers")
    backend = Session(settings).backend()  # built, not loaded
    assert isinstance(backend, FallbackBackend) and [b.name for b in backend.backends] == ["openai", "diffusers"]
    assert backend.capabilities >= {"txt2img", "img2img", "inpaint", "compose"}

    monkeypatch.delenv("IMAGENT_BACKEND")
    imagent_home.mkdir(parents=True, exist_ok=True)
    (imagent_home / "config.json").write_text('{"backend": "diffusers,openai"}')
    assert load_settings().backends == ("diffusers", "openai")
    assert load_settings(backend="openai").backends == ("openai",)  # --backend wins
    (imagent_home / "config.json").write_text('{"backend": "openai,dalle"}')
    with pytest.raises(ConfigError, match="Unknown backend 'dalle' in 'openai,dalle'"):
        load_settings()


def test_cli_backend_chain_falls_back_end_to_end(server, tiny_sd_path, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", server)
    FakeImagesAPI.mode = "down"
    code = main(["generate", "two red circles", "--backend", "openai,diffusers", "--model", str(tiny_sd_path),
                 "--seed", "3", "--steps", "2", "--safety", "off", "--out", str(tmp_path), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    image = json.loads(out)["images"][0]
    assert image["backend"] == "diffusers" and image["fallback"][0]["backend"] == "openai"
    assert "OpenAI error 500" in image["fallback"][0]["error"]
    assert "warning: diffusers made the image: openai was skipped" in err
    assert len(FakeImagesAPI.seen) == 3  # the openai client's own two retries came first


@pytest.mark.parametrize("value, fragment", [
    ("openai,dalle", "Unknown backend 'dalle' in 'openai,dalle'"),
    ("openai,openai", "names openai twice"),
    ("openai,", "Unknown backend an empty name"),
])
def test_cli_unknown_backend_is_a_clear_error(value, fragment, capsys):
    with pytest.raises(SystemExit) as info:
        main(["generate", "x", "--backend", value])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "argument --backend" in err and fragment in err
    assert "e.g. openai,diffusers" in err


def test_a_bad_chain_in_the_environment_exits_2(monkeypatch, capsys):
    monkeypatch.setenv("IMAGENT_BACKEND", "diffusers,nope")
    assert main(["generate", "x"]) == 2
    assert "Unknown backend 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["generate", "run", "batch", "serve", "mcp", "upscale", "expand"])
def test_every_command_with_backend_takes_a_chain(command):
    from agent.cli import build_parser

    positional = {"batch": ["f.txt"], "serve": [], "mcp": [], "upscale": ["in.png"]}.get(command, ["x"])
    argv = [command, *positional, "--backend", "openai,diffusers"]
    assert build_parser(argv).parse_args(argv).backend == "openai,diffusers"
