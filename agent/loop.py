"""The critique loop: generate N candidates, safety-check and score them against the intent, keep
the best, and if it is below the threshold revise the prompt and go again, within R rounds.

Plain Python over tool contracts (a backend, a safety checker, a scorer, a reviser); no LangChain
here, so the loop runs without any LLM and the safety checks can never be skipped by a model.
"""
from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from PIL import Image

from agent.errors import Cancelled, InvalidInput, SafetyBlocked
from agent.schemas import PromptSpec
from tools.generate import GenerateRequest, draw_seed

MAX_ROUNDS = 10
MAX_CANDIDATES = 16
DEFAULT_RELATIVE_THRESHOLD = 0.9
# Without a known-good image of the intent, relative thresholds are taken against a typical
# on-prompt CLIP cosine of 0.30 for ViT-B/32 (Promptist treats cosine < 0.28 as off-prompt);
# in CLIPScore units that is 2.5 x 0.30 = 0.75.
TYPICAL_ON_PROMPT = 0.75


@dataclass
class LoopOptions:
    rounds: int = 3
    candidates: int = 2
    threshold: float | None = None        # None: relative DEFAULT_RELATIVE_THRESHOLD
    threshold_mode: str = "relative"      # relative | absolute

    def check(self) -> "LoopOptions":
        if not isinstance(self.rounds, int) or not 1 <= self.rounds <= MAX_ROUNDS:
            raise InvalidInput(f"--rounds {self.rounds} is out of range.", f"Use 1 to {MAX_ROUNDS} rounds.")
        if not isinstance(self.candidates, int) or not 1 <= self.candidates <= MAX_CANDIDATES:
            raise InvalidInput(f"--candidates {self.candidates} is out of range.",
                               f"Use 1 to {MAX_CANDIDATES} candidates per round.")
        if self.threshold_mode not in {"relative", "absolute"}:
            raise InvalidInput(f"Unknown threshold mode '{self.threshold_mode}'.", "Use relative or absolute.")
        if self.threshold is not None:
            hi = 1.5 if self.threshold_mode == "relative" else 2.5
            if not 0.0 <= self.threshold <= hi:
                raise InvalidInput(f"--threshold {self.threshold} is out of range for a {self.threshold_mode} "
                                   f"threshold.", f"Use 0 to {hi:g} ({'fraction of the reference score' if hi == 1.5 else 'CLIPScore units'}).")
        return self


@dataclass
class Attempt:
    """What one round generates from: the structured prompt and its rendering, plus guidance."""

    spec: PromptSpec
    positive: str
    negative: str
    cfg: float
    change: str = "initial prompt"


@dataclass
class Candidate:
    seed: int
    image: Image.Image | None
    score: float | None
    blocked: str | None = None
    verdict: object = None  # an allowed (scored) image's safety verdict, saved with it, not re-checked


@dataclass
class RoundRecord:
    round: int
    prompt: str
    negative: str
    cfg: float
    change: str
    seeds: list[int]
    scores: list[float | None]
    blocked: list[dict]
    best_seed: int | None
    best_score: float | None
    seconds: float

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass
class LoopResult:
    best: Candidate
    best_round: int
    best_attempt: Attempt
    rounds: list[RoundRecord]
    threshold: dict
    met: bool
    stop_reason: str
    scheduler: str | None = None
    warnings: list[str] = field(default_factory=list)


# -- thresholds --------------------------------------------------------------------------------------
def calibrate(options: LoopOptions, intent: str, scorer, reference_images: Callable[[str], list] | None):
    """Turn the user's threshold into a target score, and say how (reported in the output)."""
    if options.threshold_mode == "absolute":
        value = options.threshold if options.threshold is not None else TYPICAL_ON_PROMPT
        return {"mode": "absolute", "value": value, "target": value, "formula": scorer.formula}
    value = options.threshold if options.threshold is not None else DEFAULT_RELATIVE_THRESHOLD
    images = reference_images(intent) if reference_images else []
    if images:
        scores = scorer.score(images, intent)
        reference, source = sum(scores) / len(scores), f"known-good rendered images of the intent ({len(images)})"
    else:
        reference, source = TYPICAL_ON_PROMPT, "typical on-prompt CLIP score (cosine 0.30)"
    return {"mode": "relative", "value": value, "reference": round(reference, 4), "reference_source": source,
            "target": round(value * reference, 4), "formula": scorer.formula}


# -- revision -----------------------------------------------------------------------------------------
class RuleReviser:
    """Revision without an LLM: subject first and weighted up, guidance raised, clutter dropped.
    Fresh seeds come from the loop itself every round."""

    name = "rules"

    def __init__(self, render: Callable[[PromptSpec], tuple[str, str]], max_cfg: float = 12.0):
        self.render = render
        self.max_cfg = max_cfg

    def revise(self, attempt: Attempt, history: list[RoundRecord], intent: str) -> Attempt:
        n = len(history)  # rounds done so far (>= 1)
        positive, negative = self.render(attempt.spec)
        subject = attempt.spec.subject
        weight = round(1.0 + 0.15 * n, 2)
        changes = []
        spec = attempt.spec
        if n >= 2 and (spec.extras or spec.composition or spec.lighting):
            spec = spec.model_copy(update={"extras": [], "composition": "", "lighting": ""})
            positive, negative = self.render(spec)
            changes.append("dropped extras, lighting and composition")
        rest = _without_subject(positive, subject)
        positive = f"({subject}:{weight:g})" + (f", {rest}" if rest else "")
        changes.insert(0, f"subject first, weight {weight:g}")
        cfg = min(self.max_cfg, attempt.cfg + 1.5)
        if cfg != attempt.cfg:
            changes.append(f"guidance {attempt.cfg:g} -> {cfg:g}")
        changes.append("fresh seeds")
        return Attempt(spec=spec, positive=positive, negative=negative, cfg=cfg, change="; ".join(changes))


def _without_subject(positive: str, subject: str) -> str:
    text = re.sub(r"\(([^():]+):[0-9.]+\)", r"\1", positive)  # drop earlier weights
    parts = [p.strip() for p in text.split(",") if p.strip() and p.strip().lower() != subject.lower()]
    return ", ".join(parts)


class LLMReviser:
    """Revision by an LLM with the critique prompt from prompts/critique_system.md. It sees the
    intent, the current structured prompt, the scores and what was tried, and returns a new
    PromptSpec. On any failure it falls back to the rule reviser and says so."""

    def __init__(self, chat_model, render, fallback: RuleReviser, name: str = "llm"):
        self.chat_model = chat_model
        self.render = render
        self.fallback = fallback
        self.name = name
        self.warnings: list[str] = []

    def revise(self, attempt: Attempt, history: list[RoundRecord], intent: str) -> Attempt:
        import json

        from langchain_core.messages import HumanMessage, SystemMessage

        import prompts

        tried = [{"round": r.round, "prompt": r.prompt, "cfg": r.cfg, "change": r.change,
                  "best_score": r.best_score, "scores": r.scores} for r in history]
        messages = [SystemMessage(prompts.read_text("critique_system.md")),
                    HumanMessage(json.dumps({"intent": intent, "current_spec": attempt.spec.model_dump(),
                                             "tried": tried}, indent=1))]
        try:
            spec = self.chat_model.with_structured_output(PromptSpec).invoke(messages)
            if not isinstance(spec, PromptSpec):
                spec = PromptSpec.model_validate(spec)
        except Exception as exc:  # junk, timeouts, refusals: the rules still make progress
            self.warnings.append(f"LLM revision failed ({type(exc).__name__}); used the rule reviser.")
            return self.fallback.revise(attempt, history, intent)
        positive, negative = self.render(spec)
        changed = [k for k, v in spec.model_dump().items() if v != attempt.spec.model_dump().get(k)]
        return Attempt(spec=spec, positive=positive, negative=negative, cfg=attempt.cfg,
                       change=f"{self.name} revised {', '.join(changed) or 'nothing'}; fresh seeds")


# -- the loop ---------------------------------------------------------------------------------------------
@dataclass
class LoopEvent:
    kind: str  # round_start | candidate | round_end | revised | done
    round: int
    data: dict = field(default_factory=dict)


def run_loop(*, intent: str, first: Attempt, base: GenerateRequest, options: LoopOptions, backend, safety,
             scorer, reviser, threshold: dict, check_prompt: Callable[[str], None],
             cancel: threading.Event | None = None, on_event: Callable[[LoopEvent], None] | None = None,
             step_progress=None, first_checked: bool = False) -> LoopResult:
    """Run the rounds. `base` carries steps, size, scheduler and the first seed; `check_prompt`
    raises SafetyBlocked for a blocked prompt (every revised prompt is checked too;
    `first_checked` says the caller has already checked the first one)."""
    emit = on_event or (lambda e: None)
    seed = base.seed if base.seed is not None else draw_seed()
    attempt, rounds, best, best_round, best_attempt = first, [], None, 0, first
    stop, scheduler = "rounds exhausted", None
    for r in range(1, options.rounds + 1):
        if cancel is not None and cancel.is_set():
            raise Cancelled("Run cancelled.")
        t0 = time.perf_counter()
        if r > 1 or not first_checked:
            check_prompt(attempt.positive)
        emit(LoopEvent("round_start", r, {"prompt": attempt.positive, "change": attempt.change}))
        seeds = [seed + (r - 1) * options.candidates + i for i in range(options.candidates)]
        request = GenerateRequest(prompt=attempt.positive, negative_prompt=attempt.negative, steps=base.steps,
                                  cfg=attempt.cfg, width=base.width, height=base.height, seed=seeds[0],
                                  scheduler=base.scheduler, count=options.candidates)
        result = backend.generate(request, progress=step_progress, cancel=cancel)
        scheduler = result.scheduler
        candidates, blocked = [], []
        allowed = []
        for image, s in zip(result.images, result.seeds):
            verdict = safety.check_image(image)
            if verdict.allowed:
                allowed.append((image, s, verdict))
            else:
                blocked.append({"seed": s, "category": verdict.category, "reason": verdict.reason})
                candidates.append(Candidate(s, None, None, verdict.category))
        if allowed:
            scores = scorer.score([im for im, _, _ in allowed], intent)
            candidates += [Candidate(s, im, float(sc), verdict=v) for (im, s, v), sc in zip(allowed, scores)]
        candidates.sort(key=lambda c: c.seed)
        for c in candidates:
            emit(LoopEvent("candidate", r, {"seed": c.seed, "score": c.score, "blocked": c.blocked}))
        scored = [c for c in candidates if c.score is not None]
        round_best = max(scored, key=lambda c: c.score) if scored else None
        record = RoundRecord(round=r, prompt=attempt.positive, negative=attempt.negative, cfg=attempt.cfg,
                             change=attempt.change, seeds=[c.seed for c in candidates],
                             scores=[None if c.score is None else round(c.score, 4) for c in candidates],
                             blocked=blocked, best_seed=round_best.seed if round_best else None,
                             best_score=round(round_best.score, 4) if round_best else None,
                             seconds=round(time.perf_counter() - t0, 3))
        rounds.append(record)
        emit(LoopEvent("round_end", r, record.to_json()))
        if round_best and (best is None or round_best.score > best.score):
            best, best_round, best_attempt = round_best, r, attempt
        if best is not None and best.score >= threshold["target"]:
            stop = f"threshold met in round {r}"
            break
        if r < options.rounds:
            attempt = reviser.revise(attempt, rounds, intent)
            emit(LoopEvent("revised", r, {"prompt": attempt.positive, "change": attempt.change}))
    if best is None:
        raise SafetyBlocked("Every candidate image was blocked by the safety policy.",
                           rounds[-1].blocked[0]["category"] if rounds and rounds[-1].blocked else "unsafe",
                           "Change the idea, or try again with other seeds.")
    result = LoopResult(best=best, best_round=best_round, best_attempt=best_attempt, rounds=rounds,
                        threshold=threshold, met=best.score >= threshold["target"], stop_reason=stop, scheduler=scheduler,
                        warnings=list(getattr(reviser, "warnings", [])))
    emit(LoopEvent("done", best_round, {"best_seed": best.seed, "best_score": best.score, "met": result.met}))
    return result
