"""The plumbing the demo trainers share: logging, data batches, checkpoints, learning rates, losses, the adapter CLI.

Used by the base-model trainers (`training.demo_train_vae`, `_clip`, `_unet`) and the adapter trainers
(`training.demo_lora`, `training.demo_controlnet`, `training.demo_lcm`).
"""
from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path

import numpy as np
import torch

from tools.demo import world as W


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
