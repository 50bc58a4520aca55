"""SDXL base + refiner (denoising_end / denoising_start) on tiny random SDXL parts."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tools.errors import InvalidInput, ModelNotFound
from tools.generate import GenerateRequest


@pytest.fixture(scope="module")
def sdxl(tmp_path_factory):
    from tiny_models import save_tiny_sdxl

    root = tmp_path_factory.mktemp("sdxl")
    return save_tiny_sdxl(root / "base"), save_tiny_sdxl(root / "refiner", refiner=True, seed=1)


@pytest.fixture(scope="module")
def sdxl_backend(sdxl):
    import torch

    from tools.diffusers_backend import DiffusersBackend

    return DiffusersBackend(str(sdxl[0]), "cpu", torch.float32)


def px(image):
    return np.asarray(image, dtype=np.float32)


def test_refiner_takes_over_at_the_switch_and_shares_the_base_parts(sdxl, sdxl_backend):
    base_path, refiner_path = sdxl
    plain = sdxl_backend.generate(GenerateRequest("a cat", steps=4, seed=2))
    steps = []
    refined = sdxl_backend.generate(GenerateRequest("a cat", steps=4, seed=2, refiner=str(refiner_path),
                                                    refiner_switch=0.5),
                                    progress=lambda done, total: steps.append((done, total)))
    again = sdxl_backend.generate(GenerateRequest("a cat", steps=4, seed=2, refiner=str(refiner_path),
                                                  refiner_switch=0.5))
    assert refined.images[0].size == plain.images[0].size == (32, 32)
    assert np.abs(px(refined.images[0]) - px(plain.images[0])).mean() > 1.0
    assert np.array_equal(px(refined.images[0]), px(again.images[0]))
    assert steps[-1] == (4, 4) and [d for d, _ in steps] == sorted(d for d, _ in steps)
    refiner = sdxl_backend.refiners.load(sdxl_backend.pipeline(), str(refiner_path))
    base = sdxl_backend.pipeline()
    assert refiner.text_encoder_2 is base.text_encoder_2 and refiner.vae is base.vae
    later = sdxl_backend.generate(GenerateRequest("a cat", steps=4, seed=2, refiner=str(refiner_path),
                                                  refiner_switch=0.75))
    assert not np.array_equal(px(later.images[0]), px(refined.images[0]))


def test_refiner_errors(sdxl, sdxl_backend, tiny_backend, tmp_path):
    with pytest.raises(InvalidInput, match="needs an SDXL base"):
        tiny_backend.generate(GenerateRequest("a cat", steps=2, refiner=str(sdxl[1])))
    with pytest.raises(InvalidInput, match="refiner_switch 1.0 is out of range") as info:
        sdxl_backend.generate(GenerateRequest("a cat", steps=2, refiner=str(sdxl[1]), refiner_switch=1.0))
    assert "above 0 to below 1" in info.value.hint and info.value.param == "refiner_switch"
    with pytest.raises(ModelNotFound, match="not a diffusers model"):
        sdxl_backend.generate(GenerateRequest("a cat", steps=2, refiner=str(tmp_path)))
    from PIL import Image

    with pytest.raises(InvalidInput, match="text-to-image only"):
        sdxl_backend.generate(GenerateRequest("a cat", steps=2, refiner=str(sdxl[1]),
                                              init_image=Image.new("RGB", (32, 32))))


def test_cli_refiner_is_recorded_and_rerun_reproduces_it(sdxl, tmp_path, capsys):
    from PIL import Image

    from agent.cli import main
    from tools.metadata import read_metadata

    base, refiner = sdxl
    out = tmp_path / "out"
    assert main(["generate", "a cat", "--model", str(base), "--safety", "off", "--steps", "4", "--seed", "3",
                 "--refiner", str(refiner), "--refiner-switch", "0.5", "--out", str(out), "--json"]) == 0
    first = json.loads(capsys.readouterr().out)["images"][0]["path"]
    params = read_metadata(first)["record"]["params"]
    assert params["refiner"] == str(refiner) and params["refiner_switch"] == 0.5
    assert main(["rerun", first, "--out", str(out), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)["images"][0]["path"]
    assert np.array_equal(px(Image.open(first)), px(Image.open(again)))
