"""Drawing demo scenes: random non-touching layouts, the 64x64 renders, and box-layout images.

Scenes are 64x64 RGB. Positions and sizes are random (seeded); objects never touch.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from PIL import Image, ImageDraw

from tools.demo.grammar import BACKGROUNDS, COLOURS, SIZE, STYLES, TALL_WIDTH, Scene, parse
from tools.errors import InvalidInput


@dataclass
class Placed:
    colour: str
    shape: str
    cx: float
    cy: float
    size: int
    group: int

    @property
    def box(self) -> tuple[float, float, float, float]:
        h = self.size / 2
        return self.cx - h, self.cy - h, self.cx + h, self.cy + h


@dataclass
class Layout:
    scene: Scene
    objects: list[Placed] = field(default_factory=list)


def _size_range(n: int) -> tuple[int, int]:
    return {1: (14, 26), 2: (12, 20)}.get(n, (10, 16))


def _relation_ok(rel: str, a: Placed, b: Placed, margin: float = 8.0) -> bool:
    """At least `margin` pixels apart on the named axis, within 45 degrees of it, and true by
    GenEval's rule with room to spare (the named component of the oracle's normalised offset is
    past 0.6, not just 0.5)."""
    from tools.demo.oracle import relation_components

    c = relation_components(a, b)
    named = {"left of": -c[0], "right of": c[0], "above": -c[1], "below": c[1]}.get(rel, 0.0) if c else 0.0
    if named < 0.6:
        return False
    dx, dy = b.cx - a.cx, b.cy - a.cy
    if rel == "left of":
        return dx >= margin and abs(dy) <= dx
    if rel == "right of":
        return -dx >= margin and abs(dy) <= -dx
    if rel == "above":
        return dy >= margin and abs(dx) <= dy
    if rel == "below":
        return -dy >= margin and abs(dx) <= -dy
    raise InvalidInput(f"unknown relation {rel!r}")


def apart(a: Placed, b: Placed, gap: int) -> bool:
    """Whether the boxes of a and b are at least `gap` pixels apart on one axis."""
    return (abs(a.cx - b.cx) * 2 >= a.size + b.size + 2 * gap
            or abs(a.cy - b.cy) * 2 >= a.size + b.size + 2 * gap)


def free_spot(colour: str, shape: str, size: int, placed: list[Placed], rng: random.Random, gap: int,
              tries: int = 200) -> Placed | None:
    """A random position for one more object that keeps `gap` pixels from every placed one."""
    for _t in range(tries):
        cx = rng.uniform(size / 2 + 2, SIZE - size / 2 - 2)
        cy = rng.uniform(size / 2 + 2, SIZE - size / 2 - 2)
        cand = Placed(colour, shape, cx, cy, size, -1)
        if all(apart(cand, p, gap) for p in placed):
            return cand
    return None


def layout(scene: Scene, rng: random.Random, gap: int = 4) -> Layout:
    """Random non-touching positions and sizes for the scene's objects."""
    n = scene.n_objects
    lo, hi = _size_range(n)
    for _attempt in range(2000):
        placed: list[Placed] = []
        ok = True
        idx = 0
        for gi, g in enumerate(scene.groups):
            for _ in range(g.count):
                s = rng.randint(lo, hi)
                for _t in range(60):
                    cx = rng.uniform(s / 2 + 2, SIZE - s / 2 - 2)
                    cy = rng.uniform(s / 2 + 2, SIZE - s / 2 - 2)
                    cand = Placed(g.colour, g.shape, cx, cy, s, gi)
                    if all(apart(cand, p, gap) for p in placed):
                        placed.append(cand)
                        break
                else:
                    ok = False
                    break
                idx += 1
            if not ok:
                break
        if not ok:
            continue
        if scene.relation and not _relation_ok(scene.relation, placed[0], placed[1]):
            continue
        return Layout(scene, placed)
    raise RuntimeError(f"could not lay out {scene.caption()!r}")  # pragma: no cover


def draw(lay: Layout, supersample: int = 4, style: str = "normal") -> Image.Image:
    """Draw a layout at 64x64 (drawn larger and box-filtered down, so edges are anti-aliased).

    style "normal" (the base world: each object as wide as it is tall) or "tall" (each object
    TALL_WIDTH as wide as its box, the style the demo LoRA teaches); the boxes are the same."""
    if style not in STYLES:
        raise InvalidInput(f"unknown style {style!r}", f"use one of {', '.join(STYLES)}")
    k = supersample
    img = Image.new("RGB", (SIZE * k, SIZE * k), BACKGROUNDS[lay.scene.background])
    d = ImageDraw.Draw(img)
    for p in lay.objects:
        col = COLOURS[p.colour]
        half_w = p.size / 2 * (TALL_WIDTH if style == "tall" else 1.0)
        x0, y0 = (p.cx - half_w) * k, (p.cy - p.size / 2) * k
        x1, y1 = (p.cx + half_w) * k - 1, (p.cy + p.size / 2) * k - 1
        if p.shape == "circle":
            d.ellipse([x0, y0, x1, y1], fill=col)
        elif p.shape == "square":
            d.rectangle([x0, y0, x1, y1], fill=col)
        else:
            d.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=col)
    if k > 1:
        img = img.resize((SIZE, SIZE), Image.BOX)
    return img


def layout_image(lay: Layout) -> Image.Image:
    """The box layout of a scene, the demo ControlNet's condition: a black 64x64 image with each
    object's box filled in the object's colour (what goes where; the prompt says what it is)."""
    return boxes_image([(p.cx - p.size / 2, p.cy - p.size / 2, p.cx + p.size / 2, p.cy + p.size / 2,
                         p.colour) for p in lay.objects])


def boxes_image(boxes, size: tuple[int, int] = (SIZE, SIZE)) -> Image.Image:
    """A box layout from (x0, y0, x1, y1, colour) tuples in pixels of `size` (colour: a world colour
    name or an RGB tuple)."""
    from tools.compose import draw_boxes

    return draw_boxes([(x0, y0, x1, y1, COLOURS[c] if isinstance(c, str) else tuple(c))
                       for x0, y0, x1, y1, c in boxes], size)


def render(scene: Scene | str, seed: int | random.Random = 0,
           style: str = "normal") -> tuple[Image.Image, Layout]:
    """Scene (or caption) -> (64x64 RGB image, layout). Same seed, same image."""
    if isinstance(scene, str):
        scene = parse(scene)
    rng = seed if isinstance(seed, random.Random) else random.Random(seed)
    lay = layout(scene, rng)
    return draw(lay, style=style), lay
