"""What the session's actions return: saved images, generation, run and upscale outcomes, as data with their JSON."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class SavedImage:
    path: Path
    seed: int
    image_id: int
    record: dict


@dataclass
class GenerationOutcome:
    run_id: str
    images: list[SavedImage]
    blocked: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"run_id": self.run_id,
                "images": [{"path": str(s.path), "seed": s.seed, "image_id": s.image_id, **_summary(s.record)}
                           for s in self.images],
                "blocked": self.blocked, "warnings": self.warnings, "timings": self.timings}


@dataclass
class RunOutcome:
    """The result of `Session.run`: the best image, every round, and how the threshold was set."""

    run_id: str
    best: SavedImage
    score: float
    spec: dict
    rounds: list[dict]
    threshold: dict
    met: bool
    stop_reason: str
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    checklist: dict = field(default_factory=dict)
    checks: list[dict] = field(default_factory=list)     # the best image's verdict per requirement
    images: int = 0                                       # diffusion samples spent

    @property
    def failed(self) -> list[str]:
        return [c["text"] for c in self.checks if c.get("passed") is False]

    def to_json(self) -> dict:
        return {"run_id": self.run_id, "best": {"path": str(self.best.path), "seed": self.best.seed,
                                                "image_id": self.best.image_id, "score": self.score},
                "met": self.met, "stop_reason": self.stop_reason, "failed": self.failed,
                "checks": self.checks, "checklist": self.checklist, "images_generated": self.images,
                "threshold": self.threshold, "spec": self.spec, "rounds": self.rounds,
                "warnings": self.warnings, "timings": self.timings, "record": _summary(self.best.record)}


def _summary(record: dict) -> dict:
    keep = ("model", "backend", "fallback", "width", "height", "scheduler", "params", "idea", "spec", "safety", "post")
    return {k: record[k] for k in keep if k in record}


@dataclass
class UpscaleOutcome:
    run_id: str
    path: Path
    image_id: int
    record: dict

    def to_json(self) -> dict:
        r = self.record
        return {"run_id": self.run_id, "path": str(self.path), "image_id": self.image_id, "width": r["width"],
                "height": r["height"], "upscale": r["upscale"], "safety": r["safety"], "timings": r.get("timings", {})}


@dataclass(frozen=True)
class RoundRow:
    """One row of the loop's round table, read once from a round's record (agent.loop.RoundRecord
    JSON, as runs return it and the gallery keeps it); front ends lay the cells out their way."""

    round: int
    repair: str
    change: str
    seeds: tuple
    scores: tuple            # None for a blocked candidate
    best_score: float | None
    checks: tuple | None     # (passed, total) of the round's best, with a verifier
    failed: tuple
    seconds: float | None

    @classmethod
    def of(cls, r: dict) -> "RoundRow":
        b = r.get("best_checks") or {}
        return cls(round=r.get("round"), repair=r.get("repair") or "-", change=r.get("change") or "",
                   seeds=tuple(r.get("seeds") or ()), scores=tuple(r.get("scores") or ()),
                   best_score=r.get("best_score"), checks=(b["passed"], b["total"]) if b else None,
                   failed=tuple(r.get("failed") or ()), seconds=r.get("seconds"))

    def scores_text(self, digits: int = 2, sep: str = ", ", blocked: str = "blocked") -> str:
        return sep.join(blocked if s is None else f"{s:.{digits}f}" for s in self.scores)

    def best_text(self, digits: int = 2) -> str:
        return "-" if self.best_score is None else f"{self.best_score:.{digits}f}"

    def checks_text(self) -> str:
        return f"{self.checks[0]}/{self.checks[1]}" if self.checks else "-"
