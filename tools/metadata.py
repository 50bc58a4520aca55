"""PNG metadata: an AUTOMATIC1111-compatible `parameters` chunk plus a full JSON record.

Other tools (A1111, ComfyUI's readers, civitai) read `parameters`; imagent reads `imagent`
(JSON) first and falls back to parsing `parameters` for images made elsewhere.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from tools.errors import InvalidInput
from tools.images import png_text
from tools.schedulers import from_sampler_label, sampler_label

JSON_KEY = "imagent"


def a1111_parameters(record: dict) -> str:
    """Render a record as A1111's `parameters` text: prompt, negative line, then key: value pairs."""
    p = record["params"]
    lines = [p["prompt"]]
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
    pairs.append(("Version", f"imagent {record.get('version', '')}".strip()))
    lines.append(", ".join(f"{k}: {v}" for k, v in pairs if v not in (None, "")))
    return "\n".join(lines)


def _num(x: float) -> str:
    return f"{x:g}"


def png_chunks(record: dict) -> dict[str, str]:
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
    if "Size" in pairs and "x" in pairs["Size"]:
        w, h = pairs["Size"].split("x", 1)
        out["width"], out["height"] = int(w), int(h)
    if "Sampler" in pairs:
        out["scheduler"] = from_sampler_label(pairs["Sampler"])
    return out


def read_metadata(path: str | Path) -> dict:
    """{'record': full imagent record or None, 'parameters': A1111 text or None, 'parsed': dict}."""
    text = png_text(path)
    record = None
    if JSON_KEY in text:
        try:
            record = json.loads(text[JSON_KEY])
        except json.JSONDecodeError:
            record = None
    params = text.get("parameters")
    if record is None and params is None:
        raise InvalidInput(f"'{path}' carries no generation metadata.",
                           "Only PNGs written by imagent or AUTOMATIC1111-compatible tools can be shown or rerun.")
    return {"record": record, "parameters": params, "parsed": parse_a1111(params) if params else None}
