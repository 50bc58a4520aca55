"""Box layouts from requirements (rules, as LMD plans them with an LLM), and the local-edit plan
that repairs an image from its verdicts. Both return a `tools.compose.ComposePlan`.

- `plan_layout`: every object instance gets a slot: a relation puts its two objects on either
  side of the image (left/right or top/bottom); counts fill a row, a triangle or a 2x2 grid.
  Each instance is generated alone ("a red circle on a black background") and moved there.
- `plan_edit`: keep the objects that pass, erase the extra and wrong ones, move the two objects
  of a failed relation into place, and add each missing instance in the emptiest free slot.
"""
from __future__ import annotations

import random

from tools.compose import LAYOUT_SIDE, ComposePlan, Placement
from tools.requirements import Checklist, Requirement, RequirementVerdict


def _jitter(rng: random.Random, side: float) -> float:
    return rng.uniform(-0.04, 0.04) * side


def slots(n: int, width: int, height: int, rng: random.Random) -> list[tuple[float, float]]:
    """n well-separated centres (n <= 4 are laid by hand; more fill a grid)."""
    W, H = width, height
    if n == 1:
        base = [(0.5, 0.5)]
    elif n == 2:
        base = [(0.27, 0.5), (0.73, 0.5)] if rng.random() < 0.5 else [(0.5, 0.27), (0.5, 0.73)]
    elif n == 3:
        base = rng.choice([[(0.25, 0.28), (0.75, 0.28), (0.5, 0.74)], [(0.5, 0.26), (0.25, 0.72), (0.75, 0.72)]])
    elif n == 4:
        base = [(0.27, 0.27), (0.73, 0.27), (0.27, 0.73), (0.73, 0.73)]
    else:
        k = 1
        while k * k < n:
            k += 1
        base = [((i % k + 0.5) / k, (i // k + 0.5) / k) for i in range(n)]
    return [(x * W + _jitter(rng, W), y * H + _jitter(rng, H)) for x, y in base]


def relation_slots(relation: str, width: int, height: int, rng: random.Random) -> tuple[tuple, tuple]:
    W, H = width, height
    c = 0.5 + rng.uniform(-0.12, 0.12)
    near, far = 0.27 + rng.uniform(-0.03, 0.03), 0.73 + rng.uniform(-0.03, 0.03)
    if relation in ("left of", "next to"):
        return (near * W, c * H), (far * W, c * H)
    if relation == "right of":
        return (far * W, c * H), (near * W, c * H)
    if relation == "above":
        return (c * W, near * H), (c * W, far * H)
    return (c * W, far * H), (c * W, near * H)  # below


def object_prompt(req: Requirement, checklist: Checklist) -> str:
    phrase = req.phrase
    text = ("an " if phrase[:1] in "aeiou" else "a ") + phrase
    bg = next((r for r in checklist.requirements if r.kind == "background"), None)
    return text + (f" on a {bg.value} background" if bg else "")


def _instances(checklist: Checklist) -> list[Requirement]:
    out = []
    for r in checklist.objects():
        out += [r] * (r.count if r.count else 1)
    return out


def plan_layout(checklist: Checklist, *, width: int, height: int, seed: int, prompt: str, negative: str = "",
                steps: int = 20, cfg: float = 5.0, finish_strength: float = 0.3,
                layout_control: float | None = None) -> ComposePlan:
    """A box per object instance. With `layout_control` (the layout ControlNet's scale) the boxes
    are drawn by the ControlNet in one generation, each `LAYOUT_SIDE` of the image (less where
    neighbours are close); without, each object is generated alone and moved into its box."""
    rng = random.Random(seed)
    inst = _instances(checklist)
    rel = next((r for r in checklist.requirements if r.kind == "relation"), None)
    centres = slots(len(inst), width, height, rng)
    if rel is not None and len(inst) == 2:
        a, b = relation_slots(rel.relation, width, height, rng)
        centres = [a, b] if inst[0].id == rel.subject else [b, a]
    room = _room(centres, width, height)
    if layout_control is not None:
        side = min(room, LAYOUT_SIDE * min(width, height))
        placements = [Placement(label=r.phrase, target=c, max_size=round(side, 1)) for r, c in zip(inst, centres)]
    else:
        placements = [Placement(label=r.phrase, target=c, prompt=object_prompt(r, checklist),
                                seed=seed + 101 * (i + 1), max_size=room) for i, (r, c) in enumerate(zip(inst, centres))]
    return ComposePlan(width=width, height=height, placements=placements, finish_prompt=prompt,
                       negative_prompt=negative, steps=steps, cfg=cfg, seed=seed, finish_strength=finish_strength,
                       layout_control=layout_control)


def _room(centres, width: int, height: int) -> float:
    """The largest object side that keeps a gap between neighbouring slots."""
    if len(centres) < 2:
        return 0.6 * min(width, height)
    d = min(((a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2) ** 0.5 for i, a in enumerate(centres) for b in centres[i + 1:])
    return _side_for(d, width, height)


def _side_for(distance: float, width: int, height: int) -> float:
    """The largest object side for a slot `distance` pixels from its nearest neighbour."""
    return max(4.0, 0.8 * distance - 0.06 * min(width, height))


def _box(j: dict) -> tuple[float, float, float, float]:
    return tuple(float(v) for v in j["box"])


def _centre(b) -> tuple[float, float]:
    return (b[0] + b[2]) / 2, (b[1] + b[3]) / 2


def plan_edit(checklist: Checklist, verdicts: list[RequirementVerdict], *, width: int, height: int, seed: int,
              prompt: str, negative: str = "", steps: int = 20, cfg: float = 5.0,
              finish_strength: float = 0.3) -> ComposePlan | None:
    """A local repair of the image the verdicts were read from; None when nothing can be kept.
    A wrong object is erased and its replacement drawn where it was (a recolour stays in place);
    when only the background fails, it is recoloured around the objects (tools.compose.swap_background)."""
    rng = random.Random(seed)
    by_id = {v.id: v for v in verdicts}
    keep: dict[str, list[tuple]] = {}
    erase: list[tuple] = []
    freed: dict[str, list[tuple]] = {}   # noun -> centres of erased boxes, where a replacement goes
    for r in checklist.objects():
        v = by_id.get(r.id)
        if v is None or v.passed is None:
            return None
        found = v.evidence.get("found", [])
        good = [_box(b) for b in found if b.get("match")]
        bad = [_box(b) for b in found if not b.get("match")]
        n = r.count if r.count else max(1, len(good))
        keep[r.id] = good[:n]
        erase += good[n:] + bad
        freed.setdefault(r.noun, []).extend(_centre(b) for b in bad)
    failed = {v.kind for v in verdicts if v.passed is False} - {"holistic"}
    bg = next((r for r in checklist.requirements if r.kind == "background"), None)
    if failed == {"background"} and bg is not None:  # the objects hold: recolour the background around them
        return ComposePlan(width=width, height=height, placements=[], finish_prompt=prompt, negative_prompt=negative,
                           steps=steps, cfg=cfg, seed=seed, finish_strength=finish_strength, use_base=True,
                           background=bg.value)
    only = by_id.get("only")
    if only is not None and only.passed is False:
        kept = [b for bs in keep.values() for b in bs]
        erase += [_box(b) for b in only.evidence.get("extra", []) if _box(b) not in kept]
    placements: list[Placement] = []
    rel = next((r for r in checklist.requirements if r.kind == "relation"), None)
    moved: set[str] = set()
    if rel is not None and by_id.get(rel.id) is not None and by_id[rel.id].passed is False:
        a, b = relation_slots(rel.relation, width, height, rng)
        for rid, target in ((rel.subject, a), (rel.object, b)):
            req = checklist.get(rid)
            if keep.get(rid):
                placements.append(Placement(label=req.phrase, target=target, source_box=keep[rid][0]))
            else:
                placements.append(Placement(label=req.phrase, target=target, prompt=object_prompt(req, checklist),
                                            seed=seed + 101 * (len(placements) + 1)))
            moved.add(rid)
    occupied = [_centre(b) for rid, bs in keep.items() if rid not in moved for b in bs] + \
               [p.target for p in placements]
    grid = [((i + 0.5) / 3 * width, (j + 0.5) / 3 * height) for i in range(3) for j in range(3)]
    for r in checklist.objects():
        if r.id in moved:
            continue
        missing = (r.count or 1) - len(keep.get(r.id, []))
        for _ in range(max(0, missing)):
            spots = [c for c in freed.get(r.noun, []) if c not in occupied]
            free = spots[0] if spots else max(
                grid, key=lambda g: min(((g[0] - o[0]) ** 2 + (g[1] - o[1]) ** 2 for o in occupied),
                                        default=1e9) + rng.random())
            nearest = min(((free[0] - o[0]) ** 2 + (free[1] - o[1]) ** 2) ** 0.5 for o in occupied) \
                if occupied else 0.6 * min(width, height)
            # not shrunk to the erased box's size: a shrink in latent space shifts the colour (orange to yellow)
            side = _side_for(nearest, width, height)
            placements.append(Placement(label=r.phrase, target=free, prompt=object_prompt(r, checklist),
                                        seed=seed + 101 * (len(placements) + 1), max_size=round(side, 1)))
            occupied.append(free)
    if not placements and not erase:
        return None
    return ComposePlan(width=width, height=height, placements=placements, finish_prompt=prompt,
                       negative_prompt=negative, steps=steps, cfg=cfg, seed=seed, finish_strength=finish_strength,
                       erase=erase, use_base=True)


class RunPlanner:
    """The planner a run hands the loop: its checklist, size and prompt bound once."""

    def __init__(self, checklist: Checklist, *, width: int, height: int, prompt: str, negative: str = "",
                 steps: int = 20, cfg: float = 5.0, finish_strength: float = 0.3,
                 layout_control: float | None = None):
        self.checklist = checklist
        self.layout_control = layout_control
        self.kw = dict(width=width, height=height, prompt=prompt, negative=negative, steps=steps, cfg=cfg,
                       finish_strength=finish_strength)

    def layout(self, seed: int) -> ComposePlan:
        return plan_layout(self.checklist, seed=seed, layout_control=self.layout_control, **self.kw)

    def touch_up(self, seed: int) -> ComposePlan:
        """The best image kept whole and finished again with a fresh seed (its objects hold, its
        overall score does not)."""
        kw = self.kw
        return ComposePlan(width=kw["width"], height=kw["height"], placements=[], finish_prompt=kw["prompt"],
                           negative_prompt=kw["negative"], steps=kw["steps"], cfg=kw["cfg"], seed=seed,
                           finish_strength=kw["finish_strength"], use_base=True)

    def edit(self, best, seed: int) -> ComposePlan | None:
        return plan_edit(self.checklist, best.checks, seed=seed, **self.kw)
