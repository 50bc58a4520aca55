"""Prompt revisers: the loop's "prompt change" repair, behind one contract.

`reviser.revise(attempt, history, intent, failed) -> Attempt`, where `failed` lists the texts of
the requirements the best image failed. The rule reviser puts the failed items first and
weights them up (for the families whose text encoder reads weights), and drops clutter in later
rounds; it never raises guidance (measured: a blanket rise from 5 to 6.5 made demo images worse,
0.874 -> 0.728 correct). The LLM reviser asks a chat model with prompts/critique_system.md.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Callable, Protocol

from agent.schemas import PromptSpec

WEIGHTED_FAMILIES = {"sd", "sdxl"}


@dataclass
class Attempt:
    """What one round generates from: the structured prompt and its rendering, plus guidance."""

    spec: PromptSpec
    positive: str
    negative: str
    cfg: float
    change: str = "initial prompt"


class Reviser(Protocol):
    """What the loop asks of a reviser: a better attempt from the last one, the rounds so far and
    the requirements that failed (RuleReviser; LLMReviser with a chat model)."""

    name: str
    warnings: list[str]

    def revise(self, attempt: Attempt, history: list, intent: str, failed: list[str] | None = None) -> Attempt: ...


class RuleReviser:
    name = "rules"

    def __init__(self, render: Callable[[PromptSpec], tuple[str, str]], family: str = "sd"):
        self.render = render
        self.family = family
        self.warnings: list[str] = []

    def revise(self, attempt: Attempt, history: list, intent: str, failed: list[str] | None = None) -> Attempt:
        n = len(history)
        spec = attempt.spec
        changes = []
        if n >= 2 and (spec.extras or spec.composition or spec.lighting):
            spec = spec.model_copy(update={"extras": [], "composition": "", "lighting": ""})
            changes.append("dropped extras, lighting and composition")
        positive, negative = self.render(spec)
        focus = [f for f in (failed or []) if f] or [spec.subject]
        if self.family in WEIGHTED_FAMILIES:
            weight = round(1.0 + 0.15 * n, 2)
            lead = ", ".join(f"({f}:{weight:g})" for f in focus)
            changes.insert(0, f"failed items first, weight {weight:g}: {'; '.join(focus)}")
        else:
            lead = ", ".join(focus)
            changes.insert(0, f"failed items first: {'; '.join(focus)}")
        rest = _without(positive, focus)
        if self.family == "demo":  # the demo model reads only its grammar: keep the prompt, change seeds
            positive = attempt.positive
            changes = ["same prompt (the demo model reads only its grammar)"]
        else:
            positive = lead + (f", {rest}" if rest else "")
        changes.append("fresh seeds")
        return Attempt(spec=spec, positive=positive, negative=negative, cfg=attempt.cfg, change="; ".join(changes))


def _without(positive: str, phrases: list[str]) -> str:
    text = re.sub(r"\(([^():]+):[0-9.]+\)", r"\1", positive)  # drop earlier weights
    drop = {p.strip().lower() for p in phrases}
    parts = [p.strip() for p in text.split(",") if p.strip() and p.strip().lower() not in drop]
    return ", ".join(parts)


class LLMReviser:
    """Revision by an LLM with the critique prompt from prompts/critique_system.md. It sees the
    intent, the current structured prompt, the failed requirements and what was tried, and returns
    a new PromptSpec. On any failure it falls back to the rule reviser and says so."""

    def __init__(self, chat_model, render, fallback: RuleReviser, name: str = "llm", method: str | None = None,
                 home=None):
        self.chat_model = chat_model
        self.render = render
        self.fallback = fallback
        self.name = name
        self.method = method
        self.home = home  # the settings' home: prompts/critique_system.md may be overridden there
        self.warnings: list[str] = []

    def revise(self, attempt: Attempt, history: list, intent: str, failed: list[str] | None = None) -> Attempt:
        from langchain_core.messages import HumanMessage, SystemMessage

        import prompts

        tried = [{"round": r.round, "prompt": r.prompt, "change": r.change, "failed": r.failed,
                  "best_score": r.best_score} for r in history]
        messages = [SystemMessage(prompts.read_text("critique_system.md", self.home)),
                    HumanMessage(json.dumps({"intent": intent, "current_spec": attempt.spec.model_dump(),
                                             "failed_requirements": failed or [], "tried": tried}, indent=1))]
        from agent.llm import bind_structured, structured_call

        try:
            spec, problem, _ = structured_call(bind_structured(self.chat_model, PromptSpec, self.method),
                                               PromptSpec, messages)
            if spec is None:
                raise ValueError(problem)
            from agent.spec_checks import drop_conflicts, drop_junk_items, spec_problems

            spec = drop_conflicts(drop_junk_items(spec), intent)
            problems = spec_problems(spec, intent, prompts.read_text("critique_system.md", self.home))
            if problems:
                raise ValueError("; ".join(problems))
        except Exception as exc:  # junk, timeouts, refusals: the rules still make progress
            self.warnings.append(f"LLM revision failed ({type(exc).__name__}: {_why(exc)}); used the rule reviser.")
            return self.fallback.revise(attempt, history, intent, failed)
        positive, negative = self.render(spec)
        changed = [k for k, v in spec.model_dump().items() if v != attempt.spec.model_dump().get(k)]
        return Attempt(spec=spec, positive=positive, negative=negative, cfg=attempt.cfg,
                       change=f"{self.name} revised {', '.join(changed) or 'nothing'}; fresh seeds")


def _why(exc) -> str:
    from agent.llm import short_error

    return short_error(exc)[:160]
