"""Verifier agreement with the oracle, per requirement kind, on images the demo model generates.

    python bench/verifier_bench.py [--n-prompts 8] [--seeds 4] [--detector demo]

For each category of the demo prompt set, generates single-shot images (20 steps, the shipped
guidance), derives the checklist of each prompt, runs the verifier (learned detector + CLIP),
and compares each verdict with the oracle's reading of the same image. Prints agreement per
requirement kind, with the share of requirements that truly hold (a verifier that always says
"pass" scores that share), and the oracle-correct vs verifier-all-pass agreement per category.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-prompts", type=int, default=8)
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--detector", default="demo")
    p.add_argument("--threshold", type=float, default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    from agent.requirements import parse_checklist
    from tools import demo
    from tools.demo import oracle, world
    from tools.detect import Detector
    from tools.score import Scorer
    from tools.verify import DetectorVerifier

    pipe = demo.load_pipeline()
    d = demo.defaults()
    verifier = DetectorVerifier(Detector(a.detector, threshold=a.threshold), Scorer("demo"))
    agree, truth_share, n = defaultdict(int), defaultdict(int), defaultdict(int)
    cat_agree, cat_n = defaultdict(int), defaultdict(int)
    confusion = defaultdict(lambda: [0, 0, 0, 0])  # kind: tp fp fn tn (pass = positive)
    t0 = time.perf_counter()
    for cat in world.CATEGORIES:
        for prompt in world.prompt_set(cat, a.n_prompts):
            cl = parse_checklist(prompt)
            for seed in range(a.seeds):
                img = pipe(prompt, num_inference_steps=d["num_inference_steps"], guidance_scale=d["guidance_scale"],
                           generator=torch.Generator().manual_seed(1000 + seed)).images[0]
                truth = oracle.requirement_truth(img, cl)
                verdicts = {v.id: v for v in verifier.verify(img, cl)}
                kinds = {r.id: r.kind for r in cl.requirements}
                for rid, t in truth.items():
                    v = verdicts[rid].passed
                    k = kinds[rid]
                    n[k] += 1
                    agree[k] += int(v == t)
                    truth_share[k] += int(t)
                    confusion[k][{(True, True): 0, (True, False): 1, (False, True): 2, (False, False): 3}[(bool(v), t)]] += 1
                ok = oracle.check(img, prompt).correct
                allpass = all(verdicts[rid].passed for rid in truth)
                cat_n[cat] += 1
                cat_agree[cat] += int(ok == allpass)
    out = {"per_kind": {k: {"agreement": round(agree[k] / n[k], 3), "n": n[k],
                            "true_share": round(truth_share[k] / n[k], 3),
                            "tp_fp_fn_tn": confusion[k]} for k in n},
           "per_category_allpass_vs_oracle": {c: round(cat_agree[c] / cat_n[c], 3) for c in cat_n},
           "seconds": round(time.perf_counter() - t0, 1)}
    if a.json:
        print(json.dumps(out, indent=1))
    else:
        print(f"{'kind':<12}{'agreement':>10}{'n':>6}{'true share':>12}   tp/fp/fn/tn")
        for k, v in out["per_kind"].items():
            print(f"{k:<12}{v['agreement']:>10.3f}{v['n']:>6}{v['true_share']:>12.3f}   {v['tp_fp_fn_tn']}")
        print("all requirements pass vs oracle-correct, per category:")
        for c, v in out["per_category_allpass_vs_oracle"].items():
            print(f"  {c:<16}{v:.3f}")
        print(f"{out['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
