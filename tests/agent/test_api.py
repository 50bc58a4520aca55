"""The documented Python API: open_session and the tool-shaped Capabilities.call."""
from __future__ import annotations

import pytest

from agent.api import Capabilities, GenerateRequest, InvalidInput, RunOptions, open_session


def test_open_session_runs_generates_edits_upscales_scores(tiny_sd_path, tiny_clip_path):
    s = open_session(model=str(tiny_sd_path), clip_model=str(tiny_clip_path), safety="off")
    best = s.run("two red circles", rounds=1, candidates=1, request_fields={"steps": 1, "seed": 3}).best
    assert best.path.is_file() and best.seed == 3
    # the options object and the same fields by name: a name given beside the object wins
    again = s.run("two red circles", RunOptions(rounds=4, candidates=1, raw=True, threshold=2.5,
                                                  threshold_mode="absolute", request_fields={"steps": 1, "seed": 3}),
                  rounds=2)
    assert len(again.rounds) == 2 and not again.met and again.rounds[0]["prompt"] == "two red circles"
    with pytest.raises(TypeError, match="roundz"):
        s.run("two red circles", roundz=1)
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
