"""List recent images from the gallery (newest first), or with --runs the recent runs."""
from __future__ import annotations

from datetime import datetime

from agent.commands.common import emit
from agent.config import load_settings
from agent.errors import InvalidInput
from agent.store import Gallery, listed_prompt
from tools.generate import printable


def add_arguments(p) -> None:
    p.add_argument("--limit", type=int, default=20, help="how many images or runs (default: 20)")
    p.add_argument("--run", help="only images of this run id")
    p.add_argument("--runs", action="store_true", help="list the recent runs (their ids) instead of images")
    p.add_argument("--search", help="only images whose prompt (an upscale's: its source's) contains this text")
    p.add_argument("--json", action="store_true", help="print JSON")


def run(args) -> int:
    gallery = Gallery(load_settings().gallery_path)
    if args.runs:
        return _list_runs(args, gallery)
    if args.run and gallery.run(args.run) is None:
        raise InvalidInput(f"There is no run '{printable(args.run, keep='')}' in the gallery.",
                           "List the recent runs and their ids with: imagent gallery --runs")
    rows = gallery.images(limit=args.limit, run_id=args.run, query=args.search)
    items = [_image_item(r) for r in rows]
    lines = [f"{'ID':>5}  {'DATE':<16}  {'SEED':>10}  {'SCORE':>6}  PATH  PROMPT"] if items else []
    lines += [f"{r['id']:>5}  {_date(r['created']):<16}  {'-' if r['seed'] is None else r['seed']:>10}  "
              f"{'-' if r['score'] is None else format(r['score'], '.3f'):>6}  {printable(r['path'], keep='')}  "
              f"{printable((r['prompt'] or '')[:60], keep='')}" for r in items]
    emit(args, {"images": items}, lines)
    return 0


def _image_item(row: dict) -> dict:
    """One image as listed: the stored columns, its date, and for an upscaled image (which has no prompt
    of its own) the prompt of the image it was made from."""
    item = {k: row.get(k) for k in ("id", "run_id", "path", "seed", "prompt", "width", "height", "model", "score")}
    record = row.get("record") if isinstance(row.get("record"), dict) else {}
    item["prompt"] = listed_prompt(row)
    item["created"] = row.get("created")
    item["kind"] = record.get("kind")
    return item


def _date(created) -> str:
    try:
        return datetime.fromtimestamp(float(created)).strftime("%Y-%m-%d %H:%M")
    except (TypeError, ValueError, OSError, OverflowError):
        return "-"


def _list_runs(args, gallery: Gallery) -> int:
    items = [{"id": r["id"], "kind": r["kind"], "status": r["status"], "created": r["created"], "idea": r["idea"],
              "prompt": (r.get("params") or {}).get("prompt") if isinstance(r.get("params"), dict) else None}
             for r in gallery.runs(limit=args.limit)]
    emit(args, {"runs": items},
         [f"{r['id']}  {datetime.fromtimestamp(r['created']).strftime('%Y-%m-%d %H:%M')}  {r['kind']:<8}  "
          f"{r['status']:<7}  {printable((r['idea'] or r['prompt'] or '')[:60], keep='')}" for r in items])
    return 0
