"""Post-processing of a generated image before it is written: resize, sharpen, output format.

`PostProcess` is the one input model every front door builds (CLI options, MCP/LangChain tool
fields, the Python API) and the one place its values are checked. `apply` does the pixel work
with Pillow: first the resize (Lanczos) to exactly `resize` = (width, height), then an unsharp
mask (radius 2 px, `sharpen` x 100 percent, threshold 0). The format decides the file type and
suffix; `quality` applies to JPEG and WebP (lossy) only. How the metadata is stored per format is
in tools.images (`atomic_save`, `image_text`).

The default, `PostProcess()`, changes nothing: a PNG with the generated pixels, no record entry.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import Image, ImageFilter

from tools.errors import InvalidInput

FORMATS = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}  # format -> file suffix
FORMAT_ALIASES = {"jpg": "jpeg"}
LOSSY = ("jpeg", "webp")
SHARPEN_MAX = 5.0
SIDE_MIN, SIDE_MAX = 16, 4096
QUALITY_MIN, QUALITY_MAX = 1, 100
DEFAULT_QUALITY = 95
UNSHARP_RADIUS = 2.0


@dataclass(frozen=True)
class PostProcess:
    sharpen: float = 0.0                  # unsharp-mask amount, 0 (off) .. 5; 1 = 100 percent
    resize: tuple[int, int] | None = None  # final (width, height) in pixels, each 16..4096
    format: str = "png"                   # png | jpeg | webp
    quality: int = DEFAULT_QUALITY        # 1..100, JPEG and WebP only

    def __post_init__(self):
        sharpen = self.sharpen
        if isinstance(sharpen, bool) or not isinstance(sharpen, (int, float)) or not math.isfinite(sharpen) \
                or not 0 <= sharpen <= SHARPEN_MAX:
            raise InvalidInput(f"The sharpen amount {sharpen!r} is out of range.",
                               f"Use a number from 0 (off) to {SHARPEN_MAX:g}; 1 is a moderate sharpening.")
        object.__setattr__(self, "sharpen", float(sharpen))
        if self.resize is not None:
            object.__setattr__(self, "resize", _check_size(self.resize))
        fmt = self.format.lower().strip() if isinstance(self.format, str) else None
        fmt = FORMAT_ALIASES.get(fmt, fmt)
        if fmt not in FORMATS:
            raise InvalidInput(f"Unknown output format {self.format!r}.",
                               f"Use one of: {', '.join(FORMATS)}.")
        object.__setattr__(self, "format", fmt)
        q = self.quality
        if isinstance(q, bool) or not isinstance(q, int) or not QUALITY_MIN <= q <= QUALITY_MAX:
            raise InvalidInput(f"The quality {q!r} is out of range.",
                               f"Use a whole number from {QUALITY_MIN} to {QUALITY_MAX} (95 is the default; "
                               "lower is smaller and blurrier; only JPEG and WebP use it).")

    @classmethod
    def from_options(cls, sharpen=None, resize=None, format=None, quality=None) -> "PostProcess":
        """From front-door options, None meaning the default; `resize` as 'WIDTHxHEIGHT' or a pair."""
        given = {"sharpen": sharpen, "resize": parse_resize(resize) if isinstance(resize, str) else resize,
                 "format": format, "quality": quality}
        return cls(**{k: v for k, v in given.items() if v is not None})

    @classmethod
    def from_json(cls, data: dict | None) -> "PostProcess":
        """From a record's "post" entry (see `to_json`); None or {} is the default."""
        if not data:
            return cls()
        if not isinstance(data, dict):
            raise InvalidInput(f"The recorded post-processing {data!r} is not an object.",
                               "The image's metadata is damaged; regenerate it from its prompt.")
        resize = data.get("resize")
        return cls.from_options(sharpen=data.get("sharpen"), format=data.get("format"), quality=data.get("quality"),
                                resize=tuple(resize) if isinstance(resize, list) else resize)

    def to_json(self, final_size: tuple[int, int]) -> dict:
        """The record's "post" entry, with the size of the image as written."""
        out = {"sharpen": self.sharpen, "resize": list(self.resize) if self.resize else None, "format": self.format}
        if self.format in LOSSY:
            out["quality"] = self.quality
        out["width"], out["height"] = final_size
        return out

    @property
    def is_default(self) -> bool:
        return self == PostProcess()

    @property
    def suffix(self) -> str:
        return FORMATS[self.format]

    def apply(self, image: Image.Image) -> Image.Image:
        """The post-processed image (a new one), or `image` itself when there is nothing to change."""
        out = image
        if self.resize and self.resize != image.size:
            out = out.resize(self.resize, Image.Resampling.LANCZOS)
        if self.sharpen > 0:
            out = out.filter(ImageFilter.UnsharpMask(radius=UNSHARP_RADIUS, percent=round(self.sharpen * 100),
                                                     threshold=0))
        return out


def parse_resize(text: str) -> tuple[int, int]:
    """'640x480' -> (640, 480), or InvalidInput."""
    try:
        w, h = (int(x) for x in text.lower().replace("*", "x").split("x"))
    except ValueError:
        raise InvalidInput(f"The resize size '{text}' is not WIDTHxHEIGHT.", "Write it like 640x480.") from None
    return _check_size((w, h))


def _check_size(size) -> tuple[int, int]:
    ok = (isinstance(size, (tuple, list)) and len(size) == 2
          and all(isinstance(x, int) and not isinstance(x, bool) for x in size))
    if not ok or not all(SIDE_MIN <= x <= SIDE_MAX for x in size):
        shown = "x".join(map(str, size)) if ok else repr(size)
        raise InvalidInput(f"The resize size {shown} is out of range.",
                           f"Give a width and a height of {SIDE_MIN} to {SIDE_MAX} pixels each, like 640x480.")
    return int(size[0]), int(size[1])
