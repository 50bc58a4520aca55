"""Benchmark the shipped demo pipeline and CLIP against the oracle (single shot).

    python bench/demo_world.py                       # every category's prompt set, 4 images each
    python bench/demo_world.py --prompts FILE        # lines 'prompt' or 'category<TAB>prompt'
    python bench/demo_world.py --categories counting position --n-prompts 12 --images 4

Prints oracle accuracy per category, CLIP statistics (AUC of the CLIP score separating
oracle-correct from incorrect generated images; top-1 retrieval of the true caption among 10
one-change distractors, on oracle-correct generated images and on rendered scenes) and the
time per image. --json writes everything machine-readable.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

GOALS = {"single_object": 0.95, "colors": 0.90, "two_object": 0.80, "counting": 0.70,
         "position": 0.60, "color_attr": 0.60}


def main(argv=None) -> int:
    import torch

    import tools.demo as demo
    from training import demo_evaluate as E
    from tools.demo.world import CATEGORIES

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", help="prompt file in the demo grammar")
    p.add_argument("--categories", nargs="*", default=list(CATEGORIES))
    p.add_argument("--n-prompts", type=int, default=None,
                   help="prompts per category (default: 18 single_object, 24 others)")
    p.add_argument("--images", type=int, default=4, help="images per prompt")
    p.add_argument("--steps", type=int, default=None, help="default: the shipped default")
    p.add_argument("--guidance", type=float, default=None, help="default: the shipped default")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-clip", action="store_true")
    p.add_argument("--json", help="write results here")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)

    pairs = E.read_prompt_file(a.prompts) if a.prompts else E.category_prompts(a.categories, a.n_prompts, a.seed)
    d = demo.defaults()
    steps = a.steps or d["num_inference_steps"]
    guidance = d["guidance_scale"] if a.guidance is None else a.guidance
    t0 = time.time()
    pipe = demo.load_pipeline()
    print(f"pipeline {demo.pipeline_path()} loaded in {time.time() - t0:.1f}s; "
          f"{len(pairs)} prompts x {a.images} images, {steps} steps, guidance {guidance}")
    res = E.single_shot(pipe, n_images=a.images, seed=a.seed, steps=steps, guidance=guidance,
                        pairs=pairs)
    by = res["by_category"]
    print(f"\n{'category':<15}{'prompts':>8}{'images':>8}{'accuracy':>10}{'goal':>7}")
    for c in CATEGORIES:
        if c in by:
            b = by[c]
            print(f"{c:<15}{b['n_prompts']:>8}{b['n_images']:>8}{b['accuracy']:>10.3f}{GOALS[c]:>7.2f}")
    n_img = sum(b["n_images"] for b in by.values())
    overall = sum(b["n_correct"] for b in by.values()) / max(1, n_img)
    print(f"{'overall':<15}{len(pairs):>8}{n_img:>8}{overall:>10.3f}")
    print(f"time per image: {res['s_per_image']:.3f} s ({steps} steps, CFG, batched, "
          f"{torch.get_num_threads()} threads)")
    out = {"steps": steps, "guidance": guidance, "images_per_prompt": a.images, "seed": a.seed,
           "by_category": by, "overall": overall, "s_per_image": res["s_per_image"]}
    if not a.no_clip:
        model, proc = demo.load_clip()
        cs = E.clip_stats(model, proc, res["results"], seed=a.seed)
        out["clip"] = cs
        fmt = lambda x: "n/a" if x is None else f"{x:.3f}"
        print(f"CLIP AUC (oracle-correct vs incorrect generated): {fmt(cs['auc_generated'])} "
              f"({cs['n_oracle_correct']}/{cs['n_generated']} correct)")
        print(f"CLIP top-1 vs 10 distractors: rendered scenes {fmt(cs['retrieval_rendered'])}, "
              f"oracle-correct generated {fmt(cs['retrieval_generated_correct'])}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
