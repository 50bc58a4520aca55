"""Prompt-expansion benchmark (offline).

  .venv/bin/python bench/expand_bench.py [--n 200]

1. Template expander latency per idea, end to end through `expand_idea` (style presets and
   vocabularies read from disk each call, as the CLI does). Goal: < 5 ms.
2. LLM-path overhead: `LLMExpander.expand` through the real langchain-openai ChatOpenAI client
   against a loopback chat-completions server, minus the raw HTTP round trip (http.client
   POSTing the same request body to the same server). Goal: < 20 ms.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

IDEAS = ["a cat coding at night", "two red circles", "a lighthouse on a cliff at sunset",
         "portrait of an old fisherman", "a city skyline in the rain", "a tiny robot watering a flower",
         "an astronaut riding a horse on the moon", "a cozy kitchen interior in winter"]
STYLES = [None, "cinematic", "watercolor", "anime", "pixel-art", "neon-punk", None, "photographic"]
GOOD = {"subject": "a cat typing on a laptop at night", "style": "cinematic film still",
        "lighting": "blue monitor glow", "composition": "medium shot", "quality": ["highly detailed"],
        "negatives": ["blurry", "text"], "extras": ["cluttered desk"]}


def stats(samples_s: list[float]) -> str:
    ms = sorted(x * 1000 for x in samples_s)
    p95 = ms[min(len(ms) - 1, int(0.95 * len(ms)))]
    return f"median {statistics.median(ms):.2f} ms, mean {statistics.fmean(ms):.2f} ms, p95 {p95:.2f} ms (n={len(ms)})"


def bench_template(n: int) -> float:
    from agent.config import load_settings
    from agent.expand import expand_idea

    settings = load_settings(model="runwayml/stable-diffusion-v1-5")
    for idea, style in zip(IDEAS, STYLES):  # warm-up (imports, file cache)
        expand_idea(idea, settings, style=style)
    samples = []
    for i in range(n):
        idea, style = IDEAS[i % len(IDEAS)], STYLES[i % len(STYLES)]
        t0 = time.perf_counter()
        expand_idea(idea, settings, style=style)
        samples.append(time.perf_counter() - t0)
    print(f"template expander, per idea (expand_idea, sd family): {stats(samples)}  goal < 5 ms")
    return statistics.median(samples)


def bench_llm(n: int) -> float:
    from loopback_llm import LoopbackLLM

    from agent.config import load_settings
    from agent.expand import LLMExpander, expand_idea
    from agent.llm import build_chat_model

    with LoopbackLLM([GOOD]) as server:
        settings = load_settings(model="runwayml/stable-diffusion-v1-5", llm_model="bench", llm_base_url=server.base_url,
                                 llm_fallback="error")
        expander = LLMExpander(build_chat_model(settings), method=settings.llm_method, home=settings.home)
        expander.expand(IDEAS[0])  # warm-up: imports, connection
        body = json.dumps(server.requests[-1]).encode()
        host, port = server.httpd.server_address
        conn = http.client.HTTPConnection(host, port)  # keep-alive, like the openai client's pool

        raw, llm, full = [], [], []
        for i in range(n):
            t0 = time.perf_counter()
            conn.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
            json.loads(conn.getresponse().read())
            raw.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            expander.expand(IDEAS[i % len(IDEAS)])
            llm.append(time.perf_counter() - t0)
        for i in range(max(10, n // 4)):
            t0 = time.perf_counter()
            expand_idea(IDEAS[i % len(IDEAS)], settings)  # builds a fresh ChatOpenAI each call, as the CLI does
            full.append(time.perf_counter() - t0)
        conn.close()
    overhead = statistics.median(llm) - statistics.median(raw)
    print(f"raw HTTP round trip (http.client, same body): {stats(raw)}")
    print(f"LLM path (LLMExpander + ChatOpenAI, client reused): {stats(llm)}")
    print(f"  overhead over the raw round trip: {overhead * 1000:.2f} ms (median)  goal < 20 ms")
    print(f"expand_idea with a fresh client per call: {stats(full)}; overhead "
          f"{(statistics.median(full) - statistics.median(raw)) * 1000:.2f} ms")
    return overhead


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200)
    args = parser.parse_args()
    os.environ["IMAGENT_HOME"] = tempfile.mkdtemp(prefix="imagent-bench-")  # no user overrides
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    bench_template(args.n)
    bench_llm(args.n)


if __name__ == "__main__":
    main()
