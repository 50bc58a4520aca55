"""The critique loop wired to a session's tools: expansion, checklist, verifier, reviser, composer, and saving the best image.

`run(session, idea, ...)` is what `Session.run` does; the loop itself (agent.loop) is plain
Python over these contracts.
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from agent.config import DEMO
from agent.errors import InvalidInput
from agent.events import Call, Phase, RoundFinished, call_of
from agent.outcomes import RunOutcome
from agent.requests import RunOptions
from agent.saving import Made, check_post, save_images
from tools.adapters import merge_loras, split_prompt_loras
from tools.generate import GenerateRequest, check_request
from tools.postprocess import PostProcess


def run(session, idea: str, options: RunOptions | None = None, *, call: Call | None = None,
        out_dir: str | Path | None = None, chat_id: str | None = None, chat_model=None) -> RunOutcome:
    """The critique loop (agent.loop): expand the idea and derive its checklist, then per
    round generate candidates, safety-check them, score them against the idea, verify every
    requirement, keep the best, and repair what failed until every requirement holds or
    `rounds` are spent. Every round is recorded in the gallery as it ends; the best image is
    saved with the round table and its recipe in its metadata.
    `options` (agent.requests.RunOptions): the budget, the first prompt, the fields, the reviser
    (rules | llm | auto: llm when one is configured or passed), the post-processing (of the best
    image as it is saved; candidates are scored and verified as generated).
    `call` (agent.events.Call): cancel it to stop at the next step; its sink gets every round
    event and the steps. `chat_model`: a LangChain chat model for expansion, requirements and
    revision instead of the configured one."""
    o = options or RunOptions()
    call = call_of(call)
    post = check_post(o.post)
    from agent import loop
    from agent.render import guess_family

    options = o.loop_options()
    fields_ = dict(o.request_fields or {})
    negative = fields_.pop("negative_prompt", "") or ""
    idea, tagged = split_prompt_loras(idea)  # <lora:NAME:W> in the idea: an adapter, not words to expand
    if tagged:
        fields_["loras"] = merge_loras([*fields_.get("loras", ()), *tagged])
    family = guess_family(session.settings.model, session.settings.backends[0])
    spec, positive, neg, warnings = _first_prompt(session, idea, o.spec, o.raw, o.style, negative, family, chat_model)
    checklist, verifier, more = _checklist(session, idea, spec, o, chat_model)  # a bad edit: before a model loads
    warnings += more
    positive, intent = drawn_edits(positive, idea, checklist, o.require, family)
    base = check_request(session.with_defaults(GenerateRequest(prompt=positive, negative_prompt=neg, **fields_)))
    session.check_prompt(idea)
    session.check_prompt(positive)
    backend, checker, scorer = session.backend(), session.safety(), session.scorer()
    render_spec = _renderer(family)
    chosen = reviser_for(session, o.reviser, chat_model, render_spec, family)
    planner = composer = None
    if verifier is not None and "compose" in getattr(backend, "capabilities", ()):
        from agent.layout import RunPlanner

        w, h = (base.width, base.height) if base.width and base.height else backend.native_size()
        planner = RunPlanner(checklist, width=w, height=h, prompt=positive, negative=neg, steps=base.steps,
                             cfg=base.cfg, layout_control=layout_control(session, backend))
        locate = locator(verifier)
        composer = lambda plan, image: backend.compose(plan, locate, image, cancel=call.cancel)  # noqa: E731
    t0 = time.perf_counter()
    spec_json = spec.model_dump()

    def record_rounds(event):  # each round is in the gallery as soon as it ends
        if isinstance(event, RoundFinished):
            session.gallery.add_round(run_id, event.round, event.row)
        call.emit(event)

    out_dir = session.out_dir(out_dir)  # before any round runs
    with session.recorded("run", idea=idea, spec=spec_json, chat_id=chat_id,
                          params=dict(base.params(), rounds=o.rounds, candidates=o.candidates)) as run_id:
        threshold_info = loop.calibrate(options, intent, scorer, (lambda text: _reference_images(session, text)))
        result = loop.run_loop(intent=intent, first=loop.Attempt(spec, positive, neg, base.cfg), base=base,
                               options=options, backend=backend, safety=checker, scorer=scorer,
                               reviser=chosen, threshold=threshold_info, check_prompt=session.check_prompt,
                               checklist=checklist, verifier=verifier, planner=planner, composer=composer,
                               call=call.with_sink(record_rounds), first_checked=True,
                               start=_start(o.start, backend))
        best = _save_best(session, run_id, result, base, backend, idea, out_dir, checklist, chosen.name,
                          scorer.formula, verifier, post, o.extra)
    call.emit(Phase("done"))
    outcome = RunOutcome(run_id=run_id, best=best, score=round(result.best.score, 4),
                         spec=best.record.get("spec", spec_json), rounds=[r.to_json() for r in result.rounds],
                         threshold=result.threshold, met=result.met, stop_reason=result.stop_reason,
                         warnings=warnings + ([threshold_info["warning"]] if threshold_info.get("warning")
                                              else []) + result.warnings,
                         timings={"total_s": round(time.perf_counter() - t0, 3)},
                         checklist=checklist.to_json(), checks=[v.to_json() for v in result.best.checks],
                         images=result.images)
    session.gallery.finish_run(run_id, "done", result=outcome.to_json())
    return outcome


def _start(path, backend):
    """The loop's starting candidate from a picture's file and record (None: draw afresh)."""
    if path is None:
        return None
    from agent.loop import Candidate
    from tools.images import load_image
    from tools.metadata import read_metadata

    image = load_image(path).convert("RGB")
    record = read_metadata(path).get("record") or {}
    params = record.get("params") or {}
    if params.get("mode") == "compose" and record.get("recipe"):
        recipe = record["recipe"]
    elif params.get("mode", "txt2img") == "txt2img" and params and not record.get("post"):
        recipe = {**params, "mode": "txt2img", "seed": record.get("seed"), "count": 1,
                  "width": record.get("width"), "height": record.get("height")}
    else:
        recipe = None   # an edited or post-processed picture: what is made from it cannot be replayed
    made = {"backend": record.get("backend", getattr(backend, "name", "")), "model": record.get("model", ""),
            "fallback": []}
    return Candidate(seed=int(record.get("seed") or 0), image=image, score=None, recipe=recipe, made_by=made)


def drawn_edits(positive: str, idea: str, checklist, require, family: str) -> tuple[str, str]:
    """(prompt, intent) for a checklist the user corrected (--require, --drop, /require, /drop):
    what is required must also be asked for, or the model never draws it. The demo model reads
    only its grammar, so its prompt (and the intent scored) becomes the edited checklist as a
    caption where the grammar can say it; other models get the added texts after their prompt."""
    from agent.requirements import caption_of

    if family == "demo" and checklist.source.endswith("+edited"):
        caption = caption_of(checklist)
        return (caption, caption) if caption else (positive, idea)
    if not require:
        return positive, idea
    added = [t for t in require if t.lower() not in positive.lower()]
    return (", ".join([positive, *added]) if added else positive), idea


def _first_prompt(session, idea, spec, raw, style, negative, family, chat_model):
    """(spec, positive, negative, warnings) for the first round: an edited spec, the raw idea,
    or the expansion of the idea."""
    from agent.render import render
    from agent.schemas import PromptSpec

    if spec is not None:
        spec = PromptSpec.model_validate(spec)
        rendered = render(spec, family)
        return spec, rendered.positive, ", ".join(x for x in (rendered.negative, negative) if x), []
    if raw:
        return PromptSpec(subject=idea.strip() or "-"), idea, negative, []
    expansion = session.expand(idea, style=style, negative=negative, chat_model=chat_model)
    return expansion.spec, expansion.positive, expansion.negative, list(expansion.warnings)


def _renderer(family):
    from agent.render import render

    def render_spec(s):
        out = render(s, family)
        return out.positive, out.negative
    return render_spec


def reviser_for(session, reviser: str, chat_model, render_spec, family):
    from agent.revise import LLMReviser, RuleReviser

    rules = RuleReviser(render_spec, family)
    use_llm = reviser == "llm" or (reviser == "auto" and (chat_model is not None or session.settings.llm_model))
    if not use_llm:
        return rules
    from agent.errors import LLMError
    from agent.llm import build_chat_model
    from agent.llm_probe import resolve_method

    try:
        model = chat_model if chat_model is not None else build_chat_model(session.settings)
        method = resolve_method(session.settings) if chat_model is None else None
    except LLMError as exc:  # unreachable or unconfigured: the rules still make progress
        rules.warnings.append(f"LLM revision is off ({exc.message}); used the rule reviser.")
        return rules
    return LLMReviser(model, render_spec, rules, name=f"llm:{session.settings.llm_model or 'chat'}", method=method,
                      home=session.settings.home)


def derive_checklist(session, idea: str, subject: str | None = None, *, chat_model=None, given=None,
                     require=(), drop=()):
    """The requirements of a run and what this session's verifier cannot check: (Checklist,
    warnings). Derived from the idea (agent.requirements.checklist_for), or `given` whole (a
    Checklist, its JSON or a list of requirements: agent.checklist_edits.checklist_from), then
    corrected by the user's `require` texts and `drop` ids (agent.checklist_edits.edit_checklist;
    what the edit did beyond the obvious is in the warnings)."""
    from agent.checklist_edits import checklist_from, edit_checklist

    if given is not None:
        cl, warnings = checklist_from(given), []
    else:
        cl, warnings = _derived(session, idea, subject, chat_model)
    if require or drop:
        cl, notes = edit_checklist(cl, require, drop)
        warnings += notes
    return cl, warnings + _unsupported(session, cl)


def _derived(session, idea: str, subject: str | None, chat_model):
    from agent.requirements import checklist_for

    method, early = None, []
    if chat_model is None and session.settings.llm_model:
        from agent.errors import LLMError
        from agent.llm import build_chat_model
        from agent.llm_probe import resolve_method

        try:
            chat_model = build_chat_model(session.settings)
            method = resolve_method(session.settings)
        except LLMError as exc:  # the rules still give a checklist
            chat_model, early = None, [f"The LLM could not write the requirements ({exc.message}); "
                                       "used the rule parser."]
    cl, warnings = checklist_for(idea, subject, chat_model=chat_model, method=method)
    return cl, (early if cl.source != "demo-grammar" else []) + warnings


def _unsupported(session, cl) -> list[str]:
    """Sets what the session's verifier cannot check on `cl`; the warnings that say so."""
    verifier = session.verifier()
    cl.unsupported = verifier.unsupported(cl) if verifier is not None else []
    if cl.unsupported and session.settings.model == DEMO:
        from tools import demo

        return [demo.cannot_draw(cl.unsupported)]
    if cl.unsupported:
        return [f"The detector cannot check: {', '.join(cl.unsupported)}."]
    return []


def _checklist(session, idea, spec, options: RunOptions, chat_model):
    cl, warnings = derive_checklist(session, idea, spec.subject, chat_model=chat_model, given=options.checklist,
                                    require=tuple(options.require or ()), drop=tuple(options.drop or ()))
    verifier = session.verifier()
    if verifier is None:
        warnings.append("No detector for this model: 'met' is judged by CLIP alone (set --detector).")
    return cl, verifier, warnings


def locator(verifier):
    def locate(image, label):
        boxes = verifier.detector.detect(image, [label]).get(label) or []
        return boxes[0] if boxes else None
    return locate


def _save_best(session, run_id, result, base, backend, idea, out_dir, checklist, reviser_name, formula, verifier,
               post: PostProcess | None = None, more: dict | None = None):
    # the base request (size, steps, scheduler, LoRAs, conditions, speed options) with the best's words
    best_req = replace(base, prompt=result.best_attempt.positive, count=1, seed=result.best.seed,
                       negative_prompt=result.best_attempt.negative, cfg=result.best_attempt.cfg)
    image = result.best.image
    made = result.best.made_by or _maker(backend, "compose")  # a composed image: the compose backend
    generated = Made(images=[image], seeds=[result.best.seed], model=made["model"], backend=made["backend"],
                     scheduler=result.scheduler, fallback=tuple(made.get("fallback", ())))
    loop_record = {"score": round(result.best.score, 4), "formula": formula, "round": result.best_round,
                   "threshold": result.threshold, "met": result.met, "stop_reason": result.stop_reason,
                   "reviser": reviser_name, "rounds": [r.to_json() for r in result.rounds],
                   "checklist": checklist.to_json(), "checks": [v.to_json() for v in result.best.checks],
                   "verifier": verifier.name if verifier is not None else None, "images": result.images}
    extra = {**(more or {}), "loop": loop_record}
    params_update = None
    if result.best.recipe is not None and result.best.recipe.get("mode") == "compose":
        extra["recipe"] = result.best.recipe
        params_update = {"mode": "compose"}
    saved = save_images(session, run_id, best_req, generated, idea=idea, spec=result.best_attempt.spec.model_dump(),
                        out_dir=out_dir, inputs=None, extra=extra, verdicts=[result.best.verdict],
                        params_update=params_update, post=post)
    best = saved.images[0]
    session.gallery.set_image_score(best.image_id, result.best.score, result.best_round)
    return best


def _reference_images(session, intent: str) -> list:
    """Known-good images of the intent, for calibrating relative thresholds: with the demo CLIP,
    the demo world draws them (tools.demo.reference_images); none for other scorers."""
    if str(session.settings.clip_model) != DEMO:
        return []
    from tools import demo

    return demo.reference_images(intent)


def layout_control(session, backend) -> float | None:
    """The layout ControlNet's scale for the loop's layout repair, or None to compose in latents
    (settings.layout_repair: auto uses the ControlNet where the model has one)."""
    mode = session.settings.layout_repair
    has = mode != "latent" and getattr(backend, "has_control", lambda kind: False)("layout")
    if mode == "control" and not has:
        raise InvalidInput(f"layout_repair is 'control', but the model '{backend.model}' has no layout ControlNet.",
                           "Set IMAGENT_LAYOUT_REPAIR (or layout_repair in config.json) to auto or latent.")
    return 1.0 if has else None


def _maker(backend, capability: str) -> dict:
    """{backend, model} of what serves `capability` first: the backend itself, or the first of a
    chain (tools.fallback) that can."""
    from tools.fallback import FallbackBackend

    chosen = backend.serving(capability) if isinstance(backend, FallbackBackend) else backend
    return {"backend": chosen.name, "model": chosen.model}
