"""Image metadata: an AUTOMATIC1111-compatible `parameters` text plus a full JSON record.

PNG stores them as text chunks `parameters` and `imagent`; JPEG and WebP, as A1111 does, in EXIF:
`parameters` in UserComment (0x9286, b"UNICODE\0" + UTF-16) and the `imagent` JSON in
ImageDescription (0x010E); see tools.images (atomic_save, image_text).
Other tools (A1111, ComfyUI's readers, civitai) read `parameters`; imagent reads `imagent`
(JSON) first and falls back to parsing `parameters` for images made elsewhere.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from tools.errors import InvalidInput
from tools.images import RECORD_KEY, image_text
from tools.schedulers import from_sampler_label, sampler_label

JSON_KEY = RECORD_KEY


def a1111_parameters(record: dict) -> str:
    """Render a record as A1111's `parameters` text: prompt, negative line, then key: value pairs."""
    p = record["params"]
    tags = [f"<lora:{_lora_name(x)}:{_num(x.get('weight', 1.0))}>" for x in p.get("loras") or []
            if isinstance(x, dict)]
    lines = [" ".join([p["prompt"], *tags])]
    if p.get("negative_prompt"):
        lines.append(f"Negative prompt: {p['negative_prompt']}")
    pairs = [
        ("Steps", p["steps"]),
        ("Sampler", sampler_label(record.get("scheduler") or p.get("scheduler") or "")),
        ("CFG scale", _num(p["cfg"])),
        ("Seed", record["seed"]),
        ("Size", f"{record['width']}x{record['height']}"),
        ("Model", record.get("model_name") or Path(str(record["model"])).name),
    ]
    if p.get("mode") in {"img2img", "inpaint"}:
        pairs.append(("Denoising strength", _num(p["strength"])))
    for i, c in enumerate(x for x in p.get("controls") or [] if isinstance(x, dict)):
        model = Path(str(c.get("model") or "default")).name
        pairs.append((f"ControlNet {i}", f'"Module: {c.get("kind")}, Model: {model}, Weight: {_num(c.get("scale", 1))}, '
                                         f'Guidance Start: {_num(c.get("start", 0))}, Guidance End: {_num(c.get("end", 1))}"'))
    pairs.append(("Version", f"imagent {record.get('version', '')}".strip()))
    lines.append(", ".join(f"{k}: {v}" for k, v in pairs if v not in (None, "")))
    return "\n".join(lines)


def _lora_name(entry: dict) -> str:
    from tools.adapters import Lora

    return Lora(str(entry.get("source", "lora"))).name


def _num(x: float) -> str:
    return f"{x:g}"


def png_chunks(record: dict) -> dict[str, str]:
    """The metadata texts of a record: `parameters` (A1111) and `imagent` (JSON, ASCII); stored as
    PNG chunks, or in EXIF for JPEG and WebP."""
    return {"parameters": a1111_parameters(record), JSON_KEY: json.dumps(record, sort_keys=True)}


_PAIR = re.compile(r'\s*([\w ]+):\s*("(?:\\.|[^"])*"|[^,]*)(?:,|$)')


def parse_a1111(text: str) -> dict:
    """Parse A1111 `parameters` text into {prompt, negative_prompt, steps, cfg, seed, ...}."""
    lines = text.strip().split("\n")
    settings = lines.pop() if lines and re.match(r"^\s*Steps:", lines[-1]) else ""
    prompt, negative, in_negative = [], [], False
    for line in lines:
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:"):].strip()
        (negative if in_negative else prompt).append(line)
    out: dict = {"prompt": "\n".join(prompt).strip(), "negative_prompt": "\n".join(negative).strip()}
    pairs = {k.strip(): v.strip().strip('"') for k, v in _PAIR.findall(settings)}
    conv = {"Steps": ("steps", int), "CFG scale": ("cfg", float), "Seed": ("seed", int),
            "Denoising strength": ("strength", float), "Model": ("model", str)}
    for key, (name, fn) in conv.items():
        if key in pairs:
            try:
                out[name] = fn(pairs[key])
            except ValueError:
                pass
    size = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*", pairs.get("Size", ""))
    if size:  # anything else (damaged, or another tool's notation) is left out, like other bad values
        out["width"], out["height"] = int(size.group(1)), int(size.group(2))
    if "Sampler" in pairs:
        out["scheduler"] = from_sampler_label(pairs["Sampler"])
    return out


def read_metadata(path: str | Path) -> dict:
    """{'record': full imagent record or None, 'parameters': A1111 text or None, 'parsed': dict}.

    The imagent record is validated here (check_record), so readers can rely on its shape."""
    text = image_text(path)
    record = None
    if JSON_KEY in text:
        try:
            record = json.loads(text[JSON_KEY])
        except json.JSONDecodeError as exc:
            raise _damaged(path, f"its JSON does not parse ({exc.msg} at character {exc.pos})") from None
        check_record(record, path)
    params = text.get("parameters")
    if record is None and params is None:
        raise InvalidInput(f"'{path}' carries no generation metadata.",
                           "Only images (PNG, JPEG, WebP) written by imagent or AUTOMATIC1111-compatible tools "
                           "can be shown or rerun.")
    return {"record": record, "parameters": params, "parsed": parse_a1111(params) if params else None}


# What readers of a record (show, rerun, upscale) rely on: name -> allowed JSON types.
_NUMBER = (int, float)
RECORD_FIELDS: dict[str, tuple] = {
    "model": (str,), "backend": (str,), "width": (int,), "height": (int,), "seed": (int,),
    "scheduler": (str, type(None)), "params": (dict,), "inputs": (dict,), "safety": (dict,),
    "recipe": (dict,), "upscale": (dict,), "spec": (dict,), "source": (dict,), "post": (dict,),
}
PARAMS_FIELDS: dict[str, tuple] = {
    "prompt": (str,), "negative_prompt": (str,), "steps": (int,), "cfg": _NUMBER, "strength": _NUMBER,
    "scheduler": (str, type(None)), "mode": (str,), "width": (int,), "height": (int,), "seed": (int, type(None)),
    "loras": (list,), "controls": (list,), "attention": (str,), "vae_tiling": (bool,), "vae_slicing": (bool,),
    "compile": (bool,), "lora_fuse": (bool,), "refiner": (str,), "refiner_switch": _NUMBER,
    "ip_adapter": (dict,),
}
GENERATED_REQUIRED = ("model", "width", "height", "seed")  # every record with params has these
_TYPE_NAMES = {str: "a string", int: "a whole number", float: "a number", dict: "an object",
               type(None): "null"}


def check_record(record, path) -> dict:
    """The imagent record read from `path`, or InvalidInput saying it is damaged and what is wrong.

    A record is a JSON object; one with `params` (a generated image) has a model, size, seed and a
    prompt, the inputs of an img2img/inpainting and the recipe of a composed image."""
    if not isinstance(record, dict):
        raise _damaged(path, f"it is a JSON {_kind(record)}, not an object")
    _check_types(record, RECORD_FIELDS, path, "")
    if "params" not in record:
        return record
    params = record["params"]
    _check_types(params, PARAMS_FIELDS, path, "params.")
    missing = [k for k in GENERATED_REQUIRED if k not in record] + (["params.prompt"] if "prompt" not in params else [])
    mode = params.get("mode", "txt2img")
    if mode in {"img2img", "inpaint"}:
        if "strength" not in params:
            missing.append("params.strength")
        if not isinstance((record.get("inputs") or {}).get("init_image"), str):
            missing.append("inputs.init_image")
    if mode == "compose" and "recipe" not in record:
        missing.append("recipe")
    if missing:
        raise _damaged(path, f"it lacks {', '.join(missing)}")
    return record


def _check_types(obj: dict, table: dict[str, tuple], path, prefix: str) -> None:
    for key, types in table.items():
        if key not in obj:
            continue
        value = obj[key]
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if not ok:
            expected = "a number" if types == _NUMBER else " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)
            shown = json.dumps(value, default=str, ensure_ascii=True)
            raise _damaged(path, f"{prefix}{key} is the {_kind(value)} {shown[:40]}{'...' if len(shown) > 40 else ''}, "
                                 f"not {expected}")


def _kind(value) -> str:
    return {list: "list", dict: "object", str: "string", bool: "boolean", int: "number", float: "number"}.get(
        type(value), "null")


def _damaged(path, problem: str) -> InvalidInput:
    return InvalidInput(f"The imagent record in '{path}' is damaged: {problem}.",
                        "Its metadata was edited or corrupted, so it cannot be shown or rerun as recorded; "
                        "regenerate the image from its prompt.")
