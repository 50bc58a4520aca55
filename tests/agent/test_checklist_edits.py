"""The user corrects the checklist: --require TEXT and --drop ID on the CLI, `require`/`drop`/`checklist`
on MCP and HTTP, /require and /drop in the chat; one function (agent.checklist_edits.edit_checklist) for all.
The edited checklist is the one checked, recorded in the PNG, and kept by rerun."""
from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from agent.cli import main
from agent.errors import InvalidInput
from agent.checklist_edits import checklist_from, edit_checklist
from agent.requirements import parse_checklist
from tools.metadata import read_metadata

IDEA = "a red circle left of a blue square"           # o1, o2, r1, only, holistic (demo grammar)
DROP_WORDS = "drop 'o9': the checklist has no such requirement."
REQUIRE_WORDS = "require 'the': nothing in it can be checked."


def cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def ids(items) -> list[str]:
    return [r["id"] if isinstance(r, dict) else r.id for r in items]


def test_drop_takes_an_objects_relations_along_and_require_adds_fresh_ids():
    base = parse_checklist(IDEA)
    dropped, notes = edit_checklist(base, drop=["o2"])
    assert ids(dropped.requirements) == ["o1", "only", "holistic"]
    assert notes == ["Dropping o2 (a blue square) dropped r1 (a red circle left of a blue square) too, "
                     "which refers to it."]
    assert dropped.source == "demo-grammar+edited" and ids(base.requirements) == ["o1", "o2", "r1", "only", "holistic"]

    by_number, _ = edit_checklist(base, drop=["3"])  # the number `imagent expand` prints: r1
    assert ids(by_number.requirements) == ["o1", "o2", "only", "holistic"]

    added, notes = edit_checklist(base, drop=["o2"], require=["a green triangle above a yellow square"])
    assert ids(added.requirements) == ["o1", "o3", "o4", "r2", "only", "holistic"], "never an id the checklist had"
    rel = added.get("r2")
    assert (rel.subject, rel.relation, rel.object) == ("o3", "above", "o4") and notes[1:] == []

    reused, _ = edit_checklist(parse_checklist("a red circle and a blue square"), require=[IDEA])
    assert ids(reused.requirements) == ["o1", "o2", "r1", "only", "holistic"], "the same objects: the relation alone"
    assert (reused.get("r1").subject, reused.get("r1").object) == ("o1", "o2")


@pytest.mark.parametrize("edit, words", [
    ({"drop": ["o9"]}, DROP_WORDS),
    ({"drop": ["holistic"]}, "drop 'holistic': the whole-image score cannot be dropped"),
    ({"require": ["the"]}, REQUIRE_WORDS),
    ({"require": ["two red circles"]}, "require 'two red circles': two red circles contradicts o1 (a red circle)."),
])
def test_a_bad_edit_is_one_clear_error_that_names_what_there_is(edit, words):
    with pytest.raises(InvalidInput) as info:
        edit_checklist(parse_checklist(IDEA), **edit)
    assert info.value.message.startswith(words) and info.value.param in {"drop", "require"}
    if "drop" in edit and edit["drop"] == ["o9"]:
        assert "1=o1, 2=o2, 3=r1, 4=only" in info.value.hint
    if edit.get("require") == ["the"]:
        assert "a red circle left of a blue square" in info.value.hint, "says what the parser reads"


def test_a_checklist_given_whole_is_checked_and_its_texts_written():
    cl = checklist_from([{"id": "o1", "kind": "object", "noun": "circle", "count": 2, "attributes": ["red"]},
                         {"id": "o2", "kind": "object", "noun": "square", "count": 1, "attributes": ["blue"]},
                         {"id": "r1", "kind": "relation", "relation": "above", "subject": "o1", "object": "o2"}])
    assert [r.text for r in cl.requirements] == ["two red circles", "a blue square", "two red circles above a blue square"]
    with pytest.raises(InvalidInput, match="a relation needs one of"):
        checklist_from([{"id": "r1", "kind": "relation", "relation": "above", "subject": "o1", "object": "o2"}])
    with pytest.raises(InvalidInput, match="the ids repeat"):
        checklist_from([{"id": "o1", "kind": "object", "noun": "cat"}, {"id": "o1", "kind": "object", "noun": "dog"}])


def test_expand_previews_the_edited_checklist(capsys):
    code, out, err = cli(capsys, "expand", IDEA, "--drop", "r1", "--require", "on a black background", "--json")
    checklist = json.loads(out)["checklist"]
    assert code == 0 and checklist["source"] == "demo-grammar+edited"
    assert ids(checklist["requirements"]) == ["o1", "o2", "bg", "only", "holistic"]
    code, out, err = cli(capsys, "expand", IDEA)
    assert "   3  r1       relation   a red circle left of a blue square" in out, "numbered, with the ids"


def test_cli_run_require_and_drop_change_the_verdicts_and_the_record_and_rerun_keeps_them(capsys, tmp_path):
    code, out, err = cli(capsys, "run", IDEA, "--rounds", "1", "--candidates", "1", "--seed", "2", "--safety", "off",
                         "--drop", "r1", "--require", "on a white background", "--out", str(tmp_path), "--json")
    assert code == 0, err
    run = json.loads(out)
    assert ids(run["checklist"]["requirements"]) == ["o1", "o2", "bg", "only", "holistic"]
    assert ids(run["checks"]) == ["o1", "o2", "bg", "only", "holistic"], "r1 is not checked; bg is"
    assert next(c for c in run["checks"] if c["id"] == "bg")["evidence"]["read"], "the background was read"
    path = run["best"]["path"]
    record = read_metadata(path)["record"]
    assert record["loop"]["checklist"] == run["checklist"] and record["loop"]["checklist"]["source"] == \
        "demo-grammar+edited"
    assert ids(record["loop"]["checks"]) == ids(run["checks"])

    code, out, err = cli(capsys, "rerun", path, "--out", str(tmp_path / "again"), "--json")
    again = json.loads(out)
    assert code == 0 and again["identical"] is True, err
    assert read_metadata(again["images"][0]["path"])["record"]["checklist"] == run["checklist"], \
        "the rerun keeps the edited checklist, not a derived one"


def test_bad_edits_read_the_same_on_the_cli_and_over_mcp(capsys, tmp_path, demo_session):
    mcp = pytest.importorskip("mcp")
    from agent.capabilities import PathPolicy
    from agent.mcp_server import build_server

    for flag, value, words in (("--drop", "o9", DROP_WORDS), ("--require", "the", REQUIRE_WORDS)):
        code, out, err = cli(capsys, "run", IDEA, "--rounds", "1", "--candidates", "1", "--safety", "off",
                             flag, value, "--out", str(tmp_path))
        assert code == 2 and out == "" and f"imagent: error: {words}" in err and f"(option {flag})" in err
    assert not list(tmp_path.rglob("*.png")), "nothing was generated"

    app = build_server(demo_session, PathPolicy.confined(tmp_path / "in", tmp_path / "out"))

    def call(args):
        async def go():
            async with mcp.Client(app.server) as client:
                return await client.call_tool("run", {"idea": IDEA, "rounds": 1, "candidates": 1, "seed": 2, **args})
        return asyncio.run(go())
    try:
        for args, words in (({"drop": ["o9"]}, DROP_WORDS), ({"require": ["the"]}, REQUIRE_WORDS)):
            bad = call(args)
            assert bad.is_error and bad.structured_content["error"]["message"].startswith(words), bad.content
        given = [{"id": "o1", "kind": "object", "noun": "circle", "count": 1, "attributes": ["red"]},
                 {"id": "o2", "kind": "object", "noun": "square", "count": 1, "attributes": ["blue"]}]
        ran = call({"checklist": given, "require": ["on a white background"]})
        assert not ran.is_error, ran.content
        result = ran.structured_content
        assert result["checklist"]["source"] == "given+edited"
        assert ids(result["checks"]) == ["o1", "o2", "bg", "holistic"], "the given checklist, edited, is checked"
    finally:
        app.close()


def test_http_runs_take_the_checklist_fields_and_refuse_a_bad_edit_at_once(settings, tiny_backend, tiny_scorer):
    from agent.server import make_app, serving_in_thread
    from agent.session import Session

    session = Session(settings, backend=tiny_backend, scorer=tiny_scorer)
    given = [{"id": "o1", "kind": "object", "noun": "circle", "count": 2, "attributes": ["red"]}]
    with serving_in_thread(make_app(session)) as url:
        for body, words in (({"checklist": given, "drop": ["o9"]}, "drop 'o9': the checklist has no such"),
                            ({"require": ["the"]}, REQUIRE_WORDS)):
            r = httpx.post(f"{url}/v1/runs", json={"idea": "two red circles", **body})
            assert r.status_code == 400 and r.json()["error"]["message"].startswith(words), r.text
        r = httpx.post(f"{url}/v1/runs", json={"idea": "two red circles", "rounds": 1, "candidates": 1, "seed": 5,
                                               "steps": 2, "checklist": given, "require": ["a blue square"]})
        assert r.status_code == 202, r.text
        job = r.json()
        for _ in range(600):
            status = httpx.get(job["url"]).json()
            if status["status"] not in {"queued", "running"}:
                break
            time.sleep(0.1)
    assert status["status"] == "done", status
    assert ids(status["result"]["checklist"]["requirements"]) == ["o1", "o2"]
    assert session.gallery.count_images() == 1, "the refused requests made nothing"


def test_chat_require_and_drop_change_the_next_runs_checklist(demo_session):
    from agent.chat import ChatController

    chat = ChatController(demo_session)
    with pytest.raises(InvalidInput, match="no idea yet"):
        chat.handle("/drop o2")
    for command in ("/rounds 1", "/candidates 1", "/seed 2"):
        chat.handle(command)
    chat.handle(IDEA)
    assert ids(chat.state.checks) == ["o1", "o2", "r1", "only", "holistic"]

    reply = chat.handle("/drop r1")
    assert "`r1`" not in reply and "`o2` object: a blue square" in reply and "demo-grammar+edited" in reply
    reply = chat.handle("/require on a white background")
    assert "3. `bg` background: on a white background" in reply
    chat.handle("/undo")
    assert "bg" not in json.dumps(chat.state.checklist), "/undo takes the last edit back"
    chat.handle("/require on a white background")
    with pytest.raises(InvalidInput) as info:
        chat.handle("/drop o9")
    assert info.value.message == DROP_WORDS

    chat.handle("/run")
    assert ids(chat.state.checks) == ["o1", "o2", "bg", "only", "holistic"], "the next run checks the edit"
    assert chat.state.rounds[0]["prompt"] == "a red circle and a blue square on a white background", \
        "the demo model is asked for the edited checklist, not the old idea"
    record = read_metadata(chat.state.image_path)["record"]
    assert ids(record["loop"]["checklist"]["requirements"]) == ["o1", "o2", "bg", "only", "holistic"]

    chat.handle("two red circles")  # a new idea: its own checklist
    assert chat.state.checklist is None and ids(chat.state.checks) == ["o1", "only", "holistic"]
    assert "/require" in chat.handle("/help") and "/drop" in chat.handle("/help")


def test_a_required_object_is_asked_for_and_drawn_not_only_checked(demo_session, tmp_path):
    """--require must change the picture: the demo model reads only its grammar, so the edited
    checklist becomes its prompt; the oracle finds the added object in the best image."""
    from tools.demo import oracle
    from tools.images import load_image

    found = 0
    for seed in range(3):
        out = demo_session.run("a red circle", rounds=2, candidates=1, raw=True, require=("a blue square",),
                               request_fields={"seed": seed}, out_dir=tmp_path)
        assert out.rounds[0]["prompt"] == "a red circle and a blue square"
        pairs = oracle.read(load_image(out.best.path)).pairs()
        found += ("blue", "square") in pairs and ("red", "circle") in pairs
        if out.met:
            assert ("blue", "square") in pairs, "met, but the required square is not there"
    assert found >= 2
