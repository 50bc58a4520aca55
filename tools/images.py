"""Image input/output: reading user files with clear errors, and atomic PNG writes."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from PIL import Image, PngImagePlugin, UnidentifiedImageError

from tools.errors import InvalidInput

MAX_SIDE = 4096


def load_image(path: str | os.PathLike, *, what: str = "image") -> Image.Image:
    """Open an image file as RGB, or raise InvalidInput that names the file and the problem."""
    p = Path(path)
    if not p.exists():
        raise InvalidInput(f"The {what} file '{p}' does not exist.", "Check the path.")
    if p.is_dir():
        raise InvalidInput(f"The {what} path '{p}' is a folder, not an image file.")
    try:
        with Image.open(p) as im:
            im.load()
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InvalidInput(
            f"The {what} file '{p}' is not a readable image ({type(exc).__name__}).",
            "Pass a PNG, JPEG or WebP file.",
        ) from None


def load_mask(path: str | os.PathLike, size: tuple[int, int]) -> Image.Image:
    """Open a mask as single-channel 'L' (white = repaint, black = keep) of exactly `size`."""
    mask = load_image(path, what="mask").convert("L")
    if mask.size != size:
        raise InvalidInput(
            f"The mask is {mask.size[0]}x{mask.size[1]} but the image is {size[0]}x{size[1]}.",
            "Use a mask of the same size as the image (white = repaint, black = keep).",
        )
    return mask


def atomic_save_png(image: Image.Image, path: str | os.PathLike, text: dict[str, str] | None = None) -> Path:
    """Write a PNG with text chunks so that `path` is either absent or complete, never partial."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_itxt(key, value) if not value.isascii() else info.add_text(key, value)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".png", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            image.save(fh, format="PNG", pnginfo=info)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def png_text(path: str | os.PathLike) -> dict[str, str]:
    """The text chunks of a PNG file (empty for other formats)."""
    image = load_image_raw(path)
    return dict(getattr(image, "text", {}) or {})


def load_image_raw(path: str | os.PathLike) -> Image.Image:
    p = Path(path)
    try:
        im = Image.open(p)
        im.load()
        return im
    except FileNotFoundError:
        raise InvalidInput(f"The image file '{p}' does not exist.", "Check the path.") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InvalidInput(f"'{p}' is not a readable image ({type(exc).__name__}).") from None


def unique_path(directory: Path, stem: str, suffix: str = ".png") -> Path:
    """A path in `directory` that does not exist yet: stem.png, stem-1.png, ..."""
    candidate = directory / f"{stem}{suffix}"
    n = 1
    while candidate.exists():
        candidate = directory / f"{stem}-{n}{suffix}"
        n += 1
    return candidate
