"""Post-processing (sharpen, resize) and output formats (PNG, JPEG, WebP) with the metadata kept."""
from __future__ import annotations

import io
import json
import os
import sqlite3

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from agent.cli import main
from agent.errors import InvalidInput, SafetyBlocked
from agent.session import Session
from tools.generate import GenerateRequest
from tools.images import (EXIF_IFD, IMAGE_DESCRIPTION, USER_COMMENT, atomic_save, decode_user_comment,
                          load_image)
from tools.metadata import png_chunks, read_metadata
from tools.postprocess import PostProcess
from tools.safety import ALLOWED, NoChecks, Verdict


def cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def pixels(path) -> np.ndarray:
    return np.asarray(load_image(path))


def laplacian_variance(image: Image.Image) -> float:
    g = np.asarray(image.convert("L"), dtype=np.float64)
    lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    return float(lap.var())


def soft_picture(size=(64, 64)) -> Image.Image:
    im = Image.new("RGB", size, (30, 40, 160))
    ImageDraw.Draw(im).ellipse((16, 16, 48, 48), fill=(220, 40, 30))
    return im.filter(ImageFilter.GaussianBlur(2))


# -- the pixel work ---------------------------------------------------------------------------------
def test_sharpen_raises_edge_contrast_and_zero_changes_nothing():
    im = soft_picture()
    assert PostProcess(sharpen=0).apply(im) is im
    before = laplacian_variance(im)
    mild, strong = PostProcess(sharpen=1).apply(im), PostProcess(sharpen=3).apply(im)
    assert laplacian_variance(mild) > 1.5 * before
    assert laplacian_variance(strong) > laplacian_variance(mild)
    assert mild.size == im.size and mild.mode == im.mode


def test_resize_gives_exactly_the_asked_size_then_sharpens():
    im = soft_picture()
    out = PostProcess(resize=(96, 40)).apply(im)
    assert out.size == (96, 40)
    both = PostProcess(resize=(96, 40), sharpen=2).apply(im)
    assert both.size == (96, 40) and laplacian_variance(both) > laplacian_variance(out)


@pytest.mark.parametrize("kwargs, fragment", [
    ({"sharpen": 5.5}, "0 (off) to 5"),
    ({"sharpen": -1}, "0 (off) to 5"),
    ({"sharpen": float("nan")}, "0 (off) to 5"),
    ({"resize": (8, 64)}, "16 to 4096"),
    ({"resize": (64, 5000)}, "16 to 4096"),
    ({"format": "gif"}, "png, jpeg, webp"),
    ({"quality": 0}, "1 to 100"),
    ({"quality": 101}, "1 to 100"),
])
def test_bad_values_are_refused_with_what_to_do(kwargs, fragment):
    with pytest.raises(InvalidInput) as info:
        PostProcess(**kwargs)
    assert fragment in str(info.value)


def test_options_parse_and_normalise():
    post = PostProcess.from_options(sharpen=1, resize="64x48", format="JPG", quality=80)
    assert post == PostProcess(sharpen=1.0, resize=(64, 48), format="jpeg", quality=80)
    assert post.suffix == ".jpg" and PostProcess.from_options().is_default
    assert PostProcess.from_json(post.to_json((64, 48))) == post
    with pytest.raises(InvalidInput, match="WIDTHxHEIGHT"):
        PostProcess.from_options(resize="big")


# -- files and metadata -------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt, suffix, pil_format", [("jpeg", ".jpg", "JPEG"), ("webp", ".webp", "WEBP")])
def test_jpeg_and_webp_keep_the_metadata_a1111_style(session, tmp_path, fmt, suffix, pil_format):
    post = PostProcess(format=fmt, quality=90)
    saved = session.generate(GenerateRequest("two red circles caf\u00e9", steps=2, seed=21), out_dir=tmp_path,
                             post=post).images[0]
    assert saved.path.suffix == suffix
    with Image.open(saved.path) as im:
        assert im.format == pil_format and im.size == (32, 32)
        exif = im.getexif()
        comment = exif.get_ifd(EXIF_IFD)[USER_COMMENT]
        description = exif[IMAGE_DESCRIPTION]
    assert comment.startswith(b"UNICODE\0")
    assert comment[8:].decode("utf-16-be").startswith("two red circles caf\u00e9\n")  # as A1111/piexif write it
    assert json.loads(description)["seed"] == 21
    meta = read_metadata(saved.path)
    assert meta["record"]["params"]["prompt"] == "two red circles caf\u00e9" and meta["record"]["seed"] == 21
    assert meta["record"]["post"] == {"sharpen": 0.0, "resize": None, "format": fmt, "quality": 90,
                                      "width": 32, "height": 32}
    assert meta["parsed"]["prompt"] == "two red circles caf\u00e9" and meta["parsed"]["seed"] == 21


def test_exif_written_by_other_tools_reads_back(tmp_path):
    """A1111's text in UserComment: UTF-16 in either byte order, or an ASCII header; a camera's
    ImageDescription is not taken for an imagent record."""
    text = "a castle\nNegative prompt: fog\nSteps: 30, Sampler: Euler a, CFG scale: 7, Seed: 1234, Size: 512x768"
    for raw in (b"UNICODE\0" + text.encode("utf-16-le"), b"ASCII\0\0\0" + text.encode("ascii")):
        assert decode_user_comment(raw) == text
        exif = Image.Exif()
        exif[IMAGE_DESCRIPTION] = "OLYMPUS DIGITAL CAMERA"
        exif.get_ifd(EXIF_IFD)[USER_COMMENT] = raw
        path = tmp_path / "other.jpg"
        Image.new("RGB", (16, 16)).save(path, exif=exif.tobytes())
        meta = read_metadata(path)
        assert meta["record"] is None
        assert (meta["parsed"]["prompt"], meta["parsed"]["seed"], meta["parsed"]["width"]) == ("a castle", 1234, 512)


def test_plain_jpeg_has_no_metadata(tmp_path):
    Image.new("RGB", (16, 16)).save(tmp_path / "photo.jpg")
    with pytest.raises(InvalidInput, match="no generation metadata"):
        read_metadata(tmp_path / "photo.jpg")


def test_default_output_is_the_png_as_before(session, tmp_path):
    saved = session.generate(GenerateRequest("a cat", steps=1, seed=2), out_dir=tmp_path).images[0]
    same = session.generate(GenerateRequest("a cat", steps=1, seed=2), out_dir=tmp_path,
                            post=PostProcess(sharpen=0)).images[0]
    assert saved.path.suffix == ".png" and "post" not in saved.record and "post" not in same.record
    with Image.open(saved.path) as im:
        assert im.format == "PNG" and set(im.text) == {"parameters", "imagent"}
    assert np.array_equal(pixels(saved.path), pixels(same.path))


def test_resize_records_generated_and_final_size(session, tmp_path):
    saved = session.generate(GenerateRequest("a cat", steps=1, seed=2), out_dir=tmp_path,
                             post=PostProcess(resize=(48, 40))).images[0]
    assert load_image(saved.path).size == (48, 40)
    r = read_metadata(saved.path)["record"]
    assert (r["width"], r["height"], r["params"]["width"], r["params"]["height"]) == (32, 32, 32, 32)
    assert (r["post"]["resize"], r["post"]["width"], r["post"]["height"]) == ([48, 40], 48, 40)
    row = session.gallery.image(saved.image_id)
    assert row["path"] == str(saved.path) and row["record"]["post"] == r["post"]


def test_rerun_of_a_sharpened_png_is_pixel_identical(session, tmp_path):
    plain = session.generate(GenerateRequest("a green triangle", steps=2, seed=9), out_dir=tmp_path).images[0]
    first = session.generate(GenerateRequest("a green triangle", steps=2, seed=9), out_dir=tmp_path,
                             post=PostProcess(sharpen=1.5)).images[0]
    assert first.path.suffix == ".png"
    assert laplacian_variance(load_image(first.path)) > laplacian_variance(load_image(plain.path))
    again = session.rerun(first.path, out_dir=tmp_path).images[0]
    assert again.record["post"] == first.record["post"] == {"sharpen": 1.5, "resize": None, "format": "png",
                                                           "width": 32, "height": 32}
    assert np.array_equal(pixels(first.path), pixels(again.path))


# -- safety sees the final image ----------------------------------------------------------------------
class BlocksResized(NoChecks):
    """Allows the generated 32x32 images, blocks anything else: only the final image is resized."""

    level = "standard"

    def __init__(self):
        self.seen = []

    def check_image(self, image):
        self.seen.append(image.size)
        return ALLOWED if image.size == (32, 32) else Verdict(False, "test", "resized image blocked")


def test_safety_checks_the_post_processed_image(settings, tiny_backend, tiny_scorer, tmp_path):
    checker = BlocksResized()
    session = Session(settings, backend=tiny_backend, scorer=tiny_scorer, safety=checker)
    with pytest.raises(SafetyBlocked):
        session.generate(GenerateRequest("a cat", steps=1, seed=1), out_dir=tmp_path / "g",
                         post=PostProcess(resize=(48, 40)))
    assert checker.seen == [(48, 40)]
    checker.seen.clear()
    with pytest.raises(SafetyBlocked):  # the loop checked its candidates as generated; the saved one again
        session.run("two red circles", rounds=1, candidates=1, raw=True, request_fields={"steps": 1, "seed": 3},
                    out_dir=tmp_path / "r", post=PostProcess(resize=(48, 40)))
    assert checker.seen[-1] == (48, 40) and (32, 32) in checker.seen
    for folder in ("g", "r"):
        assert not list((tmp_path / folder).iterdir())
    assert session.gallery.count_images() == 0


# -- writes -------------------------------------------------------------------------------------------
def test_crash_mid_jpeg_write_leaves_no_partial_file(session, tmp_path, monkeypatch):
    seen = []

    def broken_save(self, fp, *a, **k):
        seen.extend(p.name for p in (tmp_path / "out").iterdir())
        fp.write(b"\xff\xd8\xff partial")
        raise OSError("disk exploded")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk exploded"):
        session.generate(GenerateRequest("a cat", steps=1, seed=1), out_dir=tmp_path / "out",
                         post=PostProcess(format="jpeg"))
    monkeypatch.undo()
    assert len(seen) == 1 and ".jpg." in seen[0] and seen[0].endswith(".imagent-partial")
    assert not list((tmp_path / "out").iterdir())
    assert session.gallery.count_images() == 0


def test_metadata_too_large_for_jpeg_is_a_clear_error_and_writes_nothing(tmp_path):
    record = {"model": "m", "width": 16, "height": 16, "seed": 1,
              "params": {"prompt": "x" * 70000, "steps": 1, "cfg": 7.0}}
    with pytest.raises(InvalidInput, match="does not fit in a JPEG") as info:
        atomic_save(Image.new("RGB", (16, 16)), tmp_path / "big.jpg", png_chunks(record), format="jpeg")
    assert "webp" in info.value.hint
    assert not list(tmp_path.iterdir())
    atomic_save(Image.new("RGB", (16, 16)), tmp_path / "big.webp", png_chunks(record), format="webp")
    assert read_metadata(tmp_path / "big.webp")["record"]["params"]["prompt"] == "x" * 70000


# -- front doors --------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt, suffix", [("jpeg", ".jpg"), ("webp", ".webp")])
def test_cli_format_show_rerun_and_gallery(capsys, tiny_sd_path, tmp_path, fmt, suffix):
    code, out, err = cli(capsys, "generate", "two red circles", "--model", str(tiny_sd_path), "--steps", "2",
                         "--seed", "5", "--safety", "off", "--out", str(tmp_path), "--format", fmt,
                         "--quality", "90", "--resize", "48x40", "--sharpen", "0.5", "--json")
    assert code == 0, err
    image = json.loads(out)["images"][0]
    path = image["path"]
    assert path.endswith(suffix) and image["post"]["format"] == fmt and load_image(path).size == (48, 40)
    code, out, err = cli(capsys, "show", path)
    assert code == 0 and out.startswith("two red circles\nSteps: 2") and '"format": "%s"' % fmt in out
    code, out, err = cli(capsys, "rerun", path, "--json", "--out", str(tmp_path))
    assert code == 0, err
    again = json.loads(out)
    new = again["images"][0]
    assert new["path"].endswith(suffix) and new["path"] != path and load_image(new["path"]).size == (48, 40)
    assert new["post"] == image["post"] and again["identical"] is True
    code, out, err = cli(capsys, "gallery")
    assert code == 0 and path in out and new["path"] in out


@pytest.mark.parametrize("command", ["generate", "run"])
@pytest.mark.parametrize("option, fragment", [
    (["--sharpen", "6"], "sharpen amount"),
    (["--resize", "8x8"], "16 to 4096"),
    (["--resize", "big"], "WIDTHxHEIGHT"),
    (["--format", "gif"], "Unknown output format"),
    (["--quality", "0"], "1 to 100"),
])
def test_cli_bad_post_options_exit_2_and_write_nothing(capsys, tiny_sd_path, tmp_path, command, option, fragment):
    out_dir = tmp_path / "out"
    code, out, err = cli(capsys, command, "two red circles", "--model", str(tiny_sd_path), "--steps", "1",
                         "--safety", "off", "--out", str(out_dir), *option)
    assert code == 2, err
    assert err.startswith("imagent: error: ") and fragment in err and "Traceback" not in err and out == ""
    assert not out_dir.exists()
    db = os.path.join(os.environ["IMAGENT_HOME"], "gallery.db")
    assert not os.path.exists(db) or sqlite3.connect(db).execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0


def test_help_describes_each_option(capsys):
    for command in ("generate", "run"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        out = capsys.readouterr().out
        for option in ("--sharpen AMOUNT", "--resize WxH", "--format png|jpeg|webp", "--quality N"):
            assert option in out, (command, option)
    with pytest.raises(SystemExit):
        main(["rerun", "--help"])
    assert "--sharpen" not in capsys.readouterr().out, "rerun repeats the recorded post-processing"


def test_tool_inputs_carry_post_processing(session, tmp_path):
    from agent.capabilities import Capabilities, PathPolicy

    caps = Capabilities(session, PathPolicy.open(tmp_path))
    out = caps.call("generate", {"prompt": "two red circles", "steps": 1, "seed": 4, "format": "webp",
                                 "resize": "40x48", "sharpen": 1.0})
    im = out["images"][0]
    assert im["path"].endswith(".webp") and load_image(im["path"]).size == (40, 48)
    assert im["metadata"]["post"]["sharpen"] == 1.0
    edited = caps.call("edit", {"prompt": "a cat", "image": im["path"], "steps": 2, "seed": 1, "strength": 0.5,
                                "format": "jpeg", "quality": 80})["images"][0]
    assert edited["path"].endswith(".jpg") and read_metadata(edited["path"])["record"]["post"]["quality"] == 80
    with pytest.raises(InvalidInput, match="Unknown output format"):
        caps.call("generate", {"prompt": "x", "steps": 1, "format": "bmp"})
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        caps.call("run", {"idea": "x", "resize": "1" * 40})
