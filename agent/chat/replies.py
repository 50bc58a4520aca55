"""The chat's longer replies as markdown, built by pure functions from data: the defaults line, the image
list, the score table, the requirement checklist, the result of a run and the structured prompt."""
from __future__ import annotations

from agent.chat.state import Defaults
from agent.outcomes import RoundRow


def defaults_text(d: Defaults, steps: int) -> str:
    """One line of the defaults (`steps`: the defaults' steps, else the model's)."""
    return (f"style **{d.style or 'none'}** · size **{d.size_text()}** · steps **{steps}** · "
            f"seed **{d.seed if d.seed is not None else 'random'}** · rounds **{d.rounds}** · "
            f"candidates **{d.candidates}** · raw **{'on' if d.raw else 'off'}**"
            + (f" · lora **{', '.join(d.loras)}**" if d.loras else "")
            + (f" · control **{', '.join(d.controls)}**" if d.controls else ""))


def style_text(style: str | None, presets) -> str:
    """The current style and the preset names."""
    names = ", ".join(presets)
    return f"Current style: **{style or 'none'}**. Presets: {names}."


def images_table(rows: list[tuple[int, dict | None]], current: int | None) -> str:
    """A table of (image id, gallery row) pairs, newest first; rows the gallery no longer has are left out."""
    if not rows:
        return "No images in this chat yet."
    lines = ["| # | seed | size | prompt |", "|---|---|---|---|"]
    for image_id, row in rows:
        if row is None:
            continue
        mark = " (current)" if image_id == current else ""
        prompt = (row.get("prompt") or (row.get("record") or {}).get("kind") or "").replace("|", "/")[:50]
        lines.append(f"| #{image_id}{mark} | {row.get('seed') if row.get('seed') is not None else '-'} | "
                     f"{row.get('width')}x{row.get('height')} | {prompt} |")
    return "\n".join(lines)


def scores_text(rounds: list[dict], threshold: float | None, checks: list[dict]) -> str:
    """The last run's round table with what the scores mean, its best round, its target and its checklist."""
    if not rounds:
        return "No round table yet: scores come from a run of the critique loop (send an idea)."
    lines = ["| round | change | scores | best |", "|---|---|---|---|"]
    for row in map(RoundRow.of, rounds):
        change = (row.change or "first prompt").replace("|", "/")[:60]
        lines.append(f"| {row.round} | {change} | {row.scores_text(2, ', ', '-')} | {row.best_text()} |")
    text = "\n".join(lines) + ("\n\nScores are CLIP similarity between each image and its prompt "
                               "(higher is closer).")
    best = _best_score(rounds)
    if best is not None:
        best_round = next(r for r in rounds if r.get("best_score") == best)
        text += f" The best was round {best_round.get('round')} with {best:.2f}."
    if threshold is not None:
        text += (f" The loop stops once every requirement passes and the score is at least "
                 f"{threshold:.2f}.")
    if len(checks) > 1:
        text += "\n\n" + checklist_markdown(checks)
    return text


def run_reply(image_id: int, seed: int | None, score: float, rounds: int, met: bool, checks: list[dict],
              hint: str = "Refine it in words (\"warmer light\", /refine ...), or /scores for the table.") -> str:
    """What a run of the critique loop made, with its checklist when it had more than one requirement."""
    return (f"Made image **#{image_id}** (seed {seed}, score {score:.2f}, "
            f"{rounds} round(s), {'every requirement met' if met else 'not met'})."
            + (("\n\n" + checklist_markdown(checks) + "\n\n") if len(checks) > 1 else " ") + hint)


FOLLOW_UP_HINT = ("Change it in words (\"add a blue square\", \"make it orange\", \"remove the circle\", "
                  "\"on a black background\"), \"undo\", or \"new: ...\" for another picture; /scores for the table.")


def diff_text(diff: list[str], repairs: list[str]) -> str:
    """A follow-up's change of the checklist, before its picture, and how the picture was changed."""
    how = ", ".join(dict.fromkeys(repairs)) or "nothing to repair"
    return "Changed the checklist:\n\n" + "\n".join(f"    {d}" for d in diff) + \
        f"\n\nRepaired from the current picture ({how})."


def prompt_text(spec: dict | None) -> str:
    """The structured prompt as a list of its non-empty fields."""
    if not spec:
        return "No structured prompt yet."
    return "\n".join(f"- **{k}**: {', '.join(v) if isinstance(v, list) else v}" for k, v in spec.items() if v)


def checklist_text(idea: str, checklist: dict, notes: list[str] = ()) -> str:
    """The checklist the next run of `idea` checks (Checklist JSON), numbered with its ids (what /drop
    takes), and what the last edit did beyond the obvious."""
    lines = [f"Checklist for the next run of *{idea}* ({checklist.get('source', 'parser')}):", ""]
    lines += [f"{i}. `{r['id']}` {r['kind']}: {r.get('text', '')}" for i, r in enumerate(checklist["requirements"], 1)]
    lines += [""] + [f"_{n}_" for n in notes] if notes else []
    return "\n".join(lines + ["", "/require WORDS adds one, /drop ID removes one, /run runs it, /undo takes "
                                   "the change back."])


def checklist_markdown(checks: list[dict]) -> str:
    """The requirement checklist of a run as a markdown list with pass/fail marks."""
    mark = {True: "✓", False: "✗", None: "?"}
    return "\n".join(f"- {mark[c.get('passed')]} {c.get('text', c.get('id'))}" for c in checks)


def _best_score(rounds: list[dict]) -> float | None:
    scores = [r.get("best_score") for r in rounds if r.get("best_score") is not None]
    return max(scores) if scores else None
