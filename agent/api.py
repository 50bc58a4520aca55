"""imagent's Python API: one session object, the same one the CLI, the TUI and the MCP server use.

    from agent.api import open_session

    s = open_session()                                    # settings from $IMAGENT_HOME and the environment
    best = s.run("two red circles", rounds=3, candidates=2).best
    s.run("two red circles", RunOptions(rounds=3, style="watercolor", request_fields={"steps": 20}))
    print(best.path, best.seed)                           # the PNG carries the full metadata

    out = s.generate(GenerateRequest(prompt="a blue square", seed=7, steps=20))
    edited = s.edit("a green square", out.images[0].path, strength=0.6)      # mask_path=... inpaints
    s.generate(GenerateRequest(prompt="a cat"), post=PostProcess(sharpen=1, resize=(768, 512), format="jpeg"))
    big = s.upscale(edited.images[0].path, scale=4, method="realesrgan")
    call = Call(sink=print)                               # one call's control: call.stop() from another thread
    s.generate(GenerateRequest(prompt="a cat", steps=50), call=call)   # its events: Step(done, total), ...
    s.score([big.path], "a green square")                 # {'scores': [...], 'formula': 'clipscore', ...}

`open_session(**overrides)` takes any agent.config.Settings field (model, backend, device, dtype,
safety, clip_model, style, steps, cfg, llm_model, ...) over the configured ones, e.g.
`open_session(model="runwayml/stable-diffusion-v1-5", safety="strict")`. Models load on first use.

The tool-shaped API (JSON in, JSON out; what the MCP server and the LangChain tools call) is
`Capabilities(session).call("generate", {"prompt": "...", "seed": 1})`; the input models are in
agent.tool_schemas. Errors are agent.errors.ImagentError subclasses with `.message` and `.hint`.
"""
from __future__ import annotations

from dataclasses import fields

from agent.capabilities import Capabilities, PathPolicy
from agent.config import Settings, load_settings
from agent.errors import BackendError, Cancelled, ImagentError, InvalidInput, ModelNotFound, SafetyBlocked
from agent.events import Call, Step
from agent.requests import RunOptions
from agent.session import GenerationOutcome, RunOutcome, SavedImage, Session, UpscaleOutcome
from tools.generate import GenerateRequest
from tools.postprocess import PostProcess

__all__ = [
    "open_session", "Session", "Settings", "RunOptions", "GenerateRequest", "PostProcess", "GenerationOutcome", "RunOutcome", "UpscaleOutcome",
    "SavedImage", "Call", "Step", "Capabilities", "PathPolicy", "ImagentError", "InvalidInput", "SafetyBlocked",
    "ModelNotFound", "BackendError", "Cancelled",
]


def open_session(settings: Settings | None = None, **overrides) -> Session:
    """A Session over `settings` (default: resolved from $IMAGENT_HOME/config.json and the environment),
    with `overrides` (Settings field names; None values are ignored) applied on top."""
    known = {f.name for f in fields(Settings)} - {"home"}
    unknown = set(overrides) - known
    if unknown:
        raise InvalidInput(f"Unknown setting(s): {', '.join(sorted(unknown))}.", f"Known: {', '.join(sorted(known))}.")
    if settings is None:
        return Session(load_settings(**overrides))
    return Session(settings.with_overrides(**overrides))
