"""Train, export and judge the demo LoRA: the shipped demo model learns the "tall" style.

    python -m training.demo_lora --minutes 30        # train (resumes from checkpoints/lora/)
    python -m training.demo_lora --export            # fp16 LoRA into tools/demo/weights/lora-tall/
    python -m training.demo_lora --eval 96           # oracle: style share and accuracy, weight 0 / 1

The base model draws every object as wide as it is tall; in the "tall" style
(`tools.demo.world.draw(style="tall")`) each object is 0.7 of its height wide, in the same
box. Captions never mention the style, so the adapter applies it to any prompt when loaded, as
an art-style LoRA does. Only LoRA matrices are trained (peft, rank --rank) on the shipped UNet's
attention, feed-forward and ResNet convolutions; VAE and text encoder stay frozen, so weight 0
is the base model exactly. The export is a diffusers LoRA file that
`pipe.load_lora_weights(folder)` reads, and imagent's `--lora demo-tall`.

Why not "outlined" (rings): the demo VAE (16x16 latents for 64x64 images) cannot draw rings:
encoding and decoding outlined scenes kept the hole on 17% of objects (measured, 96 scenes).
"""
from __future__ import annotations

import json
import random
import time
from pathlib import Path

import torch

from tools.demo import WEIGHTS_DIR
from tools.demo import world as W
from training import demo_models as M
from training.demo_common import (Checkpointer, StepLog, adapter_main, eps_loss, images_to_tensor, log, lr_at,
                                  noisy_batch, optimizer_step)

TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
           "conv1", "conv2"]
EXPORT_DIR = WEIGHTS_DIR / "lora-tall"
WEIGHT_NAME = "pytorch_lora_weights.safetensors"


def lora_config(rank: int):
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=TARGETS)


def latent_cache(pipe, out: Path, n: int, seed: int, style: str = "tall") -> dict:
    """`n` rendered scenes in `style`, encoded by the shipped VAE, with their captions' token ids."""
    path = out / f"latents_{style}_{n}.pt"
    if path.exists():
        return torch.load(path)
    log(f"encoding {n} {style}-style scenes into latents")
    zs, ids = [], []
    with torch.no_grad():
        for i in range(0, n, 256):
            rng = random.Random(f"lora-{seed}-{i}")
            imgs, caps = [], []
            for _ in range(256):
                scene = W.sample_scene(rng)
                img, _ = W.render(scene, rng, style=style)
                imgs.append(img)
                caps.append(scene.caption())
            zs.append((pipe.vae.encode(images_to_tensor(imgs)).latent_dist.mean
                       * pipe.vae.config.scaling_factor).half())
            ids.append(pipe.tokenizer(caps, padding="max_length", truncation=True,
                                      max_length=pipe.tokenizer.model_max_length,
                                      return_tensors="pt").input_ids.short())
    cache = {"z": torch.cat(zs)[:n], "ids": torch.cat(ids)[:n]}
    torch.save(cache, path)
    return cache


def lora_setup(a, checkpoint: str, what: str):
    """The shipped pipeline, frozen, with a fresh rank-`a.rank` LoRA on its UNet, its optimizer and
    checkpoint under `a.out`, resumed from that checkpoint when there is one:
    (pipe, trainable parameters, optimizer, checkpointer, step, elapsed seconds)."""
    from peft import set_peft_model_state_dict

    from tools.demo import load_pipeline

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(a.seed)
    pipe = load_pipeline()
    for m in (pipe.unet, pipe.text_encoder, pipe.vae):
        m.requires_grad_(False)
    pipe.unet.add_adapter(lora_config(a.rank))
    live = [p for p in pipe.unet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(live, lr=a.lr, weight_decay=0.0)
    ck = Checkpointer(out / checkpoint, a.ckpt_minutes * 60)
    step, elapsed = 0, 0.0
    st = ck.load()
    if st:
        set_peft_model_state_dict(pipe.unet, st["lora"])
        opt.load_state_dict(st["opt"])
        step, elapsed = st["step"], st["elapsed"]
        log(f"resumed {what} at step {step}, {elapsed / 60:.1f} min")
    log(f"{what} lora rank {a.rank}: {sum(p.numel() for p in live)} trainable parameters")
    return pipe, live, opt, ck, step, elapsed


def lora_state(pipe, opt, step: int, minutes: float, rank: int) -> dict:
    """What a LoRA trainer's checkpoint holds (export_lora reads it)."""
    from peft import get_peft_model_state_dict

    return {"lora": get_peft_model_state_dict(pipe.unet), "opt": opt.state_dict(), "step": step,
            "elapsed": minutes * 60, "rank": rank}


def train(a) -> None:
    out = Path(a.out)
    pipe, live, opt, ck, step, elapsed = lora_setup(a, "lora_tall.pt", "lora")
    unet, text = pipe.unet, pipe.text_encoder
    cache = latent_cache(pipe, out, a.cache, a.seed)
    Z, IDS = cache["z"], cache["ids"]
    empty = pipe.tokenizer([""], padding="max_length", max_length=pipe.tokenizer.model_max_length,
                           return_tensors="pt").input_ids[0]
    sched = M.make_scheduler("epsilon")   # the noise schedule the UNet was trained with
    snr_all = sched.alphas_cumprod / (1 - sched.alphas_cumprod)
    deadline = time.time() + a.minutes * 60
    progress = StepLog("lora", elapsed)

    def state():
        return lora_state(pipe, opt, step, progress.minutes(), a.rank)

    unet.train()
    while time.time() < deadline and step < a.max_steps:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, a.lr, 100)
        gen = torch.Generator().manual_seed(a.seed * 1_000_003 + step)
        _idx, ids, noise, t, zt = noisy_batch(Z, IDS, empty, a.batch, gen, sched)
        with torch.no_grad():
            cond = text(input_ids=ids).last_hidden_state
        loss = eps_loss(unet(zt, t, cond).sample, noise, t, snr_all)
        step += 1
        progress.add(step, optimizer_step(opt, live, loss))
        ck.maybe_save(state)
    ck.maybe_save(state, force=True)
    log(f"lora done: step {step}, {progress.minutes():.1f} min total")


def export_lora(checkpoint: Path, folder: Path, info: dict) -> None:
    """A trainer's LoRA checkpoint -> an fp16 diffusers LoRA file in `folder` (what
    `pipe.load_lora_weights(folder)` reads) with imagent_lora.json (`info` plus rank, steps, minutes)."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    from tools.demo import load_pipeline

    st = torch.load(checkpoint, map_location="cpu", weights_only=False)
    pipe = load_pipeline()
    pipe.unet.add_adapter(lora_config(st["rank"]))
    set_peft_model_state_dict(pipe.unet, st["lora"])
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.unet))
    layers = {k: v.half().contiguous() for k, v in layers.items()}
    folder.mkdir(parents=True, exist_ok=True)
    StableDiffusionPipeline.save_lora_weights(str(folder), unet_lora_layers=layers,
                                              weight_name=WEIGHT_NAME, safe_serialization=True)
    info = {**info, "rank": st["rank"], "steps": st["step"], "minutes": round(st["elapsed"] / 60, 1),
            "base": "imagent demo pipeline"}
    (folder / "imagent_lora.json").write_text(json.dumps(info, indent=1) + "\n")
    size = (folder / WEIGHT_NAME).stat().st_size / 1e6
    print(json.dumps({**info, "file_mb": round(size, 3)}))


def export(a) -> None:
    export_lora(Path(a.out) / "lora_tall.pt", EXPORT_DIR, {"style": "tall"})


def evaluate(a) -> None:
    """Oracle figures for the exported LoRA at weights 0 and 1 against the base model."""
    from collections import Counter

    from tools.demo import load_pipeline
    from tools.demo import oracle as O

    pipe = load_pipeline()
    prompts = [W.sample_scene(random.Random(f"lora-eval-{i}")).caption() for i in range(a.eval)]
    seeds = list(range(len(prompts)))
    rows = {}
    for label, weight in (("base", None), ("lora 0", 0.0), ("lora 1", 1.0)):
        if weight is not None and "tall" not in (pipe.get_list_adapters().get("unet", []) or []):
            pipe.load_lora_weights(str(EXPORT_DIR), weight_name=WEIGHT_NAME, adapter_name="tall")
        if weight is not None:
            pipe.set_adapters(["tall"], [weight])
        tall, objs, correct = 0, 0, 0
        per = Counter()
        for i in range(0, len(prompts), 16):
            gens = [torch.Generator().manual_seed(s) for s in seeds[i:i + 16]]
            imgs = pipe(prompts[i:i + 16], generator=gens, num_inference_steps=20,
                        guidance_scale=5.0, height=64, width=64).images
            for img, p in zip(imgs, prompts[i:i + 16]):
                v = O.check(img, p)
                correct += v.correct
                per[v.category] += v.correct
                tall += sum(o.style == "tall" for o in v.reading.objects)
                objs += len(v.reading.objects)
        rows[label] = {"accuracy": round(correct / len(prompts), 3),
                       "tall_share": round(tall / max(objs, 1), 3), "objects": objs}
        log(label, rows[label])
    print(json.dumps({"prompts": len(prompts), **rows}))


def main(argv=None) -> None:
    adapter_main(argv, prog="python -m training.demo_lora", doc=__doc__, what="LoRA", minutes=20.0,
                 out="checkpoints/lora", lr=1e-3, train=train, export=export, evaluate=evaluate, extra=lambda p: p.add_argument("--rank", type=int, default=8, help="LoRA rank"))


if __name__ == "__main__":
    main()
