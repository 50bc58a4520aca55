"""The demo world: coloured shapes, an exact oracle, and the small models imagent ships.

- `tools.demo.world`    the world's names in one namespace, from:
  `tools.demo.grammar` (vocabulary, Scene, parser), `tools.demo.sampling` (random scenes, wrong
  captions, prompt sets), `tools.demo.drawing` (layouts, renderer, box-layout images)
- `tools.demo.oracle`   reads an image and checks it against a scene (GenEval-like categories)

Training, export and evaluation live outside the installed package, in the repository's
`training/` folder (`python -m training.demo_train vae|clip|unet`, `python -m training.demo_export`,
`python -m training.detector`, `training.demo_evaluate`).

The shipped weights live in `tools/demo/weights/` (see MODEL_CARD.md there):
`pipeline/` is a diffusers StableDiffusionPipeline folder, `clip/` a transformers CLIPModel
folder with its tokenizer and image processor, `detector/` a transformers OWL-ViT detector
(trained by `training/detector.py`, outside the installed package). Nothing is loaded at import time.
"""
from __future__ import annotations

import json
from pathlib import Path

from tools.errors import InvalidInput, ModelNotFound

DEMO = "demo"  # the model id (for the pipeline, the CLIP and the detector) meaning these shipped models
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

# defaults used when the shipped folder doesn't say otherwise (pipeline/imagent_demo.json)
DEFAULT_STEPS = 20
DEFAULT_GUIDANCE = 5.0
SIZE = 64


def _need(folder: Path, marker: str, what: str, rebuild: str = "python -m training.demo_train vae|clip|unet, "
          "then python -m training.demo_export") -> Path:
    if not (folder / marker).is_file():
        raise ModelNotFound(
            f"the demo {what} is not installed (no {marker} in {folder.name}/ of tools/demo/weights)",
            f"reinstall imagent, or rebuild it: {rebuild}",
        )
    return folder


def weights_path() -> Path:
    """Folder holding the shipped demo weights."""
    return WEIGHTS_DIR


def pipeline_path() -> Path:
    """The shipped diffusers folder (StableDiffusionPipeline layout). Raises ModelNotFound."""
    return _need(WEIGHTS_DIR / "pipeline", "model_index.json", "text-to-image pipeline")


def clip_path() -> Path:
    """The shipped transformers CLIPModel folder (with tokenizer and processor). Raises ModelNotFound."""
    return _need(WEIGHTS_DIR / "clip", "config.json", "CLIP model")


def detector_path() -> Path:
    """The shipped transformers OwlViTForObjectDetection folder (with its processor). Raises ModelNotFound."""
    return _need(WEIGHTS_DIR / "detector", "config.json", "detector",
                 "python -m training.detector --minutes 60, then python -m training.detector --export "
                 "(from a clone of the repository)")


def defaults() -> dict:
    """Default sampling settings of the shipped pipeline: num_inference_steps, guidance_scale."""
    out = {"num_inference_steps": DEFAULT_STEPS, "guidance_scale": DEFAULT_GUIDANCE,
           "height": SIZE, "width": SIZE}
    f = WEIGHTS_DIR / "pipeline" / "imagent_demo.json"
    if f.is_file():
        out.update({k: v for k, v in json.loads(f.read_text()).items() if k in out})
    return out


def _dtype_kw(dtype) -> dict:
    """Newer diffusers name the argument `dtype` (and deprecate torch_dtype); older ones need torch_dtype."""
    try:
        from diffusers.utils import deprecation_utils

        if hasattr(deprecation_utils, "_resolve_dtype"):
            return {"dtype": dtype}
    except ImportError:
        pass
    return {"torch_dtype": dtype}


def load_pipeline(device: str = "cpu"):
    """The shipped StableDiffusionPipeline in float32 (safety checker off: the world is shapes)."""
    import torch
    from diffusers import StableDiffusionPipeline

    folder = pipeline_path()
    try:
        pipe = StableDiffusionPipeline.from_pretrained(
            str(folder), **_dtype_kw(torch.float32), safety_checker=None,
            requires_safety_checker=False, local_files_only=True)
    except Exception as exc:  # corrupt or partial install
        raise ModelNotFound(f"could not load the demo pipeline: {exc}",
                            "reinstall imagent or re-run python -m training.demo_export") from exc
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def load_clip(device: str = "cpu"):
    """The shipped CLIP as (CLIPModel in float32, CLIPProcessor)."""
    import torch
    from transformers import CLIPModel, CLIPProcessor

    folder = clip_path()
    try:
        model = CLIPModel.from_pretrained(str(folder), torch_dtype=torch.float32,
                                          local_files_only=True)
        proc = CLIPProcessor.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:
        raise ModelNotFound(f"could not load the demo CLIP: {exc}",
                            "reinstall imagent or re-run python -m training.demo_export") from exc
    return model.eval().to(device), proc


def reference_images(intent: str, count: int = 4) -> list:
    """Known-good renderings of `intent` (exact pictures of its scene), or [] when it is outside
    the demo grammar: what a relative threshold is calibrated against with the demo CLIP."""
    from tools.demo import world

    try:
        scene = world.parse(intent)
    except InvalidInput:
        return []
    return [world.render(scene, seed)[0] for seed in range(count)]


def cannot_draw(unsupported: list[str]) -> str:
    """The warning for requirements the demo model cannot draw."""
    from tools.demo import world

    return (f"The demo model draws only coloured shapes ({', '.join(world.SHAPES)} in "
            f"{', '.join(world.COLOURS)}); it cannot draw: {', '.join(unsupported)}. "
            "Expect 'met: false'; use --model for a real model.")
