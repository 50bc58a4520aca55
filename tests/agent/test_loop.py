"""The critique loop: revision when scores are low, stop when high, safety on every round."""
from __future__ import annotations

import json

import numpy as np
import pytest
from fakes import FakeSafety

from agent.errors import Cancelled, InvalidInput, SafetyBlocked
from agent.session import Session
from tools.images import load_image
from tools.metadata import read_metadata


class ScriptedScorer:
    """Returns scripted scores per call (one list per round), so the loop's decisions are exact."""

    formula = "clipscore"
    model_id = "scripted"

    def __init__(self, per_round):
        self.per_round = list(per_round)
        self.calls = []

    def score(self, images, text):
        self.calls.append(text)
        scores = self.per_round.pop(0)
        assert len(scores) == len(images)
        return scores


def make_session(settings, tiny_backend, scorer, safety=None):
    return Session(settings, backend=tiny_backend, scorer=scorer, safety=safety)


FIELDS = dict(steps=2, seed=10)


def test_low_scores_cause_a_revision_and_high_scores_stop(settings, tiny_backend):
    scorer = ScriptedScorer([[0.2, 0.3], [0.5, 1.9], [2.0, 2.0]])
    session = make_session(settings, tiny_backend, scorer)
    out = session.run("two red circles", rounds=3, candidates=2, threshold=1.5, threshold_mode="absolute",
                      request_fields=FIELDS)
    assert [r["round"] for r in out.rounds] == [1, 2], "stops as soon as the threshold is met"
    first, second = out.rounds
    assert first["change"] == "initial prompt" and second["change"].startswith("failed items first")
    assert second["repair"] == "prompt" and first["failed"] == ["two red circles"]
    assert second["prompt"].startswith("(two red circles:") and second["prompt"] != first["prompt"]
    assert second["cfg"] == first["cfg"], "no blanket guidance rise (measured harmful)"
    assert first["seeds"] == [10, 11] and second["seeds"] == [12, 13], "fresh seeds every round"
    assert out.met and out.best.seed == 13 and out.score == 1.9
    assert out.stop_reason == "threshold met in round 2"
    assert scorer.calls == ["two red circles", "two red circles"], "scored against the intent"


def test_high_score_in_first_round_means_no_revision(settings, tiny_backend):
    session = make_session(settings, tiny_backend, ScriptedScorer([[2.2, 0.1]]))
    out = session.run("a blue square", rounds=4, candidates=2, threshold=1.0, threshold_mode="absolute",
                      request_fields=FIELDS)
    assert len(out.rounds) == 1 and out.best.seed == 10


def test_best_across_rounds_is_kept_when_threshold_never_met(settings, tiny_backend):
    session = make_session(settings, tiny_backend, ScriptedScorer([[0.4, 1.2], [0.3, 0.2], [0.9, 1.0]]))
    out = session.run("a cat", rounds=3, candidates=2, threshold=2.4, threshold_mode="absolute",
                      request_fields=FIELDS)
    assert len(out.rounds) == 3 and not out.met and out.stop_reason.startswith("rounds exhausted")
    assert out.failed == ["a cat"], "the failing requirement is named"
    assert out.best.seed == 11 and out.score == 1.2


def test_rounds_recorded_in_gallery_and_png_and_best_reruns_identically(settings, tiny_backend, tmp_path):
    session = make_session(settings, tiny_backend, ScriptedScorer([[0.1, 0.2], [0.3, 0.25]]))
    out = session.run("a green triangle", rounds=2, candidates=2, threshold=2.0, threshold_mode="absolute",
                      request_fields=FIELDS, out_dir=tmp_path)
    stored = session.gallery.rounds(out.run_id)
    assert [r["round"] for r in stored] == [1, 2] and stored[1]["scores"] == [0.3, 0.25]
    run = session.gallery.run(out.run_id)
    assert run["status"] == "done" and run["result"]["best"]["seed"] == out.best.seed
    record = read_metadata(out.best.path)["record"]
    assert record["idea"] == "a green triangle" and len(record["loop"]["rounds"]) == 2
    assert record["loop"]["threshold"]["mode"] == "absolute"
    assert session.gallery.image(out.best.image_id)["score"] == pytest.approx(0.3)
    again = session.rerun(out.best.path, out_dir=tmp_path).images[0]
    assert np.array_equal(np.asarray(load_image(out.best.path)), np.asarray(load_image(again.path)))


def test_relative_threshold_says_what_it_is_relative_to(settings, tiny_backend):
    session = make_session(settings, tiny_backend, ScriptedScorer([[0.8, 0.7]]))
    out = session.run("a cat", rounds=1, candidates=2, threshold=0.5, request_fields=FIELDS)
    t = out.threshold
    assert t["mode"] == "relative" and t["value"] == 0.5 and t["reference_source"]
    assert t["target"] == pytest.approx(0.5 * t["reference"], abs=1e-3)


def test_blocked_images_are_never_saved(settings, tiny_backend, tmp_path):
    session = make_session(settings, tiny_backend, ScriptedScorer([]), safety=FakeSafety(image="nudity"))
    with pytest.raises(SafetyBlocked) as info:
        session.run("a cat", rounds=2, candidates=2, request_fields=FIELDS, out_dir=tmp_path)
    assert info.value.category == "nudity"
    assert not list(tmp_path.glob("*.png"))
    assert session.gallery.count_images() == 0
    assert session.gallery.runs(limit=1)[0]["status"] == "failed"


def test_every_prompt_and_image_is_checked_exactly_once(settings, tiny_backend, tmp_path):
    checker = FakeSafety()  # allows everything and counts what it was asked to check
    session = make_session(settings, tiny_backend, ScriptedScorer([[0.1, 0.2], [0.3, 0.1]]), safety=checker)
    out = session.run("a cat", rounds=2, candidates=2, threshold=2.0, threshold_mode="absolute",
                      raw=True, request_fields=FIELDS, out_dir=tmp_path)
    assert checker.images == 4  # 2 rounds x 2 candidates; the saved best is not checked again
    first, second = (r["prompt"] for r in out.rounds)
    assert first == "a cat" and second != first
    assert checker.prompts == ["a cat", first, second]  # the idea, then each round's prompt once
    assert out.best.record["safety"]["level"] == "strict"


def test_blocked_prompt_stops_before_generating(settings, tiny_backend):
    session = make_session(settings, tiny_backend, ScriptedScorer([]), safety=FakeSafety(prompt="violence", image="nudity"))
    with pytest.raises(SafetyBlocked) as info:
        session.run("a cat", rounds=2, candidates=2, request_fields=FIELDS)
    assert info.value.category == "violence"
    assert session.gallery.runs() == []


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(rounds=0), "rounds 0"), (dict(candidates=-1), "candidates -1"), (dict(candidates=0), "candidates 0"),
    (dict(threshold=-0.1), "threshold -0.1"), (dict(threshold=3.0, threshold_mode="absolute"), "threshold 3.0"),
    (dict(threshold_mode="sideways"), "threshold mode"),
])
def test_bad_loop_options_rejected_up_front(settings, tiny_backend, kwargs, fragment):
    session = make_session(settings, tiny_backend, ScriptedScorer([]))
    with pytest.raises(InvalidInput, match=fragment):
        session.run("a cat", request_fields=FIELDS, **kwargs)
    assert session.gallery.runs() == []


def test_cancel_stops_between_steps(settings, tiny_backend):
    scorer = ScriptedScorer([[0.1, 0.1]] * 3)
    session = make_session(settings, tiny_backend, scorer)

    from agent.events import Call, Step

    call = Call()

    def sink(event):
        if isinstance(event, Step) and event.done >= 1:
            call.stop()

    call.sink = sink
    with pytest.raises(Cancelled):
        session.run("a cat", rounds=3, candidates=2, request_fields=FIELDS, call=call)
    assert session.gallery.runs(limit=1)[0]["status"] == "cancelled"


def test_llm_reviser_uses_the_models_spec_and_falls_back_on_junk(settings, tiny_backend):
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    good = json.dumps({"subject": "two large red circles", "style": "flat", "negatives": ["blur"]})
    model = FakeListChatModel(responses=[good])
    session = make_session(settings, tiny_backend, ScriptedScorer([[0.1, 0.1], [0.2, 0.2]]))
    out = session.run("two red circles", rounds=2, candidates=2, threshold=2.0, threshold_mode="absolute",
                      request_fields=FIELDS, reviser="llm", chat_model=model)
    assert "two large red circles" in out.rounds[1]["prompt"]
    assert out.rounds[1]["change"].startswith("llm")

    junk = FakeListChatModel(responses=["not json at all"])
    session = make_session(settings, tiny_backend, ScriptedScorer([[0.1, 0.1], [0.2, 0.2]]))
    out = session.run("two red circles", rounds=2, candidates=2, threshold=2.0, threshold_mode="absolute",
                      request_fields=FIELDS, reviser="llm", chat_model=junk)
    assert out.rounds[1]["change"].startswith("failed items first")
    assert any("LLM revision failed" in w for w in out.warnings)


def test_run_from_an_edited_spec_generates_it_but_scores_against_the_idea(settings, tiny_backend):
    scorer = ScriptedScorer([[2.0, 2.0]])
    session = make_session(settings, tiny_backend, scorer)
    spec = {"subject": "two red circles", "lighting": "warm light", "negatives": ["blur"]}
    out = session.run("red circles", rounds=1, candidates=2, threshold=1.0, threshold_mode="absolute",
                      request_fields=dict(FIELDS, negative_prompt="noise"), spec=spec)
    first = out.rounds[0]
    assert first["prompt"].startswith("two red circles") and "warm light" in first["prompt"]
    assert "blur" in first["negative"] and "noise" in first["negative"]
    assert scorer.calls == ["red circles"]
    assert out.spec["lighting"] == "warm light"
