"""Run many ideas unattended: images plus one JSONL record per image, resumable.

  imagent batch ideas.txt                                one idea per line, one image each
  imagent batch prompts.jsonl --seeds 1-4 --cfg 5,7.5     per-line params; a 4x2 grid per line
  imagent batch PartiPrompts.tsv --limit 100 --steps 10,20
  imagent batch ideas.txt --loop --rounds 3 --candidates 2   the critique loop for every idea
  imagent batch ideas.txt --resume --out DIR             continue where an interrupted batch stopped, as it was started
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
recorded and the batch goes on; --retry-errors redoes those on --resume. On --resume the options
left out are the batch's own, from its batch.json (the sweep, generation and loop options,
--format, --limit, --model, --backend, --safety); one given that differs from it is refused. A
finished batch's --resume says nothing is left and stops, without starting Ray or loading a model.
With --ray [ADDRESS|auto] the items run on Ray actors, each holding one loaded model (one per GPU
when the cluster has GPUs, else --ray-actors N CPU actors, default 1); this process alone writes
the records, in the order items finish, with the same --resume. A worker killed mid-item is
replaced and its item tried once more, then recorded as failed. On a cluster --out must be a
shared folder at the same path on every node (the actors write the images there); see README.
Progress bar with ETA and the summary on stderr; --json prints the summary on stdout.
Exit status: 0 when every item succeeded, 1 when some failed (see their records), 130 when
interrupted (the command to continue it, with --resume, is printed on stderr).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from agent.commands.common import add_model_options, add_speed_options, note, settings_from, speed_fields


def add_arguments(p) -> None:
    # options a resume compares default to None here: left out on --resume, they come from the
    # batch's batch.json (_fill_from_record), else from _DEFAULTS
    p.add_argument("file", help="ideas: .txt, .jsonl or .tsv")
    p.add_argument("--format", choices=["txt", "jsonl", "tsv"], help="input format (default: from the extension)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: $IMAGENT_HOME/batches/NAME)")
    p.add_argument("--resume", action="store_true",
                   help="continue the batch in --out, skipping finished items; the sweep, generation, loop, "
                        "--limit, --format and model options left out are the batch's own (from its batch.json)")
    p.add_argument("--retry-errors", action="store_true", help="with --resume, redo the items that failed")
    p.add_argument("--limit", type=int, help="only the first N lines of the file")
    g = p.add_argument_group("sweeps (a grid over every line)")
    g.add_argument("--seeds", help="seeds, e.g. 1-4 or 1,5,9 (default: the line's seed, else drawn at random)")
    g.add_argument("--cfg", help="guidance scales, e.g. 5,7.5 (default: the line's, else 7)")
    g.add_argument("--steps", help="denoising steps, e.g. 10,20 (default: the line's, else the model's)")
    g = p.add_argument_group("generation")
    g.add_argument("--negative", help="negative prompt for lines without their own")
    g.add_argument("--size", help="WIDTHxHEIGHT for lines without their own (default: the model's native size)")
    g.add_argument("--scheduler", metavar="NAME", help="sampler for lines without their own")
    g.add_argument("--expand", action="store_true", default=None,
                   help="expand each idea into a structured prompt first")
    g.add_argument("--style", metavar="NAME", help="style preset (implies --expand)")
    g.add_argument("--score", action="store_true", default=None,
                   help="CLIP-score every image against its idea (plain mode)")
    g.add_argument("--lora", action="append", metavar="PATH_OR_ID[:WEIGHT]",
                   help="LoRA for every line (repeatable), before the line's own \"lora\" key")
    add_speed_options(p)
    g = p.add_argument_group("critique loop")
    g.add_argument("--loop", action="store_true", default=None,
                   help="run the critique loop per idea instead of one generation")
    g.add_argument("--rounds", type=int, help="rounds per idea with --loop (default: 3)")
    g.add_argument("--candidates", type=int, help="images per round with --loop (default: 2)")
    g.add_argument("--threshold", type=float, help="stop an idea's loop at this score (default: the loop's)")
    g.add_argument("--threshold-mode", choices=["relative", "absolute"],
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


# the options batch.json's "options" records (and a resume compares), with their defaults when
# neither given nor recorded; "steps" and "cfg" there have no option (API-made batches set them)
_DEFAULTS = {"loop": False, "rounds": 3, "candidates": 2, "threshold": None, "threshold_mode": "relative",
             "style": None, "expand": False, "negative": "", "size": None, "scheduler": None, "score": False,
             "lora": []}
_SWEEP = {"seeds": "seeds", "cfgs": "cfg", "steps": "steps"}     # batch.json "sweep" key -> option
_SETTINGS = ("model", "backend", "safety")   # recorded, not compared; left out on --resume: the batch's


def run(args) -> int:
    from agent.batch import (BatchOptions, Summary, Sweep, open_batch, parse_floats, parse_ints, plan, read_lines,
                             read_manifest, run_batch)
    from agent.errors import InvalidInput
    from agent.session import Session

    path = Path(args.file)
    settings = settings_from(args)
    out = Path(args.out) if args.out else settings.home / "batches" / path.stem
    recorded = read_manifest(out) if args.resume else None
    hidden = _fill_from_record(args, recorded)
    if hidden.pop("settings_changed", False):
        settings = settings_from(args)
    for name, default in _DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, list(default) if isinstance(default, list) else default)
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
                           speed=speed_fields(args), **hidden)
    if args.ray and not args.resume:  # before anything is written: Ray missing or unreachable is a clear error at once
        from agent.ray_batch import check_ray

        check_ray(_ray_address(args))
    items = plan(lines, sweep)
    extra = {"limit": args.limit, "settings": {k: _recordable(k, getattr(args, k)) for k in _SETTINGS}}
    log, done = open_batch(path, out, fmt=fmt, sweep=sweep, options=options, resume=args.resume,
                           retry_errors=args.retry_errors, extra=extra)
    todo = sum(1 for it in items if it.key not in done)
    failed_before = sum(1 for it in items if it.key in done and (done[it.key] or {}).get("status") != "ok")
    note(f"imagent batch: {len(items)} item(s) from {len(lines)} line(s) of {path.name} ({fmt}); "
         f"{len(items) - todo} already done, {todo} to go -> {out}")
    if not todo:  # a finished batch: no Ray, no model
        note(f"imagent batch: nothing left to do in {out}: every item is recorded")
        summary = Summary(total=len(items), done_before=len(items), records=str(log.path), out=str(out))
        _report(summary)
        if args.json:
            print(json.dumps(summary.to_json(), default=str))
        return _failed_before(failed_before)
    if args.ray and args.resume:
        from agent.ray_batch import check_ray

        check_ray(_ray_address(args))
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
    summary = _run_with_bar(run_, todo) if show else run_(_line_reporter())
    _report(summary)
    if args.json:
        print(json.dumps(summary.to_json(), default=str))
    if summary.cancelled:
        note(f"imagent batch: interrupted; continue with: {resume_command(args, out)}")
        return 130
    code = _failed_before(failed_before)
    return 1 if summary.failed else code


def _failed_before(n: int) -> int:
    if n:
        note(f"imagent batch: {n} item(s) failed in an earlier run; redo them with --resume --retry-errors")
    return 1 if n else 0


def _fill_from_record(args, recorded: dict | None) -> dict:
    """On --resume, set the options left out (None) to the batch's own, from its batch.json, so that
    `imagent batch FILE --resume --out DIR` continues it as it was started. The ones given stay, and
    open_batch refuses them when they differ from the record. Returns BatchOptions' fields that
    have no option (steps, cfg), and settings_changed when a model option came from the record."""
    from agent.batch import detect_format

    if not recorded:
        return {}
    if args.format is None and recorded.get("format") and recorded["format"] != detect_format(Path(args.file)):
        args.format = recorded["format"]
    if args.limit is None and isinstance(recorded.get("limit"), int):
        args.limit = recorded["limit"]
    sweep = recorded.get("sweep") or {}
    for key, name in _SWEEP.items():
        if getattr(args, name) is None and sweep.get(key):
            setattr(args, name, _ints_text(sweep[key]) if key != "cfgs" else ",".join(_num(v) for v in sweep[key]))
    options = recorded.get("options") or {}
    for name in _DEFAULTS:
        if getattr(args, name) is None and name in options:
            setattr(args, name, list(options[name]) if name == "lora" else options[name])
    changed = False
    for name, value in ((recorded.get("settings") or {}).items()):
        if name in _SETTINGS and value is not None and getattr(args, name, None) is None:
            setattr(args, name, value)
            changed = True
    hidden = {k: options[k] for k in ("steps", "cfg") if options.get(k) is not None}
    return {**hidden, "settings_changed": changed}


def _recordable(name: str, value):
    """A model option as batch.json keeps it: a local model folder as an absolute path."""
    if name == "model" and value and Path(value).exists():
        return str(Path(value).resolve())
    return value


def resume_command(args, out: Path) -> str:
    """The command that continues this batch as it ran: every option a resume compares (the
    sweep, generation and loop options), --format, --limit, the model and speed options given,
    and --ray where it ran on Ray."""
    import shlex

    argv = ["imagent", "batch", args.file, "--resume", "--out", str(out)]
    if args.format:
        argv += ["--format", args.format]
    if args.limit is not None:
        argv += ["--limit", str(args.limit)]
    for name in ("seeds", "cfg", "steps"):
        if getattr(args, name) is not None:
            argv += [f"--{name}", getattr(args, name)]
    if args.negative:
        argv += ["--negative", args.negative]
    for name in ("size", "scheduler", "style"):
        if getattr(args, name) is not None:
            argv += [f"--{name}", getattr(args, name)]
    if args.expand and not args.style:
        argv.append("--expand")
    if args.score:
        argv.append("--score")
    for lora in args.lora:
        argv += ["--lora", lora]
    if args.loop:
        argv.append("--loop")
    for name in ("rounds", "candidates", "threshold_mode"):
        if getattr(args, name) != _DEFAULTS[name]:
            argv += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    if args.threshold is not None:
        argv += ["--threshold", _num(args.threshold)]
    for name in ("model", "backend", "device", "dtype", "safety"):
        if getattr(args, name, None) is not None:
            argv += [f"--{name}", getattr(args, name)]
    speed = speed_fields(args)
    if speed["attention"] != "sdpa":
        argv += ["--attention", speed["attention"]]
    argv += [f"--{k.replace('_', '-')}" for k in ("vae_tiling", "vae_slicing", "compile", "lora_fuse") if speed[k]]
    if args.ray_actors is not None:
        argv += ["--ray-actors", str(args.ray_actors)]
    if args.ray:  # last: a bare --ray takes the next word as its address
        argv += ["--ray"] + ([] if args.ray == "local" else [args.ray])
    return " ".join(shlex.quote(a) for a in argv)


def _ints_text(values) -> str:
    """[1, 2, 3, 7] -> '1-3,7' (what parse_ints reads back as the same list)."""
    parts: list[str] = []
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1 and values[i] >= 0:
            j += 1
        parts.append(f"{values[i]}-{values[j]}" if j > i + 1 else ",".join(str(v) for v in values[i:j + 1]))
        i = j + 1
    return ",".join(parts)


def _num(value) -> str:
    """A float as written back exactly: 5.0 -> '5', 7.5 -> '7.5'."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


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
