"""Data only: system prompts, critique prompts, style presets and vocabularies.

`read_text(name)` returns a file's text; a user can override any file by placing one of the
same name in `$IMAGENT_HOME/prompts/`.
"""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path


def user_dir() -> Path | None:
    home = os.environ.get("IMAGENT_HOME")
    base = Path(home) if home else None
    return (base / "prompts") if base else None


def path_of(name: str) -> Path:
    """The file that `name` resolves to: a user override first, else the packaged one."""
    override = user_dir()
    if override is not None and (override / name).is_file():
        return override / name
    return Path(str(resources.files(__name__).joinpath(name)))


def read_text(name: str) -> str:
    return path_of(name).read_text(encoding="utf-8")
