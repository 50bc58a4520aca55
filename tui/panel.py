"""Plain-text forms for the side panel: a structured prompt as editable lines (and back), and the chat's defaults."""
from __future__ import annotations

from textual.markup import escape

from tools.generate import printable

SPEC_FIELDS = ("subject", "style", "lighting", "composition", "quality", "negatives", "extras")
LIST_FIELDS = {"quality", "negatives", "extras"}


def spec_to_text(spec: dict | None) -> str:
    if not spec:
        return ""
    lines = []
    for key in SPEC_FIELDS:
        value = spec.get(key)
        lines.append(f"{key}: {', '.join(value) if isinstance(value, list) else (value or '')}")
    return "\n".join(lines)


def text_to_spec(text: str) -> dict:
    spec: dict = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        key, colon, value = line.partition(":")
        key = key.strip().lower()
        if not colon or key not in SPEC_FIELDS:
            raise ValueError(f"Line {n} should be 'field: value' with a field from {', '.join(SPEC_FIELDS)}.")
        value = value.strip()
        spec[key] = [v.strip() for v in value.split(",") if v.strip()] if key in LIST_FIELDS else value
    if not spec.get("subject"):
        raise ValueError("The subject is empty: write 'subject: what to draw'.")
    return spec


def params_text(controller) -> str:
    """The defaults new images are made with (agent.chat.ChatController state), one per line."""
    d = controller.state.defaults
    steps = d.steps or controller.session.model_defaults()["steps"]
    rows = [("style", d.style or "none"), ("size", d.size_text()), ("steps", steps),
            ("seed", d.seed if d.seed is not None else "random"), ("rounds", d.rounds),
            ("candidates", d.candidates), ("raw", "on" if d.raw else "off")]
    state = controller.state
    if state.image_id:
        rows.append(("image", f"#{state.image_id} (seed {state.seed})"))
    text = "\n".join(f"{k:<11}{v}" for k, v in rows)
    if len(state.checks) > 1:  # the last run's requirements, with pass/fail marks
        mark = {True: "✓", False: "✗", None: "?"}
        text += "\n\nrequirements\n" + "\n".join(
            f"{mark[c.get('passed')]} {escape(printable(c.get('text', c.get('id')), keep=''))}" for c in state.checks)
    return text
