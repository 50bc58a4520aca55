"""Reproduce an image from its metadata (same model, parameters, seed and post-processing; PNG,
JPEG or WebP).

Prints the new path; `identical: yes|no` on stderr says whether the pixels match the original
(they do for the same model, parameters and device).
"""
from __future__ import annotations


import numpy as np

from agent.commands.common import add_output_options, emit, note, progress_bar, warn
from agent.config import load_settings
from agent.session import Session, check_rerunnable
from tools.images import load_image
from tools.metadata import read_metadata


def add_arguments(p) -> None:
    p.add_argument("image", help="an image (PNG, JPEG or WebP) written by imagent")
    p.add_argument("--model", help="use this model instead of the one recorded (results will differ)")
    p.add_argument("--device", help="auto | cpu | cuda | mps")
    p.add_argument("--dtype", help="auto | fp32 | fp16 | bf16")
    add_output_options(p)


def run(args) -> int:
    record = check_rerunnable(read_metadata(args.image)["record"], args.image)
    settings = load_settings(model=args.model or record["model"], backend=record.get("backend"),
                             device=args.device, dtype=args.dtype,
                             safety=(record.get("safety") or {}).get("level"))
    if args.model:
        warn([f"using --model {args.model} instead of {record['model']}: pixels will differ"])
    session = Session(settings)
    with progress_bar(args, "rerunning") as call:
        outcome = session.rerun(args.image, out_dir=args.out, call=call, same_model=not args.model)
    new = outcome.images[0]
    same = bool(np.array_equal(np.asarray(load_image(args.image)), np.asarray(load_image(new.path))))
    payload = dict(outcome.to_json(), identical=same, original=str(args.image))
    emit(args, payload, [str(new.path)])
    if not args.json:
        note(f"imagent: identical: {'yes' if same else 'no'}")
    return 0
