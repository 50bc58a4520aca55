"""Unattended batch runs: read ideas from a file, sweep parameters, write images plus one JSONL
record per image, and resume an interrupted batch without redoing or duplicating anything.

Input formats (chosen by the file's extension, or `fmt`):
  .txt (anything else)  one idea per line; blank lines and lines starting with '#' are skipped.
  .jsonl / .ndjson      one JSON object per line: "idea" (expanded in loop mode, or with a style)
                        or "prompt" (used exactly as written), plus any of: negative, seed, steps,
                        cfg, size ("512x512") or width/height, scheduler, style, rounds,
                        candidates, threshold, id (your own label, recorded).
  .tsv                  a header row with a column named prompt or idea (case-insensitive);
                        columns named like the JSONL keys are used as parameters, the others are
                        kept as `meta` in the records. PartiPrompts.tsv (Prompt, Category,
                        Challenge, Note) reads as is.

Sweeps (`seeds`, `cfgs`, `steps`) form a grid: every line runs once per combination. An item's
key is its line number plus the sweep point ("L12", "L12/seed=3/cfg=7.5"); records are appended
to `records.jsonl` (one JSON object a line, flushed and fsynced), so a killed batch resumes
from the keys already written. `batch.json` in the output folder records the input and the
options; resuming with different ones is refused (they would mean other items).

Modes: plain generation (default; one image per item, the idea as written unless a style or
`expand` asks for expansion) or the critique loop (`loop=True`: Session.run with rounds and
candidates, the best image per item, its scores and round table in the record).
A failing item (bad parameters, a blocked prompt, a backend error) becomes an error record and
the batch goes on; `retry_errors` redoes those on resume. Errors no item could survive (a missing
model, bad settings) stop the batch instead, so that a resume after the fix does those items.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agent.capabilities import error_payload
from agent.errors import Cancelled, ConfigError, InvalidInput, ModelNotFound
from agent.session import Session
from tools.adapters import controls_from_specs, merge_loras, parse_lora
from tools.generate import GenerateRequest, parse_size
from tools.metadata import read_metadata

RECORDS = "records.jsonl"
MANIFEST = "batch.json"
FORMATS = ("txt", "jsonl", "tsv")
MAX_GRID = 100_000
FATAL = (ModelNotFound, ConfigError)  # errors that would fail every item: they stop the batch


# -- input ----------------------------------------------------------------------------------------
class LineParams(BaseModel):
    """The parameters one input line may carry (JSONL keys, TSV columns)."""

    model_config = ConfigDict(extra="forbid")

    idea: str | None = Field(None, min_length=1, max_length=4000)
    prompt: str | None = Field(None, min_length=1, max_length=4000)
    negative: str = Field("", max_length=4000)
    seed: int | None = Field(None, ge=0, lt=2**63)
    steps: int | None = Field(None, ge=1, le=500)
    cfg: float | None = Field(None, ge=0.0, le=50.0)
    size: str | None = None
    width: int | None = None
    height: int | None = None
    scheduler: str | None = None
    style: str | None = None
    rounds: int | None = Field(None, ge=1, le=10)
    candidates: int | None = Field(None, ge=1, le=8)
    threshold: float | None = None
    lora: list[str] = Field([], max_length=8)      # 'PATH_OR_NAME[:WEIGHT]'; one string is one LoRA
    control: list[str] = Field([], max_length=4)   # 'KIND:IMAGE[:SCALE]'
    id: str | int | None = None

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data):
        if isinstance(data, dict) and "negative_prompt" in data and "negative" not in data:
            data = {**data, "negative": data.pop("negative_prompt")}
        if isinstance(data, dict):
            for key in ("lora", "control"):
                if isinstance(data.get(key), str):
                    data = {**data, key: [data[key]] if data[key].strip() else []}
        return data

    @model_validator(mode="after")
    def _text(self):
        if (self.idea is None) == (self.prompt is None):
            raise ValueError("give exactly one of 'idea' or 'prompt'")
        return self


@dataclass
class Line:
    """One input line: its number in the file, its raw fields, or why it could not be read."""

    number: int
    fields: dict
    meta: dict = field(default_factory=dict)
    error: str | None = None


def detect_format(path: Path, fmt: str | None = None) -> str:
    if fmt:
        if fmt not in FORMATS:
            raise InvalidInput(f"Unknown batch format '{fmt}'.", f"Use one of: {', '.join(FORMATS)}.")
        return fmt
    suffix = path.suffix.lower()
    return {".jsonl": "jsonl", ".ndjson": "jsonl", ".tsv": "tsv"}.get(suffix, "txt")


def read_lines(path: str | Path, fmt: str | None = None) -> tuple[str, list[Line]]:
    """(format, lines) of a batch input file. Unreadable lines come back with `.error` set."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"The batch file '{path}' does not exist.", "Check the path.")
    fmt = detect_format(path, fmt)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidInput(f"The batch file '{path}' is not UTF-8 text.", "Save it as UTF-8.") from None
    rows = text.splitlines()
    lines: list[Line] = []
    if fmt == "txt":
        for n, row in enumerate(rows, 1):
            if row.strip() and not row.lstrip().startswith("#"):
                lines.append(Line(n, {"idea": row.strip()}))
    elif fmt == "jsonl":
        for n, row in enumerate(rows, 1):
            if not row.strip() or row.lstrip().startswith("#"):
                continue
            try:
                obj = json.loads(row)
            except json.JSONDecodeError as exc:
                lines.append(Line(n, {}, error=f"line {n} is not valid JSON ({exc.msg} at column {exc.colno})"))
                continue
            if not isinstance(obj, dict):
                lines.append(Line(n, {}, error=f"line {n} is not a JSON object"))
                continue
            lines.append(Line(n, obj))
    else:
        lines = _read_tsv(path, rows)
    return fmt, lines


def _read_tsv(path: Path, rows: list[str]) -> list[Line]:
    if not rows:
        return []
    header = [_unquote(h).strip() for h in rows[0].split("\t")]
    lower = [h.lower() for h in header]
    text_col = next((c for c in ("prompt", "idea") if c in lower), None)
    if text_col is None:
        raise InvalidInput(f"The TSV file '{path}' has no 'prompt' or 'idea' column (header: {', '.join(header)}).",
                           "Add a header row whose prompt column is named 'prompt'.")
    known = set(LineParams.model_fields) | {"negative_prompt"}
    out = []
    for n, row in enumerate(rows[1:], 2):
        if not row.strip():
            continue
        cells = [_unquote(c) for c in row.split("\t")]
        cells += [""] * (len(header) - len(cells))
        fields, meta = {}, {}
        for name, low, value in zip(header, lower, cells):
            if low == text_col:
                fields["idea"] = value.strip()
            elif low in known:
                if value.strip():
                    fields[low] = _number(value.strip())
            elif value.strip():
                meta[low] = value.strip()
        out.append(Line(n, fields, meta=meta, error=None if fields.get("idea") else f"line {n} has an empty prompt"))
    return out


def _unquote(cell: str) -> str:
    if len(cell) >= 2 and cell[0] == cell[-1] == '"':
        return cell[1:-1].replace('""', '"')
    return cell


def _number(value: str):
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


# -- sweeps ---------------------------------------------------------------------------------------
def parse_ints(text: str | None, what: str) -> list[int] | None:
    """'1-4,7' -> [1, 2, 3, 4, 7]."""
    if text is None:
        return None
    out: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part[1:]:
                a, b = part.split("-", 1) if not part.startswith("-") else (part, "")
                lo, hi = int(a), int(b)
                if hi < lo or hi - lo > MAX_GRID:
                    raise ValueError
                out.extend(range(lo, hi + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise InvalidInput(f"--{what} '{text}' is not a list of integers.",
                           f"Write it like --{what} 1-4 or --{what} 1,5,9.") from None
    return list(dict.fromkeys(out))


def parse_floats(text: str | None, what: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return list(dict.fromkeys(float(x) for x in text.split(",") if x.strip()))
    except ValueError:
        raise InvalidInput(f"--{what} '{text}' is not a list of numbers.", f"Write it like --{what} 5,7.5.") from None


@dataclass(frozen=True)
class Sweep:
    seeds: tuple[int, ...] | None = None
    cfgs: tuple[float, ...] | None = None
    steps: tuple[int, ...] | None = None

    def points(self) -> list[dict]:
        axes = [(k, v) for k, v in (("seed", self.seeds), ("cfg", self.cfgs), ("steps", self.steps)) if v]
        return [dict(zip([k for k, _ in axes], combo)) for combo in itertools.product(*[v for _, v in axes])]


def item_key(line: int, point: dict) -> str:
    return "/".join([f"L{line}", *(f"{k}={_fmt(v)}" for k, v in point.items())])


def image_name(key: str) -> str:
    """The batch image's file name for an item key: 'L12/seed=3/cfg=7.5' -> 'L12_seed=3_cfg=7.5.png'."""
    return re.sub(r"[^A-Za-z0-9=._-]", "_", key.replace("/", "_")) + ".png"


def _fmt(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


@dataclass
class Item:
    key: str
    line: Line
    point: dict


def plan(lines: list[Line], sweep: Sweep) -> list[Item]:
    points = sweep.points() or [{}]
    if len(lines) * len(points) > MAX_GRID:
        raise InvalidInput(f"The batch has {len(lines)} lines x {len(points)} sweep points, over {MAX_GRID} items.",
                           "Split the file or sweep fewer values.")
    return [Item(item_key(line.number, p), line, p) for line in lines for p in points]


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


# -- running --------------------------------------------------------------------------------------
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


def open_batch(input_path: Path, out: Path, *, fmt: str, sweep: Sweep, options: BatchOptions, resume: bool,
               retry_errors: bool = False) -> tuple[RecordLog, dict[str, dict]]:
    """Prepare the output folder; on resume check the manifest and load the finished records."""
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
        try:
            old = json.loads(mpath.read_text())
        except (OSError, json.JSONDecodeError):
            old = {}
        diffs = [k for k in ("sha256", "format", "sweep", "options") if old.get(k) != manifest[k]]
        if diffs:
            what = {"sha256": "the input file changed", "format": "the format differs",
                    "sweep": "the sweep differs", "options": "the options differ"}
            raise InvalidInput(f"Cannot resume the batch in {out}: {', '.join(what[d] for d in diffs)} "
                               f"(see {mpath}).", "Resume with the same file and options, or use --out NEWDIR.")
        done = log.load()
        if retry_errors:
            errors = [k for k, r in done.items() if r.get("status") != "ok"]
            for k in errors:
                done.pop(k)
            if errors:
                log.rewrite(list(done.values()))
        return log, done
    tmp = mpath.with_suffix(".tmp")
    tmp.write_text(json.dumps({**manifest, "created": _now()}, indent=2))
    os.replace(tmp, mpath)
    return log, {}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def item_request_fields(session: Session, item: Item, options: BatchOptions) -> tuple[LineParams, dict]:
    """Validate an item's line and merge it with the options and the sweep point -> request fields."""
    if item.line.error:
        raise InvalidInput(f"{item.line.error[0].upper()}{item.line.error[1:]}.", "Fix the line and resume.")
    try:
        p = LineParams.model_validate(item.line.fields)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc']) or 'line'}: {e['msg']}" for e in exc.errors())
        raise InvalidInput(f"Line {item.line.number} has bad parameters: {problems}.",
                           "Fix the line (known keys: " + ", ".join(LineParams.model_fields) + ") and resume.") from None
    s = session.settings
    width = height = None
    size = p.size or options.size
    if size:
        width, height = parse_size(size)
    width, height = p.width or width, p.height or height
    fields = dict(negative_prompt=p.negative or options.negative,
                  steps=item.point.get("steps") or p.steps or options.steps,   # None: the model's default
                  cfg=item.point.get("cfg", p.cfg if p.cfg is not None else options.cfg),
                  seed=item.point.get("seed", p.seed), width=width, height=height,
                  scheduler=p.scheduler or options.scheduler or s.scheduler,
                  loras=merge_loras(parse_lora(x) for x in [*options.lora, *p.lora]),
                  controls=controls_from_specs(p.control), **options.speed)
    return p, fields


def run_item(session: Session, item: Item, options: BatchOptions, images_dir: Path) -> dict:
    """One item -> its record (raises ImagentError for the caller to record as an error)."""
    p, fields = item_request_fields(session, item, options)
    text = p.prompt or p.idea
    style = p.style or options.style
    base = {"key": item.key, "line": item.line.number, "idea": text, "sweep": item.point}
    if p.id is not None:
        base["id"] = p.id
    if item.line.meta:
        base["meta"] = item.line.meta
    tag = {"key": item.key, "line": item.line.number}  # in the image's record: found again after a kill
    if options.loop:
        raw = p.prompt is not None
        outcome = session.run(text, rounds=p.rounds or options.rounds, candidates=p.candidates or options.candidates,
                              threshold=p.threshold if p.threshold is not None else options.threshold,
                              threshold_mode=options.threshold_mode,
                              style=None if raw else style, raw=raw, request_fields=fields, out_dir=images_dir,
                              extra={"batch": tag})
        best = outcome.best
        best.path = settle_image(session, best.path, best.image_id, images_dir / image_name(item.key))
        params = best.record.get("params", {})
        return {**base, "status": "ok", "prompt": params.get("prompt"), "negative_prompt": params.get("negative_prompt"),
                "params": params, **made_by(best.record), "seed": best.seed, "path": str(best.path),
                "image_id": best.image_id, "run_id": outcome.run_id, **loop_fields(best.record["loop"]),
                "timings": dict(outcome.timings)}
    idea = spec = extra = None
    prompt = text
    if p.idea is not None and (style or options.expand):
        exp = session.expand(p.idea, style=style, negative=fields["negative_prompt"])
        prompt, idea, spec = exp.positive, exp.idea, exp.spec.model_dump(mode="json")
        fields["negative_prompt"], extra = exp.negative, {"expansion": exp.record()}
    extra = {**(extra or {}), "batch": tag}
    outcome = session.generate(GenerateRequest(prompt=prompt, count=1, **fields), idea=idea, spec=spec, extra=extra,
                               out_dir=images_dir, kind="batch")
    saved = outcome.images[0]
    saved.path = settle_image(session, saved.path, saved.image_id, images_dir / image_name(item.key))
    record = {**base, "status": "ok", "prompt": prompt, "negative_prompt": fields["negative_prompt"],
              "params": saved.record.get("params"), **made_by(saved.record), "seed": saved.seed,
              "path": str(saved.path), "image_id": saved.image_id, "run_id": outcome.run_id, "score": None,
              "scores": None, "rounds": None, "timings": dict(outcome.timings)}
    if outcome.warnings:
        record["warnings"] = outcome.warnings
    if options.score:
        scored = session.score([saved.path], text)
        record["score"], record["scores"] = scored["scores"][0], {"formula": scored["formula"],
                                                                  "model": scored["model"],
                                                                  "cosine": scored["cosine"][0]}
    return record


def made_by(record: dict) -> dict:
    """The backend that made an item's image and, after a fallback chain passed over others, why."""
    return {"backend": record.get("backend"), **({"fallback": record["fallback"]} if record.get("fallback") else {})}


def loop_fields(loop: dict) -> dict:
    """A loop-mode record's loop entries, from the best image's `loop` record (the same whether the
    item ran now or is recovered from its PNG after a kill)."""
    rounds = loop.get("rounds") or []
    return {"score": loop.get("score"), "scores": [r.get("scores") for r in rounds], "rounds": rounds,
            "threshold": loop.get("threshold"), "met": loop.get("met")}


def settle_image(session: Session, path: Path, image_id: int | None, target: Path) -> Path:
    """Move a finished item's PNG to its deterministic name (`image_name`) and point its gallery row there.
    The rename is atomic, so a PNG under that name is always complete (see `recover_item`)."""
    path = Path(path)
    if path.resolve() != target.resolve():
        os.replace(path, target)
    if image_id is not None:
        session.gallery.set_image_path(image_id, target)
    return target


def _png_record(path: Path) -> dict | None:
    try:
        return read_metadata(path)["record"]
    except Exception:  # not ours, damaged: not a finished item
        return None


def _gallery_row(session: Session, record: dict, path: Path) -> dict | None:
    rows = session.gallery.images(limit=1000, run_id=record.get("run_id")) if record.get("run_id") else []
    names = {str(path)}
    return next((r for r in rows if r.get("path") in names), None) or next(
        (r for r in rows if r.get("seed") == record.get("seed")), None)


def find_finished_images(images_dir: Path, keys: set[str]) -> dict[str, Path]:
    """key -> PNG for the items whose image is complete in `images_dir` but which have no record yet
    (a kill between the PNG landing and its record being written): under the item's deterministic
    name, or still under the name the session gave it, tagged with the key in its own metadata."""
    found: dict[str, Path] = {}
    if not images_dir.is_dir() or not keys:
        return found
    by_name = {image_name(k): k for k in keys}
    for png in sorted(images_dir.glob("*.png")):
        if png.name in by_name:
            found[by_name[png.name]] = png
    for png in sorted(images_dir.glob("*.png")):
        if png.name in by_name or png.name.startswith("L"):
            continue
        rec = _png_record(png)
        key = ((rec or {}).get("batch") or {}).get("key") if isinstance((rec or {}).get("batch"), dict) else None
        if key in keys and key not in found:
            found[key] = png
    return found


def recover_item(session: Session, item: Item, png: Path, options: BatchOptions, images_dir: Path) -> dict | None:
    """The record of an item whose PNG is complete (found by `find_finished_images`), without redoing it."""
    rec = _png_record(png)
    if rec is None or (options.loop and not isinstance(rec.get("loop"), dict)):  # not a finished item: redo it
        return None
    row = _gallery_row(session, rec, png)
    target = settle_image(session, png, row["id"] if row else None, images_dir / image_name(item.key))
    params = rec.get("params", {})
    record = {"key": item.key, "line": item.line.number, "idea": item.line.fields.get("prompt")
              or item.line.fields.get("idea"), "sweep": item.point}
    if item.line.fields.get("id") is not None:
        record["id"] = item.line.fields["id"]
    if item.line.meta:
        record["meta"] = item.line.meta
    record.update({"status": "ok", "prompt": params.get("prompt"), "negative_prompt": params.get("negative_prompt"),
                   "params": params, **made_by(rec), "seed": rec.get("seed"), "path": str(target),
                   "image_id": row["id"] if row else None, "run_id": rec.get("run_id"),
                   "score": None, "scores": None, "rounds": None, "recovered": True, "timings": {}})
    if options.loop:
        loop = rec["loop"]
        record.update(loop_fields(loop))
        if row and row.get("score") is None:  # killed before the loop set the gallery row's score
            session.gallery.set_image_score(row["id"], loop.get("score"), loop.get("round"))
    if options.score and not options.loop:
        scored = session.score([target], record["idea"])
        record["score"], record["scores"] = scored["scores"][0], {"formula": scored["formula"],
                                                                  "model": scored["model"],
                                                                  "cosine": scored["cosine"][0]}
    return record


def error_record(item: Item, exc: BaseException) -> dict:
    """The record of an item that failed with `exc` (the batch goes on)."""
    return {"key": item.key, "line": item.line.number, "idea": item.line.fields.get("prompt")
            or item.line.fields.get("idea"), "sweep": item.point, "status": "error", **error_payload(exc)}


def process_item(session: Session, item: Item, png: Path | None, options: BatchOptions, images_dir: Path) -> dict:
    """One item -> its finished record: recovered from its complete PNG (`png`, from
    `find_finished_images`) or run; a failure becomes an error record. Cancelled, Ctrl-C and the
    FATAL errors propagate. The one place an item is done, in-process or on a Ray actor."""
    t1 = time.perf_counter()
    try:
        record = recover_item(session, item, png, options, images_dir) if png is not None else None
        if record is None:
            record = run_item(session, item, options, images_dir)
    except (Cancelled, KeyboardInterrupt):
        raise
    except FATAL:  # no item can succeed (no model, bad settings): stop; resume after fixing it
        raise
    except Exception as exc:  # recorded (bad parameters, blocked, backend errors); the batch goes on
        record = error_record(item, exc)
    record.setdefault("timings", {})["seconds"] = round(time.perf_counter() - t1, 4)
    record["finished"] = _now()
    return record


@dataclass
class Summary:
    total: int
    done_before: int = 0
    ok: int = 0
    failed: int = 0
    seconds: float = 0.0
    records: str = ""
    out: str = ""
    cancelled: bool = False
    errors: list[dict] = field(default_factory=list)

    def add(self, record: dict) -> None:
        """Count one finished item's record."""
        if record["status"] == "ok":
            self.ok += 1
        else:
            self.failed += 1
            self.errors.append({"key": record["key"], **record["error"]})

    def to_json(self) -> dict:
        d = asdict(self)
        d["images_per_minute"] = round(60 * self.ok / self.seconds, 2) if self.seconds and self.ok else None
        return d


def run_batch(session: Session, items: list[Item], log: RecordLog, done: dict[str, dict], options: BatchOptions,
              out: Path, *, on_record: Callable[[dict, int, int], None] | None = None) -> Summary:
    """Run every item not in `done`, appending a record for each. `on_record(record, n, todo)`
    is called after each item (for progress bars). Ctrl-C stops after the current step; the
    records written so far stay, so the batch can be resumed. (agent.ray_batch.run_ray_batch
    does the same with the items spread over Ray actors.)"""
    todo = [it for it in items if it.key not in done]
    summary = Summary(total=len(items), done_before=len(items) - len(todo), records=str(log.path), out=str(out))
    images_dir = out / "images"
    t0 = time.perf_counter()
    finished = find_finished_images(images_dir, {it.key for it in todo})
    for n, item in enumerate(todo, 1):
        try:
            record = process_item(session, item, finished.get(item.key), options, images_dir)
        except (Cancelled, KeyboardInterrupt):
            summary.cancelled = True
            break
        log.append(record)
        summary.add(record)
        if on_record:
            on_record(record, n, len(todo))
    summary.seconds = round(time.perf_counter() - t0, 3)
    return summary
