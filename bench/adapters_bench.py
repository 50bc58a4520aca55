"""Speed, memory and adapter costs of issue 15's options, one process per arm (peak RSS per arm).

    python bench/adapters_bench.py                 # every arm, table on stdout (JSON with --json)
    python bench/adapters_bench.py --arms plain,sliced --repeat 3

Arms (seconds per image = median of --repeat timed calls after one warm-up call; peak RSS of the
arm's own process):
- demo-* on the demo model (64x64, 20 steps), tiny-* on a tiny random SD made here (TINY_SIDE, 20 steps):
  plain (SDPA), sliced (attention slicing), tiling (VAE tiling, at 256x256), slicing (VAE
  slicing, 4 images), compile (torch.compile of the UNet, timed after the warm-up compile);
- lora: the demo LoRA's load time, switch time between two adapters, and per-image time
  unfused / fused / without it (goal: unfused <= 1.10x);
- lcm: oracle accuracy of the shipped demo LCM-LoRA (`--lora demo-lcm`: 4 steps, cfg 1, the LCM
  scheduler by default; also 2 steps) vs the plain model at 20 DPM++ steps, the plain model with
  only the LCM scheduler at 4 steps, and 4 DPM++ steps (24 prompts).
Ratios are against the same model's plain arm in the same run.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

TILING_SIDE = 256   # 512 and up: the UNet itself (attention over the latents) takes minutes per image on 2 cores
TINY_SIDE = 256     # the issue asks for 512x512; on this CPU one 20-step image there takes minutes
ARMS = ["demo-plain", "demo-sliced", "demo-tiling", "demo-slicing", "demo-compile",
        "tiny-plain", "tiny-sliced", "tiny-tiling", "tiny-slicing", "lora", "lcm"]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def backend_for(kind: str):
    import torch

    from tools.diffusers_backend import DiffusersBackend

    if kind == "demo":
        return DiffusersBackend("demo", "cpu", torch.float32), 64
    from tiny_models import save_tiny_sd

    folder = Path(tempfile.mkdtemp()) / "tiny-sd"
    save_tiny_sd(folder)
    return DiffusersBackend(str(folder), "cpu", torch.float32), TINY_SIDE


def timed(backend, repeat: int, **kw) -> float:
    from tools.generate import GenerateRequest

    n = kw.get("count", 1)
    backend.generate(GenerateRequest("two red circles", seed=0, steps=20, cfg=5.0, **kw))  # warm-up
    times = []
    for i in range(repeat):
        t0 = time.perf_counter()
        backend.generate(GenerateRequest("two red circles", seed=i + 1, steps=20, cfg=5.0, **kw))
        times.append((time.perf_counter() - t0) / n)
    return statistics.median(times)


def run_arm(arm: str, repeat: int) -> dict:
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    if arm == "lora":
        return lora_arm(repeat)
    if arm == "lcm":
        return lcm_arm()
    kind, option = arm.split("-")
    backend, side = backend_for(kind)
    kw = {"width": side, "height": side}
    if option == "sliced":
        kw["attention"] = "sliced"
    elif option == "tiling":
        kw.update(width=TILING_SIDE, height=TILING_SIDE, vae_tiling=True)
    elif option == "slicing":
        kw.update(count=4, vae_slicing=True)
    elif option == "compile":
        kw["compile"] = True
    out = {"arm": arm, "size": f"{kw['width']}x{kw['height']}", "s_per_image": round(timed(backend, repeat, **kw), 4)}
    if option in ("tiling", "slicing"):  # the same size / count without the option, for the ratio
        plain_kw = {k: v for k, v in kw.items() if k not in ("vae_tiling", "vae_slicing")}
        out["s_per_image_without"] = round(timed(backend, repeat, **plain_kw), 4)
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return out


def lora_arm(repeat: int) -> dict:
    import torch

    from tiny_models import save_tiny_lora
    from tools.adapters import Lora, resolve_lora
    from tools.diffusers_backend import DiffusersBackend
    from tools.generate import GenerateRequest

    backend = DiffusersBackend("demo", "cpu", torch.float32)
    pipe = backend.pipeline()
    other = save_tiny_lora(pipe.unet, Path(tempfile.mkdtemp()) / "other.safetensors", scale=0.05)
    t_plain = timed(backend, repeat)
    folder, name = resolve_lora("demo-tall")
    t0 = time.perf_counter()
    pipe.load_lora_weights(folder, weight_name=name, adapter_name="bench_tall")
    load_s = time.perf_counter() - t0
    pipe.delete_adapters("bench_tall")
    t_unfused = timed(backend, repeat, loras=(Lora("demo-tall"),))
    backend.generate(GenerateRequest("a cat", steps=1, loras=(Lora(str(other)),)))  # a second adapter loaded
    t0 = time.perf_counter()
    for _ in range(10):
        backend.loras.apply(pipe, (Lora("demo-tall"),))
        backend.loras.apply(pipe, (Lora(str(other)),))
    switch_s = (time.perf_counter() - t0) / 20
    # fused (--lora-fuse): merged into the weights once, kept while the calls use the same LoRA
    t_fused = timed(backend, repeat, loras=(Lora("demo-tall"),), lora_fuse=True)
    return {"arm": "lora", "load_s": round(load_s, 4), "switch_s": round(switch_s, 5),
            "s_per_image_without": round(t_plain, 4), "s_per_image_unfused": round(t_unfused, 4),
            "s_per_image_fused": round(t_fused, 4), "unfused_ratio": round(t_unfused / t_plain, 3),
            "fused_ratio": round(t_fused / t_plain, 3), "peak_rss_mb": round(peak_rss_mb(), 1)}


def lcm_arm() -> dict:
    import torch

    from tools.adapters import Lora
    from tools.demo import oracle, world
    from tools.diffusers_backend import DiffusersBackend
    from tools.generate import GenerateRequest, fast_defaults

    backend = DiffusersBackend("demo", "cpu", torch.float32)
    prompts = [p for c in ("single_object", "counting", "color_attr", "position") for p in world.prompt_set(c, 6)]
    out = {"arm": "lcm", "prompts": len(prompts)}
    lcm = (Lora("demo-lcm"),)   # the shipped LCM-LoRA (training.demo_lcm); its defaults: 4 steps, cfg 1, lcm
    for label, kw in (("dpmpp_20", {"steps": 20, "cfg": 5.0}),
                      ("lcm_lora_4", {"loras": lcm}),
                      ("lcm_lora_2", {"loras": lcm, "steps": 2}),
                      ("lcm_scheduler_only_4", {"steps": 4, "cfg": 1.0, "scheduler": "lcm"}),
                      ("dpmpp_4", {"steps": 4, "cfg": 5.0})):
        t0, correct = time.perf_counter(), 0
        for i, p in enumerate(prompts):
            req = GenerateRequest(p, seed=i, **kw)
            fast = fast_defaults("demo", req) or {}   # as the session applies them: explicit values win
            req = GenerateRequest(p, seed=i, **{**fast, **kw})
            img = backend.generate(req).images[0]
            correct += oracle.check(img, p).correct
        out[label] = {"accuracy": round(correct / len(prompts), 3),
                      "s_per_image": round((time.perf_counter() - t0) / len(prompts), 4)}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arms", default=",".join(ARMS))
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--json", action="store_true")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one arm in this process
    a = p.parse_args()
    if a.one:
        print(json.dumps(run_arm(a.one, a.repeat)))
        return 0
    rows = []
    for arm in a.arms.split(","):
        proc = subprocess.run([sys.executable, __file__, "--one", arm, "--repeat", str(a.repeat)],
                              capture_output=True, text=True, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
        if proc.returncode:
            rows.append({"arm": arm, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]})
        else:
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    plain = {r["arm"].split("-")[0]: r["s_per_image"] for r in rows if r["arm"].endswith("-plain") and "s_per_image" in r}
    for r in rows:
        kind = r["arm"].split("-")[0]
        if "s_per_image" in r and kind in plain:
            base = r.get("s_per_image_without", plain[kind])
            r["ratio"] = round(r["s_per_image"] / base, 3)
    if a.json:
        print(json.dumps(rows, indent=1))
    else:
        for r in rows:
            print(" ".join(f"{k}={v}" for k, v in r.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
