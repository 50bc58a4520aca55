"""Run the critique loop on an idea: expand it and list its requirements (objects, counts,
colours, relations, background), then each round generate candidates, check their safety, score
them with CLIP and verify every requirement with the detector, keep the best, and repair what
failed (a local edit, a layout-guided regeneration, or a prompt change with fresh seeds) until
every requirement holds or the rounds are spent. "met" means every requirement passed.

  imagent run "two red circles"
  imagent run "a cat coding at night" --style watercolor --rounds 4 --candidates 3
  imagent run "a blue square left of a red circle" --threshold 1.6 --threshold-mode absolute --json
  imagent run "two red circles" --require "a blue square" --drop only

--require TEXT adds requirements in the words the checklist parser reads; --drop ID removes one
by the id or number `imagent expand IDEA` prints (an object takes its relations along). The
edited checklist is what every image is checked against, and what the best image records.

The threshold is the floor for the holistic CLIP score, relative by default: a fraction of a
reference score (the score known-good images of the intent get, where the demo world can render
them; otherwise a typical on-prompt CLIP score). The output says which. The round table and the
checklist go to stderr; stdout gets the best image's path (or one JSON object with --json).
"""
from __future__ import annotations

import sys

from agent.commands.common import (add_checklist_options, add_generation_options, flag_help, add_model_options,
                                   add_output_options, emit, post_from, progress_bar, request_fields, say, session_from,
                                   warn)
from agent.outcomes import RoundRow
from agent.requests import RunOptions
from agent.tool_schemas import RunInput
from tools.generate import printable


def add_arguments(p) -> None:
    p.add_argument("idea", help="a rough idea, e.g. \"two red circles\" (- reads it from stdin)")
    g = p.add_argument_group("loop")
    for name, kind in (("rounds", int), ("candidates", int), ("threshold", float)):
        g.add_argument(f"--{name}", type=kind, default=RunInput.model_fields[name].default, help=flag_help(RunInput, name))
    g.add_argument("--threshold-mode", choices=["relative", "absolute"], default="relative",
                   help=flag_help(RunInput, "threshold_mode"))
    g.add_argument("--reviser", choices=["auto", "rules", "llm"], default="auto",
                   help="who revises the prompt between rounds (auto: the LLM if configured, else rules)")
    g.add_argument("--style", help="style preset for the expansion (see `imagent styles`)")
    g.add_argument("--raw", action="store_true", help="use the idea as the prompt, without expansion")
    g.add_argument("--clip", help="CLIP model for scoring: folder or hub id (default: the demo CLIP)")
    g.add_argument("--detector", help="OWL-ViT / OWLv2 detector that checks each requirement: folder or hub id "
                                      "(default: the demo detector with the demo model; none otherwise)")
    add_checklist_options(p)
    add_generation_options(p)
    add_model_options(p)
    add_output_options(p, post=True)


def run(args) -> int:
    from agent.commands.common import text_or_stdin

    args.idea = text_or_stdin(args.idea)
    post = post_from(args)
    session = session_from(args, clip_model=args.clip, detector=args.detector)
    fields = request_fields(args, session.settings)
    if args.count != 1:
        warn(["-n is ignored by `run`; use --candidates for images per round"])
    fields.pop("count")
    with progress_bar(args) as call:
        options = RunOptions(rounds=args.rounds, candidates=args.candidates, threshold=args.threshold,
                             threshold_mode=args.threshold_mode, style=args.style, raw=args.raw,
                             request_fields=fields, reviser=args.reviser, post=post,
                             require=tuple(args.require), drop=tuple(args.drop))
        outcome = session.run(args.idea, options, out_dir=args.out, call=call)
    warn(outcome.warnings)
    if args.json:
        emit(args, outcome.to_json(), [])
        return 0
    print_round_table(outcome)
    say(str(outcome.best.path))
    return 0


def _text(value) -> str:
    """Stored or model text for the Rich table: control characters escaped (tools.generate.printable)
    and Rich markup escaped, so '[red]' in a requirement prints as written."""
    from rich.markup import escape

    return escape(printable(value, keep=""))


def print_round_table(outcome, file=None) -> None:
    from rich.console import Console
    from rich.table import Table

    t = outcome.threshold
    how = (f"relative: {t['value']:g} x reference {t['reference']:g} ({t['reference_source']})"
           if t["mode"] == "relative" else "absolute")
    table = Table(title=_text(f"run {outcome.run_id}: score floor {t['target']:g} ({how}; {t['formula']})"))
    for col in ("round", "repair", "change", "seeds", "scores", "checks", "failed", "time"):
        table.add_column(col, overflow="fold")
    for row in map(RoundRow.of, outcome.rounds):
        table.add_row(str(row.round), _text(row.repair), _text(row.change), ", ".join(map(str, row.seeds)),
                      row.scores_text(3), row.checks_text(), _text("; ".join(row.failed) or "-"), f"{row.seconds:.1f}s")
    console = Console(file=file or sys.stderr, width=max(100, Console().width))
    console.print(table)
    for c in outcome.checks:
        mark = {True: "[green]pass[/]", False: "[red]FAIL[/]", None: "[yellow]n/a [/]"}[c.get("passed")]
        console.print(f"  {mark} {_text(c['text'])}  [dim]{_text(_evidence(c))}[/]")
    verdict = "met" if outcome.met else "not met"
    console.print(f"best: seed {outcome.best.seed}, score {outcome.score:.3f} ({verdict}; {outcome.stop_reason}); "
                  f"{outcome.images} image(s) generated")


def _evidence(check: dict) -> str:
    e = check.get("evidence") or {}
    if check.get("passed") is None and e.get("why"):
        return e["why"]
    if check.get("kind") == "object":
        reads = ", ".join(f"{b.get('attribute', '')} {b.get('noun', '')}".strip() + ("?" if b.get("uncertain") else "")
                          for b in e.get("found", []))
        return f"found {e.get('count')} of {e.get('wanted')}" + (f" (read: {reads})" if reads else "")
    if check.get("kind") == "relation":
        if "missing" in e:
            return f"missing {', '.join(e['missing'])}"
        return (e.get("why") or "") + (" (uncertain: true by a hair)" if e.get("uncertain") else "")
    if check.get("kind") == "background":
        return f"read {e.get('read')}" if "read" in e else e.get("why", "")
    if check.get("kind") == "exclusive":
        return f"{e.get('objects')} object(s), {e.get('wanted')} wanted" if "objects" in e else e.get("why", "")
    if check.get("kind") == "holistic":
        return f"score {e.get('score')} vs floor {e.get('floor')}"
    return ""
