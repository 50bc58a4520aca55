"""Semantic checks of an LLM's structured prompt: junk and placeholder fields, copied instructions, a subject that lost the idea's nouns, negatives that contradict the idea."""
from __future__ import annotations

import re

from agent.schemas import PromptSpec

PLACEHOLDERS = {"string", "str", "none", "null", "n/a", "na", "tbd", "todo", "example", "subject", "style",
                "lighting", "composition", "quality", "negatives", "extras", "idea", "value", "..."}
_MARKUP = re.compile(r"</?[a-z][^>]*>|```|\{\{|\}\}|<subject>", re.I)
SHINGLE = 4  # a run of this many words shared with the instructions is a copy of them


def is_junk(text: str) -> bool:
    """Markup, code, placeholders, bare punctuation: not a description of a picture."""
    t = text.strip()
    return bool(_MARKUP.search(t)) or not re.search(r"[A-Za-z]", t) or t.lower().strip(" .:'\"") in PLACEHOLDERS


def _shingles(text: str) -> set[tuple[str, ...]]:
    words = re.findall(r"[a-z0-9]+", text.lower())
    return {tuple(words[i:i + SHINGLE]) for i in range(len(words) - SHINGLE + 1)}


# what the rule parser may take for a noun that is not a thing to draw: pronouns, framing words (they
# may move to style or composition), prepositions and verb forms
NOT_NOUNS = frozenset("""it its it's they them this that these those one ones he she him her his we you i me us
something anything everything nothing portrait photo photograph picture image painting drawing illustration
sketch render rendering view close-up closeup shot inside outside behind near next there here
written taken given broken hidden fallen eaten driven frozen woven stolen chosen spoken""".split())


_FRAMING = re.compile(r"^(?:(?:an?|the)\s+)?(?:[a-z-]+\s+){0,3}?(?:portrait|photo|photograph|picture|painting|"
                      r"drawing|illustration|sketch|render|rendering|image|close-up|closeup|view|inside|outside|top|"
                      r"side|front|back|middle)s?\s+of\s+", re.I)


def idea_nouns(idea: str) -> list[str]:
    """The nouns the idea names (agent.requirements' rule parser), singular: 'two red circles' -> ['circle'];
    pronouns, framing words and verb forms ('written', 'waited') left out."""
    from agent.requirements import parse_checklist

    text = idea.strip()
    while True:  # 'Portrait of a tiger', 'A photograph of the inside of a train': the thing is after 'of'
        cut = _FRAMING.sub("", text, count=1)
        if cut == text:
            break
        text = cut
    nouns = []
    sentences = [p for p in re.split(r"[.!?;]+\s+", text or idea) if p.strip()]
    for r in (r for sentence in sentences for r in parse_checklist(sentence).requirements):
        words = re.findall(r"[a-z0-9]+", (r.noun or "").lower()) if r.kind == "object" else []
        if words and not (set(words) & NOT_NOUNS) and not (len(words[-1]) > 4 and words[-1].endswith("ed")):
            nouns.append(" ".join(words))
    return list(dict.fromkeys(nouns))


def missing_nouns(subject: str, idea: str, rest: str = "") -> list[str]:
    """The idea's nouns a structured prompt lost: the first (the main subject) must be in `subject`,
    the others in `subject` or `rest` (the other fields: a background may move to the extras).
    None are lost when the idea names none and the subject shares one of its words."""
    have, elsewhere = idea_words(subject), idea_words(subject + " " + rest)
    nouns = idea_nouns(idea)
    if not nouns:
        return [] if idea_words(idea) & have or not idea_words(idea) else sorted(idea_words(idea))[:3]
    return [n for i, n in enumerate(nouns) if not set(n.split()) <= (have if i == 0 else elsewhere)]


def spec_problems(spec: PromptSpec, idea: str, instructions: str = "", *, check_subject: bool = True,
                  example: dict | None = None) -> list[str]:
    """What makes an LLM's structured prompt unusable for this idea, one phrase each (empty: usable):
    the subject lost the idea's nouns; a field is junk, copies the instructions, or copies the
    worked example ({"idea", "answer"}) instead of describing this idea."""
    return [text for _, text in problem_fields(spec, idea, instructions, check_subject=check_subject,
                                               example=example)]


def problem_fields(spec: PromptSpec, idea: str, instructions: str = "", *, check_subject: bool = True,
                   example: dict | None = None) -> list[tuple[tuple[str, ...], str]]:
    """spec_problems with the fields each problem is in: [((field, ...), phrase), ...]."""
    problems: list[tuple[tuple[str, ...], str]] = []
    if check_subject:
        rest = " ".join([spec.style, spec.lighting, spec.composition, *spec.extras])
        lost = missing_nouns(spec.subject, idea, rest)
        if lost:
            problems.append((("subject",), f"the subject {spec.subject[:60]!r} lost the idea's "
                                           f"{', '.join(repr(n) for n in lost)}"))
    copied = _shingles(instructions) - _shingles(idea)
    shown = (example or {}).get("answer") or {}
    borrowed = idea_words(str(shown.get("subject", ""))) - idea_words(idea) - idea_words(str((example or {}).get("idea", "")))
    borrowed |= idea_words(str((example or {}).get("idea", ""))) - idea_words(idea)
    for key in ("subject", "style", "lighting", "composition"):
        value = getattr(spec, key)
        if value and is_junk(value):
            problems.append(((key,), f"{key} {value[:40]!r} is not a description"))
        elif value and _shingles(value) & copied:
            problems.append(((key,), f"{key} {value[:40]!r} copies the instructions"))
    same = tuple(k for k in ("style", "lighting", "composition")
                 if getattr(spec, k) and getattr(spec, k).strip().lower() == str(shown.get(k, "")).strip().lower())
    if len(same) >= 2:  # one field alike may fit ('wildlife photograph' for a panda); two is a copy
        problems.append((same, f"{' and '.join(same)} copy the example instead of fitting this idea"))
    if example and idea_words(spec.subject) & borrowed:
        extra = sorted(idea_words(spec.subject) & borrowed)
        problems.append((("subject",), f"the subject {spec.subject[:60]!r} borrows "
                                       f"{', '.join(repr(w) for w in extra)} from the example"))
    for key in ("quality", "negatives", "extras"):
        bad = [v for v in getattr(spec, key) if _shingles(v) & copied]
        if bad:
            problems.append(((key,), f"{key} {bad[0][:40]!r} copies the instructions"))
    return problems


def without_fields(spec: PromptSpec, fields: set[str]) -> PromptSpec:
    """The spec with those optional fields emptied (never the subject)."""
    update = {f: ([] if isinstance(getattr(spec, f), list) else "") for f in fields if f != "subject"}
    return spec.model_copy(update=update)


def drop_junk_items(spec: PromptSpec) -> PromptSpec:
    """List items that are markup or placeholders are dropped (no repair needed for those)."""
    update = {k: [v for v in getattr(spec, k) if not is_junk(v)] for k in ("quality", "negatives", "extras")}
    return spec if all(update[k] == getattr(spec, k) for k in update) else spec.model_copy(update=update)


# words that say nothing about what is drawn: a negative sharing only these with the idea is kept
FUNCTION_WORDS = frozenset("""a an the of at on in with and or to by for from into onto over under near its it
is are be this that these those some any no not very one two three four five six seven eight nine ten""".split())


def idea_words(text: str) -> set[str]:
    """The content words of a text, lower case, with singular forms added ('circles' -> 'circle')."""
    from agent.requirements import singular

    words = {w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in FUNCTION_WORDS}
    return words | {singular(w)[0] for w in words}


def drop_conflicts(spec: PromptSpec, idea: str) -> PromptSpec:
    """Never negate what the user asked for: drop negatives that name a word of the idea, short
    words included ('cat', 'red'); only function words ('a', 'at', 'the') do not count."""
    words = idea_words(idea)
    keep = [n for n in spec.negatives if not idea_words(n) & words]
    return spec if keep == spec.negatives else spec.model_copy(update={"negatives": keep})
