"""The demo world: coloured shapes on a plain background, a caption grammar and a renderer.

Grammar (case-insensitive; a trailing full stop is ignored)::

    caption    := body [" on a " BACKGROUND " background"]
    body       := group
                | group " and " group
                | single RELATION single
    group      := single | NUMBER COLOUR SHAPE "s"
    single     := ARTICLE COLOUR SHAPE
    ARTICLE    := "a" | "an" | "one"          ("an" before "orange" when captions are written)
    NUMBER     := "two" | "three" | "four"
    COLOUR     := red | green | blue | yellow | purple | orange
    SHAPE      := circle | square | triangle
    RELATION   := "left of" | "right of" | "above" | "below"   ("to the left of" is also read)
    BACKGROUND := white | black | gray        (omitted means white)

At most 4 objects in all. Examples: "two red circles", "a green triangle left of a yellow
square", "a blue square on a black background", "two purple squares and an orange circle".

Scenes are 64x64 RGB. Positions and sizes are random (seeded); objects never touch.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from PIL import Image, ImageDraw

from tools.errors import InvalidInput

SIZE = 64

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 60, 220),
    "yellow": (240, 220, 30),
    "purple": (140, 40, 180),
    "orange": (255, 140, 0),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
}
SHAPES = ("circle", "square", "triangle")
RELATIONS = ("left of", "right of", "above", "below")
NUMBERS = {1: "a", 2: "two", 3: "three", 4: "four"}
WORD_TO_NUMBER = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4}
MAX_OBJECTS = 4
STYLES = ("normal", "tall")   # how objects are drawn; captions never say it
TALL_WIDTH = 0.7               # a "tall" object's width as a share of its height
CATEGORIES = ("single_object", "two_object", "counting", "colors", "position", "color_attr")

# every word the grammar can produce or read; the tokenizers are built from this list
VOCAB_WORDS = (
    ["a", "an", "one", "two", "three", "four", "and", "of", "left", "right", "above", "below",
     "on", "background", "to", "the"]
    + list(COLOURS) + list(BACKGROUNDS) + list(SHAPES) + [s + "s" for s in SHAPES]
)


@dataclass(frozen=True)
class Group:
    count: int
    colour: str
    shape: str

    def text(self) -> str:
        if self.count == 1:
            article = "an" if self.colour[0] in "aeiou" else "a"
            return f"{article} {self.colour} {self.shape}"
        return f"{NUMBERS[self.count]} {self.colour} {self.shape}s"


@dataclass(frozen=True)
class Scene:
    """What an image should show. `relation` relates groups[0] to groups[1] (both single)."""

    groups: tuple[Group, ...]
    relation: str | None = None
    background: str = "white"
    background_explicit: bool = False

    def __post_init__(self):
        validate(self)

    @property
    def objects(self) -> list[tuple[str, str]]:
        return [(g.colour, g.shape) for g in self.groups for _ in range(g.count)]

    @property
    def n_objects(self) -> int:
        return sum(g.count for g in self.groups)

    def caption(self) -> str:
        if self.relation:
            body = f"{self.groups[0].text()} {self.relation} {self.groups[1].text()}"
        else:
            body = " and ".join(g.text() for g in self.groups)
        if self.background_explicit or self.background != "white":
            body += f" on a {self.background} background"
        return body

    @property
    def category(self) -> str:
        """The GenEval-like category a prompt for this scene belongs to."""
        if self.relation:
            return "position"
        if len(self.groups) == 2:
            return "color_attr"
        if self.groups[0].count > 1:
            return "counting"
        if self.background_explicit or self.background != "white":
            return "colors"
        return "single_object"


def validate(scene: Scene) -> None:
    if not 1 <= len(scene.groups) <= 2:
        raise InvalidInput(f"a scene has 1 or 2 groups of objects, got {len(scene.groups)}")
    for g in scene.groups:
        if g.colour not in COLOURS:
            raise InvalidInput(f"unknown colour {g.colour!r}", f"use one of {', '.join(COLOURS)}")
        if g.shape not in SHAPES:
            raise InvalidInput(f"unknown shape {g.shape!r}", f"use one of {', '.join(SHAPES)}")
        if not 1 <= g.count <= MAX_OBJECTS:
            raise InvalidInput(f"a count must be 1..{MAX_OBJECTS}, got {g.count}")
    if scene.n_objects > MAX_OBJECTS:
        raise InvalidInput(f"at most {MAX_OBJECTS} objects in a scene, got {scene.n_objects}")
    if scene.background not in BACKGROUNDS:
        raise InvalidInput(f"unknown background {scene.background!r}",
                           f"use one of {', '.join(BACKGROUNDS)}")
    if scene.relation is not None:
        if scene.relation not in RELATIONS:
            raise InvalidInput(f"unknown relation {scene.relation!r}")
        if len(scene.groups) != 2 or any(g.count != 1 for g in scene.groups):
            raise InvalidInput("a relation links exactly two single objects",
                               "write e.g. 'a red circle left of a blue square'")


# ----------------------------------------------------------------------------- parsing

def parse(text: str) -> Scene:
    """Caption in the grammar -> Scene. Raises InvalidInput naming the first word it can't read."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput("empty caption", "write e.g. 'two red circles'")
    words = text.lower().strip().rstrip(".").replace(",", " ").split()
    pos = 0

    def fail(msg: str):
        raise InvalidInput(f"cannot read {text!r}: {msg}",
                           "the demo world reads captions like 'a green triangle left of a "
                           "yellow square on a black background'")

    def group() -> Group:
        nonlocal pos
        if pos + 3 > len(words):
            fail("expected '<count> <colour> <shape>'")
        count_w, colour, shape = words[pos:pos + 3]
        if count_w not in WORD_TO_NUMBER:
            fail(f"expected a count (a, one, two, three, four), got {count_w!r}")
        if colour not in COLOURS:
            fail(f"unknown colour {colour!r} (known: {', '.join(COLOURS)})")
        if shape.endswith("s") and shape[:-1] in SHAPES:
            shape = shape[:-1]
        if shape not in SHAPES:
            fail(f"unknown shape {shape!r} (known: {', '.join(SHAPES)})")
        pos += 3
        return Group(WORD_TO_NUMBER[count_w], colour, shape)

    groups = [group()]
    relation = None
    if pos < len(words) and words[pos] == "and":
        pos += 1
        groups.append(group())
    else:
        rest = words[pos:]
        if rest[:4] in (["to", "the", "left", "of"], ["to", "the", "right", "of"]):
            relation = f"{rest[2]} of"
            pos += 4
        elif rest[:2] in (["left", "of"], ["right", "of"]):
            relation = f"{rest[0]} of"
            pos += 2
        elif rest[:1] in (["above"], ["below"]):
            relation = rest[0]
            pos += 1
        if relation:
            groups.append(group())
    background, explicit = "white", False
    if pos < len(words):
        rest = words[pos:]
        if len(rest) == 4 and rest[0] == "on" and rest[1] in ("a", "an") and rest[3] == "background":
            background, explicit = rest[2], True
            if background == "grey":
                background = "gray"
            if background not in BACKGROUNDS:
                fail(f"unknown background {background!r} (known: {', '.join(BACKGROUNDS)})")
        else:
            fail(f"unexpected words {' '.join(rest)!r}")
    try:
        return Scene(tuple(groups), relation, background, explicit)
    except InvalidInput as exc:
        fail(exc.message)
        raise  # unreachable


# ----------------------------------------------------------------------------- sampling

def _pick_two_groups(rng: random.Random, distinct_shapes: bool) -> tuple[Group, Group]:
    while True:
        a = Group(1, rng.choice(list(COLOURS)), rng.choice(SHAPES))
        b = Group(1, rng.choice(list(COLOURS)), rng.choice(SHAPES))
        if (a.colour, a.shape) == (b.colour, b.shape):
            continue
        if distinct_shapes and a.shape == b.shape:
            continue
        return a, b


def sample_scene(rng: random.Random, category: str | None = None) -> Scene:
    """A random scene. `category` picks a GenEval-like category; None gives the training mix."""
    if category is None:
        category = rng.choices(
            ["single_object", "colors", "counting", "color_attr", "position", "mixed"],
            weights=[15, 15, 20, 15, 25, 10])[0]
    bg, explicit = "white", False
    if category in ("colors",) or (category not in ("single_object",) and rng.random() < 0.5):
        bg = rng.choice(list(BACKGROUNDS))
        explicit = bg != "white" or rng.random() < 0.5
        if category == "colors":
            explicit = True
    colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
    if category in ("single_object", "colors"):
        return Scene((Group(1, colour, shape),), None, bg, explicit)
    if category == "counting":
        return Scene((Group(rng.randint(2, 4), colour, shape),), None, bg, explicit)
    if category in ("color_attr", "two_object"):
        a, b = _pick_two_groups(rng, distinct_shapes=category == "two_object" or rng.random() < 0.7)
        return Scene((a, b), None, bg, explicit)
    if category == "position":
        a, b = _pick_two_groups(rng, distinct_shapes=rng.random() < 0.7)
        return Scene((a, b), rng.choice(RELATIONS), bg, explicit)
    if category == "mixed":  # "two red circles and a blue square"
        a, b = _pick_two_groups(rng, distinct_shapes=False)
        ca = rng.randint(1, 3)
        cb = rng.randint(1, MAX_OBJECTS - ca)
        return Scene((Group(ca, a.colour, a.shape), Group(cb, b.colour, b.shape)), None, bg, explicit)
    raise InvalidInput(f"unknown category {category!r}", f"use one of {', '.join(CATEGORIES)}")


def perturb(scene: Scene, rng: random.Random) -> Scene:
    """A caption that is wrong in one way: colour, shape, count, relation, background, swap."""
    colours, shapes = list(COLOURS), list(SHAPES)
    for _ in range(50):
        groups = list(scene.groups)
        rel, bg, expl = scene.relation, scene.background, scene.background_explicit
        kind = rng.choice(["colour", "shape", "count", "relation", "background", "swap"])
        i = rng.randrange(len(groups))
        g = groups[i]
        if kind == "colour":
            groups[i] = Group(g.count, rng.choice([c for c in colours if c != g.colour]), g.shape)
        elif kind == "shape":
            groups[i] = Group(g.count, g.colour, rng.choice([s for s in shapes if s != g.shape]))
        elif kind == "count":
            if rel:
                continue
            others = sum(x.count for j, x in enumerate(groups) if j != i)
            choices = [c for c in range(1, MAX_OBJECTS - others + 1) if c != g.count]
            if not choices:
                continue
            groups[i] = Group(rng.choice(choices), g.colour, g.shape)
        elif kind == "relation":
            if not rel:
                continue
            if rng.random() < 0.5:  # the opposite (another axis might also hold)
                rel = {"left of": "right of", "right of": "left of",
                       "above": "below", "below": "above"}[rel]
            else:
                groups = groups[::-1]
        elif kind == "background":
            bg = rng.choice([b for b in BACKGROUNDS if b != bg])
            expl = True
        elif kind == "swap":
            if len(groups) < 2:
                continue
            a, b = groups
            if rng.random() < 0.5:
                if a.colour == b.colour:
                    continue
                groups = [Group(a.count, b.colour, a.shape), Group(b.count, a.colour, b.shape)]
            else:
                if a.shape == b.shape:
                    continue
                groups = [Group(a.count, a.colour, b.shape), Group(b.count, b.colour, a.shape)]
        try:
            new = Scene(tuple(groups), rel, bg, expl)
        except InvalidInput:
            continue
        if sorted(new.objects) == sorted(scene.objects) and new.background == scene.background \
                and (new.relation is None or (new.relation, new.groups) == (scene.relation, scene.groups)):
            continue  # says the same thing
        if new.caption() != scene.caption():
            return new
    return Scene((Group(1, "red", "circle"),), None,
                   "black" if scene.background != "black" else "white", True)


def distractors(scene: Scene, n: int, rng: random.Random) -> list[str]:
    """`n` distinct captions that are each wrong about `scene` in one way."""
    out: list[str] = []
    true = scene.caption()
    for _ in range(n * 20):
        c = perturb(scene, rng).caption()
        if c != true and c not in out:
            out.append(c)
        if len(out) == n:
            break
    while len(out) < n:  # tiny scenes can run out of one-step changes; add random captions
        c = sample_scene(rng).caption()
        if c != true and c not in out:
            out.append(c)
    return out


def prompt_set(category: str, n: int | None = None, seed: int = 0) -> list[str]:
    """A fixed list of prompts for one category (deterministic for a seed).

    single_object lists all 18 colour/shape pairs; the others sample `n` (default 24) distinct
    prompts. position and two_object use two different shapes, as GenEval uses two classes.
    """
    if category not in CATEGORIES:
        raise InvalidInput(f"unknown category {category!r}", f"use one of {', '.join(CATEGORIES)}")
    if category == "single_object":
        out = [Group(1, c, s).text() for c in COLOURS for s in SHAPES]
        return out if n is None else out[:n]
    n = 24 if n is None else n
    rng = random.Random(f"prompts-{category}-{seed}")
    seen: list[str] = []
    tries = 0
    while len(seen) < n and tries < 10000:
        tries += 1
        if category == "colors":
            scene = Scene((Group(1, rng.choice(list(COLOURS)), rng.choice(SHAPES)),), None,
                          rng.choice(list(BACKGROUNDS)), True)
        elif category == "counting":
            scene = Scene((Group(rng.randint(2, 4), rng.choice(list(COLOURS)), rng.choice(SHAPES)),))
        elif category in ("two_object", "color_attr"):
            a, b = _pick_two_groups(rng, distinct_shapes=True)
            scene = Scene((a, b))
        else:  # position
            a, b = _pick_two_groups(rng, distinct_shapes=True)
            scene = Scene((a, b), rng.choice(RELATIONS))
        cap = scene.caption()
        if cap not in seen:
            seen.append(cap)
    return seen


# ----------------------------------------------------------------------------- rendering

@dataclass
class Placed:
    colour: str
    shape: str
    cx: float
    cy: float
    size: int
    group: int


@dataclass
class Layout:
    scene: Scene
    objects: list[Placed] = field(default_factory=list)


def _size_range(n: int) -> tuple[int, int]:
    return {1: (14, 26), 2: (12, 20)}.get(n, (10, 16))


def _relation_ok(rel: str, a: Placed, b: Placed, margin: float = 8.0) -> bool:
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


def sample(rng: random.Random, category: str | None = None) -> tuple[Image.Image, str, Scene]:
    """One random training example: (image, caption, scene)."""
    scene = sample_scene(rng, category)
    img, _ = render(scene, rng)
    return img, scene.caption(), scene
