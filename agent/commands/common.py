"""Option groups and output helpers shared by the commands."""
from __future__ import annotations

import argparse
import json
import sys
from contextlib import contextmanager

from agent.config import Settings, check_backends, load_settings
from agent.errors import ConfigError, InvalidInput
from agent.events import Call, RoundFinished, RoundStarted, Step
from agent.requests import sampling_fields
from agent.session import Session
from agent.tool_schemas import GenerateInput, help_of
from tools.generate import parse_size, printable
from tools.postprocess import PostProcess
from tools.schedulers import SCHEDULERS


def backend_chain(text: str) -> str:
    """argparse type of --backend: a known backend or a chain of them (exit 2 with the reason otherwise)."""
    try:
        return check_backends(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", help="diffusers folder or hub id (default: the built-in demo model, or $IMAGENT_MODEL)")
    g.add_argument("--backend", type=backend_chain, metavar="NAME[,NAME...]",
                   help="where to generate: diffusers (default) or openai, or a fallback chain tried in order, "
                        "e.g. openai,diffusers: on a timeout, 429, 5xx or unreachable API the next one takes the "
                        "request (the record names which made the image and why the others were skipped)")
    g.add_argument("--device", help="auto | cpu | cuda | cuda:N | mps (default: auto)")
    g.add_argument("--dtype", help="auto | fp32 | fp16 | bf16 (default: fp16 on GPUs, fp32 on CPU)")
    g.add_argument("--safety", choices=["off", "standard", "strict"], help="safety policy (default: standard)")


def flag_help(model, name: str) -> str:
    """An option's help: the action catalogue's text for the parameter (agent.tool_schemas.help_of),
    escaped for argparse."""
    return help_of(model, name).replace("%", "%%")


def add_checklist_options(p: argparse.ArgumentParser) -> None:
    """--require TEXT and --drop ID (repeatable): the user's corrections of the checklist
    (agent.checklist_edits.edit_checklist), the run tool's `require` and `drop`."""
    from agent.tool_schemas import RunInput

    g = p.add_argument_group("checklist (`imagent expand IDEA` shows it, with its ids)")
    g.add_argument("--require", action="append", default=[], metavar="TEXT", help=flag_help(RunInput, "require"))
    g.add_argument("--drop", action="append", default=[], metavar="ID", help=flag_help(RunInput, "drop"))


def add_generation_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("generation")
    g.add_argument("--negative", default="", help=flag_help(GenerateInput, "negative_prompt"))
    g.add_argument("--steps", type=int, help=flag_help(GenerateInput, "steps"))
    g.add_argument("--cfg", type=float, help=flag_help(GenerateInput, "cfg"))
    g.add_argument("--size", help="WIDTHxHEIGHT, multiples of 8 (default: the model's native size)")
    g.add_argument("--seed", type=int, help=flag_help(GenerateInput, "seed"))
    g.add_argument("--scheduler", metavar="NAME", help=f"{flag_help(GenerateInput, 'scheduler')} All: {', '.join(SCHEDULERS)}.")
    g.add_argument("-n", "--count", type=int, default=1, help=flag_help(GenerateInput, "count"))
    g.add_argument("--refiner", metavar="PATH_OR_ID", help=flag_help(GenerateInput, "refiner"))
    g.add_argument("--refiner-switch", type=float, default=0.8, metavar="SHARE",
                   help=flag_help(GenerateInput, "refiner_switch"))
    add_speed_options(p)
    add_adapter_options(p)


def add_speed_options(p: argparse.ArgumentParser) -> None:
    sp = p.add_argument_group("speed and memory (the image stays the same)")
    sp.add_argument("--attention", choices=["sdpa", "sliced"], default="sdpa", help=flag_help(GenerateInput, "attention"))
    sp.add_argument("--vae-tiling", action="store_true", help=flag_help(GenerateInput, "vae_tiling"))
    sp.add_argument("--vae-slicing", action="store_true", help=flag_help(GenerateInput, "vae_slicing"))
    sp.add_argument("--compile", action="store_true",
                    help="torch.compile the UNet: the first image is slow (compiling), later ones faster; "
                         "kept for the rest of the process")
    sp.add_argument("--lora-fuse", action="store_true", help=flag_help(GenerateInput, "lora_fuse"))


def speed_fields(args) -> dict:
    """The speed and memory options given (add_speed_options), as GenerateRequest fields."""
    return dict(attention=getattr(args, "attention", "sdpa"), vae_tiling=getattr(args, "vae_tiling", False),
                vae_slicing=getattr(args, "vae_slicing", False), compile=getattr(args, "compile", False),
                lora_fuse=getattr(args, "lora_fuse", False))


def add_adapter_options(p: argparse.ArgumentParser) -> None:
    a = p.add_argument_group("adapters and control")
    a.add_argument("--lora", action="append", default=[], metavar="PATH_OR_ID[:WEIGHT]",
                   help="apply a LoRA (repeatable): a diffusers-format .safetensors file (kohya/A1111 ones via diffusers' converter), a name in "
                        "$IMAGENT_HOME/loras, a hub id, or the shipped demo-tall or demo-lcm; weight 1 by default. "
                        "<lora:NAME:WEIGHT> in the prompt works too")
    a.add_argument("--control", action="append", default=[], metavar="KIND:IMAGE[:SCALE]",
                   help="ControlNet condition (repeatable: several at once). canny takes any image and "
                        "imagent computes its edges; layout, scribble, depth, pose, ... take a ready "
                        "condition image. The demo model ships a layout ControlNet")
    a.add_argument("--control-model", action="append", default=[], metavar="KIND=PATH_OR_ID",
                   help="the ControlNet for a kind (e.g. canny=lllyasviel/sd-controlnet-canny)")
    a.add_argument("--ip-adapter", metavar="IMAGE[:SCALE]",
                   help="an image whose style the result should take (IP-Adapter; scale 1 by default, "
                        "0.5-1 typical); needs --ip-adapter-model")
    a.add_argument("--ip-adapter-model", metavar="FILE_OR_ID",
                   help="IP-Adapter weights: a file or folder with image_encoder/ beside it, or "
                        "ORG/NAME:SUBFOLDER/FILE (e.g. h94/IP-Adapter:models/ip-adapter_sd15.safetensors)")
    a.add_argument("--control-start", type=float, default=0.0,
                   help="share of the steps after which the control starts (default 0)")
    a.add_argument("--control-end", type=float, default=1.0,
                   help="share of the steps after which the control stops (default 1)")


def add_output_options(p: argparse.ArgumentParser, *, post: bool = False) -> None:
    """--out, --json, --progress; with `post` also the post-processing options (see post_from)."""
    p.add_argument("--out", help="folder for the images (default: $IMAGENT_HOME/outputs/DATE)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar on stderr (default: when stderr is a terminal)")
    if not post:
        return
    g = p.add_argument_group("post-processing and output format (recorded; rerun repeats it)")
    for name, kind, metavar in (("sharpen", float, "AMOUNT"), ("resize", str, "WxH"), ("format", str, "png|jpeg|webp"),
                                ("quality", int, "N")):
        g.add_argument(f"--{name}", type=kind, metavar=metavar, help=flag_help(GenerateInput, name))


def post_from(args) -> PostProcess:
    """The post-processing the options ask for (the default when none is given), checked here,
    before anything is generated."""
    return PostProcess.from_options(sharpen=getattr(args, "sharpen", None), resize=getattr(args, "resize", None),
                                    format=getattr(args, "format", None), quality=getattr(args, "quality", None))


def settings_from(args, **overrides) -> Settings:
    return load_settings(model=getattr(args, "model", None), backend=getattr(args, "backend", None),
                         device=getattr(args, "device", None), dtype=getattr(args, "dtype", None),
                         safety=getattr(args, "safety", None), **overrides)


def session_from(args, **overrides) -> Session:
    return Session(settings_from(args, **overrides))


def request_fields(args, settings: Settings) -> dict:
    """GenerateRequest fields from the generation options; unset steps/cfg stay None so the
    session applies the model's defaults."""
    width = height = None
    if getattr(args, "size", None):
        width, height = parse_size(args.size)
    from tools.adapters import controls_from_specs, parse_ip_adapter

    if getattr(args, "ip_adapter_model", None) and not getattr(args, "ip_adapter", None):
        raise InvalidInput("--ip-adapter-model needs --ip-adapter IMAGE.", "Add the reference image, or drop the model.")
    ip = parse_ip_adapter(args.ip_adapter, args.ip_adapter_model) if getattr(args, "ip_adapter", None) else None

    return dict(sampling_fields(settings, negative=args.negative, steps=args.steps, cfg=args.cfg, size=(width, height),
                                seed=args.seed, scheduler=args.scheduler, ip_adapter=ip,
                                refiner=getattr(args, "refiner", None),
                                refiner_switch=getattr(args, "refiner_switch", 0.8), speed=speed_fields(args),
                                loras=getattr(args, "lora", None) or (),
                                controls=controls_from_specs(getattr(args, "control", None),
                                                             getattr(args, "control_model", None),
                                                             getattr(args, "control_start", 0.0),
                                                             getattr(args, "control_end", 1.0))),
                count=args.count)


@contextmanager
def progress_bar(args, description: str = "generating"):
    """Yields the command's Call (agent.events) whose sink draws Rich bars on stderr (one per kind:
    diffusion steps, loop rounds; each with i/n and time left), plain lines into a pipe with
    --progress, or nothing when progress is off."""
    enabled = args.progress if args.progress is not None else sys.stderr.isatty()
    if not enabled:
        yield Call()
        return
    if not sys.stderr.isatty():  # --progress into a pipe or a log: plain lines, at most ~10 per phase
        yield Call(sink=_line_progress(description))
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeRemainingColumn

    with Bar(TextColumn("{task.description:<12}"), BarColumn(), TextColumn("{task.fields[unit]}"),
             MofNCompleteColumn(), TimeRemainingColumn(), console=Console(stderr=True), transient=True) as bar:
        tasks: dict[str, int] = {}

        def sink(event) -> None:
            shown = _bar_of(event, description)
            if shown is None:
                return
            key, done, total, label = shown
            if key not in tasks:
                tasks[key] = bar.add_task(label, total=None, unit=key)
            bar.update(tasks[key], completed=done, total=total, **({"description": label} if key != "step" else {}))

        yield Call(sink=sink)


def _bar_of(event, description: str):
    """(bar, done, total, label) an event moves, or None: steps and rounds have a bar each."""
    match event:
        case Step(done=done, total=total, label=label):
            return "step", done, total, label or description
        case RoundStarted(round=r, rounds=n):
            return "round", r - 1, n, f"round {r}/{n}"
        case RoundFinished(round=r, rounds=n):
            return "round", r, n, f"round {r}/{n}"
    return None


def _line_progress(description: str):
    last: dict[str, int] = {}

    def sink(event) -> None:
        shown = _bar_of(event, description)
        if shown is None:
            return
        key, done, total, label = shown
        tenth = done * 10 // max(1, total or 1)
        if done in (0, total) or tenth != last.get(key):
            note(f"imagent: {label} {done}/{total}")
            last[key] = tenth
    return sink


# Everything printed goes through say/note (or a JSON dump, which escapes control characters): stored,
# user- and model-provided text can carry terminal escapes (ESC, BEL, ...), shown as \x1b etc.
def say(line: str = "") -> None:
    """One line of results on stdout, control characters escaped (tools.generate.printable)."""
    print(printable(line))


def note(line: str) -> None:
    """One diagnostic line on stderr, control characters escaped."""
    print(printable(line), file=sys.stderr, flush=True)


def emit(args, payload: dict, human_lines: list[str]) -> None:
    if args.json:
        print(json.dumps(payload, indent=None, default=str))  # ensure_ascii: no raw control character
    else:
        for line in human_lines:
            say(line)


def warn(lines) -> None:
    for line in lines:
        note(f"imagent: warning: {line}")


def text_or_stdin(value: str) -> str:
    """The text of a positional argument; "-" reads it from standard input (for pipes)."""
    if value != "-":
        return value
    return sys.stdin.read().strip()
