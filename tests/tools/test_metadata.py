"""Metadata written by imagent (PNG text chunks; JPEG and WebP EXIF as AUTOMATIC1111 writes it) reads
back in imagent and in the other tools that read A1111 images."""
from __future__ import annotations

import json
import struct

import pytest
from PIL import Image

from tools.images import EXIF_IFD, IMAGE_DESCRIPTION, USER_COMMENT, atomic_save
from tools.metadata import a1111_parameters, png_chunks, read_metadata

RECORD = {"model": "/models/demo", "width": 16, "height": 16, "seed": 7, "scheduler": "euler_a",
          "params": {"prompt": "two red circles caf\u00e9", "negative_prompt": "blurry", "steps": 20, "cfg": 7.5}}
FORMATS = [("png", ".png"), ("jpeg", ".jpg"), ("webp", ".webp")]
EXIF_FORMATS = FORMATS[1:]


def save(tmp_path, fmt, suffix):
    return atomic_save(Image.new("RGB", (16, 16), (200, 30, 30)), tmp_path / f"image{suffix}", png_chunks(RECORD),
                       format=fmt)


def raw_exif_entries(path) -> dict[int, tuple[int, bytes]]:
    """{tag: (TIFF type, value bytes)} of the Exif sub-IFD, parsed from the file's raw EXIF block."""
    with Image.open(path) as im:
        data = im.info["exif"]
    tiff = data[6:] if data.startswith(b"Exif\0\0") else data
    order = {b"MM": ">", b"II": "<"}[tiff[:2]]
    size = {1: 1, 2: 1, 3: 2, 4: 4, 7: 1}

    def entries(at):
        (n,) = struct.unpack_from(order + "H", tiff, at)
        out = {}
        for i in range(n):
            tag, typ, count, value = struct.unpack_from(order + "HHL4s", tiff, at + 2 + 12 * i)
            length = size[typ] * count
            out[tag] = (typ, value[:length] if length <= 4 else
                        tiff[struct.unpack(order + "L", value)[0]:][:length])
        return out

    ifd0 = entries(struct.unpack_from(order + "L", tiff, 4)[0])
    assert ifd0[IMAGE_DESCRIPTION][0] == 2  # ASCII
    (exif_at,) = struct.unpack(order + "L", ifd0[EXIF_IFD][1])
    return entries(exif_at)


@pytest.mark.parametrize("fmt, suffix", FORMATS)
def test_every_format_reads_back_in_imagent(tmp_path, fmt, suffix):
    meta = read_metadata(save(tmp_path, fmt, suffix))
    assert meta["record"] == RECORD
    assert meta["parameters"] == a1111_parameters(RECORD)
    assert (meta["parsed"]["prompt"], meta["parsed"]["negative_prompt"], meta["parsed"]["seed"]) == (
        "two red circles caf\u00e9", "blurry", 7)


@pytest.mark.parametrize("fmt, suffix", EXIF_FORMATS)
def test_user_comment_is_undefined_with_the_unicode_prefix_as_a1111_writes_it(tmp_path, fmt, suffix):
    """A1111: piexif.helper.UserComment.dump(parameters, encoding="unicode"), type UNDEFINED (7);
    Pillow's Image.Exif would write BYTE (1), which piexif and so sd-prompt-reader read as a tuple."""
    typ, value = raw_exif_entries(save(tmp_path, fmt, suffix))[USER_COMMENT]
    assert typ == 7
    assert value[:8] == b"UNICODE\0"
    assert value[8:] == a1111_parameters(RECORD).encode("utf-16-be")


@pytest.mark.parametrize("fmt, suffix", EXIF_FORMATS)
def test_files_from_older_imagent_still_read(tmp_path, fmt, suffix):
    """Before, UserComment was written through Pillow's Image.Exif (type BYTE)."""
    chunks = png_chunks(RECORD)
    exif = Image.Exif()
    exif[IMAGE_DESCRIPTION] = chunks["imagent"]
    exif.get_ifd(EXIF_IFD)[USER_COMMENT] = b"UNICODE\0" + chunks["parameters"].encode("utf-16-be")
    path = tmp_path / f"old{suffix}"
    Image.new("RGB", (16, 16)).save(path, format={"jpeg": "JPEG", "webp": "WEBP"}[fmt], exif=exif.tobytes())
    meta = read_metadata(path)
    assert meta["record"] == RECORD and meta["parameters"] == chunks["parameters"]


@pytest.mark.parametrize("fmt, suffix", EXIF_FORMATS)
def test_piexif_reads_the_comment_as_a1111_does(tmp_path, fmt, suffix):
    """A1111's PNG Info and sd-prompt-reader read JPEG/WebP text with piexif."""
    piexif = pytest.importorskip("piexif")
    import piexif.helper

    exif = piexif.load(str(save(tmp_path, fmt, suffix)))
    comment = exif["Exif"][piexif.ExifIFD.UserComment]
    assert isinstance(comment, bytes)
    assert piexif.helper.UserComment.load(comment) == a1111_parameters(RECORD)
    assert json.loads(exif["0th"][piexif.ImageIFD.ImageDescription]) == RECORD


@pytest.mark.parametrize("fmt, suffix", FORMATS)
def test_sd_parsers_reads_imagent_images(tmp_path, fmt, suffix):
    sd_parsers = pytest.importorskip("sd_parsers")

    info = sd_parsers.ParserManager().parse(str(save(tmp_path, fmt, suffix)))
    assert info is not None and info.generator.name == "AUTOMATIC1111"
    sampler = info.samplers[0]
    assert [p.value for p in sampler.prompts] == ["two red circles caf\u00e9"]
    assert [p.value for p in sampler.negative_prompts] == ["blurry"]
    assert sampler.parameters["seed"] == "7" and sampler.name == "Euler a"


@pytest.mark.parametrize("fmt, suffix", FORMATS)
def test_sd_prompt_reader_reads_imagent_images(tmp_path, fmt, suffix):
    """sd-prompt-reader (not in the test extra: it pins an old Pillow and GUI packages) crashed on
    imagent's JPEGs with "'tuple' object has no attribute 'decode'"."""
    reader = pytest.importorskip("sd_prompt_reader.image_data_reader")

    data = reader.ImageDataReader(str(save(tmp_path, fmt, suffix)))
    assert data.status.name == "READ_SUCCESS" and data.tool == "A1111 webUI"
    assert (data.positive, data.negative) == ("two red circles caf\u00e9", "blurry")
    assert "Seed: 7" in data.setting
