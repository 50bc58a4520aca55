"""Image input/output: reading user files with clear errors, and atomic writes (PNG, JPEG, WebP)
with their metadata."""
from __future__ import annotations

import io
import os
import re
import secrets
import struct
import time
import warnings
from pathlib import Path
from typing import BinaryIO

from PIL import Image, PngImagePlugin, UnidentifiedImageError

import errno

from tools.errors import DiskFull, InvalidInput
from tools.limits import LIMITS

MAX_SIDE = int(LIMITS["width"].high)  # an image's side, in and out (tools.limits)


def open_image(source: str | os.PathLike | bytes | BinaryIO, *, what: str = "image",
               name: str | None = None) -> Image.Image:
    """Open and decode an image (a path, bytes or a binary file) as stored: its mode and text
    chunks are kept. Raises InvalidInput that names the file and the problem.

    The one place imagent opens images. A header that claims more than `Image.MAX_IMAGE_PIXELS`
    pixels (a damaged file or a decompression bomb; PIL only warns up to twice that) is refused
    before any pixel is decoded."""
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    if isinstance(source, (str, os.PathLike)):
        source = Path(source)
        label = f"The {what} file '{name or source}'"
        if not source.exists():
            raise InvalidInput(f"{label} does not exist.", "Check the path.")
        if source.is_dir():
            raise InvalidInput(f"The {what} path '{name or source}' is a folder, not an image file.")
    else:
        label = f"The {what} '{name}'" if name else f"The {what} data"
    try:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                im = Image.open(source)
            limit = Image.MAX_IMAGE_PIXELS
            if limit and im.size[0] * im.size[1] > limit:  # also when another thread reset the filter
                im.close()
                raise Image.DecompressionBombError(f"{im.size} is over {limit} pixels")
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise _bomb(label, source) from None
        im.load()
        return im
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InvalidInput(f"{label} is not a readable image ({type(exc).__name__}).",
                           "Pass a PNG, JPEG or WebP file.") from None


def _bomb(label: str, fh) -> InvalidInput:
    size = _claimed_size(fh)
    claimed = f"{size[0]}x{size[1]} pixels" if size else "a size"
    limit = Image.MAX_IMAGE_PIXELS or 0
    return InvalidInput(
        f"{label} claims to be {claimed}, over the {limit / 1e6:.0f}-megapixel limit for decoding "
        "(a damaged file or a decompression bomb).",
        f"Use an image of at most {MAX_SIDE}x{MAX_SIDE} pixels; shrink a real photo first.")


def _claimed_size(source) -> tuple[int, int] | None:
    """The width and height in a file's header, read without PIL's decompression bomb check."""
    if isinstance(source, Path):
        try:
            with open(source, "rb") as fh:
                return _claimed_size(fh)
        except OSError:
            return None
    fh = source
    try:
        Image.init()
        fh.seek(0)
        prefix = fh.read(16)
        for fmt in Image.ID:
            factory, accept = Image.OPEN[fmt]
            accepted = accept(prefix) if accept else True
            if not accepted or isinstance(accepted, str):
                continue
            try:
                fh.seek(0)
                return tuple(factory(fh, "").size)
            except Exception:  # noqa: BLE001  (not this format: try the next)
                continue
    except (OSError, ValueError):
        pass
    return None


def load_image(path: str | os.PathLike | bytes | BinaryIO, *, what: str = "image") -> Image.Image:
    """Open an image file as RGB, or raise InvalidInput that names the file and the problem."""
    im = open_image(path, what=what)
    try:
        return im.convert("RGB")
    finally:
        im.close()


def load_mask(path: str | os.PathLike, size: tuple[int, int]) -> Image.Image:
    """Open a mask as single-channel 'L' (white = repaint, black = keep) of exactly `size`."""
    mask = load_image(path, what="mask").convert("L")
    if mask.size != size:
        raise InvalidInput(
            f"The mask is {mask.size[0]}x{mask.size[1]} but the image is {size[0]}x{size[1]}.",
            "Use a mask of the same size as the image (white = repaint, black = keep).",
        )
    return mask


PARTIAL_SUFFIX = ".imagent-partial"   # an image being written: `NAME.png.XXXXXXXX.imagent-partial`
STALE_PARTIAL_SECONDS = 60
_LEGACY_TMP = re.compile(r"^\.tmp-[a-z0-9_]{8}\.png$")  # what older versions left (tempfile.mkstemp)


def prepare_out_dir(directory: str | os.PathLike) -> Path:
    """Create the output folder and check it is a writable directory, before anything is generated
    (so a bad --out never costs a generated image). Raises InvalidInput naming the folder."""
    directory = Path(directory).expanduser()
    hint = "Pass --out a folder you can write to (it is created if missing)."
    for parent in (directory, *directory.parents):
        if parent.exists() and not parent.is_dir():
            raise InvalidInput(f"The output folder '{directory}' cannot be created: '{parent}' is a file, "
                               "not a folder.", hint)
        if parent.exists():
            break
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DiskFull(f"The disk is full: the output folder '{directory}' could not be created.",
                           "Free some disk space, or pass --out a folder on another disk.") from None
        raise InvalidInput(f"The output folder '{directory}' cannot be created ({exc.strerror or exc}).", hint) from None
    probe = directory / f".imagent-write-test-{secrets.token_hex(4)}"
    try:  # a real write: os.access says yes to root on a read-only mount
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        probe.unlink()
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull(f"The disk is full: nothing can be written to the output folder '{directory}'.",
                           "Free some disk space, or pass --out a folder on another disk.") from None
        raise InvalidInput(f"The output folder '{directory}' is not writable ({exc.strerror or exc}).", hint) from None
    return directory


SAVE_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}

# Where the metadata goes in JPEG and WebP files, as AUTOMATIC1111 stores it (PNG uses text chunks):
# the A1111 `parameters` text in EXIF UserComment, type UNDEFINED, b"UNICODE\0" + UTF-16 big-endian
# (what A1111 writes through piexif: piexif.helper.UserComment.dump(text, encoding="unicode"), and
# civitai, A1111's PNG Info, sd-parsers and sd-prompt-reader read), and imagent's JSON record in
# EXIF ImageDescription (IFD0, ASCII: the JSON escapes anything else as \uXXXX). The block is
# written here (_exif_block), big-endian as piexif writes it: Pillow's Image.Exif stores bytes in
# the Exif sub-IFD as type BYTE, which piexif (so sd-prompt-reader) reads as a tuple of numbers.
# Reading uses Pillow, which gives bytes for either type, so older imagent files read as before.
RECORD_KEY = "imagent"
EXIF_IFD, USER_COMMENT, IMAGE_DESCRIPTION = 0x8769, 0x9286, 0x010E
_UNICODE, _ASCII = b"UNICODE\0", b"ASCII\0\0\0"
_JPEG_MAX_EXIF = 65533  # one APP1 segment


def atomic_save_png(image: Image.Image, path: str | os.PathLike, text: dict[str, str] | None = None) -> Path:
    """`atomic_save` as PNG."""
    return atomic_save(image, path, text)


def atomic_save(image: Image.Image, path: str | os.PathLike, text: dict[str, str] | None = None, *,
                format: str = "png", quality: int = 95) -> Path:
    """Write an image with its metadata so that `path` is either absent or complete, never partial.

    `format`: png (text chunks), jpeg or webp (`parameters` and `imagent` in EXIF, see above;
    `quality` 1..100). The file is written to `NAME.EXT.XXXXXXXX.imagent-partial` beside it and
    then renamed; it gets the mode a new file gets (0644 under the usual umask). Partial files
    older than a minute in the folder (left by a killed process) are removed first."""
    path = Path(path)
    options = _save_options(path, format, text or {}, quality)
    if format == "jpeg" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    elif format == "webp" and image.mode not in ("RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    prepare_out_dir(path.parent)
    remove_stale_partials(path.parent)
    while True:
        tmp = path.with_name(f"{path.name}.{secrets.token_hex(4)}{PARTIAL_SUFFIX}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as fh:
            image.save(fh, **options)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull(f"The disk is full: the image '{path}' was not saved.",
                           "Free some disk space (or pass --out a folder on another disk) and generate it "
                           "again; the seed is in the gallery record of this run.") from None
        raise
    return path


def _save_options(path: Path, format: str, text: dict[str, str], quality: int) -> dict:
    """The keyword arguments of Image.save for a format, with the metadata in place."""
    if format not in SAVE_FORMATS:
        raise ValueError(f"unknown image format {format!r}")
    if format == "png":
        info = PngImagePlugin.PngInfo()
        for key, value in text.items():
            info.add_itxt(key, value) if not value.isascii() else info.add_text(key, value)
        return {"format": "PNG", "pnginfo": info}
    comment = description = None
    for key, value in text.items():
        if key == "parameters":
            comment = _UNICODE + value.encode("utf-16-be")
        elif key == RECORD_KEY:
            if not value.isascii():
                raise ValueError("the JSON record must be ASCII (json.dumps escapes the rest)")
            description = value
        else:
            raise ValueError(f"metadata {key!r} has no place in {format} files")
    data = _exif_block(description, comment)
    if format == "jpeg" and len(data) > _JPEG_MAX_EXIF:
        raise InvalidInput(f"The metadata of '{path}' ({len(data)} bytes) does not fit in a JPEG file (at most "
                           f"{_JPEG_MAX_EXIF} bytes of EXIF); nothing was written.",
                           "Use the webp or png format, which have no such limit.", param="format")
    return {"format": SAVE_FORMATS[format], "quality": quality, "exif": data}


_ASCII_TYPE, _LONG_TYPE, _UNDEFINED_TYPE = 2, 4, 7  # TIFF field types


def _exif_block(description: str | None, comment: bytes | None) -> bytes:
    """An EXIF block (b"Exif\0\0" + a big-endian TIFF structure) with ImageDescription (ASCII) in
    IFD0 and UserComment (UNDEFINED) in the Exif IFD, laid out as piexif.dump lays them out;
    b"" when there is neither."""
    if description is None and comment is None:
        return b""
    ifd0 = []
    if description is not None:
        ifd0.append((IMAGE_DESCRIPTION, _ASCII_TYPE, description.encode("ascii") + b"\0"))
    if comment is not None:
        ifd0.append((EXIF_IFD, _LONG_TYPE, b"\0\0\0\0"))  # the Exif IFD's offset, set below
    first = _tiff_ifd(ifd0, 8)
    if comment is not None:
        exif_at = 8 + len(first)
        ifd0[-1] = (EXIF_IFD, _LONG_TYPE, struct.pack(">L", exif_at))
        first = _tiff_ifd(ifd0, 8) + _tiff_ifd([(USER_COMMENT, _UNDEFINED_TYPE, comment)], exif_at)
    return b"Exif\0\0" + b"MM\0\x2a" + struct.pack(">L", 8) + first


def _tiff_ifd(entries: list[tuple[int, int, bytes]], at: int) -> bytes:
    """One TIFF IFD at offset `at` (from the TIFF header): its table of (tag, type, data) entries in
    tag order (count = bytes for ASCII/UNDEFINED, values for LONG), no next IFD, then the data of
    the entries longer than 4 bytes, each padded to an even length."""
    entries = sorted(entries)
    table = struct.pack(">H", len(entries))
    extra = b""
    data_at = at + 2 + 12 * len(entries) + 4
    for tag, typ, data in entries:
        count = len(data) // 4 if typ == _LONG_TYPE else len(data)
        if len(data) <= 4:
            table += struct.pack(">HHL", tag, typ, count) + data.ljust(4, b"\0")
        else:
            table += struct.pack(">HHLL", tag, typ, count, data_at + len(extra))
            extra += data + b"\0" * (len(data) % 2)
    return table + struct.pack(">L", 0) + extra


def remove_stale_partials(directory: Path, max_age: float = STALE_PARTIAL_SECONDS) -> list[Path]:
    """Delete the partial images in `directory` older than `max_age` seconds; returns them."""
    removed = []
    cutoff = time.time() - max_age
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        if not (entry.name.endswith(PARTIAL_SUFFIX) or _LEGACY_TMP.match(entry.name)):
            continue
        try:
            if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            continue
    return removed


def image_text(path: str | os.PathLike) -> dict[str, str]:
    """The metadata text of an image file: a PNG's text chunks; for JPEG and WebP (and a PNG's
    eXIf) `parameters` from EXIF UserComment and `imagent` from an ImageDescription holding a JSON
    object. Text chunks win over EXIF; a damaged EXIF block reads as none."""
    image = load_image_raw(path)
    try:
        text = dict(getattr(image, "text", {}) or {})
        try:
            exif = image.getexif()
            comment = exif.get_ifd(EXIF_IFD).get(USER_COMMENT)
            description = exif.get(IMAGE_DESCRIPTION)
        except (OSError, ValueError, SyntaxError, KeyError, TypeError, struct.error):
            return text
        if comment and "parameters" not in text:
            decoded = decode_user_comment(comment)
            if decoded:
                text["parameters"] = decoded
        if isinstance(description, bytes):
            description = description.decode("utf-8", errors="replace")
        if isinstance(description, str) and description.strip().startswith("{") and RECORD_KEY not in text:
            text[RECORD_KEY] = description.strip().rstrip("\0")
        return text
    finally:
        image.close()


def decode_user_comment(raw: bytes | str) -> str:
    """EXIF UserComment -> text. Its 8-byte header names the code: UNICODE (UTF-16; big-endian as
    A1111/piexif write it, little-endian guessed from the zero bytes when other tools wrote it in
    the file's byte order), ASCII, or none (read as UTF-8, as A1111 does)."""
    if isinstance(raw, str):
        return raw.rstrip("\0")
    head, body = raw[:8], raw[8:]
    if head == _UNICODE:
        if body[:2] in (b"\xfe\xff", b"\xff\xfe"):
            return body.decode("utf-16", errors="replace").rstrip("\0")
        big = body[0::2].count(0) >= body[1::2].count(0)
        return body.decode("utf-16-be" if big else "utf-16-le", errors="replace").rstrip("\0")
    if head in (_ASCII, b"\0" * 8):
        return body.decode("utf-8", errors="replace").rstrip("\0")
    return raw.decode("utf-8", errors="replace").rstrip("\0")


def load_image_raw(path: str | os.PathLike) -> Image.Image:
    """An image as stored (mode, text chunks), or InvalidInput."""
    return open_image(path)


def unique_path(directory: Path, stem: str, suffix: str = ".png") -> Path:
    """A path in `directory` that does not exist yet: stem.png, stem-1.png, ... (or stem.jpg, ...)"""
    candidate = directory / f"{stem}{suffix}"
    n = 1
    while candidate.exists():
        candidate = directory / f"{stem}-{n}{suffix}"
        n += 1
    return candidate
