"""List recent images from the gallery (newest first)."""
from __future__ import annotations

from agent.commands.common import emit
from agent.config import load_settings
from agent.store import Gallery
from tools.generate import printable


def add_arguments(p) -> None:
    p.add_argument("--limit", type=int, default=20, help="how many images (default: 20)")
    p.add_argument("--run", help="only images of this run id")
    p.add_argument("--search", help="only images whose prompt contains this text")
    p.add_argument("--json", action="store_true", help="print JSON")


def run(args) -> int:
    gallery = Gallery(load_settings().gallery_path)
    rows = gallery.images(limit=args.limit, run_id=args.run, query=args.search)
    items = [{k: r[k] for k in ("id", "run_id", "path", "seed", "prompt", "width", "height", "model", "score")}
             for r in rows]
    emit(args, {"images": items},
         [f"{r['id']:>5}  {'-' if r['seed'] is None else r['seed']:>10}  {printable(r['path'], keep='')}  "
          f"{printable((r['prompt'] or '')[:60], keep='')}" for r in items])
    return 0
