"""CLIP image-text similarity: the critique loop's judge.

Contract: `Scorer(model).score(images, texts) -> list[float]` scores image i against text i (one
text is broadcast to every image); `Scorer.matrix(images, texts)` gives the cosine matrix and
`Scorer.rank(image, captions)` ranks captions for one image. Batched; the model loads once, on
first use. Any CLIP in transformers format works: a local folder, a hub id (for example
`openai/clip-vit-base-patch32` for users with network), or "demo" for the demo world's CLIP.

Formulas (`Scorer.formula` names the one in use; `Scorer.formula_text` spells it out):
  - "clipscore"    CLIPScore = 2.5 x max(cos, 0)   (Hessel et al. 2021, "CLIPScore"), range 0..2.5
  - "torchmetrics" 100 x max(cos, 0)               (torchmetrics' CLIPScore), range 0..100
  - "cosine"       the raw cosine similarity, range -1..1
where cos is the cosine between the L2-normalised CLIP image and text embeddings.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Sequence

from PIL import Image

from tools.demo import DEMO  # the shipped demo CLIP
from tools.errors import InvalidInput, ModelNotFound

ENV = "IMAGENT_CLIP"
FORMULAS = {
    "clipscore": "CLIPScore = 2.5 x max(cos, 0) (Hessel et al. 2021)",
    "torchmetrics": "torchmetrics CLIPScore = 100 x max(cos, 0)",
    "cosine": "cosine similarity of the normalised CLIP embeddings",
}
MAX_BATCH = 256
HOW_TO_POINT = ("Point to a CLIP in transformers format with --clip PATH_OR_HUB_ID or IMAGENT_CLIP "
                "(e.g. openai/clip-vit-base-patch32 when online).")


def apply_formula(cos: float, formula: str) -> float:
    if formula == "clipscore":
        return 2.5 * max(cos, 0.0)
    if formula == "torchmetrics":
        return 100.0 * max(cos, 0.0)
    if formula == "cosine":
        return cos
    raise InvalidInput(f"Unknown score formula '{formula}'.", f"Use one of: {', '.join(FORMULAS)}.")


def resolve_clip(model: str | os.PathLike | None) -> str:
    """The folder or hub id to load for `model` ("demo" -> the demo world's CLIP folder)."""
    model = str(model or DEMO)
    if model != DEMO:
        return model
    try:
        from tools import demo

        clip_path = getattr(demo, "clip_path", None)
        path = clip_path() if clip_path else None
    except ModelNotFound as exc:
        raise ModelNotFound(exc.message, f"{exc.hint + ' ' if exc.hint else ''}Or: {HOW_TO_POINT}") from None
    except Exception as exc:  # the demo package is still being built
        path, why = None, f" ({type(exc).__name__}: {exc})"
    else:
        why = ""
    if not path or not Path(path).exists():
        raise ModelNotFound(f"The demo CLIP model is not available yet{why}.",
                            "Train it (python -m training.demo_train clip), or: " + HOW_TO_POINT)
    return str(path)


class Scorer:
    """CLIP similarity between images and texts. Nothing loads until the first call."""

    def __init__(self, model: str | os.PathLike = DEMO, *, formula: str = "clipscore", device: str = "cpu",
                 batch_size: int = 16):
        if formula not in FORMULAS:
            raise InvalidInput(f"Unknown score formula '{formula}'.", f"Use one of: {', '.join(FORMULAS)}.")
        if not 1 <= batch_size <= MAX_BATCH:
            raise InvalidInput(f"batch_size {batch_size} is out of range.", f"Use 1 to {MAX_BATCH}.")
        self.model_id = str(model)
        self.formula = formula
        self.device = device
        self.batch_size = batch_size
        self._model = None
        self._tokenizer = None
        self._processor = None
        self._path: str | None = None
        self._lock = threading.Lock()

    @property
    def formula_text(self) -> str:
        return FORMULAS[self.formula]

    @property
    def path(self) -> str:
        """The resolved folder or hub id (resolving 'demo' may raise ModelNotFound)."""
        if self._path is None:
            self._path = resolve_clip(self.model_id)
        return self._path

    # -- loading ----------------------------------------------------------------------------------
    def load(self):
        with self._lock:
            if self._model is None:
                self._model, self._tokenizer, self._processor = self._load(self.path)
            return self._model

    def _load(self, path: str):
        from tools.loading import quiet_loading

        quiet_loading()
        from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

        local = Path(path).exists()
        if local and not (Path(path) / "config.json").is_file():
            raise ModelNotFound(f"'{path}' is not a CLIP model folder (no config.json).", HOW_TO_POINT)
        kwargs = {"local_files_only": True} if local or os.environ.get("HF_HUB_OFFLINE") == "1" else {}
        try:
            model = CLIPModel.from_pretrained(path, **kwargs)
        except (OSError, ValueError) as exc:
            raise ModelNotFound(f"The CLIP model '{path}' could not be loaded ({type(exc).__name__}).",
                                HOW_TO_POINT) from None
        model = model.to(self.device).eval()
        tokenizer = _first(lambda p: AutoTokenizer.from_pretrained(p, **kwargs), _candidates(path, "tokenizer"))
        if tokenizer is None:
            raise ModelNotFound(f"The CLIP model '{path}' has no tokenizer files.",
                                "Save the tokenizer next to the model (tokenizer.save_pretrained(folder)).")
        processor = _first(lambda p: CLIPImageProcessor.from_pretrained(p, **kwargs),
                           _candidates(path, "image_processor", "feature_extractor"))
        if processor is None:  # a bare model folder: CLIP's standard preprocessing at the model's size
            size = model.config.vision_config.image_size
            processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
        return model, tokenizer, processor

    # -- embeddings -------------------------------------------------------------------------------
    def embed_images(self, images: Sequence[Image.Image]):
        """L2-normalised image embeddings, shape (n, d), computed in batches of `batch_size`."""
        import torch

        images = _check_images(images)
        model = self.load()
        out = []
        for i in range(0, len(images), self.batch_size):
            chunk = [im.convert("RGB") for im in images[i:i + self.batch_size]]
            pixels = self._processor(images=chunk, return_tensors="pt")["pixel_values"].to(self.device)
            with torch.no_grad():
                feats = _as_tensor(model.get_image_features(pixel_values=pixels))
            out.append(torch.nn.functional.normalize(feats.float(), dim=-1))
        return torch.cat(out)

    def embed_texts(self, texts: Sequence[str]):
        """L2-normalised text embeddings, shape (n, d); long texts are cut at the model's limit."""
        import torch

        texts = _check_texts(texts)
        model = self.load()
        limit = model.config.text_config.max_position_embeddings
        out = []
        for i in range(0, len(texts), self.batch_size):
            tok = self._tokenizer(list(texts[i:i + self.batch_size]), padding=True, truncation=True,
                                  max_length=limit, return_tensors="pt")
            with torch.no_grad():
                feats = _as_tensor(model.get_text_features(input_ids=tok["input_ids"].to(self.device),
                                                           attention_mask=tok["attention_mask"].to(self.device)))
            out.append(torch.nn.functional.normalize(feats.float(), dim=-1))
        return torch.cat(out)

    # -- the contract -----------------------------------------------------------------------------
    def cosine(self, images: Sequence[Image.Image], texts: str | Sequence[str]) -> list[float]:
        """Cosine of image i with text i (a single text is compared with every image)."""
        images = _check_images(images)
        texts = [texts] * len(images) if isinstance(texts, str) else list(texts)
        if len(texts) != len(images):
            raise InvalidInput(f"{len(images)} image(s) but {len(texts)} text(s).",
                               "Pass one text per image, or one text for all.")
        unique = list(dict.fromkeys(texts))
        t = self.embed_texts(unique)
        rows = [unique.index(x) for x in texts]
        im = self.embed_images(images)
        return [float(v) for v in (im * t[rows]).sum(dim=-1)]

    def score(self, images: Sequence[Image.Image], texts: str | Sequence[str]) -> list[float]:
        """`formula` applied to `cosine(images, texts)`."""
        return [apply_formula(c, self.formula) for c in self.cosine(images, texts)]

    def matrix(self, images: Sequence[Image.Image], texts: Sequence[str]) -> list[list[float]]:
        """Cosine matrix: row per image, column per text."""
        m = self.embed_images(images) @ self.embed_texts(texts).T
        return m.tolist()

    def rank(self, image: Image.Image, captions: Sequence[str]) -> list[tuple[str, float]]:
        """Captions sorted best first, with their scores (`formula`) for this image."""
        row = self.matrix([image], captions)[0]
        scored = [(c, apply_formula(v, self.formula)) for c, v in zip(captions, row)]
        return sorted(scored, key=lambda cv: -cv[1])

    def describe(self) -> dict:
        return {"model": self.model_id, "path": self._path, "formula": self.formula,
                "formula_text": self.formula_text}


def _as_tensor(x):
    """transformers 5 may return a model output instead of a tensor from get_*_features."""
    if hasattr(x, "pooler_output") and not hasattr(x, "shape"):
        return x.pooler_output
    return x


def _candidates(path: str, *subfolders: str) -> list[str]:
    p = Path(path)
    if not p.exists():
        return [path]
    return [str(p)] + [str(p / s) for s in subfolders] + [str(p.parent / s) for s in subfolders]


def _first(fn, paths):
    for p in paths:
        if Path(p).exists() or not Path(p).is_absolute():
            try:
                return fn(p)
            except (OSError, ValueError, TypeError):
                continue
    return None


def _check_images(images) -> list[Image.Image]:
    if isinstance(images, Image.Image):
        images = [images]
    images = list(images)
    if not images:
        raise InvalidInput("No images to score.", "Pass at least one image.")
    for im in images:
        if not isinstance(im, Image.Image):
            raise InvalidInput(f"Expected PIL images, got {type(im).__name__}.", "Load files with tools.images.load_image.")
    return images


def _check_texts(texts) -> list[str]:
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts:
        raise InvalidInput("No text to score against.", "Give the text: what the image should show.", param="text")
    for t in texts:
        if not isinstance(t, str) or not t.strip():
            raise InvalidInput("A text to score against is empty.", "Describe what the image should show.")
    return texts
