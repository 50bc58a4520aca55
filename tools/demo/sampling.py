"""Random demo scenes: the training mix, one-way-wrong captions, fixed prompt sets, and training examples."""
from __future__ import annotations

import random

from PIL import Image

from tools.demo.drawing import render
from tools.demo.grammar import (BACKGROUNDS, CATEGORIES, COLOURS, MAX_OBJECTS, RELATIONS, SHAPES, Group,
                                Scene)
from tools.errors import InvalidInput


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


COMPOSITIONAL = ("relation_background", "relation_same_shape", "relation_same_colour", "two_counted_groups")


def compositional_prompt_set(category: str, n: int = 24, seed: int = 0) -> list[str]:
    """`n` distinct prompts of one harder compositional category, sampled from the grammar:

    - relation_background: a relation between two objects on a named background;
    - relation_same_shape: "above" / "below" between two objects of one shape (colours differ);
    - relation_same_colour: a relation between two objects of one colour (shapes differ);
    - two_counted_groups: two groups of two ("two blue circles and two orange triangles").
    """
    if category not in COMPOSITIONAL:
        raise InvalidInput(f"unknown category {category!r}", f"use one of {', '.join(COMPOSITIONAL)}")
    rng = random.Random(f"compositional-{category}-{seed}")
    colours, seen = list(COLOURS), []
    for _ in range(10000):
        if len(seen) >= n:
            break
        if category == "relation_background":
            a, b = _pick_two_groups(rng, distinct_shapes=False)
            scene = Scene((a, b), rng.choice(RELATIONS), rng.choice(list(BACKGROUNDS)), True)
        elif category == "relation_same_shape":
            shape = rng.choice(SHAPES)
            ca, cb = rng.sample(colours, 2)
            scene = Scene((Group(1, ca, shape), Group(1, cb, shape)), rng.choice(("above", "below")))
        elif category == "relation_same_colour":
            colour = rng.choice(colours)
            sa, sb = rng.sample(SHAPES, 2)
            scene = Scene((Group(1, colour, sa), Group(1, colour, sb)), rng.choice(RELATIONS))
        else:
            a, b = _pick_two_groups(rng, distinct_shapes=False)
            scene = Scene((Group(2, a.colour, a.shape), Group(2, b.colour, b.shape)))
        cap = scene.caption()
        if cap not in seen:
            seen.append(cap)
    return seen


def sample(rng: random.Random, category: str | None = None) -> tuple[Image.Image, str, Scene]:
    """One random training example: (image, caption, scene)."""
    scene = sample_scene(rng, category)
    img, _ = render(scene, rng)
    return img, scene.caption(), scene
