"""Train the demo VAE (AutoencoderKL 64x64 -> 16x16x4), and fine-tune its decoder alone.

Run through `python -m training.demo_train vae|vaedec` (options and resuming there).
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F

from training import demo_models as M
from training.demo_common import Checkpointer, batch, images_to_tensor, log, lr_at


def train_vae(a):
    out = Path(a.out)
    torch.manual_seed(a.seed)
    vae = M.make_vae()
    opt = torch.optim.AdamW(vae.parameters(), lr=a.lr or 1e-3, weight_decay=0.0)
    ck = Checkpointer(out / "vae.pt", a.ckpt_minutes * 60)
    step, elapsed = ck.resume(vae, opt, "vae")
    log(f"vae params {M.n_params(vae)}")
    t0, deadline = time.time(), time.time() + a.minutes * 60
    state = lambda: {"model": vae.state_dict(), "opt": opt.state_dict(), "step": step,
                     "elapsed": elapsed + time.time() - t0}
    base_lr = a.lr or 1e-3
    while time.time() < deadline:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, base_lr, 100)
        imgs, _, _ = batch(a.seed, step, a.batch or 32)
        x = images_to_tensor(imgs)
        post = vae.encode(x).latent_dist
        z = post.sample()
        rec = vae.decode(z).sample
        rec_loss = F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x)
        kl = 0.5 * (post.mean.pow(2) + post.var - 1.0 - post.logvar).mean()
        loss = rec_loss + a.kl * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 50 == 0:
            log(f"vae step {step} rec {rec_loss.item():.5f} kl {kl.item():.3f}")
        ck.maybe_save(state)
    ck.maybe_save(state, force=True)
    # scaling factor: unit variance latents for the diffusion model
    vae.eval()
    with torch.no_grad():
        zs = []
        for i in range(8):
            imgs, _, _ = batch(a.seed + 999, i, 128)
            zs.append(vae.encode(images_to_tensor(imgs)).latent_dist.mean)
        z = torch.cat(zs)
        sf = float(1.0 / z.std())
        imgs, _, _ = batch(a.seed + 998, 0, 256)
        x = images_to_tensor(imgs)
        rec = vae.decode(vae.encode(x).latent_dist.mean).sample
        err = F.mse_loss(rec, x).item()
    vae.register_to_config(scaling_factor=sf)
    vae.save_pretrained(str(out / "vae_final"))
    log(f"vae done: step {step}, {(elapsed + time.time() - t0) / 60:.1f} min total, "
        f"scaling_factor {sf:.4f}, latent mean {z.mean():.3f}, held-out mse {err:.5f}")


def train_vae_decoder(a):
    """Fine-tune only the VAE decoder (encoder frozen, so the latent space the UNet learnt
    stays the same). Decodes noisy posterior samples, so it also learns to clean up."""
    from diffusers import AutoencoderKL

    out = Path(a.out)
    torch.manual_seed(a.seed)
    vae = AutoencoderKL.from_pretrained(str(out / "vae_final"))
    vae.requires_grad_(False)
    dec = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    for p_ in dec:
        p_.requires_grad_(True)
    opt = torch.optim.AdamW(dec, lr=a.lr or 5e-4, weight_decay=0.0)
    ck = Checkpointer(out / "vaedec.pt", a.ckpt_minutes * 60)
    step, elapsed = ck.resume(vae, opt, "vae decoder")
    t0, deadline = time.time(), time.time() + a.minutes * 60
    state = lambda: {"model": vae.state_dict(), "opt": opt.state_dict(), "step": step,
                     "elapsed": elapsed + time.time() - t0}
    base_lr = a.lr or 5e-4
    vae.encoder.eval()
    while time.time() < deadline:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, base_lr, 50)
        imgs, _, _ = batch(a.seed + 777, step, a.batch or 32)
        x = images_to_tensor(imgs)
        with torch.no_grad():
            post = vae.encode(x).latent_dist
            z = post.mean + torch.randn_like(post.mean) * (0.1 / vae.config.scaling_factor)
        rec = vae.decode(z).sample
        loss = F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(dec, 1.0)
        opt.step()
        step += 1
        if step % 25 == 0:
            log(f"vae decoder step {step} rec {loss.item():.5f}")
        if ck.maybe_save(state) or time.time() >= deadline:
            vae.save_pretrained(str(out / "vae_final"))  # same encoder and scaling factor
    ck.maybe_save(state, force=True)
    vae.save_pretrained(str(out / "vae_final"))
    log(f"vae decoder done: step {step}, {(elapsed + time.time() - t0) / 60:.1f} min")
