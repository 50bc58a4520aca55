"""Building requests the same way at every front door: sampling fields from plain values, and an idea expanded into the prompt a generation takes.

The CLI (agent.commands.common.request_fields), the tools (agent.capabilities), batch lines
(agent.batch) and the chat all turn their own input (flags, an input model, a line, the chat's
defaults) into these calls, so the field names, the parsing of LoRAs and sizes and the
scheduler default live here once. Limits are checked where every request goes through
(tools.generate.check_request, tools.limits).
"""
from __future__ import annotations

from dataclasses import dataclass

from tools.adapters import merge_loras, parse_lora
from tools.generate import SPEED_OPTIONS, parse_size


def sampling_fields(settings, *, negative: str = "", steps=None, cfg=None, seed=None, scheduler=None,
                    size: str | tuple | None = None, loras=(), controls=(), ip_adapter=None, refiner=None,
                    refiner_switch: float = 0.8, speed: dict | None = None) -> dict:
    """GenerateRequest fields (no prompt): steps/cfg None stay None (the session applies the
    model's defaults), the scheduler falls back to the settings', `size` is 'WxH' or (w, h),
    `loras` are Lora objects or 'PATH[:WEIGHT]' text (merged, later ones win), `speed` holds
    SPEED_OPTIONS values (unknown keys are a bug)."""
    width, height = parse_size(size) if isinstance(size, str) else (size or (None, None))
    extra = set(speed or ()) - set(SPEED_OPTIONS)
    assert not extra, f"not speed options: {extra}"
    return dict(negative_prompt=negative or "", steps=steps, cfg=cfg, seed=seed, width=width, height=height,
                scheduler=scheduler or settings.scheduler,
                loras=merge_loras(parse_lora(x) if isinstance(x, str) else x for x in loras),
                controls=tuple(controls), ip_adapter=ip_adapter, refiner=refiner, refiner_switch=refiner_switch,
                **{**SPEED_OPTIONS, **(speed or {})})


@dataclass(frozen=True)
class Expanded:
    """An idea expanded for a one-shot generation: what to generate and what to record."""

    prompt: str
    negative: str
    idea: str
    spec: dict            # the structured prompt (JSON)
    extra: dict           # {"expansion": ...} for the image's record
    expansion: object     # the agent.schemas.Expansion itself (warnings, expander, rendering)


def expand_for_generate(session, idea: str, *, style: str | None = None, negative: str = "", **options) -> Expanded:
    """Session.expand(idea) as a generation takes it (`options`: family, llm, use_llm)."""
    exp = session.expand(idea, style=style, negative=negative, **options)
    return Expanded(prompt=exp.positive, negative=exp.negative, idea=exp.idea, spec=exp.spec.model_dump(mode="json"),
                    extra={"expansion": exp.record()}, expansion=exp)
