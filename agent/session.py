"""The one facade every front end uses (CLI, TUI, MCP, Python API).

A Session owns the settings, the gallery and lazily built tools (backend, safety, scorer, ...).
Tools are passed in or built on first use, once per session; nothing loads at construction.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from agent.config import Settings
from agent.errors import Cancelled, ImagentError, InvalidInput, SafetyBlocked
from agent.store import Gallery
from tools.generate import GenerateRequest, check_request
from tools.images import atomic_save_png, load_image, load_mask, unique_path
from tools.metadata import png_chunks, read_metadata

VERSION = "0.1.0"


@dataclass
class Progress:
    """A progress event for front ends: `kind` is 'step' (diffusion steps) or a label of a phase."""

    kind: str
    done: int
    total: int
    label: str = ""


ProgressSink = Callable[[Progress], None]


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


def _summary(record: dict) -> dict:
    keep = ("model", "backend", "width", "height", "scheduler", "params", "idea", "spec", "safety")
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


class Session:
    def __init__(self, settings: Settings, *, gallery: Gallery | None = None, backend=None, safety=None):
        self.settings = settings
        self.gallery = gallery or Gallery(settings.gallery_path)
        self._backend = backend
        self._safety = safety
        self._lock = threading.Lock()
        self.cancel_event = threading.Event()

    # -- lazily built tools -----------------------------------------------------------------
    def backend(self):
        with self._lock:
            if self._backend is None:
                self._backend = self._build_backend()
            return self._backend

    def _build_backend(self):
        s = self.settings
        if s.backend == "openai":
            from tools.openai_backend import OpenAIBackend

            return OpenAIBackend(model=s.openai_image_model, api_key=s.openai_api_key,
                                 base_url=s.openai_base_url, timeout=s.openai_timeout)
        from tools.devices import pick_device, pick_dtype
        from tools.diffusers_backend import DiffusersBackend

        device = pick_device(s.device)
        return DiffusersBackend(s.model, device, pick_dtype(device, s.dtype))

    def safety(self):
        with self._lock:
            if self._safety is None:
                from tools.safety import build_checker

                self._safety = build_checker(self.settings.safety)
            return self._safety

    def cancel(self) -> None:
        """Ask the running job to stop at its next step (thread-safe)."""
        self.cancel_event.set()

    # -- generation -------------------------------------------------------------------------
    def check_prompt(self, text: str) -> None:
        verdict = self.safety().check_prompt(text)
        if not verdict.allowed:
            raise SafetyBlocked(f"The prompt was blocked by the safety policy ({verdict.category}): "
                                f"{verdict.reason}", verdict.category or "unsafe",
                                "Rephrase the prompt; see `imagent --help` for the safety levels.")

    def generate(self, request: GenerateRequest, *, idea: str | None = None, spec: dict | None = None,
                 out_dir: str | Path | None = None, progress: ProgressSink | None = None,
                 kind: str = "generate", inputs: dict | None = None, extra: dict | None = None,
                 chat_id: str | None = None) -> GenerationOutcome:
        """Validate, safety-check, generate, save PNGs with metadata, record in the gallery."""
        req = check_request(request)
        self.check_prompt(req.prompt)
        backend = self.backend()
        if req.mode not in backend.capabilities:
            raise InvalidInput(f"The {backend.name} backend cannot do {req.mode}.",
                               "Use the diffusers backend for this.")
        self.cancel_event.clear()
        run_id = self.gallery.start_run(kind, idea=idea, spec=spec, params=req.params(), chat_id=chat_id)
        step = (lambda done, total: progress(Progress("step", done, total))) if progress else None
        try:
            result = backend.generate(req, progress=step, cancel=self.cancel_event)
            outcome = self._save(run_id, req, result, idea=idea, spec=spec, out_dir=out_dir,
                                 inputs=inputs, extra=extra)
        except Cancelled as exc:
            self.gallery.finish_run(run_id, "cancelled", error=str(exc))
            raise
        except ImagentError as exc:
            self.gallery.finish_run(run_id, "failed", error=str(exc))
            raise
        except BaseException as exc:
            self.gallery.finish_run(run_id, "failed", error=f"{type(exc).__name__}: {exc}")
            raise
        self.gallery.finish_run(run_id, "done", result=outcome.to_json())
        return outcome

    def _save(self, run_id, req, result, *, idea, spec, out_dir, inputs, extra) -> GenerationOutcome:
        out = Path(out_dir) if out_dir else self.settings.outputs_dir / datetime.now().strftime("%Y-%m-%d")
        checker = self.safety()
        saved, blocked = [], []
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        for index, (image, seed) in enumerate(zip(result.images, result.seeds)):
            verdict = checker.check_image(image)
            if not verdict.allowed:
                blocked.append({"seed": seed, "category": verdict.category, "reason": verdict.reason})
                continue
            params = dict(req.params(), seed=seed, count=1)
            record = {
                "version": VERSION, "run_id": run_id,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "backend": result.backend, "model": result.model, "model_name": Path(str(result.model)).name,
                "seed": seed, "width": result.width, "height": result.height, "scheduler": result.scheduler,
                "params": params, "reproducible": result.reproducible,
                "safety": {"level": checker.level, **({"scores": verdict.scores} if verdict.scores else {})},
            }
            if idea is not None:
                record["idea"] = idea
            if spec is not None:
                record["spec"] = spec
            if inputs:
                record["inputs"] = {k: str(v) for k, v in inputs.items()}
            if result.revised_prompts and result.revised_prompts[index]:
                record["revised_prompt"] = result.revised_prompts[index]
            record.update(extra or {})
            path = atomic_save_png(image, unique_path(out, f"{stamp}-{seed}"), png_chunks(record))
            image_id = self.gallery.add_image(run_id, path, record)
            saved.append(SavedImage(path=path, seed=seed, image_id=image_id, record=record))
        if not saved and blocked:
            raise SafetyBlocked(f"All {len(blocked)} image(s) were blocked by the safety policy "
                                f"({blocked[0]['category']}).", blocked[0]["category"] or "unsafe",
                                "Change the prompt or the seed.")
        return GenerationOutcome(run_id=run_id, images=saved, blocked=blocked, warnings=result.warnings,
                                 timings={k: round(v, 4) for k, v in result.timings.items()})

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
              progress: ProgressSink | None = None, same_model: bool = True) -> GenerationOutcome:
        """Reproduce an image from its PNG metadata (same params and seed; with `same_model`, the
        session's model must be the recorded one, else InvalidInput says how to select it)."""
        meta = read_metadata(png_path)
        record = meta["record"]
        if record is None:
            raise InvalidInput(f"'{png_path}' has A1111 parameters but no imagent record.",
                               "Rerun needs an image written by imagent; `imagent show` prints what it has.")
        p = record["params"]
        fields_ = {k: p[k] for k in ("prompt", "negative_prompt", "steps", "cfg", "scheduler") if k in p}
        fields_.update(width=record["width"], height=record["height"], seed=record["seed"], count=1)
        inputs = record.get("inputs") or {}
        if p.get("mode") in {"img2img", "inpaint"}:
            req, inputs = self.edit_request(p["prompt"], inputs["init_image"], mask_path=inputs.get("mask"),
                                            strength=p["strength"],
                                            **{k: v for k, v in fields_.items() if k not in {"prompt", "width", "height"}})
        else:
            req = GenerateRequest(**fields_)
        if same_model:
            self._check_same_model(record)
        return self.generate(req, idea=record.get("idea"), spec=record.get("spec"), out_dir=out_dir,
                             progress=progress, kind="rerun", inputs=inputs or None,
                             extra={"rerun_of": str(png_path)})

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
            cache = self.__dict__.setdefault("_scorers", {})
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
                out_dir: str | Path | None = None, progress: ProgressSink | None = None,
                prompt: str | None = None, strength: float = 0.3, seed: int | None = None,
                tile: int | None = None) -> "UpscaleOutcome":
        """Upscale an image file; the result is safety-checked, written atomically with metadata
        (source, method, model; the source's own record nested) and recorded in the gallery.
        hires-fix refines with this session's backend, using `prompt` or the source's recorded one."""
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
        self.cancel_event.clear()
        run_id = self.gallery.start_run("upscale", params={"source": str(source), "scale": scale, "method": method,
                                                           **({"prompt": prompt} if prompt else {})})
        label = f"upscale x{scale} ({method})"
        step = (lambda done, total: progress(Progress("step", done, total, label))) if progress else None
        try:
            result = self.upscaler().upscale(image, scale, method, backend=backend, prompt=prompt,
                                             strength=strength, seed=seed, tile=tile, progress=step,
                                             cancel=self.cancel_event)
            outcome = self._save_upscale(run_id, result, source, source_record, out_dir)
        except Cancelled as exc:
            self.gallery.finish_run(run_id, "cancelled", error=str(exc))
            raise
        except ImagentError as exc:
            self.gallery.finish_run(run_id, "failed", error=str(exc))
            raise
        except BaseException as exc:
            self.gallery.finish_run(run_id, "failed", error=f"{type(exc).__name__}: {exc}")
            raise
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
        out = Path(out_dir) if out_dir else self.settings.outputs_dir / datetime.now().strftime("%Y-%m-%d")
        stem = f"{source.stem}-x{result.scale}-{result.method}"
        dest = atomic_save_png(result.image, unique_path(out, stem), chunks)
        image_id = self.gallery.add_image(run_id, dest, record)
        return UpscaleOutcome(run_id=run_id, path=dest, image_id=image_id, record=record)

