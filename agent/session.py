"""The one facade every front end uses (CLI, TUI, MCP, Python API).

A Session owns the settings, the gallery and lazily built tools (backend, safety, scorer, ...).
Tools are passed in or built on first use, once per session; nothing loads at construction.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from agent.config import DEMO, Settings
from agent.errors import Cancelled, ImagentError, InvalidInput, SafetyBlocked
from agent.events import Call, Phase, RoundFinished, call_of
from agent.store import Gallery
from tools.generate import GenerateRequest, GenerateResult, check_request
from tools.adapters import Control, IPAdapter, Lora, merge_loras, split_prompt_loras
from tools.images import atomic_save, atomic_save_png, load_image, load_mask, prepare_out_dir, unique_path
from tools.metadata import png_chunks, read_metadata
from tools.postprocess import PostProcess
from tools.schedulers import SCHEDULERS

VERSION = "0.1.0"


@dataclass
class SavedImage:
    path: Path
    seed: int
    image_id: int
    record: dict


@dataclass
class GenerationOutcome:
    run_id: str
    images: list[SavedImage]
    blocked: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"run_id": self.run_id,
                "images": [{"path": str(s.path), "seed": s.seed, "image_id": s.image_id, **_summary(s.record)}
                           for s in self.images],
                "blocked": self.blocked, "warnings": self.warnings, "timings": self.timings}


@dataclass
class RunOutcome:
    """The result of `Session.run`: the best image, every round, and how the threshold was set."""

    run_id: str
    best: SavedImage
    score: float
    spec: dict
    rounds: list[dict]
    threshold: dict
    met: bool
    stop_reason: str
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    checklist: dict = field(default_factory=dict)
    checks: list[dict] = field(default_factory=list)     # the best image's verdict per requirement
    images: int = 0                                       # diffusion samples spent

    @property
    def failed(self) -> list[str]:
        return [c["text"] for c in self.checks if c.get("passed") is False]

    def to_json(self) -> dict:
        return {"run_id": self.run_id, "best": {"path": str(self.best.path), "seed": self.best.seed,
                                                "image_id": self.best.image_id, "score": self.score},
                "met": self.met, "stop_reason": self.stop_reason, "failed": self.failed,
                "checks": self.checks, "checklist": self.checklist, "images_generated": self.images,
                "threshold": self.threshold, "spec": self.spec, "rounds": self.rounds,
                "warnings": self.warnings, "timings": self.timings, "record": _summary(self.best.record)}


def _summary(record: dict) -> dict:
    keep = ("model", "backend", "fallback", "width", "height", "scheduler", "params", "idea", "spec", "safety", "post")
    return {k: record[k] for k in keep if k in record}


@dataclass
class UpscaleOutcome:
    run_id: str
    path: Path
    image_id: int
    record: dict

    def to_json(self) -> dict:
        r = self.record
        return {"run_id": self.run_id, "path": str(self.path), "image_id": self.image_id, "width": r["width"],
                "height": r["height"], "upscale": r["upscale"], "safety": r["safety"], "timings": r.get("timings", {})}


def check_rerunnable(record: dict | None, path) -> dict:
    """The imagent record of a generated image, or InvalidInput saying what can be done instead."""
    if record is None:
        raise InvalidInput(f"'{path}' has no imagent record.",
                           "Rerun needs an image written by imagent; `imagent show` prints what it has.")
    if "params" not in record:
        source = (record.get("upscale") or {}).get("source")
        raise InvalidInput(f"'{path}' is not a generated image (it was made by {record.get('backend', 'a tool')}).",
                           f"Rerun its source instead: imagent rerun {source}" if source else
                           "Only generated images can be rerun.")
    return record


class Session:
    def __init__(self, settings: Settings, *, gallery: Gallery | None = None, backend=None, safety=None,
                 scorer=None):
        self.settings = settings
        self.gallery = gallery or Gallery(settings.gallery_path)
        self._backend = backend
        self._safety = safety
        self._scorers = {str(settings.clip_model): scorer} if scorer is not None else {}
        self._lock = threading.Lock()

    # -- lazily built tools -----------------------------------------------------------------
    def backend(self):
        with self._lock:
            if self._backend is None:
                self._backend = self._build_backend()
            return self._backend

    def _build_backend(self):
        """The backend of the settings; for a chain (openai,diffusers) each one, in a
        tools.fallback.FallbackBackend. Built, not loaded: models and clients come on first use."""
        backends = [self._build_one(name) for name in self.settings.backends]
        if len(backends) == 1:
            return backends[0]
        from tools.fallback import FallbackBackend

        return FallbackBackend(backends)

    def _build_one(self, name: str):
        s = self.settings
        if name == "openai":
            from tools.openai_backend import OpenAIBackend

            return OpenAIBackend(model=s.openai_image_model, api_key=s.openai_api_key,
                                 base_url=s.openai_base_url, timeout=s.openai_timeout)
        from tools.devices import pick_device, pick_dtype
        from tools.diffusers_backend import DiffusersBackend

        device = pick_device(s.device)
        return DiffusersBackend(s.model, device, pick_dtype(device, s.dtype), lora_dirs=[s.loras_dir])

    def safety(self):
        with self._lock:
            if self._safety is None:
                from tools.safety import build_checker

                self._safety = build_checker(self.settings.safety)
            return self._safety

    @contextmanager
    def _recorded(self, kind: str, **fields):
        """A gallery run around a block: yields its id; an exception marks the run cancelled or
        failed (with the reason) and propagates. The caller finishes it as done."""
        run_id = self.gallery.start_run(kind, **fields)
        try:
            yield run_id
        except BaseException as exc:
            error = str(exc) if isinstance(exc, ImagentError) else f"{type(exc).__name__}: {exc}"
            cancelled = isinstance(exc, (Cancelled, KeyboardInterrupt))  # Ctrl-C is a cancel, not a failure
            self.gallery.finish_run(run_id, "cancelled" if cancelled else "failed",
                                    error="cancelled (Ctrl-C)" if isinstance(exc, KeyboardInterrupt) else error)
            raise

    def model_defaults(self) -> dict:
        """Sampling defaults for this session's model: settings first, then the model's own (the
        demo model's card), then the generic ones."""
        from tools.generate import DEFAULT_CFG, DEFAULT_STEPS

        out = {"steps": DEFAULT_STEPS, "cfg": DEFAULT_CFG}
        if "diffusers" in self.settings.backends and self.settings.model == DEMO:
            from tools import demo

            d = demo.defaults()
            out = {"steps": d["num_inference_steps"], "cfg": d["guidance_scale"]}
        if self.settings.steps is not None:
            out["steps"] = self.settings.steps
        if self.settings.cfg is not None:
            out["cfg"] = self.settings.cfg
        return out

    def _with_defaults(self, request: GenerateRequest) -> GenerateRequest:
        """A copy with the model's default steps and guidance where the request has none (few-step
        defaults for Turbo and LCM models, an LCM-LoRA or the lcm scheduler: tools.generate.fast_defaults)."""
        import dataclasses

        from tools.generate import fast_defaults

        fast = fast_defaults(self.settings.model, request)
        if fast and (request.steps is None or request.cfg is None or request.scheduler is None):
            return dataclasses.replace(request, steps=fast["steps"] if request.steps is None else request.steps,
                                       cfg=fast["cfg"] if request.cfg is None else request.cfg,
                                       scheduler=request.scheduler or fast.get("scheduler"))
        if request.steps is None or request.cfg is None:
            d = self.model_defaults()
            return dataclasses.replace(request, steps=d["steps"] if request.steps is None else request.steps,
                                       cfg=d["cfg"] if request.cfg is None else request.cfg)
        return request

    # -- generation -------------------------------------------------------------------------
    def check_prompt(self, text: str) -> None:
        verdict = self.safety().check_prompt(text)
        if not verdict.allowed:
            raise SafetyBlocked(f"The prompt was blocked by the safety policy ({verdict.category}): "
                                f"{verdict.reason}", verdict.category or "unsafe",
                                "Rephrase the prompt. The safety level is off, standard or strict (--safety or "
                                "IMAGENT_SAFETY); the word lists are in prompts/safety/.")

    def generate(self, request: GenerateRequest, *, idea: str | None = None, spec: dict | None = None,
                 out_dir: str | Path | None = None, call: Call | None = None,
                 kind: str = "generate", inputs: dict | None = None, extra: dict | None = None,
                 chat_id: str | None = None, post: PostProcess | None = None) -> GenerationOutcome:
        """Validate, safety-check, generate, save images with metadata, record in the gallery.
        `post`: resize, sharpen and the output format (tools.postprocess; default: the PNG as generated).
        `call` (agent.events.Call): cancel it to stop at the next step; its sink gets the steps."""
        call = call_of(call)
        post = _check_post(post)
        req = check_request(self._with_defaults(request))
        self.check_prompt(req.prompt)
        backend = self.backend()
        if req.mode not in backend.capabilities:
            raise InvalidInput(f"The {backend.name} backend cannot do {req.mode}.",
                               "Use the diffusers backend for this.")
        out_dir = self._out_dir(out_dir)  # checked before generating: a bad --out never costs an image
        with self._recorded(kind, idea=idea, spec=spec, params=req.params(), chat_id=chat_id) as run_id:
            call.check("Generation cancelled.")
            result = backend.generate(req, progress=call.steps(), cancel=call.cancel)
            outcome = self._save(run_id, req, result, idea=idea, spec=spec, out_dir=out_dir,
                                 inputs=inputs, extra=extra, post=post)
        self.gallery.finish_run(run_id, "done", result=outcome.to_json())
        return outcome

    def _out_dir(self, out_dir) -> Path:
        """The one place outputs are resolved: `out_dir` or today's folder under outputs_dir,
        created and checked to be a writable directory (InvalidInput naming it otherwise)."""
        out = Path(out_dir) if out_dir else self.settings.outputs_dir / datetime.now().strftime("%Y-%m-%d")
        return prepare_out_dir(out)

    def _save(self, run_id, req, result, *, idea, spec, out_dir, inputs, extra,
              verdicts: list | None = None, params_update: dict | None = None,
              post: PostProcess | None = None) -> GenerationOutcome:
        """Post-process, safety-check the image as it will be written (`verdicts` holds each
        image's verdict when the images were checked already and post-processing changes no
        pixel), write and record."""
        out = self._out_dir(out_dir)
        post = post or PostProcess()
        checker = self.safety()
        saved, blocked = [], []
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        for index, (generated, seed) in enumerate(zip(result.images, result.seeds)):
            image = post.apply(generated)
            verdict = verdicts[index] if verdicts and image is generated else checker.check_image(image)
            if not verdict.allowed:
                blocked.append({"seed": seed, "category": verdict.category, "reason": verdict.reason})
                continue
            params = dict(req.params(), seed=seed, count=1, width=result.width, height=result.height,
                          **(params_update or {}))
            if params.get("scheduler") is None and result.scheduler in SCHEDULERS:
                params["scheduler"] = result.scheduler
            record = {
                "version": VERSION, "run_id": run_id,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "backend": result.backend, "model": result.model, "model_name": Path(str(result.model)).name,
                "seed": seed, "width": result.width, "height": result.height, "scheduler": result.scheduler,
                "params": params, "reproducible": result.reproducible,
                "safety": {"level": checker.level, **({"scores": verdict.scores} if verdict.scores else {})},
            }
            if result.fallback:  # a chain's backends passed over before result.backend made it, and why
                record["fallback"] = result.fallback
            if idea is not None:
                record["idea"] = idea
            if spec is not None:
                record["spec"] = spec
            if inputs:
                record["inputs"] = {k: str(v) for k, v in inputs.items()}
            if result.revised_prompts and result.revised_prompts[index]:
                record["revised_prompt"] = result.revised_prompts[index]
            if not post.is_default:  # the record keeps the generated size; the post entry has the final one
                record["post"] = post.to_json(image.size)
            record.update(extra or {})
            path = atomic_save(image, unique_path(out, f"{stamp}-{seed}", post.suffix), png_chunks(record),
                               format=post.format, quality=post.quality)
            image_id = self.gallery.add_image(run_id, path, record)
            saved.append(SavedImage(path=path, seed=seed, image_id=image_id, record=record))
        if not saved and blocked:
            raise SafetyBlocked(f"All {len(blocked)} image(s) were blocked by the safety policy "
                                f"({blocked[0]['category']}).", blocked[0]["category"] or "unsafe",
                                "Change the prompt or the seed.")
        return GenerationOutcome(run_id=run_id, images=saved, blocked=blocked, warnings=result.warnings,
                                 timings={k: round(v, 4) for k, v in result.timings.items()})

    def run(self, idea: str, *, rounds: int = 3, candidates: int = 2, threshold: float | None = None,
            threshold_mode: str = "relative", style: str | None = None, raw: bool = False,
            request_fields: dict | None = None, out_dir: str | Path | None = None,
            call: Call | None = None, chat_id: str | None = None,
            reviser: str = "auto", chat_model=None, spec=None, checklist=None,
            post: PostProcess | None = None, extra: dict | None = None) -> RunOutcome:
        """The critique loop (agent.loop): expand the idea and derive its checklist, then per
        round generate candidates, safety-check them, score them against the idea, verify every
        requirement, keep the best, and repair what failed until every requirement holds or
        `rounds` are spent. Every round is recorded in the gallery as it ends; the best image is
        saved with the round table and its recipe in its metadata.
        `reviser`: rules | llm | auto (llm when one is configured or passed, else rules).
        `spec`: a structured prompt (dict or PromptSpec) to start from instead of expanding the
        idea (an edited prompt); the candidates are still scored against the idea.
        `checklist`: requirements (tools.requirements.Checklist or its JSON) instead of deriving them.
        `post`: post-processing of the best image as it is saved (tools.postprocess); candidates are
        scored and verified as generated.
        `extra`: more entries for the best image's record (a batch tags it with its item key).
        `call` (agent.events.Call): cancel it to stop at the next step; its sink gets every round
        event and the steps."""
        call = call_of(call)
        post = _check_post(post)
        from agent import loop
        from agent.render import guess_family

        options = loop.LoopOptions(rounds=rounds, candidates=candidates, threshold=threshold,
                                   threshold_mode=threshold_mode).check()
        fields_ = dict(request_fields or {})
        negative = fields_.pop("negative_prompt", "") or ""
        idea, tagged = split_prompt_loras(idea)  # <lora:NAME:W> in the idea: an adapter, not words to expand
        if tagged:
            fields_["loras"] = merge_loras([*fields_.get("loras", ()), *tagged])
        family = guess_family(self.settings.model, self.settings.backends[0])
        spec, positive, neg, warnings = self._first_prompt(idea, spec, raw, style, negative, family, chat_model)
        base = check_request(self._with_defaults(GenerateRequest(prompt=positive, negative_prompt=neg, **fields_)))
        self.check_prompt(idea)
        self.check_prompt(positive)
        backend, checker, scorer = self.backend(), self.safety(), self.scorer()
        checklist, verifier, more = self._checklist(idea, spec, checklist, chat_model)
        warnings += more
        render_spec = self._renderer(family)
        chosen = self._reviser(reviser, chat_model, render_spec, family)
        planner = composer = None
        if verifier is not None and "compose" in getattr(backend, "capabilities", ()):
            from agent.layout import RunPlanner

            w, h = (base.width, base.height) if base.width and base.height else backend.native_size()
            planner = RunPlanner(checklist, width=w, height=h, prompt=positive, negative=neg, steps=base.steps,
                                 cfg=base.cfg, layout_control=self._layout_control(backend))
            locate = self._locate(verifier)
            composer = lambda plan, image: backend.compose(plan, locate, image, cancel=call.cancel)  # noqa: E731
        t0 = time.perf_counter()
        spec_json = spec.model_dump()

        def record_rounds(event):  # each round is in the gallery as soon as it ends
            if isinstance(event, RoundFinished):
                self.gallery.add_round(run_id, event.round, event.row)
            call.emit(event)

        out_dir = self._out_dir(out_dir)  # before any round runs
        with self._recorded("run", idea=idea, spec=spec_json, chat_id=chat_id,
                            params=dict(base.params(), rounds=rounds, candidates=candidates)) as run_id:
            threshold_info = loop.calibrate(options, idea, scorer, self._reference_images)
            result = loop.run_loop(intent=idea, first=loop.Attempt(spec, positive, neg, base.cfg), base=base,
                                   options=options, backend=backend, safety=checker, scorer=scorer,
                                   reviser=chosen, threshold=threshold_info, check_prompt=self.check_prompt,
                                   checklist=checklist, verifier=verifier, planner=planner, composer=composer,
                                   call=call.with_sink(record_rounds), first_checked=True)
            best = self._save_best(run_id, result, base, backend, idea, out_dir, checklist, chosen.name,
                                   scorer.formula, verifier, post, extra)
        call.emit(Phase("done"))
        outcome = RunOutcome(run_id=run_id, best=best, score=round(result.best.score, 4),
                             spec=best.record.get("spec", spec_json), rounds=[r.to_json() for r in result.rounds],
                             threshold=result.threshold, met=result.met, stop_reason=result.stop_reason,
                             warnings=warnings + ([threshold_info["warning"]] if threshold_info.get("warning")
                                                  else []) + result.warnings,
                             timings={"total_s": round(time.perf_counter() - t0, 3)},
                             checklist=checklist.to_json(), checks=[v.to_json() for v in result.best.checks],
                             images=result.images)
        self.gallery.finish_run(run_id, "done", result=outcome.to_json())
        return outcome

    def _first_prompt(self, idea, spec, raw, style, negative, family, chat_model):
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
        expansion = self.expand(idea, style=style, negative=negative, chat_model=chat_model)
        return expansion.spec, expansion.positive, expansion.negative, list(expansion.warnings)

    def _renderer(self, family):
        from agent.render import render

        def render_spec(s):
            out = render(s, family)
            return out.positive, out.negative
        return render_spec

    def _reviser(self, reviser: str, chat_model, render_spec, family):
        from agent.revise import LLMReviser, RuleReviser

        rules = RuleReviser(render_spec, family)
        use_llm = reviser == "llm" or (reviser == "auto" and (chat_model is not None or self.settings.llm_model))
        if not use_llm:
            return rules
        from agent.errors import LLMError
        from agent.llm import build_chat_model
        from agent.llm_probe import resolve_method

        try:
            model = chat_model if chat_model is not None else build_chat_model(self.settings)
            method = resolve_method(self.settings) if chat_model is None else None
        except LLMError as exc:  # unreachable or unconfigured: the rules still make progress
            rules.warnings.append(f"LLM revision is off ({exc.message}); used the rule reviser.")
            return rules
        return LLMReviser(model, render_spec, rules, name=f"llm:{self.settings.llm_model or 'chat'}", method=method)

    def checklist(self, idea: str, subject: str | None = None, *, chat_model=None):
        """The requirements of an idea (agent.requirements) and what this session's verifier
        cannot check: (Checklist, warnings)."""
        from agent.requirements import checklist_for

        method, early = None, []
        if chat_model is None and self.settings.llm_model:
            from agent.errors import LLMError
            from agent.llm import build_chat_model
            from agent.llm_probe import resolve_method

            try:
                chat_model = build_chat_model(self.settings)
                method = resolve_method(self.settings)
            except LLMError as exc:  # the rules still give a checklist
                chat_model, early = None, [f"The LLM could not write the requirements ({exc.message}); "
                                           "used the rule parser."]
        cl, warnings = checklist_for(idea, subject, chat_model=chat_model, method=method)
        warnings = (early if cl.source != "demo-grammar" else []) + warnings
        verifier = self.verifier()
        if verifier is not None:
            cl.unsupported = verifier.unsupported(cl)
        if cl.unsupported and self.settings.model == DEMO:
            from tools.demo import world

            warnings.append(f"The demo model draws only coloured shapes ({', '.join(world.SHAPES)} in "
                            f"{', '.join(world.COLOURS)}); it cannot draw: {', '.join(cl.unsupported)}. "
                            "Expect 'met: false'; use --model for a real model.")
        elif cl.unsupported:
            warnings.append(f"The detector cannot check: {', '.join(cl.unsupported)}.")
        return cl, warnings

    def _checklist(self, idea, spec, checklist, chat_model):
        from tools.requirements import Checklist

        if checklist is not None:
            given = checklist if isinstance(checklist, Checklist) else Checklist.from_json(checklist)
            verifier = self.verifier()
            cl = Checklist(list(given.requirements), given.source,
                           verifier.unsupported(given) if verifier is not None else [])
            warnings = []
        else:
            cl, warnings = self.checklist(idea, spec.subject, chat_model=chat_model)
            verifier = self.verifier()
        if verifier is None:
            warnings.append("No detector for this model: 'met' is judged by CLIP alone (set --detector).")
        return cl, verifier, warnings

    def verifier(self):
        """The requirement verifier: the detector of the settings, or the demo detector with the
        demo model; None when neither applies. Built once; nothing loads until the first check."""
        with self._lock:
            if not hasattr(self, "_verifier"):
                name = self.settings.detector
                if name is None and self.settings.model == DEMO and "diffusers" in self.settings.backends:
                    name = DEMO
                if name is None:
                    self._verifier = None
                else:
                    from tools.detect import Detector
                    from tools.verify import DetectorVerifier

                    clip = self._scorers.get(str(self.settings.clip_model))
                    if clip is None:
                        from tools.score import Scorer

                        clip = self._scorers[str(self.settings.clip_model)] = Scorer(str(self.settings.clip_model))
                    self._verifier = DetectorVerifier(Detector(name), clip)
            return self._verifier

    @staticmethod
    def _locate(verifier):
        def locate(image, label):
            boxes = verifier.detector.detect(image, [label]).get(label) or []
            return boxes[0] if boxes else None
        return locate

    def _save_best(self, run_id, result, base, backend, idea, out_dir, checklist, reviser_name, formula, verifier,
                   post: PostProcess | None = None, more: dict | None = None):
        # the base request (size, steps, scheduler, LoRAs, conditions, speed options) with the best's words
        best_req = replace(base, prompt=result.best_attempt.positive, count=1, seed=result.best.seed,
                           negative_prompt=result.best_attempt.negative, cfg=result.best_attempt.cfg)
        image = result.best.image
        made = result.best.made_by or _maker(backend, "compose")  # a composed image: the compose backend
        generated = GenerateResult(images=[image], seeds=[result.best.seed], model=made["model"],
                                   backend=made["backend"], width=image.size[0], height=image.size[1],
                                   scheduler=result.scheduler, fallback=list(made.get("fallback", ())))
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
        saved = self._save(run_id, best_req, generated, idea=idea, spec=result.best_attempt.spec.model_dump(),
                           out_dir=out_dir, inputs=None, extra=extra, verdicts=[result.best.verdict],
                           params_update=params_update, post=post)
        best = saved.images[0]
        self.gallery.set_image_score(best.image_id, result.best.score, result.best_round)
        return best

    def _reference_images(self, intent: str) -> list:
        """Known-good images of the intent, for calibrating relative thresholds: the demo world's
        renderer draws them when the scorer is the demo CLIP and the intent is in its grammar."""
        if str(self.settings.clip_model) != DEMO:
            return []
        from tools.demo import world

        try:
            scene = world.parse(intent)
        except ImagentError:
            return []
        return [world.render(scene, seed)[0] for seed in range(4)]

    def edit_request(self, prompt: str, image_path: str | Path, *, mask_path: str | Path | None = None,
                     **params) -> tuple[GenerateRequest, dict]:
        """A request for img2img (or inpainting with a mask) from files, plus the inputs to record."""
        init = load_image(image_path)
        mask = load_mask(mask_path, init.size) if mask_path else None
        inputs = {"init_image": Path(image_path).resolve()}
        if mask_path:
            inputs["mask"] = Path(mask_path).resolve()
        return GenerateRequest(prompt=prompt, init_image=init, mask=mask, **params), inputs

    # -- metadata -----------------------------------------------------------------------------
    def rerun(self, png_path: str | Path, *, out_dir: str | Path | None = None,
              call: Call | None = None, same_model: bool = True) -> GenerationOutcome:
        """Reproduce an image from its metadata (same params, seed and post-processing; with
        `same_model`, the session's model must be the recorded one, else InvalidInput says how to
        select it)."""
        meta = read_metadata(png_path)
        record = check_rerunnable(meta["record"], png_path)
        post = PostProcess.from_json(record.get("post"))
        p = record["params"]
        fields_ = {k: p[k] for k in ("prompt", "negative_prompt", "steps", "cfg", "scheduler") if k in p}
        fields_.update(width=record["width"], height=record["height"], seed=record["seed"], count=1,
                       **recorded_options(p))
        inputs = record.get("inputs") or {}
        if p.get("mode") == "compose":
            return self._rerun_composed(record, png_path, out_dir, same_model, post, call_of(call))
        if p.get("mode") in {"img2img", "inpaint"}:
            req, inputs = self.edit_request(p["prompt"], inputs["init_image"], mask_path=inputs.get("mask"),
                                            strength=p["strength"],
                                            **{k: v for k, v in fields_.items() if k not in {"prompt", "width", "height"}})
        else:
            req = GenerateRequest(**fields_)
        if same_model:
            self._check_same_model(record)
        return self.generate(req, idea=record.get("idea"), spec=record.get("spec"), out_dir=out_dir,
                             call=call, kind="rerun", inputs=inputs or None,
                             extra={"rerun_of": str(png_path)}, post=post)

    def _rerun_composed(self, record: dict, png_path, out_dir, same_model: bool,
                        post: PostProcess, call: Call) -> GenerationOutcome:
        """Replay a layout-guided or edited image from its recipe, then save and record it."""
        if same_model:
            self._check_same_model(record)
        image = self.replay(record["recipe"], call=call)
        p = record["params"]
        req = GenerateRequest(**{k: p[k] for k in ("prompt", "negative_prompt", "steps", "cfg", "scheduler") if k in p},
                              width=record["width"], height=record["height"], seed=record["seed"])
        backend = self.backend()
        result = GenerateResult(images=[image], seeds=[record["seed"]], model=backend.model, backend=backend.name,
                                width=image.size[0], height=image.size[1], scheduler=record.get("scheduler"))
        with self._recorded("rerun", idea=record.get("idea"), spec=record.get("spec"), params=req.params()) as run_id:
            outcome = self._save(run_id, req, result, idea=record.get("idea"), spec=record.get("spec"),
                                 out_dir=out_dir, inputs=None, params_update={"mode": "compose"},
                                 extra={"recipe": record["recipe"], "rerun_of": str(png_path)}, post=post)
        self.gallery.finish_run(run_id, "done", result=outcome.to_json())
        return outcome

    def _layout_control(self, backend) -> float | None:
        """The layout ControlNet's scale for the loop's layout repair, or None to compose in latents
        (settings.layout_repair: auto uses the ControlNet where the model has one)."""
        mode = self.settings.layout_repair
        has = mode != "latent" and getattr(backend, "has_control", lambda kind: False)("layout")
        if mode == "control" and not has:
            raise InvalidInput(f"layout_repair is 'control', but the model '{backend.model}' has no layout ControlNet.",
                               "Set IMAGENT_LAYOUT_REPAIR (or layout_repair in config.json) to auto or latent.")
        return 1.0 if has else None

    def replay(self, recipe: dict, *, call: Call | None = None):
        """The image a recipe describes (txt2img, or a composition over its base), made again."""
        call = call_of(call)
        if recipe.get("mode") == "txt2img":
            keys = ("prompt", "negative_prompt", "steps", "cfg", "width", "height", "seed", "scheduler")
            req = GenerateRequest(**{k: recipe[k] for k in keys if k in recipe}, **recorded_options(recipe))
            return self.backend().generate(check_request(req), progress=call.steps(), cancel=call.cancel).images[0]
        if recipe.get("mode") != "compose":
            raise InvalidInput(f"Unknown recipe mode '{recipe.get('mode')}'.", "The record is damaged or newer.")
        from tools.compose import ComposePlan

        verifier = self.verifier()
        if verifier is None:
            raise InvalidInput("Replaying a layout-guided image needs the detector that placed its objects.",
                               "Pass --detector (or set IMAGENT_DETECTOR) to the detector it was made with.")
        plan = ComposePlan.from_json(recipe["plan"])
        base = self.replay(recipe["base"], call=call) if plan.use_base else None
        return self.backend().compose(plan, self._locate(verifier), base, cancel=call.cancel).image

    def _check_same_model(self, record: dict) -> None:
        backend = self.backend()
        if record.get("backend") != backend.name or str(record.get("model")) != str(backend.model):
            raise InvalidInput(
                f"This image was made by {record.get('backend')} model '{record.get('model')}', but this "
                f"session uses {backend.name} model '{backend.model}'.",
                f"Run again with --backend {record.get('backend')} --model {record.get('model')}.")

    # -- prompt expansion -----------------------------------------------------------------------
    def expand(self, idea: str, *, style: str | None = None, family: str | None = None, chat_model=None,
               llm: str | None = None, use_llm: bool | None = None, negative: str = ""):
        """idea -> agent.schemas.Expansion (structured prompt + rendering for this session's model);
        see agent.expand.expand_idea. Nothing is generated or recorded."""
        from agent.expand import expand_idea

        return expand_idea(idea, self.settings, style=style, family=family, chat_model=chat_model, llm=llm,
                           use_llm=use_llm, negative=negative)

    # -- upscaling and scoring (tools.upscale, tools.score) --------------------------------------
    def upscaler(self):
        """The session's Upscaler (Real-ESRGAN nets and the SD x4 pipeline load once, on first use)."""
        with self._lock:
            if getattr(self, "_upscaler", None) is None:
                from tools.upscale import Upscaler

                self._upscaler = Upscaler()
            return self._upscaler

    def scorer(self, clip_model: str | None = None):
        """The CLIP scorer for `clip_model` (default: settings.clip_model, "demo" = the demo CLIP).
        Built once per model and kept; the model itself loads on the first score."""
        from tools.score import Scorer

        name = str(clip_model or self.settings.clip_model)
        with self._lock:
            cache = self._scorers
            if name not in cache:
                cache[name] = Scorer(name)
            return cache[name]

    def score(self, images, text, *, clip_model: str | None = None) -> dict:
        """CLIP scores of images (paths or PIL images) against `text` (one text for all, or one each):
        {'scores': [...], 'cosine': [...], 'formula': ..., 'model': ...}."""
        from PIL import Image as _Image

        from tools.score import apply_formula

        pics = [im if isinstance(im, _Image.Image) else load_image(im) for im in images]
        scorer = self.scorer(clip_model)
        cos = scorer.cosine(pics, text)
        return {"scores": [apply_formula(c, scorer.formula) for c in cos], "cosine": cos,
                "formula": scorer.formula, "formula_text": scorer.formula_text, "model": scorer.model_id,
                "path": scorer.path}

    def upscale(self, path: str | Path, *, scale: int = 4, method: str = "realesrgan",
                out_dir: str | Path | None = None, call: Call | None = None,
                prompt: str | None = None, strength: float = 0.3, seed: int | None = None,
                tile: int | None = None, steps: int = 20) -> "UpscaleOutcome":
        """Upscale an image file; the result is safety-checked, written atomically with metadata
        (source, method, model; the source's own record nested) and recorded in the gallery.
        hires-fix refines with this session's backend, using `prompt` or the source's recorded one."""
        call = call_of(call)
        from tools.upscale import check_upscale

        image = load_image(path)
        check_upscale(image, scale, method)
        source = Path(path).resolve()
        try:
            source_record = read_metadata(source)["record"]
        except ImagentError:
            source_record = None
        if method in {"hires-fix", "sd-x4"} and not prompt and source_record:
            prompt = (source_record.get("params") or {}).get("prompt")
        if prompt:
            self.check_prompt(prompt)
        if method in {"hires-fix", "sd-x4"} and seed is None:
            from tools.generate import draw_seed

            seed = draw_seed()
        backend = self.backend() if method == "hires-fix" else None
        label = f"upscale x{scale} ({method})"
        out_dir = self._out_dir(out_dir)  # before the upscale runs
        with self._recorded("upscale", params={"source": str(source), "scale": scale, "method": method,
                                                           **({"prompt": prompt} if prompt else {})}) as run_id:
            result = self.upscaler().upscale(image, scale, method, backend=backend, prompt=prompt,
                                             strength=strength, seed=seed, tile=tile, steps=steps, progress=call.steps(label),
                                             cancel=call.cancel)
            outcome = self._save_upscale(run_id, result, source, source_record, out_dir)
        self.gallery.finish_run(run_id, "done", result=outcome.to_json())
        return outcome

    def _save_upscale(self, run_id, result, source: Path, source_record: dict | None, out_dir) -> "UpscaleOutcome":
        import json as _json

        from tools.metadata import JSON_KEY, a1111_parameters

        checker = self.safety()
        verdict = checker.check_image(result.image)
        if not verdict.allowed:
            raise SafetyBlocked(f"The upscaled image was blocked by the safety policy ({verdict.category}): "
                                f"{verdict.reason}", verdict.category or "unsafe",
                                "Nothing was written. Use another image.")
        w, h = result.image.size
        record = {
            "version": VERSION, "run_id": run_id, "kind": "upscale",
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "backend": "upscale", "model": result.model, "model_name": result.model,
            "width": w, "height": h,
            "upscale": {"source": str(source), **result.record()},
            "safety": {"level": checker.level, **({"scores": verdict.scores} if verdict.scores else {})},
            "timings": result.timings,
        }
        seed = result.details.get("seed", (source_record or {}).get("seed"))
        if seed is not None:
            record["seed"] = seed
        if source_record:
            record["source"] = {k: source_record[k] for k in ("run_id", "seed", "params", "model", "backend",
                                                              "width", "height", "idea") if k in source_record}
        chunks = {JSON_KEY: _json.dumps(record, sort_keys=True, default=str)}
        if source_record and source_record.get("params"):
            # A1111 `parameters` of the original generation at the new size, plus the upscale (as A1111 writes it)
            try:
                text = a1111_parameters({**source_record, "width": w, "height": h})
                chunks["parameters"] = f"{text}, Hires upscale: {result.scale}, Hires upscaler: {result.method}"
            except (KeyError, TypeError):  # a partial source record: the JSON chunk alone says it all
                pass
        out = self._out_dir(out_dir)
        stem = f"{source.stem}-x{result.scale}-{result.method}"
        dest = atomic_save_png(result.image, unique_path(out, stem), chunks)
        image_id = self.gallery.add_image(run_id, dest, record)
        return UpscaleOutcome(run_id=run_id, path=dest, image_id=image_id, record=record)

    def edit(self, prompt: str, image_path: str | Path, *, mask_path: str | Path | None = None,
             strength: float = 0.75, out_dir: str | Path | None = None, call: Call | None = None,
             chat_id: str | None = None, post: PostProcess | None = None, **params) -> GenerationOutcome:
        """img2img from an image file (inpainting where `mask_path` is white) in one call:
        edit_request + generate(kind="edit"). `params`: negative_prompt, steps, cfg, seed, scheduler, count.
        `post`: post-processing and output format, as for generate."""
        request, inputs = self.edit_request(prompt, image_path, mask_path=mask_path, strength=strength, **params)
        return self.generate(request, out_dir=out_dir, call=call, kind="edit", inputs=inputs,
                             chat_id=chat_id, post=post)


def _maker(backend, capability: str) -> dict:
    """{backend, model} of what serves `capability` first: the backend itself, or the first of a
    chain (tools.fallback) that can."""
    from tools.fallback import FallbackBackend

    chosen = backend.serving(capability) if isinstance(backend, FallbackBackend) else backend
    return {"backend": chosen.name, "model": chosen.model}


def _check_post(post) -> PostProcess:
    """`post` as given (a PostProcess, validated when it was built), or the default for None."""
    if post is None:
        return PostProcess()
    if not isinstance(post, PostProcess):
        raise InvalidInput(f"post must be a tools.postprocess.PostProcess, not {type(post).__name__}.",
                           "Build it with PostProcess(sharpen=..., resize=(W, H), format=..., quality=...).")
    return post


def recorded_options(params: dict) -> dict:
    """The LoRAs, control conditions and speed options of a recorded request, as GenerateRequest
    fields; a control's image is loaded again from its recorded file."""
    from tools.generate import SPEED_OPTIONS

    out = {k: params[k] for k in (*SPEED_OPTIONS, "refiner", "refiner_switch") if k in params}
    if params.get("loras"):
        out["loras"] = tuple(Lora(str(x.get("source")), x.get("weight", 1.0)) for x in params["loras"]
                             if isinstance(x, dict))
    if params.get("controls"):
        out["controls"] = tuple(Control.from_json(x) for x in params["controls"])
    if params.get("ip_adapter"):
        out["ip_adapter"] = IPAdapter.from_json(params["ip_adapter"])
    return out
