"""`imagent` command line: a thin front door over agent.session.Session.

Each command lives in agent/commands/<name>.py with `add_arguments(parser)` and `run(args) -> int`.
Results go to stdout (paths, or JSON with --json); progress and diagnostics go to stderr.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from agent.errors import ImagentError

COMMANDS = {
    # name: (module, one-line help)
    "generate": ("agent.commands.generate", "text-to-image, img2img (--init-image) and inpainting (--mask)"),
    "show": ("agent.commands.show", "print the generation metadata stored in an image (PNG, JPEG, WebP)"),
    "rerun": ("agent.commands.rerun", "reproduce an image from its metadata"),
    "run": ("agent.commands.run", "the critique loop: expand, generate, check, score, revise, retry"),
    "gallery": ("agent.commands.gallery", "list recent images and runs from the gallery"),
    "expand": ("agent.commands.expand", "expand a rough idea into a structured prompt and show it (no generation)"),
    "styles": ("agent.commands.styles", "list the style presets for --style"),
    "upscale": ("agent.commands.upscale", "upscale an image: Real-ESRGAN (ncnn, CPU), Lanczos, SD x4, hires-fix"),
    "score": ("agent.commands.score", "CLIP score of images against a text (or rank several texts)"),
    "check-safety": ("agent.commands.check_safety", "check a prompt and/or an image against the safety policy"),
    "mcp": ("agent.commands.mcp", "serve imagent's tools to other agents over MCP (stdio or streamable HTTP)"),
    "batch": ("agent.commands.batch", "run many ideas from a file (txt, JSONL, TSV) with sweeps; resumable"),
    "llm": ("agent.commands.llm", "check what the LLM server and model can do (structured output, tools, context)"),
    "serve": ("agent.commands.serve", "serve an OpenAI-compatible images API over HTTP (FastAPI), with runs as jobs"),
}

DESCRIPTION = """\
imagent turns a rough idea into an image: it writes a structured prompt, generates, checks
safety, scores the result with CLIP and retries until the picture fits.

With nothing configured it runs offline on its built-in demo world (64x64 coloured shapes);
point it at a real model with --model PATH_OR_HUB_ID or IMAGENT_MODEL.
Images, metadata and history live in $IMAGENT_HOME (default ~/.imagent).
"""


def commands() -> dict[str, tuple[str, str]]:
    """COMMANDS plus the ones other packages register under the `imagent.commands` entry point
    group (the terminal UI registers `chat` from tui/, so agent/ never imports tui/)."""
    from importlib.metadata import entry_points

    out = dict(COMMANDS)
    for ep in sorted(entry_points(group="imagent.commands"), key=lambda e: e.name):
        if ep.name not in out:
            try:  # the help line is the first line of the module's docstring (modules import lazily)
                help_ = (importlib.import_module(ep.value).__doc__ or "").strip().splitlines()[0]
            except Exception as exc:  # a broken plug-in must not take the other commands down
                help_ = f"(unavailable: {type(exc).__name__})"
            out[ep.name] = (ep.value, help_)
    return out


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser. Only the chosen command's module is imported (fast start, and one broken
    command cannot take the others down); `imagent --help` lists them all from COMMANDS."""
    parser = argparse.ArgumentParser(prog="imagent", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version="imagent 0.1.0")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = next((a for a in (argv or []) if not a.startswith("-")), None)
    for name, (module, help_) in commands().items():
        if name != chosen:
            sub.add_parser(name, help=help_, add_help=False)
            continue
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=help_, description=(mod.__doc__ or help_).strip(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run, _flags=_flags(p))
    return parser


def _flags(p: argparse.ArgumentParser) -> dict[str, str]:
    """parameter name -> the command's option for it (steps -> --steps; width and height -> --size)."""
    out = {a.dest: max(a.option_strings, key=len) for a in p._actions if a.option_strings and a.dest != "help"}
    if "size" in out:
        out.setdefault("width", out["size"])
        out.setdefault("height", out["size"])
    return out


EXIT_CLOSED_PIPE = 141  # 128 + SIGPIPE: what a shell sees from a command whose reader went away


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit code. Output to a pipe whose reader has gone (`imagent gallery |
    head -1`) ends the command quietly with 141, as for other commands killed by SIGPIPE: the one
    place BrokenPipeError is handled, for text and --json output alike."""
    try:
        try:
            return _main(argv)
        finally:  # buffered output meets the closed pipe here, not at exit (where Python would complain)
            try:
                sys.stdout.flush()
            except (AttributeError, ValueError):  # no stdout, or a closed one: nothing buffered to lose
                pass
    except BrokenPipeError:
        _silence_closed_streams()
        return EXIT_CLOSED_PIPE


def _silence_closed_streams() -> None:
    """Point stdout (and stderr, if its pipe is gone too) at the null device, so that nothing more
    fails to be written, at exit either (the recipe in the docs of Python's signal module)."""
    streams = [sys.stdout]
    try:
        sys.stderr.flush()
    except BrokenPipeError:
        streams.append(sys.stderr)
    except (AttributeError, OSError, ValueError):
        pass
    for stream in streams:
        try:
            fd = stream.fileno()
        except (AttributeError, OSError, ValueError):  # not a real file (captured by a test, closed, None)
            continue
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, fd)
        finally:
            os.close(devnull)


def _main(argv: list[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args._run(args) or 0)
    except ImagentError as exc:  # messages quote paths, prompts and servers' answers: escape control characters
        from tools.generate import printable

        print(f"imagent: error: {printable(exc.message)}", file=sys.stderr)
        flag = getattr(args, "_flags", {}).get(getattr(exc, "param", None) or "")
        hint = " ".join(x for x in (exc.hint, f"(option {flag})" if flag else "") if x)
        if hint:
            print(f"  {printable(hint)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("imagent: cancelled", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of stdout went away: not a bug (main)
        raise
    except Exception as exc:  # a bug: say so plainly, traceback only on request
        if os.environ.get("IMAGENT_DEBUG"):
            raise
        from tools.generate import printable

        print(f"imagent: internal error: {type(exc).__name__}: {printable(exc)}", file=sys.stderr)
        print("  This is a bug in imagent. Run again with IMAGENT_DEBUG=1 for the traceback.", file=sys.stderr)
        return 70


if __name__ == "__main__":
    sys.exit(main())
