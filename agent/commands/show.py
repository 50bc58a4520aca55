"""Print the generation metadata of an image (PNG, JPEG or WebP): the A1111 `parameters` text and
imagent's JSON record."""
from __future__ import annotations

import json

from tools.generate import printable
from tools.metadata import read_metadata


def add_arguments(p) -> None:
    p.add_argument("image", help="a PNG, JPEG or WebP written by imagent (or by AUTOMATIC1111-compatible tools)")
    p.add_argument("--json", action="store_true", help="print the full record as JSON")


def run(args) -> int:
    meta = read_metadata(args.image)
    if args.json:
        print(json.dumps({"record": meta["record"], "parameters": meta["parameters"], "parsed": meta["parsed"]},
                         default=str))
        return 0
    # stored text is printed with control characters escaped (a hand-made PNG may carry terminal escapes)
    if meta["parameters"]:
        print(printable(meta["parameters"]))
    record = meta["record"] or {}
    for key in ("idea", "revised_prompt", "run_id", "created", "backend", "model"):
        if record.get(key):
            print(f"{key}: {printable(record[key], keep='')}")
    if record.get("spec"):
        print("spec: " + json.dumps(record["spec"]))
    if record.get("inputs"):
        print("inputs: " + json.dumps(record["inputs"]))
    if record.get("post"):
        print("post: " + json.dumps(record["post"]))
    return 0
