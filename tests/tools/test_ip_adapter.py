"""IP-Adapter image references on a tiny random IP-Adapter (h94/IP-Adapter's file layout)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tools.adapters import IPAdapter, parse_ip_adapter
from tools.errors import InvalidInput, ModelNotFound
from tools.generate import GenerateRequest


def px(image):
    return np.asarray(image, dtype=np.float32)


@pytest.fixture(scope="module")
def ip_setup(tiny_sd_path, tmp_path_factory):
    import torch
    from diffusers import UNet2DConditionModel

    from tiny_models import save_tiny_ip_adapter
    from tools.diffusers_backend import DiffusersBackend

    unet = UNet2DConditionModel.from_pretrained(str(tiny_sd_path / "unet"))
    folder = save_tiny_ip_adapter(unet, tmp_path_factory.mktemp("ipa") / "ip")
    return DiffusersBackend(str(tiny_sd_path), "cpu", torch.float32), folder


def reference(seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (32, 32, 3), dtype=np.uint8))


def test_reference_image_steers_the_image_scale_zero_and_unloaded_do_not(ip_setup):
    backend, folder = ip_setup
    req = dict(prompt="a cat", steps=3, seed=4)
    base = px(backend.generate(GenerateRequest(**req)).images[0])
    one = px(backend.generate(GenerateRequest(**req, ip_adapter=IPAdapter(reference(0), 1.0, str(folder)))).images[0])
    other = px(backend.generate(GenerateRequest(**req, ip_adapter=IPAdapter(reference(1), 1.0, str(folder)))).images[0])
    zero = px(backend.generate(GenerateRequest(**req, ip_adapter=IPAdapter(reference(0), 0.0, str(folder)))).images[0])
    assert np.abs(one - base).mean() > 2.0
    assert np.abs(one - other).mean() > 1.0          # another reference, another image
    assert np.array_equal(zero, base)
    assert np.array_equal(px(backend.generate(GenerateRequest(**req)).images[0]), base)  # unloaded again


def test_ip_adapter_errors(ip_setup, tmp_path):
    backend, folder = ip_setup
    with pytest.raises(InvalidInput, match="No IP-Adapter weights"):
        backend.generate(GenerateRequest("a cat", steps=2, ip_adapter=IPAdapter(reference())))
    with pytest.raises(ModelNotFound, match="No IP-Adapter weights at"):
        backend.generate(GenerateRequest("a cat", steps=2, ip_adapter=IPAdapter(reference(), 1.0, str(tmp_path / "x"))))
    with pytest.raises(InvalidInput, match="out of range"):
        backend.generate(GenerateRequest("a cat", steps=2, ip_adapter=IPAdapter(reference(), 5.0, str(folder))))
    from tools.demo import load_pipeline
    from tiny_models import save_tiny_ip_adapter

    other = save_tiny_ip_adapter(load_pipeline().unet, tmp_path / "demo-ip")   # for another model
    with pytest.raises(InvalidInput, match="could not be loaded"):
        backend.generate(GenerateRequest("a cat", steps=2, ip_adapter=IPAdapter(reference(), 1.0, str(other))))
    base = backend.generate(GenerateRequest("a cat", steps=2, seed=1)).images[0]  # still works after the failure
    assert base.size == (32, 32)


def test_cli_ip_adapter_is_recorded_and_rerun(ip_setup, tiny_sd_path, tmp_path, capsys):
    from agent.cli import main
    from tools.metadata import read_metadata

    _, folder = ip_setup
    ref = tmp_path / "style.png"
    reference(2).save(ref)
    out = tmp_path / "out"
    assert main(["generate", "a cat", "--model", str(tiny_sd_path), "--safety", "off", "--steps", "3", "--seed", "2",
                 "--ip-adapter", f"{ref}:0.8", "--ip-adapter-model", str(folder), "--out", str(out), "--json"]) == 0
    first = json.loads(capsys.readouterr().out)["images"][0]["path"]
    ip = read_metadata(first)["record"]["params"]["ip_adapter"]
    assert ip == {"scale": 0.8, "image": str(ref.resolve()), "model": str(folder)}
    assert main(["rerun", first, "--out", str(out), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)["images"][0]["path"]
    assert np.array_equal(px(Image.open(first)), px(Image.open(again)))
    assert main(["generate", "a cat", "--model", str(tiny_sd_path), "--ip-adapter-model", str(folder)]) == 2
    assert parse_ip_adapter(f"{ref}:0.5").scale == 0.5
