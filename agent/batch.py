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

This module runs the items (run_batch, process_item, recovery after a kill); the input (lines,
sweeps, items) is in agent.batch_lines, the output folder (records.jsonl, batch.json, the options)
in agent.batch_records. Their names are re-exported here.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from pydantic import ValidationError

from agent.batch_lines import (FORMATS, MAX_GRID, Item, Line, LineParams, Sweep, detect_format,  # noqa: F401
                               image_name, item_key, parse_floats, parse_ints, plan, read_lines)
from agent.batch_records import (MANIFEST, RECORDS, BatchOptions, RecordLog, _now, file_digest,  # noqa: F401
                                 open_batch, read_manifest)
from agent.capabilities import error_payload, range_error
from agent.errors import Cancelled, ConfigError, InvalidInput, ModelNotFound
from agent.requests import RunOptions, expand_for_generate, sampling_fields
from agent.session import Session
from tools.adapters import controls_from_specs
from tools.generate import GenerateRequest, parse_size
from tools.metadata import read_metadata

FATAL = (ModelNotFound, ConfigError)  # errors that would fail every item: they stop the batch


# -- running --------------------------------------------------------------------------------------
def item_request_fields(session: Session, item: Item, options: BatchOptions) -> tuple[LineParams, dict]:
    """Validate an item's line and merge it with the options and the sweep point -> request fields."""
    if item.line.error:
        raise InvalidInput(f"{item.line.error[0].upper()}{item.line.error[1:]}.", "Fix the line and resume.")
    try:
        p = LineParams.model_validate(item.line.fields)
    except ValidationError as exc:
        ranged = range_error(exc)  # one value outside its limit: the words every front door uses
        if ranged is not None:
            raise InvalidInput(f"Line {item.line.number}: {ranged.message}", f"{ranged.hint} Fix the line and resume.",
                               param=ranged.param) from None
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc']) or 'line'}: {e['msg']}" for e in exc.errors())
        raise InvalidInput(f"Line {item.line.number} has bad parameters: {problems}.",
                           "Fix the line (known keys: " + ", ".join(LineParams.model_fields) + ") and resume.") from None
    width, height = parse_size(p.size or options.size) if (p.size or options.size) else (None, None)
    fields = sampling_fields(session.settings, negative=p.negative or options.negative,
                             steps=item.point.get("steps") or p.steps or options.steps,   # None: the model's default
                             cfg=item.point.get("cfg", p.cfg if p.cfg is not None else options.cfg),
                             seed=item.point.get("seed", p.seed), size=(p.width or width, p.height or height),
                             scheduler=p.scheduler or options.scheduler, loras=[*options.lora, *p.lora],
                             controls=controls_from_specs(p.control), speed=options.speed)
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
        run = RunOptions(rounds=p.rounds or options.rounds, candidates=p.candidates or options.candidates,
                         threshold=p.threshold if p.threshold is not None else options.threshold,
                         threshold_mode=options.threshold_mode, style=None if raw else style, raw=raw,
                         request_fields=fields, extra={"batch": tag})
        outcome = session.run(text, run, out_dir=images_dir)
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
        exp = expand_for_generate(session, p.idea, style=style, negative=fields["negative_prompt"])
        prompt, idea, spec, extra = exp.prompt, exp.idea, exp.spec, exp.extra
        fields["negative_prompt"] = exp.negative
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
