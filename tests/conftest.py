"""Shared fixtures: an isolated imagent home and tiny random-weight models saved to disk."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# the shared helpers (tiny_models, fakes, loopback_llm, fake_openai_images) import as top-level modules
# from every room. The rooms (tests/tools, tests/agent, tests/tui, tests/training) have no __init__.py on
# purpose: with this folder on sys.path, a tests/tools package would shadow the real `tools` package.
sys.path.insert(0, str(Path(__file__).parent))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# idle OpenMP threads sleep instead of spinning: on a busy 2-core machine spinning threads make
# torch 10-50x slower (set before torch is first imported, which reads it)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture(autouse=True)
def imagent_home(tmp_path, monkeypatch) -> Path:
    """Every test gets its own IMAGENT_HOME; the user's home directory is never touched."""
    home = tmp_path / "imagent-home"
    monkeypatch.setenv("IMAGENT_HOME", str(home))
    for var in ("IMAGENT_MODEL", "IMAGENT_BACKEND", "IMAGENT_LLM_MODEL", "IMAGENT_LLM_BASE_URL",
                "IMAGENT_LLM_API_KEY", "IMAGENT_LLM_METHOD", "IMAGENT_LLM_MAX_TOKENS", "IMAGENT_LLM_TEMPERATURE", "OPENAI_API_KEY", "OPENAI_BASE_URL", "IMAGENT_SAFETY", "IMAGENT_CLIP"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture(scope="session")
def tiny_sd_path(tmp_path_factory) -> Path:
    """A tiny random Stable Diffusion pipeline (native 32x32) saved as a diffusers folder."""
    from tiny_models import save_tiny_sd

    return save_tiny_sd(tmp_path_factory.mktemp("models") / "tiny-sd")


@pytest.fixture(scope="session")
def tiny_backend(tiny_sd_path):
    """One loaded DiffusersBackend over the tiny pipeline, shared by the tests (CPU, fp32)."""
    import torch

    from tools.diffusers_backend import DiffusersBackend

    return DiffusersBackend(str(tiny_sd_path), "cpu", torch.float32)


@pytest.fixture(scope="session")
def tiny_clip_path(tmp_path_factory) -> Path:
    """A tiny random CLIPModel (32x32 images) saved in transformers format."""
    from tiny_models import save_tiny_clip

    return save_tiny_clip(tmp_path_factory.mktemp("models") / "tiny-clip")


@pytest.fixture(scope="session")
def tiny_scorer(tiny_clip_path):
    from tools.score import Scorer

    return Scorer(str(tiny_clip_path))


@pytest.fixture
def settings(imagent_home, tiny_sd_path, tiny_clip_path):
    from agent.config import load_settings

    return load_settings(model=str(tiny_sd_path), clip_model=str(tiny_clip_path), safety="off")


@pytest.fixture
def session(settings, tiny_backend, tiny_scorer):
    from agent.session import Session

    return Session(settings, backend=tiny_backend, scorer=tiny_scorer)


@pytest.fixture(scope="module")
def demo_session(tmp_path_factory):
    """A session on the shipped demo models (no safety models), in a home of its own, per test module."""
    from agent.config import load_settings
    from agent.session import Session

    home = tmp_path_factory.mktemp("demo-home")
    return Session(load_settings(env={"IMAGENT_HOME": str(home)}, model="demo", clip_model="demo", safety="off"))
