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
This module is the command line; the trainers are in demo_train_vae, demo_train_clip and
demo_train_unet, the plumbing they share in demo_common.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from training import demo_models as M
from training.demo_common import (Checkpointer, StepLog, adapter_main, batch, eps_loss, images_to_tensor, log, lr_at,
                                  noisy_batch, optimizer_step)
from training.demo_train_clip import (clip_batch, contrastive_rank_loss, degrade, near_miss, train_clip,
                                      with_extra_objects)
from training.demo_train_unet import build_latent_cache, train_unet
from training.demo_train_vae import train_vae, train_vae_decoder

__all__ = ["Checkpointer", "StepLog", "adapter_main", "batch", "eps_loss", "images_to_tensor", "log", "lr_at",
           "noisy_batch", "optimizer_step", "clip_batch", "contrastive_rank_loss", "degrade", "near_miss",
           "train_clip", "with_extra_objects", "build_latent_cache", "train_unet", "train_vae", "train_vae_decoder",
           "main"]


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
