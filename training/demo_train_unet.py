"""Train the demo UNet (UNet2DConditionModel) and its text encoder, started from the CLIP's, on cached latents.

Run through `python -m training.demo_train unet` (options and resuming there); needs the finished
vae and clip.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from training import demo_models as M
from training.demo_common import Checkpointer, batch, images_to_tensor, log, lr_at


def build_latent_cache(a, vae, tok, n: int) -> dict:
    path = Path(a.out) / f"latents_{n}.pt"
    if path.exists():
        return torch.load(path)
    log(f"encoding {n} rendered scenes into latents")
    zs, ids = [], []
    vae.eval()
    with torch.no_grad():
        for i in range(0, n, 256):
            imgs, caps, _ = batch(a.seed + 12345, i // 256, 256)
            zs.append((vae.encode(images_to_tensor(imgs)).latent_dist.mean
                       * vae.config.scaling_factor).half())
            ids.append(tok(caps, padding="max_length", max_length=M.MAX_TOKENS, truncation=True,
                           return_tensors="pt").input_ids.short())
    cache = {"z": torch.cat(zs)[:n], "ids": torch.cat(ids)[:n]}
    torch.save(cache, path)
    log(f"latent cache: {tuple(cache['z'].shape)}, std {cache['z'].float().std():.3f}")
    return cache


def train_unet(a):
    from diffusers import AutoencoderKL
    from transformers import CLIPModel, CLIPTextModel

    out = Path(a.out)
    torch.manual_seed(a.seed)
    tok = M.load_tokenizer(out / "tokenizer")
    vae = AutoencoderKL.from_pretrained(str(out / "vae_final"))
    clip = CLIPModel.from_pretrained(str(out / "clip_final"))
    text = CLIPTextModel(M.text_config(tok))
    target = getattr(text, "text_model", text)  # transformers 5 flattened CLIPTextModel
    target.load_state_dict(clip.text_model.state_dict())
    del clip
    unet = M.make_unet(a.preset)
    sched = M.make_scheduler(a.prediction)
    params = [{"params": list(unet.parameters()), "lr_mult": 1.0},
              {"params": list(text.parameters()), "lr_mult": a.text_lr_mult}]
    base_lr = a.lr or 1.5e-3
    opt = torch.optim.AdamW(params, lr=base_lr, weight_decay=0.01, betas=(0.9, 0.99))
    ema = [p.detach().clone() for p in list(unet.parameters()) + list(text.parameters())]
    ck = Checkpointer(out / f"unet_{a.preset}.pt", a.ckpt_minutes * 60)
    step, elapsed = 0, 0.0
    st = ck.load()
    if st:
        unet.load_state_dict(st["unet"]); text.load_state_dict(st["text"])
        opt.load_state_dict(st["opt"]); ema = st["ema"]
        opt.param_groups[1]["lr_mult"] = a.text_lr_mult  # may be changed on resume
        step, elapsed = st["step"], st["elapsed"]
        log(f"resumed unet at step {step}, {elapsed / 60:.1f} min")
    log(f"unet[{a.preset}] params {M.n_params(unet)}, text encoder {M.n_params(text)}")
    cache = build_latent_cache(a, vae, tok, a.cache)
    Z, IDS = cache["z"], cache["ids"]
    N = Z.shape[0]
    empty = tok([""], padding="max_length", max_length=M.MAX_TOKENS, return_tensors="pt").input_ids[0]
    ac = sched.alphas_cumprod
    snr_all = ac / (1 - ac)
    B = a.batch or 32
    t0, deadline = time.time(), time.time() + a.minutes * 60
    live = list(unet.parameters()) + list(text.parameters())

    def state():
        return {"unet": unet.state_dict(), "text": text.state_dict(), "opt": opt.state_dict(),
                "ema": ema, "step": step, "elapsed": elapsed + time.time() - t0,
                "preset": a.preset, "prediction": a.prediction}

    unet.train(); text.train()
    run_loss, tl = 0.0, time.time()
    while time.time() < deadline:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, base_lr, 300, a.decay_from, a.decay_steps) * g["lr_mult"]
        gen = torch.Generator().manual_seed(a.seed * 1_000_003 + step)
        idx = torch.randint(0, N, (B,), generator=gen)
        z0 = Z[idx].float()
        ids = IDS[idx].long()
        drop = torch.rand(B, generator=gen) < a.uncond
        ids[drop] = empty
        noise = torch.randn(z0.shape, generator=gen)
        t = torch.randint(0, 1000, (B,), generator=gen)
        zt = sched.add_noise(z0, noise, t)
        cond = text(input_ids=ids).last_hidden_state
        pred = unet(zt, t, cond).sample
        snr = snr_all[t]
        if a.prediction == "v_prediction":
            target = sched.get_velocity(z0, noise, t)
            w = torch.clamp(snr, max=a.min_snr) / (snr + 1)
        else:
            target = noise
            w = torch.clamp(snr, max=a.min_snr) / snr
        loss = (w * (pred - target).pow(2).mean(dim=(1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(live, 1.0)
        opt.step()
        step += 1
        d = min(a.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in live], 1 - d)
        run_loss += loss.item()
        if step % 50 == 0:
            log(f"unet step {step} loss {run_loss / 50:.4f} {(time.time() - tl) / 50:.3f}s/step "
                f"total {(elapsed + time.time() - t0) / 60:.1f} min")
            run_loss, tl = 0.0, time.time()
        ck.maybe_save(state)
    ck.maybe_save(state, force=True)
    log(f"unet done: step {step}, {(elapsed + time.time() - t0) / 60:.1f} min total")
