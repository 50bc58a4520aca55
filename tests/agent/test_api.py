"""The documented Python API: open_session and the tool-shaped Capabilities.call."""
from __future__ import annotations

import pytest

from agent.api import Capabilities, GenerateRequest, InvalidInput, open_session


def test_open_session_runs_generates_edits_upscales_scores(tiny_sd_path, tiny_clip_path):
    s = open_session(model=str(tiny_sd_path), clip_model=str(tiny_clip_path), safety="off")
    best = s.run("two red circles", rounds=1, candidates=1, request_fields={"steps": 1, "seed": 3}).best
    assert best.path.is_file() and best.seed == 3
    out = s.generate(GenerateRequest(prompt="a blue square", seed=7, steps=1))
    edited = s.edit("a green square", out.images[0].path, strength=0.6, steps=2)
    assert edited.images[0].record["params"]["mode"] == "img2img"
    big = s.upscale(edited.images[0].path, scale=2, method="lanczos")
    assert big.path.is_file() and big.record["width"] == 64
    assert len(s.score([big.path], "a green square")["scores"]) == 1
    result = Capabilities(s).call("generate", {"prompt": "a cat", "seed": 1, "steps": 1})
    assert result["images"][0]["seed"] == 1 and result["images"][0]["metadata"]["params"]["prompt"] == "a cat"


def test_open_session_rejects_unknown_settings():
    with pytest.raises(InvalidInput, match="modle"):
        open_session(modle="x")
