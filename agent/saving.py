"""Writing made images: post-process, safety-check, write atomically with their full record, and add them to the gallery."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from agent.errors import InvalidInput, SafetyBlocked
from agent.outcomes import GenerationOutcome, SavedImage, UpscaleOutcome
from tools.generate import GenerateResult
from tools.images import atomic_save, atomic_save_png, unique_path
from tools.metadata import png_chunks
from tools.postprocess import PostProcess
from tools.schedulers import SCHEDULERS

VERSION = "0.1.0"


@dataclass(frozen=True)
class Made:
    """Images to write and what made them: a backend's result (`Made.of`), the loop's best image,
    or a replayed recipe; what save_images records for each."""

    images: list
    seeds: list
    model: str
    backend: str
    scheduler: str | None
    reproducible: bool = True
    fallback: tuple = ()             # backends of a chain passed over, and why (tools.fallback)
    revised_prompts: tuple = ()      # the backend's rewritten prompt per image (OpenAI)
    warnings: tuple = ()
    timings: dict = field(default_factory=dict)

    @classmethod
    def of(cls, result: GenerateResult) -> "Made":
        return cls(images=list(result.images), seeds=list(result.seeds), model=result.model, backend=result.backend,
                   scheduler=result.scheduler, reproducible=result.reproducible, fallback=tuple(result.fallback),
                   revised_prompts=tuple(result.revised_prompts), warnings=tuple(result.warnings),
                   timings=dict(result.timings))


def save_images(session, run_id, req, result: Made, *, idea, spec, out_dir, inputs, extra,
                verdicts: list | None = None, params_update: dict | None = None,
                post: PostProcess | None = None) -> GenerationOutcome:
    """Post-process, safety-check the image as it will be written (`verdicts` holds each
    image's verdict when the images were checked already and post-processing changes no
    pixel), write and record."""
    out = session.out_dir(out_dir)
    post = post or PostProcess()
    checker = session.safety()
    saved, blocked = [], []
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for index, (generated, seed) in enumerate(zip(result.images, result.seeds)):
        image = post.apply(generated)
        verdict = verdicts[index] if verdicts and image is generated else checker.check_image(image)
        if not verdict.allowed:
            blocked.append({"seed": seed, "category": verdict.category, "reason": verdict.reason})
            continue
        width, height = generated.size
        params = dict(req.params(), seed=seed, count=1, width=width, height=height, **(params_update or {}))
        if params.get("scheduler") is None and result.scheduler in SCHEDULERS:
            params["scheduler"] = result.scheduler
        record = {
            "version": VERSION, "run_id": run_id,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "backend": result.backend, "model": result.model, "model_name": Path(str(result.model)).name,
            "seed": seed, "width": width, "height": height, "scheduler": result.scheduler,
            "params": params, "reproducible": result.reproducible,
            "safety": {"level": checker.level, **({"scores": verdict.scores} if verdict.scores else {})},
        }
        if result.fallback:  # a chain's backends passed over before result.backend made it, and why
            record["fallback"] = list(result.fallback)
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
        image_id = session.gallery.add_image(run_id, path, record)
        saved.append(SavedImage(path=path, seed=seed, image_id=image_id, record=record))
    if not saved and blocked:
        raise SafetyBlocked(f"All {len(blocked)} image(s) were blocked by the safety policy "
                            f"({blocked[0]['category']}).", blocked[0]["category"] or "unsafe",
                            "Change the prompt or the seed.")
    return GenerationOutcome(run_id=run_id, images=saved, blocked=blocked, warnings=list(result.warnings),
                             timings={k: round(v, 4) for k, v in result.timings.items()})


def save_upscale(session, run_id, result, source: Path, source_record: dict | None, out_dir) -> "UpscaleOutcome":
    import json as _json

    from tools.metadata import JSON_KEY, a1111_parameters

    checker = session.safety()
    verdict = checker.check_image(result.image)
    if not verdict.allowed:
        raise SafetyBlocked(f"The upscaled image was blocked by the safety policy ({verdict.category}): "
                            f"{verdict.reason}.", verdict.category or "unsafe",
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
    out = session.out_dir(out_dir)
    stem = f"{source.stem}-x{result.scale}-{result.method}"
    dest = atomic_save_png(result.image, unique_path(out, stem), chunks)
    image_id = session.gallery.add_image(run_id, dest, record)
    return UpscaleOutcome(run_id=run_id, path=dest, image_id=image_id, record=record)


def check_post(post) -> PostProcess:
    """`post` as given (a PostProcess, validated when it was built), or the default for None."""
    if post is None:
        return PostProcess()
    if not isinstance(post, PostProcess):
        raise InvalidInput(f"post must be a tools.postprocess.PostProcess, not {type(post).__name__}.",
                           "Build it with PostProcess(sharpen=..., resize=(W, H), format=..., quality=...).")
    return post
