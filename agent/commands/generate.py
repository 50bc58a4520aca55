"""Generate images from a prompt.

  imagent generate "two red circles"                      text-to-image
  imagent generate "a cat" --init-image in.png --strength 0.6   img2img
  imagent generate "a cat" --init-image in.png --mask m.png     inpainting (white = repaint)

Prints the saved PNG paths (or a JSON record with --json). Each PNG carries its parameters, so
`imagent show` and `imagent rerun` work on it.
"""
from __future__ import annotations

from agent.commands.common import (add_generation_options, add_model_options, add_output_options, emit,
                                   progress_bar, request_fields, session_from, warn)
from agent.errors import InvalidInput
from tools.generate import GenerateRequest


def add_arguments(p) -> None:
    p.add_argument("prompt", help="what to draw")
    add_generation_options(p)
    g = p.add_argument_group("editing")
    g.add_argument("--init-image", metavar="PATH", help="start from this image (img2img)")
    g.add_argument("--strength", type=float, default=0.75,
                   help="how much of --init-image to change, 0..1 (default: 0.75)")
    g.add_argument("--mask", metavar="PATH", help="inpaint only where the mask is white (needs --init-image)")
    add_model_options(p)
    add_output_options(p)


def run(args) -> int:
    session = session_from(args)
    fields = request_fields(args, session.settings)
    if args.mask and not args.init_image:
        raise InvalidInput("--mask needs --init-image.", "Pass the image to inpaint with --init-image PATH.")
    if args.init_image:
        fields.pop("width"), fields.pop("height")
        if args.size:
            raise InvalidInput("--size cannot be combined with --init-image.",
                               "The output has the size of the input image; resize it first.")
        request, inputs = session.edit_request(args.prompt, args.init_image, mask_path=args.mask,
                                               strength=args.strength, **fields)
    else:
        request, inputs = GenerateRequest(prompt=args.prompt, **fields), None
    with progress_bar(args) as sink:
        outcome = session.generate(request, out_dir=args.out, progress=sink, inputs=inputs)
    warn(outcome.warnings)
    for b in outcome.blocked:
        warn([f"image with seed {b['seed']} was blocked ({b['category']}) and not saved"])
    emit(args, outcome.to_json(), [str(s.path) for s in outcome.images])
    if not args.json:
        seeds = ", ".join(str(s.seed) for s in outcome.images)
        print(f"imagent: seed {seeds}; run {outcome.run_id}", file=__import__("sys").stderr)
    return 0
