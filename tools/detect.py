"""Open-vocabulary object detection (OWL-ViT / OWLv2 through transformers), the verifier's eyes.

`Detector(model).detect(image, queries)` returns, per text query, the boxes whose score for that
query clears the threshold, after non-maximum suppression; `Detector.query_scores(image, box,
queries)` reads how well other phrases ("red circle", "blue circle") fit one detected box, which
is how attributes are read. Any OWL-ViT or OWLv2 checkpoint in transformers format works: a
local folder, a hub id (for example `google/owlv2-base-patch16-ensemble` for users with
network), or "demo" for the demo world's detector (an OWL-ViT trained from scratch on rendered
shapes; `training/detector.py`). The model loads once, on first use.

A folder may carry `imagent_detector.json` with `nouns` / `attributes` (the vocabulary it was
trained on: a closed-vocabulary detector cannot check other words) and a default `threshold`.
"""
from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from tools.demo import DEMO  # the shipped demo detector
from tools.errors import ModelNotFound
from tools.requirements import Box

ENV = "IMAGENT_DETECTOR"
DEFAULT_THRESHOLD = 0.1   # OWL-ViT's usual cut for real checkpoints
HOW_TO_POINT = ("Point to an OWL-ViT or OWLv2 model with --detector PATH_OR_HUB_ID or IMAGENT_DETECTOR "
                "(e.g. google/owlv2-base-patch16-ensemble when online).")


def resolve_detector(model: str | os.PathLike | None) -> str:
    model = str(model or DEMO)
    if model != DEMO:
        return model
    from tools import demo

    return str(demo.detector_path())


@dataclass
class Detections:
    """Every patch's box and per-query probability for one image (numpy arrays)."""

    probs: object      # (P, Q)
    boxes: object      # (P, 4) pixel xyxy
    queries: list[str]


class Detector:
    def __init__(self, model: str | os.PathLike = DEMO, *, device: str = "cpu", threshold: float | None = None,
                 nms_iou: float = 0.3, model_obj=None, processor=None):
        """`model_obj`/`processor` may be passed in (tests build tiny random ones)."""
        self.model_id = str(model)
        self.device = device
        self.nms_iou = nms_iou
        self._model, self._processor = model_obj, processor
        self._lock = threading.Lock()
        self.info: dict = {}
        self._threshold = threshold

    @property
    def path(self) -> str:
        return resolve_detector(self.model_id) if self._model is None else self.model_id

    def load(self):
        with self._lock:
            if self._model is None:
                self._model, self._processor = self._load(self.path)
            return self._model, self._processor

    def _load(self, path: str):
        import torch

        from tools.loading import quiet_loading

        quiet_loading()
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor
        local = Path(path).expanduser()
        try:
            model = AutoModelForZeroShotObjectDetection.from_pretrained(
                str(local) if local.exists() else path, dtype=torch.float32, local_files_only=local.exists())
            processor = AutoProcessor.from_pretrained(str(local) if local.exists() else path,
                                                      local_files_only=local.exists())
        except Exception as exc:
            where = "the folder" if local.exists() else "a local folder, and it could not be fetched"
            raise ModelNotFound(f"Could not load the detector '{self.model_id}' from {where}: "
                                f"{str(exc).splitlines()[0][:160]}", HOW_TO_POINT) from None
        meta = local / "imagent_detector.json"
        if meta.is_file():
            self.info = json.loads(meta.read_text())
        return model.eval().to(self.device), processor

    @property
    def threshold(self) -> float:
        if self._threshold is not None:
            return self._threshold
        self.load()
        return float(self.info.get("threshold", DEFAULT_THRESHOLD))

    def vocabulary(self) -> tuple[set[str] | None, set[str] | None]:
        """(nouns, attributes) the detector was trained on; None = open vocabulary."""
        self.load()
        nouns, attrs = self.info.get("nouns"), self.info.get("attributes")
        return (set(nouns) if nouns else None), (set(attrs) if attrs else None)

    def scores(self, image: Image.Image, queries: list[str]) -> Detections:
        """Per-patch probabilities for every query and per-patch pixel boxes."""
        import torch

        model, processor = self.load()
        image = image.convert("RGB")
        inputs = processor(text=[queries], images=image, return_tensors="pt", padding="max_length",
                           truncation=True)
        with torch.no_grad():
            logits, pred_boxes = owl_forward(model, inputs["pixel_values"].to(self.device),
                                              inputs["input_ids"].to(self.device),
                                              inputs["attention_mask"].to(self.device))
        probs = torch.sigmoid(logits[0]).float().cpu().numpy()
        cxcywh = pred_boxes[0].float().cpu().numpy()
        w, h = image.size
        side_w, side_h = w, h
        if type(model).__name__.startswith("Owlv2"):  # OWLv2 pads to a square
            side_w = side_h = max(w, h)
        boxes = cxcywh.copy()
        boxes[:, 0] = (cxcywh[:, 0] - cxcywh[:, 2] / 2) * side_w
        boxes[:, 1] = (cxcywh[:, 1] - cxcywh[:, 3] / 2) * side_h
        boxes[:, 2] = (cxcywh[:, 0] + cxcywh[:, 2] / 2) * side_w
        boxes[:, 3] = (cxcywh[:, 1] + cxcywh[:, 3] / 2) * side_h
        return Detections(probs, boxes, list(queries))

    def boxes_for(self, det: Detections, query: str, threshold: float | None = None) -> list[tuple[Box, int]]:
        """(Box, patch index) for one query, best first, after non-maximum suppression."""
        import numpy as np

        thr = self.threshold if threshold is None else threshold
        q = det.queries.index(query)
        p = det.probs[:, q]
        order = [int(i) for i in np.argsort(-p) if p[i] >= thr]
        kept: list[int] = []
        for i in order:
            if all(_iou(det.boxes[i], det.boxes[j]) < self.nms_iou
                   and inside_share(det.boxes[i], det.boxes[j]) < 0.6 for j in kept):
                kept.append(i)
        return [(Box(*[float(v) for v in det.boxes[i]], score=float(p[i]), noun=query), i) for i in kept]

    def detect(self, image: Image.Image, queries: list[str], threshold: float | None = None) -> dict[str, list[Box]]:
        det = self.scores(image, queries)
        return {q: [b for b, _ in self.boxes_for(det, q, threshold)] for q in queries}

    def describe(self) -> dict:
        return {"model": self.model_id, "threshold": self.threshold}


def owl_forward(model, pixels, input_ids, attention_mask):
    """OWL-ViT / OWLv2 heads with every query taken as real. (The library's forward treats a query
    whose first token id is 0 as padding; the demo tokenizer's start token is id 0.)"""
    import torch

    feature_map = model.image_embedder(pixel_values=pixels)[0]
    b, h, w, d = feature_map.shape
    feats = feature_map.reshape(b, h * w, d)
    base = getattr(model, "owlvit", None) or getattr(model, "owlv2")
    q = base.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
    if not isinstance(q, torch.Tensor):  # newer transformers return an output object
        q = q.pooler_output if getattr(q, "pooler_output", None) is not None else q[0]
    logits = model.class_predictor(feats, q[None].expand(b, -1, -1), None)[0]
    return logits, model.box_predictor(feats, feature_map)


def inside_share(a, b) -> float:
    """Intersection over the smaller of two xyxy boxes: a duplicate mostly inside another scores high."""
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    small = min(max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1]), max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1]))
    return inter / small if small > 0 else 0.0


def _iou(a, b) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    area = lambda r: max(0.0, r[2] - r[0]) * max(0.0, r[3] - r[1])
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0
