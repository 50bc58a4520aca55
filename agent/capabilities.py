"""imagent's capabilities as plain calls: a Session plus a validated input model -> a JSON-able dict.

The one adapter layer under the MCP server (agent.mcp_server) and the LangChain tools
(agent.lc_tools); the input models live in agent.tool_schemas. Everything goes through the
Session, so validation, safety, metadata and the gallery work exactly as on the CLI.

Paths that callers pass are resolved by a `PathPolicy`: `PathPolicy.confined(inputs, outputs)`
allows reading only inside those folders (after resolving `..` and symlinks) and writes only into
`outputs`; `PathPolicy.open()` reads any path (relative to the working folder) and writes where
the session would.

Every image a call produced or returned appears in the result's "images" list as
{image_id, path, seed, run_id, width, height, prompt, metadata}; front ends attach the pictures.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable

from pydantic import BaseModel, ValidationError

from agent.errors import ImagentError, InvalidInput
from agent.events import Call
from agent.requests import RunOptions, expand_for_generate, sampling_fields
from agent.session import SavedImage, Session
from agent.tool_schemas import (TOOL_BY_NAME, CheckSafetyInput, EditInput, ExpandInput, FollowUpInput, GenerateInput,
                                GetImageInput, ListImagesInput, RunInput, ScoreInput, UpscaleInput)
from tools.generate import GenerateRequest
from tools.postprocess import PostProcess


@dataclass(frozen=True)
class PathPolicy:
    """Where caller-supplied paths may point. `inputs` None = unconfined."""

    inputs: tuple[Path, ...] | None = None
    outputs: Path | None = None

    @classmethod
    def open(cls, outputs: str | Path | None = None) -> "PathPolicy":
        return cls(None, Path(outputs).expanduser().resolve() if outputs else None)

    @classmethod
    def confined(cls, inputs: str | Path, outputs: str | Path) -> "PathPolicy":
        """Read only inside `inputs` and `outputs`, write only into `outputs` (both are created)."""
        ins, outs = Path(inputs).expanduser(), Path(outputs).expanduser()
        for folder, name in ((ins, "--inputs"), (outs, "--outputs")):
            if folder.exists() and not folder.is_dir():
                raise InvalidInput(f"{name} '{folder}' is a file, not a folder.",
                                   f"Pass a folder for {name} (it is created if missing).")
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise InvalidInput(f"{name} '{folder}' cannot be created ({exc.strerror or type(exc).__name__}).",
                                   f"Pass a folder you can write to for {name}.") from None
        return cls((ins.resolve(), outs.resolve()), outs.resolve())

    def no_such_file(self, text: str, what: str = "image") -> str:
        return f"The {what} '{text}': no such file in the input folder {self.inputs[0]}."

    @property
    def is_confined(self) -> bool:
        return self.inputs is not None

    def read_path(self, text: str, *, what: str = "image") -> Path:
        """A caller's path -> an existing file allowed by this policy, or InvalidInput saying where to put it."""
        if not isinstance(text, str) or not text.strip() or "\x00" in text:
            raise InvalidInput(f"The {what} path {text!r} is not a valid path.", "Pass a file path.")
        p = Path(text).expanduser()
        if self.inputs is None:
            if not p.exists():
                raise InvalidInput(f"The {what} file '{text}' does not exist.", "Check the path.")
            return p.resolve()
        if not p.is_absolute():
            p = self.inputs[0] / p
        try:
            real = p.resolve(strict=True)  # follows every symlink, so a link cannot point out of the roots
        except (OSError, RuntimeError):  # missing, symlink loops, permission errors
            real = None
        # One answer for "missing" and "outside" (and unreadable), so that a client cannot probe
        # which files exist outside the folders.
        if real is None or not any(real.is_relative_to(root) for root in self.inputs):
            raise InvalidInput(self.no_such_file(text, what),
                               f"Copy it into {self.inputs[0]} and pass its name, or use an image from "
                               f"{self.outputs} (outputs) by its name or gallery id.") from None
        if not real.is_file():
            raise InvalidInput(f"The {what} path '{text}' is not a file.")
        return real

    def out_dir(self) -> Path | None:
        """Where results go: `outputs`/DATE, or None for the session's default."""
        return self.outputs / datetime.now().strftime("%Y-%m-%d") if self.outputs else None


def image_result(image_id: int, path: str | Path, record: dict) -> dict:
    """The JSON an image is reported as, everywhere."""
    params = record.get("params") or {}
    return {"image_id": image_id, "path": str(path), "seed": record.get("seed"), "run_id": record.get("run_id"),
            "width": record.get("width"), "height": record.get("height"),
            "prompt": params.get("prompt"), "metadata": record}


def _saved(s: SavedImage) -> dict:
    return image_result(s.image_id, s.path, s.record)


def gallery_id(image) -> int | None:
    """The gallery id a follow-up's `image` names (12, "12", "#12"), or None for a path."""
    if isinstance(image, int):
        return image
    text = str(image).strip()
    return int(text.lstrip("#")) if text.lstrip("#").isdigit() else None


def follow_up_options(settings, inp: FollowUpInput) -> RunOptions:
    """The run a follow-up makes (FollowUpInput's rounds, candidates, seed), as `run` builds its own."""
    return RunOptions(rounds=inp.rounds, candidates=inp.candidates,
                      request_fields=sampling_fields(settings, seed=inp.seed))


def preview_follow_up(session: Session, image, change, options: RunOptions | None = None):
    """(FollowUpResult without a run, the idea its run would have or None): agent.followup_run.follow_up
    read but not run, so a door can refuse a bad image or change at once (the same InvalidInput the
    run would raise) and check the idea before queueing pixel work."""
    from agent.followup_run import prepare_follow_up

    path, image_id = session.image_path(image)
    result, idea, _ = prepare_follow_up(path, change, options, from_image=image_id)
    return result, idea


_RANGE_ERRORS = {"less_than_equal", "greater_than_equal", "less_than", "greater_than"}


def range_error(exc: ValidationError):
    """The tools.limits error for a validation error that is one value outside its limit, else None."""
    from tools.limits import LIMITS, out_of_range

    errors = exc.errors()
    if len(errors) == 1 and errors[0]["type"] in _RANGE_ERRORS and errors[0]["loc"] \
            and errors[0]["loc"][-1] in LIMITS:
        return out_of_range(errors[0]["loc"][-1], errors[0]["input"])
    return None


def error_payload(exc: BaseException) -> dict:
    """{error: {type, message, hint}} for a failed call (ImagentError or a validation error)."""
    if isinstance(exc, ValidationError):
        ranged = range_error(exc)
        if ranged is not None:  # the same words as the CLI's and the chat's for the same value
            exc = ranged
    if isinstance(exc, ValidationError):
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc']) or 'input'}: {e['msg']}" for e in exc.errors())
        return {"error": {"type": "InvalidInput", "message": f"Invalid arguments: {problems}.",
                          "hint": "Check the tool's input schema: field names, types and ranges."}}
    if isinstance(exc, ImagentError):
        out = {"type": type(exc).__name__, "message": exc.message, "hint": exc.hint}
        if getattr(exc, "param", None):
            out["param"] = exc.param
        if getattr(exc, "category", None):
            out["category"] = exc.category
        return {"error": out}
    return {"error": {"type": "InternalError", "message": f"{type(exc).__name__}: {exc}",
                      "hint": "This is a bug in imagent; the server keeps running. Please report it."}}


class Capabilities:
    """The tools, bound to one Session and one PathPolicy. `call(name, arguments)` validates and runs."""

    def __init__(self, session: Session, paths: PathPolicy | None = None):
        self.session = session
        self.paths = paths or PathPolicy.open()

    # -- dispatch --------------------------------------------------------------------------------
    def validate(self, name: str, arguments: dict | BaseModel | None) -> BaseModel:
        spec = TOOL_BY_NAME.get(name)
        if spec is None:
            raise InvalidInput(f"Unknown tool '{name}'.", f"Use one of: {', '.join(TOOL_BY_NAME)}.")
        if isinstance(arguments, spec.input):
            return arguments
        if isinstance(arguments, BaseModel):
            arguments = arguments.model_dump()
        return spec.input.model_validate(arguments or {})

    def call(self, name: str, arguments: dict | BaseModel | None = None, *, call: Call | None = None) -> dict:
        """Validate `arguments` against the tool's input model and run it (raises ImagentError or
        pydantic.ValidationError). `call` (agent.events.Call) cancels a long-running tool and gets
        its events. Concurrent callers serialize pixel work themselves (agent.jobs.JobQueue)."""
        inp = self.validate(name, arguments)
        method: Callable = getattr(self, name)
        if not TOOL_BY_NAME[name].long_running:
            return method(inp)
        return method(inp, call=call)

    # -- helpers ---------------------------------------------------------------------------------
    def _lora(self, lora):
        """A caller's LoRA under the path policy. Confined callers name a shipped LoRA, a NAME in the
        LoRA folder, a file in the input folder, or a hub id; never a file elsewhere (and a missing
        file and one outside read the same, as for images)."""
        import dataclasses
        import re

        from tools.adapters import DEMO_LORAS

        if not self.paths.is_confined or lora.source in DEMO_LORAS:
            return lora
        source = lora.source
        if re.fullmatch(r"[\w.-]+", source) and not source.startswith("."):   # a NAME: the LoRA folder only
            folder = self.session.settings.loras_dir
            for cand in (folder / f"{source}.safetensors", folder / source):
                if cand.exists():
                    return dataclasses.replace(lora, source=str(cand))
        try:
            return dataclasses.replace(lora, source=str(self.paths.read_path(source, what="LoRA")))
        except InvalidInput:
            hub_id = re.fullmatch(r"[\w-][\w.-]*/[\w.-]+", source) and not Path(source).suffix
            if not hub_id or Path(source).expanduser().exists():  # a local path outside: as if missing
                raise
            return lora

    def _fields(self, inp, *, size: bool = True) -> dict:
        # steps/cfg left None: the session applies the model's defaults (settings, model card, generic)
        from tools.adapters import Control, IPAdapter, parse_lora

        ip = inp.ip_adapter
        out = sampling_fields(
            self.session.settings, negative=inp.negative_prompt, steps=inp.steps, cfg=inp.cfg, seed=inp.seed,
            scheduler=inp.scheduler, loras=[self._lora(parse_lora(x)) for x in inp.loras],
            controls=[Control.load(c.kind, self.paths.read_path(c.image, what="control image"), c.scale, c.start, c.end,
                                   c.model) for c in inp.controls],
            ip_adapter=IPAdapter.load(self.paths.read_path(ip.image, what="IP-Adapter image"), ip.scale,
                                      ip.model) if ip else None,
            refiner=inp.refiner, refiner_switch=inp.refiner_switch,
            speed=dict(attention=inp.attention, vae_tiling=inp.vae_tiling, vae_slicing=inp.vae_slicing,
                       lora_fuse=inp.lora_fuse),
            size=(inp.width, inp.height) if size else None)
        if not size:
            del out["width"], out["height"]
        return out

    @staticmethod
    def _post(inp) -> PostProcess:
        return PostProcess.from_options(sharpen=inp.sharpen, resize=inp.resize, format=inp.format,
                                        quality=inp.quality)

    def _image_path(self, inp) -> tuple[Path, dict | None]:
        """The file an input refers to (by gallery id or by path) and its gallery row, if any."""
        if getattr(inp, "image_id", None) is not None:
            row = self.session.gallery.image(inp.image_id)
            if row is None:
                raise InvalidInput(f"There is no image with id {inp.image_id} in the gallery.",
                                   "Call list_images to see the ids.")
            path = Path(row["path"])
            if not path.is_file():
                raise InvalidInput(f"Image {inp.image_id} was recorded at {path}, but the file is gone.",
                                   "Pick another image with list_images.")
            return path, row
        return self.paths.read_path(inp.image), None

    # -- the tools -------------------------------------------------------------------------------
    def run(self, inp: RunInput, *, call: Call | None = None) -> dict:
        fields, post = self._fields(inp), self._post(inp)
        options = RunOptions(rounds=inp.rounds, candidates=inp.candidates, threshold=inp.threshold,
                             threshold_mode=inp.threshold_mode, style=inp.style, raw=inp.raw,
                             request_fields=fields, post=post, checklist=inp.checklist_json(),
                             require=tuple(inp.require), drop=tuple(inp.drop))
        outcome = self.session.run(inp.idea, options, out_dir=self.paths.out_dir(), call=call)
        return {**outcome.to_json(), "images": [_saved(outcome.best)]}

    def follow_up(self, inp: FollowUpInput, *, call: Call | None = None) -> dict:
        change = inp.change_value()
        image = inp.image if gallery_id(inp.image) is not None else str(self.paths.read_path(inp.image))
        result = self.session.follow_up(image, change, follow_up_options(self.session.settings, inp), call=call,
                                        out_dir=self.paths.out_dir())
        # the FollowUpResult's JSON (changes, diff, question, new_idea, note, run: its checks and checklist)
        # and the new picture as every tool here reports images
        return {**result.to_json(), "images": [_saved(result.outcome.best)] if result.outcome is not None else []}

    def generate(self, inp: GenerateInput, *, call: Call | None = None) -> dict:
        fields, post = self._fields(inp), self._post(inp)
        prompt, idea, spec, extra, expansion = inp.prompt, None, None, None, None
        if inp.expand or inp.style:
            exp = expand_for_generate(self.session, inp.prompt, style=inp.style, negative=inp.negative_prompt)
            prompt, idea, spec, extra = exp.prompt, exp.idea, exp.spec, exp.extra
            fields["negative_prompt"] = exp.negative
            expansion = {"positive": exp.prompt, "negative": exp.negative, **exp.extra["expansion"],
                         "warnings": list(exp.expansion.warnings)}
        outcome = self.session.generate(GenerateRequest(prompt=prompt, count=inp.count, **fields), idea=idea,
                                        spec=spec, extra=extra, out_dir=self.paths.out_dir(), call=call,
                                        post=post)
        out = {"run_id": outcome.run_id, "images": [_saved(s) for s in outcome.images], "blocked": outcome.blocked,
               "warnings": outcome.warnings, "timings": outcome.timings}
        if expansion:
            out["expansion"] = expansion
        return out

    def edit(self, inp: EditInput, *, call: Call | None = None) -> dict:
        post = self._post(inp)
        source, _ = self._image_path(inp)
        mask = self.paths.read_path(inp.mask, what="mask") if inp.mask else None
        outcome = self.session.edit(inp.prompt, source, mask_path=mask, strength=inp.strength,
                                    out_dir=self.paths.out_dir(), call=call, post=post,
                                    **self._fields(inp, size=False))
        mode = "inpaint" if mask else "img2img"
        return {"run_id": outcome.run_id, "mode": mode, "images": [_saved(s) for s in outcome.images],
                "blocked": outcome.blocked, "warnings": outcome.warnings, "timings": outcome.timings}

    def upscale(self, inp: UpscaleInput, *, call: Call | None = None) -> dict:
        source, _ = self._image_path(inp)
        outcome = self.session.upscale(source, scale=inp.scale, method=inp.method, prompt=inp.prompt,
                                       out_dir=self.paths.out_dir(), call=call)
        return {**outcome.to_json(), "images": [image_result(outcome.image_id, outcome.path, outcome.record)]}

    def expand(self, inp: ExpandInput) -> dict:
        exp = self.session.expand(inp.idea, style=inp.style, family=inp.family, negative=inp.negative)
        from agent.checklist_edits import preview_checklist

        checklist, warnings = preview_checklist(inp.idea, exp.spec.subject, given=inp.checklist_json(),
                                                require=inp.require, drop=inp.drop)
        out = {**exp.model_dump(mode="json"), "positive": exp.positive, "negative": exp.negative,
               "checklist": checklist.to_json()}
        out["warnings"] = list(out.get("warnings") or []) + warnings
        return out

    def check_safety(self, inp: CheckSafetyInput) -> dict:
        checker = self.session.safety()
        out: dict = {"level": getattr(checker, "level", self.session.settings.safety)}

        def verdict(v) -> dict:
            return {"allowed": v.allowed, "category": v.category, "reason": v.reason,
                    **({"scores": v.scores} if v.scores else {})}

        if inp.prompt is not None:
            out["prompt"] = verdict(checker.check_prompt(inp.prompt))
        if inp.image_id is not None or inp.image is not None:
            from tools.images import load_image

            path, _ = self._image_path(inp)
            out["image"] = {"path": str(path), **verdict(checker.check_image(load_image(path)))}
        out["allowed"] = all(out[k]["allowed"] for k in ("prompt", "image") if k in out)
        return out

    def score(self, inp: ScoreInput) -> dict:
        path, row = self._image_path(inp)
        text = inp.text
        if text is None:
            record = (row or {}).get("record") or {}
            if row is None:
                from tools.metadata import read_metadata

                try:
                    record = read_metadata(path)["record"] or {}
                except ImagentError:
                    record = {}
            text = record.get("idea") or (record.get("params") or {}).get("prompt")
            if not text:
                raise InvalidInput("This image carries no prompt to score against.",
                                   "Pass `text`: what the image should show.")
        result = self.session.score([path], text)
        return {"path": str(path), "text": text, "score": result["scores"][0], "cosine": result["cosine"][0],
                "formula": result["formula"], "formula_text": result["formula_text"], "model": result["model"]}

    def list_images(self, inp: ListImagesInput) -> dict:
        rows = self.session.gallery.images(limit=inp.limit, offset=inp.offset, run_id=inp.run_id, query=inp.query)
        keep = ("id", "run_id", "created", "path", "seed", "prompt", "negative_prompt", "width", "height", "model",
                "score", "round")
        items = [{("image_id" if k == "id" else k): r.get(k) for k in keep} for r in rows]
        return {"images": items, "count": len(items), "total": self.session.gallery.count_images(),
                "offset": inp.offset}

    def get_image(self, inp: GetImageInput) -> dict:
        path, row = self._image_path(inp)
        out = image_result(row["id"], path, row.get("record") or {})
        out.update(score=row.get("score"), round=row.get("round"), created=row.get("created"))
        return {"images": [out]}
