"""Chat follow-up benchmark on the demo world: conversations from the grammar, judged by the oracle.

Each conversation is a first idea sampled from the demo grammar (1-3 objects, sometimes a
relation, sometimes a named background), then one follow-up (two turns) or two (three turns).
A follow-up is one of six kinds, with the Scene it should lead to built by construction:

  add         "add a blue square", "also a green triangle", "and two yellow circles" (a new group;
              "add another blue square" on a two-group scene); at most 4 objects in all
  recolour    "make it orange" / "make them orange" (one group), "make the circle orange",
              "turn the red square blue" (the object named when there are two groups)
  background  "on a black background", "make the background gray", "change the background to white"
  count       "make it three", "make them two", "three circles", "one more", "two more" (one group)
  remove      "remove the blue square", "delete the triangle", "take away the red circle" (two groups)
  relation    "put the red circle left of the blue square", "move the triangle above the square"
              (two single objects of different colour-shape)

Conversation sets: `2-turn` (one follow-up of each kind), `3-turn same` (two follow-ups of one
kind; none for remove, which leaves a single group that cannot be removed) and `3-turn mix` (a
kind, then another kind that applies to its result). `--n` conversations per kind in each set.

Judged by the exact oracle only (tools.demo.oracle; the chat never sees it), per follow-up:
  right      the picture after the follow-up is its expected scene (oracle.check, strict);
  final      (per kind) the last picture of the conversations the kind is in is right;
  kept       unmentioned objects kept: each object of the previous picture (oracle.read) whose group
             the follow-up did not name (not recoloured, removed, recounted or moved; background and
             add follow-ups name none) has one of the same colour and shape in the new picture with
             box IoU >= 0.5, and that colour-shape's count is unchanged; the share over all of them;
  img/fu     images the follow-up's run generated (the PNG record's loop.images);
  s/fu       seconds of the follow-up's handle() call;
  met&wrong  the follow-up's run said met (loop.met) but the oracle says wrong.
The first turn's right share is reported for context. Goals: final >= 0.95 for each kind, kept
>= 0.90, images per follow-up <= 3, met-but-wrong <= 2%.

Modes: the default chat (no LLM: the offline router), and with `--llm-script` also the chat with
a scripted tool-calling LLM (agent mode: it calls create_image with the first message and
change_picture with each follow-up's own words, then answers "Done."; the same conversations).

`--seed` picks the conversations: seed 7 (the default) is the held-out set the figures are
reported on; seed 3 is the set for tuning. Each conversation's first turn runs with a fixed chat
seed (/seed); later turns use the chat's own seed policy (`/seed random`: a refine keeps the
picture's seed) unless `--seed-every-turn`.

  python bench/chat_bench.py                            # 8 per kind and set, both turn counts (~10-30 min)
  python bench/chat_bench.py --n 1 --turns 2            # a quick look
  python bench/chat_bench.py --seed 3 --kinds add count # tuning on two kinds
  python bench/chat_bench.py --llm-script               # also with the scripted LLM
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools.demo.grammar import BACKGROUNDS, COLOURS, MAX_OBJECTS, RELATIONS, SHAPES, Group, Scene  # noqa: E402

KINDS = ("add", "recolour", "background", "count", "remove", "relation")
SETS = ("2-turn", "3-turn same", "3-turn mix")
WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}
OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
GOALS = {"final": 0.95, "kept": 0.90, "images": 3.0, "met_but_wrong": 0.02}


# -- conversations ------------------------------------------------------------------------------
def _scene(scene: Scene, groups, relation=None, background=None) -> Scene:
    bg = background or scene.background
    return Scene(tuple(groups), relation, bg, scene.background_explicit or background is not None)


def _noun(g: Group) -> str:
    return g.shape + ("s" if g.count > 1 else "")


def _ref(scene: Scene, i: int, rng: random.Random, how: str | None = None) -> str:
    """A natural name for group i of a two-group scene: 'the red square', 'the squares', 'the red one'."""
    g, other = scene.groups[i], scene.groups[1 - i]
    ways = ["full", "full"]
    if g.shape != other.shape:
        ways += ["shape", "shape"]
    if g.colour != other.colour:
        ways.append("colour")
    how = how if how in ways else rng.choice(ways)
    if how == "shape":
        return f"the {_noun(g)}"
    if how == "colour":
        return f"the {g.colour} {'ones' if g.count > 1 else 'one'}"
    return f"the {g.colour} {_noun(g)}"


def first_scene(rng: random.Random) -> Scene:
    """A first idea: 1-3 objects, sometimes a relation, sometimes a named background."""
    def group(n=1):
        return Group(n, rng.choice(list(COLOURS)), rng.choice(SHAPES))

    def two(na=1, nb=1):
        while True:
            a, b = group(na), group(nb)
            if (a.colour, a.shape) != (b.colour, b.shape):
                return a, b

    r, relation = rng.random(), None
    if r < 0.3:
        groups = (group(),)
    elif r < 0.5:
        groups = (group(rng.randint(2, 3)),)
    elif r < 0.85:
        groups = two()
        relation = rng.choice(RELATIONS) if rng.random() < 0.5 else None
    else:
        groups = two(2, 1) if rng.random() < 0.5 else two(1, 2)
    u = rng.random()
    bg, explicit = ("white", False) if u < 0.65 else ("white", True) if u < 0.75 else \
        (rng.choice([b for b in BACKGROUNDS if b != "white"]), True)
    return Scene(groups, relation, bg, explicit)


def follow_add(scene: Scene, rng: random.Random):
    if scene.relation or scene.n_objects >= MAX_OBJECTS:
        return None
    if len(scene.groups) == 2:  # one more of a group already there
        i = rng.randrange(2)
        g = scene.groups[i]
        what = f"{g.colour} {g.shape}" if rng.random() < 0.6 or g.shape == scene.groups[1 - i].shape else g.shape
        text = rng.choice(["add another {w}", "one more {w}", "and another {w}", "add one more {w}"]).format(w=what)
        groups = list(scene.groups)
        groups[i] = Group(g.count + 1, g.colour, g.shape)
        return text, _scene(scene, groups), {i}
    g = scene.groups[0]
    while True:
        new = Group(rng.randint(1, min(2, MAX_OBJECTS - g.count)), rng.choice(list(COLOURS)), rng.choice(SHAPES))
        if (new.colour, new.shape) != (g.colour, g.shape):
            break
    text = rng.choice(["add {h}", "also {h}", "and {h}", "add {h} too", "now add {h}", "put {h} in as well",
                       "{h} as well"]).format(h=new.text())
    return text, _scene(scene, (g, new), None), set()


def follow_recolour(scene: Scene, rng: random.Random):
    i = rng.randrange(len(scene.groups))
    g = scene.groups[i]
    taken = {(o.colour, o.shape) for j, o in enumerate(scene.groups) if j != i}
    colours = [c for c in COLOURS if c != g.colour and (c, g.shape) not in taken]
    c = rng.choice(colours)
    if len(scene.groups) == 1:
        if g.count == 1:
            forms = ["make it {c}", "turn it {c}", "change it to {c}", "make it {c} instead", "colour it {c}"]
        else:
            forms = ["make them {c}", "turn them {c}", "make them all {c}", "change them to {c}"]
        text = rng.choice(forms).format(c=c)
    else:
        text = rng.choice(["make {r} {c}", "turn {r} {c}", "change {r} to {c}", "colour {r} {c}",
                           "{r} should be {c}"]).format(r=_ref(scene, i, rng), c=c)
    groups = list(scene.groups)
    groups[i] = Group(g.count, c, g.shape)
    return text, _scene(scene, groups, scene.relation), {i}


def follow_background(scene: Scene, rng: random.Random):
    b = rng.choice([x for x in BACKGROUNDS if x != scene.background])
    it = "it" if scene.n_objects == 1 else "them"
    text = rng.choice(["on a {b} background", "make the background {b}", "change the background to {b}",
                       "put {it} on a {b} background", "now on a {b} background", "{b} background please"]
                      ).format(b=b, it=it)
    return text, _scene(scene, scene.groups, scene.relation, background=b), set()


def follow_count(scene: Scene, rng: random.Random):
    if len(scene.groups) != 1:
        return None
    g = scene.groups[0]
    m = rng.choice([k for k in range(1, MAX_OBJECTS + 1) if k != g.count])
    w, noun = WORDS[m], g.shape + ("s" if m > 1 else "")
    forms = []
    if m - g.count == 1:
        forms += ["one more", "add one more", "another one"]
    if m - g.count == 2:
        forms += ["two more", "add two more"]
    if m == 1:
        forms += ["just one", "only one {noun}", "make it just one"]
    elif g.count == 1:
        forms += ["make it {w}", "make it {w} {noun}", "{w} {noun}"]
    else:
        forms += ["make them {w}", "{w} {noun}", "make it {w} {noun}"]
    text = rng.choice(forms).format(w=w, noun=noun)
    return text, _scene(scene, (Group(m, g.colour, g.shape),)), {0}


def follow_remove(scene: Scene, rng: random.Random):
    if len(scene.groups) != 2:
        return None
    i = rng.randrange(2)
    text = rng.choice(["remove {r}", "delete {r}", "take away {r}", "get rid of {r}", "take out {r}",
                       "without {r}"]).format(r=_ref(scene, i, rng))
    return text, _scene(scene, (scene.groups[1 - i],)), {i}


def follow_relation(scene: Scene, rng: random.Random):
    if len(scene.groups) != 2 or any(g.count != 1 for g in scene.groups):
        return None
    a, b = scene.groups
    if (a.colour, a.shape) == (b.colour, b.shape):
        return None
    same = set()
    if scene.relation:  # "a left of b" is "b right of a": say something new
        same = {(0, scene.relation), (1, OPPOSITE[scene.relation])}
    choices = [(s, r) for s in (0, 1) for r in RELATIONS if (s, r) not in same]
    s, rel = rng.choice(choices)
    how = rng.choice(["full", "full", "shape", "colour"])
    ra, rb = _ref(scene, s, rng, how), _ref(scene, 1 - s, rng, how)
    if how == "shape" and a.shape == b.shape or how == "colour" and a.colour == b.colour:
        ra, rb = _ref(scene, s, rng, "full"), _ref(scene, 1 - s, rng, "full")
    said = rel
    if rel in ("left of", "right of") and rng.random() < 0.4:
        said = "to the " + rel
    text = rng.choice(["put {a} {r} {b}", "move {a} {r} {b}", "place {a} {r} {b}", "{a} should be {r} {b}"]
                      ).format(a=ra, r=said, b=rb)
    subject, obj = scene.groups[s], scene.groups[1 - s]
    return text, _scene(scene, (subject, obj), rel), {0, 1}


FOLLOW = {"add": follow_add, "recolour": follow_recolour, "background": follow_background,
          "count": follow_count, "remove": follow_remove, "relation": follow_relation}


def _chain(scene: Scene, kinds, rng: random.Random):
    turns = []
    for kind in kinds:
        made = FOLLOW[kind](scene, rng)
        if made is None:
            return None
        text, new, mentioned = made
        turns.append({"kind": kind, "text": text, "expected": new.caption(), "scene": new,
                      "unmentioned": sorted({(g.colour, g.shape) for j, g in enumerate(scene.groups)
                                             if j not in mentioned})})
        scene = new
    return turns


def conversation(seed: int, set_name: str, kind: str, i: int, kinds_allowed) -> dict | None:
    """One conversation of a set for a kind (None when the kind cannot be chained so)."""
    rng = random.Random(f"chat-bench-{seed}-{set_name}-{kind}-{i}")
    if set_name == "2-turn":
        plans = [[kind]]
    elif set_name == "3-turn same":
        plans = [[kind, kind]]
    else:
        others = [k for k in kinds_allowed if k != kind]
        rng.shuffle(others)
        plans = [[kind, k] for k in others]
    for plan in plans:
        for _ in range(300):
            first = first_scene(rng)
            turns = _chain(first, plan, rng)
            if turns is not None:
                return {"set": set_name, "kind": kind, "index": i, "kinds": plan, "first": first.caption(),
                        "first_scene": first, "follow_ups": turns, "chat_seed": 1000 + 97 * i + 13 * KINDS.index(kind)}
    return None


def conversations(seed: int, n: int, turns: str, kinds) -> tuple[list[dict], list[str]]:
    sets = {"2": ["2-turn"], "3": ["3-turn same", "3-turn mix"], "both": list(SETS)}[turns]
    out, skipped = [], []
    for set_name in sets:
        if set_name == "3-turn mix" and len(kinds) < 2:
            skipped.append("3-turn mix (needs two kinds)")
            continue
        for kind in kinds:
            made = [conversation(seed, set_name, kind, i, kinds) for i in range(n)]
            if any(c is None for c in made):
                what = f"{set_name} starting with {kind}" if set_name == "3-turn mix" else f"{set_name} {kind}"
                skipped.append(f"{what}: no such conversation in the demo grammar")
            out += [c for c in made if c is not None]
    return out, skipped


# -- judging ------------------------------------------------------------------------------------
def iou(a, b) -> float:
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def kept_objects(prev, new, pairs) -> tuple[int, int]:
    """(kept, all): the previous reading's objects of the unmentioned colour-shape pairs that the new
    reading has at IoU >= 0.5 (one to one), with that pair's count unchanged."""
    if prev is None:
        return 0, 0
    kept = total = 0
    for pair in {(o.colour, o.shape) for o in prev.objects} & {tuple(p) for p in pairs}:
        olds = [o for o in prev.objects if (o.colour, o.shape) == pair]
        news = [o for o in (new.objects if new is not None else []) if (o.colour, o.shape) == pair]
        total += len(olds)
        if len(news) != len(olds):
            continue
        scored = sorted(((iou(o.box, w.box), i, j) for i, o in enumerate(olds) for j, w in enumerate(news)),
                        reverse=True)
        used_o, used_n = set(), set()
        for v, i, j in scored:
            if v >= 0.5 and i not in used_o and j not in used_n:
                used_o.add(i)
                used_n.add(j)
        kept += len(used_o)
    return kept, total


# -- the scripted LLM ------------------------------------------------------------------------------
def scripted_llm():
    """A tool-calling chat model that calls the tool the bench plans for the turn (`plan`), then, once
    the tool's result is back, answers "Done." (agent mode: create_agent binds its tools)."""
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import AIMessage, ToolMessage
    from langchain_core.outputs import ChatGeneration, ChatResult

    class ScriptedLLM(BaseChatModel):
        plan: tuple = ("create_image", {})
        calls: int = 0

        @property
        def _llm_type(self) -> str:
            return "scripted-bench"

        def bind_tools(self, tools, **kwargs):
            return self

        def _generate(self, messages, stop=None, run_manager=None, **kwargs):
            self.calls += 1
            if messages and isinstance(messages[-1], ToolMessage):
                message = AIMessage(content="Done. " + str(messages[-1].content)[:300])
            else:
                name, args = self.plan
                message = AIMessage(content="", tool_calls=[{"name": name, "args": dict(args),
                                                             "id": f"call_{self.calls}", "type": "tool_call"}])
            return ChatResult(generations=[ChatGeneration(message=message)])

    return ScriptedLLM()


# -- running ------------------------------------------------------------------------------------
def run_turn(chat, text: str, events: list, model=None, plan=None) -> dict:
    from tools.metadata import read_metadata

    if model is not None:
        model.plan = plan
    before = chat.state.image_id
    events.clear()
    t0 = time.perf_counter()
    error = reply = None
    try:
        reply = chat.handle(text)
    except Exception as exc:  # recorded in the conversation; the bench goes on
        error = f"{type(exc).__name__}: {getattr(exc, 'message', None) or exc}"
    seconds = time.perf_counter() - t0
    new_image = chat.state.image_id is not None and chat.state.image_id != before
    met, images = None, None
    if new_image:
        try:
            loop = (read_metadata(chat.state.image_path)["record"] or {}).get("loop")
        except Exception:
            loop = None
        if isinstance(loop, dict):
            met, images = bool(loop.get("met")), loop.get("images")
    names = [type(e).__name__ for e in events]
    if met is None:
        finished = [e for e in events if type(e).__name__ == "LoopFinished"]
        met = bool(finished[-1].met) if finished else False
    if images is None:
        images = names.count("CandidateScored") or (1 if new_image else 0)
    return {"text": text, "seconds": seconds, "error": error, "reply": (reply or "")[:300], "new_image": new_image,
            "met": met, "images": images, "idea": chat.state.idea, "path": chat.state.image_path}


def run_conversation(session, conv: dict, a, mode: str) -> dict:
    from agent.chat import COMMANDS, ChatController
    from tools.demo.oracle import check, read
    from tools.images import load_image

    events: list = []
    model = scripted_llm() if mode == "scripted" else None
    chat = ChatController(session, chat_model=model, listener=events.append)
    setup = [f"/seed {conv['chat_seed']}"]
    for name in ("rounds", "candidates"):
        value = getattr(a, name)
        if value is not None:
            if name in COMMANDS:
                setup.append(f"/{name} {value}")
            else:
                print(f"note: the chat has no /{name}; its default is used", file=sys.stderr)
    for cmd in setup:
        chat.handle(cmd)

    def picture(path):
        if not path:
            return None, None
        im = load_image(path)
        return im, read(im)

    first = run_turn(chat, conv["first"], events, model, ("create_image", {"idea": conv["first"]}))
    image, reading = picture(first["path"])
    first["right"] = image is not None and check(image, conv["first_scene"], "strict").correct
    if not a.seed_every_turn:
        chat.handle("/seed random")
    prev_reading, prev_right, rows = reading, first["right"], []
    for fu in conv["follow_ups"]:
        row = run_turn(chat, fu["text"], events, model, ("change_picture", {"change": fu["text"]}))
        image, reading = picture(row["path"])
        row["right"] = image is not None and check(image, fu["scene"], "strict").correct
        row["kept"], row["unmentioned"] = kept_objects(prev_reading, reading, fu["unmentioned"])
        row.update(kind=fu["kind"], expected=fu["expected"], prev_right=prev_right,
                   met_but_wrong=bool(row["met"]) and not row["right"])
        rows.append(row)
        prev_reading, prev_right = reading, row["right"]
    return {"set": conv["set"], "kind": conv["kind"], "kinds": conv["kinds"], "mode": mode, "chat_mode": chat.mode,
            "chat_seed": conv["chat_seed"], "first": first, "follow_ups": rows,
            "final_right": rows[-1]["right"] if rows else first["right"]}


# -- summaries ----------------------------------------------------------------------------------
def _mean(xs):
    xs = list(xs)
    return sum(xs) / len(xs) if xs else None


def follow_summary(rows, convs) -> dict:
    kept, unmentioned = sum(r["kept"] for r in rows), sum(r["unmentioned"] for r in rows)
    return {"follow_ups": len(rows), "right": _mean(r["right"] for r in rows),
            "final": _mean(c["final_right"] for c in convs), "conversations": len(convs),
            "prev_right": _mean(r["prev_right"] for r in rows),
            "kept": kept / unmentioned if unmentioned else None, "unmentioned": unmentioned,
            "images": _mean(r["images"] for r in rows), "seconds": _mean(r["seconds"] for r in rows),
            "met": _mean(bool(r["met"]) for r in rows), "met_but_wrong": _mean(r["met_but_wrong"] for r in rows),
            "new_image": _mean(r["new_image"] for r in rows), "errors": sum(bool(r["error"]) for r in rows)}


def summarise(results, kinds) -> dict:
    every = [r for c in results for r in c["follow_ups"]]
    by_kind = {k: follow_summary([r for r in every if r["kind"] == k], [c for c in results if k in c["kinds"]])
               for k in kinds}
    by_set = {}
    for s in SETS:
        convs = [c for c in results if c["set"] == s]
        if convs:
            by_set[s] = {**follow_summary([r for c in convs for r in c["follow_ups"]], convs),
                         "first_right": _mean(c["first"]["right"] for c in convs)}
    overall = {**follow_summary(every, results), "first_right": _mean(c["first"]["right"] for c in results)}
    goals = {f"final {k}": {"value": v["final"], "goal": f">= {GOALS['final']}",
                            "ok": v["final"] is not None and v["final"] >= GOALS["final"]}
             for k, v in by_kind.items() if v["conversations"]}
    goals["kept"] = {"value": overall["kept"], "goal": f">= {GOALS['kept']}",
                     "ok": overall["kept"] is not None and overall["kept"] >= GOALS["kept"]}
    goals["images per follow-up"] = {"value": overall["images"], "goal": f"<= {GOALS['images']}",
                                     "ok": overall["images"] is not None and overall["images"] <= GOALS["images"]}
    goals["met but wrong"] = {"value": overall["met_but_wrong"], "goal": f"<= {GOALS['met_but_wrong']}",
                              "ok": overall["met_but_wrong"] is not None
                              and overall["met_but_wrong"] <= GOALS["met_but_wrong"]}
    return {"kinds": by_kind, "sets": by_set, "overall": overall, "goals": goals}


def _cell(v, width=11) -> str:
    if v is None:
        return f"{'-':>{width}}"
    return f"{v:>{width}}" if isinstance(v, int) and not isinstance(v, bool) else f"{v:>{width}.3f}"


def print_tables(mode: str, s: dict, chat_modes) -> None:
    print(f"\n== {mode} mode (the chat ran in {', '.join(sorted(chat_modes))} mode) ==")
    head = ["follow-ups", "right", "final", "convs", "prev ok", "kept", "n kept", "img/fu", "s/fu", "met",
            "met&wrong", "new img", "errors"]
    keys = ["follow_ups", "right", "final", "conversations", "prev_right", "kept", "unmentioned", "images",
            "seconds", "met", "met_but_wrong", "new_image", "errors"]
    print(f"{'kind':<14}" + "".join(f"{h:>11}" for h in head))
    for name, row in [*s["kinds"].items(), ("overall", s["overall"])]:
        print(f"{name:<14}" + "".join(_cell(row[k]) for k in keys))
    print(f"{'set':<14}" + "".join(f"{h:>11}" for h in ["convs", "first ok", "final", *head[0:2], "kept",
                                                          "img/fu", "s/fu", "met&wrong"]))
    for name, row in s["sets"].items():
        print(f"{name:<14}" + "".join(_cell(row[k]) for k in ["conversations", "first_right", "final", "follow_ups",
                                                               "right", "kept", "images", "seconds",
                                                               "met_but_wrong"]))
    print("goals: " + "; ".join(f"{name} {_cell(g['value'], 0).strip()} ({g['goal']}: {'ok' if g['ok'] else 'MISSED'})"
                                for name, g in s["goals"].items()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=8, help="conversations per kind in each set")
    ap.add_argument("--seed", type=int, default=7, help="the conversations (7: held out, the default; 3: tuning)")
    ap.add_argument("--turns", choices=("2", "3", "both"), default="both")
    ap.add_argument("--kinds", nargs="*", choices=KINDS, help="default: all six")
    ap.add_argument("--rounds", type=int, default=None, help="/rounds for the chat (default: the chat's)")
    ap.add_argument("--candidates", type=int, default=None, help="/candidates for the chat (default: the chat's)")
    ap.add_argument("--llm-script", action="store_true", help="also run the conversations with a scripted LLM")
    ap.add_argument("--llm-only", action="store_true", help="only the scripted-LLM mode")
    ap.add_argument("--seed-every-turn", action="store_true",
                    help="keep the conversation's /seed for every turn (default: the first turn only)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--list", action="store_true", help="print the conversations and stop")
    ap.add_argument("--json-out", help="also write every conversation, turn by turn, to this file")
    a = ap.parse_args(argv)
    kinds = tuple(a.kinds or KINDS)
    convs, skipped = conversations(a.seed, a.n, a.turns, kinds)
    for note in skipped:
        print(f"skipped: {note}", file=sys.stderr)
    if a.list:
        for c in convs:
            print(f"[{c['set']} {'+'.join(c['kinds'])}] " + " | ".join(
                [c["first"]] + [f"{t['text']} -> {t['expected']}" for t in c["follow_ups"]]))
        return 0
    import torch

    torch.set_num_threads(a.threads)
    from agent.config import load_settings
    from agent.session import Session

    home = tempfile.mkdtemp(prefix="imagent-chat-bench-")
    session = Session(load_settings(env={"IMAGENT_HOME": home}, model="demo", clip_model="demo", safety="off"))
    modes = ["scripted"] if a.llm_only else ["default"] + (["scripted"] if a.llm_script else [])
    results = {m: [] for m in modes}
    t_start = time.perf_counter()
    for m in modes:
        for k, conv in enumerate(convs):
            res = run_conversation(session, conv, a, m)
            results[m].append(res)
            marks = " ".join(("ok" if r["right"] else "x") for r in [res["first"], *res["follow_ups"]])
            print(f"[{m} {k + 1}/{len(convs)}] {conv['set']} {'+'.join(conv['kinds'])}: {conv['first']} | "
                  + " | ".join(t["text"] for t in conv["follow_ups"]) + f"  [{marks}]", file=sys.stderr, flush=True)
    counts = ", ".join(f"{s}: {sum(c['set'] == s for c in convs)}" for s in SETS)
    print(f"conversation seed {a.seed} ({'held out' if a.seed == 7 else 'tuning' if a.seed == 3 else 'other'}); "
          f"{len(convs)} conversations ({counts}); "
          f"rounds {a.rounds or 'chat default'}, candidates {a.candidates or 'chat default'}")
    for note in skipped:
        print(f"skipped: {note}")
    summaries = {m: summarise(results[m], kinds) for m in modes}
    for m in modes:
        print_tables(m, summaries[m], {c["chat_mode"] for c in results[m]})
    print(f"{time.perf_counter() - t_start:.0f} s in all")
    result = {"bench": "chat", "seed": a.seed, "n": a.n, "turns": a.turns, "kinds": list(kinds),
              "rounds": a.rounds, "candidates": a.candidates, "seed_every_turn": a.seed_every_turn,
              "skipped": skipped, "modes": summaries}
    if a.json_out:
        Path(a.json_out).write_text(json.dumps({**result, "conversations": results}, indent=1, default=str))
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
