"""The demo world's caption grammar: its vocabulary, the Scene a caption describes, and the parser.

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
"""
from __future__ import annotations

from dataclasses import dataclass

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
