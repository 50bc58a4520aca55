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
- The user's corrections (--require, --drop, a checklist given whole) are agent.checklist_edits.
"""
from __future__ import annotations

import re

from tools.requirements import Checklist, Requirement

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
