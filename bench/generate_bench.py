"""Foundation benchmarks (issue 2). Prints figures; asserts nothing.

1. Overhead: imagent's generate path (Session.generate: validation, safety, PNG with metadata,
   gallery row) versus calling the same diffusers pipeline directly, same components, steps and
   size, model load excluded. Goal: ratio <= 1.05.
2. Memory: peak RSS of a process with txt2img + img2img + inpainting ready and used, versus
   txt2img alone (each in a fresh subprocess). Goal: ratio <= 1.10.

  python bench/generate_bench.py                    # the demo model, 20 steps
  python bench/generate_bench.py --model PATH --steps 20 --repeats 5
  python bench/generate_bench.py --sd15-shaped      # memory on a random SD-1.5-sized pipeline
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


def interleaved(a, b, repeats):
    """Median seconds of a() and b(), run alternately (a, b, a, b, ...) after one warm-up each,
    so that drift in machine load hits both equally."""
    a(), b()
    ta, tb = [], []
    for _ in range(repeats):
        for fn, out in ((a, ta), (b, tb)):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return statistics.median(ta), statistics.median(tb)


def overhead(model: str, steps: int, repeats: int, safety: str) -> dict:
    import torch

    from agent.config import load_settings
    from agent.session import Session
    from tools.diffusers_backend import DiffusersBackend
    from tools.generate import GenerateRequest

    torch.set_num_threads(os.cpu_count() or 1)
    backend = DiffusersBackend(model, "cpu", torch.float32)
    pipe = backend.pipeline()
    w, h = backend.native_size()
    prompt = "two red circles"

    def direct():
        pipe(prompt, num_inference_steps=steps, guidance_scale=7.0, width=w, height=h,
             generator=torch.Generator("cpu").manual_seed(1))

    with tempfile.TemporaryDirectory() as home:
        os.environ["IMAGENT_HOME"] = home
        session = Session(load_settings(model=model, safety=safety), backend=backend)
        session.safety()  # load the checker outside the timing, like the model

        fixed = []

        def imagent():
            t0 = time.perf_counter()
            out = session.generate(GenerateRequest(prompt, steps=steps, cfg=7.0, seed=1), out_dir=home)
            fixed.append(time.perf_counter() - t0 - out.timings["generate_s"])

        t_direct, t_imagent = interleaved(direct, imagent, repeats)
    # Wall-clock ratios swing with machine load; the fixed cost imagent adds around the pipeline
    # (validation, safety, metadata, atomic PNG, gallery row) is measured inside each call.
    fixed_s = statistics.median(fixed[1:])
    return {"model": model, "size": f"{w}x{h}", "steps": steps, "safety": safety, "repeats": repeats,
            "direct_s": round(t_direct, 4), "imagent_s": round(t_imagent, 4),
            "ratio": round(t_imagent / t_direct, 3), "fixed_overhead_ms": round(1000 * fixed_s, 1),
            "ratio_from_fixed": round((t_direct + fixed_s) / t_direct, 3)}


CHILD = r"""
import json, resource, sys, torch
from PIL import Image
from tools.diffusers_backend import DiffusersBackend
from tools.generate import GenerateRequest
model, modes = sys.argv[1], sys.argv[2].split(",")
b = DiffusersBackend(model, "cpu", torch.float32)
w, h = b.native_size()
img = Image.new("RGB", (w, h), (120, 30, 30)); mask = Image.new("L", (w, h), 255)
for mode in modes:
    kw = {} if mode == "txt2img" else dict(init_image=img, strength=0.7)
    if mode == "inpaint": kw["mask"] = mask
    b.generate(GenerateRequest("two red circles", steps=2, seed=1, **kw))
pipes = [b.pipeline(m) for m in modes]
storages = {p.untyped_storage().data_ptr() for pipe in pipes for comp in pipe.components.values()
            if isinstance(comp, torch.nn.Module) for p in comp.parameters()}
params = sum(p.numel() for comp in pipes[0].components.values() if isinstance(comp, torch.nn.Module)
             for p in comp.parameters())
print(json.dumps({"modes": modes, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "unique_param_storages": len(storages), "params": params}))
"""


def memory(model: str) -> dict:
    def child(modes):
        out = subprocess.run([sys.executable, "-c", CHILD, model, modes], capture_output=True, text=True,
                             check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    alone, all3 = child("txt2img"), child("txt2img,img2img,inpaint")
    return {"model": model, "params": alone["params"], "txt2img_peak_rss_mb": round(alone["peak_rss_mb"], 1),
            "all_modes_peak_rss_mb": round(all3["peak_rss_mb"], 1),
            "ratio": round(all3["peak_rss_mb"] / alone["peak_rss_mb"], 3),
            "param_storages_one_mode": alone["unique_param_storages"],
            "param_storages_three_modes": all3["unique_param_storages"]}


def sd15_shaped(folder: Path) -> str:
    """A random-weight pipeline with SD 1.5's UNet/VAE/text-encoder shapes (about 1.07 B params)."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from tiny_models import word_tokenizer

    if (folder / "model_index.json").exists():
        return str(folder)
    torch.manual_seed(0)
    tok = word_tokenizer(folder.parent / "sd15-tok")
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768)
    vae = AutoencoderKL(block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4,
                        up_block_types=["UpDecoderBlock2D"] * 4, latent_channels=4, layers_per_block=2)
    te = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=768, intermediate_size=3072,
                                      num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=77,
                                      bos_token_id=0, eos_token_id=1, pad_token_id=1))
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=unet, scheduler=PNDMScheduler(
        skip_prk_steps=True), safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder)
    return str(folder)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="demo")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--sd15-shaped", action="store_true", help="also measure memory on a random SD-1.5-sized model")
    a = ap.parse_args()
    for safety in ("off", "standard"):
        print(json.dumps({"bench": "overhead", **overhead(a.model, a.steps, a.repeats, safety)}), flush=True)
    print(json.dumps({"bench": "memory", **memory(a.model)}), flush=True)
    if a.sd15_shaped:
        folder = Path(tempfile.gettempdir()) / "imagent-bench-sd15-shaped"
        print(json.dumps({"bench": "memory", **memory(sd15_shaped(folder))}), flush=True)


if __name__ == "__main__":
    main()
