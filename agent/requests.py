"""Building requests the same way at every front door: sampling fields from plain values, and an idea expanded into the prompt a generation takes.

`RunOptions` is what a critique-loop run is asked for beside its idea, built by each front door
and taken whole by Session.run / agent.critique.run.

The CLI (agent.commands.common.request_fields), the tools (agent.capabilities), batch lines
(agent.batch) and the chat all turn their own input (flags, an input model, a line, the chat's
defaults) into these calls, so the field names, the parsing of LoRAs and sizes and the
scheduler default live here once. Limits are checked where every request goes through
(tools.generate.check_request, tools.limits).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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


@dataclass(frozen=True)
class RunOptions:
    """One critique-loop run's request beside the idea (Session.run, agent.critique.run): the loop's
    budget and target, the first prompt (expanded, `raw` words, or an edited `spec`), the
    generation fields, the requirements (derived, given whole, and the user's corrections:
    agent.checklist_edits.edit_checklist), the reviser and the post-processing of the best image.
    Per-call control (the Call, the output folder, the chat id, a chat model) is passed beside it."""

    rounds: int = 3
    candidates: int = 2
    threshold: float | None = None          # None: the loop's default relative target
    threshold_mode: str = "relative"        # relative | absolute
    style: str | None = None                # a style preset for the expansion
    raw: bool = False                       # the idea's words are the prompt (no expansion)
    request_fields: dict = field(default_factory=dict)  # GenerateRequest fields (sampling_fields)
    spec: Any = None                        # a structured prompt (dict or PromptSpec) instead of expanding
    checklist: Any = None                   # requirements (Checklist, its JSON or a list) instead of deriving them
    require: tuple[str, ...] = ()           # requirements in words added to the checklist (--require)
    drop: tuple[str, ...] = ()              # requirement ids or numbers dropped from it (--drop)
    start: Any = None                       # a picture (path) to go on from: a follow-up repairs it, not a new one
    reviser: str = "auto"                   # rules | llm | auto
    post: Any = None                        # tools.postprocess.PostProcess for the best image
    extra: dict | None = None               # more entries for the best image's record

    def loop_options(self):
        """The loop's part (agent.loop.LoopOptions), checked: rounds, candidates and the target."""
        from agent.loop import LoopOptions

        return LoopOptions(rounds=self.rounds, candidates=self.candidates, threshold=self.threshold,
                           threshold_mode=self.threshold_mode).check()
