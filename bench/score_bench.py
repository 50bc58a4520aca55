"""CLIP scoring throughput (images/s) at batch 1 and batch 16 on the CPU (a figure, not a test).

  .venv/bin/python bench/score_bench.py [--images 32] [--clip PATH_OR_HUB_ID] [--json]

Uses --clip if given, else the demo CLIP when tools.demo.clip_path() finds it, else a CLIPModel of
ViT-B/32 size (CLIPConfig defaults: 224 px, patch 32, 12+12 layers) with random weights, saved to a
temporary folder; the output says which. Throughput counts image embedding + scoring against one
text, with the model already loaded.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from PIL import Image, ImageDraw  # noqa: E402

from tools.score import Scorer, resolve_clip  # noqa: E402


def random_vit_b32(folder: Path) -> str:
    import torch
    from transformers import CLIPConfig, CLIPModel

    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_models import word_tokenizer

    tok = word_tokenizer(folder)
    torch.manual_seed(0)
    cfg = CLIPConfig()  # ViT-B/32 sizes
    cfg.text_config.vocab_size = len(tok)
    cfg.text_config.bos_token_id, cfg.text_config.eos_token_id, cfg.text_config.pad_token_id = 0, 1, 1
    CLIPModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


def pictures(n: int, size: int = 256) -> list[Image.Image]:
    out = []
    for i in range(n):
        im = Image.new("RGB", (size, size), "white")
        d = ImageDraw.Draw(im)
        d.ellipse((10 + i % 50, 20, 120 + i % 50, 130), fill=["red", "green", "blue", "yellow"][i % 4])
        out.append(im)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--clip")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    tmp = None
    if a.clip:
        model, which = a.clip, f"--clip {a.clip}"
    else:
        try:
            model, which = resolve_clip("demo"), "the demo CLIP"
        except Exception as exc:
            tmp = tempfile.TemporaryDirectory()
            model = random_vit_b32(Path(tmp.name) / "vit-b32-random")
            which = f"a random-weight CLIPModel of ViT-B/32 size (demo CLIP unavailable: {str(exc)[:80]})"
    images = pictures(a.images)
    results = {"model": which, "images": a.images, "threads": __import__("torch").get_num_threads()}
    for batch in (1, 16):
        scorer = Scorer(model, batch_size=batch)
        t0 = time.perf_counter()
        scorer.load()
        load = time.perf_counter() - t0
        scorer.score(images[:batch], "warm up")
        t1 = time.perf_counter()
        scorer.score(images, "two red circles")
        dt = time.perf_counter() - t1
        results[f"batch_{batch}"] = {"images_per_s": round(a.images / dt, 2), "seconds": round(dt, 3),
                                     "load_s": round(load, 2)}
    results["load_average"] = round(os.getloadavg()[0], 1)
    if a.json:
        print(json.dumps(results))
    else:
        print(f"model: {which}")
        for batch in (1, 16):
            r = results[f"batch_{batch}"]
            print(f"batch {batch:2d}: {r['images_per_s']:8.2f} images/s  ({a.images} images in {r['seconds']:.2f} s)")
        print(f"# torch threads {results['threads']}, load average {results['load_average']}")
    if tmp:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
