"""Making an image again from its record: rerun a PNG's recipe (generated, edited or layout-composed) and replay recipes."""
from __future__ import annotations

from pathlib import Path

from agent.critique import locator
from agent.errors import InvalidInput
from agent.events import Call, call_of
from agent.outcomes import GenerationOutcome
from agent.saving import Made, save_images
from tools.adapters import Control, IPAdapter, Lora
from tools.generate import GenerateRequest, check_request
from tools.metadata import read_metadata
from tools.postprocess import PostProcess


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


def rerun(session, png_path: str | Path, *, out_dir: str | Path | None = None,
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
        return _rerun_composed(session, record, png_path, out_dir, same_model, post, call_of(call))
    if p.get("mode") in {"img2img", "inpaint"}:
        req, inputs = session.edit_request(p["prompt"], inputs["init_image"], mask_path=inputs.get("mask"),
                                           strength=p["strength"],
                                           **{k: v for k, v in fields_.items() if k not in {"prompt", "width", "height"}})
    else:
        req = GenerateRequest(**fields_)
    if same_model:
        _check_same_model(session, record)
    return session.generate(req, idea=record.get("idea"), spec=record.get("spec"), out_dir=out_dir,
                            call=call, kind="rerun", inputs=inputs or None,
                            extra={"rerun_of": str(png_path), **kept_checklist(record)}, post=post)


def kept_checklist(record: dict) -> dict:
    """{"checklist": ...} of a loop-made image (the one its run checked, as the user edited it), or of
    a rerun of one, for the new image's record; {} for others. A rerun replays the pixels; it
    never derives the requirements again."""
    checklist = (record.get("loop") or {}).get("checklist") or record.get("checklist")
    return {"checklist": checklist} if checklist else {}


def _rerun_composed(session, record: dict, png_path, out_dir, same_model: bool,
                    post: PostProcess, call: Call) -> GenerationOutcome:
    """Replay a layout-guided or edited image from its recipe, then save and record it."""
    if same_model:
        _check_same_model(session, record)
    image = replay(session, record["recipe"], call=call)
    p = record["params"]
    req = GenerateRequest(**{k: p[k] for k in ("prompt", "negative_prompt", "steps", "cfg", "scheduler") if k in p},
                          width=record["width"], height=record["height"], seed=record["seed"])
    backend = session.backend()
    result = Made(images=[image], seeds=[record["seed"]], model=backend.model, backend=backend.name,
                  scheduler=record.get("scheduler"))
    with session.recorded("rerun", idea=record.get("idea"), spec=record.get("spec"), params=req.params()) as run_id:
        outcome = save_images(session, run_id, req, result, idea=record.get("idea"), spec=record.get("spec"),
                              out_dir=out_dir, inputs=None, params_update={"mode": "compose"},
                              extra={"recipe": record["recipe"], "rerun_of": str(png_path),
                                     **kept_checklist(record)}, post=post)
    session.gallery.finish_run(run_id, "done", result=outcome.to_json())
    return outcome


def replay(session, recipe: dict, *, call: Call | None = None):
    """The image a recipe describes (txt2img, or a composition over its base), made again."""
    call = call_of(call)
    if recipe.get("mode") == "txt2img":
        keys = ("prompt", "negative_prompt", "steps", "cfg", "width", "height", "seed", "scheduler")
        req = GenerateRequest(**{k: recipe[k] for k in keys if k in recipe}, **recorded_options(recipe))
        return session.backend().generate(check_request(req), progress=call.steps(), cancel=call.cancel).images[0]
    if recipe.get("mode") != "compose":
        raise InvalidInput(f"Unknown recipe mode '{recipe.get('mode')}'.", "The record is damaged or newer.")
    from tools.compose import ComposePlan

    verifier = session.verifier()
    if verifier is None:
        raise InvalidInput("Replaying a layout-guided image needs the detector that placed its objects.",
                           "Pass --detector (or set IMAGENT_DETECTOR) to the detector it was made with.")
    plan = ComposePlan.from_json(recipe["plan"])
    base = replay(session, recipe["base"], call=call) if plan.use_base else None
    return session.backend().compose(plan, locator(verifier), base, cancel=call.cancel).image


def _check_same_model(session, record: dict) -> None:
    backend = session.backend()
    if record.get("backend") != backend.name or str(record.get("model")) != str(backend.model):
        raise InvalidInput(
            f"This image was made by {record.get('backend')} model '{record.get('model')}', but this "
            f"session uses {backend.name} model '{backend.model}'.",
            f"Run again with --backend {record.get('backend')} --model {record.get('model')}.")


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
