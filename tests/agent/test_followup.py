"""Follow-ups read as typed changes of the current checklist (agent.followup), offline, by rules."""
from __future__ import annotations

import pytest

from agent.followup import Change, apply_changes, read_followup
from agent.requirements import caption_of, parse_checklist

CASES = [  # (the picture's idea, the follow-up, the diff, the edited checklist as a caption)
    ("a red circle", "add a blue square", ["+ a blue square"], "a red circle and a blue square"),
    ("a red circle", "also two yellow triangles", ["+ two yellow triangles"], "a red circle and two yellow triangles"),
    ("two green triangles", "make them orange", ["green -> orange: the triangles"], "two orange triangles"),
    ("a red circle and a blue square", "make the circle orange", ["red -> orange: the circle"],
     "an orange circle and a blue square"),
    ("a red circle and a blue square", "turn the red circle green", ["red -> green: the circle"],
     "a green circle and a blue square"),
    ("a blue circle", "on a black background", ["background: black"], "a blue circle on a black background"),
    ("a blue circle on a gray background", "make the background white", ["background: gray -> white"],
     "a blue circle on a white background"),
    ("a red circle", "make it three", ["count 1 -> 3: red circles"], "three red circles"),
    ("two red circles", "one more", ["count 2 -> 3: red circles"], "three red circles"),
    ("a red circle and a blue square", "remove the square", ["- a blue square"], "a red circle"),
    ("a red circle left of a blue square", "delete the circle", ["- a red circle",
                                                                 "- a red circle left of a blue square"], "a blue square"),
    ("a red circle and a blue square", "put the red circle left of the blue square",
     ["+ a red circle left of a blue square"], "a red circle left of a blue square"),
    ("a red circle left of a blue square", "move the circle above the square",
     ["- a red circle left of a blue square", "+ a red circle above a blue square"], "a red circle above a blue square"),
]


@pytest.mark.parametrize("idea,message,diff,caption", CASES)
def test_each_kind_of_follow_up_edits_the_checklist_as_said(idea, message, diff, caption):
    checklist = parse_checklist(idea)
    fu = read_followup(message, checklist)
    assert fu.changes and not fu.question and not fu.new_idea, fu
    edited, got = apply_changes(checklist, fu.changes)
    assert got == diff
    assert caption_of(edited) == caption
    assert edited.source.endswith("+edited") and checklist.source == "demo-grammar", "the old one is not changed"
    assert edited.get("holistic").text == caption


@pytest.mark.parametrize("message,kind", [("undo", "undo"), ("bigger", "upscale"), ("upscale it", "upscale"),
                                          ("warmer light", "words"), ("more cinematic", "words")])
def test_undo_bigger_and_style_words_are_their_own_changes(message, kind):
    assert [c.kind for c in read_followup(message, parse_checklist("a red circle")).changes] == [kind]


def test_a_new_scene_is_a_new_idea_and_the_other_reading_is_said():
    cl = parse_checklist("a red circle")
    assert read_followup("new: two blue squares", cl).new_idea == "two blue squares"
    assert read_followup("now a yellow triangle on black", cl).new_idea == "a yellow triangle on a black background"
    fu = read_followup("a blue square", cl)
    assert fu.new_idea == "a blue square" and "add a blue square" in fu.note
    assert read_followup("a cat coding at night", cl).new_idea == "a cat coding at night"


def test_an_ambiguous_or_impossible_change_gets_one_question():
    two = parse_checklist("two red circles and a blue square")
    q = read_followup("make it orange", two).question
    assert q and "'two red circles' or 'a blue square'" in q
    q = read_followup("remove the triangle", parse_checklist("a red circle")).question
    assert q and "no 'triangle'" in q and "a red circle" in q
    q = read_followup("make it wobble sideways", parse_checklist("a red circle")).question
    assert q and "add a blue square" in q


def test_a_count_above_one_drops_the_relation_between_single_objects():
    cl = parse_checklist("a red circle left of a blue square")
    edited, diff = apply_changes(cl, [Change("recount", target="o1", value="2")])
    assert [r.kind for r in edited.requirements].count("relation") == 0
    assert diff[0] == "count 1 -> 2: red circles" and "relation is between single objects" in diff[1]


def test_the_python_api_follows_up_on_a_picture_in_words_or_typed_edits(demo_session, tmp_path):
    from agent.errors import InvalidInput
    from tools.demo import oracle
    from tools.images import load_image

    first = demo_session.run("a red circle", request_fields={"seed": 3}, out_dir=tmp_path)
    out = demo_session.follow_up(first.best.image_id, "add a blue square", out_dir=tmp_path)
    assert out.diff == ["+ a blue square"] and out.outcome.met
    assert oracle.check(load_image(out.outcome.best.path), "a red circle and a blue square", "strict").correct
    assert out.to_json()["run"]["checklist"]["source"] == "demo-grammar+edited"

    typed = demo_session.follow_up(out.outcome.best.path, [{"kind": "recolour", "target": "o1", "value": "orange"}],
                                   out_dir=tmp_path)
    assert typed.diff == ["red -> orange: the circle"]
    assert oracle.check(load_image(typed.outcome.best.path), "an orange circle and a blue square", "strict").correct

    asked = demo_session.follow_up(first.best.path, "make it wobble")
    assert asked.outcome is None and asked.reading.question
    with pytest.raises(InvalidInput, match="not an object of the picture's checklist"):
        demo_session.follow_up(first.best.path, [{"kind": "remove", "target": "o7"}])
    with pytest.raises(InvalidInput, match="Unknown change kind"):
        demo_session.follow_up(first.best.path, [{"kind": "explode", "target": "o1"}])


def test_an_llm_reads_a_follow_up_as_typed_edits_and_junk_falls_back_to_the_rules():
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage

    from agent.followup_run import llm_followup

    cl = parse_checklist("a red circle and a blue square")

    def model(*answers):
        return GenericFakeChatModel(messages=iter([AIMessage(content=a) for a in answers]))

    fu, problem = llm_followup("the round one should be orange", cl,
                               model('{"edits": [{"kind": "recolour", "target": "o1", "value": "orange"}]}'),
                               method="plain")
    assert problem == "" and fu.changes == [Change("recolour", target="o1", value="orange")]
    assert apply_changes(cl, fu.changes)[1] == ["red -> orange: the circle"]
    fu, problem = llm_followup("draw me a new one: two green squares", cl,
                               model('{"edits": [{"kind": "new", "value": "two green squares"}]}'), method="plain")
    assert fu.new_idea == "two green squares"
    for junk in ("no JSON here", '{"edits": [{"kind": "remove", "target": "o9"}]}', '{"edits": []}'):
        fu, problem = llm_followup("remove it", cl, model(junk), method="plain")
        assert fu is None and problem, junk


def test_an_addition_can_be_said_without_a_verb():
    fu = read_followup("a yellow square as well", parse_checklist("a green circle"))
    assert fu.changes == [Change("add", value="a yellow square")]
    assert read_followup("two blue circles too", parse_checklist("a green circle")).changes[0].value == "two blue circles"
