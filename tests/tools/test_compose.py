"""Layout plans and latent composition: boxes from requirements, edits from verdicts, replay."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from agent.layout import plan_edit, plan_layout, relation_slots, slots
from agent.loop import Candidate, choose_repair
from agent.requirements import parse_checklist
from tools.compose import ComposePlan, _erase, _paste, draw_boxes, label_colour, layout_boxes, layout_condition
from tools.requirements import Box, RequirementVerdict


def test_relation_slots_put_the_subject_on_the_right_side():
    rng = random.Random(0)
    for rel, axis, sign in (("left of", 0, -1), ("right of", 0, 1), ("above", 1, -1), ("below", 1, 1)):
        a, b = relation_slots(rel, 64, 64, rng)
        assert sign * (a[axis] - b[axis]) > 20, rel
    for n in range(1, 7):
        c = slots(n, 64, 64, rng)
        assert len(c) == n
        assert all(((p[0] - q[0]) ** 2 + (p[1] - q[1]) ** 2) ** 0.5 > 14 for i, p in enumerate(c) for q in c[i + 1:])


def test_planned_relations_hold_by_genevals_rule_with_room_to_spare():
    """The layout and edit plans put a relation's pair where GenEval's rule holds past the
    verifier's margin, for boxes as large as the plan allows (layout ControlNet or per-object)."""
    from tools.compose import LAYOUT_SIDE
    from tools.verify import RELATION_MARGIN, relation_excess

    def box(centre, side):
        return Box(centre[0] - side / 2, centre[1] - side / 2, centre[0] + side / 2, centre[1] + side / 2, 1.0)

    for rel in ("left of", "right of", "above", "below"):
        cl = parse_checklist(f"a red circle {rel} a blue square")
        for seed in range(20):
            for control in (None, 1.0):
                plan = plan_layout(cl, width=64, height=64, seed=seed, prompt="x", layout_control=control)
                a, b = plan.placements
                side = a.max_size if control is None else min(a.max_size, LAYOUT_SIDE * 64)
                assert relation_excess(rel, box(a.target, side), box(b.target, side), 64) > RELATION_MARGIN + 0.15
            sa, sb = relation_slots(rel, 64, 64, random.Random(seed))   # the edit plan's move
            assert relation_excess(rel, box(sa, 20), box(sb, 20), 64) > RELATION_MARGIN + 0.15


def test_layout_plan_places_every_instance_and_round_trips_as_json():
    cl = parse_checklist("a green triangle left of a yellow square on a black background")
    plan = plan_layout(cl, width=64, height=64, seed=3, prompt="x")
    assert [p.label for p in plan.placements] == ["green triangle", "yellow square"]
    assert plan.placements[0].target[0] < plan.placements[1].target[0]
    assert plan.placements[0].prompt == "a green triangle on a black background"
    again = ComposePlan.from_json(json.loads(json.dumps(plan.to_json())))
    assert again == plan
    counted = plan_layout(parse_checklist("four red circles"), width=64, height=64, seed=1, prompt="x")
    assert len(counted.placements) == 4 and len({p.seed for p in counted.placements}) == 4
    assert all(p.max_size and p.max_size < 26 for p in counted.placements)


def _verdict(rid, kind, passed, **evidence):
    return RequirementVerdict(rid, kind, passed, 0.9, evidence)


def test_edit_plan_keeps_good_objects_erases_wrong_ones_and_adds_the_missing():
    cl = parse_checklist("three red circles")
    found = [{"box": [2, 2, 14, 14], "attribute": "red", "match": True},
             {"box": [40, 2, 52, 14], "attribute": "blue", "match": False},
             {"box": [2, 40, 14, 52], "attribute": "red", "match": True}]
    checks = [_verdict("o1", "object", False, found=found, count=2),
              _verdict("only", "exclusive", True, extra=[]), _verdict("holistic", "holistic", True)]
    plan = plan_edit(cl, checks, width=64, height=64, seed=5, prompt="three red circles")
    assert plan.use_base and plan.erase == [(40.0, 2.0, 52.0, 14.0)]
    assert len(plan.placements) == 1 and plan.placements[0].prompt == "a red circle"
    x, y = plan.placements[0].target
    assert min(((x - cx) ** 2 + (y - cy) ** 2) ** 0.5 for cx, cy in ((8, 8), (8, 46))) > 20, "an empty spot"


def test_edit_plan_moves_the_pair_of_a_failed_relation():
    cl = parse_checklist("a red circle left of a blue square")
    checks = [_verdict("o1", "object", True, found=[{"box": [40, 20, 52, 32], "match": True}]),
              _verdict("o2", "object", True, found=[{"box": [4, 20, 16, 32], "match": True}]),
              _verdict("r1", "relation", False), _verdict("only", "exclusive", True, extra=[])]
    plan = plan_edit(cl, checks, width=64, height=64, seed=5, prompt="p")
    circle, square = plan.placements
    assert circle.source_box == (40.0, 20.0, 52.0, 32.0) and square.source_box == (4.0, 20.0, 16.0, 32.0)
    assert circle.target[0] < square.target[0], "the circle goes left"


def test_repair_choice_follows_the_failure():
    ok = RequirementVerdict("o1", "object", True, 1.0)
    bad_count = RequirementVerdict("o2", "object", False, 1.0)
    low = RequirementVerdict("holistic", "holistic", False, 0.6)
    c = Candidate(1, None, 1.0, checks=[ok, bad_count])
    assert choose_repair(c, True, []) == "edit"
    assert choose_repair(Candidate(1, None, 1.0, checks=[bad_count]), True, []) == "layout", "nothing to keep"
    assert choose_repair(c, False, []) == "prompt", "a backend that cannot compose"
    assert choose_repair(Candidate(1, None, 1.0, checks=[ok, low]), True, []) == "prompt"


def test_erase_fills_with_the_background_and_paste_moves_the_object():
    canvas = torch.zeros(1, 4, 16, 16)
    canvas[0, :, 2:5, 2:5] = 3.0                      # an object at pixels 8..20
    cleared = _erase(canvas, [(8, 8, 20, 20)], 4)
    assert cleared.abs().max() == 0, "erased to the background (the median outside)"
    _paste(cleared, canvas, (8, 8, 20, 20), (48, 48), 4, 16, 16)
    assert cleared[0, 0, 11, 11] == 3.0 and cleared[0, 0, 3, 3] == 0


def test_compose_runs_on_a_real_pipeline_and_is_deterministic(tiny_backend):
    from tools.compose import Placement

    plan = ComposePlan(width=32, height=32, steps=2, cfg=1.0, seed=4, finish_prompt="two circles",
                       placements=[Placement("circle", (8, 16), "a circle", 11), Placement("circle", (24, 16), "a circle", 12)])
    locate = lambda img, label: Box(4, 4, 12, 12, 0.9, label)  # noqa: E731
    a = tiny_backend.compose(plan, locate)
    b = tiny_backend.compose(ComposePlan.from_json(plan.to_json()), locate)
    assert a.images_generated == 3 and [p["from"] for p in a.placed] == ["generated", "generated"]
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))


def test_compose_says_so_when_no_object_can_be_located(tiny_backend):
    import pytest

    from tools.compose import Placement
    from tools.errors import BackendError

    plan = ComposePlan(width=32, height=32, steps=2, cfg=1.0, seed=4, finish_prompt="x",
                       placements=[Placement("circle", (8, 16), "a circle", 11)])
    with pytest.raises(BackendError, match="located"):
        tiny_backend.compose(plan, lambda img, label: None)


def test_a_layout_plan_for_the_controlnet_is_boxes_without_per_object_generations():
    cl = parse_checklist("four red circles")
    plan = plan_layout(cl, width=64, height=64, seed=2, prompt="four red circles", layout_control=1.0)
    assert plan.layout_control == 1.0 and len(plan.placements) == 4
    assert all(not p.prompt and p.seed is None for p in plan.placements), "one generation, not one per object"
    assert all(p.max_size <= 16 for p in plan.placements)
    boxes = layout_boxes(plan)
    assert all(abs((x1 - x0) - p.max_size) < 1e-6 for (x0, _, x1, _, _), p in zip(boxes, plan.placements))
    assert ComposePlan.from_json(json.loads(json.dumps(plan.to_json()))) == plan
    latent = plan_layout(cl, width=64, height=64, seed=2, prompt="x")
    assert latent.layout_control is None and all(p.prompt for p in latent.placements)


def test_the_layout_condition_fills_each_box_with_its_objects_colour():
    from tools.demo import world

    cl = parse_checklist("a green triangle left of a yellow square")
    plan = plan_layout(cl, width=64, height=64, seed=0, prompt="p", layout_control=1.0)
    image = np.asarray(layout_condition(plan, {"green": (30, 170, 50)}))
    (gx0, gy0, gx1, gy1, _), (yx0, yy0, yx1, yy1, _) = layout_boxes(plan)
    assert tuple(image[int((gy0 + gy1) / 2), int((gx0 + gx1) / 2)]) == (30, 170, 50), "the palette's green"
    assert tuple(image[int((yy0 + yy1) / 2), int((yx0 + yx1) / 2)]) == (255, 255, 0), "CSS yellow: not in the palette"
    assert tuple(image[1, 1]) == (0, 0, 0)
    assert label_colour("small thing", {}) == (255, 255, 255)
    # the demo world draws its training layouts with the same function, pixel for pixel
    box = [(3.4, 5.6, 20.2, 22.9, "red")]
    assert np.array_equal(np.asarray(world.boxes_image(box)),
                          np.asarray(draw_boxes([(3.4, 5.6, 20.2, 22.9, world.COLOURS["red"])], (64, 64))))


def test_the_controlnet_palette_is_read_from_beside_its_weights(tmp_path):
    from tools.adapters import control_palette
    from tools.demo import weights_path, world

    assert control_palette(str(weights_path() / "controlnet-layout")) == world.COLOURS
    (tmp_path / "imagent_controlnet.json").write_text("{not json")
    assert control_palette(str(tmp_path)) == {}
    assert control_palette("org/some-hub-id") == {}


def test_a_plain_background_is_recoloured_around_its_objects():
    from PIL import Image, ImageDraw

    from tools.compose import swap_background

    img = Image.new("RGB", (64, 64), (255, 255, 255))
    ImageDraw.Draw(img).ellipse([10, 10, 30, 30], fill=(255, 140, 0))
    out = np.asarray(swap_background(img, "black"))
    assert out[2, 2].tolist() == [0, 0, 0] and out[60, 60].tolist() == [0, 0, 0], "the background is black"
    assert out[20, 20].tolist() == [255, 140, 0], "the object is untouched"
    assert np.asarray(swap_background(img, "gray"))[2, 2].tolist() == [128, 128, 128]
    with pytest.raises(Exception, match="Unknown background colour"):
        swap_background(img, "sparkly")


def test_a_background_only_failure_plans_a_recolour_of_the_base():
    cl = parse_checklist("a red circle on a black background")
    verdicts = [_verdict("o1", "object", True, found=[{"box": [10, 10, 30, 30], "match": True}], count=1),
                _verdict("bg", "background", False, read="white"), _verdict("only", "exclusive", True, extra=[])]
    plan = plan_edit(cl, verdicts, width=64, height=64, seed=1, prompt="x")
    assert plan.use_base and plan.background == "black" and plan.placements == [] and plan.erase == []
    assert ComposePlan.from_json(json.loads(json.dumps(plan.to_json()))) == plan
