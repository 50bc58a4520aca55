"""Critique-loop benchmark on the demo world (issue 5). Prints figures; asserts nothing.

For every prompt of the per-category demo prompt sets and each of S seeds, compare:
  single shot: one image with that seed (the model's default steps and guidance);
  the loop:    `Session.run` with R rounds x N candidates from the same first seed, scored by
               the demo CLIP against the prompt; the final best image.
Both are judged by the exact oracle. The loop's compute is reported beside its accuracy
(images generated per prompt and seed, and seconds).

  python bench/loop_bench.py                          # 3 prompts/category, 2 seeds, R=3, N=2
  python bench/loop_bench.py --n-prompts 10 --seeds 4 --rounds 3 --candidates 4
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import defaultdict


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-prompts", type=int, default=3, help="prompts per category")
    ap.add_argument("--seeds", type=int, default=2, help="seeds per prompt")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--candidates", type=int, default=2)
    ap.add_argument("--threshold", type=float, default=None, help="relative threshold (default: the loop's)")
    ap.add_argument("--safety", default="off", help="safety level during the bench (default: off; shapes only)")
    ap.add_argument("--categories", nargs="*")
    a = ap.parse_args()

    from agent.config import load_settings
    from agent.session import Session
    from tools.demo.evaluate import category_prompts
    from tools.demo.oracle import check
    from tools.demo.world import CATEGORIES
    from tools.generate import GenerateRequest

    os.environ.setdefault("IMAGENT_HOME", tempfile.mkdtemp(prefix="imagent-loop-bench-"))
    session = Session(load_settings(model="demo", clip_model="demo", safety=a.safety))
    backend = session.backend()
    pairs = category_prompts(a.categories or CATEGORIES, a.n_prompts, seed=0)
    stats = defaultdict(lambda: {"n": 0, "single": 0, "loop": 0, "images": 0, "single_s": 0.0, "loop_s": 0.0,
                                 "met": 0})
    out_dir = tempfile.mkdtemp(prefix="imagent-loop-bench-out-")
    for k, (cat, prompt) in enumerate(pairs):
        for s in range(a.seeds):
            seed = 1000 * s + 17
            t0 = time.perf_counter()
            single = backend.generate(session._with_defaults(GenerateRequest(prompt, seed=seed))).images[0]
            t1 = time.perf_counter()
            run = session.run(prompt, rounds=a.rounds, candidates=a.candidates, threshold=a.threshold,
                              raw=True, request_fields={"seed": seed}, out_dir=out_dir)
            t2 = time.perf_counter()
            from tools.images import load_image

            best = load_image(run.best.path)
            st = stats[cat]
            st["n"] += 1
            st["single"] += int(check(single, prompt, cat).correct)
            st["loop"] += int(check(best, prompt, cat).correct)
            st["images"] += sum(len(r["seeds"]) for r in run.rounds)
            st["single_s"] += t1 - t0
            st["loop_s"] += t2 - t1
            st["met"] += int(run.met)
        print(f"[{k + 1}/{len(pairs)}] {cat}: {prompt}", file=sys.stderr, flush=True)
    rows = []
    total = defaultdict(float)
    for cat in (a.categories or CATEGORIES):
        st = stats[cat]
        if not st["n"]:
            continue
        row = {"category": cat, "runs": st["n"], "single_shot_acc": round(st["single"] / st["n"], 3),
               "loop_acc": round(st["loop"] / st["n"], 3), "images_per_run": round(st["images"] / st["n"], 2),
               "threshold_met": round(st["met"] / st["n"], 3),
               "single_s": round(st["single_s"] / st["n"], 3), "loop_s": round(st["loop_s"] / st["n"], 3)}
        rows.append(row)
        for key in ("n", "single", "loop", "images"):
            total[key] += st[key]
    print(f"{'category':<14}{'runs':>5}{'single':>8}{'loop':>8}{'img/run':>9}{'met':>6}{'s/single':>10}{'s/loop':>8}")
    for r in rows:
        print(f"{r['category']:<14}{r['runs']:>5}{r['single_shot_acc']:>8.3f}{r['loop_acc']:>8.3f}"
              f"{r['images_per_run']:>9.2f}{r['threshold_met']:>6.2f}{r['single_s']:>10.2f}{r['loop_s']:>8.2f}")
    if total["n"]:
        print(f"{'overall':<14}{int(total['n']):>5}{total['single'] / total['n']:>8.3f}{total['loop'] / total['n']:>8.3f}"
              f"{total['images'] / total['n']:>9.2f}")
    print(json.dumps({"bench": "loop", "rounds": a.rounds, "candidates": a.candidates, "seeds": a.seeds,
                      "threshold": run.threshold if pairs else None, "rows": rows}))


if __name__ == "__main__":
    main()
