"""Layout-guided generation: objects generated one by one and composed in latent space (as LMD
does), then finished with a short denoise. Also the local edit: keep an image's good objects,
erase the wrong or extra ones, move one, add a missing one.

A `ComposePlan` says, for each object, where its centre goes and where it comes from: a fresh
single-object generation (`prompt`, `seed`) located by the detector, or a box cut from the base
image. The canvas is the base image's latents (edit) or the first generated object's latents,
with every erased box filled by the canvas's own background (the median latent outside the
boxes). A plan is plain JSON, so the PNG record replays it exactly.
"""
from __future__ import annotations

import math
import threading
from dataclasses import asdict, dataclass, field
from typing import Callable

from PIL import Image

from tools.errors import BackendError, Cancelled
from tools.requirements import Box

Locate = Callable[[Image.Image, str], "Box | None"]


@dataclass
class Placement:
    label: str                                   # detector query for the object ("red circle")
    target: tuple[float, float]                  # centre in pixels
    prompt: str = ""                             # generate: the single-object prompt
    seed: int | None = None                      # generate: its seed
    source_box: tuple[float, float, float, float] | None = None   # base: pixel box to cut
    max_size: float | None = None                # shrink a larger object to this many pixels


@dataclass
class ComposePlan:
    width: int
    height: int
    placements: list[Placement]
    finish_prompt: str
    negative_prompt: str = ""
    steps: int = 20
    cfg: float = 5.0
    seed: int = 0
    finish_strength: float = 0.3
    erase: list[tuple[float, float, float, float]] = field(default_factory=list)   # base boxes to clear
    use_base: bool = False
    layout_control: float | None = None   # draw the boxes with the layout ControlNet at this scale
    background: str = ""                  # edit: recolour the base's plain background to this colour first

    def to_json(self) -> dict:
        d = asdict(self)
        d["placements"] = [{k: v for k, v in asdict(p).items() if v not in (None, "")} for p in self.placements]
        return d

    @classmethod
    def from_json(cls, d: dict) -> "ComposePlan":
        d = dict(d)
        d["placements"] = [Placement(**{**p, "target": tuple(p["target"]),
                                        "source_box": tuple(p["source_box"]) if p.get("source_box") else None})
                           for p in d["placements"]]
        d["erase"] = [tuple(b) for b in d.get("erase", [])]
        return cls(**d)


@dataclass
class ComposeResult:
    image: Image.Image
    placed: list[dict]
    images_generated: int


def compose(pipe, img2img, plan: ComposePlan, locate: Locate, *, base_image: Image.Image | None = None,
            cancel: threading.Event | None = None, max_tries: int = 2) -> ComposeResult:
    """Run a plan on a diffusers text-to-image pipeline (`img2img` shares its components)."""
    import torch

    f = pipe.vae_scale_factor
    sf = pipe.vae.config.scaling_factor
    W, H = plan.width, plan.height
    lw, lh = W // f, H // f

    def stop():
        if cancel is not None and cancel.is_set():
            raise Cancelled("Composition cancelled.")

    def decode(lat) -> Image.Image:
        with torch.no_grad():
            x = pipe.vae.decode(lat / sf).sample
        return pipe.image_processor.postprocess(x, output_type="pil")[0]

    def encode(img: Image.Image):
        with torch.no_grad():
            x = pipe.image_processor.preprocess(img.convert("RGB"), height=H, width=W).to(pipe.vae.device,
                                                                                           pipe.vae.dtype)
            return pipe.vae.encode(x).latent_dist.mean * sf

    generated = 0
    pieces, placed = [], []
    canvas, cleared = None, []
    if plan.use_base:
        if base_image is None:
            raise BackendError("This composition edits an image, but none was given.")
        canvas = encode(swap_background(base_image, plan.background) if plan.background else base_image)
        cleared = list(plan.erase) + [p.source_box for p in plan.placements if p.source_box]
    for pl in plan.placements:
        stop()
        if pl.source_box is not None:
            pieces.append((canvas.clone(), pl.source_box, pl))
            placed.append({"label": pl.label, "from": "base", "source_box": list(pl.source_box)})
            continue
        box = None
        for t in range(max_tries):
            seed = pl.seed + 7919 * t
            out = pipe(prompt=pl.prompt, negative_prompt=plan.negative_prompt or None,
                       num_inference_steps=plan.steps, guidance_scale=plan.cfg, width=W, height=H,
                       generator=torch.Generator("cpu").manual_seed(seed), output_type="latent")
            generated += 1
            lat = out.images if isinstance(out.images, torch.Tensor) else torch.as_tensor(out.images)
            box = locate(decode(lat), pl.label)
            if box is not None:
                break
        if box is None:
            placed.append({"label": pl.label, "from": "generated", "seed": seed, "located": False})
            continue
        src = (box.x0, box.y0, box.x1, box.y1)
        pieces.append((lat, src, pl))
        placed.append({"label": pl.label, "from": "generated", "seed": seed, "source_box": [round(v, 1) for v in src]})
        if canvas is None:
            canvas, cleared = lat.clone(), [src]
    if canvas is None:
        raise BackendError("No object of the layout could be generated and located.",
                           "Try other seeds, or check that the detector knows these objects.")
    canvas = _erase(canvas, cleared, f)
    for lat, src, pl in pieces:
        _paste(canvas, lat, src, pl.target, f, lw, lh, pl.max_size)
    stop()
    if plan.finish_strength > 0:
        out = img2img(prompt=plan.finish_prompt, negative_prompt=plan.negative_prompt or None, image=canvas,
                      strength=plan.finish_strength, guidance_scale=plan.cfg,
                      num_inference_steps=max(plan.steps, math.ceil(1 / plan.finish_strength)),  # >= 1 step
                      generator=torch.Generator("cpu").manual_seed(plan.seed))
        image = out.images[0]
        generated += 1
    else:
        image = decode(canvas)
    return ComposeResult(image=image, placed=placed, images_generated=generated)


def swap_background(image: Image.Image, colour: str, reach: float = 100.0) -> Image.Image:
    """The picture with its plain background recoloured: the background is the median of the border
    pixels; a pixel at RGB distance d from it moves all the way to `colour` when d < reach / 2, then
    less, to not at all at d = reach (anti-aliased edges part way, objects not at all).
    A busy background is barely changed, and the verifier then says so."""
    import numpy as np
    from PIL import ImageColor

    try:
        new = np.array(ImageColor.getrgb(colour)[:3], dtype=np.float32)
    except ValueError:
        raise BackendError(f"Unknown background colour '{colour}'.", "Name a colour, e.g. black or gray.") from None
    arr = np.asarray(image.convert("RGB"), dtype=np.float32)
    border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])
    old = np.median(border, axis=0)
    weight = np.clip(2.0 * (1.0 - np.linalg.norm(arr - old, axis=-1) / reach), 0.0, 1.0)[..., None]
    out = arr + weight * (new - old)
    return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))


LAYOUT_SIDE = 0.25   # a box's side, as a fraction of the image's shorter side, where a placement sets none


def layout_boxes(plan: ComposePlan) -> list[tuple[float, float, float, float, str]]:
    """Each placement's box (x0, y0, x1, y1, label): `max_size` pixels square around its target."""
    out = []
    for pl in plan.placements:
        (cx, cy), h = pl.target, (pl.max_size or LAYOUT_SIDE * min(plan.width, plan.height)) / 2
        out.append((cx - h, cy - h, cx + h, cy + h, pl.label))
    return out


def label_colour(label: str, palette: dict[str, tuple[int, int, int]]) -> tuple[int, int, int]:
    """The fill of an object's box: the first word of its label that names a colour (in the
    ControlNet's palette, then CSS names), else white."""
    from PIL import ImageColor

    words = label.lower().replace("-", " ").split()
    for w in words:
        if w in palette:
            return tuple(palette[w])
    for w in words:
        try:
            return ImageColor.getrgb(w)[:3]
        except ValueError:
            continue
    return (255, 255, 255)


def draw_boxes(boxes, size: tuple[int, int]) -> Image.Image:
    """A box map: black, each (x0, y0, x1, y1, rgb) box filled with its colour."""
    from PIL import ImageDraw

    img = Image.new("RGB", size, (0, 0, 0))
    d = ImageDraw.Draw(img)
    for x0, y0, x1, y1, rgb in boxes:
        d.rectangle([round(x0), round(y0), round(x1) - 1, round(y1) - 1], fill=tuple(rgb))
    return img


def layout_condition(plan: ComposePlan, palette: dict[str, tuple[int, int, int]]) -> Image.Image:
    """The layout ControlNet's condition image for a plan."""
    boxes = [(x0, y0, x1, y1, label_colour(label, palette)) for x0, y0, x1, y1, label in layout_boxes(plan)]
    return draw_boxes(boxes, (plan.width, plan.height))


def _cells(box, f: int, lw: int, lh: int, margin: int = 1) -> tuple[int, int, int, int]:
    x0 = max(0, math.floor(box[0] / f) - margin)
    y0 = max(0, math.floor(box[1] / f) - margin)
    x1 = min(lw, math.ceil(box[2] / f) + margin)
    y1 = min(lh, math.ceil(box[3] / f) + margin)
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


def _erase(canvas, boxes, f: int):
    """Fill each box with the canvas's background: the per-channel median outside all boxes."""
    import torch

    _, _, lh, lw = canvas.shape
    if not boxes:
        return canvas
    keep = torch.ones(lh, lw, dtype=torch.bool)
    rects = [_cells(b, f, lw, lh) for b in boxes]
    for x0, y0, x1, y1 in rects:
        keep[y0:y1, x0:x1] = False
    if keep.any():
        fill = canvas[0][:, keep].median(dim=1).values
    else:
        fill = canvas[0].flatten(1).median(dim=1).values
    out = canvas.clone()
    for x0, y0, x1, y1 in rects:
        out[0, :, y0:y1, x0:x1] = fill[:, None, None]
    return out


def _paste(canvas, lat, src, target, f: int, lw: int, lh: int, max_size: float | None = None) -> None:
    import torch.nn.functional as F

    x0, y0, x1, y1 = _cells(src, f, lw, lh)
    piece = lat[:, :, y0:y1, x0:x1]
    if max_size:
        side = max(src[2] - src[0], src[3] - src[1])
        if side > max_size:  # shrink the object (its margin too) in latent space
            k = max_size / side
            h, w = max(1, round(piece.shape[2] * k)), max(1, round(piece.shape[3] * k))
            piece = F.interpolate(piece, size=(h, w), mode="bilinear", align_corners=False)
    h, w = piece.shape[2], piece.shape[3]
    tx = int(round(target[0] / f - w / 2))
    ty = int(round(target[1] / f - h / 2))
    tx, ty = min(max(0, tx), lw - w), min(max(0, ty), lh - h)
    canvas[0, :, ty:ty + h, tx:tx + w] = piece[0]
