"""CLIP scoring: plumbing, batching, formulas and ranking with a tiny random CLIPModel saved to disk."""
from __future__ import annotations

import json

import pytest
from PIL import Image

from agent.cli import main
from tools.errors import InvalidInput, ModelNotFound
from tools.score import Scorer, apply_formula


@pytest.fixture(scope="session")
def tiny_clip_path(tmp_path_factory):
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig

    from tiny_models import word_tokenizer

    folder = tmp_path_factory.mktemp("models") / "tiny-clip"
    tok = word_tokenizer(folder)
    torch.manual_seed(0)
    text = CLIPTextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                          num_attention_heads=4, max_position_embeddings=77, bos_token_id=0, eos_token_id=1,
                          pad_token_id=1)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                              image_size=32, patch_size=8)
    CLIPModel(CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=16)
              ).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def scorer(tiny_clip_path):
    return Scorer(str(tiny_clip_path))


COLORS = ["red", "green", "blue", "yellow", "purple"]


def images():
    return [Image.new("RGB", (40 + 4 * i, 36), c) for i, c in enumerate(COLORS)]


def test_nothing_loads_until_first_use(tiny_clip_path, monkeypatch):
    from transformers import CLIPModel

    loads, load = [], CLIPModel.from_pretrained.__func__  # count the loads through the public loader
    monkeypatch.setattr(CLIPModel, "from_pretrained",
                        classmethod(lambda cls, *a, **k: loads.append(a) or load(cls, *a, **k)))
    s = Scorer(str(tiny_clip_path))
    assert loads == []
    s.score(images()[:1], "a red circle")
    assert len(loads) == 1


def test_score_is_clipscore_of_the_cosine(scorer):
    cos = scorer.cosine(images(), "two red circles")
    scores = scorer.score(images(), "two red circles")
    assert len(scores) == 5 and scorer.formula == "clipscore" and "2.5" in scorer.formula_text
    assert scores == pytest.approx([2.5 * max(c, 0.0) for c in cos])
    assert all(-1.0 <= c <= 1.0 for c in cos)


def test_formulas():
    assert apply_formula(0.3, "clipscore") == pytest.approx(0.75)
    assert apply_formula(0.3, "torchmetrics") == pytest.approx(30.0)
    assert apply_formula(-0.2, "clipscore") == 0.0 and apply_formula(-0.2, "cosine") == -0.2
    with pytest.raises(InvalidInput):
        apply_formula(0.3, "bleu")


def test_batching_does_not_change_scores(tiny_clip_path, scorer):
    texts = ["a red circle", "a green square", "two blue triangles", "a yellow cat", "purple"]
    big = scorer.score(images(), texts)
    small = Scorer(str(tiny_clip_path), batch_size=2).score(images(), texts)
    assert small == pytest.approx(big, abs=1e-5)


def test_pairwise_and_matrix_agree(scorer):
    texts = ["a red circle", "a green square", "a dog"]
    m = scorer.matrix(images()[:2], texts)
    assert len(m) == 2 and len(m[0]) == 3
    assert scorer.cosine(images()[:2], texts[:2]) == pytest.approx([m[0][0], m[1][1]], abs=1e-5)


def test_rank_orders_captions_by_similarity(scorer):
    image = images()[0]
    captions = ["a red circle", "a green square", "two blue triangles", "a dog at night"]
    ranked = scorer.rank(image, captions)
    row = scorer.matrix([image], captions)[0]
    assert [c for c, _ in ranked] == [captions[i] for i in sorted(range(4), key=lambda i: -row[i])]
    assert [s for _, s in ranked] == sorted((s for _, s in ranked), reverse=True)


def test_rank_picks_the_caption_whose_embedding_matches(scorer, monkeypatch):
    import torch

    # engineered embeddings: image along axis 1; caption 'b' along axis 1, others elsewhere
    monkeypatch.setattr(scorer, "embed_images", lambda ims: torch.tensor([[0.0, 1.0, 0.0]]))
    monkeypatch.setattr(scorer, "embed_texts", lambda ts: torch.nn.functional.normalize(
        torch.tensor([[1.0, 0.0, 0.0], [0.1, 1.0, 0.0], [0.0, 0.5, 1.0]]), dim=-1))
    ranked = scorer.rank(Image.new("RGB", (8, 8)), ["a", "b", "c"])
    assert [c for c, _ in ranked] == ["b", "c", "a"]
    assert ranked[0][1] == pytest.approx(2.5 * 1 / (1.01 ** 0.5))


def test_bad_input(scorer):
    with pytest.raises(InvalidInput, match="2 text"):
        scorer.score(images()[:3], ["a", "b"])
    with pytest.raises(InvalidInput, match="empty"):
        scorer.score(images()[:1], " ")
    with pytest.raises(InvalidInput, match="No images"):
        scorer.score([], "a")
    with pytest.raises(InvalidInput):
        Scorer("x", formula="bleu")


def test_missing_model_names_it_and_says_how_to_point_to_one(tmp_path):
    with pytest.raises(ModelNotFound) as info:
        Scorer(str(tmp_path / "no-clip")).score(images()[:1], "a")
    assert "no-clip" in str(info.value) and "--clip" in str(info.value) and "IMAGENT_CLIP" in str(info.value)


def test_demo_clip_missing_is_a_clear_error(monkeypatch, tmp_path):
    import tools.demo

    def missing():
        raise ModelNotFound("the demo CLIP model is not installed", "rebuild it")

    monkeypatch.setattr(tools.demo, "clip_path", missing, raising=False)
    with pytest.raises(ModelNotFound) as info:
        Scorer("demo").score(images()[:1], "a")
    assert "demo CLIP" in str(info.value) and "--clip" in str(info.value)


def test_session_score_uses_the_clip_setting(settings, tiny_clip_path, tmp_path):
    from agent.session import Session

    session = Session(settings.with_overrides(clip_model=str(tiny_clip_path)))
    path = tmp_path / "red.png"
    images()[0].save(path)
    result = session.score([path, images()[1]], "a red circle")
    assert result["formula"] == "clipscore" and len(result["scores"]) == 2
    assert session.scorer() is session.scorer()


def test_cli_score_json_and_ranking(capsys, tiny_clip_path, tmp_path):
    paths = []
    for i, im in enumerate(images()[:2]):
        paths.append(str(tmp_path / f"{i}.png"))
        im.save(paths[-1])
    assert main(["score", *paths, "--text", "a red circle", "--clip", str(tiny_clip_path), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["formula"] == "clipscore" and [r["image"] for r in payload["results"]] == paths
    assert main(["score", paths[0], "--text", "a red circle", "--text", "a dog", "--clip", str(tiny_clip_path),
                 "--formula", "torchmetrics"]) == 0
    captured = capsys.readouterr()
    assert "<- best" in captured.out and "100 x max(cos, 0)" in captured.err
    assert main(["score", str(tmp_path / "nope.png"), "--text", "a", "--clip", str(tiny_clip_path)]) == 2
    assert main(["score", paths[0], "--text", "a", "--clip", str(tmp_path / "missing")]) == 3


def test_loading_clip_prints_no_library_noise():
    import subprocess
    import sys

    code = "from tools.score import Scorer; Scorer('demo').load(); print('loaded')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "loaded", out.stderr
    assert "torchvision" not in out.stderr and "Loading weights" not in out.stderr, out.stderr
