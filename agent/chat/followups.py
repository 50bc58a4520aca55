"""The chat's follow-ups: after a picture, a plain message changes that picture (agent.followup).

`FollowUps(controller).turn(text)` reads the message against the current picture's checklist: a
change runs the loop from the current picture toward the edited checklist (the reply shows the
checklist's diff first, then the picture); "undo", "bigger" and "new: ..." do what they say; a
change of words the model never draws (lighting on the demo model) is said, not reported as met;
a message that is neither gets one question back. No picture yet: the message is a new idea.
"""
from __future__ import annotations

from agent.chat import replies
from agent.followup import Change, FollowUp, checklist_of_record, read_followup
from agent.followup_run import followup_run, llm_followup

DEMO_DRAWS = ("The demo model draws coloured shapes only: their colours, shapes, counts, places and the "
              "background")


class FollowUps:
    def __init__(self, controller):
        self.c = controller

    def current_checklist(self):
        c = self.c
        if not c.state.image_path:
            return None
        _, record = c._image(None)
        return checklist_of_record(record, c.state.idea)

    def read(self, text: str) -> FollowUp:
        """The message against the current checklist: by the chat's LLM where it has one (typed
        edits), by the rules where it has none or its answer does not hold (with a notice)."""
        current = self.current_checklist()
        if current is None:
            return FollowUp(new_idea=text)
        model = self.c.chat_model_for_followups()
        if model is not None:
            reading, problem = llm_followup(text, current, model)
            if reading is not None:
                return reading
            self.c.say("notice", f"The LLM could not read the change ({problem}); read it by rules.")
        return read_followup(text, current)

    def turn(self, text: str) -> str:
        c = self.c
        if not c.state.image_path:
            return c.create(text)
        fu = self.read(text)
        if fu.new_idea:
            reply = c.create(fu.new_idea)
            return f"{fu.note}\n\n{reply}" if fu.note else reply
        if fu.question:
            return fu.question
        kinds = {ch.kind for ch in fu.changes}
        if "undo" in kinds:
            return c.undo()
        if "upscale" in kinds:
            return c.upscale()
        if kinds == {"words"}:
            return self.words(text)
        return self.apply(text, fu.changes)

    def words(self, text: str) -> str:
        """Style, lighting or mood words: refined into the prompt where the model reads them; on the
        demo model nothing it draws would change, so nothing is made."""
        c = self.c
        if c.is_demo():
            return (f"{DEMO_DRAWS}; '{text}' would change nothing it draws, so nothing was made. Say what "
                    "to change in those terms (\"make it orange\", \"on a black background\"), or use a real "
                    "model (--model) for lighting and style words.")
        return c.refine(text)

    def apply(self, text: str, changes: list[Change]) -> str:
        c = self.c
        idea, options, diff = followup_run(self.current_checklist(), changes, c.state.image_path, c.state.idea,
                                           None, text, c.state.image_id)
        if not diff:
            return "That is what the picture already asks for; nothing was changed."
        c._checkpoint(f"follow-up: {text}")
        c.say("tool", "follow-up: " + "; ".join(diff))
        reply = c._run(idea, spec=None, seed=c.state.seed if c.state.defaults.seed is None else None,
                       checklist=options.checklist, start=options.start, extra=options.extra,
                       hint=replies.FOLLOW_UP_HINT)
        repairs = [r.get("repair", "") for r in c.state.rounds]
        return replies.diff_text(diff, repairs) + "\n\n" + reply
