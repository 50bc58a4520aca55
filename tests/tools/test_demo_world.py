"""The demo world: grammar, renderer, oracle, and the shipped pipeline + CLIP (offline)."""
from __future__ import annotations

import random

import numpy as np
import pytest
from PIL import Image, ImageFilter

import tools.demo as demo
from tools.demo import oracle as O
from tools.demo import world as W
from tools.errors import InvalidInput, ModelNotFound


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


# ----------------------------------------------------------------------------- world

def test_parser_round_trips_captions():
    rng = random.Random(0)
    for _ in range(400):
        scene = W.sample_scene(rng)
        assert W.parse(scene.caption()) == scene
    for cat in W.CATEGORIES:
        for p in W.prompt_set(cat):
            assert W.parse(p).caption() == p


def test_parser_reads_documented_examples():
    s = W.parse("two red circles")
    assert s.objects == [("red", "circle")] * 2 and s.category == "counting"
    s = W.parse("a green triangle left of a yellow square")
    assert s.relation == "left of" and s.objects == [("green", "triangle"), ("yellow", "square")]
    s = W.parse("A blue square on a black background.")
    assert s.background == "black" and s.category == "colors"
    assert W.parse("an orange circle to the right of a red square").relation == "right of"
    assert W.parse("two purple squares and an orange circle").n_objects == 3


@pytest.mark.parametrize("bad", ["", "a pink circle", "a red hexagon", "five red circles",
                                 "three red circles and two blue squares",
                                 "two red circles left of a blue square",
                                 "a red circle on a green background", "a red circle please"])
def test_parser_rejects_text_outside_the_grammar(bad):
    with pytest.raises(InvalidInput):
        W.parse(bad)


def test_renderer_is_seeded_and_64px():
    a, _ = W.render("a red circle left of a blue square", seed=3)
    b, _ = W.render("a red circle left of a blue square", seed=3)
    c, _ = W.render("a red circle left of a blue square", seed=4)
    assert a.size == (64, 64) and a.mode == "RGB"
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))


def test_prompt_sets_cover_their_categories():
    assert len(W.prompt_set("single_object")) == 18
    for cat in W.CATEGORIES:
        prompts = W.prompt_set(cat)
        assert len(prompts) == len(set(prompts)) >= 18
        want = "color_attr" if cat == "two_object" else cat
        assert all(W.parse(p).category == want for p in prompts)


# ----------------------------------------------------------------------------- oracle

def _variants(img, nrng):
    noisy = np.clip(np.asarray(img, np.float32) + nrng.normal(0, 12, (64, 64, 3)), 0, 255)
    return {"clean": img, "blur": img.filter(ImageFilter.GaussianBlur(1.0)),
            "noise": Image.fromarray(noisy.astype(np.uint8))}


def test_oracle_agrees_with_renderer_clean_blurred_noisy():
    rng, nrng = random.Random(123), np.random.default_rng(0)
    n, ok = 300, {"clean": 0, "blur": 0, "noise": 0}
    for _ in range(n):
        img, cap, scene = W.sample(rng)
        for k, v in _variants(img, nrng).items():
            ok[k] += O.check(v, scene, "strict").correct
    for k, v in ok.items():
        assert v / n >= 0.99, (k, v / n)


def test_oracle_categories_on_rendered_prompt_sets():
    for cat in W.CATEGORIES:
        for i, p in enumerate(W.prompt_set(cat)):
            img, _ = W.render(p, seed=i)
            assert O.check(img, p, cat).correct, (cat, p)


def test_oracle_rejects_wrong_captions():
    rng = random.Random(7)
    wrong = 0
    n = 150
    for _ in range(n):
        img, cap, scene = W.sample(rng)
        other = W.perturb(scene, rng)
        wrong += not O.check(img, other, "strict").correct
    assert wrong / n >= 0.98


def test_oracle_reads_blank_and_relation():
    blank = Image.new("RGB", (64, 64), (0, 0, 0))
    r = O.read(blank)
    assert r.background == "black" and r.objects == []
    assert not O.check(blank, "a red circle").correct
    img, _ = W.render("a red circle left of a blue square", seed=1)
    assert O.check(img, "a red circle left of a blue square").correct
    assert not O.check(img, "a red circle right of a blue square").correct
    assert not O.check(img, "a blue square left of a red circle").correct


def _found(cx, cy, side=10.0):
    return O.Found("red", "circle", cx, cy, 80, 0.8, 1.0, (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2))


def test_oracle_relations_are_genevals_relative_position():
    b = _found(32, 32)
    # 24 px away, boxes 10 px: at 30 degrees off the x axis: x = -(20.78 - 2) / 24 = -0.78, y = -(12 - 2) / 24
    assert O.relative_position(_found(32 - 20.78, 32 - 12), b) == {"left of"}
    # at 45 degrees both parts are (16.97 - 2) / 24 = 0.62: left of and above at once, as in GenEval
    assert O.relative_position(_found(32 - 16.97, 32 - 16.97), b) == {"left of", "above"}
    # the diagonal miss: 13 px right and 24 px up is "above", never "right of"
    assert O.relative_position(_found(33, 17, 12), _found(20, 41, 12)) == {"above"}
    # centres closer than the shrink: no relation at all
    assert O.relative_position(_found(31, 32), b) == set()
    img, _ = W.render("a red circle left of a blue square", seed=1)
    objs = {o.colour: o for o in O.read(img).objects}
    assert O.relation_holds("left of", objs["red"], objs["blue"])
    assert objs["red"].box[0] < objs["red"].cx < objs["red"].box[2]


# ----------------------------------------------------------------------------- shipped models

def test_missing_weights_raise_model_not_found(monkeypatch, tmp_path):
    monkeypatch.setattr(demo, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(ModelNotFound):
        demo.pipeline_path()
    with pytest.raises(ModelNotFound):
        demo.clip_path()


def test_shipped_weights_are_fp16_safetensors_under_30mb():
    from safetensors import safe_open

    files = list(demo.weights_path().rglob("*.safetensors"))
    assert files, "no shipped weights"
    assert not list(demo.weights_path().rglob("*.bin"))
    total = sum(f.stat().st_size for f in demo.weights_path().rglob("*") if f.is_file())
    assert total <= 30e6, total
    for f in files:
        with safe_open(str(f), "pt") as st:
            for k in list(st.keys())[:5]:
                assert str(st.get_tensor(k).dtype) == "torch.float16", (f, k)


@pytest.fixture(scope="module")
def pipe():
    import torch

    torch.set_num_threads(2)
    return demo.load_pipeline()


@pytest.fixture(scope="module")
def clip():
    return demo.load_clip()


def test_pipeline_loads_with_the_standard_code_paths(pipe):
    import torch
    from diffusers import (AutoPipelineForText2Image, StableDiffusionImg2ImgPipeline,
                           StableDiffusionInpaintPipeline, StableDiffusionPipeline)

    assert isinstance(pipe, StableDiffusionPipeline)
    assert pipe.unet.dtype == torch.float32
    auto = AutoPipelineForText2Image.from_pretrained(str(demo.pipeline_path()),
                                                     safety_checker=None, requires_safety_checker=False)
    assert isinstance(auto, StableDiffusionPipeline)
    img = pipe("two red circles", num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images[0]
    assert img.size == (64, 64)  # native size from the unet/vae configs
    i2i = StableDiffusionImg2ImgPipeline.from_pipe(pipe)
    out = i2i("a blue square", image=img, strength=0.5, num_inference_steps=4).images[0]
    assert out.size == (64, 64)
    inp = StableDiffusionInpaintPipeline.from_pipe(pipe)
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    out = inp("a green triangle", image=img, mask_image=mask, num_inference_steps=4,
              height=64, width=64).images[0]
    assert out.size == (64, 64)


def test_clip_loads_with_standard_classes(clip):
    from transformers import CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    folder = str(demo.clip_path())
    assert isinstance(CLIPModel.from_pretrained(folder), CLIPModel)
    CLIPProcessor.from_pretrained(folder)
    tok = CLIPTokenizer.from_pretrained(folder)
    for w in W.VOCAB_WORDS:
        assert len(tok(w, add_special_tokens=False).input_ids) == 1, w
    proc = CLIPImageProcessor.from_pretrained(folder)
    assert proc(images=W.render("a red circle")[0], return_tensors="pt").pixel_values.shape == (1, 3, 64, 64)


def test_red_circle_passes_the_oracle_in_most_seeds(pipe):
    import torch

    d = demo.defaults()
    gens = [torch.Generator().manual_seed(s) for s in range(8)]
    imgs = pipe(["a red circle"] * 8, num_inference_steps=d["num_inference_steps"],
                guidance_scale=d["guidance_scale"], generator=gens).images
    ok = sum(O.check(im, "a red circle").correct for im in imgs)
    assert ok >= 5, f"{ok}/8 seeds pass the oracle"


def test_clip_ranks_true_captions_above_distractors(clip):
    from training.demo_evaluate import retrieval

    model, proc = clip
    rng = random.Random(11)
    imgs, caps = [], []
    for cap in ["a red circle", "two blue squares", "a green triangle left of a yellow square",
                "a purple circle on a black background", "an orange square above a red triangle",
                "three yellow circles", "a blue triangle and a red square", "a green square on a gray background"]:
        for s in range(2):
            imgs.append(W.render(cap, seed=s)[0])
            caps.append(cap)
    assert retrieval(model, proc, imgs, caps, n_distractors=5, seed=1) >= 0.75
