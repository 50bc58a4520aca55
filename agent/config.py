"""Settings, resolved once at an entry point from defaults, `$IMAGENT_HOME/config.json` and the
environment (in that order), then command-line overrides. Nothing here reads files at import.

Environment variables:
  IMAGENT_HOME        where the gallery, outputs and overrides live (default: ~/.imagent)
  IMAGENT_MODEL       default text-to-image model: a diffusers folder or a hub id (default: the demo model)
  IMAGENT_BACKEND     diffusers | openai, or a fallback chain tried in order: openai,diffusers
                      (default: diffusers)
  IMAGENT_DEVICE      auto | cpu | cuda | mps;  IMAGENT_DTYPE auto | fp32 | fp16 | bf16
  IMAGENT_CLIP        CLIP model for scoring (default: the demo CLIP)
  IMAGENT_DETECTOR    OWL-ViT / OWLv2 detector for the loop's requirement checks (default: the demo
                      detector with the demo model; none otherwise, and the loop judges by CLIP alone)
  IMAGENT_SAFETY      off | standard | strict (default: standard)
  IMAGENT_LLM_MODEL, IMAGENT_LLM_BASE_URL, IMAGENT_LLM_API_KEY (or OPENAI_API_KEY),
  IMAGENT_LLM_TIMEOUT (seconds, more than 0; default 60), IMAGENT_LLM_MAX_RETRIES (0 to 10, default 2),
  IMAGENT_LLM_FALLBACK template | error (default template),
  IMAGENT_LLM_METHOD auto | json_schema | json_object_schema | function_calling | json_mode | plain
                      (structured output; default auto: the best one `imagent llm check` finds, cached)
  IMAGENT_LLM_MAX_TOKENS  the most tokens one answer may take (16 to 32768, default 512)
  IMAGENT_LLM_TEMPERATURE 0 to 2 (default: 0.3 on a local server, whose own default of 0.8 makes small
                      models drift from the idea; the API's own default on OpenAI)
  OPENAI_API_KEY, OPENAI_BASE_URL, IMAGENT_OPENAI_IMAGE_MODEL  for the OpenAI images backend
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from agent.errors import ConfigError
from tools.demo import DEMO  # the model id meaning the demo world's shipped models

BACKENDS = ("diffusers", "openai")
LLM_EXAMPLES = ("auto", "compact", "default")  # agent.expand.EXAMPLE_FORMS
LLM_METHODS = ("auto", "json_schema", "json_object_schema", "function_calling", "json_mode", "plain")


@dataclass(frozen=True)
class Settings:
    home: Path
    model: str = DEMO
    backend: str = "diffusers"
    device: str = "auto"
    dtype: str = "auto"
    steps: int | None = None          # None: the model's own default (demo card) or 20
    cfg: float | None = None
    scheduler: str | None = None
    clip_model: str = DEMO
    detector: str | None = None       # None: the demo detector with the demo model, else no verifier
    safety: str = "standard"
    layout_repair: str = "auto"       # the loop's layout repair: auto | control (layout ControlNet) | latent
    style: str | None = None
    llm_model: str | None = None
    llm_base_url: str | None = None
    llm_api_key: str | None = field(default=None, repr=False)
    llm_timeout: float = 60.0
    llm_max_retries: int = 2          # retries with backoff on rate limits, 5xx and dropped connections
    llm_fallback: str = "template"    # when the LLM fails: "template" (warn, expand offline) or "error"
    llm_method: str = "auto"          # structured output: auto | json_schema | json_object_schema |
                                      # function_calling | json_mode | plain (agent.llm.METHODS)
    llm_example: str = "auto"         # expansion's worked example: auto (probed on local servers) | compact | default
    llm_max_tokens: int = 512         # max_tokens on every LLM call (a runaway answer fills a small context)
    llm_temperature: float | None = None  # None: 0.3 with a base URL (local servers), the API's default on OpenAI
    openai_api_key: str | None = field(default=None, repr=False)
    openai_base_url: str | None = None
    openai_image_model: str = "gpt-image-1"
    openai_timeout: float = 120.0

    @property
    def backends(self) -> tuple[str, ...]:
        """The backend chain in order (one name for a single backend): 'openai,diffusers' ->
        ('openai', 'diffusers'). The first makes the image unless it fails retryably."""
        return tuple(self.backend.split(","))

    @property
    def gallery_path(self) -> Path:
        return self.home / "gallery.db"

    @property
    def outputs_dir(self) -> Path:
        return self.home / "outputs"

    @property
    def loras_dir(self) -> Path:
        """Where `--lora NAME` finds NAME.safetensors (or a folder NAME/)."""
        return self.home / "loras"

    def with_overrides(self, **overrides) -> "Settings":
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


_ENV = {
    "model": "IMAGENT_MODEL", "backend": "IMAGENT_BACKEND", "device": "IMAGENT_DEVICE",
    "dtype": "IMAGENT_DTYPE", "clip_model": "IMAGENT_CLIP", "detector": "IMAGENT_DETECTOR", "safety": "IMAGENT_SAFETY",
    "layout_repair": "IMAGENT_LAYOUT_REPAIR",
    "style": "IMAGENT_STYLE", "llm_model": "IMAGENT_LLM_MODEL", "llm_base_url": "IMAGENT_LLM_BASE_URL",
    "llm_api_key": "IMAGENT_LLM_API_KEY", "llm_timeout": "IMAGENT_LLM_TIMEOUT",
    "llm_max_retries": "IMAGENT_LLM_MAX_RETRIES", "llm_fallback": "IMAGENT_LLM_FALLBACK",
    "llm_method": "IMAGENT_LLM_METHOD", "llm_example": "IMAGENT_LLM_EXAMPLE",
    "llm_max_tokens": "IMAGENT_LLM_MAX_TOKENS", "llm_temperature": "IMAGENT_LLM_TEMPERATURE",
    "openai_api_key": "OPENAI_API_KEY", "openai_base_url": "OPENAI_BASE_URL",
    "openai_image_model": "IMAGENT_OPENAI_IMAGE_MODEL",
}


def default_home() -> Path:
    env = os.environ.get("IMAGENT_HOME")
    return Path(env).expanduser() if env else Path.home() / ".imagent"


@dataclass(frozen=True)
class Range:
    """The values a numeric setting allows: from `low` to `high` (None: no bound); with `above`, more
    than `low` (a timeout of 0 would fail every call)."""

    low: float | None = None
    high: float | None = None
    above: bool = False

    def __contains__(self, value) -> bool:
        if self.low is not None and (value <= self.low if self.above else value < self.low):
            return False
        return self.high is None or value <= self.high

    def __str__(self) -> str:
        if self.above:
            return f"more than {self.low:g}" + (f" and at most {self.high:g}" if self.high is not None else "")
        if self.high is None:
            return f"at least {self.low:g}"
        return f"from {self.low:g} to {self.high:g}"


# The ranges of the numeric settings (steps and cfg as tools.generate.check_request allows them).
_RANGES = {
    "steps": Range(1, 500), "cfg": Range(0, 50), "llm_timeout": Range(0, above=True),
    "llm_max_retries": Range(0, 10), "llm_max_tokens": Range(16, 32768), "llm_temperature": Range(0, 2), "openai_timeout": Range(0, above=True),
}


# The typed table every setting is parsed through (config.json and the environment alike):
# name -> (type, whether null/None is allowed, allowed range or None), the types read once from the
# Settings annotations.
def _setting_types() -> dict[str, tuple[type, bool, Range | None]]:
    import typing

    table = {}
    for name, hint in typing.get_type_hints(Settings).items():
        if name == "home":
            continue
        args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
        table[name] = (args[0], type(None) in typing.get_args(hint), _RANGES.get(name))
    assert set(_RANGES) <= set(table), "a range for a setting that does not exist"
    return table


SETTING_TYPES: dict[str, tuple[type, bool, Range | None]] = _setting_types()
_EXPECTED = {str: "a string", int: "a whole number", float: "a number"}


def parse_setting(name: str, value, *, file: Path | None = None, var: str | None = None):
    """`value` (from config.json `file`, or a string from environment variable `var`) as the type
    of setting `name` within its range, or ConfigError naming the file or variable, the setting and
    the type or range expected."""
    kind, nullable, allowed = SETTING_TYPES[name]
    if value is None and nullable and file is not None:
        return None
    given = value
    if isinstance(value, str) and kind is not str:
        try:
            value = int(value.strip()) if kind is int else float(value.strip())
        except ValueError:
            pass
    ok = (isinstance(value, str) if kind is str else
          isinstance(value, int) and not isinstance(value, bool) if kind is int else
          isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value))
    if not ok:
        expected = _EXPECTED.get(kind, kind.__name__)
        _bad_setting(name, given, f"{expected}{' or null' if nullable and file is not None else ''}", file, var)
    if allowed is not None and value not in allowed:
        _bad_setting(name, given, str(allowed), file, var)
    return float(value) if kind is float else value


def _bad_setting(name: str, given, expected: str, file: Path | None, var: str | None):
    shown = (f"a {_json_kind(given)}" if "api_key" in name and given is not None
             else json.dumps(given, ensure_ascii=False, default=str))
    if var is not None:
        raise ConfigError(f"The environment variable {var} (setting '{name}') must be {expected}, not {shown}.",
                          f"Fix or unset {var}.")
    raise ConfigError(f"In {file}, setting '{name}' must be {expected}, not {shown}.",
                      f"Fix the value in {file}, or remove the line to use the default.")


def _read_config(cfg_file: Path) -> dict:
    try:
        text = cfg_file.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{cfg_file} is not UTF-8 text (byte {exc.start}).",
                          "Save it as UTF-8 JSON, or delete it.") from None
    except OSError as exc:
        raise ConfigError(f"{cfg_file} cannot be read ({exc.strerror or exc}).", "Fix its permissions or delete it.") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{cfg_file} is not valid JSON ({exc}).", "Fix or delete the file.") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{cfg_file} holds a JSON {_json_kind(data)}, not an object of settings.",
                          'Write it like {"model": "PATH_OR_HUB_ID", "steps": 20}.')
    return data


def _json_kind(value) -> str:
    return {list: "list", dict: "object", str: "string", bool: "boolean", int: "number",
            float: "number"}.get(type(value), "null")


def check_backends(text: str) -> str:
    """A backend or a fallback chain of them ('openai, diffusers'), normalized ('openai,diffusers'),
    or ConfigError naming the unknown or repeated name."""
    names = [x.strip() for x in str(text).split(",")]
    hint = f"Use {' or '.join(BACKENDS)}, or a chain of them tried in order, e.g. openai,diffusers."
    for name in names:
        if name not in BACKENDS:
            shown = f"'{name}'" if name else "an empty name"
            raise ConfigError(f"Unknown backend {shown}" + (f" in '{text}'." if len(names) > 1 else "."), hint)
        if names.count(name) > 1:
            raise ConfigError(f"The backend chain '{text}' names {name} twice.", hint)
    return ",".join(names)


def load_settings(env: dict[str, str] | None = None, **overrides) -> Settings:
    env = dict(os.environ if env is None else env)
    home = Path(env["IMAGENT_HOME"]).expanduser() if env.get("IMAGENT_HOME") else default_home()
    values: dict = {}
    cfg_file = home / "config.json"
    if cfg_file.is_file():
        data = _read_config(cfg_file)
        unknown = set(data) - set(SETTING_TYPES)
        if unknown:
            raise ConfigError(f"Unknown setting(s) in {cfg_file}: {', '.join(sorted(unknown))}.",
                              f"Known: {', '.join(sorted(SETTING_TYPES))}.")
        values.update({name: parse_setting(name, value, file=cfg_file) for name, value in data.items()})
    for name, var in _ENV.items():
        if env.get(var):
            values[name] = parse_setting(name, env[var], var=var)
    if not values.get("llm_api_key") and env.get("OPENAI_API_KEY") and values.get("llm_model"):
        values["llm_api_key"] = env["OPENAI_API_KEY"]
    settings = Settings(home=home, **values).with_overrides(**overrides)
    settings = replace(settings, backend=check_backends(settings.backend))
    if settings.safety not in {"off", "standard", "strict"}:
        raise ConfigError(f"Unknown safety level '{settings.safety}'.", "Use off, standard or strict.")
    if settings.layout_repair not in {"auto", "control", "latent"}:
        raise ConfigError(f"Unknown layout_repair '{settings.layout_repair}'.",
                          "Use auto (the layout ControlNet where the model has one), control or latent.")
    if settings.llm_fallback not in {"template", "error"}:
        raise ConfigError(f"Unknown llm_fallback '{settings.llm_fallback}'.", "Use template or error.")
    if settings.llm_method not in LLM_METHODS:
        raise ConfigError(f"Unknown llm_method '{settings.llm_method}'.",
                          f"Use {', '.join(LLM_METHODS[:-1])} or {LLM_METHODS[-1]} (`imagent llm check` "
                          "says which work on your server).")
    if settings.llm_example not in LLM_EXAMPLES:
        raise ConfigError(f"Unknown llm_example '{settings.llm_example}'.",
                          "Use auto (probed on a local server), compact or default.")
    return settings
