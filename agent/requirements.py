"""Prompt -> checklist of requirements (tools.requirements), without or with an LLM.

- The demo grammar is read exactly (`tools.demo.world.parse`): every group, its count and
  colour, the relation, the background, and "nothing else" (the demo world is closed).
- Other English is read by rules good enough for the GenEval and T2I-CompBench styles
  ("a photo of two clocks", "a purple wine glass and a black apple", "a dog right of a teddy
  bear", "The black chair is on the right of the wooden table."): noun phrases with counts and
  attributes, one spatial relation, an "on a X background" phrase. `bench/requirements_bench.py`
  reports its coverage on those sets.
- With an LLM, `llm_checklist` asks for the same structure (structured output, validated) and
  falls back to the rules on any failure, with a warning.
- The user corrects a checklist with `edit_checklist` (--require TEXT, --drop ID at every front
  door), or gives one whole (`checklist_from` checks it).
"""
from __future__ import annotations

import re
from dataclasses import replace

from tools.errors import InvalidInput
from tools.limits import MAX_DROP, MAX_REQUIRE, MAX_REQUIREMENTS, REQUIRE_CHARS
from tools.requirements import KINDS, Checklist, Requirement

NUMBER_WORDS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
                "seven": 7, "eight": 8, "nine": 9, "ten": 10, "single": 1, "pair of": 2}
NUMBER_TEXT = {v: k for k, v in NUMBER_WORDS.items() if k not in ("a", "an", "single", "pair of")}
DETERMINERS = {"the", "some", "this", "that", "these", "those", "its", "his", "her", "their", "my"}
PREFIXES = ("a photo of", "an image of", "a picture of", "a painting of", "an illustration of",
            "a drawing of", "a render of", "a rendering of", "a photograph of", "a close-up of",
            "a sketch of", "a 3d render of")
# canonical relation <- phrases (longest first when matching)
RELATION_PHRASES = {
    "left of": ["on the left side of", "on the left of", "to the left of", "left of"],
    "right of": ["on the right side of", "on the right of", "to the right of", "right of"],
    "above": ["on the top of", "on top of", "above", "over"],
    "below": ["on the bottom of", "at the bottom of", "below", "under", "beneath", "underneath"],
    "next to": ["on the side of", "on side of", "next to", "beside", "near"],
}
_REL = sorted(((p, c) for c, ps in RELATION_PHRASES.items() for p in ps), key=lambda x: -len(x[0]))
# words that end a noun phrase: verbs, auxiliaries, prepositions
_STOP = {"is", "are", "was", "were", "be", "being", "been", "with", "in", "at", "on", "of", "by", "for",
         "from", "into", "onto", "while", "who", "that", "which", "and", "to", "as", "inside", "behind",
         "hidden", "sits", "sat", "lay", "lies", "hung", "stood", "stands", "rests", "floated", "flowed",
         "mounted", "parked", "placed", "holding", "wearing"}
_FILLER = {"photo", "image", "picture"}
MULTIWORD_NOUNS = (
    "traffic light", "fire hydrant", "stop sign", "parking meter", "sports ball", "baseball bat",
    "baseball glove", "tennis racket", "wine glass", "hot dog", "potted plant", "dining table",
    "computer mouse", "tv remote", "computer keyboard", "cell phone", "teddy bear", "hair drier",
    "water bottle", "coat rack", "picture frame", "ice cube", "ice bucket", "warning sign", "desk lamp",
    "jewelry box", "coffee cup", "trophy base", "bread basket",
)
_IRREGULAR = {"people": "person", "men": "man", "women": "woman", "children": "child", "mice": "mouse",
              "geese": "goose", "teeth": "tooth", "feet": "foot", "knives": "knife", "leaves": "leaf",
              "sheep": "sheep", "fish": "fish", "skis": "skis", "scissors": "scissors", "glasses": "glasses",
              "dice": "die", "buses": "bus", "gases": "gas", "lenses": "lens", "wolves": "wolf", "shelves": "shelf", "loaves": "loaf"}
COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white",
           "gray", "grey")


def singular(word: str) -> tuple[str, bool]:
    """(singular form, was plural) by simple English rules."""
    w = word.lower()
    if w in _IRREGULAR:
        return _IRREGULAR[w], _IRREGULAR[w] != w
    if len(w) > 4 and w.endswith("ies"):
        return w[:-3] + "y", True
    if len(w) > 3 and (re.search(r"(ches|shes|sses|xes|zes|oes)$", w)) and w not in {"shoes", "toes", "canoes"}:
        return w[:-2], True
    if len(w) > 2 and w.endswith("s") and not w.endswith(("ss", "us", "is")) or w.endswith("lis"):
        return w[:-1], True
    return w, False


def _clean(text: str) -> str:
    t = " ".join(text.lower().replace(",", " , ").replace(";", " ").split()).strip(" .!")
    for p in PREFIXES:
        if t.startswith(p + " "):
            t = t[len(p) + 1:]
            break
    return t


def noun_phrase(words: list[str]) -> tuple[str, int | None, tuple[str, ...]] | None:
    """['two', 'red', 'circles'] -> ('circle', 2, ('red',)); None when there is no noun."""
    words = [w for w in words if w not in DETERMINERS and w != ","]
    count: int | None = None
    if len(words) >= 2 and " ".join(words[:2]) == "pair of":
        count, words = 2, words[2:]
    elif words and (words[0] in NUMBER_WORDS or words[0].isdigit()):
        count = int(words[0]) if words[0].isdigit() else NUMBER_WORDS[words[0]]
        words = words[1:]
    # the phrase ends at the first verb/preposition or -ing word after some noun material
    cut = len(words)
    for i, w in enumerate(words):
        starts_noun = " ".join(words[i:i + 2]).rstrip("s") in MULTIWORD_NOUNS or " ".join(words[i:i + 2]) in MULTIWORD_NOUNS
        if i > 0 and not starts_noun and (w in _STOP or (w.endswith("ing") and len(w) > 4)):
            cut = i
            break
    words = [w for w in words[:cut] if w not in _FILLER]
    if not words:
        return None
    text = " ".join(words)
    noun = None
    for mw in MULTIWORD_NOUNS:
        for form in (mw, mw + "s", mw + "es"):
            if text == form or text.endswith(" " + form):
                noun, n_noun = mw, len(form.split())
                plural = form != mw
                break
        if noun:
            break
    if noun is None:
        noun, plural = singular(words[-1])
        n_noun = 1
    attributes = tuple(w for w in words[:-n_noun] if w not in ("and",))
    if count is None and not plural:
        count = 1
    return noun, count, attributes


def _object(rid: str, np: tuple[str, int | None, tuple[str, ...]]) -> Requirement:
    noun, count, attrs = np
    if count is None:
        text = f"some {' '.join((*attrs, noun))}s"
    elif count == 1:
        phrase = " ".join((*attrs, noun))
        text = ("an " if phrase[0] in "aeiou" else "a ") + phrase
    else:
        text = f"{NUMBER_TEXT.get(count, str(count))} {' '.join((*attrs, noun))}s"
    return Requirement(id=rid, kind="object", text=text, noun=noun, count=count, attributes=attrs)


def _demo_checklist(text: str) -> Checklist | None:
    from tools.demo import world
    from tools.errors import ImagentError

    try:
        scene = world.parse(text)
    except ImagentError:
        return None
    reqs = [Requirement(id=f"o{i + 1}", kind="object", text=g.text(), noun=g.shape, count=g.count,
                        attributes=(g.colour,)) for i, g in enumerate(scene.groups)]
    if scene.relation:
        reqs.append(Requirement(id="r1", kind="relation", text=f"{scene.groups[0].text()} {scene.relation} "
                                f"{scene.groups[1].text()}", relation=scene.relation, subject="o1", object="o2"))
    if scene.background_explicit or scene.background != "white":
        reqs.append(Requirement(id="bg", kind="background", text=f"on a {scene.background} background",
                                value=scene.background))
    reqs.append(Requirement(id="only", kind="exclusive", text="nothing else in the picture"))
    reqs.append(Requirement(id="holistic", kind="holistic", text=scene.caption()))
    return Checklist(reqs, source="demo-grammar")


def caption_of(checklist: Checklist) -> str | None:
    """The checklist as one demo-grammar caption ("a red circle left of a blue square on a black
    background"), or None when the grammar cannot say it (an open count, a word outside it, more
    than one relation)."""
    from tools.demo import world
    from tools.errors import ImagentError

    objs = checklist.objects()
    rels = [r for r in checklist.requirements if r.kind == "relation"]
    bg = next((r.value for r in checklist.requirements if r.kind == "background"), None)
    if len(rels) > 1 or any(o.count is None for o in objs):
        return None
    if rels:
        a, b = checklist.get(rels[0].subject), checklist.get(rels[0].object)
        if len(objs) != 2 or a is None or b is None:
            return None
        body = f"{a.text} {rels[0].relation} {b.text}"
    else:
        body = " and ".join(o.text for o in objs)
    text = body + (f" on a {bg} background" if bg else "")
    try:
        world.parse(text)
    except ImagentError:
        return None
    return text


def parse_checklist(text: str) -> Checklist:
    """Prompt text -> Checklist by rules (exact on the demo grammar)."""
    demo = _demo_checklist(text)
    if demo is not None:
        return demo
    t = _clean(text)
    reqs: list[Requirement] = []
    bg = re.search(r"\b(?:on|against|in front of) an? ([a-z]+(?: [a-z]+)?) background\b", t)
    if bg:
        reqs.append(Requirement(id="bg", kind="background", text=bg.group(0), value=bg.group(1)))
        t = (t[:bg.start()] + t[bg.end():]).strip()
    padded = f" {t} "
    objects: list[Requirement] = []
    relation = None
    for phrase, canon in _REL:
        i = padded.find(f" {phrase} ")
        if i >= 0:
            left, right = padded[:i].split(), padded[i + len(phrase) + 2:].split()
            while left and left[-1] in _STOP:
                left.pop()
            a, b = noun_phrase(_last_np(left)), noun_phrase(right)
            if a and b:
                objects = [_object("o1", a), _object("o2", b)]
                relation = canon
                break
    if not objects:
        parts = [p for p in re.split(r"\s+(?:and|,|with)\s+|\s*,\s*", t) if p.strip()]
        for p in parts:
            np = noun_phrase(p.split())
            if np:
                objects.append(_object(f"o{len(objects) + 1}", np))
    reqs = objects + reqs
    if relation:
        reqs.append(Requirement(id="r1", kind="relation", text=f"{objects[0].text} {relation} {objects[1].text}",
                                relation=relation, subject="o1", object="o2"))
    reqs.append(Requirement(id="holistic", kind="holistic", text=text.strip()))
    return Checklist(reqs, source="parser")


def _last_np(words: list[str]) -> list[str]:
    """The last noun phrase of a clause ('the black chair is' -> 'the black chair')."""
    for i in range(len(words) - 1, -1, -1):
        if words[i] in _STOP and i < len(words) - 1:
            return words[i + 1:]
    return words


LLM_INSTRUCTIONS = (
    "List what the image described by the prompt must show, as requirements. For each object: "
    "the noun (singular, e.g. 'cat'), the exact count if the prompt says one (null if not), and its "
    "attributes (colours, materials) as short words. For a spatial relation between two objects: "
    "subject id, relation (left of, right of, above, below, next to), object id. A background colour "
    "if stated. Use only what the prompt says. Answer with ONE JSON object, e.g. for 'a black cat left of "
    "two dogs': {\"objects\": [{\"noun\": \"cat\", \"count\": 1, \"attributes\": [\"black\"]}, "
    "{\"noun\": \"dog\", \"count\": 2, \"attributes\": []}], \"relations\": [{\"subject\": 1, "
    "\"relation\": \"left of\", \"object\": 2}], \"background\": null}")


def llm_checklist(text: str, chat_model, *, method: str | None = None) -> tuple[Checklist, list[str]]:
    """Ask an LLM for the checklist (structured output, validated); rules on any failure."""
    from pydantic import BaseModel, Field

    class Obj(BaseModel):
        noun: str = Field(..., max_length=60)
        count: int | None = Field(None, ge=1, le=20)
        attributes: list[str] = Field(default_factory=list, max_length=6)

    class Rel(BaseModel):
        subject: int = Field(..., ge=1, le=8, description="1-based index into objects")
        relation: str = Field(..., description="left of | right of | above | below | next to")
        object: int = Field(..., ge=1, le=8)

    class Reqs(BaseModel):
        objects: list[Obj] = Field(..., min_length=1, max_length=8)
        relations: list[Rel] = Field(default_factory=list, max_length=4)
        background: str | None = Field(None, max_length=40)

    from agent.llm import bind_structured, structured_call

    try:
        out, problem, _ = structured_call(bind_structured(chat_model, Reqs, method), Reqs,
                                          [("system", LLM_INSTRUCTIONS), ("human", text)])
        if out is None:
            raise ValueError(problem)
        reqs = [_object(f"o{i + 1}", (o.noun.strip().lower(), o.count, tuple(a.lower() for a in o.attributes)))
                for i, o in enumerate(out.objects)]
        for j, r in enumerate(out.relations):
            if r.relation not in RELATION_PHRASES or r.subject > len(reqs) or r.object > len(reqs) \
                    or r.subject == r.object:
                raise ValueError(f"bad relation {r}")
            a, b = reqs[r.subject - 1], reqs[r.object - 1]
            reqs.append(Requirement(id=f"r{j + 1}", kind="relation", text=f"{a.text} {r.relation} {b.text}",
                                    relation=r.relation, subject=a.id, object=b.id))
        if out.background:
            reqs.append(Requirement(id="bg", kind="background", text=f"on a {out.background} background",
                                    value=out.background.lower()))
        reqs.append(Requirement(id="holistic", kind="holistic", text=text.strip()))
        name = getattr(chat_model, "model_name", None) or getattr(chat_model, "model", None) or "chat"
        return Checklist(reqs, source=f"llm:{name}"), []
    except Exception as exc:  # junk, refusals, timeouts: the rules still give a checklist
        from agent.llm import short_error

        return parse_checklist(text), [f"The LLM could not write the requirements ({type(exc).__name__}: "
                                       f"{short_error(exc)[:120]}); used the rule parser."]


def checklist_for(idea: str, subject: str | None = None, *, chat_model=None,
                  method: str | None = None) -> tuple[Checklist, list[str]]:
    """The checklist of a run: the demo grammar when the idea (or the structured subject) is in it,
    else the LLM when one is passed, else the rules."""
    for text in (idea, subject):
        if text:
            demo = _demo_checklist(text)
            if demo is not None:
                return demo, []
    if chat_model is not None:
        return llm_checklist(idea, chat_model, method=method)
    return parse_checklist(idea), []


# -- the user's corrections ----------------------------------------------------------------------
TAIL = ("exclusive", "holistic")     # kept last: "nothing else" and the whole-image score
REQUIRE_EXAMPLES = "'a red circle left of a blue square', 'two green triangles' or 'on a black background'"
_NOT_NOUNS = _STOP | DETERMINERS | set(NUMBER_WORDS) | {"left", "right", "top", "bottom", "side", "front",
                                                        "background", "nothing", "something", "anything"}


def requirement_parts(text: str) -> list[Requirement]:
    """What one requirement in words asks for, read by the parser that derives checklists
    (parse_checklist): its objects, relation and background, with the parser's own ids (o1, r1,
    bg). InvalidInput (param "require") when nothing in it can be checked."""
    if not isinstance(text, str) or len(text) > REQUIRE_CHARS:
        raise InvalidInput(f"require: a requirement is a text of at most {REQUIRE_CHARS} characters.",
                           f"Write it like {REQUIRE_EXAMPLES}.", param="require")
    parts = [r for r in parse_checklist(text).requirements if r.kind in ("object", "relation", "background")]
    odd = [r.noun for r in parts if r.kind == "object"
           and (r.noun in _NOT_NOUNS or not r.noun.replace(" ", "").isalpha())]
    if not parts or odd:
        raise InvalidInput(f"require '{text.strip()}': nothing in it can be checked"
                           + (f" ('{odd[0]}' is not a thing to draw)." if odd else "."),
                           f"The parser reads objects with counts and colours, a relation between two "
                           f"of them, or a background, e.g. {REQUIRE_EXAMPLES}.", param="require")
    return parts


def edit_checklist(checklist: Checklist, require=(), drop=()) -> tuple[Checklist, list[str]]:
    """`checklist` corrected by the user, and what the edit did beyond the obvious (notes for the
    user): (Checklist, notes). `checklist` itself is not changed.

    - `drop` first: requirements by id ('o2', 'r1', 'bg', 'only', as `imagent expand` prints
      them) or by their 1-based number in that list; an object takes the relations that refer to
      it along (a note says so). The holistic score cannot be dropped (the loop always scores).
    - then each `require` text, read by requirement_parts: its objects, relation and background
      are added with fresh ids (o3, r2: never one the checklist had); an object already there
      with the same noun, attributes and count is reused, so 'a red circle left of a blue square'
      over 'a red circle and a blue square' adds the relation alone. An object with another
      count, or another background, contradicts the checklist: drop the old one as well.
    - "nothing else" (the exclusive requirement) stays: it counts the checklist's objects when it
      is checked, so it follows the edit. The source gets "+edited" (e.g. demo-grammar+edited).

    InvalidInput (param "require" or "drop") names the problem and the ids there are."""
    require, drop = list(require or ()), [str(x) for x in (drop or ())]
    if not require and not drop:
        return checklist, []
    if len(require) > MAX_REQUIRE or len(drop) > MAX_DROP:
        name, most = ("require", MAX_REQUIRE) if len(require) > MAX_REQUIRE else ("drop", MAX_DROP)
        raise InvalidInput(f"{name}: at most {most} at once.", "Give the checklist whole instead (checklist).",
                           param=name)
    parts = [(text, requirement_parts(text)) for text in require]  # every text is read before anything changes
    reqs, notes = _drop(checklist, drop)
    fresh = _fresh_ids(checklist)
    for text, items in parts:
        reqs, note = _add(reqs, text, items, fresh)
        notes += note
    source = checklist.source if checklist.source.endswith("+edited") else f"{checklist.source}+edited"
    ordered = [r for r in reqs if r.kind not in TAIL] + [r for r in reqs if r.kind in TAIL]
    return Checklist(ordered, source), notes


def preview_checklist(idea: str, subject: str | None = None, *, given=None, require=(), drop=()
                      ) -> tuple[Checklist, list[str]]:
    """The checklist `imagent expand` shows (rules or the demo grammar, no LLM, no verifier): `given`
    whole or derived from the idea, with the user's corrections; (Checklist, warnings)."""
    checklist, warnings = (checklist_from(given), []) if given is not None else checklist_for(idea, subject)
    checklist, notes = edit_checklist(checklist, require, drop)
    return checklist, warnings + notes


def check_edits(require=(), drop=(), given=None) -> None:
    """What can be checked of a run's checklist edits before its idea is expanded: every `require`
    text reads, a `given` checklist holds, and with one, every `drop` names one of its
    requirements (the same InvalidInput as the run would raise later)."""
    if given is not None:
        edit_checklist(checklist_from(given), require, drop)
    else:
        for text in require or ():
            requirement_parts(text)


def _drop_id(checklist: Checklist, value: str) -> str:
    """The id a --drop value names: an id, or a 1-based number in the printed order."""
    text = value.strip().lstrip("#").lower()
    reqs = checklist.requirements
    if text.isdigit() and 1 <= int(text) <= len(reqs):
        return reqs[int(text) - 1].id
    if checklist.get(text) is not None:
        return text
    ids = [f"{i}={r.id}" for i, r in enumerate(reqs, 1) if r.kind != "holistic"]
    raise InvalidInput(f"drop '{value}': the checklist has no such requirement.",
                       f"Give an id or its number: {', '.join(ids) or 'none'} (`imagent expand IDEA` lists them).",
                       param="drop")


def _drop(checklist: Checklist, drop: list[str]) -> tuple[list[Requirement], list[str]]:
    ids = list(dict.fromkeys(_drop_id(checklist, x) for x in drop))
    gone, notes = set(ids), []
    for rid in ids:
        r = checklist.get(rid)
        if r.kind == "holistic":
            raise InvalidInput("drop 'holistic': the whole-image score cannot be dropped; the loop always scores it.",
                               "Lower the threshold to ask less of it.", param="drop")
        along = [x for x in checklist.requirements if x.kind == "relation" and rid in (x.subject, x.object)
                 and x.id not in gone]
        gone |= {x.id for x in along}
        if along:
            notes.append(f"Dropping {rid} ({r.text}) dropped " + ", ".join(f"{x.id} ({x.text})" for x in along)
                         + (" too, which refers" if len(along) == 1 else " too, which refer") + " to it.")
    return [r for r in checklist.requirements if r.id not in gone], notes


def _fresh_ids(checklist: Checklist):
    """next('o') -> the next object id the checklist never had (o3 after o1, o2), next('r') a relation's."""
    used = {r.id for r in checklist.requirements}
    top = {p: max((int(i[1:]) for i in used if re.fullmatch(p + r"\d+", i)), default=0) for p in ("o", "r")}

    def next_id(prefix: str) -> str:
        top[prefix] += 1
        return f"{prefix}{top[prefix]}"
    return next_id


def _add(reqs: list[Requirement], text: str, items: list[Requirement], fresh) -> tuple[list[Requirement], list[str]]:
    out, ids, added = list(reqs), {}, 0
    for p in items:
        if p.kind == "object":
            same = next((r for r in out if r.kind == "object" and (r.noun, r.attributes) == (p.noun, p.attributes)),
                        None)
            if same is not None and same.count != p.count:
                raise InvalidInput(f"require '{text}': {p.text} contradicts {same.id} ({same.text}).",
                                   f"Drop {same.id} as well to change it.", param="require")
            if same is not None:
                ids[p.id] = same.id
                continue
            new = replace(p, id=fresh("o"))
            ids[p.id], p = new.id, new
        elif p.kind == "relation":
            p = replace(p, subject=ids[p.subject], object=ids[p.object])
            if any(r.kind == "relation" and (r.relation, r.subject, r.object) == (p.relation, p.subject, p.object)
                   for r in out):
                continue
            p = replace(p, id=fresh("r"))
        else:  # the background
            same = next((r for r in out if r.kind == "background"), None)
            if same is not None and same.value != p.value:
                raise InvalidInput(f"require '{text}': {p.text} contradicts {same.id} ({same.text}).",
                                   f"Drop {same.id} as well to change it.", param="require")
            if same is not None:
                continue
        out.append(p)
        added += 1
    return out, ([] if added else [f"require '{text}': the checklist has it already; nothing was added."])


def checklist_from(value) -> Checklist:
    """A checklist given whole (a Checklist, its JSON {"source", "requirements"}, or a list of
    requirement dicts as Requirement.to_json writes them), checked: known kinds, unique ids, a
    relation between two object ids, one background / exclusive / holistic at most (the holistic
    one has the id "holistic"). A missing text is written from the fields. A new Checklist;
    InvalidInput (param "checklist") otherwise."""
    if isinstance(value, Checklist):
        value = value.to_json()
    if isinstance(value, list):
        value = {"source": "given", "requirements": value}
    if not isinstance(value, dict) or not isinstance(value.get("requirements"), list):
        raise _bad("a checklist is a list of requirements (or {\"requirements\": [...]}), as a run's record has it")
    items = value["requirements"]
    if not 1 <= len(items) <= MAX_REQUIREMENTS:
        raise _bad(f"a checklist has 1 to {MAX_REQUIREMENTS} requirements, not {len(items)}")
    reqs: list[Requirement] = []
    for i, d in enumerate(items, 1):
        if not isinstance(d, dict) or d.get("kind") not in KINDS or not str(d.get("id") or "").strip():
            raise _bad(f"requirement {i} needs an id and a kind ({', '.join(KINDS)})")
        reqs.append(_filled(Requirement.from_json({**d, "text": d.get("text") or ""}), reqs, i))
    ids = [r.id for r in reqs]
    for kind in ("background", "exclusive", "holistic"):
        if sum(r.kind == kind for r in reqs) > 1:
            raise _bad(f"a checklist has one {kind} requirement at most")
    if len(set(ids)) != len(ids):
        raise _bad(f"the ids repeat ({', '.join(ids)})")
    return Checklist(reqs, str(value.get("source") or "given"))


def _filled(r: Requirement, before: list[Requirement], i: int) -> Requirement:
    """`r` checked against the requirements before it, its text written when it has none."""
    objects = {o.id: o for o in before if o.kind == "object"}
    if r.kind == "object":
        if not r.noun.strip() or (r.count is not None and not 1 <= r.count <= 100):
            raise _bad(f"requirement {i} ({r.id}): an object needs a noun, and a count of 1 or more (or none)")
        return r if r.text else replace(r, text=_object(r.id, (r.noun, r.count, r.attributes)).text)
    if r.kind == "relation":
        if r.relation not in RELATION_PHRASES or r.subject not in objects or r.object not in objects \
                or r.subject == r.object:
            raise _bad(f"requirement {i} ({r.id}): a relation needs one of {', '.join(RELATION_PHRASES)} between "
                       f"two objects listed before it (subject and object ids: {', '.join(objects) or 'none yet'})")
        return r if r.text else replace(r, text=f"{objects[r.subject].text} {r.relation} {objects[r.object].text}")
    if r.kind == "background" and not r.value.strip():
        raise _bad(f"requirement {i} ({r.id}): a background needs its value (e.g. black)")
    if r.kind == "holistic" and r.id != "holistic":
        raise _bad(f"requirement {i}: the holistic requirement has the id 'holistic', not '{r.id}'")
    default = {"background": f"on a {r.value} background", "exclusive": "nothing else in the picture",
               "holistic": "the whole image"}[r.kind]
    return r if r.text else replace(r, text=default)


def _bad(what: str) -> InvalidInput:
    return InvalidInput(f"checklist: {what}.", "Write each requirement as a run's record has it, e.g. "
                        "{\"id\": \"o1\", \"kind\": \"object\", \"noun\": \"circle\", \"count\": 2, "
                        "\"attributes\": [\"red\"]}.", param="checklist")
