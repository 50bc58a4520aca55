"""Generate images from a prompt.

  imagent generate "two red circles"                      text-to-image
  imagent generate "a cat" --init-image in.png --strength 0.6   img2img
  imagent generate "a cat" --init-image in.png --mask m.png     inpainting (white = repaint)
  imagent generate "a cat coding at night" --idea               expand the idea first, then generate
  imagent generate "a cat coding at night" --style watercolor   expand with a style preset

PROMPT is used exactly as written by default (--raw). With --idea or --style it is a rough idea:
it is expanded into a structured prompt (`imagent expand` shows the same thing without
generating), and both the idea and the structured prompt are stored in the PNG and the gallery.

Prints the saved image paths (or a JSON record with --json). Each image carries its parameters
(PNG text chunks, or EXIF with --format jpeg|webp), so `imagent show` and `imagent rerun` work on
it. --resize, --sharpen, --format and --quality post-process the saved image.
"""
from __future__ import annotations

from agent.commands.common import (add_generation_options, add_model_options, add_output_options, emit, note,
                                   post_from, progress_bar, request_fields, session_from, warn)
from agent.commands.expand import add_expansion_options
from agent.requests import expand_for_generate
from agent.errors import InvalidInput
from tools.generate import GenerateRequest


def add_arguments(p) -> None:
    p.add_argument("prompt", help="what to draw (a rough idea with --idea/--style; - reads it from stdin)")
    add_expansion_options(p, for_generate=True)
    add_generation_options(p)
    g = p.add_argument_group("editing")
    g.add_argument("--init-image", metavar="PATH", help="start from this image (img2img)")
    g.add_argument("--strength", type=float, default=0.75,
                   help="how much of --init-image to change, 0..1 (default: 0.75)")
    g.add_argument("--mask", metavar="PATH", help="inpaint only where the mask is white (needs --init-image)")
    add_model_options(p)
    add_output_options(p, post=True)


def run(args) -> int:
    from agent.commands.common import text_or_stdin

    args.prompt = text_or_stdin(args.prompt)
    post = post_from(args)
    session = session_from(args)
    fields = request_fields(args, session.settings)
    prompt, idea, spec, extra = args.prompt, None, None, None
    expand = bool(args.idea or args.style or args.llm or args.template or args.family)
    if args.raw and expand:
        raise InvalidInput("--raw uses the prompt as written, so it cannot be combined with --idea, --style, "
                           "--llm, --template or --family.", "Drop --raw to expand the idea, or drop the expansion options.")
    if expand:  # before any record is written
        exp = expand_for_generate(session, args.prompt, style=args.style, negative=args.negative or "",
                                  family=args.family, llm=args.llm, use_llm=False if args.template else None)
        warn(exp.expansion.warnings)
        prompt, idea, spec, extra = exp.prompt, exp.idea, exp.spec, exp.extra
        fields["negative_prompt"] = exp.negative
        note(f"imagent: expanded ({exp.expansion.expander}, {exp.expansion.rendered.family}): {prompt}")
    if args.mask and not args.init_image:
        raise InvalidInput("--mask needs --init-image.", "Pass the image to inpaint with --init-image PATH.")
    if args.init_image:
        fields.pop("width"), fields.pop("height")
        if args.size:
            raise InvalidInput("--size cannot be combined with --init-image.",
                               "The output has the size of the input image; resize it first.")
        request, inputs = session.edit_request(prompt, args.init_image, mask_path=args.mask,
                                               strength=args.strength, **fields)
    else:
        request, inputs = GenerateRequest(prompt=prompt, **fields), None
    with progress_bar(args) as call:
        outcome = session.generate(request, idea=idea, spec=spec, out_dir=args.out, call=call, inputs=inputs,
                                   extra=extra, post=post)
    warn(outcome.warnings)
    for b in outcome.blocked:
        warn([f"image with seed {b['seed']} was blocked ({b['category']}) and not saved"])
    emit(args, outcome.to_json(), [str(s.path) for s in outcome.images])
    if not args.json:
        seeds = ", ".join(str(s.seed) for s in outcome.images)
        note(f"imagent: seed {seeds}; run {outcome.run_id}")
    return 0
