"""`batch --ray` versus the in-process batch (issue 16): images per minute with 1 and 2 Ray actors
and in-process on the same items, the fixed Ray cost per item, and a throughput plan for 8 GPUs
worked out from the measured per-item figures. Prints figures; asserts nothing.

What it does, in one process (the demo model, demo-world prompts, safety off by default: the
checks cost the same either way):
  1. in-process: agent.batch.run_batch over N items on one Session;
  2. a local Ray (ray.init(num_cpus=2)); agent.ray_batch.run_ray_batch over the same N items with
     1 actor, then with 2 actors (each a new output folder);
  3. the fixed Ray cost: a round trip of a trivial actor method that takes an Item and returns a
     record-sized dict (what each batch item pays on top of its work), and the driver's fsynced
     record append (paid in-process too).
Each run reports its total (start-up and model load included) and its steady state: the time
between the first and the last record over N-1, that is, seconds per image once everything is
loaded. Per-item Ray overhead = (steady seconds per image with 1 actor - in-process) per item.
Threads: every process runs torch on OMP_NUM_THREADS threads (set it; 1 on a shared machine),
so 2 actors use two cores where the in-process batch uses one.

  OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 python bench/ray_bench.py
  python bench/ray_bench.py --n 16 --steps 20 --safety off
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

GPU_SECONDS = {  # assumed seconds per image on one datacenter GPU (A100/H100 class): the plan's inputs
    "SD-turbo / LCM, 512x512, 1-4 steps": 0.15,
    "SD 1.5, 512x512, 20 steps": 1.0,
    "SDXL, 1024x1024, 30 steps": 4.0,
}


class Echo:
    """A trivial actor: what a batch item costs in Ray with no work in it."""

    def echo(self, item, png, attempt):
        return {"key": item.key, "status": "ok", "params": dict(item.line.fields), "pad": "x" * 1500}


def clocked(run) -> dict:
    """Run `run(on_record)`; the total, the time to the first record and the steady seconds per image."""
    stamps: list[float] = []
    t0 = time.perf_counter()
    summary = run(lambda record, n, total: stamps.append(time.perf_counter()))
    total = time.perf_counter() - t0
    steady = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else None
    return {"ok": summary.ok, "failed": summary.failed, "total_s": round(total, 2),
            "first_record_s": round(stamps[0] - t0, 2) if stamps else None,
            "steady_s_per_image": round(steady, 4) if steady else None,
            "images_per_minute_steady": round(60 / steady, 1) if steady else None,
            "images_per_minute_total": round(60 * summary.ok / total, 1) if total else None}


def work_seconds(out: Path) -> float:
    recs = [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()]
    return round(statistics.median(r["timings"]["seconds"] for r in recs if r["status"] == "ok"), 4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=16, help="items (default 16)")
    ap.add_argument("--steps", type=int, help="denoising steps (default: the model's own)")
    ap.add_argument("--safety", default="off")
    ap.add_argument("--model", help="default: the demo model")
    args = ap.parse_args()

    from batch_bench import setup

    tmp = Path(tempfile.mkdtemp(prefix="imagent-ray-bench-"))
    os.environ["IMAGENT_HOME"] = str(tmp / "home")
    model, prompts, note = setup(args.n, args.model, tmp)
    from agent.batch import BatchOptions, RecordLog, Sweep, open_batch, plan, read_lines, run_batch
    from agent.config import load_settings
    from agent.ray_batch import run_ray_batch
    from agent.session import Session

    src = tmp / "prompts.txt"
    src.write_text("\n".join(prompts) + "\n")
    settings = load_settings(model=model, safety=args.safety)
    _, lines = read_lines(src)
    sweep, options = Sweep(seeds=(7,)), BatchOptions(steps=args.steps)
    items = plan(lines, sweep)

    def batch(out: Path, runner):
        log, done = open_batch(src, out, fmt="txt", sweep=sweep, options=options, resume=False)
        return runner(log, done, out)

    results = {}
    session = Session(settings)
    results["in_process"] = clocked(lambda cb: batch(tmp / "in", lambda log, done, out: run_batch(
        session, items, log, done, options, out, on_record=cb)))
    results["in_process"]["median_item_work_s"] = work_seconds(tmp / "in")
    del session

    import ray

    t = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    ray_start = time.perf_counter() - t
    for actors in (1, 2):
        out = tmp / f"ray{actors}"
        results[f"ray_{actors}_actor"] = clocked(lambda cb: batch(out, lambda log, done, out_: run_ray_batch(
            settings, items, log, done, options, out_, actors=actors, on_record=cb)))
        results[f"ray_{actors}_actor"]["median_item_work_s"] = work_seconds(out)

    # the fixed Ray cost of an item: one actor call carrying an Item and returning a record-sized dict
    echo = ray.remote(num_cpus=0)(Echo).remote()
    ray.get(echo.echo.remote(items[0], None, 1))
    calls = 200
    t = time.perf_counter()
    for i in range(calls):
        ref = echo.echo.remote(items[i % len(items)], None, 1)
        ray.wait([ref], num_returns=1)
        ray.get(ref)
    round_trip = (time.perf_counter() - t) / calls
    ray.kill(echo)
    ray.shutdown()
    log = RecordLog(tmp / "append-probe.jsonl")
    record = json.loads((tmp / "in" / "records.jsonl").read_text().splitlines()[0])
    t = time.perf_counter()
    for _ in range(50):
        log.append(record)
    append = (time.perf_counter() - t) / 50

    inp, r1, r2 = results["in_process"], results["ray_1_actor"], results["ray_2_actor"]
    overhead = r1["steady_s_per_image"] - inp["steady_s_per_image"]
    driver = round_trip + append  # the driver does these one record at a time: its ceiling
    o = max(overhead, round_trip)
    plan8 = {name: {"gpu_s_per_image": t, "ideal_images_per_min": round(8 * 60 / t),
                    "planned_images_per_min": round(min(8 * 60 / (t + o), 60 / driver)),
                    "efficiency": round(min(8 * 60 / (t + o), 60 / driver) / (8 * 60 / t), 3)}
             for name, t in GPU_SECONDS.items()}
    print(json.dumps({
        "model": note, "items": len(items), "steps": args.steps or "the model's", "safety": args.safety,
        "threads_per_process": os.environ.get("OMP_NUM_THREADS", "torch default"),
        "cpu_cores": os.cpu_count(), "ray_init_s": round(ray_start, 2), **results,
        "speedup_steady": {"ray_1_vs_in_process": round(inp["steady_s_per_image"] / r1["steady_s_per_image"], 3),
                           "ray_2_vs_in_process": round(inp["steady_s_per_image"] / r2["steady_s_per_image"], 3)},
        "fixed_ray_cost": {"actor_round_trip_ms": round(1000 * round_trip, 2),
                           "record_append_fsync_ms": round(1000 * append, 2),
                           "per_item_overhead_ms": round(1000 * overhead, 1),
                           "driver_ceiling_images_per_min": round(60 / driver)},
        "plan_8_gpus": {"assumes": "one actor per GPU, every item costs the GPU time plus the measured per-item "
                                   "overhead (at least the round trip); the driver handles one record at a time "
                                   "(round trip + fsynced append), which caps the total",
                        "startup_s": r1["first_record_s"], **plan8},
    }, indent=2))


if __name__ == "__main__":
    main()
