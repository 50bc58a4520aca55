"""MCP overhead (issue 7): a generate call through an MCP client versus the same call in-process.

Prints figures; asserts nothing. Both sides run the same Session (same loaded weights, same
steps, seed and size, safety as configured), and both write the PNG and the gallery row.
  in-process  Session.generate(GenerateRequest(...))
  mcp-memory  mcp.Client(server) in the same process: the SDK's direct dispatch, plus imagent's
              job queue (worker thread), progress polling and the image preview (base64 PNG)
  mcp-http    mcp.Client("http://127.0.0.1:PORT/mcp"): streamable HTTP over loopback, JSON-RPC,
              SSE, the result serialized with the image
Calls alternate between the sides (so drift in machine load hits all of them) and the medians
are compared. Goal: ratio <= 1.05 at 20 steps. On a busy machine generation times swing by
more than the MCP overhead, so the fixed cost of a call is also measured on its own (a cheap
queued tool, check_safety, many times per path) and turned into a ratio against the median
generation time ("ratio_from_fixed_overhead").

Model: the demo model when it is installed (tools.demo.pipeline_path()), else a tiny random SD
pipeline built on the spot; the output says which. A tiny model makes the ratio a worst case:
the fixed per-call cost is the same, the generation it is compared against is much shorter.

  python bench/mcp_bench.py                      # 20 steps, 8 calls per side
  python bench/mcp_bench.py --steps 20 --repeats 12 --model PATH
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def pick_model(explicit: str | None, tmp: Path) -> tuple[str, str]:
    if explicit:
        return explicit, f"given: {explicit}"
    from tools import demo

    try:
        demo.pipeline_path()
        return "demo", "demo model (tools/demo/weights/pipeline)"
    except Exception as exc:  # noqa: BLE001 - report and fall back
        sys.path.insert(0, str(ROOT / "tests"))
        from tiny_models import save_tiny_sd

        path = save_tiny_sd(tmp / "tiny-sd")
        return str(path), f"tiny random SD 32x32 (demo model unavailable: {exc})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--cheap-repeats", type=int, default=30)
    ap.add_argument("--safety", default="standard")
    args = ap.parse_args()

    import os

    tmp = Path(tempfile.mkdtemp(prefix="imagent-mcp-bench-"))
    os.environ["IMAGENT_HOME"] = str(tmp / "home")
    import mcp
    from agent.capabilities import PathPolicy
    from agent.config import load_settings
    from agent.mcp_server import build_server, serving_http_in_thread
    from agent.session import Session
    from tools.generate import GenerateRequest

    model, model_note = pick_model(args.model, tmp)
    session = Session(load_settings(model=model, safety=args.safety))
    app = build_server(session, PathPolicy.confined(tmp / "in", tmp / "out"))
    stack = contextlib.ExitStack()

    url = stack.enter_context(serving_http_in_thread(app))

    prompt = "two red circles"
    times: dict[str, list[float]] = {"in-process": [], "mcp-memory": [], "mcp-http": []}

    def inproc(seed):
        session.generate(GenerateRequest(prompt=prompt, steps=args.steps, seed=seed), out_dir=tmp / "out")

    async def run_all():
        async with mcp.Client(app.server) as mem, mcp.Client(url) as http:
            clients = {"mcp-memory": mem, "mcp-http": http}

            async def via(name, seed):
                res = await clients[name].call_tool("generate", {"prompt": prompt, "steps": args.steps, "seed": seed})
                assert not res.is_error, res.content[0].text
                return res

            for seed in range(2):  # warm-up, every path
                await asyncio.to_thread(inproc, seed)
                for name in clients:
                    await via(name, seed)
            for i in range(args.repeats):
                seed = 100 + i
                order = ["in-process", "mcp-memory", "mcp-http"]
                order = order[i % 3:] + order[:i % 3]
                for name in order:
                    t = time.perf_counter()
                    if name == "in-process":
                        await asyncio.to_thread(inproc, seed)
                    else:
                        res = await via(name, seed)
                    times[name].append(time.perf_counter() - t)
            # the fixed cost of a call on each path, without the generation's noise: a cheap queued
            # tool (check_safety: queue, worker thread, result) called many times
            for name in ("in-process", *clients):
                for i in range(args.cheap_repeats):
                    t = time.perf_counter()
                    if name == "in-process":
                        await asyncio.to_thread(app.caps.call, "check_safety", {"prompt": prompt})
                    else:
                        await clients[name].call_tool("check_safety", {"prompt": prompt})
                    cheap[name].append(time.perf_counter() - t)
            return res

    cheap: dict[str, list[float]] = {k: [] for k in times}
    last = asyncio.run(run_all())
    stack.close()
    app.close()

    med = {k: statistics.median(v) for k, v in times.items()}
    out = {
        "model": model_note, "steps": args.steps, "repeats": args.repeats, "safety": args.safety,
        "median_s": {k: round(v, 4) for k, v in med.items()},
        "min_s": {k: round(min(v), 4) for k, v in times.items()},
        "ratio_mcp_memory": round(med["mcp-memory"] / med["in-process"], 3),
        "ratio_mcp_http": round(med["mcp-http"] / med["in-process"], 3),
        "overhead_ms": {k: round(1000 * (med[k] - med["in-process"]), 1) for k in ("mcp-memory", "mcp-http")},
        "fixed_overhead_ms": {k: round(1000 * (statistics.median(cheap[k]) - statistics.median(cheap["in-process"])), 2)
                              for k in ("mcp-memory", "mcp-http")},
        "ratio_from_fixed_overhead": {k: round(1 + (statistics.median(cheap[k]) - statistics.median(cheap["in-process"]))
                                               / med["in-process"], 4) for k in ("mcp-memory", "mcp-http")},
        "result_bytes_http": len(json.dumps(last.model_dump(mode="json"))),
        "goal": "ratio <= 1.05",
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
