"""The batch's output folder: records.jsonl (RecordLog), the options, and batch.json's manifest checked on resume.

agent.batch re-exports every name here.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from agent.batch_lines import Sweep
from agent.errors import InvalidInput

RECORDS = "records.jsonl"
MANIFEST = "batch.json"


# -- the record log -------------------------------------------------------------------------------
class RecordLog:
    """records.jsonl: one JSON record per finished item, each line appended, flushed and fsynced."""

    def __init__(self, path: Path):
        self.path = path

    def load(self) -> dict[str, dict]:
        """key -> record for the lines already written. A torn last line (a kill mid-write) is cut off."""
        if not self.path.exists():
            return {}
        done: dict[str, dict] = {}
        data = self.path.read_bytes()
        good = 0
        for raw in data.splitlines(keepends=True):
            try:
                rec = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                break
            if not raw.endswith(b"\n"):
                break
            good += len(raw)
            if isinstance(rec, dict) and "key" in rec:
                done[rec["key"]] = rec
        if good < len(data):
            with open(self.path, "r+b") as fh:
                fh.truncate(good)
                fh.flush()
                os.fsync(fh.fileno())
        return done

    def append(self, record: dict) -> None:
        line = json.dumps(record, default=str, ensure_ascii=False) + "\n"
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())

    def rewrite(self, records: list[dict]) -> None:
        """Replace the file atomically with `records` (used to drop error records before retrying)."""
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            for rec in records:
                fh.write(json.dumps(rec, default=str, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)


# -- options and the manifest --------------------------------------------------------------------
@dataclass
class BatchOptions:
    loop: bool = False
    rounds: int = 3
    candidates: int = 2
    threshold: float | None = None
    threshold_mode: str = "relative"
    style: str | None = None
    expand: bool = False
    negative: str = ""
    steps: int | None = None
    cfg: float | None = None
    size: str | None = None
    scheduler: str | None = None
    score: bool = False
    lora: tuple[str, ...] = ()       # for every line, before the line's own
    speed: dict = field(default_factory=dict)   # speed and memory options for every line (GenerateRequest fields)

    def manifest(self) -> dict:
        out = asdict(self)
        out.pop("speed")  # the images stay the same: a batch may resume with other speed options
        if not out["lora"]:
            out.pop("lora")  # as batches made before LoRAs recorded it, so they still resume
        else:
            out["lora"] = list(out["lora"])
        return out


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_manifest(out: Path) -> dict | None:
    """The batch.json in `out` (what a batch there was started with), or None when there is none
    or it cannot be read. `imagent batch --resume` takes the options left out from it."""
    try:
        manifest = json.loads((Path(out) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def open_batch(input_path: Path, out: Path, *, fmt: str, sweep: Sweep, options: BatchOptions, resume: bool,
               retry_errors: bool = False, extra: dict | None = None) -> tuple[RecordLog, dict[str, dict]]:
    """Prepare the output folder; on resume check the manifest and load the finished records.
    `extra`: more entries for a new batch.json that a resume does not compare (the CLI's --limit
    and model options, which `imagent batch --resume` reuses when they are left out)."""
    out.mkdir(parents=True, exist_ok=True)
    log = RecordLog(out / RECORDS)
    manifest = {"input": str(Path(input_path).resolve()), "sha256": file_digest(input_path), "format": fmt,
                "sweep": {k: list(v) if v else None for k, v in asdict(sweep).items()},
                "options": options.manifest()}
    mpath = out / MANIFEST
    if log.path.exists() and log.path.stat().st_size:
        if not resume:
            raise InvalidInput(f"{out} already holds a batch ({log.path.name}).",
                               "Pass --resume to continue it, or --out NEWDIR to start another.")
        old = read_manifest(out) or {}
        diffs = [k for k in ("sha256", "format", "sweep", "options") if old.get(k) != manifest[k]]
        if diffs:
            what = {"sha256": "the input file changed", "format": "the format differs",
                    "sweep": "the sweep differs", "options": "the options differ"}
            said = [what[d] + _which(old.get(d), manifest[d]) for d in diffs]
            raise InvalidInput(f"Cannot resume the batch in {out}: {', '.join(said)} (see {mpath}).",
                               "Resume with the same file and options (options left out are the batch's own), "
                               "or use --out NEWDIR.")
        done = log.load()
        if retry_errors:
            errors = [k for k, r in done.items() if r.get("status") != "ok"]
            for k in errors:
                done.pop(k)
            if errors:
                log.rewrite(list(done.values()))
        return log, done
    tmp = mpath.with_suffix(".tmp")
    tmp.write_text(json.dumps({**manifest, **(extra or {}), "created": _now()}, indent=2))
    os.replace(tmp, mpath)
    return log, {}


def _which(recorded, given) -> str:
    """' (seeds: [1, 2] in the batch, [3] now)' for the entries of a sweep or options that differ."""
    if not isinstance(recorded, dict) or not isinstance(given, dict):
        return ""
    keys = [k for k in dict.fromkeys([*recorded, *given]) if recorded.get(k) != given.get(k)]
    return " (" + "; ".join(f"{k}: {recorded.get(k)!r} in the batch, {given.get(k)!r} now" for k in keys) + ")"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
