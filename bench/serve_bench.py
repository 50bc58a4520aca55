"""HTTP service benchmarks (issue 16) on the demo model. Prints figures; asserts nothing.

1. HTTP overhead per image: `POST /v1/images/generations` (the official openai client,
   b64_json) against `Session.generate` in-process, same session, steps and seeds, the cache off;
   run alternately after a warm-up so machine drift hits both. Goal: ratio <= 1.03 at 20 steps.
2. Cache: a seeded request served from the gallery (a hit) against the same request generated
   (a miss), with the cache on.

  python bench/serve_bench.py                  # 20 steps, 8 pairs
  python bench/serve_bench.py --steps 20 --repeats 12
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    import torch
    from openai import OpenAI

    torch.set_num_threads(a.threads)
    os.environ.setdefault("IMAGENT_HOME", tempfile.mkdtemp(prefix="imagent-serve-bench-"))
    from agent.config import load_settings
    from agent.server import make_app, serving_in_thread
    from agent.session import Session
    from tools.generate import GenerateRequest

    session = Session(load_settings(model="demo", clip_model="demo"))
    out_dir = tempfile.mkdtemp(prefix="imagent-serve-bench-out-")
    prompt, seeds = "two red circles", iter(range(10**6))

    def local():
        session.generate(GenerateRequest(prompt, seed=next(seeds), steps=a.steps, cfg=5.0), out_dir=out_dir)

    result = {"bench": "serve", "steps": a.steps, "repeats": a.repeats}
    with serving_in_thread(make_app(session, cache=False)) as url:
        client = OpenAI(base_url=url + "/v1", api_key="unused")

        def http():
            client.images.generate(prompt=prompt, size="64x64", response_format="b64_json",
                                   extra_body={"seed": next(seeds), "steps": a.steps, "cfg": 5.0})

        local(), http()
        t_local, t_http = [], []
        for _ in range(a.repeats):
            for fn, out in ((local, t_local), (http, t_http)):
                t0 = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t0)
    m_local, m_http = statistics.median(t_local), statistics.median(t_http)
    result["in_process_s_per_image"] = round(m_local, 4)
    result["http_s_per_image"] = round(m_http, 4)
    result["http_ratio"] = round(m_http / m_local, 4)
    result["http_overhead_ms"] = round((m_http - m_local) * 1000, 1)
    with serving_in_thread(make_app(session, cache=True)) as url:
        client = OpenAI(base_url=url + "/v1", api_key="unused")
        miss, hit = [], []
        for i in range(a.repeats):
            body = {"seed": 900_000 + i, "steps": a.steps, "cfg": 5.0}
            for out in (miss, hit):
                t0 = time.perf_counter()
                res = client.images.generate(prompt=prompt, size="64x64", response_format="b64_json", extra_body=body)
                out.append(time.perf_counter() - t0)
                assert res.model_extra["cache"] == ("miss" if out is miss else "hit")
    result["cache_miss_s"] = round(statistics.median(miss), 4)
    result["cache_hit_s"] = round(statistics.median(hit), 4)
    result["cache_speedup"] = round(statistics.median(miss) / statistics.median(hit), 1)
    print(f"in-process {m_local:.3f} s/image, HTTP {m_http:.3f} s/image: ratio {m_http / m_local:.3f} "
          f"({(m_http - m_local) * 1000:+.0f} ms per image); cache hit {result['cache_hit_s']:.3f} s vs "
          f"miss {result['cache_miss_s']:.3f} s ({result['cache_speedup']}x)")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
