"""Critique-loop benchmark on the demo world: every arm side by side in one run, oracle-judged.

Two sets of categories: the six GenEval-style ones (single_object, two_object, counting, colors,
position, color_attr: the demo prompt sets) and four compositional ones sampled from the grammar
(tools.demo.sampling.compositional_prompt_set): relation_background, relation_same_shape,
relation_same_colour, two_counted_groups. `--prompt-seed` picks the sample: seed 1 is the set the
verifier was tuned on (in-sample; so is seed 3); seed 2, the default, is the held-out set.

The judge is the oracle's scene parse (colours and shapes from the pixels) with GenEval's
relation rule (`tools.demo.oracle.relative_position`, written apart from the verifier's rule):
the GenEval-style categories by their GenEval rule (position: the two shapes and the relation;
color_attr: the colour-shape pairs), the compositional ones strictly (every object with its
colour, shape and count, nothing else, the relation, the background). The loop never sees it.

For each prompt and each of S base seeds:
  pool:    K plain images with seeds seed..seed+K-1 (the loop's first round uses the first ones);
  single:  the pool's first image;
  loop:    `Session.run` with R rounds x N candidates from the same seed (requirements checked by
           the learned detector + CLIP; repairs by local edit / layout / fresh seeds);
  best-of-M by CLIP:     of the pool's first M images, the one with the highest CLIP score;
  best-of-M by verifier: of the same M, the one passing the most requirements (then CLIP);
  any-of-M (ceiling):    whether any of the M is correct.
M is the loop's mean images per run, rounded up ("equal compute"); the table for every M from 1
to K is in the JSON. Everything is judged by the exact oracle (never used by the loop). Also
prints the verifier's agreement with the oracle per requirement kind on the pool's images.

  python bench/loop_bench.py                          # 25 prompts/category, 2 seeds, R=3, N=2, K=8
  python bench/loop_bench.py --n-prompts 4 --seeds 1  # a quick look
  python bench/loop_bench.py --compare-latent         # also the loop with layout repairs composed in latents

The loop's layout repair uses the demo's layout ControlNet (settings.layout_repair auto);
`--compare-latent` adds the loop arm with `layout_repair=latent` (per-object generation moved
into its box in latent space), run from the same seeds.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-prompts", type=int, default=25, help="prompts per category")
    ap.add_argument("--seeds", type=int, default=2, help="base seeds per prompt")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--candidates", type=int, default=2)
    ap.add_argument("--pool", type=int, default=8, help="plain images per prompt and seed for the best-of arms")
    ap.add_argument("--threshold", type=float, default=None, help="relative holistic floor (default: the loop's)")
    ap.add_argument("--categories", nargs="*", help="default: all ten (six GenEval-style, four compositional)")
    ap.add_argument("--prompt-seed", type=int, default=2,
                    help="the sample of prompts (2, the default: held out; any other, e.g. 1 and 3: tuning sets)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compare-latent", action="store_true",
                    help="also run the loop with layout repairs composed in latents (no ControlNet)")
    ap.add_argument("--json-out", help="also write the full results to this file")
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    from agent.config import load_settings
    from agent.session import Session
    from training.demo_evaluate import category_prompts
    from tools.demo.oracle import check, requirement_truth
    from tools.demo.world import CATEGORIES, COMPOSITIONAL, compositional_prompt_set
    from tools.images import load_image

    os.environ.setdefault("IMAGENT_HOME", tempfile.mkdtemp(prefix="imagent-loop-bench-"))
    session = Session(load_settings(model="demo", clip_model="demo", safety="off"))
    latent = Session(load_settings(model="demo", clip_model="demo", safety="off", layout_repair="latent")) \
        if a.compare_latent else None
    backend, scorer, verifier = session.backend(), session.scorer(), session.verifier()
    pipe, d = backend.pipeline(), session.model_defaults()
    cats = a.categories or list(CATEGORIES) + list(COMPOSITIONAL)
    pairs = category_prompts([c for c in cats if c in CATEGORIES], a.n_prompts, seed=a.prompt_seed) + \
        [(c, p) for c in cats if c in COMPOSITIONAL for p in compositional_prompt_set(c, a.n_prompts, a.prompt_seed)]

    def judge(image, prompt, cat) -> bool:
        return check(image, prompt, "strict" if cat in COMPOSITIONAL else cat).correct

    out_dir = tempfile.mkdtemp(prefix="imagent-loop-bench-out-")
    runs = []
    agree, kind_n, true_n = defaultdict(int), defaultdict(int), defaultdict(int)
    t_start = time.perf_counter()
    for k, (cat, prompt) in enumerate(pairs):
        checklist, _ = session.checklist(prompt)
        for s in range(a.seeds):
            seed = 1000 * s + 17
            t0 = time.perf_counter()
            # one batched call (a generator per image, so image i is the seed+i image up to float noise)
            pool = pipe([prompt] * a.pool, num_inference_steps=d["steps"], guidance_scale=d["cfg"],
                        generator=[torch.Generator("cpu").manual_seed(seed + i) for i in range(a.pool)]).images
            t1 = time.perf_counter()
            correct = [judge(im, prompt, cat) for im in pool]
            clip = scorer.score(pool, prompt)
            vkeys = []
            for im in pool:
                checks = verifier.verify(im, checklist)
                truth = requirement_truth(im, checklist)
                for v in checks:
                    if v.id in truth:
                        for key in (v.kind, (cat, v.kind)):
                            kind_n[key] += 1
                            true_n[key] += int(truth[v.id])
                            agree[key] += int(bool(v.passed) == truth[v.id])
                passed = sum(1 for v in checks if v.passed)
                vkeys.append((passed == len(checks), passed))
            t2 = time.perf_counter()
            run = session.run(prompt, rounds=a.rounds, candidates=a.candidates, threshold=a.threshold, raw=True,
                              request_fields={"seed": seed}, out_dir=out_dir)
            t3 = time.perf_counter()
            best = load_image(run.best.path)
            row = {"category": cat, "prompt": prompt, "seed": seed, "pool_correct": correct, "clip": clip,
                   "vkeys": vkeys, "loop_correct": judge(best, prompt, cat), "met": run.met,
                   "images": run.images, "loop_s": t3 - t2, "image_s": (t1 - t0) / a.pool,
                   "repairs": [r["repair"] for r in run.rounds]}
            if latent is not None:
                t4 = time.perf_counter()
                lrun = latent.run(prompt, rounds=a.rounds, candidates=a.candidates, threshold=a.threshold, raw=True,
                                  request_fields={"seed": seed}, out_dir=out_dir)
                row.update(latent_correct=judge(load_image(lrun.best.path), prompt, cat),
                           latent_met=lrun.met, latent_images=lrun.images, latent_s=time.perf_counter() - t4)
            runs.append(row)
        print(f"[{k + 1}/{len(pairs)}] {cat}: {prompt}", file=sys.stderr, flush=True)
    mean_images = sum(r["images"] for r in runs) / len(runs)
    m_eq = min(a.pool, max(1, math.ceil(mean_images)))

    def best_of(r, m, by):
        idx = range(m)
        if by == "clip":
            i = max(idx, key=lambda j: r["clip"][j])
        elif by == "verifier":
            i = max(idx, key=lambda j: (r["vkeys"][j], r["clip"][j]))
        else:
            return any(r["pool_correct"][:m])
        return r["pool_correct"][i]

    def summary(rows):
        n = len(rows)
        return {"runs": n, "single": sum(r["pool_correct"][0] for r in rows) / n,
                "loop": sum(r["loop_correct"] for r in rows) / n,
                "best_clip": sum(best_of(r, m_eq, "clip") for r in rows) / n,
                "best_verifier": sum(best_of(r, m_eq, "verifier") for r in rows) / n,
                "any": sum(best_of(r, m_eq, "any") for r in rows) / n,
                "met": sum(r["met"] for r in rows) / n,
                "met_but_wrong": sum(r["met"] and not r["loop_correct"] for r in rows) / n,
                "images": sum(r["images"] for r in rows) / n, "loop_s": sum(r["loop_s"] for r in rows) / n,
                "image_s": sum(r["image_s"] for r in rows) / n,
                **({"latent": sum(r["latent_correct"] for r in rows) / n,
                    "latent_images": sum(r["latent_images"] for r in rows) / n,
                    "latent_s": sum(r["latent_s"] for r in rows) / n} if latent is not None else {})}

    table = {c: summary([r for r in runs if r["category"] == c]) for c in cats}
    geneval = [r for r in runs if r["category"] in CATEGORIES]
    compositional = [r for r in runs if r["category"] in COMPOSITIONAL]
    if geneval and compositional:
        table["geneval-style"] = summary(geneval)
        table["compositional"] = summary(compositional)
    table["overall"] = summary(runs)
    print(f"equal compute: best-of-{m_eq} (the loop's mean images per run is {mean_images:.2f}); "
          f"{a.rounds} rounds x {a.candidates} candidates")
    head = ["category", "runs", "single", "loop", f"clip@{m_eq}", f"verif@{m_eq}", f"any@{m_eq}", "met",
            "met&wrong", "img/run", "s/run"] + (["latent", "lat img", "lat s"] if latent is not None else [])
    print(f"prompt seed {a.prompt_seed} ({'held out' if a.prompt_seed == 2 else 'in-sample: a tuning set'})")
    print("".join(f"{h:>11}" if i else f"{h:<21}" for i, h in enumerate(head)))
    for c, t in table.items():
        vals = [t["runs"], t["single"], t["loop"], t["best_clip"], t["best_verifier"], t["any"], t["met"],
                t["met_but_wrong"], t["images"], t["loop_s"]] + \
            ([t["latent"], t["latent_images"], t["latent_s"]] if latent is not None else [])
        print(f"{c:<21}" + "".join(f"{v:>11}" if isinstance(v, int) else f"{v:>11.3f}" for v in vals))
    print("verifier agreement with the oracle per requirement kind (pool images), then per category:")
    for key in sorted(kind_n, key=lambda k: (isinstance(k, tuple), k)):
        name = key if isinstance(key, str) else f"{key[0]}/{key[1]}"
        print(f"  {name:<34}{agree[key] / kind_n[key]:.3f}  (n={kind_n[key]}, truly passing {true_n[key] / kind_n[key]:.3f})")
    curve = {m: {by: round(sum(best_of(r, m, by) for r in runs) / len(runs), 3) for by in ("clip", "verifier", "any")}
             for m in range(1, a.pool + 1)}
    print("best-of-M overall:", json.dumps(curve))
    print(f"{time.perf_counter() - t_start:.0f} s in all")
    result = {"bench": "loop", "prompt_seed": a.prompt_seed, "rounds": a.rounds, "candidates": a.candidates, "seeds": a.seeds, "pool": a.pool,
              "equal_compute_m": m_eq, "table": table, "curve": curve,
              "verifier_agreement": {(k if isinstance(k, str) else "/".join(k)): {
                  "agreement": agree[k] / kind_n[k], "n": kind_n[k], "true_share": true_n[k] / kind_n[k]}
                  for k in kind_n}}
    if a.json_out:
        Path(a.json_out).write_text(json.dumps({**result, "runs": runs}, indent=1))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
