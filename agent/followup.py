"""Follow-ups: a message after a picture read as a change to its checklist (offline, by rules).

`read_followup(message, checklist)` gives a `FollowUp`: typed `Change`s (add, remove, recolour,
recount, background, relate, words, upscale, undo), or a new idea ("new: ...", "now a yellow
triangle on black", or a whole new scene in the grammar), or a question when the message is
neither. `apply_changes(checklist, changes)` gives the edited checklist and its diff as lines
("+ a blue square", "red -> orange: the circle", "background: white -> black").

The words read are the requirements grammar's (colours, shapes, counts, relations, backgrounds,
"it" / "them" / "the circle" for what is there); the changed checklist is what the loop then
repairs the current picture toward (agent.critique with `start`); agent.followup_run runs it, and
reads a message with an LLM. Plain functions, no models.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace

from agent.checklist_edits import edit_checklist
from agent.errors import InvalidInput
from agent.requirements import NUMBER_TEXT, caption_of, parse_checklist
from tools.requirements import Checklist, Requirement

COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white", "gray")
BACKGROUNDS = ("white", "black", "gray")
SHAPES = ("circle", "square", "triangle")
NUMBERS = {"one": 1, "a": 1, "an": 1, "single": 1, "two": 2, "three": 3, "four": 4, "1": 1, "2": 2, "3": 3, "4": 4}
RELATION_WORDS = (("to the left of", "left of"), ("to the right of", "right of"), ("left of", "left of"),
                  ("right of", "right of"), ("on top of", "above"), ("above", "above"), ("over", "above"),
                  ("below", "below"), ("under", "below"), ("underneath", "below"), ("beneath", "below"))
STYLE_WORDS = ("light", "lighting", "warm", "warmer", "cool", "cooler", "mood", "moody", "style", "cinematic",
               "dramatic", "vintage", "watercolor", "watercolour", "realistic", "photo", "detail", "detailed",
               "sharper", "softer", "brighter", "darker", "contrast", "painting", "sunset", "night", "cozy")
_ADD = r"(?:add|also|and|plus|with|include|put in|draw|give it|now add)"
_REMOVE = r"(?:remove|delete|take away|take out|get rid of|erase|lose|drop|no more|without)"
_RECOLOUR = r"(?:make|turn|colou?r|paint|change|recolou?r|switch)"


@dataclass(frozen=True)
class Change:
    """One typed edit of the current checklist. `target`: the object requirement's id (remove,
    recolour, recount; relate: the subject); `other`: relate's object id; `value`: the new colour,
    count, background, relation, the added text (add) or the words (words)."""

    kind: str
    target: str = ""
    other: str = ""
    value: str = ""

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v}


@dataclass
class FollowUp:
    changes: list[Change] = field(default_factory=list)
    new_idea: str | None = None
    question: str | None = None      # the message is neither: ask this
    note: str = ""                   # the likely reading, and how to get the other


def _words(text: str) -> str:
    text = text.lower().strip().rstrip(".!?").replace(",", " ").replace("grey", "gray").replace("colour", "color")
    return re.sub(r"\s+", " ", text)


def _is_caption(text: str) -> bool:
    from tools.demo import world
    from tools.errors import ImagentError

    try:
        world.parse(text)
    except ImagentError:
        return False
    return True


def _mentioned(phrase: str, checklist: Checklist) -> list[Requirement]:
    """The objects a phrase points at ("the circle", "the red square", "it", "them", "the squares")."""
    objs = checklist.objects()
    words = phrase.split()
    shapes = [s for s in SHAPES if s in words or s + "s" in words]
    colours = [c for c in COLOURS if c in words]
    if not shapes and not colours:
        if any(w in words for w in ("it", "them", "they", "everything", "all", "both", "these", "those")):
            return objs if len(objs) == 1 or any(w in words for w in ("them", "they", "all", "both", "everything",
                                                                       "these", "those")) else []
        return []
    return [o for o in objs if (not shapes or o.noun in shapes) and (not colours or any(c in o.attributes
                                                                                          for c in colours))]


def _ambiguous(what: str, objs: list[Requirement]) -> FollowUp:
    names = " or ".join(f"'{o.text}'" for o in objs)
    return FollowUp(question=f"Which one should I {what}: {names}? Say e.g. '{what} the {objs[0].noun}'.")


def read_followup(message: str, checklist: Checklist) -> FollowUp:
    """The message as a change to `checklist` (see the module docstring)."""
    raw = (message or "").strip()
    text = _words(raw)
    if not text:
        return FollowUp(question="Say what to change, e.g. 'add a blue square'.")
    m = re.match(r"^(?:new|new idea|instead)\s*:\s*(.+)$", raw.strip(), re.I)
    if m:
        return FollowUp(new_idea=m.group(1).strip())
    if text in {"undo", "go back", "revert", "undo that", "back", "take it back"}:
        return FollowUp([Change("undo")])
    if re.search(r"\b(bigger|larger|upscale|higher resolution|more pixels|enlarge)\b", text) and \
            not re.search(r"\b(circle|square|triangle)s?\b", text):
        return FollowUp([Change("upscale")])
    m = re.match(r"^(?:now|next|then)\s+(.+)$", text)
    if m and _is_caption(_scene_text(m.group(1))):
        return FollowUp(new_idea=_scene_text(m.group(1)))
    if _is_caption(text):  # a whole scene of its own: a new picture (the likely reading), and the other
        return FollowUp(new_idea=raw, note=f"Read as a new picture. To add it to this one, say 'add {text}'.")
    for reader in (_background, _remove, _relate, _recount, _recolour, _add):
        out = reader(text, checklist)
        if out is not None:
            return out
    if any(w in text.split() for w in STYLE_WORDS) and text.split()[0] not in NUMBERS:  # "a cat at night": a scene
        return FollowUp([Change("words", value=raw)])
    if not _points_at_picture(text, checklist):  # "a cat coding at night": another picture
        return FollowUp(new_idea=raw)
    return FollowUp(question=(f"I could not read '{raw}' as a change to this picture or as a new one. Say e.g. "
                              "'add a blue square', 'make it orange', 'remove the circle', 'make it three', "
                              "'on a black background', 'put the circle left of the square', 'undo', or "
                              "'new: a yellow triangle'."))


def _points_at_picture(text: str, checklist: Checklist) -> bool:
    """Whether a message speaks of the current picture: 'it', 'them', a verb of change, or an
    object of its checklist by name."""
    words = set(text.split())
    if words & {"it", "them", "this", "that", "these", "those", "make", "change", "turn", "add", "remove",
                "move", "put", "delete", "swap", "more", "less", "fewer", "instead", "again"}:
        return True
    return any(o.noun in words or o.noun + "s" in words for o in checklist.objects())


def _scene_text(text: str) -> str:
    """'a yellow triangle on black' -> 'a yellow triangle on a black background'."""
    return re.sub(r"\bon (?:a |an )?(white|black|gray)(?: background)?$", r"on a \1 background", text)


def _background(text: str, checklist: Checklist) -> FollowUp | None:
    m = re.search(r"\b(white|black|gray)\b(?: (?:back)?ground)\b", text) or \
        re.search(r"\bbackground\b.*\b(white|black|gray)\b", text) or \
        re.match(r"^(?:put it |put them |place it )?on (?:a |an )?(white|black|gray)$", text)
    if not m:
        return None
    return FollowUp([Change("background", value=m.group(1))])


def _remove(text: str, checklist: Checklist) -> FollowUp | None:
    m = re.match(rf"^(?:please )?{_REMOVE}\s+(?:the |that |this |all the |all )?(.+)$", text)
    if not m:
        return None
    objs = _mentioned(m.group(1), checklist)
    if not objs:
        return FollowUp(question=f"There is no '{m.group(1)}' in the picture to remove; it has "
                                 f"{', '.join(o.text for o in checklist.objects()) or 'nothing'}.")
    if len(objs) > 1 and not re.search(r"\b(all|both|them|everything)\b", m.group(1)):
        return _ambiguous("remove", objs)
    return FollowUp([Change("remove", target=o.id) for o in objs])


def _relate(text: str, checklist: Checklist) -> FollowUp | None:
    for words, relation in RELATION_WORDS:
        m = re.match(rf"^(?:put|move|place|have|set|make|keep|i want)?\s*(?:the )?(.+?) (?:is |be |should be |goes )?"
                     rf"{words} (?:the )?(.+)$", text)
        if m:
            a, b = _mentioned(m.group(1), checklist), _mentioned(m.group(2), checklist)
            if len(a) == 1 and len(b) == 1 and a[0].id != b[0].id:
                return FollowUp([Change("relate", target=a[0].id, other=b[0].id, value=relation)])
            if text.split()[0] in ("add", "also", "and", "plus"):
                return None  # "add a blue square left of the circle": an addition with its relation
            return FollowUp(question=f"Which two objects should be {relation}? The picture has "
                                     f"{', '.join(o.text for o in checklist.objects())}; say e.g. "
                                     f"'put the {checklist.objects()[0].noun} {relation} the ...'.") \
                if checklist.objects() else None
    return None


def _recount(text: str, checklist: Checklist) -> FollowUp | None:
    objs = checklist.objects()
    text = re.sub(r"^(?:add|and|also|plus|with|draw|put in)\s+(?=(?:one|two|three|a|an)?\s?(?:more|another)\b)", "",
                  text)
    m = re.match(r"^(?:add )?(one|two|three|a|an)? ?(?:more|another)(?: one)?(?: (.+))?$", text) or \
        re.match(r"^(?:add )?another(?: (.+))?$", text)
    if m:
        groups = m.groups()
        n = NUMBERS.get(groups[0] or "one", 1) if len(groups) == 2 else 1
        phrase = (groups[-1] or "") if groups else ""
        target = _mentioned(phrase, checklist) if phrase else (objs if len(objs) == 1 else [])
        if phrase and not target:
            return None   # "more cinematic": not a count
        if len(target) != 1:
            return _ambiguous("add another of", objs) if objs else None
        return FollowUp([Change("recount", target=target[0].id, value=str((target[0].count or 1) + n))])
    m = re.match(r"^(?:make (?:it|them|that|those|the (.+?)) |(?:i want |there should be |only |just )?)"
                 r"(one|two|three|four|1|2|3|4)(?: of them)?(?: (circles?|squares?|triangles?|.+?s))?$", text)
    if not m:
        return None
    who, number, noun = m.groups()
    if not who and not noun and not text.startswith("make") and "of them" not in text and \
            not text.startswith(("only", "just")):
        return None
    phrase = " ".join(x for x in (who, noun) if x)
    target = _mentioned(phrase, checklist) if phrase else (objs if len(objs) == 1 else [])
    if noun and not target:
        return None  # "two blue squares": a scene, not a count of what is there
    if len(target) != 1:
        return _ambiguous("count", objs) if objs else None
    return FollowUp([Change("recount", target=target[0].id, value=str(NUMBERS[number]))])


def _recolour(text: str, checklist: Checklist) -> FollowUp | None:
    m = re.match(rf"^(?:{_RECOLOUR}|can you make|could you make|please make)\s+(.*?)\s*(?:to |into |in |be )?"
                 rf"({'|'.join(COLOURS)})(?: instead)?$", text) or \
        re.match(rf"^(?:the )?(.+?) (?:should be|must be|in|is|are|needs to be) ({'|'.join(COLOURS)})$", text)
    if not m:
        return None
    phrase, colour = m.group(1), m.group(2)
    phrase = re.sub(r"\b(?:the )?colou?r of\b|\bcolor\b|\bthe\b|\ball\b", " ", phrase).strip() or "it"
    objs = checklist.objects()
    target = _mentioned(phrase, checklist)
    if not target and len(objs) == 1:
        target = objs
    if not target:
        return _ambiguous("recolour", objs) if objs else None
    if len(target) > 1 and not re.search(r"\b(them|they|all|both|everything|these|those)\b|s\b", phrase):
        return _ambiguous("recolour", target)
    return FollowUp([Change("recolour", target=o.id, value=colour) for o in target])


def _add(text: str, checklist: Checklist) -> FollowUp | None:
    m = re.match(r"^(?:please |can you |could you )?(?:put|place|draw|add) (.+?) in(?: it| there| the picture)?"
                 r"(?: as well| too)?$", text) or \
        re.match(r"^((?:a|an|one|two|three) .+?) (?:as well|too)$", text) or \
        re.match(rf"^(?:please |can you |could you )?{_ADD}\s+(.+)$", text)
    if not m:
        return None
    what = re.sub(r"\bthe\b", "a", m.group(1))
    what = re.sub(r"\s+(?:in|into) (?:it|there|the picture)$", "", what)
    what = re.sub(r"^(?:also |too )|(?: too| as well| also)$", "", what).strip()
    try:
        edited, _ = edit_checklist(checklist, require=[what])
    except InvalidInput:
        return None
    if len(edited.requirements) == len(checklist.requirements):
        return FollowUp(question=f"'{what}' is already in the picture. To have another, say 'one more "
                                 f"{what.split()[-1]}'.")
    return FollowUp([Change("add", value=what)])


# -- applying --------------------------------------------------------------------------------------------
def _object_text(noun: str, count: int | None, attrs: tuple[str, ...]) -> str:
    phrase = " ".join((*attrs, noun))
    if count is None:
        return f"some {phrase}s"
    if count == 1:
        return ("an " if phrase[0] in "aeiou" else "a ") + phrase
    return f"{NUMBER_TEXT.get(count, str(count))} {phrase}s"


def apply_changes(checklist: Checklist, changes: list[Change]) -> tuple[Checklist, list[str]]:
    """The checklist after `changes` (undo, upscale and words change nothing here), and its diff."""
    reqs, diff = list(checklist.requirements), []

    def get(rid):
        return next((r for r in reqs if r.id == rid), None)

    def put(new: Requirement):
        reqs[:] = [new if r.id == new.id else r for r in reqs]

    for ch in changes:
        if ch.kind == "add":
            before = {r.id for r in reqs}
            edited, _ = edit_checklist(Checklist(reqs, checklist.source), require=[ch.value])
            reqs = list(edited.requirements)
            diff += [f"+ {r.text}" for r in reqs if r.id not in before]
        elif ch.kind == "remove":
            gone = get(ch.target)
            rels = [r for r in reqs if r.kind == "relation" and ch.target in (r.subject, r.object)]
            reqs = [r for r in reqs if r.id != ch.target and r not in rels]
            diff += [f"- {gone.text}"] + [f"- {r.text}" for r in rels]
        elif ch.kind == "recolour":
            o = get(ch.target)
            old = next((a for a in o.attributes if a in COLOURS), None)
            attrs = tuple(a for a in o.attributes if a not in COLOURS) + (ch.value,)
            put(replace(o, attributes=attrs, text=_object_text(o.noun, o.count, attrs)))
            diff.append(f"{old or 'any colour'} -> {ch.value}: the {o.noun}{'s' if (o.count or 1) > 1 else ''}")
        elif ch.kind == "recount":
            o, n = get(ch.target), int(ch.value)
            put(replace(o, count=n, text=_object_text(o.noun, n, o.attributes)))
            diff.append(f"count {o.count} -> {n}: {o.phrase}s")
            if n > 1:
                rels = [r for r in reqs if r.kind == "relation" and ch.target in (r.subject, r.object)]
                reqs = [r for r in reqs if r not in rels]
                diff += [f"- {r.text} (a relation is between single objects)" for r in rels]
        elif ch.kind == "background":
            bg = get("bg")
            if bg is not None and bg.value == ch.value:
                continue
            new = Requirement(id="bg", kind="background", text=f"on a {ch.value} background", value=ch.value)
            if bg is None:
                tail = next((i for i, r in enumerate(reqs) if r.kind in ("exclusive", "holistic")), len(reqs))
                reqs.insert(tail, new)
            else:
                put(new)
            diff.append(f"background: {bg.value} -> {ch.value}" if bg else f"background: {ch.value}")
        elif ch.kind == "relate":
            old = [r for r in reqs if r.kind == "relation"]
            reqs = [r for r in reqs if r.kind != "relation"]
            a, b = get(ch.target), get(ch.other)
            rel = Requirement(id="r1", kind="relation", text=f"{a.text} {ch.value} {b.text}", relation=ch.value,
                              subject=a.id, object=b.id)
            last = max(i for i, r in enumerate(reqs) if r.kind == "object")
            reqs.insert(last + 1, rel)   # after every object: a relation names objects listed before it
            diff += [f"- {r.text}" for r in old if r.text != rel.text] + \
                    ([f"+ {rel.text}"] if rel.text not in {r.text for r in old} else [])
    reqs = _retext(reqs)
    source = checklist.source if checklist.source.endswith("+edited") else f"{checklist.source}+edited"
    out = Checklist(reqs, source)
    caption = caption_of(out)
    if caption:
        out = Checklist([replace(r, text=caption) if r.kind == "holistic" else r for r in reqs], source)
    return out, diff


def _retext(reqs: list[Requirement]) -> list[Requirement]:
    """Relations named after their objects' current texts."""
    by_id = {r.id: r for r in reqs}
    return [replace(r, text=f"{by_id[r.subject].text} {r.relation} {by_id[r.object].text}")
            if r.kind == "relation" and r.subject in by_id and r.object in by_id else r for r in reqs]


def checklist_of_record(record: dict, idea: str | None) -> Checklist | None:
    """The checklist a picture was checked against (its run's record), or the idea's own."""
    loop = (record or {}).get("loop") or {}
    given = loop.get("checklist") or (record or {}).get("checklist")
    if given:
        return Checklist.from_json(given)
    return parse_checklist(idea) if idea else None


# -- typed edits given as data (other agents, an LLM) ------------------------------------------------
EDIT_KINDS = ("add", "remove", "recolour", "recount", "background", "relate")


def typed_changes(items, checklist: Checklist) -> list[Change]:
    """Typed edits given as data ([{"kind": "recolour", "target": "o1", "value": "orange"}, ...]),
    checked against the checklist they edit; InvalidInput says what is wrong."""
    out = []
    ids = [o.id for o in checklist.objects()]
    for item in items:
        d = item.to_json() if isinstance(item, Change) else dict(item)
        kind = d.get("kind")
        if kind not in EDIT_KINDS:
            raise InvalidInput(f"Unknown change kind {kind!r}.", f"Use one of {', '.join(EDIT_KINDS)}.",
                               param="changes")
        for key in ("target", "other"):
            if d.get(key) and d[key] not in ids:
                raise InvalidInput(f"The change names {d[key]!r}, which is not an object of the picture's checklist.",
                                   f"Its objects are {', '.join(ids) or 'none'}.", param="changes")
        if kind in ("remove", "recolour", "recount") and not d.get("target") or \
                kind == "relate" and not (d.get("target") and d.get("other") and d.get("value")):
            raise InvalidInput(f"A {kind} change needs {'target, other and value' if kind == 'relate' else 'a target'}.",
                               param="changes")
        if kind == "recount" and not str(d.get("value", "")).isdigit():
            raise InvalidInput("A recount change needs a whole number as its value.", param="changes")
        out.append(Change(kind, str(d.get("target", "")), str(d.get("other", "")), str(d.get("value", ""))))
    return out
