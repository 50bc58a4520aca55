"""Upscale time for one 256x256 image -> 1024x1024, per method (CPU, seconds; a figure, not a test).

  .venv/bin/python bench/upscale_bench.py [--size 256] [--scale 4] [--methods lanczos,realesrgan-anime,...]
        [--threads N] [--hires-model PATH] [--json]

Model loading is timed separately from the upscale itself. hires-fix runs only with --hires-model
(a diffusers folder for the img2img refine); sd-x4 only where its weights are present locally.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image, ImageDraw  # noqa: E402

from tools.errors import ImagentError  # noqa: E402
from tools.upscale import METHODS, Upscaler  # noqa: E402


def test_image(size: int) -> Image.Image:
    im = Image.new("RGB", (size, size), (235, 235, 225))
    d = ImageDraw.Draw(im)
    for i, color in enumerate(["red", "green", "blue", "orange", "purple"]):
        x = (i * 53) % (size - 60)
        y = (i * 97) % (size - 60)
        (d.ellipse if i % 2 else d.rectangle)((x, y, x + 50, y + 40), fill=color, outline="black", width=2)
    d.text((10, size - 20), "imagent 256", fill="black")
    return im


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--methods", default="lanczos,realesrgan-anime,realesrgan-anime-hq,realesrgan,sd-x4,hires-fix")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--hires-model", help="diffusers folder for the hires-fix refine step")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    image = test_image(a.size)
    up = Upscaler(threads=a.threads)
    rows = []
    for method in a.methods.split(","):
        row = {"method": method, "input": f"{a.size}x{a.size}", "scale": a.scale}
        kwargs = {}
        try:
            if method == "hires-fix":
                if not a.hires_model:
                    raise ImagentError("skipped: pass --hires-model PATH for the img2img refine")
                import torch

                from tools.diffusers_backend import DiffusersBackend

                kwargs = dict(backend=DiffusersBackend(a.hires_model, "cpu", torch.float32), prompt="coloured shapes",
                              strength=0.3, steps=10, seed=0)
            t0 = time.perf_counter()
            if method.startswith("realesrgan"):
                from tools.upscale import _ESRGAN

                up._net(_ESRGAN[method][a.scale])  # load outside the timed upscale
            elif method == "sd-x4":
                up._sd_pipe()
            row["load_s"] = round(time.perf_counter() - t0, 2)
            t1 = time.perf_counter()
            result = up.upscale(image, a.scale, method, **kwargs)
            row["upscale_s"] = round(time.perf_counter() - t1, 2)
            row["output"] = "x".join(map(str, result.image.size))
            row["model"] = result.model
        except ImagentError as exc:
            row["skipped"] = str(exc)
        rows.append(row)
        print(json.dumps(row) if a.json else
              f"{method:20s} " + (f"{row['upscale_s']:8.2f} s  (load {row['load_s']:.2f} s)  -> {row['output']}  "
                                  f"{row['model']}" if "upscale_s" in row else row["skipped"]), flush=True)
    print(f"# {a.threads} threads, {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
