"""Input models for imagent's capabilities as tools, shared by the MCP server and the LangChain tools.

One pydantic model per tool, with a description on every field, so the two front doors offer the
same names, types, ranges and help and cannot drift apart. `agent.capabilities` runs them against
a Session; `agent.mcp_server` and `agent.lc_tools` only translate. `TOOLS` lists them in order.

Images are referred to either by `image_id` (an id from `list_images` or a previous result) or by
`image` (a file path; a server may confine paths to its input/output folders). `follow_up` takes
both in its one `image` field: a gallery id (12 or "#12") or a path.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agent.errors import InvalidInput
from agent.followup import EDIT_KINDS
from tools import postprocess as pp
from tools.limits import (IDEA_CHARS, MAX_CHANGES, MAX_CONTROLS, MAX_DROP, MAX_LORAS, MAX_REQUIRE, MAX_REQUIREMENTS,
                          PATH_CHARS, PROMPT_CHARS, REQUIRE_CHARS, bounds)
from tools.requirements import KINDS, RELATIONS
from tools.upscale import DEFAULT_METHOD


GRAMMAR_SAFE_LENGTH = 400  # llama.cpp compiles a tool's schema into a grammar; maxLength 4000 fails there


def grammar_safe(schema: dict, model: type[BaseModel] | None = None) -> None:
    """json_schema_extra of every input model: a maxLength above GRAMMAR_SAFE_LENGTH leaves the
    published schema (MCP, LangChain tools; a `Text` field's own metadata already drops it) and
    is said in the description instead; the model still enforces it when the arguments are validated."""
    fields = model.model_fields if model is not None else {}
    for name, prop in (schema.get("properties") or {}).items():
        limits = [getattr(m, "max_length", None) for m in getattr(fields.get(name), "metadata", ())]
        for node in (prop, *prop.get("anyOf", ()), prop.get("items") or {}):
            limit = node.get("maxLength") if isinstance(node, dict) else None
            if isinstance(limit, int) and limit > GRAMMAR_SAFE_LENGTH:
                del node["maxLength"]
                limits.append(limit)
        limit = max((x for x in limits if isinstance(x, int)), default=0)
        note = f"At most {limit} characters."
        if limit > GRAMMAR_SAFE_LENGTH and note not in prop.get("description", ""):
            prop["description"] = (prop.get("description", "") + " " + note).strip()


class _NoLongLimit:
    """Annotated metadata of a long text field: its JSON schema leaves out a maxLength over
    GRAMMAR_SAFE_LENGTH (validation keeps it). Unlike the model's json_schema_extra it survives
    LangChain's tool schema, a subset model that keeps each field's metadata but not the config."""

    def __get_pydantic_json_schema__(self, core_schema, handler):
        schema = handler(core_schema)
        if isinstance(schema.get("maxLength"), int) and schema["maxLength"] > GRAMMAR_SAFE_LENGTH:
            del schema["maxLength"]
        return schema


Text = Annotated[str, _NoLongLimit()]  # a prompt, an idea or a path: long limits stay out of schemas


class _Input(BaseModel):
    # a misspelt field is an error, not silently ignored; no grammar-breaking maxLength in the schema
    model_config = ConfigDict(extra="forbid", json_schema_extra=grammar_safe)


# -- shared field groups ------------------------------------------------------------------------
class ControlInput(_Input):
    """One ControlNet condition."""

    kind: Literal["canny", "layout", "scribble", "depth", "pose", "seg", "lineart", "softedge", "tile"] = Field(
        ..., description="canny: any image (imagent computes its edges); layout: boxes filled in object colours "
                         "(the demo model ships a ControlNet for it); the others: a ready condition image.")
    image: str = Field(..., min_length=1, max_length=400,
                       description="Path of the condition image (relative paths: the server's input folder).")
    scale: float = Field(1.0, ge=0.0, le=4.0, description="How strongly the condition steers (1 typical, 0 off).")
    start: float = Field(0.0, ge=0.0, le=1.0, description="Share of the steps after which the condition starts.")
    end: float = Field(1.0, ge=0.0, le=1.0, description="Share of the steps after which the condition stops.")
    model: str | None = Field(None, max_length=400,
                              description="ControlNet folder or hub id. Default: the model's own for the kind.")


class IPAdapterInput(_Input):
    """An IP-Adapter image style reference."""

    image: str = Field(..., min_length=1, max_length=400, description="Path of the reference image.")
    scale: float = Field(1.0, ge=0.0, le=2.0, description="How strongly it steers (0.5-1 typical, 0 off).")
    model: str = Field(..., min_length=1, max_length=400,
                       description="IP-Adapter weights: a file or folder (with image_encoder/), or "
                                   "ORG/NAME:SUBFOLDER/FILE on the hub.")


class _Adapters(_Input):
    loras: list[str] = Field([], max_length=MAX_LORAS,
                             description="LoRA adapters, each 'PATH_OR_NAME[:WEIGHT]' (weight 1 by default): a "
                                         ".safetensors file, a name in the LoRA folder, a hub id, or the demo "
                                         "model's demo-tall. <lora:NAME:W> in the prompt works too.")
    controls: list[ControlInput] = Field([], max_length=MAX_CONTROLS, description="ControlNet conditions (several at once).")
    ip_adapter: IPAdapterInput | None = Field(None, description="An image whose style the result should take.")
    refiner: str | None = Field(None, max_length=400, description="SDXL refiner (folder or hub id) for the last "
                                                                  "steps. Default: none.")
    refiner_switch: float = Field(0.8, **bounds("refiner_switch"), description="Share of the steps the base model makes "
                                                                   "before the refiner.")
    attention: Literal["sdpa", "sliced"] = Field("sdpa", description="sdpa (fast, default) or sliced (less memory).")
    vae_tiling: bool = Field(False, description="Decode in tiles: large sizes in little memory.")
    vae_slicing: bool = Field(False, description="Decode several images one at a time.")
    lora_fuse: bool = Field(False, description="Merge the LoRAs into the weights (faster sampling).")


class _Sampling(_Adapters):
    negative_prompt: Text = Field("", max_length=PROMPT_CHARS,
                                 description="What to keep out of the image (negative prompt). Empty for none.")
    steps: int | None = Field(None, **bounds("steps"),
                              description="Denoising steps; more is slower and usually finer. Default: the "
                                          "model's own default (20 for most models).")
    cfg: float | None = Field(None, **bounds("cfg"),
                              description="Guidance scale: how strictly to follow the prompt (7 is typical). "
                                          "Default: the model's own default.")
    seed: int | None = Field(None, **bounds("seed"),
                             description="Random seed for a reproducible result. Default: drawn at random and "
                                         "reported in the result.")
    scheduler: str | None = Field(None, max_length=64,
                                  description="Sampler name, e.g. euler, euler_a, dpm++, ddim. Default: the "
                                              "model's own.")


RequireText = Annotated[str, Field(min_length=1, max_length=REQUIRE_CHARS)]
DropId = Annotated[str, Field(min_length=1, max_length=16)]


class RequirementInput(_Input):
    """One requirement of a checklist given whole, as a run's record has it (tools.requirements)."""

    id: str = Field(..., min_length=1, max_length=16, description="Its id: o1, o2 (objects), r1 (relations), bg, "
                                                                  "only (nothing else), holistic.")
    kind: Literal[KINDS] = Field(  # type: ignore[valid-type]
        ..., description="object, relation, background, exclusive (nothing else in the picture) or holistic "
                         "(the whole image's score).")
    text: str | None = Field(None, max_length=REQUIRE_CHARS, description="How it reads. Default: written from "
                                                                          "the fields.")
    noun: str | None = Field(None, max_length=60, description="object: the thing, singular, e.g. circle, cat.")
    count: int | None = Field(None, ge=1, le=100, description="object: the exact count. Default: at least one.")
    attributes: list[Annotated[str, Field(max_length=40)]] = Field([], max_length=8,
                                                                   description="object: e.g. ['red'].")
    relation: Literal[RELATIONS] | None = Field(  # type: ignore[valid-type]
        None, description="relation: where `subject` is from `object`.")
    subject: str | None = Field(None, max_length=16, description="relation: the id of an object listed before it.")
    object: str | None = Field(None, max_length=16, description="relation: the id of an object listed before it.")
    value: str | None = Field(None, max_length=40, description="background: its colour, e.g. black.")


class _Checklist(_Input):
    """The requirements a run checks on every image: derived from the idea, corrected in words
    (`require`, `drop`) or given whole (`checklist`); agent.requirements checks them."""

    require: list[RequireText] = Field(
        [], max_length=MAX_REQUIRE,
        description="Requirements to add to the checklist, in words the requirement parser reads, e.g. "
                    "'a red circle left of a blue square', 'two green triangles', 'on a black background'.")
    drop: list[DropId] = Field([], max_length=MAX_DROP,
                               description="Requirements to remove from the checklist: their ids (o2, r1, bg, "
                                           "only) or numbers as `expand` lists them; dropping an object drops its "
                                           "relations too.")
    checklist: list[RequirementInput] | None = Field(
        None, max_length=MAX_REQUIREMENTS,
        description="The whole checklist instead of deriving it from the idea (a run's record has one). "
                    "require and drop apply to it. Default: derived.")

    @field_validator("checklist", mode="before")
    @classmethod
    def _recorded(cls, value):  # a run's recorded checklist {"source", "requirements"} as it is
        return value["requirements"] if isinstance(value, dict) and "requirements" in value else value

    def checklist_json(self) -> list[dict] | None:
        """The given checklist as requirement dicts (agent.checklist_edits.checklist_from reads them)."""
        return None if self.checklist is None else [r.model_dump(exclude_none=True) for r in self.checklist]


class _Size(_Input):
    width: int | None = Field(None, **bounds("width"),
                              description="Image width in pixels, a multiple of 8. Default: the model's native size.")
    height: int | None = Field(None, **bounds("height"),
                               description="Image height in pixels, a multiple of 8. Default: the model's native size.")


class _Post(_Input):
    """Post-processing of the saved image and its file format (tools.postprocess checks the values)."""

    sharpen: float | None = Field(None, ge=0.0, le=pp.SHARPEN_MAX,
                                  description=f"Sharpen the saved image (unsharp mask), 0 (off) to "
                                              f"{pp.SHARPEN_MAX:g}; 1 is moderate. Default: 0.")
    resize: str | None = Field(None, max_length=16,
                               description=f"Resize the saved image to exactly 'WIDTHxHEIGHT' pixels "
                                           f"({pp.SIDE_MIN}..{pp.SIDE_MAX} each, Lanczos), e.g. '640x480'. "
                                           "Default: the generated size.")
    format: str | None = Field(None, max_length=8,
                               description=f"File format: {', '.join(pp.FORMATS)}. Default: png (lossless); "
                                           "jpeg and webp are smaller. The metadata is kept in each.")
    quality: int | None = Field(None, ge=pp.QUALITY_MIN, le=pp.QUALITY_MAX,
                                description=f"JPEG/WebP quality {pp.QUALITY_MIN}..{pp.QUALITY_MAX}. "
                                            f"Default: {pp.DEFAULT_QUALITY}.")


class _ImageRef(_Input):
    image_id: int | None = Field(None, ge=1, description="Id of an image in the gallery (from list_images or a "
                                                         "previous result). Give this or `image`.")
    image: Text | None = Field(None, min_length=1, max_length=PATH_CHARS,
                              description="Path of an image file (PNG, JPEG or WebP). Relative paths are read "
                                          "from the server's input folder. Give this or `image_id`.")

    @model_validator(mode="after")
    def _one_ref(self):
        if (self.image_id is None) == (self.image is None):
            raise ValueError("give exactly one of `image_id` (a gallery id) or `image` (a file path)")
        return self


# -- one model per tool -------------------------------------------------------------------------
class RunInput(_Size, _Sampling, _Post, _Checklist):
    """Turn a rough idea into the best image the critique loop can make."""

    idea: Text = Field(..., min_length=1, max_length=IDEA_CHARS,
                      description="The rough idea in plain words, e.g. 'two red circles on a blue background'.")
    rounds: int = Field(3, **bounds("rounds"), description="Most rounds of generate -> score -> revise (1 = no revision).")
    candidates: int = Field(2, **bounds("candidates"), description="Images generated per round (different seeds); the best "
                                                       "is kept.")
    threshold: float | None = Field(None, ge=0.0, le=2.5,
                                    description="Stop as soon as the best score reaches this: a fraction of the "
                                                "reference score (relative, 0..1.5) or CLIPScore units "
                                                "(absolute, 0..2.5). Default: the loop's own relative threshold.")
    threshold_mode: Literal["relative", "absolute"] = Field(
        "relative", description="How `threshold` is read: relative to the scorer's calibration for this idea, "
                                "or absolute CLIPScore.")
    style: str | None = Field(None, max_length=64, description="Style preset name (see the styles list), e.g. "
                                                               "watercolor, cinematic. Default: none.")
    raw: bool = Field(False, description="Use the idea exactly as written as the prompt (no expansion).")


class ChangeInput(_Input):
    """One typed edit of a picture's checklist (agent.followup.Change), by the ids its run's checklist lists."""

    # a plain string, the kinds listed in the schema: a wrong kind gets agent.followup's own words on every door
    kind: str = Field(..., min_length=1, max_length=16, json_schema_extra={"enum": list(EDIT_KINDS)},
                      description="add (value: what to add, in words, e.g. 'a blue square'), remove (target), "
                                  "recolour (target, value: the new colour), recount (target, value: the new "
                                  "count), background (value: its colour, e.g. black), relate (target, other, "
                                  "value: left of, right of, above or below).")
    target: str = Field("", max_length=16, description="The object's id in the picture's checklist (o1, o2, ...): "
                                                       "what remove, recolour and recount change; relate: the "
                                                       "subject. Empty for add and background.")
    other: str = Field("", max_length=16, description="relate: the id of the object the target is placed from.")
    value: str = Field("", max_length=REQUIRE_CHARS,
                       description="add: the objects in words; recolour: a colour; recount: a whole number; "
                                   "background: a colour; relate: the relation. Empty for remove.")


GalleryIdOrPath = Annotated[int, Field(ge=1)] | Annotated[str, Field(min_length=1, max_length=PATH_CHARS),
                                                          _NoLongLimit()]


class FollowUpInput(_Input):
    """Change a picture imagent made by a follow-up, in words or as typed edits of its checklist."""

    image: GalleryIdOrPath = Field(
        ..., description="The picture to change: its gallery id (the image_id a run, list_images or a previous "
                         "follow-up gave, e.g. 12 or '#12'), or the path of a PNG imagent made where this door "
                         "takes paths (a server reads only its input and output folders; HTTP takes ids only).")
    change: Text | None = Field(None, min_length=1, max_length=IDEA_CHARS,
                               description="The change in words, e.g. 'add a blue square', 'make the circle "
                                           "orange', 'remove the square', 'make it three', 'on a black "
                                           "background', 'put the circle left of the square'; 'new: IDEA' starts "
                                           "another picture. Give this or `changes`.")
    changes: list[ChangeInput] | None = Field(None, max_length=MAX_CHANGES,
                                              description="The change as typed edits of the picture's checklist, "
                                                          "applied in order, e.g. [{'kind': 'recolour', 'target': "
                                                          "'o1', 'value': 'orange'}]. Give this or `change`.")
    rounds: int = Field(3, **bounds("rounds"), description="Most rounds of repair -> score -> revise from the "
                                                           "picture (1 = no revision).")
    candidates: int = Field(2, **bounds("candidates"), description="Images made per round; the best is kept.")
    seed: int | None = Field(None, **bounds("seed"),
                             description="Random seed for a reproducible result. Default: drawn at random and "
                                         "reported in the result.")

    def change_value(self) -> str | list[dict]:
        """What agent.followup_run.follow_up takes: the words, or the typed edits as dicts; InvalidInput
        (the same words on every door) unless exactly one of `change` and `changes` is given."""
        if (self.change is None) == (not self.changes):
            raise InvalidInput("Give exactly one of `change` (the change in words) or `changes` (typed edits).",
                               "E.g. change='add a blue square', or changes=[{'kind': 'recolour', 'target': 'o1', "
                               "'value': 'orange'}].", param="change")
        return self.change if self.change is not None else [c.model_dump() for c in self.changes]


class GenerateInput(_Size, _Sampling, _Post):
    """Generate images from a prompt (text-to-image), in one shot, without the critique loop."""

    prompt: Text = Field(..., min_length=1, max_length=PROMPT_CHARS,
                        description="What to draw. Used as written unless `expand` or `style` is set.")
    expand: bool = Field(False, description="Treat `prompt` as a rough idea: expand it into a structured prompt "
                                            "first (as `imagent generate --idea`).")
    style: str | None = Field(None, max_length=64, description="Style preset for the expansion (implies "
                                                               "`expand`). Default: none.")
    count: int = Field(1, **bounds("count"), description="Number of images (seeds seed, seed+1, ...).")


class EditInput(_ImageRef, _Sampling, _Post):
    """Change an existing image: img2img, or inpainting where a mask is white."""

    prompt: Text = Field(..., min_length=1, max_length=PROMPT_CHARS, description="What the edited image should show.")
    mask: Text | None = Field(None, min_length=1, max_length=PATH_CHARS,
                             description="Path of a mask image of the same size: white = repaint, black = keep. "
                                         "Default: none (the whole image is reworked).")
    strength: float = Field(0.75, **bounds("strength"),
                            description="How much to change, above 0 up to 1 (0.3 keeps most of the image, "
                                        "1 replaces it).")


class UpscaleInput(_ImageRef):
    """Enlarge an image by 2, 3 or 4 times."""

    scale: int = Field(2, **bounds("scale"), description="Enlargement factor: 2, 3 or 4 (the method must support it).")
    method: str = Field(DEFAULT_METHOD, max_length=32,
                        description="realesrgan (photos), realesrgan-anime (flat colours, fast), "
                                    "realesrgan-anime-hq, lanczos (no model), sd-x4, hires-fix.")
    prompt: Text | None = Field(None, max_length=PROMPT_CHARS,
                               description="Prompt for sd-x4 / hires-fix. Default: the image's recorded prompt.")


class ExpandInput(_Checklist):
    """Expand a rough idea into a structured prompt and show it, with its checklist, without generating anything."""

    idea: Text = Field(..., min_length=1, max_length=IDEA_CHARS, description="The rough idea, e.g. 'a cat coding at night'.")
    style: str | None = Field(None, max_length=64, description="Style preset name. Default: none.")
    family: str | None = Field(None, max_length=16,
                               description="Render for this model family: demo, sd, sdxl, flux or openai. "
                                           "Default: guessed from the session's model.")
    negative: Text = Field("", max_length=PROMPT_CHARS, description="Extra negatives to add, comma-separated.")


class CheckSafetyInput(_Input):
    """Check a prompt and/or an image against the session's safety policy, without generating."""

    prompt: Text | None = Field(None, min_length=1, max_length=PROMPT_CHARS, description="Prompt text to check.")
    image_id: int | None = Field(None, ge=1, description="Gallery id of an image to check.")
    image: Text | None = Field(None, min_length=1, max_length=PATH_CHARS, description="Path of an image file to check.")

    @model_validator(mode="after")
    def _something(self):
        if self.prompt is None and self.image_id is None and self.image is None:
            raise ValueError("give a `prompt`, an image (`image_id` or `image`), or both")
        if self.image_id is not None and self.image is not None:
            raise ValueError("give `image_id` or `image`, not both")
        return self


class ScoreInput(_ImageRef):
    """Score how well an image matches a text with CLIP (higher is better)."""

    text: Text | None = Field(None, min_length=1, max_length=PROMPT_CHARS,
                             description="Text to score against. Default: the image's recorded idea or prompt.")


class ListImagesInput(_Input):
    """List recent images in the gallery, newest first."""

    limit: int = Field(20, ge=1, le=200, description="How many images to return.")
    offset: int = Field(0, ge=0, description="How many of the newest images to skip (for paging).")
    query: str | None = Field(None, max_length=200, description="Only images whose prompt contains this text.")
    run_id: str | None = Field(None, max_length=64, description="Only images of this run.")


class GetImageInput(_Input):
    """Fetch one image from the gallery: the picture and its full metadata."""

    image_id: int = Field(..., ge=1, description="Gallery id of the image.")


@dataclass(frozen=True)
class ToolSpec:
    name: str
    input: type[BaseModel]
    description: str
    long_running: bool = False    # makes pixels: serialized, reports progress, may run as a job
    read_only: bool = False
    returns_images: bool = False  # the result's "images" are pictures to attach (not just a listing)


TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec("run", RunInput, "Turn a rough idea into an image with the critique loop: expand it, generate "
             "candidates, check safety, score them with CLIP, check every requirement of its checklist "
             "(correct it with require/drop, or give it whole) and revise until the best image fits "
             "(or the rounds run out). Returns the best image, its seed, metadata and a table of rounds.",
             long_running=True, returns_images=True),
    ToolSpec("follow_up", FollowUpInput, "Change a picture imagent made, as a user's follow-up would: give its "
             "image (a gallery id) and the change in words ('add a blue square', 'make the circle orange', 'remove "
             "the square', 'on a black background') or as typed edits of its checklist (`changes`, by the object "
             "ids its run's checklist lists). The checklist is edited and the critique loop repairs the picture "
             "from itself. Returns how the change was read (changes), the checklist's diff ('+ a blue square', "
             "'red -> orange: the circle'), the run (the best image, its checks: a verdict per requirement) and "
             "the image; when nothing was made (run null), a question to ask the user or a new idea to run.",
             long_running=True, returns_images=True),
    ToolSpec("generate", GenerateInput, "Generate images from a prompt in one shot (no critique loop). Returns "
             "each image with its seed and full metadata.", long_running=True, returns_images=True),
    ToolSpec("edit", EditInput, "Edit an image: img2img from a prompt, or inpainting where a mask is white. "
             "Returns the new image with its seed and metadata.", long_running=True, returns_images=True),
    ToolSpec("upscale", UpscaleInput, "Upscale an image by 2, 3 or 4 with Real-ESRGAN, Lanczos or a diffusion "
             "upscaler. Returns the enlarged image and its metadata.", long_running=True, returns_images=True),
    ToolSpec("expand", ExpandInput, "Expand a rough idea into a structured prompt (subject, style, lighting, "
             "composition, quality, negatives), its rendering for the model and the checklist a run checks "
             "(with require/drop applied). Generates nothing."),
    ToolSpec("check_safety", CheckSafetyInput, "Check a prompt and/or an image against the safety policy. "
             "Returns allowed/blocked with the category and reason.", read_only=True),
    ToolSpec("score", ScoreInput, "Score how well an image matches a text with CLIP; says which formula.",
             read_only=True),
    ToolSpec("list_images", ListImagesInput, "List recent gallery images (id, path, prompt, seed, size, score).",
             read_only=True),
    ToolSpec("get_image", GetImageInput, "Get one gallery image with its full metadata.", read_only=True,
             returns_images=True),
)

TOOL_BY_NAME = {t.name: t for t in TOOLS}


def help_of(model: type[BaseModel], name: str) -> str:
    """A field's help, as every front door shows it (the MCP/LangChain schema, `imagent ... --help`):
    its description, plus its range where tools.limits has one."""
    from tools.limits import LIMITS

    text = model.model_fields[name].description or ""
    return text + (f" Range: {LIMITS[name].text()}." if name in LIMITS else "")


# the parameters other front doors (the chat agent's tools) share with the catalogue, and the input
# model that defines each: same meaning, type and range ("image" and "seed" differ there, so not shared)
SHARED_FIELDS = {"idea": RunInput, "style": RunInput, "rounds": RunInput, "candidates": RunInput,
                 "require": RunInput, "drop": RunInput,
                 "steps": GenerateInput, "strength": EditInput, "scale": UpscaleInput, "method": UpscaleInput}


def shared_field(name: str, default):
    """(type metadata, Field) for a parameter the catalogue defines (SHARED_FIELDS): its description
    and limits with the caller's default, the field's own metadata (lengths, grammar safety)
    kept; None for others."""
    model = SHARED_FIELDS.get(name)
    if model is None:
        return None
    info = model.model_fields[name]
    field = Field(default, description=info.description)
    field.metadata = list(info.metadata)
    return field
