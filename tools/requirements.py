"""Requirements: what an image must show, one checkable item each, and the verdict on each.

A prompt becomes a checklist (`agent.requirements` writes it): each object with its count and
attributes, each relation between two objects, the background, whether anything else may
appear, and the holistic score. A verifier (`tools.verify`) reads an image against the
checklist and returns one `RequirementVerdict` per item, with its evidence. Plain data, JSON
round-trip, no models here.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

KINDS = ("object", "relation", "background", "exclusive", "holistic")
RELATIONS = ("left of", "right of", "above", "below", "next to")


@dataclass(frozen=True)
class Requirement:
    """One checkable item.

    - object: `noun` (e.g. "circle", "cat"), `count` (exact; None = at least one), `attributes`
      (e.g. ("red",)); id "o1", "o2", ...
    - relation: `subject` `relation` `object`, where subject/object are object ids
    - background: `value` (e.g. "black")
    - exclusive: nothing but the listed objects (closed worlds like the demo one)
    - holistic: the whole image against the prompt (CLIP), with a floor
    """

    id: str
    kind: str
    text: str
    noun: str = ""
    count: int | None = None
    attributes: tuple[str, ...] = ()
    relation: str = ""
    subject: str = ""
    object: str = ""
    value: str = ""

    def to_json(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if v not in ("", None, ())}
        if self.attributes:
            d["attributes"] = list(self.attributes)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Requirement":
        d = dict(d)
        d["attributes"] = tuple(d.get("attributes") or ())
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    @property
    def phrase(self) -> str:
        """The object as a detector query: attributes then noun ("red circle")."""
        return " ".join((*self.attributes, self.noun)).strip()


@dataclass
class Checklist:
    """The requirements of one prompt, and what the model cannot draw (said before generating)."""

    requirements: list[Requirement]
    source: str = "parser"            # parser | demo-grammar | llm:MODEL | edited
    unsupported: list[str] = field(default_factory=list)

    def objects(self) -> list[Requirement]:
        return [r for r in self.requirements if r.kind == "object"]

    def get(self, rid: str) -> Requirement | None:
        return next((r for r in self.requirements if r.id == rid), None)

    def to_json(self) -> dict:
        return {"source": self.source, "requirements": [r.to_json() for r in self.requirements],
                **({"unsupported": list(self.unsupported)} if self.unsupported else {})}

    @classmethod
    def from_json(cls, d: dict) -> "Checklist":
        return cls([Requirement.from_json(r) for r in d.get("requirements", [])], d.get("source", "parser"),
                   list(d.get("unsupported") or []))


@dataclass
class Box:
    """A detected object: pixel box (x0, y0, x1, y1), the detector's score and what was read."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float
    noun: str = ""
    attribute: str = ""

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        return self.x0, self.y0, self.x1, self.y1

    @property
    def cx(self) -> float:
        return (self.x0 + self.x1) / 2

    @property
    def cy(self) -> float:
        return (self.y0 + self.y1) / 2

    def to_json(self) -> dict:
        return {"box": [round(self.x0, 1), round(self.y0, 1), round(self.x1, 1), round(self.y1, 1)],
                "score": round(self.score, 3), **({"noun": self.noun} if self.noun else {}),
                **({"attribute": self.attribute} if self.attribute else {})}


@dataclass
class RequirementVerdict:
    id: str
    kind: str
    passed: bool | None               # None: cannot be checked by this verifier
    confidence: float
    evidence: dict = field(default_factory=dict)
    text: str = ""

    def to_json(self) -> dict:
        return {"id": self.id, "kind": self.kind, "text": self.text, "passed": self.passed,
                "confidence": round(self.confidence, 3), "evidence": self.evidence}


def summarize(verdicts: list[RequirementVerdict]) -> dict:
    """Counts and the failing items, as shown in round tables."""
    failed = [v.id for v in verdicts if v.passed is False]
    unknown = [v.id for v in verdicts if v.passed is None]
    return {"passed": sum(1 for v in verdicts if v.passed), "total": len(verdicts), "failed": failed,
            "unchecked": unknown}
