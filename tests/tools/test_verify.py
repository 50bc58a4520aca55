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
        for i, (colour, shape, box, *reads) in enumerate(self.objects):
            boxes[i] = box
            reads = reads[0] if reads else {colour: 0.8}   # colour phrase scores; others 0.1
            for j, q in enumerate(queries):
                if q == shape:
                    probs[i, j] = 0.9
                elif q.endswith(" " + shape):
                    probs[i, j] = reads.get(q.split()[0], 0.1)
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
    assert v["r1"].evidence["x"] < 0 and "mostly left of" in v["r1"].evidence["why"]


# GenEval's rule, worked out by hand for A at distance 24 from B, both boxes 10 x 10 (so each
# axis shrinks by 0.1 x (10 + 10) = 2): at angle t from the named axis the named component is
# (24 cos t - 2) / 24 and the cross one (24 sin t - 2) / 24.
ANGLES = [  # (degrees from the named axis, named component, cross component, verdict)
    (0, 0.917, 0.0, True),
    (30, 0.783, 0.417, True),
    (45, 0.624, 0.624, True),      # past 0.5 + the 0.1 margin
    (50, 0.559, 0.683, False),     # true by GenEval's 0.5, but only by a hair: uncertain, fails
    (60, 0.417, 0.783, False),
    (75, 0.175, 0.883, False),
]
AXES = {"left of": (-1, 0), "right of": (1, 0), "above": (0, -1), "below": (0, 1)}


def _placed(relation, degrees, distance=24.0, side=10.0):
    """Boxes for A and B with A `distance` from B's centre (32, 32), `degrees` off the named axis."""
    import math

    ax, ay = AXES[relation]
    t = math.radians(degrees)
    # the cross direction: a quarter turn from the axis
    ox = distance * (ax * math.cos(t) - ay * math.sin(t))
    oy = distance * (ay * math.cos(t) + ax * math.sin(t))
    h = side / 2
    return (32 + ox - h, 32 + oy - h, 32 + ox + h, 32 + oy + h), (32 - h, 32 - h, 32 + h, 32 + h)


@pytest.mark.parametrize("relation", list(AXES))
@pytest.mark.parametrize("degrees,named,cross,expected", ANGLES)
def test_relations_follow_genevals_rule_at_each_angle(relation, degrees, named, cross, expected):
    a, b = _placed(relation, degrees)
    v = verdicts([("red", "circle", a), ("blue", "square", b)], f"a red circle {relation} a blue square")
    r = v["r1"]
    assert r.passed is expected, (relation, degrees, r.evidence)
    ax, ay = AXES[relation]
    got_named = r.evidence["x"] * ax + r.evidence["y"] * ay
    got_cross = abs(r.evidence["y"] if ax else r.evidence["x"])
    assert got_named == pytest.approx(named, abs=2e-3) and got_cross == pytest.approx(cross, abs=2e-3)
    assert r.evidence.get("uncertain", False) is (degrees == 50)
    # and the other three relations: each holds only where its own component clears the cut
    for other, (ox, oy) in AXES.items():
        if other != relation:
            w = verdicts([("red", "circle", a), ("blue", "square", b)], f"a red circle {other} a blue square")
            comp = w["r1"].evidence["x"] * ox + w["r1"].evidence["y"] * oy
            assert w["r1"].passed is (comp > 0.6), (relation, degrees, other, comp)


def test_a_diagonal_pair_is_not_met_and_the_evidence_says_why():
    # the issue's miss: purple centre (33, 17), blue (20, 41): 13 px right and 24 px up
    purple, blue = (27, 11, 39, 23), (14, 35, 26, 47)
    v = verdicts([("purple", "triangle", purple), ("blue", "triangle", blue)],
                 "a purple triangle right of a blue triangle")
    assert v["o1"].passed and v["o2"].passed and v["r1"].passed is False
    assert "mostly above" in v["r1"].evidence["why"] and "x > 0.6" in v["r1"].evidence["why"]
    v = verdicts([("purple", "triangle", purple), ("blue", "triangle", blue)],
                 "a purple triangle above a blue triangle")
    assert v["r1"].passed is True


def test_near_touching_boxes_are_judged_by_the_same_rule():
    # side by side, touching: offset 20, shrink 0.1 x 40 = 4, so x = -16 / 20 = -0.8
    v = verdicts([("red", "circle", (10, 22, 30, 42)), ("blue", "square", (30, 22, 50, 42))],
                 "a red circle left of a blue square")
    assert v["r1"].passed and v["r1"].evidence["x"] == pytest.approx(-0.8)
    # overlapping by half: offset 10, shrink 4 -> -0.6, on the margin: uncertain, not met
    v = verdicts([("red", "circle", (10, 22, 30, 42)), ("blue", "square", (20, 22, 40, 42))],
                 "a red circle left of a blue square")
    assert v["r1"].passed is False and v["r1"].evidence["uncertain"]
    # centres 2 px apart (the old rule's margin) with the boxes' sizes: the shrink leaves nothing
    v = verdicts([("red", "circle", (10, 22, 30, 42)), ("blue", "square", (12, 22, 32, 42))],
                 "a red circle left of a blue square")
    assert v["r1"].passed is False and v["r1"].evidence["x"] == 0


def test_the_verifier_and_the_oracle_implement_genevals_rule_apart_and_agree():
    """Two implementations (the verifier's over detector boxes, the oracle's as GenEval writes it)
    give the same components on random boxes: neither is the other's copy, so a slip in one shows."""
    import random

    from tools.demo.oracle import relation_components
    from tools.requirements import Box
    from tools.verify import relation_components as verifier_components

    rng = random.Random(5)
    for _ in range(500):
        def box():
            x0, y0 = rng.uniform(0, 50), rng.uniform(0, 50)
            return Box(x0, y0, x0 + rng.uniform(2, 20), y0 + rng.uniform(2, 20), 1.0)
        a, b = box(), box()
        mine = verifier_components(a, b)
        theirs = relation_components(type("F", (), {"box": a.xyxy})(), type("F", (), {"box": b.xyxy})())
        if theirs is None:
            assert mine == pytest.approx((0.0, 0.0), abs=1e-3)
        else:
            assert mine == pytest.approx(theirs, abs=1e-9)


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


def test_a_colour_read_too_close_to_call_is_uncertain_and_not_a_match():
    # the detector reads orange at 0.54 and yellow at 0.24 (an in-between colour): under 3 x, unsure
    amber = {"orange": 0.54, "yellow": 0.24}
    scene = [("orange", "triangle", (2, 2, 16, 16), amber), ("orange", "triangle", (40, 2, 54, 16)),
             ("blue", "square", (2, 40, 16, 54)), ("blue", "square", (40, 40, 54, 54))]
    v = verdicts(scene, "two orange triangles and two blue squares")
    assert v["o1"].passed is False and v["o1"].evidence["count"] == 1 and v["o1"].evidence["uncertain"]
    assert [b.get("uncertain", False) for b in v["o1"].evidence["found"]] == [True, False]
    assert v["o2"].passed
    # a clear read (0.8 against 0.1) of the same colour passes
    sure = [scene[0][:3], *scene[1:]]
    assert verdicts(sure, "two orange triangles and two blue squares")["o1"].passed


def test_same_colour_objects_that_touch_count_once_and_the_count_is_uncertain():
    # two orange squares 2 px apart (under 0.05 x 64): one match, the count fails, the repair moves one
    near = [("orange", "square", (22, 5, 36, 19)), ("orange", "square", (38, 17, 52, 31)),
            ("blue", "circle", (19, 44, 32, 57)), ("blue", "circle", (48, 47, 61, 60))]
    v = verdicts(near, "two blue circles and two orange squares")
    assert v["o2"].passed is False and v["o2"].evidence["count"] == 1 and v["o2"].evidence["uncertain"]
    assert sum(bool(b.get("touching")) for b in v["o2"].evidence["found"]) == 1
    assert v["o1"].passed
    # 8 px apart: two
    apart = [near[0], ("orange", "square", (44, 17, 58, 31)), *near[2:]]
    assert verdicts(apart, "two blue circles and two orange squares")["o2"].passed
    # a red circle touching a red square: the same colour, so the lower-scoring read is in doubt
    pair = [("red", "circle", (10, 20, 26, 36)), ("red", "square", (27, 20, 43, 36))]
    v = verdicts(pair, "a red circle left of a red square")
    assert not (v["o1"].passed and v["o2"].passed)


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
