"""The text-to-image / img2img / inpainting contract shared by every backend.

A backend takes a validated `GenerateRequest` and returns a `GenerateResult`. Seeds, progress and
cancel are explicit. Backends live in `tools.diffusers_backend` and `tools.openai_backend`;
`tools.fallback` chains several into one.
"""
from __future__ import annotations

import random
import re
import threading
from dataclasses import dataclass, field
from typing import Callable, Protocol

from PIL import Image

from tools.errors import InvalidInput
from tools.images import MAX_SIDE
from tools.limits import LIMITS, MAX_CONTROLS, PROMPT_CHARS, check_range

DEFAULT_STEPS = 20
DEFAULT_CFG = 7.0

ProgressFn = Callable[[int, int], None]  # (step done, total steps)
SPEED_OPTIONS = {"attention": "sdpa", "vae_tiling": False, "vae_slicing": False, "compile": False,
                 "lora_fuse": False}  # defaults
ATTENTION = ("sdpa", "sliced")
# request fields recorded in params only when set: adapters, conditions, refiner, speed options
OPTION_KEYS = ("loras", "controls", "ip_adapter", "refiner", "refiner_switch", *SPEED_OPTIONS)


@dataclass(frozen=True)
class GenerateRequest:
    """What to generate. `width`/`height` None means the model's native size; `steps`/`cfg` None
    means the model's defaults (the session fills them in; else DEFAULT_STEPS / DEFAULT_CFG).
    Frozen: `check_request` returns a new, checked request (`checked` True) that backends take
    as it is; `dataclasses.replace` of it is unchecked again."""

    prompt: str
    negative_prompt: str = ""
    steps: int | None = None
    cfg: float | None = None
    width: int | None = None
    height: int | None = None
    seed: int | None = None
    scheduler: str | None = None
    count: int = 1
    init_image: Image.Image | None = None
    strength: float = 0.75
    mask: Image.Image | None = None
    loras: tuple = ()          # tools.adapters.Lora, in order; `<lora:NAME:W>` prompt tags join them
    controls: tuple = ()       # tools.adapters.Control conditions (ControlNet; several = MultiControlNet)
    ip_adapter: object = None   # tools.adapters.IPAdapter: an image style reference
    refiner: str | None = None  # SDXL refiner (folder or hub id): base to refiner_switch, then the refiner
    refiner_switch: float = 0.8
    # speed and memory (SPEED_OPTIONS): same image, other time/memory; recorded when set
    attention: str = "sdpa"    # "sdpa" (PyTorch scaled-dot-product attention) or "sliced" (less memory)
    vae_tiling: bool = False   # decode in tiles: large sizes in little memory
    vae_slicing: bool = False  # decode a batch one image at a time
    compile: bool = False      # torch.compile the UNet (once per process; later calls reuse it)
    lora_fuse: bool = False    # merge the LoRAs into the weights (faster sampling; kept while the next call's match)
    checked: bool = field(default=False, init=False, repr=False, compare=False)  # set by check_request only

    @property
    def mode(self) -> str:
        if self.mask is not None:
            return "inpaint"
        if self.init_image is not None:
            return "img2img"
        return "txt2img"

    def params(self) -> dict:
        """The JSON-able parameters (no images), as recorded in metadata and the gallery."""
        skip = {"init_image", "mask", "loras", "controls", "ip_adapter", "checked"}
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k not in skip
             and not (k in SPEED_OPTIONS and getattr(self, k) == SPEED_OPTIONS[k])}
        d["mode"] = self.mode
        if self.mode == "txt2img":
            d.pop("strength")
        if self.loras:
            d["loras"] = [lora.to_json() for lora in self.loras]
        if self.controls:
            d["controls"] = [c.to_json() for c in self.controls]
        if not self.refiner:
            d.pop("refiner"), d.pop("refiner_switch")
        if self.ip_adapter is not None:
            d["ip_adapter"] = self.ip_adapter.to_json()
        return d


@dataclass
class GenerateResult:
    images: list[Image.Image]
    seeds: list[int]
    model: str
    backend: str
    width: int
    height: int
    scheduler: str | None
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    reproducible: bool = True
    revised_prompts: list[str | None] = field(default_factory=list)
    # backends of a chain (tools.fallback) passed over before `backend` made the images, and why:
    # [{"backend": "openai", "error": "OpenAI did not answer within 60 s."}]
    fallback: list[dict] = field(default_factory=list)


class ImageBackend(Protocol):
    """What a generation backend provides. `capabilities` is a subset of {txt2img, img2img, inpaint}."""

    name: str
    model: str
    capabilities: frozenset[str]

    def generate(self, request: GenerateRequest, *, progress: ProgressFn | None = None,
                 cancel: threading.Event | None = None) -> GenerateResult: ...


def fast_defaults(model: str, req: "GenerateRequest") -> dict | None:
    """Sampling defaults of few-step models, as their cards give them, or None for others:
    SD-Turbo / SDXL-Turbo (a 'turbo' model id): 4 steps (1-4 work), no guidance (cfg 0); an LCM model,
    an LCM-LoRA (a LoRA whose name holds 'lcm') or the lcm scheduler: 4 steps, cfg 1, the LCM
    scheduler. Explicit steps / cfg / scheduler always win."""
    name = str(model).lower()
    lcm_lora = any("lcm" in str(getattr(x, "source", x)).lower() for x in (req.loras or ()))
    if "turbo" in name:
        return {"steps": 4, "cfg": 0.0}
    if "lcm" in name or lcm_lora or (req.scheduler or "").lower() == "lcm":
        return {"steps": 4, "cfg": 1.0, "scheduler": "lcm"}
    return None


def draw_seed() -> int:
    return random.SystemRandom().randrange(0, 2**32)


# C0 controls but tab and newline, DEL and C1 controls: terminal escapes (ESC, BEL, ...), NUL
# (which would end a PNG tEXt chunk early) and the like. One definition for input and output.
CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_ANY_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # the same plus tab and newline


def check_text(text: str, what: str = "The prompt") -> str:
    """`text`, or InvalidInput naming the first control character in it (tab and newline are fine)."""
    found = CONTROL_CHARS.search(text)
    if found:
        char = found.group()
        raise InvalidInput(f"{what} contains the control character {_char_name(char)} at position {found.start() + 1}.",
                           "Remove it: terminal escape codes and other control characters are not allowed "
                           "(tab and newline are).")
    return text


def printable(text, keep: str = "\t\n") -> str:
    """`text` with control characters shown as escapes (ESC as \\x1b), for printing stored text on a
    terminal; characters in `keep` stay as they are (keep="" also escapes tab and newline)."""
    return _ANY_CONTROL.sub(lambda m: m.group() if m.group() in keep else _escape_char(m.group()), str(text))


def _escape_char(char: str) -> str:
    return {"\t": "\\t", "\n": "\\n", "\r": "\\r"}.get(char, f"\\x{ord(char):02x}")


def _char_name(char: str) -> str:
    names = {0: "NUL", 7: "BEL", 8: "BS", 0x0B: "VT", 0x0C: "FF", 0x0D: "CR", 0x1B: "ESC", 0x7F: "DEL"}
    code = ord(char)
    return f"{names[code]} (U+{code:04X})" if code in names else f"U+{code:04X}"


def _fill(req: GenerateRequest, **values) -> None:
    """Set fields on the copy check_request is building (frozen once it is returned)."""
    for name, value in values.items():
        object.__setattr__(req, name, value)


def check_request(req: GenerateRequest) -> GenerateRequest:
    """Validate a request up front; raises InvalidInput with what to do. Returns a new request
    with defaults and a drawn seed filled in (the one place a seed is drawn), marked `checked`;
    the one passed in is never changed, and a checked request is returned as it is."""
    import dataclasses

    if req.checked:
        return req
    req = dataclasses.replace(req)
    check_numeric_types(req)
    if not isinstance(req.prompt, str) or not req.prompt.strip():
        raise InvalidInput("The prompt is empty.", "Describe what to generate, e.g. \"two red circles\".")
    if req.negative_prompt is not None and not isinstance(req.negative_prompt, str):
        raise InvalidInput(f"The negative prompt must be text, not {type(req.negative_prompt).__name__}.",
                           "Pass a string (or nothing).")
    for what, text in (("prompt", req.prompt), ("negative prompt", req.negative_prompt or "")):
        if len(text) > PROMPT_CHARS:
            raise InvalidInput(f"The {what} is {len(text)} characters; the limit is {PROMPT_CHARS}.",
                               "Shorten it: SD 1.x/2.x prompts over 77 tokens are split into chunks (compel), "
                               "other models cut what their text encoder cannot read.")
        check_text(text, f"The {what}")
    for side, value in (("width", req.width), ("height", req.height)):
        if value is None:
            continue
        check_range(side, value)
        if value % 8:
            raise InvalidInput(f"The {side} {value} is not a multiple of 8.",
                               f"Try {max(16, value - value % 8)} or {value - value % 8 + 8}.", param=side)
    if req.steps is None:
        _fill(req, steps=DEFAULT_STEPS)
    if req.cfg is None:
        _fill(req, cfg=DEFAULT_CFG)
    for name in ("steps", "cfg", "count"):
        check_range(name, getattr(req, name))
    if req.seed == -1:  # A1111's "random"
        _fill(req, seed=None)
    if req.seed is not None:
        check_range("seed", req.seed)
    if req.mode != "txt2img":
        check_range("strength", req.strength)
    if req.init_image is not None:
        check_init_size(req.init_image.size)
    if req.mask is not None and req.init_image is None:
        raise InvalidInput("A mask was given without an image to inpaint.", "Add the image to inpaint (init_image).",
                           param="init_image")
    if req.mask is not None and req.mask.size != req.init_image.size:
        raise InvalidInput(
            f"The mask is {req.mask.size[0]}x{req.mask.size[1]} but the image is "
            f"{req.init_image.size[0]}x{req.init_image.size[1]}.", "Use a mask of the same size as the image.")
    check_adapters(req)
    if req.refiner is not None:
        if not isinstance(req.refiner, str) or not req.refiner.strip():
            raise InvalidInput("The refiner must name a model folder or hub id.", "Pass a folder or hub id.",
                               param="refiner")
        if isinstance(req.refiner_switch, bool) or not isinstance(req.refiner_switch, (int, float)):
            raise InvalidInput(f"refiner_switch must be a number, not {req.refiner_switch!r}.",
                               f"Use {LIMITS['refiner_switch'].text()}.", param="refiner_switch")
        check_range("refiner_switch", req.refiner_switch)
        if req.mode != "txt2img":
            raise InvalidInput("A refiner works with text-to-image only.", "Drop the refiner for img2img and inpainting.",
                               param="refiner")
        _fill(req, refiner_switch=float(req.refiner_switch))
    if req.attention not in ATTENTION:
        raise InvalidInput(f"Unknown attention '{req.attention}'.",
                           "Use sdpa (the default, PyTorch's fused attention) or sliced (less memory, slower).")
    for name in ("vae_tiling", "vae_slicing", "compile", "lora_fuse"):
        if not isinstance(getattr(req, name), bool):
            raise InvalidInput(f"The {name} option must be true or false, not {getattr(req, name)!r}.",
                               f"Pass {name}=True or False.")
    if req.scheduler is not None:
        from tools.schedulers import check_name

        _fill(req, scheduler=check_name(req.scheduler))
    if req.seed is None:
        _fill(req, seed=draw_seed())
    _fill(req, checked=True)
    return req


def check_adapters(req: GenerateRequest) -> None:
    """LoRAs (strings are parsed as PATH[:WEIGHT]; `<lora:NAME:W>` tags move from the prompt into
    `loras`) and control conditions (ranges, the image's shape against the output). Sets the
    checked values on `req`, check_request's own copy."""
    from tools.adapters import (Control, Lora, check_control, check_lora, merge_loras,
                                parse_lora, split_prompt_loras)

    loras = req.loras if isinstance(req.loras, (list, tuple)) else [req.loras]
    given = []
    for item in loras:
        if isinstance(item, str):
            given.append(parse_lora(item))
        elif isinstance(item, Lora):
            given.append(check_lora(item))
        else:
            raise InvalidInput(f"A LoRA must be a Lora or 'PATH[:WEIGHT]' text, not {type(item).__name__}.",
                               "Pass e.g. loras=['demo-tall:0.8'].")
    prompt, tagged = split_prompt_loras(req.prompt)
    _fill(req, prompt=prompt)
    if not req.prompt.strip():
        raise InvalidInput("The prompt holds only LoRA tags.", "Describe what to generate besides the <lora:...> tags.")
    _fill(req, loras=merge_loras(given + tagged))
    controls = req.controls if isinstance(req.controls, (list, tuple)) else [req.controls]
    if len(controls) > MAX_CONTROLS:
        raise InvalidInput(f"{len(controls)} control conditions were given; the limit is {MAX_CONTROLS}.",
                           "Use fewer control conditions.", param="controls")
    size = req.init_image.size if req.init_image is not None else (
        (req.width, req.height) if req.width and req.height else None)
    for c in controls:
        if not isinstance(c, Control):
            raise InvalidInput(f"A control condition must be a Control, not {type(c).__name__}.",
                               "Build it with tools.adapters.Control(kind, image, scale).")
    if controls and req.mode == "inpaint":
        raise InvalidInput("Control conditions work with text-to-image and img2img, not inpainting yet.",
                           "Drop the control conditions, or edit without a mask.", param="controls")
    _fill(req, controls=tuple(check_control(c, size) for c in controls))
    if req.ip_adapter is not None:
        from tools.adapters import check_ip_adapter

        _fill(req, ip_adapter=check_ip_adapter(req.ip_adapter))


# field -> (whether None is allowed, integers only); bool is refused even though it is an int
_NUMERIC_FIELDS = {"steps": (True, True), "cfg": (True, False), "seed": (True, True),
                   "width": (True, True), "height": (True, True), "count": (False, True),
                   "strength": (False, False)}


def check_numeric_types(req: GenerateRequest) -> None:
    """InvalidInput naming the first numeric field whose value has the wrong type (e.g. cfg="7"
    through the Python API), before any comparison could raise a raw TypeError. Changes `req`
    in place (check_request passes its own copy): numpy scalars become plain int/float."""
    import numbers

    for name, (optional, integral) in _NUMERIC_FIELDS.items():
        value = getattr(req, name)
        if value is None and optional:
            continue
        kind = numbers.Integral if integral else numbers.Real
        if isinstance(value, bool) or not isinstance(value, kind):
            expected = "an integer" if integral else "a number (int or float)"
            example = "20" if integral else "7.5"
            raise InvalidInput(f"The {name} must be {expected}, not {type(value).__name__} ({value!r}).",
                               f"Pass a number, e.g. {name}={example} (not a string or bool)"
                               + (", or None for the default." if optional else "."))
        if not integral and value != value:  # NaN passes every range check as False
            raise InvalidInput(f"The {name} is NaN.", f"Pass a real number for {name}.")
        # numpy scalars and the like become plain int/float (JSON metadata, range checks)
        _fill(req, **{name: int(value) if integral else (value if isinstance(value, int) else float(value))})


def check_init_size(size: tuple[int, int], what: str = "input image") -> None:
    """The output of img2img/inpainting has the input's size, so it must be one a model can make:
    each side 16 to MAX_SIDE pixels and a multiple of 8 (else the pipeline would silently crop)."""
    w, h = size
    if min(w, h) < 16 or max(w, h) > MAX_SIDE:
        fit = min(1.0, MAX_SIDE / max(w, h))
        raise InvalidInput(f"The {what} is {w}x{h}; each side must be 16 to {MAX_SIDE} pixels.",
                           f"Resize it, e.g. to {_nearest_valid(w * fit)}x{_nearest_valid(h * fit)}."
                           if max(w, h) > MAX_SIDE else "Use a larger image.")
    if w % 8 or h % 8:
        raise InvalidInput(f"The {what} is {w}x{h}; both sides must be multiples of 8.",
                           f"Resize or crop it to {_nearest_valid(w)}x{_nearest_valid(h)}.")


def _nearest_valid(side: float) -> int:
    """The multiple of 8 nearest to `side`, within 16..MAX_SIDE."""
    return int(min(MAX_SIDE, max(16, round(side / 8) * 8)))


def parse_size(text: str) -> tuple[int, int]:
    """'512x768' -> (512, 768), or InvalidInput."""
    try:
        w, h = (int(x) for x in text.lower().replace("*", "x").split("x"))
    except ValueError:
        raise InvalidInput(f"The size '{text}' is not WIDTHxHEIGHT.", "Write it like 512x512.", param="size") from None
    return w, h
