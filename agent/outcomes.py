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
