"""Run many ideas unattended: images plus one JSONL record per image, resumable.

  imagent batch ideas.txt                                one idea per line, one image each
  imagent batch prompts.jsonl --seeds 1-4 --cfg 5,7.5     per-line params; a 4x2 grid per line
  imagent batch PartiPrompts.tsv --limit 100 --steps 10,20
  imagent batch ideas.txt --loop --rounds 3 --candidates 2   the critique loop for every idea
  imagent batch ideas.txt --resume                       continue where an interrupted batch stopped
  imagent batch ideas.txt --ray                          on Ray actors on this machine (pip install 'imagent[ray]')
  imagent batch ideas.txt --ray auto                     on the Ray cluster started with `ray start --head`

Input: .txt (one idea per line; '#' comments), .jsonl (objects with "idea" or "prompt" and any of
negative, seed, steps, cfg, size, scheduler, style, rounds, candidates, threshold, id) or .tsv
with a header and a prompt column (PartiPrompts' format reads as is; other columns are kept as
meta). --format overrides the guess from the extension.

Mode: plain generation by default (fast, reproducible: the idea is the prompt as written, or
expanded with --expand/--style); --loop runs the critique loop per idea and records its scores
and rounds. Sweeps (--seeds, --cfg, --steps) form a grid over every line.

Output (--out, default $IMAGENT_HOME/batches/NAME): images/, records.jsonl (one JSON record per
image: key, line, idea, prompt, params, seed, path, score(s), rounds, timings, or status "error"
with the message and hint), batch.json (input and options). Each record is flushed to disk
as it is written, so a killed batch loses at most the image in progress: --resume skips the
keys already recorded (a key is the line number plus the sweep point). A failing item is
recorded and the batch goes on; --retry-errors redoes those on --resume.
With --ray [ADDRESS|auto] the items run on Ray actors, each holding one loaded model (one per GPU
when the cluster has GPUs, else --ray-actors N CPU actors, default 1); this process alone writes
the records, in the order items finish, with the same --resume. A worker killed mid-item is
replaced and its item tried once more, then recorded as failed. On a cluster --out must be a
shared folder at the same path on every node (the actors write the images there); see README.
Progress bar with ETA and the summary on stderr; --json prints the summary on stdout.
Exit status: 0 when every item succeeded, 1 when some failed (see their records), 130 when
interrupted (resume with --resume).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from agent.commands.common import add_model_options, add_speed_options, note, settings_from, speed_fields


def add_arguments(p) -> None:
    p.add_argument("file", help="ideas: .txt, .jsonl or .tsv")
    p.add_argument("--format", choices=["txt", "jsonl", "tsv"], help="input format (default: from the extension)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: $IMAGENT_HOME/batches/NAME)")
    p.add_argument("--resume", action="store_true", help="continue the batch in --out, skipping finished items")
    p.add_argument("--retry-errors", action="store_true", help="with --resume, redo the items that failed")
    p.add_argument("--limit", type=int, help="only the first N lines of the file")
    g = p.add_argument_group("sweeps (a grid over every line)")
    g.add_argument("--seeds", help="seeds, e.g. 1-4 or 1,5,9 (default: the line's seed, else drawn at random)")
    g.add_argument("--cfg", help="guidance scales, e.g. 5,7.5 (default: the line's, else 7)")
    g.add_argument("--steps", help="denoising steps, e.g. 10,20 (default: the line's, else the model's)")
    g = p.add_argument_group("generation")
    g.add_argument("--negative", default="", help="negative prompt for lines without their own")
    g.add_argument("--size", help="WIDTHxHEIGHT for lines without their own (default: the model's native size)")
    g.add_argument("--scheduler", metavar="NAME", help="sampler for lines without their own")
    g.add_argument("--expand", action="store_true", help="expand each idea into a structured prompt first")
    g.add_argument("--style", metavar="NAME", help="style preset (implies --expand)")
    g.add_argument("--score", action="store_true", help="CLIP-score every image against its idea (plain mode)")
    g.add_argument("--lora", action="append", default=[], metavar="PATH_OR_ID[:WEIGHT]",
                   help="LoRA for every line (repeatable), before the line's own \"lora\" key")
    add_speed_options(p)
    g = p.add_argument_group("critique loop")
    g.add_argument("--loop", action="store_true", help="run the critique loop per idea instead of one generation")
    g.add_argument("--rounds", type=int, default=3, help="rounds per idea with --loop (default: 3)")
    g.add_argument("--candidates", type=int, default=2, help="images per round with --loop (default: 2)")
    g.add_argument("--threshold", type=float, help="stop an idea's loop at this score (default: the loop's)")
    g.add_argument("--threshold-mode", choices=["relative", "absolute"], default="relative",
                   help="--threshold as a fraction of the reference score (default) or absolute CLIPScore")
    add_model_options(p)
    g = p.add_argument_group("scale-out on Ray (pip install 'imagent[ray]')")
    g.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS|auto",
                   help="run the items on Ray actors: bare --ray starts a local Ray (or joins $RAY_ADDRESS), "
                        "auto joins the cluster started here with `ray start --head`, HEAD:6379 that one")
    g.add_argument("--ray-actors", type=int, metavar="N",
                   help="actors, each with its own loaded model (default: one per GPU, else 1)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object on stdout")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar on stderr (default: when stderr is a terminal)")


def run(args) -> int:
    from agent.batch import BatchOptions, Sweep, open_batch, parse_floats, parse_ints, plan, read_lines, run_batch
    from agent.errors import InvalidInput
    from agent.session import Session

    settings = settings_from(args)
    path = Path(args.file)
    fmt, lines = read_lines(path, args.format)
    if args.limit is not None:
        if args.limit < 1:
            raise InvalidInput(f"--limit {args.limit} must be at least 1.")
        lines = lines[:args.limit]
    if not lines:
        raise InvalidInput(f"The batch file '{path}' has no ideas in it.", "Write one idea per line.")
    if args.retry_errors and not args.resume:
        raise InvalidInput("--retry-errors needs --resume.", "Add --resume.")
    if args.ray_actors is not None and not args.ray:
        raise InvalidInput("--ray-actors needs --ray.", "Add --ray (or --ray auto on a cluster).")
    if args.loop and (args.rounds < 1 or args.candidates < 1):
        raise InvalidInput("--rounds and --candidates must be at least 1.")
    steps = parse_ints(args.steps, "steps")
    if steps and min(steps) < 1:
        raise InvalidInput(f"--steps {args.steps} must be positive.")
    sweep = Sweep(seeds=_tuple(parse_ints(args.seeds, "seeds")), cfgs=_tuple(parse_floats(args.cfg, "cfg")),
                  steps=_tuple(steps))
    options = BatchOptions(loop=args.loop, rounds=args.rounds, candidates=args.candidates, threshold=args.threshold,
                           threshold_mode=args.threshold_mode, style=args.style,
                           expand=args.expand or bool(args.style), negative=args.negative, size=args.size,
                           scheduler=args.scheduler, score=args.score, lora=tuple(args.lora),
                           speed=speed_fields(args))
    if args.ray:  # before anything is written: Ray missing or unreachable is a clear error at once
        from agent.ray_batch import check_ray

        check_ray(_ray_address(args))
    items = plan(lines, sweep)
    out = Path(args.out) if args.out else settings.home / "batches" / path.stem
    log, done = open_batch(path, out, fmt=fmt, sweep=sweep, options=options, resume=args.resume,
                           retry_errors=args.retry_errors)
    todo = sum(1 for it in items if it.key not in done)
    failed_before = sum(1 for it in items if it.key in done and (done[it.key] or {}).get("status") != "ok")
    note(f"imagent batch: {len(items)} item(s) from {len(lines)} line(s) of {path.name} ({fmt}); "
         f"{len(items) - todo} already done, {todo} to go -> {out}")
    show = args.progress if args.progress is not None else sys.stderr.isatty()
    if args.ray:
        from agent.ray_batch import run_ray_batch

        def run_(on_record):
            return run_ray_batch(settings, items, log, done, options, out, on_record=on_record,
                                 address=_ray_address(args), actors=args.ray_actors, on_start=_ray_reporter)
    else:
        session = Session(settings)

        def run_(on_record):
            return run_batch(session, items, log, done, options, out, on_record=on_record)
    summary = _run_with_bar(run_, todo) if show and todo else run_(_line_reporter())
    _report(summary)
    if args.json:
        print(json.dumps(summary.to_json(), default=str))
    if summary.cancelled:
        note(f"imagent batch: interrupted; continue with: imagent batch {args.file} --resume"
             + (f" --out {args.out}" if args.out else ""))
        return 130
    if failed_before:
        note(f"imagent batch: {failed_before} item(s) failed in an earlier run; redo them with --resume "
             "--retry-errors")
    return 0 if not summary.failed and not failed_before else 1


def _ray_address(args) -> str | None:
    return None if args.ray == "local" else args.ray


def _tuple(values):
    return tuple(values) if values else None


def _line_reporter():
    """Without a bar (logs, pipes): one line per item on stderr."""
    def report(record, n, total):
        status = "ok" if record["status"] == "ok" else f"error: {record['error']['message']}"
        note(f"imagent batch: [{n}/{total}] {record['key']} {status} ({record['timings']['seconds']:.2f}s)")
    return report


def _ray_reporter(actors, resources):
    each = ", ".join(f"{v} {k.removeprefix('num_').upper().rstrip('S')}" for k, v in resources.items())
    note(f"imagent batch: {actors} Ray actor(s), each with {each} and its own model")


def _run_with_bar(run_, todo):
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[last]}"),
                  console=console, transient=False) as bar:
        task = bar.add_task("batch", total=todo, last="")

        def on_record(record, n, total):
            status = "ok" if record["status"] == "ok" else f"error: {record['error']['type']}"
            bar.update(task, completed=n, last=f"{record['key']} {status}")

        return run_(on_record)


def _report(summary) -> None:
    s = summary
    rate = f", {60 * s.ok / s.seconds:.1f} images/min" if s.seconds and s.ok else ""
    note(f"imagent batch: {s.ok} ok, {s.failed} failed, {s.done_before} done before, of {s.total} "
         f"in {s.seconds:.1f}s{rate}; records: {s.records}")
    for err in s.errors[:10]:
        note(f"  {err['key']}: {err['message']}" + (f" ({err['hint']})" if err.get("hint") else ""))
    if len(s.errors) > 10:
        note(f"  ... and {len(s.errors) - 10} more (status \"error\" in the records)")
