"""Write the shipped fp16 weights from training checkpoints.

    python -m training.demo_export [--ckpt checkpoints/demo] [--preset b] [--guidance 4]

Writes tools/demo/weights/pipeline (diffusers StableDiffusionPipeline folder: vae, text_encoder,
tokenizer, unet, scheduler = DPM++ 2M) and tools/demo/weights/clip (CLIPModel + CLIPProcessor).
The UNet and its text encoder are the EMA weights of the newest checkpoint (also mid-run).
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

from tools.demo import WEIGHTS_DIR
from training import demo_models as M


def folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def build_pipeline(ckpt: Path, preset: str | None = None, use_ema: bool = True):
    """A float32 StableDiffusionPipeline from checkpoints (no files written)."""
    from diffusers import AutoencoderKL, StableDiffusionPipeline
    from transformers import CLIPTextModel

    tok = M.load_tokenizer(ckpt / "tokenizer")
    vae = AutoencoderKL.from_pretrained(str(ckpt / "vae_final"))
    if preset is None:
        cands = sorted(ckpt.glob("unet_*.pt"), key=lambda p: p.stat().st_mtime)
        if not cands:
            raise FileNotFoundError(f"no unet checkpoint in {ckpt}")
        path = cands[-1]
    else:
        path = ckpt / f"unet_{preset}.pt"
    st = torch.load(path, map_location="cpu", weights_only=False)
    unet = M.make_unet(st["preset"])
    text = CLIPTextModel(M.text_config(tok))
    unet.load_state_dict(st["unet"])
    text.load_state_dict(st["text"])
    if use_ema:
        live = list(unet.parameters()) + list(text.parameters())
        with torch.no_grad():
            for p, e in zip(live, st["ema"]):
                p.copy_(e)
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text.eval(), tokenizer=tok, unet=unet.eval(),
        scheduler=M.make_inference_scheduler(st.get("prediction", "epsilon")),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    info = {"unet_steps": st["step"], "unet_minutes": round(st["elapsed"] / 60, 1),
            "preset": st["preset"], "prediction": st.get("prediction", "epsilon")}
    return pipe, info


def export(ckpt: Path, out: Path, preset: str | None, steps: int, guidance: float) -> dict:
    from transformers import CLIPModel, CLIPProcessor

    pipe, info = build_pipeline(ckpt, preset)
    out.mkdir(parents=True, exist_ok=True)
    pdir, cdir = out / "pipeline", out / "clip"
    if pdir.exists():
        shutil.rmtree(pdir)
    pipe.to(torch.float16)
    pipe.save_pretrained(str(pdir), safe_serialization=True)
    (pdir / "imagent_demo.json").write_text(json.dumps(
        {"num_inference_steps": steps, "guidance_scale": guidance, "height": 64, "width": 64,
         **info}, indent=1) + "\n")
    clip = CLIPModel.from_pretrained(str(ckpt / "clip_final")).half()
    if cdir.exists():
        shutil.rmtree(cdir)
    clip.save_pretrained(str(cdir), safe_serialization=True)
    proc = CLIPProcessor(image_processor=M.image_processor(), tokenizer=pipe.tokenizer)
    proc.save_pretrained(str(cdir))
    proc.image_processor.save_pretrained(str(cdir))   # preprocessor_config.json for CLIPImageProcessor
    proc.tokenizer.save_pretrained(str(cdir))
    sizes = {"pipeline_mb": round(folder_mb(pdir), 2), "clip_mb": round(folder_mb(cdir), 2)}
    print(json.dumps({**info, **sizes}, indent=1))
    return {**info, **sizes}


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m training.demo_export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", default="checkpoints/demo")
    p.add_argument("--out", default=str(WEIGHTS_DIR))
    p.add_argument("--preset", default=None, help="unet checkpoint to use (default: newest)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=5.0)
    a = p.parse_args(argv)
    torch.set_num_threads(2)
    export(Path(a.ckpt), Path(a.out), a.preset, a.steps, a.guidance)


if __name__ == "__main__":
    main()
