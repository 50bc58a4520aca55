"""The oracle: reads any 64x64 image as a demo-world scene and checks it against a spec.

How it reads an image:
- background = the palette background (white/black/gray) nearest to the median border pixel;
- every pixel gets the nearest of {that background, the 6 object colours}; non-background
  pixels form objects by 4-connected components (pieces under MIN_AREA pixels are ignored);
  a component whose pixels are split between two colours (each >= 30%) is split by colour;
- an object's colour is its majority colour over pixels close to the palette; its shape comes
  from geometry (see `_shape`): how full its outer rows/columns are (square), how much
  narrower its top is than its bottom (triangle, drawn point up), else circle;
- an object's style is "tall" when its box is at least TALL_ASPECT times taller than wide (as
  the demo LoRA draws them), else "normal";
- relations follow GenEval's `relative_position` (evaluation/evaluate_images.py) on the objects'
  pixel boxes: the offset between the box centres, each axis shrunk by POSITION_THRESHOLD x the
  sum of the two boxes' sizes on that axis (not below 0), divided by the offset's length; "A left
  of B" when the x part is below -0.5, "right of" above 0.5, "above" when the y part is below
  -0.5, "below" above 0.5 (y grows downward). Written here from GenEval's definition, apart from
  the verifier's own rule (tools.verify), so that the judge does not share the judged code.

Per-category correctness mirrors GenEval: single_object = one object of the right colour and
shape; colors = one object of the right colour on the right background; counting = exactly N
objects, all of the shape; two_object = exactly two objects with the two shapes; color_attr =
exactly two objects with the right colour-shape pairs; position = two objects with the two
shapes and the relation holding between them. `strict` = everything (colours, shapes, counts,
background, relation) matches.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from tools.demo.grammar import BACKGROUNDS, COLOURS, SIZE, Scene, parse
from tools.errors import InvalidInput

MIN_AREA = 20
TALL_ASPECT = 1.25   # "tall" style objects are drawn 1/0.7 = 1.43 times taller than wide
POSITION_THRESHOLD = 0.1   # GenEval's shrink of the centre offset, per unit of the two boxes' sizes
CORE_DIST = 60.0

_OBJ_NAMES = list(COLOURS)
_OBJ_RGB = np.array([COLOURS[c] for c in _OBJ_NAMES], dtype=np.float32)


@dataclass
class Found:
    colour: str
    shape: str
    cx: float
    cy: float
    area: int
    fill: float
    aspect: float = 1.0     # height / width of the object's box
    box: tuple[float, float, float, float] | None = None   # pixel box (x0, y0, x1, y1); None: a point at the centroid

    @property
    def style(self) -> str:
        """'tall' when the object is at least TALL_ASPECT times taller than wide, else 'normal'."""
        return "tall" if self.aspect >= TALL_ASPECT else "normal"


@dataclass
class Reading:
    background: str
    objects: list[Found] = field(default_factory=list)

    def pairs(self) -> list[tuple[str, str]]:
        return sorted((o.colour, o.shape) for o in self.objects)


@dataclass
class Verdict:
    scene: Scene
    reading: Reading
    category: str
    correct: bool          # by the category's rule
    strict: bool           # every attribute matches
    checks: dict


def _to_array(image) -> np.ndarray:
    if isinstance(image, Image.Image):
        im = image.convert("RGB")
        if im.size != (SIZE, SIZE):
            im = im.resize((SIZE, SIZE), Image.BILINEAR)
        return np.asarray(im, dtype=np.float32)
    arr = np.asarray(image, dtype=np.float32)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise InvalidInput(f"expected an RGB image, got an array of shape {arr.shape}")
    return arr


def _components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """4-connected components labelling (no scipy needed): returns labels (0 = none), count."""
    h, w = mask.shape
    labels = np.zeros((h, w), dtype=np.int32)
    n = 0
    for y0 in range(h):
        for x0 in range(w):
            if mask[y0, x0] and labels[y0, x0] == 0:
                n += 1
                stack = [(y0, x0)]
                labels[y0, x0] = n
                while stack:
                    y, x = stack.pop()
                    for yy, xx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                        if 0 <= yy < h and 0 <= xx < w and mask[yy, xx] and labels[yy, xx] == 0:
                            labels[yy, xx] = n
                            stack.append((yy, xx))
    return labels, n


def _trim_fringe(mask: np.ndarray) -> np.ndarray:
    """Drop a sparse outer row/column lying on a full one (an anti-aliased straight edge
    read through noise), so a square's edge isn't taken for a rounded one."""
    mask = mask.copy()
    for axis in (0, 1):
        for _ in range(2):
            counts = mask.sum(axis=1 - axis) if axis == 0 else mask.sum(axis=0)
            idx = np.nonzero(counts)[0]
            if len(idx) < 6:
                break
            full = np.sort(counts[idx])[len(idx) // 2]
            changed = False
            for first, second in ((idx[0], idx[1]), (idx[-1], idx[-2])):
                if counts[first] < 0.5 * counts[second] and counts[second] >= 0.85 * full:
                    if axis == 0:
                        mask[first, :] = False
                    else:
                        mask[:, first] = False
                    changed = True
            if not changed:
                break
    return mask


def _shape(mask: np.ndarray) -> tuple[str, float]:
    """Shape from geometry, after dropping stray edge pixels.

    fill = area / (widest row x tallest column): square ~1.0, circle ~0.79, triangle ~0.5.
    edges = how full the outer 20% of rows and columns are relative to the middle 20%: ~1
    for a square, ~0.6 for a circle. A triangle (drawn point up) has a top much narrower than its
    bottom. Thresholds were set from the renderer's clean, blurred and noisy images."""
    # drop stray edge pixels (fewer than 2 of 4 neighbours in the mask) first
    p = np.pad(mask, 1)
    nb = p[:-2, 1:-1].astype(np.int8) + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:]
    cleaned = mask & (nb >= 2)
    if cleaned.sum() >= MIN_AREA // 2:
        mask = cleaned
    mask = _trim_fringe(mask)
    rows = mask.sum(axis=1).astype(np.float32)
    cols = mask.sum(axis=0).astype(np.float32)
    fill = float(mask.sum()) / float(rows.max() * cols.max())
    rows, cols = rows[rows > 0], cols[cols > 0]
    k = max(1, int(round(len(rows) * 0.2)))
    kc = max(1, int(round(len(cols) * 0.2)))
    # outer 20% of rows/columns relative to the middle 20% (a stray edge pixel barely moves it)
    mid_r = rows[max(0, len(rows) // 2 - k // 2):][:k].mean()
    mid_c = cols[max(0, len(cols) // 2 - kc // 2):][:kc].mean()
    top, bottom = rows[:k].mean() / mid_r, rows[-k:].mean() / mid_r
    sides = 0.5 * (cols[:kc].mean() + cols[-kc:].mean()) / mid_c
    edges = 0.25 * (top + bottom) + 0.5 * sides   # ~1 for a square, ~0.6 for a circle
    if top < 0.5 * bottom or (fill < 0.64 and top < 0.7 * bottom):
        return "triangle", fill
    if edges >= 0.75 or fill >= 0.93:
        return "square", fill
    return "circle", fill


def read(image) -> Reading:
    """Image -> Reading (background and the objects found)."""
    arr = _to_array(image)
    border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])
    med = np.median(border, axis=0)
    bg_name = min(BACKGROUNDS, key=lambda b: float(((np.array(BACKGROUNDS[b]) - med) ** 2).sum()))
    palette = np.concatenate([np.array([BACKGROUNDS[bg_name]], dtype=np.float32), _OBJ_RGB])
    d = ((arr[:, :, None, :] - palette[None, None]) ** 2).sum(-1)
    lab = d.argmin(-1)                       # 0 = background, 1..6 = object colours
    core = d.min(-1) < CORE_DIST ** 2        # pixels close to a palette colour (not edge blends)
    labels, n = _components(lab > 0)
    objects: list[Found] = []
    for i in range(1, n + 1):
        comp = labels == i
        area = int(comp.sum())
        if area < MIN_AREA:
            continue
        core_counts = Counter(lab[comp & core].tolist())
        core_counts.pop(0, None)
        parts = [comp]
        if len(core_counts) > 1:
            (_, n1), (_, n2) = core_counts.most_common(2)
            if n2 >= 0.3 * (n1 + n2) and n2 >= MIN_AREA // 2:
                # two real colours touch: split by colour (edge-blend colours are dropped)
                parts = []
                for c, m_c in core_counts.items():
                    if m_c < MIN_AREA // 2:
                        continue
                    sub, m = _components(comp & (lab == c))
                    for j in range(1, m + 1):
                        parts.append(sub == j)
        for part in parts:
            a = int(part.sum())
            if a < MIN_AREA:
                continue
            cc = Counter(lab[part & core].tolist()) or Counter(lab[part].tolist())
            cc.pop(0, None)
            col = (cc or Counter(lab[part].tolist())).most_common(1)[0][0]
            shape, fill = _shape(part)
            ys, xs = np.nonzero(part)
            aspect = float(np.ptp(ys) + 1) / float(np.ptp(xs) + 1)
            objects.append(Found(_OBJ_NAMES[col - 1], shape, float(xs.mean()), float(ys.mean()),
                                 a, fill, aspect, (float(xs.min()), float(ys.min()),
                                                   float(xs.max()) + 1.0, float(ys.max()) + 1.0)))
    return Reading(bg_name, objects)


def _xyxy(o) -> np.ndarray:
    box = getattr(o, "box", None)
    return np.array(box if box is not None else (o.cx, o.cy, o.cx, o.cy), dtype=np.float64)


def relation_components(a, b) -> tuple[float, float] | None:
    """GenEval's normalised offset of A from B (x, y), or None when the shrunk offset vanishes.
    `a` and `b` are anything with a pixel `box` (x0, y0, x1, y1), or a centre `cx`, `cy`."""
    boxes = np.stack([_xyxy(a), _xyxy(b)]).reshape(2, 2, 2)
    centre_a, centre_b = boxes.mean(axis=-2)
    dim_a, dim_b = np.abs(np.diff(boxes, axis=-2))[..., 0, :]
    offset = centre_a - centre_b
    revised = np.maximum(np.abs(offset) - POSITION_THRESHOLD * (dim_a + dim_b), 0) * np.sign(offset)
    if np.all(np.abs(revised) < 1e-3):
        return None
    dx, dy = revised / np.linalg.norm(offset)
    return float(dx), float(dy)


def relative_position(a, b) -> set[str]:
    """GenEval's relations of A to B ("left of", "right of", "above", "below"; none, one or two)."""
    c = relation_components(a, b)
    if c is None:
        return set()
    dx, dy = c
    return {name for name, holds in (("left of", dx < -0.5), ("right of", dx > 0.5),
                                     ("above", dy < -0.5), ("below", dy > 0.5)) if holds}


def relation_holds(rel: str, a, b) -> bool:
    """Whether "A <rel> B" holds by GenEval's rule."""
    return rel in relative_position(a, b)


def _find(reading: Reading, colour: str | None, shape: str) -> list[Found]:
    return [o for o in reading.objects if o.shape == shape and (colour is None or o.colour == colour)]


def check(image, scene: Scene | str, category: str | None = None) -> Verdict:
    """Check an image against a scene (or caption). `category` defaults to the scene's own."""
    if isinstance(scene, str):
        scene = parse(scene)
    category = category or scene.category
    r = read(image)
    want = sorted(scene.objects)
    got = r.pairs()
    checks = {
        "count": len(r.objects) == scene.n_objects,
        "objects": got == want,
        "colours": sorted(o.colour for o in r.objects) == sorted(c for c, _ in want),
        "shapes": sorted(o.shape for o in r.objects) == sorted(s for _, s in want),
        "background": r.background == scene.background,
    }
    rel_ok = True
    rel_shape_ok = True
    if scene.relation:
        g0, g1 = scene.groups
        a, b = _find(r, g0.colour, g0.shape), _find(r, g1.colour, g1.shape)
        rel_ok = len(a) == 1 and len(b) == 1 and relation_holds(scene.relation, a[0], b[0])
        if g0.shape != g1.shape:
            a, b = _find(r, None, g0.shape), _find(r, None, g1.shape)
            rel_shape_ok = len(a) == 1 and len(b) == 1 and relation_holds(scene.relation, a[0], b[0])
        else:
            rel_shape_ok = rel_ok
    checks["relation"] = rel_ok
    strict = all(checks.values())
    g = scene.groups[0]
    if category == "single_object":
        ok = len(r.objects) == 1 and got == [(g.colour, g.shape)]
    elif category == "colors":
        ok = len(r.objects) == 1 and r.objects[0].colour == g.colour and checks["background"]
    elif category == "counting":
        ok = len(r.objects) == g.count and all(o.shape == g.shape for o in r.objects)
    elif category == "two_object":
        ok = checks["count"] and checks["shapes"]
    elif category == "color_attr":
        ok = checks["count"] and checks["objects"]
    elif category == "position":
        ok = checks["count"] and checks["shapes"] and (rel_shape_ok if scene.relation else True)
    elif category == "strict":
        ok = strict
    else:
        raise InvalidInput(f"unknown category {category!r}")
    return Verdict(scene, r, category, bool(ok), bool(strict), checks)


def requirement_truth(image_or_reading, checklist) -> dict[str, bool]:
    """The oracle's answer for each checkable requirement of a checklist (tools.requirements):
    the judge that verifier agreement is measured against (benchmarks and tests only)."""
    r = image_or_reading if isinstance(image_or_reading, Reading) else read(image_or_reading)
    out: dict[str, bool] = {}
    objs = checklist.objects()
    for q in objs:
        colour = next((a for a in q.attributes if a in COLOURS), None)
        n = len(_find(r, colour, q.noun))
        out[q.id] = n == q.count if q.count is not None else n >= 1
    for q in checklist.requirements:
        if q.kind == "relation":
            a, b = checklist.get(q.subject), checklist.get(q.object)
            fa = _find(r, next((x for x in a.attributes if x in COLOURS), None), a.noun)
            fb = _find(r, next((x for x in b.attributes if x in COLOURS), None), b.noun)
            out[q.id] = len(fa) == 1 and len(fb) == 1 and relation_holds(q.relation, fa[0], fb[0])
        elif q.kind == "exclusive":
            out[q.id] = len(r.objects) == sum(o.count or 1 for o in objs)
        elif q.kind == "background":
            out[q.id] = r.background == q.value
    return out
