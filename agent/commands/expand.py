"""Expand a rough idea into a structured prompt and show it, without generating.

  imagent expand "a cat coding at night"                    template expander (offline default)
  imagent expand "a cat coding at night" --style cinematic  apply a style preset (`imagent styles`)
  imagent expand "a cat coding at night" --llm gpt-4o-mini  expand with an LLM
  imagent expand "two red circles" --family sd --json       render for a model family, as JSON

Also prints the checklist the critique loop verifies on every image (objects with counts and
attributes, relations, background, nothing else, the holistic score), numbered, with the ids
that `imagent run --drop` takes; --require and --drop preview a corrected one:

  imagent expand "two red circles" --require "a blue square" --drop only

The LLM is used when --llm or IMAGENT_LLM_MODEL names one (IMAGENT_LLM_BASE_URL points at any
OpenAI-compatible server: llama.cpp, vLLM, Ollama). If it fails, the template expander is used
with a warning (IMAGENT_LLM_FALLBACK=error makes it an error instead).
Families: demo (subject only, for the built-in demo model), sd (tags), sdxl / flux / openai (prose);
guessed from --model/--backend when not given.
"""
from __future__ import annotations

import argparse

from agent.commands.common import add_checklist_options, backend_chain, emit, note, settings_from, warn
from agent.render import FAMILIES


def add_expansion_options(p: argparse.ArgumentParser, *, for_generate: bool = False) -> None:
    g = p.add_argument_group("prompt expansion")
    if for_generate:
        g.add_argument("--idea", action="store_true",
                       help="treat PROMPT as a rough idea: expand it into a structured prompt, then generate")
        g.add_argument("--raw", action="store_true",
                       help="use PROMPT exactly as written, no expansion (the default unless an expansion option is given)")
    g.add_argument("--style", metavar="NAME", help="style preset (see `imagent styles`)" +
                   ("; implies --idea" if for_generate else ""))
    g.add_argument("--llm", metavar="MODEL", help="expand with this LLM (default: $IMAGENT_LLM_MODEL, else offline)")
    g.add_argument("--template", action="store_true",
                   help="use the offline template expander even when an LLM is configured")
    g.add_argument("--family", choices=FAMILIES, help="render for this model family (default: guessed from the model)")


def add_arguments(p) -> None:
    p.add_argument("idea", help="the rough idea, e.g. \"a cat coding at night\" (- reads it from stdin)")
    add_expansion_options(p)
    p.add_argument("--negative", default="", help="extra negatives to add (comma-separated)")
    p.add_argument("--model", help="the model the prompt is for (guesses the family; default: $IMAGENT_MODEL)")
    p.add_argument("--backend", type=backend_chain, metavar="NAME[,NAME...]",
                   help="the backend the prompt is for (diffusers or openai; of a chain, the first)")
    add_checklist_options(p)
    p.add_argument("--json", action="store_true", help="print the expansion as one JSON object")


def expansion_from(args, settings, idea: str):
    """Run the shared glue (agent.expand.expand_idea) with the command's options."""
    from agent.expand import expand_idea

    return expand_idea(idea, settings, style=args.style, family=args.family, llm=args.llm,
                       use_llm=False if args.template else None, negative=getattr(args, "negative", "") or "")


def run(args) -> int:
    from agent.commands.common import text_or_stdin

    args.idea = text_or_stdin(args.idea)
    from agent.checklist_edits import preview_checklist

    settings = settings_from(args)
    expansion = expansion_from(args, settings, args.idea)
    checklist, more = preview_checklist(args.idea, expansion.spec.subject, require=args.require, drop=args.drop)
    warn(expansion.warnings + more)
    s = expansion.spec
    rows = [("idea", expansion.idea),
            ("expander", f"{expansion.expander}   style preset: {expansion.style_preset or '-'}   "
                         f"family: {expansion.rendered.family}"),
            ("subject", s.subject), ("style", s.style), ("lighting", s.lighting), ("composition", s.composition),
            ("quality", ", ".join(s.quality)), ("negatives", ", ".join(s.negatives)), ("extras", ", ".join(s.extras))]
    lines = [f"{key + ':':<13}{value or '-'}" for key, value in rows]
    lines += ["", f"positive: {expansion.positive}", f"negative: {expansion.negative or '-'}", "",
              f"requirements ({checklist.source}; the critique loop checks each one):"]
    lines += [f"  {i:>2}  {r.id:<9}{r.kind:<11}{r.text}" for i, r in enumerate(checklist.requirements, 1)]
    emit(args, {**expansion.model_dump(mode="json"), "checklist": checklist.to_json()}, lines)  # escaped: LLM text
    if expansion.rendered.family == "demo" and not args.json:
        note("imagent: the demo model reads only its caption grammar, so only the subject is sent; "
             "use --family sd|sdxl|flux|openai to see the full rendering.")
    return 0
