"""Inpainting changes the masked region, follows its prompt there, and keeps every other pixel."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tools.generate import GenerateRequest


def px(im):
    return np.asarray(im.convert("RGB"), dtype=np.float32)


@pytest.fixture(scope="module")
def demo_backend():
    from tools.diffusers_backend import DiffusersBackend

    return DiffusersBackend("demo", "cpu", torch.float32)


def test_demo_model_inpaints_the_prompt_inside_the_mask_only(demo_backend):
    from tools.demo import oracle, world

    scene = world.parse("three blue squares")
    objs = [world.Placed("blue", "square", x, y, 12, 0) for x, y in ((48, 14), (20, 48), (48, 48))]
    init = world.draw(world.Layout(scene, objs))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 32))  # the empty top-left quarter
    inside = np.asarray(mask) > 127
    hits = 0
    for seed in range(4):
        out = demo_backend.generate(GenerateRequest("a green circle", steps=20, cfg=5.0, seed=seed, init_image=init,
                                                    mask=mask, strength=1.0)).images[0]
        diff = np.abs(px(out) - px(init)).mean(axis=2)
        assert diff[~inside].max() == 0, "pixels outside the mask are kept exactly"
        assert diff[inside].mean() > 10, "the masked region changed"
        green = [o for o in oracle.read(out).objects if o.colour == "green" and o.cx < 32 and o.cy < 32]
        hits += bool(green)
    assert hits >= 3, f"a green object in the masked quarter in {hits}/4 seeds"


def test_a_9_channel_inpainting_unet_keeps_unmasked_pixels(tmp_path):
    from tiny_models import save_tiny_sd
    from tools.diffusers_backend import DiffusersBackend

    backend = DiffusersBackend(str(save_tiny_sd(tmp_path / "tiny-inpaint", in_channels=9)), "cpu", torch.float32)
    assert backend.pipeline("inpaint").unet.config.in_channels == 9
    init = Image.new("RGB", (32, 32), (30, 30, 200))
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (0, 0, 16, 32))
    out = backend.generate(GenerateRequest("a cat", steps=3, seed=1, init_image=init, mask=mask,
                                           strength=1.0)).images[0]
    diff = np.abs(px(out) - px(init)).mean(axis=2)
    assert diff[:, 16:].max() == 0 and diff[:, :16].mean() > 5
