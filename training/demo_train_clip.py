"""Train the demo CLIP: contrastive with rendered near-miss images and a pooled ranking term.

Run through `python -m training.demo_train clip` (options and resuming there).
"""
from __future__ import annotations

import math
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter

from tools.demo import world as W
from tools.demo.oracle import relation_holds
from training import demo_models as M
from training.demo_common import Checkpointer, batch, images_to_tensor, log, lr_at


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
    if scene.relation and rng.random() < relation_share:
        a, b = lay.objects[0], lay.objects[1]
        false_here = [r for r in W.RELATIONS
                      if r != scene.relation and not relation_holds(r, a, b)]
        miss = W.Scene(scene.groups, rng.choice(false_here), scene.background, scene.background_explicit)
        for _ in range(50):
            img, mlay = W.render(miss, rng)
            if not relation_holds(scene.relation, mlay.objects[0], mlay.objects[1]):
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
