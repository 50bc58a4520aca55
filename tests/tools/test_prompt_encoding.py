"""compel prompt encoding on the tiny SD pipeline: weighting, long prompts, cut reports, fallbacks."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tools import prompt_encoding as pe
from tools.generate import GenerateRequest

LONG = ", ".join(["a red circle left of a blue square"] * 12)  # well over 77 tokens


@pytest.fixture
def pipe(tiny_backend):
    return tiny_backend.pipeline()


def test_plain_prompts_pass_through_unchanged(pipe):
    kwargs, warnings = pe.pipeline_prompt_kwargs(pipe, "two red circles", "blurry")
    assert kwargs == {"prompt": "two red circles", "negative_prompt": "blurry"} and warnings == []


def test_a1111_weights_become_compel_syntax():
    assert pe.to_compel_syntax("a (red hat:1.3) and (blue: 0.8)") == "a (red hat)1.3 and (blue)0.8"
    assert pe.has_weighting("a (red:1.3) cat") and pe.has_weighting("a red++ cat")
    assert not pe.has_weighting("a sci-fi city, high-quality (night)")


def test_weighting_changes_the_text_embeddings(pipe):
    weighted, warnings = pe.pipeline_prompt_kwargs(pipe, "a (red:1.6) cat", "")
    neutral, _ = pe.pipeline_prompt_kwargs(pipe, "a (red:1.0) cat", "")
    assert warnings == [] and set(weighted) == {"prompt_embeds", "negative_prompt_embeds"}
    diff = (weighted["prompt_embeds"] - neutral["prompt_embeds"]).abs().max().item()
    assert diff > 1e-3
    # weight 1.0 through compel is exactly what diffusers itself encodes for the plain text
    plain, _ = pipe.encode_prompt("a red cat", "cpu", 1, True, "")
    assert torch.allclose(neutral["prompt_embeds"], plain, atol=1e-5)


def test_long_prompt_is_chunked_not_cut_and_generation_is_deterministic(pipe, tiny_backend):
    kwargs, warnings = pe.pipeline_prompt_kwargs(pipe, LONG, "blurry")
    n = pe.token_count(pipe.tokenizer, LONG)
    assert n > 77 and kwargs["prompt_embeds"].shape[1] == 77 * -(-(n - 2) // 75)
    assert kwargs["negative_prompt_embeds"].shape == kwargs["prompt_embeds"].shape
    assert len(warnings) == 1 and f"{n} tokens" in warnings[0] and "chunks" in warnings[0] and "Nothing was cut" in warnings[0]
    runs = [tiny_backend.generate(GenerateRequest(LONG, negative_prompt="blurry", steps=1, seed=3)) for _ in range(2)]
    assert runs[0].warnings == warnings
    assert np.array_equal(np.asarray(runs[0].images[0]), np.asarray(runs[1].images[0]))


class TokenizerOnlyPipe:
    """A pipeline compel does not handle (stands in for SDXL/FLUX/custom pipelines)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer


def test_unsupported_pipeline_gets_text_and_is_told_what_was_cut(pipe):
    other = TokenizerOnlyPipe(pipe.tokenizer)
    prompt = LONG + ", purple triangle"
    kwargs, warnings = pe.pipeline_prompt_kwargs(other, prompt, "")
    assert kwargs == {"prompt": prompt, "negative_prompt": None}
    assert len(warnings) == 1 and "the text encoder reads 77. Cut: '" in warnings[0]
    assert warnings[0].split("Cut: '")[1].split("'")[0].endswith("purple triangle")
    kwargs, warnings = pe.pipeline_prompt_kwargs(other, "a (red:1.3) cat", "")
    assert kwargs["prompt"] == "a (red:1.3) cat" and "weighting was not applied" in warnings[0]
    assert "TokenizerOnlyPipe is not supported" in warnings[0]


def test_compel_failure_falls_back_to_text_with_a_warning(pipe, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(pe, "_compel_kwargs", broken)
    kwargs, warnings = pe.pipeline_prompt_kwargs(pipe, "a (red:1.3) cat", "")
    assert kwargs["prompt"] == "a (red:1.3) cat" and "compel could not encode it (RuntimeError: boom)" in warnings[0]
