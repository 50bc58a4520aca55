"""The verifier: per-requirement verdicts with evidence, from a detector's boxes and CLIP."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from agent.requirements import parse_checklist
from tools.detect import Detections, Detector
from tools.verify import DetectorVerifier

SIDE = 64


class BoxDetector:
    """A detector whose patches are the scripted objects (colour, shape, box): exact and offline."""

    model_id = "scripted"
    threshold = 0.3
    info = {}

    def __init__(self, objects):
        self.objects = objects  # [(colour, shape, (x0, y0, x1, y1))]

    def vocabulary(self):
        return {"circle", "square", "triangle"}, {"red", "green", "blue", "yellow", "purple", "orange"}

    def scores(self, image, queries):
        probs = np.zeros((max(1, len(self.objects)), len(queries)), dtype=np.float32)
        boxes = np.zeros((max(1, len(self.objects)), 4), dtype=np.float32)
        for i, (colour, shape, box) in enumerate(self.objects):
            boxes[i] = box
            for j, q in enumerate(queries):
                if q == shape:
                    probs[i, j] = 0.9
                elif q == f"{colour} {shape}":
                    probs[i, j] = 0.8
                elif q.endswith(" " + shape):
                    probs[i, j] = 0.1
        return Detections(probs, boxes, list(queries))

    boxes_for = Detector.boxes_for
    nms_iou = 0.3


class FixedClip:
    model_id = "fixed"
    formula = "clipscore"

    def __init__(self, best_background):
        self.best = best_background

    def cosine(self, images, texts):
        texts = [texts] * len(images) if isinstance(texts, str) else texts
        return [0.3 if f"{self.best} background" in t else 0.2 for t in texts]


def verdicts(objects, prompt, background="white"):
    v = DetectorVerifier(BoxDetector(objects), FixedClip(background))
    out = v.verify(Image.new("RGB", (SIDE, SIDE)), parse_checklist(prompt))
    return {x.id: x for x in out}


def test_counts_colours_relation_exclusive_and_background_each_get_a_verdict():
    good = [("purple", "circle", (40, 20, 56, 36)), ("orange", "square", (4, 20, 20, 36))]
    v = verdicts(good, "a purple circle right of an orange square on a black background", "black")
    assert all(x.passed for x in v.values()), {k: (x.passed, x.evidence) for k, x in v.items()}
    assert v["o1"].evidence["found"][0]["attribute"] == "purple"
    assert v["bg"].evidence["read"] == "black"

    swapped = [("purple", "circle", (4, 20, 20, 36)), ("orange", "square", (40, 20, 56, 36))]
    v = verdicts(swapped, "a purple circle right of an orange square")
    assert v["o1"].passed and v["o2"].passed and v["r1"].passed is False
    assert v["r1"].evidence["dx"] < 0


def test_wrong_count_wrong_colour_and_extra_objects_fail_with_evidence():
    three = [("red", "circle", (2, 2, 14, 14)), ("red", "circle", (30, 2, 42, 14)), ("red", "circle", (2, 40, 14, 52))]
    v = verdicts(three, "two red circles")
    assert v["o1"].passed is False and v["o1"].evidence["count"] == 3 and v["only"].passed is False

    v = verdicts([("blue", "circle", (2, 2, 14, 14)), ("red", "circle", (30, 2, 42, 14))], "two red circles")
    assert v["o1"].passed is False and v["o1"].evidence["count"] == 1
    assert [b["attribute"] for b in v["o1"].evidence["found"]] == ["blue", "red"]

    v = verdicts([("red", "circle", (2, 2, 14, 14)), ("green", "triangle", (30, 30, 44, 44))], "a red circle")
    assert v["o1"].passed and v["only"].passed is False and len(v["only"].evidence["extra"]) == 1

    v = verdicts([], "a red circle", "white")
    assert v["o1"].passed is False and v["o1"].evidence["count"] == 0


def test_words_outside_a_closed_vocabulary_cannot_be_checked():
    v = DetectorVerifier(BoxDetector([]), FixedClip("white"))
    cl = parse_checklist("a cat coding at night")
    assert v.unsupported(cl) == ["cat"]
    out = {x.id: x for x in v.verify(Image.new("RGB", (SIDE, SIDE)), cl)}
    assert out["o1"].passed is None


@pytest.fixture(scope="module")
def tiny_owl(tmp_path_factory):
    from tiny_models import save_tiny_owlvit

    return save_tiny_owlvit(tmp_path_factory.mktemp("owl") / "tiny-owlvit")


def test_a_real_owlvit_folder_loads_and_yields_boxes_in_pixels(tiny_owl, tiny_scorer):
    det = Detector(str(tiny_owl), threshold=0.0)
    image = Image.new("RGB", (48, 40), "white")
    d = det.scores(image, ["red circle", "circle"])
    assert d.probs.shape == (16, 2) and d.boxes.shape == (16, 4)
    assert np.all((d.probs >= 0) & (d.probs <= 1))
    boxes = det.detect(image, ["circle"])["circle"]
    assert boxes and all(-48 <= b.x0 <= b.x1 <= 96 for b in boxes)
    assert boxes == sorted(boxes, key=lambda b: -b.score), "best first"
    v = DetectorVerifier(det, tiny_scorer).verify(image, parse_checklist("a photo of a red cat left of a dog"))
    assert [x.id for x in v] == ["o1", "o2", "r1"] and all(x.passed in (True, False) for x in v)


def test_a_missing_detector_says_how_to_point_to_one(tmp_path):
    from tools.errors import ModelNotFound

    with pytest.raises(ModelNotFound, match="--detector"):
        Detector(str(tmp_path / "nope")).scores(Image.new("RGB", (8, 8)), ["cat"])
