"""Data only: system prompts, critique prompts, style presets and vocabularies.

`read_text(name, home)` returns a file's text; a user overrides any file by placing one of the
same name in `HOME/prompts/`, where HOME is the settings' home (agent.config.Settings.home:
$IMAGENT_HOME, default ~/.imagent). Callers pass it; `home=None` reads the packaged files only.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path


def user_dir(home: str | Path | None) -> Path | None:
    """The override folder of a settings home, or None without one."""
    return Path(home) / "prompts" if home else None


def path_of(name: str, home: str | Path | None = None) -> Path:
    """The file that `name` resolves to: the user's override in `home` first, else the packaged one."""
    override = user_dir(home)
    if override is not None and (override / name).is_file():
        return override / name
    return Path(str(resources.files(__name__).joinpath(name)))


def read_text(name: str, home: str | Path | None = None) -> str:
    return path_of(name, home).read_text(encoding="utf-8")
