"""Check a prompt and/or an image against the safety policy without generating anything.

  imagent check-safety --prompt "two red circles"
  imagent check-safety --image out.png --safety strict

Prints the verdict (allowed or blocked, the category and the reason; scores such as the open_nsfw
probability). Exits 0 when everything is allowed and 5 when something is blocked.
Levels: standard (default) blocks explicit sexual content, minors, gore, hate and self-harm;
strict also blocks nudity, violence, drugs and more; off checks nothing.
"""
from __future__ import annotations


from agent.commands.common import emit, note, settings_from
from agent.errors import InvalidInput, SafetyBlocked
from agent.session import Session
from tools.images import load_image


def add_arguments(p) -> None:
    p.add_argument("--prompt", help="prompt text to check")
    p.add_argument("--image", metavar="PATH", action="append", help="image file to check (repeatable)")
    p.add_argument("--safety", choices=["off", "standard", "strict"], help="policy level (default: standard)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def run(args) -> int:
    if not args.prompt and not args.image:
        raise InvalidInput("Nothing to check.", "Pass --prompt TEXT and/or --image PATH.")
    session = Session(settings_from(args))
    checker = session.safety()
    results = []
    if args.prompt:
        v = checker.check_prompt(args.prompt)
        results.append({"what": "prompt", "text": args.prompt, "allowed": v.allowed, "category": v.category,
                        "reason": v.reason, "scores": v.scores})
    for path in args.image or []:
        v = checker.check_image(load_image(path))
        results.append({"what": "image", "path": path, "allowed": v.allowed, "category": v.category,
                        "reason": v.reason, "scores": v.scores})
    blocked = [r for r in results if not r["allowed"]]
    lines = []
    for r in results:
        name = "prompt" if r["what"] == "prompt" else r["path"]
        scores = ", ".join(f"{k} {v:.3f}" for k, v in r["scores"].items())
        state = "allowed" if r["allowed"] else f"BLOCKED ({r['category']}): {r['reason']}"
        lines.append(f"{name}: {state}" + (f"  [{scores}]" if scores else ""))
    emit(args, {"level": checker.level, "allowed": not blocked, "results": results,
                "notes": getattr(checker, "notes", [])}, lines)
    if blocked:
        note(f"imagent: blocked by the {checker.level} safety policy ({blocked[0]['category']})")
        return SafetyBlocked.exit_code
    return 0
