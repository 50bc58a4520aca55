"""The one facade every front end uses (CLI, TUI, MCP, Python API): settings, gallery, lazily built tools, and the actions over them.

A Session owns the settings, the gallery and lazily built tools (backend, safety, scorer, ...).
Tools are passed in or built on first use, once per session; nothing loads at construction.
The actions live here (generate, edit, upscale, score, expand) or in their own modules
(agent.critique: run; agent.rerun: rerun and replay; agent.saving writes what they make;
agent.outcomes holds what they return).
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from agent.config import DEMO, Settings
from agent.errors import Cancelled, ImagentError, InvalidInput, SafetyBlocked
from agent.events import Call, call_of
from agent.outcomes import GenerationOutcome, RunOutcome, SavedImage, UpscaleOutcome  # noqa: F401  (re-exported)
from agent.requests import RunOptions
from agent.rerun import check_rerunnable, recorded_options  # noqa: F401  (re-exported)
from agent.saving import VERSION, Made, check_post, save_images, save_upscale  # noqa: F401  (VERSION re-exported)
from agent.store import Gallery
from tools.generate import GenerateRequest, check_request
from tools.images import load_image, load_mask, prepare_out_dir
from tools.metadata import read_metadata
from tools.postprocess import PostProcess


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

                self._safety = build_checker(self.settings.safety, home=self.settings.home)
            return self._safety

    @contextmanager
    def recorded(self, kind: str, **fields):
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

    def with_defaults(self, request: GenerateRequest) -> GenerateRequest:
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
                                f"{verdict.reason}.", verdict.category or "unsafe",
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
        post = check_post(post)
        req = check_request(self.with_defaults(request))
        self.check_prompt(req.prompt)
        backend = self.backend()
        if req.mode not in backend.capabilities:
            raise InvalidInput(f"The {backend.name} backend cannot do {req.mode}.",
                               "Use the diffusers backend for this.")
        out_dir = self.out_dir(out_dir)  # checked before generating: a bad --out never costs an image
        with self.recorded(kind, idea=idea, spec=spec, params=req.params(), chat_id=chat_id) as run_id:
            call.check("Generation cancelled.")
            result = backend.generate(req, progress=call.steps(), cancel=call.cancel)
            outcome = save_images(self, run_id, req, Made.of(result), idea=idea, spec=spec, out_dir=out_dir,
                                  inputs=inputs, extra=extra, post=post)
        self.gallery.finish_run(run_id, "done", result=outcome.to_json())
        return outcome

    def out_dir(self, out_dir=None) -> Path:
        """The one place outputs are resolved: `out_dir` or today's folder under outputs_dir,
        created and checked to be a writable directory (InvalidInput naming it otherwise)."""
        out = Path(out_dir) if out_dir else self.settings.outputs_dir / datetime.now().strftime("%Y-%m-%d")
        return prepare_out_dir(out)

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
    # -- the critique loop and reruns (agent.critique, agent.rerun) ------------------------------
    def run(self, idea: str, options: RunOptions | None = None, *, call: Call | None = None,
            out_dir: str | Path | None = None, chat_id: str | None = None, chat_model=None,
            **fields) -> RunOutcome:
        """The critique loop on `idea` (agent.critique.run). `options` is an agent.requests.RunOptions;
        its fields may also be given by name (`s.run(idea, rounds=3, candidates=2)`), over `options`."""
        from dataclasses import replace

        from agent import critique

        options = replace(options or RunOptions(), **fields)
        return critique.run(self, idea, options, call=call, out_dir=out_dir, chat_id=chat_id, chat_model=chat_model)

    def follow_up(self, image, change, options: RunOptions | None = None, *, call: Call | None = None,
                  out_dir: str | Path | None = None, chat_id: str | None = None, **fields):
        """Change a picture by a follow-up: words ("add a blue square") or typed edits, repaired from
        that picture (agent.followup_run.follow_up); `image` is a PNG path or a gallery image id. Returns a
        FollowUpResult (the reading, the checklist's diff, the run or None when nothing was made)."""
        from dataclasses import replace

        from agent.followup_run import follow_up

        path, image_id = self.image_path(image)
        options = replace(options or RunOptions(), **fields)
        return follow_up(self, path, change, options, call=call, out_dir=out_dir, chat_id=chat_id,
                         from_image=image_id)

    def image_path(self, image) -> tuple[str, int | None]:
        """(path, gallery id) of an image given as a gallery id (12, "#12") or a path."""
        text = str(image).strip()
        if text.lstrip("#").isdigit():
            row = self.gallery.image(int(text.lstrip("#")))
            if row is None:
                raise InvalidInput(f"There is no image {text} in the gallery.", "imagent gallery lists them.",
                                   param="image")
            return row["path"], int(text.lstrip("#"))
        if not Path(text).expanduser().is_file():
            raise InvalidInput(f"No image at {text}.", "Give a gallery image id or a PNG path.", param="image")
        return str(Path(text).expanduser()), None

    def checklist(self, idea: str, subject: str | None = None, *, chat_model=None, given=None, require=(), drop=()):
        """The requirements of an idea (or `given` whole), corrected by `require` and `drop`, and
        what this session's verifier cannot check: (Checklist, warnings); agent.critique.derive_checklist."""
        from agent import critique

        return critique.derive_checklist(self, idea, subject, chat_model=chat_model, given=given, require=require,
                                         drop=drop)

    def rerun(self, png_path: str | Path, **options) -> GenerationOutcome:
        """Reproduce an image from its metadata: agent.rerun.rerun (out_dir, call, same_model)."""
        from agent import rerun

        return rerun.rerun(self, png_path, **options)

    def replay(self, recipe: dict, *, call: Call | None = None):
        """The image a recipe describes, made again: agent.rerun.replay."""
        from agent import rerun

        return rerun.replay(self, recipe, call=call)

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
        backend = self.backend() if method == "hires-fix" else None
        label = f"upscale x{scale} ({method})"
        out_dir = self.out_dir(out_dir)  # before the upscale runs
        with self.recorded("upscale", params={"source": str(source), "scale": scale, "method": method,
                           **({"prompt": prompt} if prompt else {})}) as run_id:
            result = self.upscaler().upscale(image, scale, method, backend=backend, prompt=prompt,
                                             strength=strength, seed=seed, tile=tile, steps=steps, progress=call.steps(label),
                                             cancel=call.cancel)
            outcome = save_upscale(self, run_id, result, source, source_record, out_dir)
        self.gallery.finish_run(run_id, "done", result=outcome.to_json())
        return outcome

    def edit(self, prompt: str, image_path: str | Path, *, mask_path: str | Path | None = None,
             strength: float = 0.75, out_dir: str | Path | None = None, call: Call | None = None,
             chat_id: str | None = None, post: PostProcess | None = None, **params) -> GenerationOutcome:
        """img2img from an image file (inpainting where `mask_path` is white) in one call:
        edit_request + generate(kind="edit"). `params`: negative_prompt, steps, cfg, seed, scheduler, count.
        `post`: post-processing and output format, as for generate."""
        request, inputs = self.edit_request(prompt, image_path, mask_path=mask_path, strength=strength, **params)
        return self.generate(request, out_dir=out_dir, call=call, kind="edit", inputs=inputs,
                             chat_id=chat_id, post=post)
