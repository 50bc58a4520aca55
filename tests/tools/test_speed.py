"""Speed and memory options: same image (within rounding), recorded, reproduced by rerun."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tools.errors import InvalidInput
from tools.generate import GenerateRequest, check_request


def px(image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32)


@pytest.fixture(scope="module")
def demo_backend():
    import torch

    from tools.diffusers_backend import DiffusersBackend

    return DiffusersBackend("demo", "cpu", torch.float32)


def test_sliced_attention_gives_the_same_image(demo_backend):
    req = dict(prompt="two red circles", steps=4, seed=3)
    a = px(demo_backend.generate(GenerateRequest(**req)).images[0])
    b = px(demo_backend.generate(GenerateRequest(**req, attention="sliced")).images[0])
    c = px(demo_backend.generate(GenerateRequest(**req)).images[0])   # and back to SDPA
    assert np.abs(a - b).max() <= 2.0
    assert np.array_equal(a, c)


def test_vae_tiling_decodes_a_large_image_close_to_the_untiled_one(demo_backend):
    req = dict(prompt="a blue square", steps=3, seed=1, width=192, height=192)
    plain = px(demo_backend.generate(GenerateRequest(**req)).images[0])
    tiled = px(demo_backend.generate(GenerateRequest(**req, vae_tiling=True)).images[0])
    assert tiled.shape == plain.shape == (192, 192, 3)
    assert not np.array_equal(plain, tiled)          # tiles were used (blended seams differ slightly)
    assert np.abs(plain - tiled).mean() < 8.0
    sliced = px(demo_backend.generate(GenerateRequest(**req, vae_slicing=True)).images[0])
    assert np.abs(plain - sliced).max() <= 2.0


def test_speed_options_are_checked_and_recorded_only_when_set():
    assert "attention" not in check_request(GenerateRequest("a cat")).params()
    params = check_request(GenerateRequest("a cat", attention="sliced", vae_tiling=True)).params()
    assert params["attention"] == "sliced" and params["vae_tiling"] is True and "compile" not in params
    with pytest.raises(InvalidInput, match="Unknown attention"):
        check_request(GenerateRequest("a cat", attention="flash"))
    with pytest.raises(InvalidInput, match="true or false"):
        check_request(GenerateRequest("a cat", vae_tiling="yes"))


def test_compile_where_torch_compile_is_unavailable_is_a_clear_error(monkeypatch, tmp_path, capsys):
    from agent.cli import main
    from tools import diffusers_adapters

    monkeypatch.setattr(diffusers_adapters, "compile_available", lambda: False)
    out = tmp_path / "out"
    code = main(["generate", "a red circle", "--steps", "2", "--compile", "--out", str(out)])
    assert code == 2
    assert "torch.compile is not available" in capsys.readouterr().err
    assert not out.exists() or not list(out.glob("*.png"))


def test_cli_speed_options_round_trip_through_rerun(tmp_path, capsys):
    from agent.cli import main
    from tools.metadata import read_metadata

    out = tmp_path / "out"
    assert main(["generate", "a green triangle", "--steps", "3", "--seed", "9", "--size", "128x128",
                 "--vae-tiling", "--attention", "sliced", "--out", str(out), "--json"]) == 0
    first = json.loads(capsys.readouterr().out)["images"][0]["path"]
    params = read_metadata(first)["record"]["params"]
    assert params["vae_tiling"] is True and params["attention"] == "sliced"
    assert main(["rerun", first, "--out", str(out), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)["images"][0]["path"]
    assert read_metadata(again)["record"]["params"]["vae_tiling"] is True
    assert np.array_equal(px(Image.open(first)), px(Image.open(again)))


def test_few_step_models_get_their_card_defaults_and_explicit_values_win():
    from tools.adapters import Lora
    from tools.generate import fast_defaults

    assert fast_defaults("stabilityai/sd-turbo", GenerateRequest("a cat")) == {"steps": 4, "cfg": 0.0}
    lcm = {"steps": 4, "cfg": 1.0, "scheduler": "lcm"}
    assert fast_defaults("SimianLuo/LCM_Dreamshaper_v7", GenerateRequest("a cat")) == lcm
    assert fast_defaults("runwayml/sd-v1-5", GenerateRequest("a cat", loras=(Lora("latent-consistency/lcm-lora-sdv1-5"),))) == lcm
    assert fast_defaults("demo", GenerateRequest("a cat", scheduler="lcm")) == lcm
    assert fast_defaults("demo", GenerateRequest("a cat")) is None


def test_session_applies_lcm_defaults_unless_given(settings, tiny_backend, tiny_scorer):
    from agent.session import Session

    session = Session(settings, backend=tiny_backend, scorer=tiny_scorer)
    out = session.generate(GenerateRequest("a cat", scheduler="lcm", seed=1))
    params = out.images[0].record["params"]
    assert (params["steps"], params["cfg"], params["scheduler"]) == (4, 1.0, "lcm")
    out = session.generate(GenerateRequest("a cat", scheduler="lcm", steps=2, cfg=1.5, seed=1))
    params = out.images[0].record["params"]
    assert (params["steps"], params["cfg"]) == (2, 1.5)
