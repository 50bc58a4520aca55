"""The demo trainers' pieces that shape what the models learn (no training runs here)."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from tools.demo import oracle as O
from tools.demo import world as W
from training.demo_common import lr_at
from training.demo_train_clip import contrastive_rank_loss, degrade, near_miss, with_extra_objects


def test_lr_warms_up_holds_then_cools_down_to_a_tenth():
    assert lr_at(0, 1.0, 100) == pytest.approx(0.01)
    assert lr_at(500, 1.0, 100) == 1.0
    assert lr_at(500, 1.0, 100, decay_from=1000, decay_steps=2000) == 1.0
    assert lr_at(2000, 1.0, 100, decay_from=1000, decay_steps=2000) == pytest.approx(0.55)
    assert lr_at(3000, 1.0, 100, decay_from=1000, decay_steps=2000) == pytest.approx(0.1)
    assert lr_at(9000, 1.0, 100, decay_from=1000, decay_steps=2000) == pytest.approx(0.1)


def test_extra_object_negatives_have_more_objects_than_the_caption_says():
    rng = random.Random(3)
    more = 0
    for _ in range(40):
        scene = W.sample_scene(rng)
        img = with_extra_objects(scene, rng)
        reading = O.read(img)
        assert reading.background == scene.background
        if len(reading.objects) > scene.n_objects:
            more += 1
            assert not O.check(img, scene, "strict").correct
    assert more >= 36  # a crowded 4-object scene can leave no room for an extra object


def test_relation_near_misses_are_false_both_ways_under_the_oracle():
    rng = random.Random(1)
    kinds = set()
    for _ in range(100):
        scene = W.sample_scene(rng, "position")
        img, lay = W.render(scene, rng)
        miss, miss_img = near_miss(scene, lay, rng, 1.0)
        assert miss.groups == scene.groups and miss.relation != scene.relation
        kinds.add((scene.relation, miss.relation))
        assert O.check(img, scene).correct
        assert not O.check(img, miss).correct       # the near-miss caption is wrong for the image
        assert not O.check(miss_img, scene).correct  # the near-miss image is wrong for the caption
    assert any({r, m} in ({"above", "left of"}, {"above", "right of"}, {"below", "left of"},
                          {"below", "right of"}) for r, m in kinds)  # not only reversals


def test_other_near_misses_are_perturbations_drawn():
    scene = W.parse("two red circles")
    _, lay = W.render(scene, seed=3)
    miss, miss_img = near_miss(scene, lay, random.Random(2), 1.0)
    assert miss.caption() == W.perturb(scene, random.Random(2)).caption()
    assert O.check(miss_img, miss, "strict").correct


def test_degrade_leaves_images_alone_at_zero_and_softens_them_at_one():
    rng = random.Random(0)
    img, _ = W.render("a red square on a black background", seed=2)
    assert degrade([img], rng, 0.0)[0] is img
    soft = degrade([img], rng, 1.0)[0]
    assert soft.size == img.size
    a, b = np.asarray(img, dtype=float), np.asarray(soft, dtype=float)
    assert np.abs(a - b).mean() > 0.5
    assert O.check(soft, "a red square on a black background").correct


def _logits(B, E, good: bool):
    """(2B + E) x 2B cosines x 10 where matching pairs score 0.9; near misses score 0.95 when
    `good` is False (the model prefers the wrong caption) and 0.1 when it is True."""
    n = 2 * B
    cos = torch.full((n + E, n), 0.0)
    cos[torch.arange(n), torch.arange(n)] = 0.9
    near = 0.1 if good else 0.95
    cos[torch.arange(n), (torch.arange(n) + B) % n] = near
    cos[n + torch.arange(E), torch.arange(E)] = near
    return cos * 10.0


def test_contrastive_rank_loss_prefers_matching_pairs_above_near_misses():
    B, E = 4, 2
    scale = torch.tensor(10.0)
    good, pos, near = contrastive_rank_loss(_logits(B, E, True), scale, B, E)
    bad, _, _ = contrastive_rank_loss(_logits(B, E, False), scale, B, E)
    assert pos.shape == (2 * B,) and near.shape == (4 * B + E,)
    assert torch.allclose(pos, torch.full_like(pos, 0.9))
    assert good.item() < bad.item()
    no_rank, _, _ = contrastive_rank_loss(_logits(B, E, False), scale, B, E, rank_weight=0.0)
    assert no_rank.item() < bad.item()
