"""The OpenAI images backend against a loopback HTTP server that speaks the images API."""
from __future__ import annotations

import json

import pytest
from fake_openai_images import FakeImagesAPI, free_port, server  # noqa: F401  (fixtures)
from PIL import Image

from tools.errors import BackendError, InvalidInput, SafetyBlocked
from tools.generate import GenerateRequest
from tools.openai_backend import OpenAIBackend


def backend(url, timeout=10.0):
    return OpenAIBackend("gpt-image-1", api_key="sk-test", base_url=url, timeout=timeout, max_retries=0)


def test_generate_returns_images_and_records_seed_as_not_reproducible(server):
    result = backend(server).generate(GenerateRequest("a red circle", count=2, seed=5, width=1024, height=1024))
    assert [im.getpixel((0, 0)) for im in result.images] == [(255, 0, 0), (255, 0, 0)]
    assert result.seeds == [5, 6] and result.reproducible is False
    assert result.revised_prompts == ["a red thing", "a red thing"]
    path, ctype, body = FakeImagesAPI.seen[0]
    sent = json.loads(body)
    assert path == "/v1/images/generations"
    assert sent["model"] == "gpt-image-1" and sent["prompt"] == "a red circle" and sent["size"] == "1024x1024"


def test_masked_edit_sends_image_and_transparent_mask(server):
    init = Image.new("RGB", (64, 64), (0, 255, 0))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))
    result = backend(server).generate(GenerateRequest("make it blue", init_image=init, mask=mask, seed=1))
    assert result.images[0].getpixel((0, 0)) == (0, 0, 255)
    path, ctype, body = FakeImagesAPI.seen[0]
    assert path == "/v1/images/edits" and ctype.startswith("multipart/form-data")
    assert b'name="image"' in body and b'name="mask"' in body


def test_img2img_without_mask_is_refused_clearly(server):
    with pytest.raises(InvalidInput, match="Add a mask") as info:
        backend(server).generate(GenerateRequest("x", init_image=Image.new("RGB", (64, 64)), strength=0.5))
    assert info.value.param == "mask"


@pytest.mark.parametrize("mode, error, fragment, retryable", [
    ("auth", BackendError, "API key", False),
    ("rate", BackendError, "rate limit", True),
    ("down", BackendError, "error 500", True),
    ("badsize", BackendError, "rejected the request", False),
    ("notfound", BackendError, "error 404", False),
    ("policy", SafetyBlocked, "content policy", False),
])
def test_api_errors_become_clear_messages(server, mode, error, fragment, retryable):
    """Each error says what to do, and whether a fallback chain may pass the request on: a 429 and
    a 5xx are retryable; a bad key, a 400 (bad size, a content-policy refusal) and a 404 are not."""
    FakeImagesAPI.mode = mode
    with pytest.raises(error) as info:
        backend(server).generate(GenerateRequest("a cat", seed=1))
    assert fragment in str(info.value)
    assert info.value.hint
    assert info.value.retryable is retryable


@pytest.mark.parametrize("mode,fragment", [
    ("truncated", "not valid JSON"),
    ("cut", "OpenAI"),
    ("notjson", "not valid JSON"),
    ("nodata", "no images"),
    ("nulldata", "no images"),
    ("emptydata", "no images"),
    ("notimage", "cannot read"),
    ("badb64", "base64"),
])
def test_malformed_answers_become_backend_errors(server, mode, fragment):
    """A truncated or non-JSON body, a 200 without `data`, and base64 that is not an image are
    BackendError with a message and a hint, never a raw JSONDecodeError / KeyError / IndexError."""
    FakeImagesAPI.mode = mode
    with pytest.raises(BackendError) as info:
        backend(server).generate(GenerateRequest("a red circle", seed=1))
    assert fragment in info.value.message, info.value.message
    assert info.value.hint
    # an answer cut off mid-body is a dropped connection (retryable); a wrong answer is not
    assert info.value.retryable is (mode == "cut"), (mode, info.value.message)


def test_timeout_becomes_clear_message(server):
    FakeImagesAPI.mode = "slow"
    with pytest.raises(BackendError, match="did not answer within 0.5 s") as info:
        backend(server, timeout=0.5).generate(GenerateRequest("a cat", seed=1))
    assert info.value.retryable


def test_unreachable_api_is_retryable(free_port):
    with pytest.raises(BackendError, match="Cannot reach the OpenAI API") as info:
        backend(f"http://127.0.0.1:{free_port}/v1").generate(GenerateRequest("a cat", seed=1))
    assert info.value.retryable


def test_missing_key_says_what_to_set():
    with pytest.raises(BackendError, match="OPENAI_API_KEY") as info:
        OpenAIBackend(api_key=None).generate(GenerateRequest("a cat", seed=1))
    assert not info.value.retryable  # a setup mistake: a fallback chain says so instead of hiding it


def test_cli_backend_openai_end_to_end(server, capsys, monkeypatch, tmp_path):
    from agent.cli import main

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", server)
    code = main(["generate", "a red circle", "--backend", "openai", "--seed", "3", "--safety", "off",
                 "--out", str(tmp_path), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    record = json.loads(out)["images"][0]
    assert record["backend"] == "openai" and record["model"] == "gpt-image-1"
    assert "takes no seed" in err
