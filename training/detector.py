"""Train the demo world's open-vocabulary detector (an OWL-ViT, from scratch), resumably.

    python -m training.detector --minutes 40          # train (continues from checkpoints/detector)
    python -m training.detector --export              # fp16 weights into tools/demo/weights/detector

The model is a `transformers.OwlViTForObjectDetection` with a tiny config: a ViT over 8x8 patches
of the 64x64 image and a text tower over the demo tokenizer. Like OWL-ViT, every patch predicts
a box and a class embedding that is compared with the embedding of a text query ("red circle",
"circle"), so the verifier loads it by the same code path as a real OWL-ViT / OWLv2.

Training data are rendered scenes: the renderer's own layout gives the boxes (the oracle is not
used). Each object is assigned to the patch holding its centre (objects never share one: they
are at least 14 px apart on some axis); that patch is positive for the object's full query and
its shape query. Images are blurred, noised, colour-jittered and sent through the demo VAE, so
the detector also sees the soft edges of decoded samples; some scenes carry extra objects
(up to 6) and some none. Data come from a seed and the step number, so a resumed run sees the
same stream. Run with OMP_WAIT_POLICY=PASSIVE and at most 2 threads on a shared CPU.
This module is training code: it is not installed with imagent.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter

from tools.demo import WEIGHTS_DIR
from training import demo_models as M
from tools.demo import world as W

PATCH = 8
GRID = W.SIZE // PATCH
QUERIES = [f"{c} {s}" for c in W.COLOURS for s in W.SHAPES] + list(W.SHAPES)
MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


def detector_config(tok):
    from transformers import OwlViTConfig

    ids = M.token_ids(tok)
    text = dict(vocab_size=ids["vocab"], hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=M.MAX_TOKENS, bos_token_id=ids["bos"],
                eos_token_id=ids["eos"], pad_token_id=ids["pad"])
    vision = dict(hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
                  image_size=W.SIZE, patch_size=PATCH)
    return OwlViTConfig(text_config=text, vision_config=vision, projection_dim=64)


def processor(tok):
    from transformers import OwlViTImageProcessor, OwlViTProcessor

    ip = OwlViTImageProcessor(do_resize=True, size={"height": W.SIZE, "width": W.SIZE}, do_center_crop=False,
                              do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
                              image_mean=MEAN, image_std=STD, resample=3)
    return OwlViTProcessor(image_processor=ip, tokenizer=tok)


def to_pixels(imgs) -> torch.Tensor:
    arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0 for im in imgs])
    x = torch.from_numpy(arr).permute(0, 3, 1, 2)
    return (x - torch.tensor(MEAN)[None, :, None, None]) / torch.tensor(STD)[None, :, None, None]


# ----------------------------------------------------------------------------- data

def _extra(objs: list, rng: random.Random, n: int) -> list:
    objs = list(objs)
    for _ in range(n):
        size = rng.randint(10, 16)
        colour, shape = rng.choice(list(W.COLOURS)), rng.choice(W.SHAPES)
        spot = W.free_spot(colour, shape, size, objs, rng, gap=4)
        if spot is not None:
            objs.append(spot)
    return objs


def scene_example(rng: random.Random):
    """(image, objects) with objects as W.Placed."""
    scene = W.sample_scene(rng)
    _, lay = W.render(scene, rng)
    objs = lay.objects
    u = rng.random()
    if u < 0.04:
        objs = []
    elif u < 0.34:
        objs = _extra(objs, rng, rng.choice([1, 1, 2, 3]))
    return W.draw(W.Layout(scene, objs)), objs


def degrade(im: Image.Image, rng: random.Random) -> Image.Image:
    if rng.random() < 0.5:
        im = im.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.3)))
    arr = np.asarray(im, dtype=np.float32)
    if rng.random() < 0.3:
        arr = arr * np.array([rng.uniform(0.88, 1.12) for _ in range(3)], dtype=np.float32)
    if rng.random() < 0.5:
        arr = arr + np.random.default_rng(rng.randrange(2**32)).normal(0, rng.uniform(0, 10), arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def targets(objs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(class target P x Q, box target P x 4 in cxcywh/64, positive mask P)."""
    P, Q = GRID * GRID, len(QUERIES)
    cls = torch.zeros(P, Q)
    box = torch.zeros(P, 4)
    pos = torch.zeros(P, dtype=torch.bool)
    for o in objs:
        gx, gy = min(GRID - 1, int(o.cx // PATCH)), min(GRID - 1, int(o.cy // PATCH))
        p = gy * GRID + gx
        cls[p, QUERIES.index(f"{o.colour} {o.shape}")] = 1
        cls[p, QUERIES.index(o.shape)] = 1
        box[p] = torch.tensor([o.cx, o.cy, o.size, o.size]) / W.SIZE
        pos[p] = True
    return cls, box, pos


def make_batch(seed: int, step: int, n: int, vae, vae_share: float):
    rng = random.Random(f"det-{seed}-{step}")
    imgs, cls, box, pos = [], [], [], []
    for _ in range(n):
        im, objs = scene_example(rng)
        imgs.append(im)
        c, b, p = targets(objs)
        cls.append(c), box.append(b), pos.append(p)
    if vae is not None:
        idx = [i for i in range(n) if rng.random() < vae_share]
        if idx:
            with torch.no_grad():
                x = torch.from_numpy(np.stack([np.asarray(imgs[i], dtype=np.float32) for i in idx]))
                x = x.permute(0, 3, 1, 2) / 127.5 - 1
                z = vae.encode(x).latent_dist.sample(torch.Generator().manual_seed(step))
                y = vae.decode(z).sample.clamp(-1, 1)
                y = ((y + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
            for j, i in enumerate(idx):
                imgs[i] = Image.fromarray(y[j])
    imgs = [degrade(im, rng) if rng.random() < 0.6 else im for im in imgs]
    return to_pixels(imgs), torch.stack(cls), torch.stack(box), torch.stack(pos)


# ----------------------------------------------------------------------------- model pieces

def init_heads(model) -> None:
    """Small random heads (the library draws them at std 1, which saturates the boxes), a box
    prior of the patch's own cell, and a low prior probability for every class (focal loss)."""
    with torch.no_grad():
        for mod in (model.box_head.dense0, model.box_head.dense1, model.class_head.dense0):
            mod.weight.normal_(0, 0.02)
            mod.bias.zero_()
        model.box_head.dense2.weight.zero_()
        model.box_head.dense2.bias.zero_()
        for mod in (model.class_head.logit_shift, model.class_head.logit_scale):
            mod.weight.normal_(0, 0.02)
        model.class_head.logit_shift.bias.fill_(-4.0)
        model.class_head.logit_scale.bias.fill_(1.0)


def forward(model, pixels, input_ids, attention_mask):
    """(logits B x P x Q, boxes B x P x 4 cxcywh in 0..1), queries shared by the whole batch: the
    same heads the verifier runs (tools.detect.owl_forward)."""
    from tools.detect import owl_forward

    return owl_forward(model, pixels, input_ids, attention_mask)


def giou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    def xyxy(t):
        return torch.stack([t[:, 0] - t[:, 2] / 2, t[:, 1] - t[:, 3] / 2, t[:, 0] + t[:, 2] / 2,
                            t[:, 1] + t[:, 3] / 2], 1)
    a, b = xyxy(a), xyxy(b)
    lt, rb = torch.max(a[:, :2], b[:, :2]), torch.min(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(1)
    area = lambda t: (t[:, 2:] - t[:, :2]).clamp(min=0).prod(1)
    union = area(a) + area(b) - inter
    iou = inter / union.clamp(min=1e-6)
    lt2, rb2 = torch.min(a[:, :2], b[:, :2]), torch.max(a[:, 2:], b[:, 2:])
    hull = (rb2 - lt2).clamp(min=0).prod(1)
    return iou - (hull - union) / hull.clamp(min=1e-6)


def losses(logits, boxes, cls, box, pos):
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, cls, reduction="none")
    pt = p * cls + (1 - p) * (1 - cls)
    alpha = 0.25 * cls + 0.75 * (1 - cls)
    focal = (alpha * (1 - pt) ** 2 * ce).sum() / pos.sum().clamp(min=1)
    if pos.any():
        pb, tb = boxes[pos], box[pos]
        l1 = F.l1_loss(pb, tb)
        g = (1 - giou(pb, tb)).mean()
    else:
        l1 = g = logits.sum() * 0
    return focal, l1, g


# ----------------------------------------------------------------------------- train / export

def load_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(str(WEIGHTS_DIR / "pipeline" / "vae")).float().eval()


def train(a):
    from transformers import OwlViTForObjectDetection

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    tok = M.load_tokenizer(WEIGHTS_DIR / "pipeline" / "tokenizer")
    torch.manual_seed(a.seed)
    model = OwlViTForObjectDetection(detector_config(tok))
    init_heads(model)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.01)
    ckpt = out / "detector.pt"
    step, elapsed = 0, 0.0
    if ckpt.exists():
        st = torch.load(ckpt, map_location="cpu", weights_only=False)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        step, elapsed = st["step"], st["elapsed"]
        log(f"resumed at step {step}, {elapsed / 60:.1f} min")
    log(f"params {sum(p.numel() for p in model.parameters())}")
    vae = load_vae()
    enc = tok(QUERIES, padding="max_length", max_length=M.MAX_TOKENS, return_tensors="pt")
    t0, last = time.time(), time.time()
    deadline = t0 + a.minutes * 60
    model.train()

    def save():
        tmp = ckpt.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                    "elapsed": elapsed + time.time() - t0}, tmp)
        os.replace(tmp, ckpt)

    run, tick = [], time.time()
    while time.time() < deadline:
        lr = a.lr * min(1.0, (step + 1) / 300)
        if a.decay_steps and step > a.decay_from:
            lr *= max(0.05, 1.0 - 0.95 * (step - a.decay_from) / a.decay_steps)
        for g in opt.param_groups:
            g["lr"] = lr
        x, cls, box, pos = make_batch(a.seed, step, a.batch, vae, a.vae_share)
        logits, boxes = forward(model, x, enc.input_ids, enc.attention_mask)
        focal, l1, g = losses(logits, boxes, cls, box, pos)
        loss = focal + 5 * l1 + 2 * g
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        run.append([focal.item(), l1.item(), g.item()])
        if step % 50 == 0:
            m = np.mean(run, 0)
            run = []
            log(f"step {step} focal {m[0]:.4f} l1 {m[1]:.4f} giou {m[2]:.4f} lr {lr:.2e} "
                f"{(time.time() - tick) / 50:.2f} s/step")
            tick = time.time()
        if time.time() - last > a.ckpt_minutes * 60:
            save()
            last = time.time()
    save()
    log(f"stopped at step {step}, {(elapsed + time.time() - t0) / 60:.1f} min in all")


def export(a) -> Path:
    """fp16 OwlViTForObjectDetection + OwlViTProcessor folder in tools/demo/weights/detector."""
    from transformers import OwlViTForObjectDetection

    tok = M.load_tokenizer(WEIGHTS_DIR / "pipeline" / "tokenizer")
    st = torch.load(Path(a.out) / "detector.pt", map_location="cpu", weights_only=False)
    model = OwlViTForObjectDetection(detector_config(tok))
    model.load_state_dict(st["model"])
    dest = Path(a.dest) if a.dest else WEIGHTS_DIR / "detector"
    tmp = dest.with_name("detector.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.half().save_pretrained(str(tmp))
    processor(tok).save_pretrained(str(tmp))
    (tmp / "imagent_detector.json").write_text(json.dumps(
        {"steps": st["step"], "minutes": round(st["elapsed"] / 60, 1), "queries": QUERIES,
         "nouns": list(W.SHAPES), "attributes": list(W.COLOURS), "backgrounds": list(W.BACKGROUNDS),
         "threshold": a.threshold, "patch": PATCH}, indent=1))
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    log(f"exported step {st['step']} to {dest}")
    return dest


EVAL_QUERIES = list(W.SHAPES) + [f"{c} {s}" for s in W.SHAPES for c in W.COLOURS]


def read_objects(det, d, threshold: float) -> list[tuple[str, str]]:
    """(colour, shape) of every object the detector finds in scores `d`, as the verifier reads them."""
    queries = EVAL_QUERIES
    found, boxes = [], []
    shape_idx = [queries.index(s) for s in W.SHAPES]
    for s in W.SHAPES:
        for box, p in det.boxes_for(d, s, threshold):
            if d.probs[p, queries.index(s)] < d.probs[p, shape_idx].max():
                continue
            colour = max(W.COLOURS, key=lambda c: d.probs[p, queries.index(f"{c} {s}")])
            found.append((colour, s))
            boxes.append(box)
    return sorted(found)


def evaluate(a) -> dict:
    """Exact-scene accuracy on held-out rendered scenes (renderer labels, half through the VAE) per
    threshold; the best threshold is the one to ship (the oracle is not used)."""
    from tools.detect import Detector

    folder = Path(a.dest or "/tmp/imagent-detector-eval")
    a.dest = str(folder)
    export(a)
    det = Detector(str(folder))
    vae = load_vae()
    rng = random.Random("det-eval")
    data = []
    for i in range(a.eval_n):
        im, objs = scene_example(rng)
        if i % 2 and vae is not None:
            with torch.no_grad():
                x = torch.from_numpy(np.asarray(im, dtype=np.float32)).permute(2, 0, 1)[None] / 127.5 - 1
                y = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
            im = Image.fromarray(((y[0] + 1) * 127.5).round().byte().permute(1, 2, 0).numpy())
        im = degrade(im, rng) if i % 3 == 0 else im
        data.append((det.scores(im, EVAL_QUERIES), sorted((o.colour, o.shape) for o in objs)))
    out = {}
    for thr in (0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5):
        out[thr] = sum(read_objects(det, d, thr) == truth for d, truth in data) / len(data)
        log(f"threshold {thr:.2f}: exact scenes {out[thr]:.3f}")
    best = max(out, key=out.get)
    log(f"best threshold {best} ({out[best]:.3f} of {len(data)} scenes)")
    return {"thresholds": out, "best": best}


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m training.detector", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--out", default="checkpoints/detector")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--vae-share", type=float, default=0.4)
    p.add_argument("--decay-from", type=int, default=0)
    p.add_argument("--decay-steps", type=int, default=0)
    p.add_argument("--ckpt-minutes", type=float, default=3.0)
    p.add_argument("--export", action="store_true", help="write the fp16 weights and stop")
    p.add_argument("--eval", action="store_true", help="exact-scene accuracy per threshold on rendered scenes")
    p.add_argument("--eval-n", type=int, default=400)
    p.add_argument("--dest", default="", help="export: folder to write (default: the shipped one)")
    p.add_argument("--threshold", type=float, default=0.3, help="export: the detection threshold shipped")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.eval:
        evaluate(a)
    elif a.export:
        export(a)
    else:
        train(a)


if __name__ == "__main__":
    main()
