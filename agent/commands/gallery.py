"""List recent images from the gallery (newest first), or with --runs the recent runs."""
from __future__ import annotations

from datetime import datetime

from agent.commands.common import emit
from agent.config import load_settings
from agent.errors import InvalidInput
from agent.store import Gallery
from tools.generate import printable


def add_arguments(p) -> None:
    p.add_argument("--limit", type=int, default=20, help="how many images or runs (default: 20)")
    p.add_argument("--run", help="only images of this run id")
    p.add_argument("--runs", action="store_true", help="list the recent runs (their ids) instead of images")
    p.add_argument("--search", help="only images whose prompt contains this text")
    p.add_argument("--json", action="store_true", help="print JSON")


def run(args) -> int:
    gallery = Gallery(load_settings().gallery_path)
    if args.runs:
        return _list_runs(args, gallery)
    if args.run and gallery.run(args.run) is None:
        raise InvalidInput(f"There is no run '{printable(args.run, keep='')}' in the gallery.",
                           "List the recent runs and their ids with: imagent gallery --runs")
    rows = gallery.images(limit=args.limit, run_id=args.run, query=args.search)
    items = [{k: r[k] for k in ("id", "run_id", "path", "seed", "prompt", "width", "height", "model", "score")}
             for r in rows]
    emit(args, {"images": items},
         [f"{r['id']:>5}  {'-' if r['seed'] is None else r['seed']:>10}  {printable(r['path'], keep='')}  "
          f"{printable((r['prompt'] or '')[:60], keep='')}" for r in items])
    return 0


def _list_runs(args, gallery: Gallery) -> int:
    items = [{"id": r["id"], "kind": r["kind"], "status": r["status"], "created": r["created"], "idea": r["idea"],
              "prompt": (r.get("params") or {}).get("prompt") if isinstance(r.get("params"), dict) else None}
             for r in gallery.runs(limit=args.limit)]
    emit(args, {"runs": items},
         [f"{r['id']}  {datetime.fromtimestamp(r['created']).strftime('%Y-%m-%d %H:%M')}  {r['kind']:<8}  "
          f"{r['status']:<7}  {printable((r['idea'] or r['prompt'] or '')[:60], keep='')}" for r in items])
    return 0
