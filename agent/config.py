"""Settings, resolved once at an entry point from defaults, `$IMAGENT_HOME/config.json` and the
environment (in that order), then command-line overrides. Nothing here reads files at import.

Environment variables:
  IMAGENT_HOME        where the gallery, outputs and overrides live (default: ~/.imagent)
  IMAGENT_MODEL       default text-to-image model: a diffusers folder or a hub id (default: the demo model)
  IMAGENT_BACKEND     diffusers | openai (default: diffusers)
  IMAGENT_DEVICE      auto | cpu | cuda | mps;  IMAGENT_DTYPE auto | fp32 | fp16 | bf16
  IMAGENT_CLIP        CLIP model for scoring (default: the demo CLIP)
  IMAGENT_DETECTOR    OWL-ViT / OWLv2 detector for the loop's requirement checks (default: the demo
                      detector with the demo model; none otherwise, and the loop judges by CLIP alone)
  IMAGENT_SAFETY      off | standard | strict (default: standard)
  IMAGENT_LLM_MODEL, IMAGENT_LLM_BASE_URL, IMAGENT_LLM_API_KEY (or OPENAI_API_KEY), IMAGENT_LLM_TIMEOUT
  IMAGENT_LLM_MAX_RETRIES (default 2), IMAGENT_LLM_FALLBACK template | error (default template),
  IMAGENT_LLM_METHOD json_schema | function_calling | json_mode (structured output; default json_schema)
  OPENAI_API_KEY, OPENAI_BASE_URL, IMAGENT_OPENAI_IMAGE_MODEL  for the OpenAI images backend
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from agent.errors import ConfigError

DEMO = "demo"  # the model id meaning "the demo world model shipped inside the package"


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
    style: str | None = None
    llm_model: str | None = None
    llm_base_url: str | None = None
    llm_api_key: str | None = field(default=None, repr=False)
    llm_timeout: float = 60.0
    llm_max_retries: int = 2          # retries with backoff on rate limits, 5xx and dropped connections
    llm_fallback: str = "template"    # when the LLM fails: "template" (warn, expand offline) or "error"
    llm_method: str = "json_schema"   # structured output: json_schema | function_calling | json_mode
    openai_api_key: str | None = field(default=None, repr=False)
    openai_base_url: str | None = None
    openai_image_model: str = "gpt-image-1"
    openai_timeout: float = 120.0

    @property
    def gallery_path(self) -> Path:
        return self.home / "gallery.db"

    @property
    def outputs_dir(self) -> Path:
        return self.home / "outputs"

    def with_overrides(self, **overrides) -> "Settings":
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


_ENV = {
    "model": "IMAGENT_MODEL", "backend": "IMAGENT_BACKEND", "device": "IMAGENT_DEVICE",
    "dtype": "IMAGENT_DTYPE", "clip_model": "IMAGENT_CLIP", "detector": "IMAGENT_DETECTOR", "safety": "IMAGENT_SAFETY",
    "style": "IMAGENT_STYLE", "llm_model": "IMAGENT_LLM_MODEL", "llm_base_url": "IMAGENT_LLM_BASE_URL",
    "llm_api_key": "IMAGENT_LLM_API_KEY", "llm_timeout": "IMAGENT_LLM_TIMEOUT",
    "llm_max_retries": "IMAGENT_LLM_MAX_RETRIES", "llm_fallback": "IMAGENT_LLM_FALLBACK",
    "llm_method": "IMAGENT_LLM_METHOD",
    "openai_api_key": "OPENAI_API_KEY", "openai_base_url": "OPENAI_BASE_URL",
    "openai_image_model": "IMAGENT_OPENAI_IMAGE_MODEL",
}


def default_home() -> Path:
    env = os.environ.get("IMAGENT_HOME")
    return Path(env).expanduser() if env else Path.home() / ".imagent"


def load_settings(env: dict[str, str] | None = None, **overrides) -> Settings:
    env = dict(os.environ if env is None else env)
    home = Path(env["IMAGENT_HOME"]).expanduser() if env.get("IMAGENT_HOME") else default_home()
    values: dict = {}
    cfg_file = home / "config.json"
    if cfg_file.is_file():
        try:
            values.update(json.loads(cfg_file.read_text()))
        except (json.JSONDecodeError, OSError) as exc:
            raise ConfigError(f"{cfg_file} is not valid JSON ({exc}).", "Fix or delete the file.") from None
    for name, var in _ENV.items():
        if env.get(var):
            values[name] = env[var]
    if not values.get("llm_api_key") and env.get("OPENAI_API_KEY") and values.get("llm_model"):
        values["llm_api_key"] = env["OPENAI_API_KEY"]
    known = {f.name: f for f in fields(Settings)}
    unknown = set(values) - set(known)
    if unknown:
        raise ConfigError(f"Unknown setting(s) in {cfg_file}: {', '.join(sorted(unknown))}.",
                          f"Known: {', '.join(sorted(k for k in known if k != 'home'))}.")
    for name in ("llm_timeout", "openai_timeout", "cfg"):
        if isinstance(values.get(name), str):
            values[name] = float(values[name])
    for name in ("steps", "llm_max_retries"):
        if isinstance(values.get(name), str):
            values[name] = int(values[name])
    settings = Settings(home=home, **values).with_overrides(**overrides)
    if settings.backend not in {"diffusers", "openai"}:
        raise ConfigError(f"Unknown backend '{settings.backend}'.", "Use diffusers or openai.")
    if settings.safety not in {"off", "standard", "strict"}:
        raise ConfigError(f"Unknown safety level '{settings.safety}'.", "Use off, standard or strict.")
    if settings.llm_fallback not in {"template", "error"}:
        raise ConfigError(f"Unknown llm_fallback '{settings.llm_fallback}'.", "Use template or error.")
    if settings.llm_method not in {"json_schema", "function_calling", "json_mode"}:
        raise ConfigError(f"Unknown llm_method '{settings.llm_method}'.",
                          "Use json_schema, function_calling or json_mode.")
    return settings
