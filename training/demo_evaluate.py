"""Generation + oracle scoring per category, and CLIP statistics, as importable functions.

Used by `bench/demo_world.py` (single shot) and meant for the critique-loop benchmark: a loop
produces one final image per (prompt, seed), which `score_images` scores the same way.

    pipe = tools.demo.load_pipeline()
    res = single_shot(pipe, categories=CATEGORIES, n_images=4)
    res["by_category"]["counting"]["accuracy"]
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import numpy as np

from tools.demo import defaults
from tools.demo.oracle import Verdict, check
from tools.demo.world import CATEGORIES, distractors, parse, prompt_set, render, sample_scene


@dataclass
class PromptResult:
    prompt: str
    category: str
    verdicts: list[Verdict]
    images: list = field(default_factory=list, repr=False)

    @property
    def correct(self) -> list[bool]:
        return [v.correct for v in self.verdicts]


def read_prompt_file(path: str) -> list[tuple[str, str]]:
    """Lines 'prompt' or 'category<TAB or |>prompt'; blank lines and # comments skipped.
    Without a category, the prompt's own category (from the parser) is used."""
    out = []
    for line in open(path, encoding="utf-8"):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        for sep in ("\t", "|"):
            if sep in line:
                cat, prompt = (x.strip() for x in line.split(sep, 1))
                break
        else:
            cat, prompt = None, line
        scene = parse(prompt)
        cat = cat or scene.category
        if cat not in CATEGORIES:
            raise ValueError(f"unknown category {cat!r} in {path}")
        out.append((cat, prompt))
    return out


def generate(pipe, prompts: list[str], n_images: int = 4, seed: int = 0,
             steps: int | None = None, guidance: float | None = None,
             batch_size: int = 32) -> tuple[list[list], float]:
    """n_images per prompt; image i of every prompt uses seed + i. Returns (images, s/image)."""
    import torch

    d = defaults()
    steps = steps or d["num_inference_steps"]
    guidance = d["guidance_scale"] if guidance is None else guidance
    jobs = [(pi, i) for pi in range(len(prompts)) for i in range(n_images)]
    out: list[list] = [[None] * n_images for _ in prompts]
    t0 = time.perf_counter()
    for k in range(0, len(jobs), batch_size):
        chunk = jobs[k:k + batch_size]
        gens = [torch.Generator().manual_seed(seed + i) for _, i in chunk]
        with torch.no_grad():
            imgs = pipe([prompts[pi] for pi, _ in chunk], num_inference_steps=steps,
                        guidance_scale=guidance, generator=gens, height=d["height"],
                        width=d["width"]).images
        for (pi, i), im in zip(chunk, imgs):
            out[pi][i] = im
    per_image = (time.perf_counter() - t0) / max(1, len(jobs))
    return out, per_image


def score_images(prompts: list[str], categories: list[str], images: list[list]) -> list[PromptResult]:
    """Oracle verdicts for images[i] (a list) against prompts[i] under categories[i]."""
    return [PromptResult(p, c, [check(im, p, c) for im in ims], ims)
            for p, c, ims in zip(prompts, categories, images)]


def summarize(results: list[PromptResult]) -> dict:
    by: dict[str, dict] = {}
    for r in results:
        b = by.setdefault(r.category, {"n_prompts": 0, "n_images": 0, "n_correct": 0})
        b["n_prompts"] += 1
        b["n_images"] += len(r.verdicts)
        b["n_correct"] += sum(r.correct)
    for b in by.values():
        b["accuracy"] = b["n_correct"] / max(1, b["n_images"])
    return by


def category_prompts(categories=CATEGORIES, n_prompts: int | None = None, seed: int = 0):
    """(category, prompt) pairs from the deterministic per-category prompt sets."""
    return [(c, p) for c in categories for p in prompt_set(c, n_prompts, seed)]


def single_shot(pipe, categories=CATEGORIES, n_prompts: int | None = None, n_images: int = 4,
                seed: int = 0, steps: int | None = None, guidance: float | None = None,
                pairs: list[tuple[str, str]] | None = None) -> dict:
    """Generate and oracle-score once per (prompt, seed). Returns results + per-category summary."""
    pairs = pairs or category_prompts(categories, n_prompts, seed)
    prompts = [p for _, p in pairs]
    images, per_image = generate(pipe, prompts, n_images, seed, steps, guidance)
    results = score_images(prompts, [c for c, _ in pairs], images)
    return {"results": results, "by_category": summarize(results), "s_per_image": per_image}


# ----------------------------------------------------------------------------- CLIP

def clip_similarity(model, processor, images: list, texts: list[str]):
    """Cosine similarity matrix (images x texts) under the CLIP model."""
    import torch

    with torch.no_grad():
        ii = processor(images=images, return_tensors="pt")
        ti = processor.tokenizer(texts, padding="max_length", truncation=True,
                                 max_length=processor.tokenizer.model_max_length,
                                 return_tensors="pt")
        ie = model.get_image_features(pixel_values=ii.pixel_values)
        te = model.get_text_features(input_ids=ti.input_ids, attention_mask=ti.attention_mask)
        ie = getattr(ie, "pooler_output", ie)
        te = getattr(te, "pooler_output", te)
        ie = ie / ie.norm(dim=-1, keepdim=True)
        te = te / te.norm(dim=-1, keepdim=True)
    return (ie @ te.t()).numpy()


def auc(scores, labels) -> float | None:
    """Area under the ROC curve (Mann-Whitney); None when one class is empty."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    pos, neg = s[y], s[~y]
    if len(pos) == 0 or len(neg) == 0:
        return None
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (len(pos) * len(neg)))


def retrieval(model, processor, images: list, captions: list[str], n_distractors: int = 10,
              seed: int = 0) -> float:
    """How often the true caption scores above all of n one-change distractor captions."""
    rng = random.Random(f"retrieval-{seed}")
    hits = 0
    for im, cap in zip(images, captions):
        texts = [cap] + distractors(parse(cap), n_distractors, rng)
        sim = clip_similarity(model, processor, [im], texts)[0]
        hits += int(sim[0] > sim[1:].max())
    return hits / max(1, len(images))


def clip_stats(model, processor, results: list[PromptResult], n_rendered: int = 200,
               seed: int = 0) -> dict:
    """CLIP on generated images (AUC of the caption score for oracle-correct vs incorrect,
    retrieval on the oracle-correct ones) and on rendered ground-truth scenes (retrieval)."""
    scores, labels, good_imgs, good_caps = [], [], [], []
    for r in results:
        sim = clip_similarity(model, processor, r.images, [r.prompt])[:, 0]
        scores += sim.tolist()
        labels += r.correct
        for im, ok in zip(r.images, r.correct):
            if ok:
                good_imgs.append(im)
                good_caps.append(r.prompt)
    rng = random.Random(f"rendered-{seed}")
    r_imgs, r_caps = [], []
    for _ in range(n_rendered):
        sc = sample_scene(rng)
        r_imgs.append(render(sc, rng)[0])
        r_caps.append(sc.caption())
    return {
        "auc_generated": auc(scores, labels),
        "n_generated": len(scores), "n_oracle_correct": int(sum(labels)),
        "retrieval_generated_correct": retrieval(model, processor, good_imgs, good_caps, seed=seed)
        if good_imgs else None,
        "retrieval_rendered": retrieval(model, processor, r_imgs, r_caps, seed=seed),
    }


def main(argv=None):
    """Quick check of a checkpoint (or the shipped pipeline), e.g. to pick the guidance scale:

        python -m training.demo_evaluate --ckpt checkpoints/demo --guidance 3 5 --n-prompts 6
    """
    import argparse

    import torch

    p = argparse.ArgumentParser(prog="python -m training.demo_evaluate")
    p.add_argument("--ckpt", help="training checkpoint folder (default: the shipped pipeline)")
    p.add_argument("--no-ema", action="store_true")
    p.add_argument("--categories", nargs="*", default=list(CATEGORIES))
    p.add_argument("--n-prompts", type=int, default=6)
    p.add_argument("--images", type=int, default=2)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--guidance", type=float, nargs="*", default=[None])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--save", help="save a grid PNG of the first images here")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.ckpt:
        from pathlib import Path

        from training.demo_export import build_pipeline

        pipe, info = build_pipeline(Path(a.ckpt), use_ema=not a.no_ema)
        print(info)
    else:
        from tools.demo import load_pipeline

        pipe = load_pipeline()
    for g in a.guidance:
        res = single_shot(pipe, a.categories, a.n_prompts, a.images, steps=a.steps, guidance=g)
        accs = {c: round(b["accuracy"], 3) for c, b in res["by_category"].items()}
        print(f"guidance {g}: {accs} {res['s_per_image']:.3f}s/image", flush=True)
        if a.save:
            from PIL import Image

            rs = res["results"]
            grid = Image.new("RGB", (64 * a.images, 64 * len(rs)))
            for i, r in enumerate(rs):
                for j, im in enumerate(r.images):
                    grid.paste(im, (64 * j, 64 * i))
            grid.save(a.save)


if __name__ == "__main__":
    main()
