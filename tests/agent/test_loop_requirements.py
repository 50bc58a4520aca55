"""The requirement-checking loop on the shipped demo models, judged by the exact oracle."""
from __future__ import annotations

import numpy as np
import pytest

from agent.critique import layout_control
from tools.images import load_image
from tools.metadata import read_metadata


def test_a_wrong_relation_is_not_met_and_is_named(demo_session, tmp_path):
    from tools.demo import oracle

    prompt = "a purple circle right of an orange square"
    wrong = 0
    for seed in range(8):
        out = demo_session.run(prompt, rounds=1, candidates=1, raw=True, request_fields={"seed": seed},
                               out_dir=tmp_path)
        truth = oracle.requirement_truth(load_image(out.best.path), _checklist(out))
        if not truth["r1"]:
            wrong += 1
            assert not out.met, f"seed {seed}: the relation is false but the run says met"
            assert prompt in out.failed or any("right of" in f for f in out.failed) or \
                any(c["passed"] is False for c in out.checks if c["kind"] == "object")
        if out.met:
            assert all(truth.values()), f"seed {seed}: met, but the oracle disagrees: {truth}"
    assert wrong, "the model drew the relation right in all 8 seeds: pick a harder prompt"


def _checklist(out):
    from tools.requirements import Checklist

    return Checklist.from_json(out.checklist)


def test_the_loop_repairs_counts_and_replays_a_repaired_image(demo_session, tmp_path):
    from tools.demo import oracle

    prompt = "four yellow triangles"
    composed = None
    correct = 0
    for seed in range(4):
        out = demo_session.run(prompt, rounds=3, candidates=1, raw=True, request_fields={"seed": seed},
                               out_dir=tmp_path)
        image = load_image(out.best.path)
        ok = oracle.check(image, prompt).correct
        correct += ok
        if out.met:
            assert ok, f"seed {seed}: met but the oracle says wrong"
        record = read_metadata(out.best.path)["record"]
        assert record["loop"]["checklist"]["requirements"][0]["count"] == 4
        assert [r["repair"] for r in record["loop"]["rounds"]][0] == "initial"
        if record["params"]["mode"] == "compose" and composed is None:
            composed = out
    assert correct >= 3, f"{correct}/4 correct after repair"
    assert composed is not None, "no run needed a repair: pick a harder prompt"
    record = read_metadata(composed.best.path)["record"]
    plan = record["recipe"]["plan"]
    assert record["recipe"]["mode"] == "compose" and (plan["placements"] or plan["erase"])
    again = demo_session.rerun(composed.best.path, out_dir=tmp_path).images[0]
    assert np.array_equal(np.asarray(load_image(composed.best.path)), np.asarray(load_image(again.path)))


def test_an_idea_the_demo_model_cannot_draw_is_said_before_generating(demo_session, tmp_path):
    out = demo_session.run("a cat coding at night", rounds=1, candidates=1, request_fields={"seed": 1},
                           out_dir=tmp_path)
    assert any("cannot draw: cat" in w for w in out.warnings)
    assert not out.met and "cannot check" in out.stop_reason


def test_the_real_model_path_end_to_end_on_tiny_sd_and_tiny_owlvit(tmp_path, tiny_sd_path, tiny_clip_path,
                                                                     tiny_backend):
    from agent.config import load_settings
    from agent.session import Session
    from tiny_models import save_tiny_owlvit

    owl = save_tiny_owlvit(tmp_path / "tiny-owl")
    settings = load_settings(env={"IMAGENT_HOME": str(tmp_path / "home")}, model=str(tiny_sd_path),
                             clip_model=str(tiny_clip_path), detector=str(owl), safety="off")
    session = Session(settings, backend=tiny_backend)
    out = session.run("a photo of a cat left of a dog", rounds=3, candidates=1, raw=True,
                      request_fields={"seed": 3, "steps": 2}, out_dir=tmp_path)
    assert [c["id"] for c in out.checks] == ["o1", "o2", "r1", "holistic"]
    record = read_metadata(out.best.path)["record"]
    assert record["loop"]["verifier"].startswith("detector:") and len(record["loop"]["rounds"]) >= 1
    for r in record["loop"]["rounds"]:
        assert r["repair"] in {"initial", "edit", "layout", "prompt"} and r["checks"]
    rounds = record["loop"]["rounds"]
    if len(rounds) > 1 and set(rounds[0]["best_checks"]["failed"]) & {"o1", "o2", "r1"}:
        assert {r["repair"] for r in rounds[1:]} & {"edit", "layout"}, "a failed object or relation is repaired in latent space"
    assert out.met == all(c["passed"] for c in out.checks)
    if not out.met:
        assert out.failed and out.stop_reason.startswith("rounds exhausted; failing:")


def test_an_edited_checklist_is_the_one_checked(demo_session, tmp_path):
    from agent.requirements import parse_checklist

    given = parse_checklist("two red circles")
    out = demo_session.run("red things", rounds=1, candidates=1, spec={"subject": "two red circles"},
                           checklist=given.to_json(), request_fields={"seed": 2}, out_dir=tmp_path)
    assert [c["id"] for c in out.checks] == ["o1", "only", "holistic"]
    assert out.checks[0]["text"] == "two red circles" and out.checklist["source"] == "demo-grammar"
    assert given.unsupported == [], "the caller's checklist is not changed"


def test_the_layout_repair_is_drawn_by_the_demo_controlnet_and_replays(demo_session, tmp_path):
    from agent.layout import RunPlanner
    from tools.demo import oracle, world

    backend = demo_session.backend()
    assert layout_control(demo_session, backend) == 1.0, "the demo model ships a layout ControlNet"
    prompts = world.prompt_set("position", 6)
    correct, inside = 0, 0
    for i, p in enumerate(prompts):
        checklist, _ = demo_session.checklist(p)
        planner = RunPlanner(checklist, width=64, height=64, prompt=p, layout_control=1.0)
        plan = planner.layout(seed=i)
        out = backend.compose(plan, locate=None)
        assert out.images_generated == 1 and all(pl["from"] == "control" for pl in out.placed)
        correct += oracle.check(out.image, p).correct
        found = oracle.read(out.image).objects
        for pl in out.placed:
            x0, y0, x1, y1 = pl["box"]
            inside += any(x0 - 2 <= o.cx <= x1 + 2 and y0 - 2 <= o.cy <= y1 + 2 for o in found)
    assert correct >= 5, f"{correct}/6 position prompts right with the layout drawn by the ControlNet"
    assert inside >= 11, f"{inside}/12 objects inside their planned boxes"
    recipe = {"mode": "compose", "plan": plan.to_json(), "placed": out.placed}
    assert np.array_equal(np.asarray(demo_session.replay(recipe)), np.asarray(out.image)), "replayed exactly"


def test_layout_repair_setting_picks_latent_composition_or_refuses_a_missing_controlnet(tmp_path):
    from agent.config import load_settings
    from agent.session import Session
    from agent.errors import ConfigError
    from tools.errors import InvalidInput

    def session(mode, model="demo"):
        return Session(load_settings(env={"IMAGENT_HOME": str(tmp_path), "IMAGENT_LAYOUT_REPAIR": mode},
                                     model=model, clip_model="demo", safety="off"))

    latent = session("latent")
    assert layout_control(latent, latent.backend()) is None

    class NoControl:
        model = "some/model"

        def has_control(self, kind):
            return False

    assert layout_control(session("auto"), NoControl()) is None
    with pytest.raises(InvalidInput, match="no layout ControlNet"):
        layout_control(session("control"), NoControl())
    with pytest.raises(ConfigError, match="IMAGENT_LAYOUT_REPAIR|layout_repair"):
        session("sometimes")


def _drawn(caption, objects, background="white"):
    """A demo image of hand-placed objects: [(colour, shape, cx, cy, size)]."""
    from tools.demo import world as W

    lay = W.Layout(W.parse(caption), [W.Placed(c, s, x, y, size, i) for i, (c, s, x, y, size) in enumerate(objects)])
    return W.draw(lay)


def test_two_touching_same_colour_objects_are_two_or_a_failed_count(demo_session):
    from agent.requirements import parse_checklist

    verifier = demo_session.verifier()
    # two red circles side by side, touching (centres one size apart)
    touching = _drawn("two red circles", [("red", "circle", 22, 32, 16), ("red", "circle", 38, 32, 16)])
    one = {v.id: v for v in verifier.verify(touching, parse_checklist("a red circle"))}
    assert one["o1"].passed is False or one["only"].passed is False, "two touching circles read as one"
    two = {v.id: v for v in verifier.verify(touching, parse_checklist("two red circles"))}
    assert two["o1"].evidence["count"] == 2 or two["o1"].passed is False


def test_a_diagonal_pair_is_not_met_and_the_relation_is_named(demo_session):
    """The generator's favourite miss: one object high in the middle, one low at a side. The old
    rule (a centre 2 px past the other on the named axis) said met; GenEval's says above."""
    from agent.requirements import parse_checklist

    verifier = demo_session.verifier()
    prompt = "a purple triangle right of a blue triangle"
    image = _drawn(prompt, [("purple", "triangle", 33, 17, 14), ("blue", "triangle", 20, 41, 14)])
    v = {x.id: x for x in verifier.verify(image, parse_checklist(prompt))}
    assert v["o1"].passed and v["o2"].passed, {k: x.evidence for k, x in v.items()}
    assert v["r1"].passed is False and "mostly above" in v["r1"].evidence["why"]
    assert v["r1"].evidence["y"] < -0.6 < 0.6 > v["r1"].evidence["x"]
