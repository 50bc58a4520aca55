"""Running a follow-up, for every door (the chat, Session.follow_up, MCP, LangChain, HTTP), and
reading one with an LLM.

`prepare_follow_up` reads and checks a change against a picture's recorded checklist (words by
agent.followup's rules, or typed edits) and gives the run it needs; `follow_up` runs it from that
picture (the critique loop with `start`). `llm_followup` has a chat model read the words as typed
edits; the caller falls back to the rules when its answer does not hold.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from agent.errors import InvalidInput
from agent.followup import (EDIT_KINDS, Change, FollowUp, apply_changes, checklist_of_record, read_followup,
                            typed_changes)
from agent.requirements import caption_of
from tools.requirements import Checklist


def followup_run(current: Checklist, changes: list[Change], image_path, idea: str | None, options,
                 message: str = "", from_image=None):
    """(idea, RunOptions, diff) for repairing the picture at `image_path` toward `current` edited by
    `changes`: the loop starts from that picture and checks the edited checklist; diff [] = no change."""
    from agent.requests import RunOptions

    edited, diff = apply_changes(current, changes)
    extra = {**((options.extra if options else None) or {}),
             "followup": {"from_image": from_image if from_image is not None else str(image_path),
                          "message": message, "changes": [c.to_json() for c in changes], "diff": diff}}
    options = replace(options or RunOptions(), checklist=edited.to_json(), start=str(image_path), extra=extra)
    # the demo grammar says the edited checklist whole; elsewhere the idea goes on with the change's words
    words = message or "; ".join(diff)
    return caption_of(edited) or (f"{idea}, {words}" if idea else words), options, diff


@dataclass
class FollowUpResult:
    """What a follow-up did: how the change was read, the checklist's diff, and the run (None when
    nothing was made: a question back, a new idea, words the model does not draw, no change)."""

    reading: FollowUp
    diff: list[str]
    outcome: object = None

    def to_json(self) -> dict:
        return {"changes": [c.to_json() for c in self.reading.changes], "diff": self.diff,
                "question": self.reading.question, "new_idea": self.reading.new_idea, "note": self.reading.note or None,
                "run": self.outcome.to_json() if self.outcome is not None else None}


def prepare_follow_up(image_path, change, options=None, *, from_image=None):
    """A follow-up read and checked, not run: (FollowUpResult without a run, the idea its run takes or
    None when nothing is to be made, its RunOptions). InvalidInput for a bad image or change, the
    same as the run would raise, so a door can refuse at once."""
    from tools.metadata import read_metadata

    record = read_metadata(image_path).get("record") or {}
    current = checklist_of_record(record, record.get("idea"))
    if current is None or not current.objects():
        raise InvalidInput(f"'{image_path}' has no checklist to change.",
                           "Follow up on a picture imagent made from an idea (imagent run, the chat).", param="image")
    if isinstance(change, str):
        reading = read_followup(change, current)
        message = change
    else:
        reading = FollowUp(typed_changes(change, current))
        message = ""
    edits = [c for c in reading.changes if c.kind in EDIT_KINDS]
    if not edits or reading.question or reading.new_idea:
        return FollowUpResult(reading, []), None, None
    idea, options, diff = followup_run(current, edits, image_path, record.get("idea"), options, message, from_image)
    if not diff:
        return FollowUpResult(reading, []), None, None
    return FollowUpResult(reading, diff), idea, options


def follow_up(session, image_path, change, options=None, *, call=None, out_dir=None, chat_id=None,
              from_image=None) -> FollowUpResult:
    """Change the picture at `image_path` (an imagent PNG) by `change`: words ("make it orange") or
    typed edits (a list of Change or dicts), repaired from that picture by the critique loop."""
    result, idea, options = prepare_follow_up(image_path, change, options, from_image=from_image)
    if idea is not None:
        result.outcome = session.run(idea, options, call=call, out_dir=out_dir, chat_id=chat_id)
    return result


# -- an LLM reads the follow-up (structured output: typed edits), the rules when it cannot ---------------
LLM_FOLLOWUP = (
    "You edit the checklist of the picture the user is looking at. Its objects, by id: {objects}; "
    "background: {background}. Read the user's message as a list of edits: add (value: the new objects "
    "in words, e.g. 'a blue square'), remove (target: an object id), recolour (target, value: the new "
    "colour), recount (target, value: the new count), background (value: the colour), relate (target, "
    "other: object ids, value: left of | right of | above | below), words (value: style or lighting "
    "words), upscale, undo, or new (value: the words of a new picture). Answer JSON only, e.g. "
    '{{"edits": [{{"kind": "recolour", "target": "o1", "value": "orange"}}]}}.')


def llm_followup(message: str, checklist: Checklist, chat_model, method: str | None = None
                 ) -> tuple[FollowUp | None, str]:
    """The message read by an LLM as typed edits: (FollowUp, "") or (None, why it failed). Its edits
    are checked like any typed edits (typed_changes); the caller falls back to read_followup."""
    from pydantic import BaseModel, Field

    from agent.llm import bind_structured, short_error, structured_call

    class Edit(BaseModel):
        kind: str = Field(..., max_length=20)
        target: str = Field("", max_length=20)
        other: str = Field("", max_length=20)
        value: str = Field("", max_length=200)

    class Edits(BaseModel):
        """The user's message as edits of the current picture's checklist."""
        edits: list[Edit] = Field(..., min_length=1, max_length=6)

    objects = ", ".join(f"{o.id} = {o.text}" for o in checklist.objects()) or "none"
    bg = next((r.value for r in checklist.requirements if r.kind == "background"), "not said")
    system = LLM_FOLLOWUP.format(objects=objects, background=bg)
    try:
        out, problem, _ = structured_call(bind_structured(chat_model, Edits, method), Edits,
                                          [("system", system), ("human", message)])
        if out is None:
            return None, problem
        items = [e.model_dump() for e in out.edits]
        new = next((e["value"] for e in items if e["kind"] == "new" and e["value"].strip()), None)
        if new:
            return FollowUp(new_idea=new.strip()), ""
        plain = [Change(e["kind"], value=e["value"]) for e in items if e["kind"] in ("words", "upscale", "undo")]
        return FollowUp(typed_changes([e for e in items if e["kind"] not in ("words", "upscale", "undo")], checklist)
                        + plain), ""
    except InvalidInput as exc:
        return None, exc.message
    except Exception as exc:  # junk, refusals, timeouts: the rules still read it
        return None, f"{type(exc).__name__}: {short_error(exc)[:120]}"
