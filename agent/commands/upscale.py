"""Upscale an image.

  imagent upscale photo.png                        Real-ESRGAN x4plus, 4x
  imagent upscale art.png --scale 2 --method realesrgan-anime
  imagent upscale img.png --method hires-fix --scale 2 --strength 0.3   upscale, then img2img

Methods: realesrgan (photos; x2, x4), realesrgan-anime (illustration, fast; x2, x3, x4),
realesrgan-anime-hq (x2, x4), lanczos (x2, x3, x4), sd-x4 (diffusers x4 upscaler where its
weights are present locally; x4), hires-fix (Real-ESRGAN anime, then img2img at low strength with
the generation model; uses the image's recorded prompt unless --prompt is given).
Real-ESRGAN runs on the CPU through ncnn, in tiles for large images. The output is safety-checked
and written as a PNG that records the source and the method.
"""
from __future__ import annotations

from agent.commands.common import add_model_options, add_output_options, emit, note, progress_bar, settings_from
from agent.session import Session
from tools.upscale import DEFAULT_METHOD, METHODS


def add_arguments(p) -> None:
    p.add_argument("image", help="the image to upscale (PNG, JPEG, WebP)")
    p.add_argument("--scale", type=int, default=4, choices=[2, 3, 4], help="factor (default: 4; 3 only where the method has it)")
    p.add_argument("--method", default=DEFAULT_METHOD, choices=list(METHODS),
                   help=f"how to upscale (default: {DEFAULT_METHOD})")
    g = p.add_argument_group("hires-fix and sd-x4")
    g.add_argument("--prompt", help="prompt to refine towards (default: the one recorded in the image)")
    g.add_argument("--strength", type=float, default=0.3, help="img2img strength for hires-fix, 0..1 (default: 0.3)")
    g.add_argument("--seed", type=int, help="seed for hires-fix / sd-x4")
    g.add_argument("--steps", type=int, default=20, help="denoising steps for hires-fix / sd-x4 (default: 20)")
    p.add_argument("--tile", type=int, help="Real-ESRGAN tile size in input pixels (default: 192; 0 = no tiles)")
    add_model_options(p)
    add_output_options(p)


def run(args) -> int:
    session = Session(settings_from(args))
    with progress_bar(args, f"upscale x{args.scale}") as call:
        outcome = session.upscale(args.image, scale=args.scale, method=args.method, out_dir=args.out, call=call,
                                  prompt=args.prompt, strength=args.strength, seed=args.seed, tile=args.tile,
                                  steps=args.steps)
    up = outcome.record["upscale"]
    emit(args, outcome.to_json(), [str(outcome.path)])
    if not args.json:
        note(f"imagent: {up['source_size'][0]}x{up['source_size'][1]} -> {up['size'][0]}x{up['size'][1]} with "
             f"{up['method']} ({up['model']}) in {outcome.record['timings']['upscale']:.1f}s")
    return 0
