"""The safety policy: the checker per level (off | standard | strict) that runs the prompt and image checks.

Contract: a checker has `level`, `check_prompt(text) -> Verdict` and `check_image(image) -> Verdict`.
`build_checker(level)` makes the checker for a policy level (off | standard | strict). The session
calls both checks on every path; a model never decides whether they run.

Prompt check (in this order, the first block wins), on the normalised words of the prompt
(`tools.safety_text`):
  1. the blocklist `prompts/safety/blocklist.json` (`tools.safety_prompt.Blocklist`);
  2. the offline naive-Bayes text classifier (`tools.safety_prompt.PromptClassifier`, retrain:
     `python -m tools.safety train`); it blocks when P(unsafe) reaches the level's threshold.

Negative prompts are not checked, by decision: a negative prompt names what must stay out of the
image, so a user who writes "nudity, gore" there is asking for a safer image and must not be
blocked; the session passes only positive prompts (and ideas) to `check_prompt`. The residual risk,
a negative prompt that steers towards unsafe content ("clothes, clothing"), is left to the image
check, which runs on every image whatever the prompts said. `check_negative_prompt(text)` states
this in code: it allows every text, at every level.

Image check (`tools.safety_images`): open_nsfw, which blocks when P(nsfw) reaches the level's
threshold, then the Stable Diffusion safety checker where its weights are present locally.
`Verdict.scores` carries `nsfw` (the open_nsfw probability) and, for prompts, `unsafe`.
The parts' public names are importable from here too.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image

from tools.errors import InvalidInput
from tools.safety_images import (SD_CHECKER_ENV, SD_CHECKER_HUB_ID, OpenNSFW, SDSafetyChecker,
                                 find_sd_safety_checker)
from tools.safety_prompt import (Blocklist, PromptClassifier, features, read_examples, split_spans, train,
                                 train_prompt_classifier)
from tools.safety_text import normalize, normalize_tokens, words

__all__ = ["LEVELS", "NSFW_THRESHOLD", "PROMPT_THRESHOLD", "SD_CHECKER_ENV", "SD_CHECKER_HUB_ID", "Verdict",
           "ALLOWED", "NoChecks", "PolicyChecker", "build_checker", "Blocklist", "PromptClassifier", "features",
           "read_examples", "split_spans", "train", "train_prompt_classifier", "normalize", "normalize_tokens",
           "words", "OpenNSFW", "SDSafetyChecker", "find_sd_safety_checker"]

LEVELS = ("off", "standard", "strict")

# Thresholds per level. open_nsfw's authors read < 0.2 as safe and > 0.8 as NSFW.
NSFW_THRESHOLD = {"standard": 0.8, "strict": 0.4}
PROMPT_THRESHOLD = {"standard": 0.9, "strict": 0.7}


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    category: str | None = None
    reason: str | None = None
    scores: dict[str, float] = field(default_factory=dict)


ALLOWED = Verdict(True)


class NoChecks:
    """Policy level 'off': everything passes (the user chose this explicitly)."""

    level = "off"

    def check_prompt(self, text: str) -> Verdict:
        return ALLOWED

    def check_image(self, image: Image.Image) -> Verdict:
        return ALLOWED

    def check_negative_prompt(self, text: str) -> Verdict:
        return ALLOWED


# -- the checker ---------------------------------------------------------------------------------
class PolicyChecker:
    """Levels 'standard' and 'strict': blocklist + classifier on prompts; open_nsfw (+ SD checker) on images."""

    def __init__(self, level: str, *, blocklist: Blocklist | None = None,
                 classifier: PromptClassifier | None = None, nsfw: OpenNSFW | None = None,
                 sd_checker: SDSafetyChecker | None | bool = None, home=None):
        if level not in ("standard", "strict"):
            raise InvalidInput(f"Unknown safety level '{level}'.", "Use off, standard or strict.")
        self.level = level
        # home: the settings' home, whose prompts/safety/ may override the word list and the classifier
        self.blocklist = blocklist or Blocklist.load(home=home)
        self.classifier = classifier or PromptClassifier.load(home=home)
        self.nsfw = nsfw or OpenNSFW()
        self.nsfw_threshold = NSFW_THRESHOLD[level]
        self.prompt_threshold = PROMPT_THRESHOLD[level]
        if sd_checker is None:  # look for local weights once; False means 'do not use'
            path = find_sd_safety_checker()
            sd_checker = SDSafetyChecker(path) if path else False
        self.sd_checker = sd_checker or None
        self.notes = [] if self.sd_checker else ["Stable Diffusion safety checker: weights not present locally, skipped"]

    def check_prompt(self, text: str) -> Verdict:
        hit = self.blocklist.match(text, self.level)
        if hit:
            return Verdict(False, hit[0], hit[1])
        probs = self.classifier.predict(text)
        unsafe = 1.0 - probs.get("safe", 0.0)
        scores = {"unsafe": round(unsafe, 4)}
        if unsafe >= self.prompt_threshold:
            category = max((k for k in probs if k != "safe"), key=probs.get)
            return Verdict(False, category, f"the prompt classifier rates it {unsafe:.2f} unsafe, most likely "
                                            f"{category} (threshold {self.prompt_threshold} at {self.level})", scores)
        return Verdict(True, scores=scores)

    def check_negative_prompt(self, text: str) -> Verdict:
        """Negative prompts are not checked (see the module docstring): unsafe words there keep
        unsafe content out of the image. The image check stays the last line."""
        return ALLOWED

    def check_image(self, image: Image.Image) -> Verdict:
        p = self.nsfw_probability(image)
        scores = {"nsfw": round(p, 4)}
        if p >= self.nsfw_threshold:
            return Verdict(False, "sexual", f"open_nsfw rates the image {p:.2f} NSFW "
                                            f"(threshold {self.nsfw_threshold} at {self.level})", scores)
        if self.sd_checker is not None:
            flagged = self.sd_checker.flagged(image)
            scores["sd_safety_checker"] = 1.0 if flagged else 0.0
            if flagged:
                return Verdict(False, "sexual", "the Stable Diffusion safety checker flagged the image", scores)
        return Verdict(True, scores=scores)

    def nsfw_probability(self, image: Image.Image) -> float:
        return self.nsfw.nsfw_probability(image)


def build_checker(level: str, **kwargs):
    """The checker for a policy level: 'off' (no checks), 'standard' or 'strict'.

    Keyword arguments (blocklist, classifier, nsfw, sd_checker) replace the default parts; `home`
    (the settings' home) is where the user's prompts/safety/ overrides are read from.
    Data files load now (small); the image models load on the first image.
    """
    if level == "off":
        return NoChecks()
    if level not in LEVELS:
        raise InvalidInput(f"Unknown safety level '{level}'.", "Use off, standard or strict.")
    return PolicyChecker(level, **kwargs)


if __name__ == "__main__":  # python -m tools.safety train [TRAIN_TSV] [OUT_JSON]
    import sys

    if len(sys.argv) >= 2 and sys.argv[1] == "train":
        print(train(*(sys.argv[2:4])))
    else:
        print("usage: python -m tools.safety train [TRAIN_TSV] [OUT_JSON]", file=sys.stderr)
        sys.exit(2)
