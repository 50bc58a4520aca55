"""Batch throughput (issue 7): images per minute for 100 prompts, and the cost of --resume on a
finished batch (goal: under 2 s). Prints figures; asserts nothing.

Runs the real command line in a subprocess, as a user would:
  imagent batch prompts.txt --out DIR --json --no-progress      (plain generation, model defaults)
  imagent batch prompts.txt --out DIR --json --no-progress --resume   (x3, every item already done)
The prompts are 100 demo-world prompts over its six categories when the demo model is installed,
else the first 100 PartiPrompts on a tiny random SD pipeline (the output says which).
Throughput is reported from the batch's own clock (model load excluded) and from the wall clock
of the whole process (start-up and model load included); the per-item overhead of the batch
(safety checks, PNG + metadata, gallery row, fsynced record) is the item time minus the backend's
own generate time.

  python bench/batch_bench.py
  python bench/batch_bench.py --n 100 --model PATH --steps 20
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PARTI = Path("/work/shared/data/prompts/partiprompts/PartiPrompts.tsv")


def setup(n: int, model: str | None, tmp: Path) -> tuple[str, list[str], str]:
    from tools import demo

    if model:
        return model, _parti(n), f"given: {model}"
    try:
        demo.pipeline_path()
        from tools.demo import world

        per = -(-n // len(world.CATEGORIES))
        prompts = [p for c in world.CATEGORIES for p in world.prompt_set(c, per, seed=1)][:n]
        return "demo", prompts, "demo model, demo-world prompts"
    except Exception as exc:  # noqa: BLE001 - report and fall back
        sys.path.insert(0, str(ROOT / "tests"))
        from tiny_models import save_tiny_sd

        return str(save_tiny_sd(tmp / "tiny-sd")), _parti(n), f"tiny random SD 32x32, PartiPrompts (demo: {exc})"


def _parti(n: int) -> list[str]:
    if PARTI.exists():
        rows = PARTI.read_text(encoding="utf-8").splitlines()[1:n + 1]
        return [r.split("\t")[0] for r in rows]
    return [f"{k} red circles" for k in ("two", "three", "four")] * (n // 3 + 1)


def run(cmd: list[str], env: dict) -> tuple[float, dict, str]:
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode not in (0, 1):
        raise SystemExit(f"batch failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return wall, json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--model")
    ap.add_argument("--steps", help="steps sweep value(s) (default: the model's own)")
    ap.add_argument("--safety", default="standard")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="imagent-batch-bench-"))
    model, prompts, note = setup(args.n, args.model, tmp)
    src = tmp / "prompts.txt"
    src.write_text("\n".join(prompts) + "\n")
    env = {**os.environ, "IMAGENT_HOME": str(tmp / "home")}
    cmd = [sys.executable, "-m", "agent.cli", "batch", str(src), "--out", str(tmp / "out"), "--json", "--no-progress",
           "--model", model, "--safety", args.safety] + (["--steps", args.steps] if args.steps else [])
    wall, summary, _ = run(cmd, env)
    recs = [json.loads(x) for x in (tmp / "out" / "records.jsonl").read_text().splitlines()]
    ok = [r for r in recs if r["status"] == "ok"]
    resumes = [run(cmd + ["--resume"], env)[0] for _ in range(3)]
    after = len((tmp / "out" / "records.jsonl").read_text().splitlines())
    print(json.dumps({
        "model": note, "prompts": len(prompts), "safety": args.safety,
        "steps": ok[0]["params"]["steps"] if ok else None, "size": [ok[0]["params"].get("width"),
                                                                  ok[0]["params"].get("height")] if ok else None,
        "ok": summary["ok"], "failed": summary["failed"],
        "batch_seconds": summary["seconds"], "images_per_minute": summary["images_per_minute"],
        "wall_seconds": round(wall, 2), "images_per_minute_wall": round(60 * summary["ok"] / wall, 2),
        "median_item_s": round(statistics.median(r["timings"]["seconds"] for r in ok), 4) if ok else None,
        "median_generate_s": round(statistics.median(r["timings"].get("generate_s", 0) for r in ok), 4) if ok else None,
        "median_batch_overhead_s": round(statistics.median(r["timings"]["seconds"] - r["timings"].get("generate_s", 0)
                                                           for r in ok), 4) if ok else None,
        "resume_finished_s": [round(x, 3) for x in resumes], "resume_median_s": round(statistics.median(resumes), 3),
        "records_after_resumes": after, "goal_resume": "< 2 s",
    }, indent=2))


if __name__ == "__main__":
    main()
