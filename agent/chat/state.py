"""What a conversation is about and makes new images with (ChatState, Defaults): their JSON round trip, and
the checking of changed defaults.

`Defaults.updated(**values)` parses and checks a change (a slash command's text or a tool's typed value)
and returns the new defaults; the controller only applies them (undo checkpoint, save)."""
from __future__ import annotations

import copy
import re
from dataclasses import asdict, dataclass, field, fields

from agent.errors import InvalidInput
from tools.limits import LIMITS, check_range

SIZE_RE = re.compile(r"^(\d+)\s*[x*]\s*(\d+)$")


@dataclass
class Defaults:
    """What a new image is made with; changed by /style /size /steps /seed /rounds /raw."""

    style: str | None = None
    width: int | None = None        # None: the model's native size
    height: int | None = None
    steps: int | None = None        # None: the settings' steps, else 20
    seed: int | None = None         # None: a new seed each run
    rounds: int = 3
    candidates: int = 2
    raw: bool = False
    loras: list[str] = field(default_factory=list)   # 'PATH_OR_NAME:WEIGHT', as --lora
    controls: list[str] = field(default_factory=list)  # 'KIND:IMAGE:SCALE', as --control (the image's full path)
    control_models: list[str] = field(default_factory=list)  # 'KIND=PATH_OR_ID', as --control-model

    def size_text(self) -> str:
        return f"{self.width}x{self.height}" if self.width and self.height else "native"

    def request_fields(self, settings) -> dict:
        """The fields of a generation request with these defaults (agent.requests.sampling_fields):
        steps (unset: the model's default), size, seed, LoRAs, ControlNets."""
        from agent.requests import sampling_fields
        from tools.adapters import controls_from_specs

        return sampling_fields(settings, steps=self.steps or None, seed=self.seed,
                               size=(self.width, self.height) if self.width and self.height else None,
                               loras=self.loras, controls=controls_from_specs(self.controls, self.control_models)
                               if self.controls else ())

    def updated(self, *, home=None, **values) -> "Defaults":
        """A checked copy with `values` changed: style, size ('WxH'|'native'), steps, seed (int|None), rounds,
        candidates, raw, lora, control. Raises InvalidInput for a value that does not work; self is untouched."""
        d = copy.deepcopy(self)
        for key, value in values.items():
            if value is None and key not in {"seed", "style"}:
                continue
            if key == "style":
                if value in (None, "", "off", "none"):
                    d.style = None
                else:
                    from agent.expand import get_style

                    d.style = get_style(str(value), home=home).name  # home: the settings' (user presets)
            elif key == "size":
                text = str(value).strip().lower()
                if text in {"native", "default", "auto"}:
                    d.width = d.height = None
                else:
                    m = SIZE_RE.match(text)
                    if not m:
                        raise InvalidInput(f"Size '{value}' is not WIDTHxHEIGHT.", "Write it like /size 512x512.")
                    w, h = int(m.group(1)), int(m.group(2))
                    for side in (w, h):
                        if side < 16 or side % 8:
                            raise InvalidInput(f"Size {w}x{h}: sides must be multiples of 8, at least 16.",
                                               f"Try /size {max(16, w - w % 8)}x{max(16, h - h % 8)}.")
                    d.width, d.height = w, h
            elif key == "seed":
                d.seed = None if value in (None, "", "random", "none") else _int(value, "seed")
            elif key == "steps":
                d.steps = _int(value, "steps")
            elif key == "rounds":
                d.rounds = _int(value, "rounds")
            elif key == "candidates":
                d.candidates = _int(value, "candidates")
            elif key == "raw":
                d.raw = _bool(value)
            elif key == "lora":
                from tools.adapters import merge_loras, parse_lora

                items = value.split() if isinstance(value, str) else list(value)
                if [str(x).lower() for x in items] in (["off"], ["none"], []):
                    d.loras = []
                else:
                    d.loras = [f"{x.source}:{x.weight:g}" for x in merge_loras(parse_lora(str(x)) for x in items)]
            elif key == "control":
                from tools.adapters import controls_from_specs

                items = [str(x) for x in (value.split() if isinstance(value, str) else value)]
                if [x.lower() for x in items] in (["off"], ["none"], []):
                    d.controls, d.control_models = [], []
                else:
                    models = [x for x in items if "=" in x.split(":", 1)[0]]
                    loaded = controls_from_specs([x for x in items if x not in models], models)  # bad images fail here
                    d.controls = [f"{c.kind}:{c.path}:{c.scale:g}" for c in loaded]
                    d.control_models = [f"{c.kind}={c.model}" for c in loaded if c.model]
            else:
                raise InvalidInput(f"Unknown setting '{key}'.",
                                   "Settings: style, size, steps, seed, rounds, candidates, raw, lora, control.")
        return d


@dataclass
class ChatState:
    """What the conversation is about now. JSON round trip via to_dict/from_dict."""

    defaults: Defaults = field(default_factory=Defaults)
    idea: str | None = None          # the idea behind the current image
    spec: dict | None = None         # the current structured prompt (agent.schemas.PromptSpec as a dict)
    image_id: int | None = None      # the current image
    image_path: str | None = None
    seed: int | None = None
    run_id: str | None = None        # the last run (loop) and its round table
    rounds: list[dict] = field(default_factory=list)
    threshold: float | None = None
    checks: list[dict] = field(default_factory=list)  # the last run's verdict per requirement
    checklist: dict | None = None    # the user's corrected checklist for `idea` (/require, /drop); None: derived
    images: list[int] = field(default_factory=list)  # every image made in this chat, in order

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> "ChatState":
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        d_known = {f.name for f in fields(Defaults)}
        defaults = Defaults(**{k: v for k, v in (data.pop("defaults", None) or {}).items() if k in d_known})
        return cls(defaults=defaults, **{k: v for k, v in data.items() if k in known})


def _int(value, name: str) -> int:
    """A whole number within tools.limits' range for `name` (the same message as every front door)."""
    try:
        n = int(str(value).strip())
    except ValueError:
        raise InvalidInput(f"{name} '{value}' is not a whole number.", f"Use {LIMITS[name].text()}.",
                           param=name) from None
    return check_range(name, n)


def _bool(value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"on", "yes", "true", "1"}:
        return True
    if text in {"off", "no", "false", "0"}:
        return False
    raise InvalidInput(f"'{value}' is not on or off.", "Use /raw on or /raw off.")
