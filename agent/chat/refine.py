"""Refining a structured prompt without a model: a change in words or in explicit fields applied to a spec,
and a rectangle turned into an inpainting mask (pure functions)."""
from __future__ import annotations

import copy
import re

from agent.errors import InvalidInput

_NEGATE = re.compile(r"^(?:no|less|fewer|without|remove|drop|avoid|not)\s+(?:the\s+|any\s+)?(.+)$", re.I)
_MORE = re.compile(r"^(?:more|add|with|plus)\s+(.+)$", re.I)
_LIGHT = {"light", "lighting", "lit", "sun", "sunny", "sunset", "sunrise", "glow", "glowing", "shadow",
          "shadows", "bright", "brighter", "dark", "darker", "dim", "moody", "warm", "warmer", "cool",
          "cooler", "neon", "backlit", "golden", "night", "dusk", "dawn", "contrast"}
_COMPOSITION = {"close-up", "closeup", "close", "wide", "wider", "framing", "framed", "centered", "centred",
                "angle", "view", "shot", "zoom", "zoomed", "portrait", "symmetrical", "overhead",
                "aerial", "distance", "foreground", "background", "composition"}
_STYLE = {"style", "painting", "painted", "watercolor", "watercolour", "photo", "photograph",
          "photographic", "illustration", "anime", "render", "rendered", "sketch", "cinematic",
          "oil", "pixel", "cartoon", "3d", "realistic", "minimalist", "vintage"}


def refine_spec(spec: dict, words: str) -> tuple[dict, list[str]]:
    """Apply a change in words to a structured prompt, deterministically.

    Phrases are split on commas, ';' and ' and '. "less/no/without X" adds X to the negatives
    (and drops it from the details); "more X" adds a detail; a phrase about light replaces the
    lighting, one about framing the composition, one about medium the style; anything else is
    added as a detail. Returns (new spec, one line per change)."""
    text = " ".join((words or "").split())
    if not text:
        raise InvalidInput("Say what to change.", "For example: /refine warmer light, less clutter")
    new = copy.deepcopy(spec)
    for key in ("quality", "negatives", "extras"):
        new[key] = list(new.get(key) or [])
    changes: list[str] = []
    for phrase in (p.strip(" .") for p in re.split(r",|;|\band\b", text)):
        if not phrase:
            continue
        tokens = set(re.findall(r"[a-z0-9-]+", phrase.lower()))
        negated = _NEGATE.match(phrase)
        more = _MORE.match(phrase)
        if negated:
            item = negated.group(1).strip()
            new["extras"] = [e for e in new["extras"] if item.lower() not in e.lower()]
            if item.lower() not in (n.lower() for n in new["negatives"]):
                new["negatives"].append(item)
            changes.append(f"avoid: {item}")
        elif tokens & _LIGHT:
            new["lighting"] = phrase
            changes.append(f"lighting: {phrase}")
        elif tokens & _COMPOSITION:
            new["composition"] = phrase
            changes.append(f"composition: {phrase}")
        elif tokens & _STYLE:
            new["style"] = phrase
            changes.append(f"style: {phrase}")
        else:
            item = more.group(1).strip() if more else phrase
            new["negatives"] = [n for n in new["negatives"] if n.lower() != item.lower()]
            if item.lower() not in (e.lower() for e in new["extras"]):
                new["extras"].append(item)
            changes.append(f"add: {item}")
    for key in ("quality", "negatives", "extras"):
        new[key] = new[key][:12]
    return new, changes


def rect_mask(size: tuple[int, int], rect: str):
    """A white-on-black mask (PIL 'L') of `size` from 'X,Y,W,H' in pixels, or in fractions 0..1."""
    from PIL import Image

    try:
        values = [float(v) for v in rect.replace(" ", "").split(",")]
        if len(values) != 4:
            raise ValueError
    except ValueError:
        raise InvalidInput(f"rect={rect} is not X,Y,W,H.",
                           "Give the region as pixels (rect=8,8,16,16) or fractions (rect=0.25,0.25,0.5,0.5).") from None
    w, h = size
    if all(0 <= v <= 1 for v in values):
        values = [values[0] * w, values[1] * h, values[2] * w, values[3] * h]
    x, y, rw, rh = (int(round(v)) for v in values)
    if rw <= 0 or rh <= 0 or x < 0 or y < 0 or x + rw > w or y + rh > h:
        raise InvalidInput(f"The rectangle {x},{y},{rw},{rh} is not inside the {w}x{h} image.",
                           f"Use X,Y,W,H with X+W <= {w} and Y+H <= {h}.")
    mask = Image.new("L", size, 0)
    mask.paste(255, (x, y, x + rw, y + rh))
    return mask


def apply_fields(spec: dict, changes: dict) -> tuple[dict, list[str]]:
    """Set explicit fields of a structured prompt (subject, style, lighting, composition; add_details and avoid
    append to the extras and negatives). Returns (new spec, one line per change)."""
    new, notes = copy.deepcopy(spec), []
    for key in ("subject", "style", "lighting", "composition"):
        if changes.get(key):
            new[key] = str(changes[key])
            notes.append(f"{key}: {changes[key]}")
    for key, target in (("add_details", "extras"), ("avoid", "negatives")):
        for item in changes.get(key) or []:
            if item and item not in new.get(target, []):
                new.setdefault(target, []).append(item)
                notes.append(f"{'add' if target == 'extras' else 'avoid'}: {item}")
    return new, notes or ["no change"]
