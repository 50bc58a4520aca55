"""Repairs head to head on the demo world: the same failed first images, each repaired once.

For each prompt of the chosen categories and each seed, the first image is generated (the loop's
first candidate) and checked by the verifier (the learned detector). Every image that fails a
requirement is repaired once by each of:
  edit:            keep what passes, erase/move/add in latent space (agent.layout.plan_edit);
  layout (latent): every object generated alone and moved into its planned box (plan_layout);
  layout (control): the planned boxes drawn by the demo's layout ControlNet, one generation;
  fresh seed:      the next seed, no repair (what best-of-N does).
The oracle judges every result (it is never used to repair). Prints accuracy after the repair,
diffusion samples per repair and seconds per repair.

  python bench/repair_bench.py                       # position + counting, 24 prompts x 4 seeds
  python bench/repair_bench.py --n-prompts 6 --seeds 2
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ARMS = ("edit", "layout_latent", "layout_control", "fresh_seed")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-prompts", type=int, default=24, help="prompts per category")
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--categories", nargs="*", default=["position", "counting"])
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    from agent.config import load_settings
    from agent.critique import locator
    from agent.layout import plan_edit, plan_layout
    from agent.session import Session
    from tools.demo.oracle import check
    from tools.generate import GenerateRequest
    from training.demo_evaluate import category_prompts

    os.environ.setdefault("IMAGENT_HOME", tempfile.mkdtemp(prefix="imagent-repair-bench-"))
    session = Session(load_settings(model="demo", clip_model="demo", safety="off"))
    backend, verifier = session.backend(), session.verifier()
    locate = locator(verifier)
    d = session.model_defaults()
    steps, cfg = d["steps"], d["cfg"]
    rows = []
    t_all = time.perf_counter()
    for cat, prompt in category_prompts(a.categories, a.n_prompts, seed=0):
        checklist, _ = session.checklist(prompt)
        for s in range(a.seeds):
            seed = 1000 * s + 17
            first = backend.generate(GenerateRequest(prompt, seed=seed, steps=steps, cfg=cfg)).images[0]
            checks = verifier.verify(first, checklist)
            if all(v.passed for v in checks):
                continue
            row = {"category": cat, "prompt": prompt, "seed": seed, "first_correct": check(first, prompt, cat).correct}
            kw = dict(width=64, height=64, seed=seed + 1, prompt=prompt, steps=steps, cfg=cfg)
            plans = {"edit": plan_edit(checklist, checks, **kw), "layout_latent": plan_layout(checklist, **kw),
                     "layout_control": plan_layout(checklist, layout_control=1.0, **kw)}
            for arm in ARMS:
                t0 = time.perf_counter()
                if arm == "fresh_seed":
                    image, n = backend.generate(GenerateRequest(prompt, seed=seed + 1, steps=steps, cfg=cfg)).images[0], 1
                elif plans[arm] is None:
                    row[arm] = None
                    continue
                else:
                    plan = plans[arm]
                    try:
                        out = backend.compose(plan, locate, first if plan.use_base else None)
                    except Exception as exc:  # noqa: BLE001  (a repair that fails counts as wrong)
                        row[arm] = {"correct": False, "images": 0, "s": time.perf_counter() - t0, "error": str(exc)}
                        continue
                    image, n = out.image, out.images_generated
                row[arm] = {"correct": check(image, prompt, cat).correct, "images": n, "s": time.perf_counter() - t0}
            rows.append(row)
        print(f"{cat}: {prompt} ({len(rows)} failed first images so far)", file=sys.stderr, flush=True)

    def summary(sel):
        out = {"failed_first_images": len(sel)}
        for arm in ARMS:
            done = [r[arm] for r in sel if r.get(arm) is not None]
            out[arm] = {"accuracy": round(sum(x["correct"] for x in done) / max(len(done), 1), 3),
                        "applicable": len(done),
                        "images": round(sum(x["images"] for x in done) / max(len(done), 1), 2),
                        "s": round(sum(x["s"] for x in done) / max(len(done), 1), 3)}
        return out

    table = {c: summary([r for r in rows if r["category"] == c]) for c in a.categories}
    table["overall"] = summary(rows)
    print(f"{'category':<12}{'failed':>8}" + "".join(f"{arm:>26}" for arm in ARMS))
    for c, t in table.items():
        cells = "".join(f"{t[arm]['accuracy']:>10.3f} {t[arm]['images']:>5.2f} img {t[arm]['s']:>5.2f}s"
                        for arm in ARMS)
        print(f"{c:<12}{t['failed_first_images']:>8}{cells}")
    print(f"{time.perf_counter() - t_all:.0f} s in all")
    print(json.dumps({"bench": "repair", "seeds": a.seeds, "prompts_per_category": a.n_prompts, "table": table}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
