"""Every input limit of imagent, written once: what check_request, the loop, the action input models, the chat and batch enforce.

A limit names its parameter the way every front door calls it (`steps`, `count`, `candidates`),
so `--steps 600`, `/steps 600` and an MCP call with `steps=600` get the same message; the CLI
adds its flag at its own boundary (agent.cli), from the error's `param`.

    check_range("steps", 600)     # InvalidInput("steps 600 is out of range.", "Use 1 to 500 steps.", param="steps")
    Field(None, **bounds("steps"))  # the same range in a pydantic input model (and its JSON schema)
"""
from __future__ import annotations

from dataclasses import dataclass

from tools.errors import InvalidInput

PROMPT_CHARS = 4000      # a prompt or negative prompt
IDEA_CHARS = 2000        # a rough idea (expansion, the loop, the chat)
IDEA_WORDS = 300
PATH_CHARS = 4096        # an image or mask path
MAX_LORAS = 8
MAX_CONTROLS = 4
REQUIRE_CHARS = 400      # one requirement in words (--require, /require)
MAX_REQUIRE = 8          # requirements added to one run's checklist
MAX_DROP = 16            # requirements dropped from one run's checklist
MAX_REQUIREMENTS = 32    # requirements in a checklist given whole
MAX_CHANGES = 8          # typed edits in one follow-up (a follow-up in words: IDEA_CHARS, as the chat's)
SEED_LIMIT = 2**63       # seeds are 0 <= seed < SEED_LIMIT


@dataclass(frozen=True)
class Limit:
    low: float
    high: float
    unit: str = ""
    low_open: bool = False    # low itself is not allowed (strength > 0)
    high_open: bool = False

    def contains(self, value) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def text(self) -> str:
        lo = f"above {_number(self.low)}" if self.low_open else _number(self.low)
        hi = f"below {_number(self.high)}" if self.high_open else _number(self.high)
        return f"{lo} to {hi}" + (f" {self.unit}" if self.unit else "")


def _number(x) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


LIMITS: dict[str, Limit] = {
    "steps": Limit(1, 500, "steps"),
    "cfg": Limit(0.0, 50.0, "(guidance scale; 7 is typical)"),
    "count": Limit(1, 64, "images"),
    "width": Limit(16, 4096, "pixels"),
    "height": Limit(16, 4096, "pixels"),
    "seed": Limit(0, SEED_LIMIT - 1, "(or -1 for a random seed)"),
    "strength": Limit(0.0, 1.0, "(0.3 keeps most of the image, 1 replaces it)", low_open=True),
    "refiner_switch": Limit(0.0, 1.0, "(0.8: the base model makes 80% of the steps)", low_open=True, high_open=True),
    "rounds": Limit(1, 10, "rounds"),
    "candidates": Limit(1, 8, "images per round"),
    "scale": Limit(2, 4, "times"),
}


def out_of_range(name: str, value) -> InvalidInput:
    """The error for `name` = `value` outside its limit: one wording for every front door."""
    return InvalidInput(f"{name} {value} is out of range.", f"Use {LIMITS[name].text()}.", param=name)


def check_range(name: str, value):
    """`value`, or out_of_range(name, value) when it is outside LIMITS[name]."""
    if not LIMITS[name].contains(value):
        raise out_of_range(name, value)
    return value


def bounds(name: str) -> dict:
    """LIMITS[name] as pydantic Field keywords (ge/le, or gt/lt for open ends)."""
    limit = LIMITS[name]
    return {("gt" if limit.low_open else "ge"): limit.low, ("lt" if limit.high_open else "le"): limit.high}
