"""Train, export and judge the demo ControlNet: the shipped demo model follows a box layout.

    python -m training.demo_controlnet --minutes 60    # train (resumes from checkpoints/controlnet/)
    python -m training.demo_controlnet --export        # fp16 into tools/demo/weights/controlnet-layout/
    python -m training.demo_controlnet --eval 48       # oracle: position accuracy with / without it

The condition is a box layout (`tools.demo.world.layout_image`): a black 64x64 image with each
object's box filled in its colour. The prompt still says what the objects are; the layout says
where. It is a diffusers ControlNetModel made from the shipped UNet (`ControlNetModel.from_unet`,
its encoder copied, zero-initialised outputs) with a 2-stage condition encoder (64x64 -> 16x16,
the VAE's factor 4); only it is trained, the UNet, VAE and text encoder stay frozen. It loads
with `ControlNetModel.from_pretrained(folder)` and works in `StableDiffusionControlNetPipeline`,
and in imagent as `--control layout:IMAGE` (its default model for the layout kind on the demo).
"""
from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import torch

from tools.demo import WEIGHTS_DIR
from tools.demo import world as W
from training import demo_models as M
from training.demo_common import (Checkpointer, StepLog, adapter_main, eps_loss, images_to_tensor, log, lr_at,
                                  noisy_batch, optimizer_step)

EXPORT_DIR = WEIGHTS_DIR / "controlnet-layout"
EMBED_CHANNELS = (16, 32, 64)   # two stride-2 stages: 64x64 condition -> 16x16 latents


def make_controlnet(unet):
    from diffusers import ControlNetModel

    return ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=EMBED_CHANNELS)


def cache(pipe, out: Path, n: int, seed: int) -> dict:
    path = out / f"layout_cache_{n}.pt"
    if path.exists():
        return torch.load(path)
    log(f"rendering and encoding {n} scenes with their layouts")
    zs, ids, maps = [], [], []
    with torch.no_grad():
        for i in range(0, n, 256):
            rng = random.Random(f"controlnet-{seed}-{i}")
            imgs, caps, lays = [], [], []
            for _ in range(256):
                scene = W.sample_scene(rng)
                img, lay = W.render(scene, rng)
                imgs.append(img)
                caps.append(scene.caption())
                lays.append(np.asarray(W.layout_image(lay), dtype=np.uint8))
            zs.append((pipe.vae.encode(images_to_tensor(imgs)).latent_dist.mean
                       * pipe.vae.config.scaling_factor).half())
            ids.append(pipe.tokenizer(caps, padding="max_length", truncation=True,
                                      max_length=pipe.tokenizer.model_max_length,
                                      return_tensors="pt").input_ids.short())
            maps.append(torch.from_numpy(np.stack(lays)))
    out_ = {"z": torch.cat(zs)[:n], "ids": torch.cat(ids)[:n], "maps": torch.cat(maps)[:n]}
    torch.save(out_, path)
    return out_


def train(a) -> None:
    from tools.demo import load_pipeline

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(a.seed)
    pipe = load_pipeline()
    unet, text = pipe.unet, pipe.text_encoder
    for m in (unet, text, pipe.vae):
        m.requires_grad_(False)
    net = make_controlnet(unet)
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=a.lr, weight_decay=0.0)
    ck = Checkpointer(out / "controlnet_layout.pt", a.ckpt_minutes * 60)
    step, elapsed = 0, 0.0
    st = ck.load()
    if st:
        net.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        step, elapsed = st["step"], st["elapsed"]
        log(f"resumed controlnet at step {step}, {elapsed / 60:.1f} min")
    log(f"controlnet: {M.n_params(net)} parameters")
    data = cache(pipe, out, a.cache, a.seed)
    Z, IDS, MAPS = data["z"], data["ids"], data["maps"]
    empty = pipe.tokenizer([""], padding="max_length", max_length=pipe.tokenizer.model_max_length,
                           return_tensors="pt").input_ids[0]
    sched = M.make_scheduler("epsilon")
    snr_all = sched.alphas_cumprod / (1 - sched.alphas_cumprod)
    deadline = time.time() + a.minutes * 60
    progress = StepLog("controlnet", elapsed)

    def state():
        return {"model": net.state_dict(), "opt": opt.state_dict(), "step": step,
                "elapsed": progress.minutes() * 60}

    while time.time() < deadline and step < a.max_steps:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, a.lr, 200)
        gen = torch.Generator().manual_seed(a.seed * 1_000_003 + step)
        idx, ids, noise, t, zt = noisy_batch(Z, IDS, empty, a.batch, gen, sched)
        cond_img = MAPS[idx].permute(0, 3, 1, 2).float().div(255.0)
        with torch.no_grad():
            cond = text(input_ids=ids).last_hidden_state
        down, mid = net(zt, t, encoder_hidden_states=cond, controlnet_cond=cond_img, return_dict=False)
        pred = unet(zt, t, cond, down_block_additional_residuals=down,
                    mid_block_additional_residual=mid).sample
        loss = eps_loss(pred, noise, t, snr_all)
        step += 1
        progress.add(step, optimizer_step(opt, net.parameters(), loss))
        ck.maybe_save(state)
    ck.maybe_save(state, force=True)
    log(f"controlnet done: step {step}, {progress.minutes():.1f} min total")


def export(a) -> None:
    from tools.demo import load_pipeline

    st = torch.load(Path(a.out) / "controlnet_layout.pt", map_location="cpu", weights_only=False)
    net = make_controlnet(load_pipeline().unet)
    net.load_state_dict(st["model"])
    net.to(torch.float16).save_pretrained(str(EXPORT_DIR), safe_serialization=True)
    info = {"condition": "layout", "steps": st["step"], "minutes": round(st["elapsed"] / 60, 1),
            "base": "imagent demo pipeline",
            "palette": {name: list(rgb) for name, rgb in W.COLOURS.items()}}  # box colours (tools.adapters.control_palette)
    (EXPORT_DIR / "imagent_controlnet.json").write_text(json.dumps(info, indent=1) + "\n")
    size = sum(f.stat().st_size for f in EXPORT_DIR.iterdir()) / 1e6
    print(json.dumps({**info, "folder_mb": round(size, 3)}))


def evaluate(a) -> None:
    """Oracle accuracy on position prompts (and a mix) with and without the layout condition."""
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline

    from tools.demo import load_pipeline
    from tools.demo import oracle as O

    pipe = load_pipeline()
    net = ControlNetModel.from_pretrained(str(EXPORT_DIR), torch_dtype=torch.float32)
    cpipe = StableDiffusionControlNetPipeline.from_pipe(pipe, controlnet=net)
    cpipe.set_progress_bar_config(disable=True)
    result = {}
    for category in ("position", "counting", "color_attr"):
        prompts = W.prompt_set(category, a.eval)
        rng = random.Random(f"controlnet-eval-{category}")
        maps = [W.layout_image(W.layout(W.parse(p), rng)) for p in prompts]
        row = {}
        for label in ("without", "with"):
            correct = 0
            for i in range(0, len(prompts), 16):
                gens = [torch.Generator().manual_seed(s) for s in range(i, min(i + 16, len(prompts)))]
                kw = dict(generator=gens, num_inference_steps=20, guidance_scale=5.0, height=64, width=64)
                if label == "with":
                    imgs = cpipe(prompts[i:i + 16], image=maps[i:i + 16], **kw).images
                else:
                    imgs = pipe(prompts[i:i + 16], **kw).images
                correct += sum(O.check(im, p).correct for im, p in zip(imgs, prompts[i:i + 16]))
            row[label] = round(correct / len(prompts), 3)
        result[category] = row
        log(category, row)
    print(json.dumps({"prompts_per_category": a.eval, **result}))


def main(argv=None) -> None:
    adapter_main(argv, prog="python -m training.demo_controlnet", doc=__doc__, what="ControlNet", minutes=30.0,
                 out="checkpoints/controlnet", lr=3e-4, train=train, export=export, evaluate=evaluate)


if __name__ == "__main__":
    main()
