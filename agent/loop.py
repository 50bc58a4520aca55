"""The critique loop: generate, verify every requirement, repair what failed, stop when all hold.

Each round makes candidates, safety-checks every image, scores it against the intent (the
holistic score) and, with a verifier, checks every requirement of the checklist on it. The best
candidate is the one that passes the most requirements (then the higher score). The run is met
only when every requirement of the best passes and its score clears the floor; otherwise the
failed requirements choose the next round's repair, and the table records which:

- `edit`: keep the objects that pass, erase the extra or wrong ones, move the pair of a failed
  relation, add missing ones (tools.compose over the best image); one composed candidate;
- `layout`: plan a box per object and generate each inside it (tools.compose), or draw the boxes
  with the model's layout ControlNet in one generation where it has one; one candidate;
- `prompt`: the reviser moves the failed items first (no guidance rise), with fresh seeds (the
  demo model's reviser keeps its prompt: only the seeds change).

Without a verifier, the loop judges by the score alone and says so. Plain Python over tool
contracts (backend, safety, scorer, verifier, reviser, composer); no LangChain here.
"""
from __future__ import annotations

import dataclasses

import time
from dataclasses import dataclass, field
from typing import Callable

from PIL import Image

from agent.errors import BackendError, InvalidInput, SafetyBlocked
from agent.events import Call, CandidateScored, LoopFinished, Revised, RoundFinished, RoundStarted, call_of
from agent.revise import Attempt, Reviser
from tools.contracts import Composer, ImageBackend, ImageScorer, SafetyChecker, Verifier
from tools.generate import GenerateRequest
from tools.limits import check_range
from tools.requirements import Checklist, RequirementVerdict, summarize

DEFAULT_RELATIVE_THRESHOLD = 0.8
# Without a known-good image of the intent, relative thresholds are taken against a typical
# on-prompt CLIP cosine of 0.30 for ViT-B/32 (Promptist treats cosine < 0.28 as off-prompt);
# in CLIPScore units that is 2.5 x 0.30 = 0.75.
TYPICAL_ON_PROMPT = 0.75
STRUCTURAL = {"object", "relation", "exclusive"}
SCORE_MAX = {"clipscore": 2.5, "torchmetrics": 100.0, "cosine": 1.0}  # the most each formula can give

__all__ = ["Attempt", "LoopOptions", "Candidate", "RoundRecord", "LoopResult", "calibrate",
           "run_loop", "choose_repair"]


@dataclass
class LoopOptions:
    rounds: int = 3
    candidates: int = 2
    threshold: float | None = None        # None: relative DEFAULT_RELATIVE_THRESHOLD
    threshold_mode: str = "relative"      # relative | absolute

    def check(self) -> "LoopOptions":
        for name in ("rounds", "candidates"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise InvalidInput(f"{name} must be a whole number, not {value!r}.", param=name)
            check_range(name, value)
        if self.threshold_mode not in {"relative", "absolute"}:
            raise InvalidInput(f"Unknown threshold mode '{self.threshold_mode}'.", "Use relative or absolute.")
        if self.threshold is not None:
            hi = 1.5 if self.threshold_mode == "relative" else 2.5
            if not 0.0 <= self.threshold <= hi:
                raise InvalidInput(f"threshold {self.threshold} is out of range for a {self.threshold_mode} "
                                   f"threshold.", f"Use 0 to {hi:g} ({'fraction of the reference score' if hi == 1.5 else 'CLIPScore units'}).")
        return self


@dataclass
class Candidate:
    seed: int
    image: Image.Image | None
    score: float | None
    blocked: str | None = None
    verdict: object = None  # an allowed (scored) image's safety verdict, saved with it, not re-checked
    checks: list[RequirementVerdict] = field(default_factory=list)
    recipe: dict | None = None  # how the image was made: txt2img params or a composition (replayable)
    made_by: dict | None = None  # {backend, model, fallback} of a generated image; None for a composed one

    @property
    def passed(self) -> int:
        return sum(1 for v in self.checks if v.passed)

    @property
    def all_pass(self) -> bool:
        return bool(self.checks) and all(v.passed for v in self.checks)

    @property
    def failed(self) -> list[RequirementVerdict]:
        return [v for v in self.checks if v.passed is False]

    def key(self) -> tuple:
        return (self.all_pass, self.passed / max(1, len(self.checks)), self.score or 0.0)


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
    repair: str = "initial"
    images: int = 0
    checks: list[list[dict]] = field(default_factory=list)   # per candidate, one verdict per requirement
    best_checks: dict = field(default_factory=dict)          # summary of the round's best
    failed: list[str] = field(default_factory=list)          # failed requirement texts of the round's best
    recipe: dict | None = None
    fallback: list[dict] = field(default_factory=list)  # backends of a chain passed over this round, and why

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items()
                if not (k == "recipe" and v is None) and not (k == "fallback" and not v)}


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
    images: int = 0


# -- thresholds --------------------------------------------------------------------------------------
def calibrate(options: LoopOptions, intent: str, scorer, reference_images: Callable[[str], list] | None):
    """Turn the user's threshold into the holistic floor, and say how (reported in the output)."""
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
    out = {"mode": "relative", "value": value, "reference": round(reference, 4), "reference_source": source,
           "target": round(value * reference, 4), "formula": scorer.formula}
    top = SCORE_MAX.get(scorer.formula)
    if top is not None and out["target"] > top:
        out["warning"] = (f"The relative threshold {value:g} x the reference {reference:.2f} is a target of "
                          f"{out['target']:.2f}, above the {scorer.formula} maximum {top:g}: it is never met, so "
                          f"every round runs. Use a threshold of at most {top / reference:.2f}, or an absolute one.")
    return out


# -- repair policy ------------------------------------------------------------------------------------
def choose_repair(best: Candidate, can_compose: bool, history: list[RoundRecord], keep: bool = False) -> str:
    """The next round's repair from what the best image failed (see the module docstring). `keep`
    (a follow-up of a picture): edit it again after a failed edit, and lay it out afresh only after
    two, so that what was not mentioned stays where it was as long as a repair can keep it."""
    kinds = {v.kind for v in best.failed}
    last = history[-1].repair if history else "initial"
    kept = best.passed > 0 or _keeps_something(best)
    if keep and can_compose and kinds and kept and [h.repair for h in history[-2:]] != ["edit", "edit"]:
        return "edit"
    if kinds - {"holistic"} == {"background"} and can_compose and best.passed > 0:
        # the objects hold: recolour the background around them (no fresh scene)
        return "edit" if last != "edit" else "prompt"
    if kinds & STRUCTURAL and can_compose:
        # edit the best image when something in it passes (and the last round was not already an
        # edit of it); otherwise lay the scene out afresh
        return "edit" if last != "edit" and kept else "layout"
    return "prompt"


def _keeps_something(best: Candidate) -> bool:
    """Whether an object of the best image matches what is asked (a count short of its number still
    keeps the ones there: "make it three" adds two to the one circle, it does not draw three anew)."""
    return any(b.get("match") for v in best.checks if v.kind == "object" for b in v.evidence.get("found", []))


# -- the loop ---------------------------------------------------------------------------------------------
def run_loop(*, intent: str, first: Attempt, base: GenerateRequest, options: LoopOptions, backend: ImageBackend,
             safety: SafetyChecker, scorer: ImageScorer, reviser: Reviser, threshold: dict,
             check_prompt: Callable[[str], None], checklist: Checklist | None = None, verifier: Verifier | None = None,
             planner=None, composer: Composer | None = None,
             call: Call | None = None, first_checked: bool = False, start: Candidate | None = None) -> LoopResult:
    """Run the rounds. `base` carries steps, size, scheduler and the first seed; `check_prompt`
    raises SafetyBlocked for a blocked prompt (every revised prompt is checked too;
    `first_checked` says the caller has already checked the first one). `planner` (agent.layout
    functions bound to this run) and `composer` (plan, base image -> tools.compose.ComposeResult)
    enable the edit and layout repairs. `base` comes checked (tools.generate.check_request: its
    seed is drawn there, once). `call` (agent.events.Call) stops the run at its next step when
    cancelled and receives the round events and the backend's steps. `start`: a picture to go on
    from (a follow-up in a conversation: its image and recipe); it is checked against the checklist
    first, and the first round repairs what it fails instead of drawing afresh."""
    call = call_of(call)
    emit, step_progress = call.emit, call.steps()
    if base.seed is None:
        raise InvalidInput("The loop's base request has no seed.", "Pass it through tools.generate.check_request first.")
    seed = base.seed
    checklist = checklist or Checklist([])
    attempt, rounds, best, best_round, best_attempt = first, [], None, 0, first
    stop, scheduler, spent = "rounds exhausted", None, 0
    repair, loop_warnings = "initial", []
    can_compose = verifier is not None and planner is not None and composer is not None
    next_seed = seed
    if start is not None:
        start.verdict = safety.check_image(start.image)
        if not start.verdict.allowed:
            raise SafetyBlocked("The current picture is blocked by the safety policy.",
                                start.verdict.category or "unsafe", "Start from another picture.")
        start.score = float(scorer.score([start.image], intent)[0])
        start.checks = _check(verifier, start.image, checklist, start.score, threshold)
        best, best_round = start, 0
        if start.all_pass:
            stop = "every requirement already holds in the current picture"
        else:
            repair = choose_repair(start, can_compose, [], keep=True)
            if repair == "prompt":  # nothing of the picture can be kept: draw afresh, and say so
                loop_warnings.append("The current picture could not be repaired in place; drew a new one.")
    budget = 0 if start is not None and start.all_pass else options.rounds
    for r in range(1, budget + 1):
        call.check("Run cancelled.")
        t0 = time.perf_counter()
        if r > 1 or not first_checked:
            check_prompt(attempt.positive)
        emit(RoundStarted(r, options.rounds, attempt.positive, attempt.change, repair))
        recipe, plain, made_by = None, {}, None
        if repair in ("edit", "layout"):
            plan = planner.edit(best, next_seed) if repair == "edit" else None
            if plan is None and repair == "edit" and start is not None:
                plan = planner.touch_up(next_seed)  # a follow-up whose objects hold: finish it again, keep it
            plan = plan or planner.layout(next_seed)
            repair = "edit" if plan.use_base else "layout"
            for pl in plan.placements:
                if pl.prompt:
                    check_prompt(pl.prompt)
            try:
                out = composer(plan, best.image if plan.use_base else None)
            except BackendError as exc:  # e.g. no object could be located: fall back to fresh seeds
                loop_warnings.append(f"Round {r}: the {repair} repair failed ({exc.message}); used fresh seeds.")
                repair = "prompt"
            else:
                spent += out.images_generated
                recipe = {"mode": "compose", "plan": plan.to_json(), "placed": out.placed,
                          **({"base": best.recipe} if plan.use_base else {})}
                images, seeds = [out.image], [next_seed]
                next_seed += 1
        if recipe is None:
            seeds = [next_seed + i for i in range(options.candidates)]
            next_seed += options.candidates
            # the base request (size, steps, scheduler, adapters, speed options) with this attempt's words
            request = dataclasses.replace(base, prompt=attempt.positive, negative_prompt=attempt.negative,
                                          cfg=attempt.cfg, seed=seeds[0], count=options.candidates)
            result = backend.generate(request, progress=step_progress, cancel=call.cancel)
            scheduler = result.scheduler
            made_by = {"backend": result.backend, "model": result.model, "fallback": list(result.fallback)}
            if result.fallback:
                loop_warnings.append(f"Round {r}: {result.backend} made the images; " + "; ".join(
                    f"{s['backend']} was skipped ({s['error']})" for s in result.fallback) + ".")
            images, seeds = result.images, result.seeds
            plain = {**request.params(), "seed": None, "count": 1, "width": result.width,
                     "height": result.height}
            spent += len(images)
        candidates, blocked, allowed = [], [], []
        for image, s in zip(images, seeds):
            verdict = safety.check_image(image)
            if verdict.allowed:
                allowed.append((image, s, verdict))
            else:
                blocked.append({"seed": s, "category": verdict.category, "reason": verdict.reason})
                candidates.append(Candidate(s, None, None, verdict.category))
        if allowed:
            scores = scorer.score([im for im, _, _ in allowed], intent)
            for (im, s, v), sc in zip(allowed, scores):
                c = Candidate(s, im, float(sc), verdict=v, recipe=recipe or dict(plain, seed=s), made_by=made_by)
                c.checks = _check(verifier, im, checklist, float(sc), threshold)
                candidates.append(c)
        candidates.sort(key=lambda c: c.seed)
        for c in candidates:
            emit(CandidateScored(r, c.seed, c.score, c.blocked, tuple(v.to_json() for v in c.checks)))
        scored = [c for c in candidates if c.score is not None]
        round_best = max(scored, key=Candidate.key) if scored else None
        record = RoundRecord(round=r, prompt=attempt.positive, negative=attempt.negative, cfg=attempt.cfg,
                             change=_describe(repair, attempt, round_best), seeds=[c.seed for c in candidates],
                             scores=[None if c.score is None else round(c.score, 4) for c in candidates],
                             blocked=blocked, best_seed=round_best.seed if round_best else None,
                             best_score=round(round_best.score, 4) if round_best else None,
                             seconds=round(time.perf_counter() - t0, 3), repair=repair,
                             images=len(images) if recipe is None else recipe_images(recipe),
                             checks=[[v.to_json() for v in c.checks] for c in candidates],
                             best_checks=summarize(round_best.checks) if round_best else {},
                             failed=[v.text for v in round_best.failed] if round_best else [],
                             recipe=recipe, fallback=made_by["fallback"] if made_by else [])
        rounds.append(record)
        emit(RoundFinished(r, options.rounds, record.to_json()))
        if round_best and (best is None or round_best.key() > best.key()):
            best, best_round, best_attempt = round_best, r, attempt
        if best is not None and best.all_pass:
            stop = f"every requirement met in round {r}" if verifier is not None else f"threshold met in round {r}"
            break
        if r < options.rounds and best is not None:
            repair = choose_repair(best, can_compose, rounds, keep=start is not None)
            if repair == "prompt":
                attempt = reviser.revise(attempt, rounds, intent, [v.text for v in best.failed
                                                                   if v.kind != "holistic"])
                emit(Revised(r, attempt.positive, attempt.change))
    if best is None:
        raise SafetyBlocked("Every candidate image was blocked by the safety policy.",
                            rounds[-1].blocked[0]["category"] if rounds and rounds[-1].blocked else "unsafe",
                            "Change the idea, or try again with other seeds.")
    warnings = loop_warnings + list(getattr(reviser, "warnings", []))
    if not best.all_pass:
        failed = [v.text for v in best.failed]
        unchecked = [v.text for v in best.checks if v.passed is None]
        stop = "rounds exhausted" + (f"; failing: {'; '.join(failed)}" if failed else "") + \
               (f"; cannot check: {'; '.join(unchecked)}" if unchecked else "")
    result = LoopResult(best=best, best_round=best_round, best_attempt=best_attempt, rounds=rounds,
                        threshold=threshold, met=best.all_pass, stop_reason=stop, scheduler=scheduler,
                        warnings=warnings, images=spent)
    emit(LoopFinished(len(rounds), best_round, best.seed, best.score, result.met))
    return result


def recipe_images(recipe: dict) -> int:
    placed = recipe.get("placed", [])
    if recipe["plan"].get("layout_control") is not None and not recipe["plan"].get("use_base"):
        return 1  # drawn by the layout ControlNet in one generation
    gen = sum(1 for p in placed if p.get("from") == "generated")
    return gen + (1 if recipe["plan"].get("finish_strength", 0) > 0 else 0)


def _check(verifier, image, checklist: Checklist, score: float, threshold: dict) -> list[RequirementVerdict]:
    checks = verifier.verify(image, checklist) if verifier is not None else []
    h = checklist.get("holistic")
    checks.append(RequirementVerdict("holistic", "holistic", score >= threshold["target"], 0.6,
                                     {"score": round(score, 4), "floor": threshold["target"]},
                                     h.text if h else "the whole image"))
    return checks


def _describe(repair: str, attempt: Attempt, best: Candidate | None) -> str:
    if repair == "initial":
        return attempt.change
    if repair == "prompt":
        return attempt.change
    if best is not None and best.recipe and best.recipe.get("mode") == "compose":
        placed = best.recipe.get("placed", [])
        moved = [p["label"] for p in placed if p.get("from") == "base"]
        added = [p["label"] for p in placed if p.get("from") == "generated"]
        erased = len(best.recipe["plan"].get("erase", []))
        if repair == "edit":
            recoloured = best.recipe["plan"].get("background")
            parts = ([f"moved {', '.join(moved)}"] if moved else []) + ([f"added {', '.join(added)}"] if added else []) \
                + ([f"erased {erased}"] if erased else []) + ([f"background -> {recoloured}"] if recoloured else [])
            return "edit: " + ("; ".join(parts) or "kept the image")
        if any(p.get("from") == "control" for p in placed):
            return f"layout: {len(placed)} object(s) drawn in planned boxes by the layout ControlNet"
        return f"layout: {len(placed)} object(s) generated in planned boxes"
    return repair
