"""A conversation that follows up (offline mode, the shipped demo models): each message after a
picture edits its checklist and the loop repairs that picture; the oracle judges every picture."""
from __future__ import annotations

import pytest

from agent.chat import ChatController
from tools.demo import oracle
from tools.images import load_image
from tools.metadata import read_metadata


def picture(chat):
    return load_image(chat.state.image_path)


def boxes(image):
    return {(o.colour, o.shape): o.box for o in oracle.read(image).objects}


def iou(a, b):
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture()
def chat(demo_session):
    c = ChatController(demo_session)
    c.handle("/seed 3")
    assert c.mode == "router"
    return c


def test_each_follow_up_changes_the_picture_it_follows_and_keeps_the_rest(chat):
    chat.handle("a red circle")
    assert oracle.check(picture(chat), "a red circle", "strict").correct
    steps = [("add a blue square", "a red circle and a blue square", "+ a blue square"),
             ("make the circle orange", "an orange circle and a blue square", "red -> orange: the circle"),
             ("on a black background", "an orange circle and a blue square on a black background",
              "background: black"),
             ("remove the square", "an orange circle on a black background", "- a blue square")]
    for message, want, diff in steps:
        before = boxes(picture(chat))
        first = chat.state.image_id
        reply = chat.handle(message)
        assert reply.startswith("Changed the checklist:") and diff in reply, reply
        assert reply.index(diff) < reply.index("Made image"), "the diff comes before the picture"
        assert chat.state.image_id != first
        image = picture(chat)
        assert oracle.check(image, want, "strict").correct, (message, oracle.read(image))
        record = read_metadata(chat.state.image_path)["record"]
        assert record["followup"]["message"] == message and record["followup"]["from_image"] == first
        assert record["loop"]["met"] and record["loop"]["rounds"][0]["repair"] in ("edit", "layout")
        after = boxes(image)
        for key, box in before.items():  # what was not mentioned stays where it was
            if key in after and message != "make the circle orange":
                assert iou(box, after[key]) >= 0.5, (message, key)

    chat.handle("undo")
    assert oracle.check(picture(chat), "an orange circle and a blue square on a black background", "strict").correct
    assert "blue square" in chat.followups.current_checklist().get("holistic").text


def test_counts_and_relations_are_repaired_from_the_picture(chat):
    chat.handle("a red circle")
    chat.handle("make it three")
    assert oracle.check(picture(chat), "three red circles", "strict").correct
    chat.handle("new: a green triangle and a yellow square")
    assert oracle.check(picture(chat), "a green triangle and a yellow square", "strict").correct
    chat.handle("put the triangle below the square")
    assert oracle.check(picture(chat), "a green triangle below a yellow square", "strict").correct


def test_what_cannot_be_done_is_said_and_nothing_is_made(chat):
    chat.handle("a red circle")
    made = list(chat.state.images)
    reply = chat.handle("warmer light")
    assert "draws coloured shapes only" in reply and "nothing was made" in reply
    reply = chat.handle("remove the triangle")
    assert "no 'triangle'" in reply
    reply = chat.handle("make it wobble sideways")
    assert "could not read" in reply
    assert chat.state.images == made, "no picture was made for any of them"


def test_refine_on_the_demo_model_is_routed_or_refused_never_met_unchanged(chat):
    chat.handle("a red circle")
    made = list(chat.state.images)
    reply = chat.handle("/refine warmer light")
    assert "nothing was made" in reply and chat.state.images == made
    reply = chat.handle("/refine add a blue square")
    assert "+ a blue square" in reply
    assert oracle.check(picture(chat), "a red circle and a blue square", "strict").correct


def test_agent_mode_changes_the_picture_through_its_change_picture_tool(demo_session):
    from fakes import scripted

    model = scripted(("tool", "create_image", {"idea": "a red circle"}), "Made #1.",
                     ("tool", "change_picture", {"change": "add a blue square"}), "Added a blue square.")
    chat = ChatController(demo_session, chat_model=model)
    assert chat.mode == "agent"
    chat.handle("/seed 3")
    chat.handle("draw a red circle")
    first = chat.state.image_id
    chat.handle("now put a blue square in it")
    assert chat.state.image_id != first
    assert oracle.check(picture(chat), "a red circle and a blue square", "strict").correct
    record = read_metadata(chat.state.image_path)["record"]
    assert record["followup"]["diff"] == ["+ a blue square"]


def test_on_a_model_outside_the_demo_grammar_the_change_goes_into_the_idea(session):
    chat = ChatController(session)
    for command in ("/steps 1", "/rounds 1", "/candidates 1", "/seed 3"):
        chat.handle(command)
    chat.handle("a photo of a cat")
    reply = chat.handle("add a dog")
    assert "+ a dog" in reply
    assert chat.state.idea == "a photo of a cat, add a dog", "the new run asks for the change, not the old idea"
    record = read_metadata(chat.state.image_path)["record"]
    assert [r["text"] for r in record["loop"]["checklist"]["requirements"] if r["kind"] == "object"] == \
        ["a cat", "a dog"]
