"""LoRA adapters and ControlNet conditions: what a request asks for, parsed and checked once.

- `Lora(source, weight)`: a LoRA file (diffusers or kohya/A1111 `.safetensors`), a folder holding
  one, a name found in the LoRA folders (`$IMAGENT_HOME/loras/NAME.safetensors`), a shipped demo
  adapter (`demo-tall`, `demo-lcm`) or a hub id. Written `PATH_OR_ID[:WEIGHT]` on the command line and
  `<lora:NAME:WEIGHT>` inside a prompt, as AUTOMATIC1111 users write it.
- `Control(kind, image, scale, start, end, model)`: one ControlNet condition. `canny` takes any
  image and imagent computes its edge map (OpenCV); the other kinds take a ready condition image
  (`layout`: boxes filled in object colours, the demo ControlNet's condition; `scribble`,
  `depth`, `pose`, ...). Several conditions run together (MultiControlNet).

Loading lives in the backend (tools.diffusers_backend); nothing here imports torch.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from tools.errors import InvalidInput, ModelNotFound
from tools.limits import MAX_LORAS

LORA_WEIGHT_RANGE = (-4.0, 4.0)
CONTROL_SCALE_RANGE = (0.0, 4.0)
CONTROL_KINDS = ("canny", "layout", "scribble", "depth", "pose", "seg", "lineart", "softedge", "tile")
DEMO_LORAS = {"demo-tall": "lora-tall", "demo-lcm": "lora-lcm"}   # shipped name -> folder in tools/demo/weights
DEMO_CONTROLNETS = {"layout": "controlnet-layout"}  # kind -> folder in tools/demo/weights
_LORA_TAG = re.compile(r"<lora:([^:<>]+?)(?::([^:<>]*))?>", re.IGNORECASE)


@dataclass(frozen=True)
class Lora:
    source: str
    weight: float = 1.0

    @property
    def name(self) -> str:
        """The short name A1111 writes in `<lora:NAME:W>`: a file's stem, else the source."""
        p = Path(self.source)
        return p.stem if p.suffix in (".safetensors", ".bin", ".pt", ".ckpt") else p.name or self.source

    def to_json(self) -> dict:
        return {"source": self.source, "weight": self.weight}

    def tag(self) -> str:
        return f"<lora:{self.name}:{self.weight:g}>"


@dataclass(frozen=True, eq=False)
class Control:
    kind: str
    image: Image.Image
    scale: float = 1.0
    start: float = 0.0
    end: float = 1.0
    model: str | None = None      # a ControlNet folder or hub id; None: the backend's default for kind
    path: str | None = None       # the file the image came from (recorded, so rerun can load it)

    def to_json(self) -> dict:
        """The JSON-able part: the image as the path of its file."""
        out = {"kind": self.kind, "scale": self.scale, "start": self.start, "end": self.end}
        if self.path:
            out["image"] = self.path
        if self.model:
            out["model"] = self.model
        return out

    @classmethod
    def load(cls, kind: str, path, scale: float = 1.0, start: float = 0.0, end: float = 1.0,
             model: str | None = None) -> "Control":
        """A condition from an image file (opened safely: size limits, unreadable files)."""
        from tools.images import load_image

        check_kind(kind)
        image = load_image(path, what=f"{kind} control image")
        return cls(kind, image, scale, start, end, model, str(Path(path).resolve()))

    @classmethod
    def from_json(cls, entry: dict) -> "Control":
        """The condition a record describes, its image loaded again from the recorded file."""
        if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
            raise InvalidInput("A recorded control condition has no image file.",
                               "The record is damaged; regenerate with a control condition (KIND:IMAGE).")
        return cls.load(str(entry.get("kind")), entry["image"], entry.get("scale", 1.0), entry.get("start", 0.0),
                        entry.get("end", 1.0), entry.get("model"))


@dataclass(frozen=True, eq=False)
class IPAdapter:
    """An image style reference through an IP-Adapter (`pipe.load_ip_adapter`)."""

    image: Image.Image
    scale: float = 1.0
    model: str | None = None     # weights: a file, a folder, or 'ORG/NAME:SUBFOLDER/FILE' on the hub
    path: str | None = None      # the reference image's file (recorded, so rerun can load it)

    def to_json(self) -> dict:
        out = {"scale": self.scale}
        if self.path:
            out["image"] = self.path
        if self.model:
            out["model"] = self.model
        return out

    @classmethod
    def load(cls, path, scale: float = 1.0, model: str | None = None) -> "IPAdapter":
        from tools.images import load_image

        return cls(load_image(path, what="IP-Adapter reference image"), scale, model, str(Path(path).resolve()))

    @classmethod
    def from_json(cls, entry: dict) -> "IPAdapter":
        if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
            raise InvalidInput("The recorded IP-Adapter reference has no image file.",
                               "The record is damaged; regenerate with an IP-Adapter image.")
        return cls.load(entry["image"], entry.get("scale", 1.0), entry.get("model"))


def parse_ip_adapter(spec: str, model: str | None = None) -> IPAdapter:
    """'IMAGE[:SCALE]' (and the --ip-adapter-model) -> IPAdapter with the image loaded."""
    spec = (spec or "").strip()
    if not spec:
        raise InvalidInput("An empty IP-Adapter reference was given.", "Write IMAGE[:SCALE], e.g. style.png:0.6.",
                           param="ip_adapter")
    head, tail = split_number(spec)
    return IPAdapter.load(head, 1.0 if tail is None else _number(tail, "IP-Adapter scale", spec), model)


def check_ip_adapter(ip: IPAdapter) -> IPAdapter:
    if not isinstance(ip, IPAdapter):
        raise InvalidInput(f"An IP-Adapter reference must be an IPAdapter, not {type(ip).__name__}.",
                           "Build it with tools.adapters.IPAdapter(image, scale, model).")
    if isinstance(ip.scale, bool) or not isinstance(ip.scale, (int, float)) or not 0.0 <= ip.scale <= 2.0:
        raise InvalidInput(f"The IP-Adapter scale {ip.scale!r} is out of range.",
                           "Use 0 to 2 (0.5-1 is typical; 0 turns the reference off).")
    if not isinstance(ip.image, Image.Image):
        raise InvalidInput("The IP-Adapter reference has no image.", "Give the reference image.", param="ip_adapter")
    return IPAdapter(ip.image.convert("RGB"), float(ip.scale), ip.model, ip.path)


def resolve_ip_adapter(model: str) -> tuple[str, str, str]:
    """IP-Adapter weights -> (folder or hub id, subfolder, weight file name) for load_ip_adapter.

    A file (its folder holds image_encoder/), a folder (its ip-adapter*.safetensors or .bin), or
    'ORG/NAME:SUBFOLDER/FILE' on the hub (e.g. h94/IP-Adapter:models/ip-adapter_sd15.safetensors)."""
    path = Path(model).expanduser()
    if path.is_file():
        return str(path.parent), "", path.name
    if path.is_dir():
        files = sorted(f.name for f in path.iterdir() if f.suffix in (".safetensors", ".bin")
                       and f.name.startswith("ip-adapter"))
        if not files:
            raise ModelNotFound(f"The IP-Adapter folder '{path}' holds no ip-adapter*.safetensors or .bin file.",
                                "Point the IP-Adapter model at the weights file itself.", param="ip_adapter_model")
        return str(path), "", files[0]
    repo, sep, rest = model.partition(":")
    if sep and re.fullmatch(r"[\w.-]+/[\w.-]+", repo) and rest:
        sub, _, name = rest.rpartition("/")
        return repo, sub, name
    raise ModelNotFound(f"No IP-Adapter weights at '{model}'.",
                        "Pass a weights file or folder (with image_encoder/ beside it), or "
                        "ORG/NAME:SUBFOLDER/FILE, e.g. h94/IP-Adapter:models/ip-adapter_sd15.safetensors.")


def split_number(spec: str) -> tuple[str, str | None]:
    """'THING:NUMBER' -> ('THING', 'NUMBER'); 'THING' -> ('THING', None). Only a number after the
    last colon is split off, so Windows paths (C:\\x.png) and hub ids stay whole."""
    head, sep, tail = spec.rpartition(":")
    if sep and head and re.fullmatch(r"\s*[-+]?[\d.]+(e[-+]?\d+)?\s*", tail, re.IGNORECASE):
        return head.strip(), tail
    return spec.strip(), None


def _number(text: str, what: str, spec: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InvalidInput(f"The {what} in '{spec}' is not a number.",
                           "Write it like 0.8 (e.g. style.safetensors:0.8).", param="lora") from None
    if not math.isfinite(value):
        raise InvalidInput(f"The {what} in '{spec}' is not a finite number.", "Use e.g. 0.8.")
    return value


def parse_lora(spec: str) -> Lora:
    """'PATH_OR_ID[:WEIGHT]' -> Lora. The weight is the part after the last colon when it is a
    number, so Windows paths (C:\\x.safetensors) and hub ids stay whole."""
    spec = (spec or "").strip()
    if not spec:
        raise InvalidInput("An empty LoRA was given.", "Write PATH_OR_NAME[:WEIGHT], e.g. demo-tall:0.8.", param="lora")
    head, tail = split_number(spec)
    return check_lora(Lora(head, 1.0 if tail is None else _number(tail, "LoRA weight", spec)))


def check_lora(lora: Lora) -> Lora:
    lo, hi = LORA_WEIGHT_RANGE
    if not isinstance(lora.source, str) or not lora.source.strip():
        raise InvalidInput("A LoRA without a source was given.", "Name a LoRA file, folder, shipped name or hub id.")
    if isinstance(lora.weight, bool) or not isinstance(lora.weight, (int, float)) or not math.isfinite(lora.weight):
        raise InvalidInput(f"The weight of LoRA '{lora.source}' must be a number, not {lora.weight!r}.", "Use e.g. 0.8.")
    if not lo <= lora.weight <= hi:
        raise InvalidInput(f"The weight {lora.weight:g} of LoRA '{lora.name}' is out of range.",
                           f"Use {lo:g} to {hi:g} (1 is the adapter as trained, 0 turns it off).")
    return Lora(lora.source.strip(), float(lora.weight))


def split_prompt_loras(prompt: str) -> tuple[str, list[Lora]]:
    """A1111's prompt syntax: '<lora:NAME:0.8>' tags are taken out of the prompt and returned as
    LoRAs (weight 1 when left out); the prompt keeps everything else, spaces tidied."""
    found: list[Lora] = []

    def take(match: re.Match) -> str:
        name, weight = match.group(1).strip(), match.group(2)
        spec = f"<lora:{match.group(1)}:{weight}>" if weight is not None else match.group(0)
        found.append(check_lora(Lora(name, _number(weight, "LoRA weight", spec) if weight not in (None, "") else 1.0)))
        return " "

    text = _LORA_TAG.sub(take, prompt)
    if not found:
        return prompt, []
    text = re.sub(r"\s*,\s*(,\s*)+", ", ", re.sub(r"[ \t]{2,}", " ", text)).strip(" ,")
    return text, found


def merge_loras(loras) -> tuple[Lora, ...]:
    """One entry per source (the last weight wins, as repeating a tag does in A1111), at most MAX_LORAS."""
    out: dict[str, Lora] = {}
    for lora in loras:
        out[lora.source] = lora
    if len(out) > MAX_LORAS:
        raise InvalidInput(f"{len(out)} LoRAs were given; the limit is {MAX_LORAS}.", "Use fewer adapters.")
    return tuple(out.values())


def resolve_lora(source: str, search_dirs=()) -> tuple[str, str | None]:
    """Where a LoRA's weights are: (folder or hub id, weight file name or None).

    Order: a shipped demo name, an existing file or folder, NAME / NAME.safetensors in the LoRA
    folders, then a hub id ('org/name'). Raises ModelNotFound saying where it looked."""
    if source in DEMO_LORAS:
        from tools.demo import weights_path

        folder = weights_path() / DEMO_LORAS[source]
        if not folder.is_dir():
            raise ModelNotFound(f"The shipped LoRA '{source}' is not installed (no {folder.name}/ in the demo weights).",
                                "Reinstall imagent, or rebuild it: python -m training.demo_lora, then --export.")
        return _in_folder(folder, source)
    path = Path(source).expanduser()
    if path.is_file():
        return str(path.parent), path.name
    if path.is_dir():
        return _in_folder(path, source)
    for d in search_dirs:
        d = Path(d)
        for cand in (d / f"{source}.safetensors", d / source):
            if cand.is_file():
                return str(cand.parent), cand.name
            if cand.is_dir():
                return _in_folder(cand, source)
    if re.fullmatch(r"[\w.-]+/[\w.-]+", source) and not path.suffix:
        return source, None
    where = ", ".join(str(d) for d in search_dirs) or "no LoRA folder"
    raise ModelNotFound(f"No LoRA '{source}': not a file or folder, and not in {where}.",
                        "Pass the path of a .safetensors file, put it in the LoRA folder as NAME.safetensors, "
                        f"or use a shipped one ({' or '.join(DEMO_LORAS)}).")


def _in_folder(folder: Path, source: str) -> tuple[str, str | None]:
    files = sorted(f.name for f in folder.iterdir() if f.suffix in (".safetensors", ".bin"))
    if not files:
        raise ModelNotFound(f"The LoRA folder '{folder}' for '{source}' holds no .safetensors file.",
                            "Point the LoRA at the adapter file itself.", param="lora")
    preferred = [f for f in files if f.startswith("pytorch_lora_weights")]
    return str(folder), (preferred or files)[0]


# ----------------------------------------------------------------------------- ControlNet

def controls_from_specs(specs, models=(), start: float = 0.0, end: float = 1.0) -> tuple[Control, ...]:
    """Controls from command-line style text: specs 'KIND:IMAGE[:SCALE]', models 'KIND=PATH_OR_ID'
    (the ControlNet per kind), one start/end for all."""
    by_kind = {}
    for m in models or ():
        kind, sep, source = str(m).partition("=")
        if not sep or not source.strip():
            raise InvalidInput(f"The control model '{m}' is not KIND=PATH_OR_ID.",
                               "Write e.g. canny=lllyasviel/sd-controlnet-canny.", param="control_model")
        by_kind[check_kind(kind.strip().lower())] = source.strip()
    out = []
    for spec in specs or ():
        kind, path, scale = parse_control(spec)
        out.append(Control.load(kind, path, scale, start, end, by_kind.get(kind)))
    unused = set(by_kind) - {c.kind for c in out}
    if unused:
        raise InvalidInput(f"A control model names {', '.join(sorted(unused))} but no control condition of that kind "
                           "is given.", "Add a control condition KIND:IMAGE, or drop the control model.",
                           param="control_model")
    return tuple(out)


def parse_control(spec: str) -> tuple[str, str, float]:
    """'KIND:IMAGE[:SCALE]' -> (kind, image path, scale); the image is loaded at the edge."""
    kind, sep, rest = (spec or "").partition(":")
    kind = kind.strip().lower()
    if not sep or not rest.strip():
        raise InvalidInput(f"The control condition '{spec}' is not KIND:IMAGE[:SCALE].",
                           f"Write e.g. canny:photo.png:0.8 (kinds: {', '.join(CONTROL_KINDS)}).", param="control")
    check_kind(kind)
    path, tail = split_number(rest)
    return kind, path, 1.0 if tail is None else _number(tail, "control scale", spec)


def check_kind(kind: str) -> str:
    if kind not in CONTROL_KINDS:
        raise InvalidInput(f"Unknown control kind '{kind}'.", f"Use one of: {', '.join(CONTROL_KINDS)}.")
    return kind


def check_control(control: Control, size: tuple[int, int] | None) -> Control:
    """Range checks, and the condition image's aspect against the output size (`size`, when
    known): the pipeline resizes the condition to the output, so only a different shape is refused."""
    check_kind(control.kind)
    lo, hi = CONTROL_SCALE_RANGE
    for what, value in (("scale", control.scale), ("start", control.start), ("end", control.end)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InvalidInput(f"The control {what} must be a number, not {value!r}.", "Use e.g. 0.8.")
    if not lo <= control.scale <= hi:
        raise InvalidInput(f"The control scale {control.scale:g} is out of range.",
                           f"Use {lo:g} to {hi:g} (1 is typical; 0 turns the condition off).")
    if not 0.0 <= control.start < control.end <= 1.0:
        raise InvalidInput(f"The control steps {control.start:g}..{control.end:g} are not a range within 0..1.",
                           "Use e.g. start 0 and end 0.8 (shares of the denoising steps).", param="control_end")
    if not isinstance(control.image, Image.Image):
        raise InvalidInput("A control condition has no image.", "Pass KIND:IMAGE, e.g. canny:photo.png.")
    if size is not None:
        w, h = control.image.size
        if abs(w / h - size[0] / size[1]) > 0.02 * size[0] / size[1]:
            raise InvalidInput(f"The {control.kind} control image is {w}x{h}, but the output is "
                               f"{size[0]}x{size[1]}: the shapes differ.",
                               f"Crop it to the output's aspect, or ask for the size {w - w % 8}x{h - h % 8}.", param="size")
    return Control(control.kind, control.image.convert("RGB"), float(control.scale), float(control.start),
                   float(control.end), control.model, control.path)


def control_palette(source: str) -> dict[str, tuple[int, int, int]]:
    """A layout ControlNet's colours by name (`palette` in the imagent_controlnet.json beside its
    weights, as the demo one ships); empty when it has none (CSS colour names are used then)."""
    info = Path(source) / "imagent_controlnet.json"
    try:
        palette = json.loads(info.read_text()).get("palette", {}) if info.is_file() else {}
    except (OSError, ValueError, AttributeError):
        return {}
    return {str(k).lower(): tuple(int(c) for c in v)[:3] for k, v in palette.items()
            if isinstance(v, (list, tuple)) and len(v) >= 3} if isinstance(palette, dict) else {}


def condition_image(control: Control, size: tuple[int, int]) -> Image.Image:
    """The image the ControlNet sees, at the output size: canny edges computed from the given
    image (OpenCV, thresholds 100/200 as the diffusers examples use), other kinds as given."""
    img = control.image.convert("RGB")
    if control.kind == "canny":
        import cv2
        import numpy as np

        edges = cv2.Canny(np.asarray(img), 100, 200)
        img = Image.fromarray(np.stack([edges] * 3, axis=-1))
    return img.resize(size, Image.NEAREST if control.kind == "layout" else Image.BILINEAR) \
        if img.size != size else img
