"""Train, export and judge the demo LCM-LoRA: the shipped demo model in 4 steps.

    python -m training.demo_lcm --minutes 60     # distil (resumes from checkpoints/lcm/)
    python -m training.demo_lcm --export         # fp16 LoRA into tools/demo/weights/lora-lcm/
    python -m training.demo_lcm --eval 96        # oracle: 4 LCM steps vs the base model's 20

Latent consistency distillation as the LCM-LoRA paper does it (Luo et al. 2023): the frozen demo
UNet is the teacher; a LoRA on the same UNet is the student. For a latent noised to a DDIM step
t_n of a 50-step schedule, the teacher (with classifier-free guidance at a random scale) takes
one DDIM step to t_{n-1}; the student's consistency function at t_n must match its own (no grad)
at t_{n-1}, so every point of a trajectory maps to the same clean latent. The boundary scalings
(sigma_data 0.5, timestep scaling 10) are diffusers' LCMScheduler's, so the export samples with
`LCMScheduler` at guidance 1 (the teacher's guidance is distilled in), and imagent gives an
'lcm' LoRA 4 steps at cfg 1 with that scheduler (tools.generate.fast_defaults).
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
from training.demo_lora import WEIGHT_NAME, export_lora, latent_cache, lora_setup, lora_state
from training.demo_common import StepLog, adapter_main, log, lr_at, optimizer_step

EXPORT_DIR = WEIGHTS_DIR / "lora-lcm"
DDIM_STEPS = 50            # the schedule the consistency is learnt on (LCMScheduler's original_inference_steps)
SIGMA_DATA, TIMESTEP_SCALING = 0.5, 10.0


def boundary(t: torch.Tensor):
    """LCM's c_skip, c_out at timesteps t (shaped for latents)."""
    s = TIMESTEP_SCALING * t.float()
    c_skip = SIGMA_DATA ** 2 / (s ** 2 + SIGMA_DATA ** 2)
    c_out = s / (s ** 2 + SIGMA_DATA ** 2) ** 0.5
    return c_skip.view(-1, 1, 1, 1), c_out.view(-1, 1, 1, 1)


def x0_from_eps(zt, eps, a_t):
    return (zt - (1 - a_t).sqrt() * eps) / a_t.sqrt()


def train(a) -> None:
    out = Path(a.out)
    pipe, live, opt, ck, step, elapsed = lora_setup(a, "lora_lcm.pt", "lcm")
    unet, text = pipe.unet, pipe.text_encoder
    cache = latent_cache(pipe, out, a.cache, a.seed, style="normal")
    Z, IDS = cache["z"], cache["ids"]
    empty = pipe.tokenizer([""], padding="max_length", max_length=pipe.tokenizer.model_max_length,
                           return_tensors="pt").input_ids
    alphas = M.make_scheduler("epsilon").alphas_cumprod
    skip = 1000 // DDIM_STEPS
    ddim = torch.arange(1, DDIM_STEPS + 1) * skip - 1           # 19, 39, ..., 999
    deadline = time.time() + a.minutes * 60
    progress = StepLog("lcm", elapsed, digits=5)
    with torch.no_grad():
        uncond_all = text(input_ids=empty).last_hidden_state

    def state():
        return lora_state(pipe, opt, step, progress.minutes(), a.rank)

    unet.train()
    while time.time() < deadline and step < a.max_steps:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, a.lr, 100)
        gen = torch.Generator().manual_seed(a.seed * 1_000_003 + step)
        idx = torch.randint(0, Z.shape[0], (a.batch,), generator=gen)
        z0, ids = Z[idx].float(), IDS[idx].long()
        n = torch.randint(0, DDIM_STEPS, (a.batch,), generator=gen)
        t_start, t_prev = ddim[n], (ddim[n] - skip).clamp(min=0)
        a_s, a_p = alphas[t_start].view(-1, 1, 1, 1), alphas[t_prev].view(-1, 1, 1, 1)
        noise = torch.randn(z0.shape, generator=gen)
        zt = a_s.sqrt() * z0 + (1 - a_s).sqrt() * noise
        w = a.w_min + (a.w_max - a.w_min) * torch.rand(a.batch, generator=gen).view(-1, 1, 1, 1)
        with torch.no_grad():
            cond = text(input_ids=ids).last_hidden_state
            uncond = uncond_all.expand(a.batch, -1, -1)
            unet.disable_adapters()                      # the teacher: the frozen base UNet
            eps_c, eps_u = unet(torch.cat([zt, zt]), torch.cat([t_start, t_start]),
                                torch.cat([cond, uncond])).sample.chunk(2)
            unet.enable_adapters()
            x0_c, x0_u = x0_from_eps(zt, eps_c, a_s), x0_from_eps(zt, eps_u, a_s)
            x0_t, eps_t = x0_c + w * (x0_c - x0_u), eps_c + w * (eps_c - eps_u)
            z_prev = a_p.sqrt() * x0_t + (1 - a_p).sqrt() * eps_t          # one DDIM step of the teacher
            cs_p, co_p = boundary(t_prev)
            target = cs_p * z_prev + co_p * x0_from_eps(z_prev, unet(z_prev, t_prev, cond).sample, a_p)
        cs, co = boundary(t_start)
        pred = cs * zt + co * x0_from_eps(zt, unet(zt, t_start, cond).sample, a_s)
        loss = (((pred - target) ** 2 + a.huber_c ** 2).sqrt() - a.huber_c).mean()
        step += 1
        progress.add(step, optimizer_step(opt, live, loss))
        ck.maybe_save(state)
    ck.maybe_save(state, force=True)
    log(f"lcm done: step {step}, {progress.minutes():.1f} min total")


def export(a) -> None:
    export_lora(Path(a.out) / "lora_lcm.pt", EXPORT_DIR,
                {"kind": "lcm-lora", "sampling": "LCMScheduler, 4 steps, guidance 1"})


def evaluate(a) -> None:
    """Oracle accuracy: the base model (DPM++, 20 and 4 steps, cfg 5) against the LCM-LoRA
    (LCMScheduler, 1/2/4/8 steps, cfg 1), same prompts and seeds; seconds per image."""
    from diffusers import LCMScheduler

    from tools.demo import load_pipeline
    from tools.demo import oracle as O

    pipe = load_pipeline()
    base_sched = pipe.scheduler
    prompts = [W.sample_scene(random.Random(f"lcm-eval-{i}")).caption() for i in range(a.eval)]
    rows = {}

    def judge(label, steps, cfg):
        correct, t = 0, time.perf_counter()
        for i in range(0, len(prompts), 16):
            gens = [torch.Generator().manual_seed(s) for s in range(i, min(i + 16, len(prompts)))]
            imgs = pipe(prompts[i:i + 16], generator=gens, num_inference_steps=steps, guidance_scale=cfg,
                        height=64, width=64).images
            correct += sum(O.check(im, p).correct for im, p in zip(imgs, prompts[i:i + 16]))
        rows[label] = {"accuracy": round(correct / len(prompts), 3),
                       "s_per_image": round((time.perf_counter() - t) / len(prompts), 4)}
        log(label, rows[label])

    judge("base dpm++ 20 steps", 20, 5.0)
    judge("base dpm++ 4 steps", 4, 5.0)
    pipe.load_lora_weights(str(EXPORT_DIR), weight_name=WEIGHT_NAME, adapter_name="lcm")
    pipe.scheduler = LCMScheduler.from_config(base_sched.config)
    for steps in (1, 2, 4, 8):
        judge(f"lcm-lora {steps} steps", steps, 1.0)
    print(json.dumps({"prompts": len(prompts), **rows}))


def main(argv=None) -> None:
    def extra(p):
        p.add_argument("--rank", type=int, default=8, help="LoRA rank")
        p.add_argument("--w-min", type=float, default=3.0, help="teacher guidance w (cfg = w + 1), lowest")
        p.add_argument("--w-max", type=float, default=5.0, help="teacher guidance w, highest")
        p.add_argument("--huber-c", type=float, default=0.001, help="pseudo-Huber loss constant")

    adapter_main(argv, prog="python -m training.demo_lcm", doc=__doc__, what="LCM-LoRA", minutes=60.0,
                 out="checkpoints/lcm", lr=3e-4, train=train, export=export, evaluate=evaluate, extra=extra)


if __name__ == "__main__":
    main()
