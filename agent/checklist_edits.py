"""The user's corrections of a checklist: requirements added in words (--require), removed by id
(--drop), or a checklist given whole; one implementation for every front door.

`edit_checklist(checklist, require, drop)` gives the corrected checklist and what the edit did
beyond the obvious; `checklist_from` checks a checklist given whole (a record's, or a list of
requirements); `preview_checklist` is what `imagent expand` shows; `check_edits` what a door can
check before the idea is expanded. Plain functions over tools.requirements data.
"""
from __future__ import annotations

import re
from dataclasses import replace

from agent.requirements import (_STOP, DETERMINERS, NUMBER_WORDS, RELATION_PHRASES, _object, checklist_for,
                                parse_checklist)
from tools.errors import InvalidInput
from tools.limits import MAX_DROP, MAX_REQUIRE, MAX_REQUIREMENTS, REQUIRE_CHARS
from tools.requirements import KINDS, Checklist, Requirement

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
