"""Train the demo world's models on this CPU (or a GPU), resumably.

    python -m training.demo_train vae  --minutes 12          # AutoencoderKL 64x64 -> 16x16x4
    python -m training.demo_train clip --minutes 12          # CLIPModel, contrastive with hard negatives
    python -m training.demo_train unet --minutes 70          # UNet2DConditionModel (+ text encoder from CLIP)
    python -m training.demo_train vaedec --minutes 20        # more decoder training (latent space unchanged)
    python -m training.demo_export                           # fp16 weights into tools/demo/weights/

Each run continues from the newest checkpoint in --out (default checkpoints/demo), so a job
killed when a session ends loses at most --ckpt-minutes of work; `--minutes` is the time for
this run. Data are rendered on the fly from a seed and the step number, so a resumed run sees
the same stream it would have seen uninterrupted. unet needs the finished vae and clip.
On a shared CPU run with OMP_WAIT_POLICY=PASSIVE (2 threads then beat 1 under load).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter

from training import demo_models as M
from tools.demo import world as W
from tools.demo.oracle import REL_MARGIN, relation_holds


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


def images_to_tensor(imgs) -> torch.Tensor:
    arr = np.stack([np.asarray(im, dtype=np.uint8) for im in imgs])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def batch(seed: int, step: int, n: int, category=None):
    rng = random.Random(f"{seed}-{step}")
    imgs, caps, scenes = [], [], []
    for _ in range(n):
        im, cap, sc = W.sample(rng, category)
        imgs.append(im)
        caps.append(cap)
        scenes.append(sc)
    return imgs, caps, scenes


class Checkpointer:
    def __init__(self, path: Path, every_s: float):
        self.path, self.every_s, self.last = path, every_s, time.time()

    def load(self):
        if self.path.exists():
            return torch.load(self.path, map_location="cpu", weights_only=False)
        return None

    def resume(self, model, opt, what: str) -> tuple[int, float]:
        """Load model and optimizer state from the checkpoint if there is one: (step, elapsed s)."""
        st = self.load()
        if not st:
            return 0, 0.0
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        log(f"resumed {what} at step {st['step']}, {st['elapsed'] / 60:.1f} min")
        return st["step"], st["elapsed"]

    def maybe_save(self, state_fn, force=False):
        if force or time.time() - self.last >= self.every_s:
            tmp = self.path.with_suffix(".tmp")
            torch.save(state_fn(), tmp)
            os.replace(tmp, self.path)
            self.last = time.time()
            return True
        return False


def optimizer_step(opt, params, loss, clip: float = 1.0) -> float:
    """Back-propagate `loss`, clip the gradients of `params`, step `opt`; the loss as a number."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, clip)
    opt.step()
    return loss.item()


class StepLog:
    """The adapter trainers' progress line every `every` steps: mean loss, s/step, minutes in all."""

    def __init__(self, what: str, elapsed: float, every: int = 50, digits: int = 4):
        self.what, self.elapsed, self.every, self.digits = what, elapsed, every, digits
        self.t0 = self.tl = time.time()
        self.loss = 0.0

    def minutes(self) -> float:
        return (self.elapsed + time.time() - self.t0) / 60

    def add(self, step: int, loss: float) -> None:
        self.loss += loss
        if step % self.every == 0:
            log(f"{self.what} step {step} loss {self.loss / self.every:.{self.digits}f} "
                f"{(time.time() - self.tl) / self.every:.3f}s/step total {self.minutes():.1f} min")
            self.loss, self.tl = 0.0, time.time()


def lr_at(step: int, base: float, warmup: int, decay_from: int = 0, decay_steps: int = 0) -> float:
    """Linear warm-up, constant, then (with decay_steps) a linear cool-down to 10% of base over
    decay_steps steps starting at step decay_from."""
    lr = base * min(1.0, (step + 1) / warmup)
    if decay_steps and step > decay_from:
        lr *= max(0.1, 1.0 - 0.9 * (step - decay_from) / decay_steps)
    return lr


def noisy_batch(Z, IDS, empty, batch: int, gen, sched, uncond: float = 0.1):
    """A training batch from a latent cache for an adapter on the frozen UNet: (cache indices,
    token ids with `uncond` of them dropped to the empty caption, noise, timesteps, noisy latents)."""
    idx = torch.randint(0, Z.shape[0], (batch,), generator=gen)
    z0, ids = Z[idx].float(), IDS[idx].long()
    ids[torch.rand(batch, generator=gen) < uncond] = empty
    noise = torch.randn(z0.shape, generator=gen)
    t = torch.randint(0, 1000, (batch,), generator=gen)
    return idx, ids, noise, t, sched.add_noise(z0, noise, t)


def eps_loss(pred, noise, t, snr_all, min_snr: float = 5.0):
    """Epsilon-prediction MSE with min-SNR weighting (the UNet's own recipe)."""
    snr = snr_all[t]
    w = torch.clamp(snr, max=min_snr) / snr
    return (w * (pred - noise).pow(2).mean(dim=(1, 2, 3))).mean()


def adapter_main(argv, *, prog: str, doc: str, what: str, minutes: float, out: str, lr: float,
                 train, export, evaluate, extra=None) -> None:
    """The command line shared by the adapter trainers (demo LoRA, demo ControlNet): train
    (resumable), --export, or --eval N. `extra(parser)` adds a trainer's own options."""
    p = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=minutes, help="wall time of this training run")
    p.add_argument("--max-steps", type=int, default=10**9, help="stop training at this step")
    p.add_argument("--out", default=out)
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--cache", type=int, default=8192, help="scenes in the training cache")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ckpt-minutes", type=float, default=3.0)
    p.add_argument("--export", action="store_true", help=f"write the fp16 {what} and exit")
    p.add_argument("--eval", type=int, default=0, metavar="N",
                   help=f"judge the exported {what} on N prompts with the oracle and exit")
    if extra:
        extra(p)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    (export if a.export else evaluate if a.eval else train)(a)


# ----------------------------------------------------------------------------- VAE

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


# ----------------------------------------------------------------------------- CLIP

def degrade(imgs, rng: random.Random, p: float):
    """Blur and noise a random share `p` of the images, so CLIP also sees the soft edges and
    speckle of decoded samples rather than only crisp renders."""
    out = []
    for im in imgs:
        if rng.random() < p:
            im = im.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
            arr = np.asarray(im, dtype=np.float32)
            sigma = rng.uniform(0.0, 8.0)
            noise = np.random.default_rng(rng.randrange(2**32)).normal(0, sigma, arr.shape)
            im = Image.fromarray(np.clip(arr + noise, 0, 255).astype(np.uint8))
        out.append(im)
    return out


def with_extra_objects(scene, rng: random.Random) -> Image.Image:
    """A fresh render of `scene` plus one or two objects it does not mention (a copy of one of
    its objects, or any colour and shape): the too-many-objects miss that samples make most
    often, also past the caption grammar's four objects."""
    _, lay = W.render(scene, rng)
    objs = list(lay.objects)
    for _ in range(rng.choice([1, 1, 2])):
        like = rng.choice(objs)
        colour, shape = ((like.colour, like.shape) if rng.random() < 0.6 else
                         (rng.choice(list(W.COLOURS)), rng.choice(list(W.SHAPES))))
        spot = W.free_spot(colour, shape, rng.randint(10, 16), objs, rng, gap=2)
        if spot is not None:
            objs.append(spot)
    return W.draw(W.Layout(scene, objs))


def contrastive_rank_loss(li: torch.Tensor, scale: torch.Tensor, B: int, E: int,
                          rank_weight: float = 1.0):
    """CLIP loss for a batch of 2B captions (B true, then their B near misses) against 2B + E
    images (the B scenes, the B near misses drawn, then E of the scenes with extra objects).
    `li` is the (2B + E) x 2B logits matrix, `scale` the logit scale. Returns the loss and the
    cosines of the matching pairs and of the near-miss pairs (for logging)."""
    n2, ne = torch.arange(2 * B), torch.arange(E)
    loss = 0.5 * (F.cross_entropy(li[:2 * B], n2) + F.cross_entropy(li.t(), n2))
    cos = li / scale
    pos = cos[n2, n2]                                      # 2B matching pairs
    near = torch.cat([cos[n2, (n2 + B) % (2 * B)],         # image, its near-miss caption
                      cos[(n2 + B) % (2 * B), n2],         # near-miss image, the caption
                      cos[2 * B + ne, ne]])                # too many objects, the caption
    rank = F.softplus(20.0 * (near[None, :] - pos[:, None] + 0.05)).mean()
    return loss + rank_weight * rank, pos, near


def near_miss(scene, lay, rng: random.Random, relation_share: float):
    """A scene wrong in one way and an image of it: (near-miss scene, its image).

    Usually `world.perturb` (one colour, shape, count, relation, background or binding changed).
    A scene with a relation instead gets, with probability `relation_share`, another relation
    (any of the three, so "above" is also told from "left of"), picked so that it is false for
    the scene's image `lay` under the oracle's rule, and drawn so that the scene's own relation is
    false in the near-miss image. perturb picks among six kinds of change, so without this,
    relations (the critique loop's hardest call) would be rare and only ever reversed."""
    # layout centres are box centres; the oracle measures mass centroids (a triangle's sits lower)
    margin = REL_MARGIN - 5.0
    if scene.relation and rng.random() < relation_share:
        a, b = lay.objects[0], lay.objects[1]
        false_here = [r for r in W.RELATIONS
                      if r != scene.relation and not relation_holds(r, a, b, margin)]
        miss = W.Scene(scene.groups, rng.choice(false_here), scene.background, scene.background_explicit)
        for _ in range(50):
            img, mlay = W.render(miss, rng)
            if not relation_holds(scene.relation, mlay.objects[0], mlay.objects[1], margin):
                break
        return miss, img
    miss = W.perturb(scene, rng)
    return miss, W.render(miss, rng)[0]


def clip_batch(seed: int, step: int, n: int, relation_share: float):
    """n scenes with their images and captions, and n near misses (scene, image, caption)."""
    rng = random.Random(f"{seed}-{step}")
    imgs, caps, scenes, neg_imgs, negs = [], [], [], [], []
    for _ in range(n):
        scene = W.sample_scene(rng)
        img, lay = W.render(scene, rng)
        miss, miss_img = near_miss(scene, lay, rng, relation_share)
        imgs.append(img); caps.append(scene.caption()); scenes.append(scene)
        neg_imgs.append(miss_img); negs.append(miss.caption())
    return imgs, caps, scenes, neg_imgs, negs


def train_clip(a):
    """Symmetric contrastive loss over B scenes and B hard negatives, plus a pooled ranking term.

    Each scene comes with a near miss (`world.perturb`: one colour, shape, count, relation,
    background or binding changed), rendered as an image too, so each pair is the other's hard
    negative in both directions. The ranking term asks every matching (caption, image) pair in the
    batch to score above every near-miss pair, across prompts: a smooth surrogate of the AUC that
    the critique loop relies on when it compares one score against a threshold.
    """
    out = Path(a.out)
    torch.manual_seed(a.seed)
    tok_dir = out / "tokenizer"
    M.write_tokenizer(tok_dir)
    tok = M.load_tokenizer(tok_dir)
    model = M.make_clip(tok)
    base_lr = a.lr or 5e-4
    opt = torch.optim.AdamW(model.parameters(), lr=base_lr, weight_decay=0.05, betas=(0.9, 0.98))
    ck = Checkpointer(out / "clip.pt", a.ckpt_minutes * 60)
    step, elapsed = ck.resume(model, opt, "clip")
    log(f"clip params {M.n_params(model)}")
    B = a.batch or 96
    t0, deadline = time.time(), time.time() + a.minutes * 60
    state = lambda: {"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                     "elapsed": elapsed + time.time() - t0}
    model.train()
    while time.time() < deadline:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, base_lr, 200)
        if a.neg_images:
            imgs, caps, scenes, neg_imgs, negs = clip_batch(a.seed, step, B, a.relation_negatives)
            rng = random.Random(f"neg-{a.seed}-{step}")
            E = int(B * a.extra_objects)
            imgs = imgs + neg_imgs + [with_extra_objects(s, rng) for s in scenes[:E]]
        else:  # the first recipe: hard-negative captions only
            imgs, caps, scenes = batch(a.seed, step, B)
            rng = random.Random(f"neg-{a.seed}-{step}")
            negs = [W.perturb(s, rng).caption() for s in scenes]
        x = images_to_tensor(degrade(imgs, rng, a.degrade))
        t = tok(caps + negs, padding="max_length", max_length=M.MAX_TOKENS, truncation=True,
                return_tensors="pt")
        o = model(input_ids=t.input_ids, attention_mask=t.attention_mask, pixel_values=x)
        li = o.logits_per_image            # images x 2B captions
        target = torch.arange(B)
        if a.neg_images:
            loss, pos, near = contrastive_rank_loss(li, model.logit_scale.exp(), B, E, a.rank_weight)
        else:
            # image->text over true + hard-negative captions; text->image over the true captions
            loss = 0.5 * (F.cross_entropy(li, target) + F.cross_entropy(li[:, :B].t(), target))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        step += 1
        if step % 25 == 0:
            acc = (li[:B].argmax(1) == target).float().mean().item()
            hard = (li[target, target] > li[target, target + B]).float().mean().item()
            msg = f"clip step {step} loss {loss.item():.4f} i2t acc {acc:.3f} vs-hard-neg {hard:.3f}"
            if a.neg_images:
                msg += f" pooled-auc {(pos[:, None] > near[None, :]).float().mean().item():.3f}"
            log(msg)
        ck.maybe_save(state)
    ck.maybe_save(state, force=True)
    model.save_pretrained(str(out / "clip_final"))
    log(f"clip done: step {step}, {(elapsed + time.time() - t0) / 60:.1f} min total")


# ----------------------------------------------------------------------------- UNet

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


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m training.demo_train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["vae", "vaedec", "clip", "unet"])
    p.add_argument("--minutes", type=float, default=10.0, help="wall time of this run")
    p.add_argument("--out", default="checkpoints/demo")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=0)
    p.add_argument("--lr", type=float, default=0.0)
    p.add_argument("--ckpt-minutes", type=float, default=3.0)
    p.add_argument("--kl", type=float, default=3e-5, help="vae: KL weight")
    p.add_argument("--preset", default="a", choices=sorted(M.UNET_PRESETS))
    p.add_argument("--prediction", default="epsilon", choices=["epsilon", "v_prediction"])
    p.add_argument("--min-snr", type=float, default=5.0)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--uncond", type=float, default=0.1, help="unet: caption dropout for CFG")
    p.add_argument("--text-lr-mult", type=float, default=0.3)
    p.add_argument("--cache", type=int, default=12288, help="unet: scenes in the latent cache")
    p.add_argument("--decay-from", type=int, default=0,
                   help="unet: step where a linear learning-rate cool-down starts")
    p.add_argument("--decay-steps", type=int, default=0,
                   help="unet: cool-down length in steps, down to 10%% of the rate (0: no cool-down)")
    p.add_argument("--neg-images", type=int, default=1, choices=[0, 1],
                   help="clip: render each hard-negative caption as an image too (1) or not (0)")
    p.add_argument("--rank-weight", type=float, default=1.0,
                   help="clip: weight of the pooled matching-above-near-miss ranking term")
    p.add_argument("--extra-objects", type=float, default=0.5,
                   help="clip: share of scenes also drawn with unmentioned extra objects")
    p.add_argument("--relation-negatives", type=float, default=0.5,
                   help="clip: share of relation scenes whose near miss is another relation")
    p.add_argument("--degrade", type=float, default=0.5,
                   help="clip: share of images blurred and noised like decoded samples")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / f"args_{a.what}.json").write_text(json.dumps(vars(a), indent=1))
    {"vae": train_vae, "vaedec": train_vae_decoder, "clip": train_clip, "unet": train_unet}[a.what](a)


if __name__ == "__main__":
    main()
