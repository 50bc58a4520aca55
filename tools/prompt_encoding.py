"""Turn prompt text into the keyword arguments a diffusers pipeline call takes.

Plain prompts that fit the text encoder pass through as text, exactly as diffusers encodes
them. Prompts with weighting, or longer than the encoder's window (77 tokens for CLIP), are
encoded with compel for Stable Diffusion 1.x/2.x pipelines:

  (word:1.3)    A1111-style weight (converted to compel's `(word)1.3`)
  word+ word-   compel's own syntax (+ is x1.1, - is x0.9; `(two words)1.2` weights a group)
  long prompts  split into 75-token chunks at sentence/phrase boundaries and concatenated,
                so nothing is cut (the user is told how it was split)

Other pipelines (SDXL, FLUX, custom ones) get plain text; the user is told when weighting is
not applied or when the tokenizer cuts the prompt, and what was cut.
"""
from __future__ import annotations

import re

A1111_WEIGHT = re.compile(r"\(([^():]+?):\s*([0-9]*\.?[0-9]+)\s*\)")
COMPEL_SYNTAX = re.compile(r"\([^()]*\)[0-9.+-]|\w[+-]+(?=\s|,|$)|\)[+-]|\.(and|blend|swap)\(")


def to_compel_syntax(text: str) -> str:
    """'(red hat:1.3)' -> '(red hat)1.3'; compel's own syntax is left as is."""
    return A1111_WEIGHT.sub(lambda m: f"({m.group(1).strip()}){float(m.group(2)):g}", text or "")


def has_weighting(text: str) -> bool:
    return bool(text) and bool(A1111_WEIGHT.search(text) or COMPEL_SYNTAX.search(text))


def token_count(tok, text: str) -> int:
    """Tokens including the begin/end markers."""
    return len(tok(text or "", truncation=False, verbose=False).input_ids)


def compel_supported(pipe) -> bool:
    """compel is used for single-CLIP-encoder Stable Diffusion 1.x/2.x pipelines."""
    try:
        from diffusers import (StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline,
                               StableDiffusionPipeline)
    except ImportError:  # pragma: no cover
        return False
    sd = (StableDiffusionPipeline, StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline)
    return (isinstance(pipe, sd) and getattr(pipe, "tokenizer", None) is not None
            and getattr(pipe, "text_encoder", None) is not None)


def pipeline_prompt_kwargs(pipe, prompt: str, negative: str) -> tuple[dict, list[str]]:
    """(kwargs for pipe(...), warnings for the user)."""
    plain = {"prompt": prompt, "negative_prompt": negative or None}
    tok = getattr(pipe, "tokenizer", None)
    if tok is None:
        return plain, []
    limit = tok.model_max_length
    lengths = {"prompt": token_count(tok, prompt), "negative prompt": token_count(tok, negative)}
    long_ = {k: n for k, n in lengths.items() if n > limit}
    weighted = has_weighting(prompt) or has_weighting(negative)
    if not long_ and not weighted:
        return plain, []
    if compel_supported(pipe):
        try:
            return _compel_kwargs(pipe, prompt, negative, limit, long_)
        except Exception as exc:  # compel could not parse or encode: plain text, and say so
            reason = f"compel could not encode it ({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''})"
    else:
        reason = f"{type(pipe).__name__} is not supported by compel here"
    warnings = []
    if weighted:
        warnings.append(f"Prompt weighting was not applied: {reason}; the text was passed as written.")
    for which, n in long_.items():
        text = prompt if which == "prompt" else negative
        warnings.append(_cut_message(tok, which, text, n, limit))
    return plain, warnings


def _compel_kwargs(pipe, prompt, negative, limit, long_) -> tuple[dict, list[str]]:
    import torch
    from compel import Compel

    dtype = pipe.text_encoder.dtype
    compel = Compel(tokenizer=pipe.tokenizer, text_encoder=pipe.text_encoder, truncate_long_prompts=False,
                    dtype_for_device_getter=lambda device: dtype)
    with torch.no_grad():
        pos = compel.build_conditioning_tensor(to_compel_syntax(prompt))
        neg = compel.build_conditioning_tensor(to_compel_syntax(negative or ""))
        pos, neg = compel.pad_conditioning_tensors_to_same_length([pos, neg])
    warnings = []
    for which, n in long_.items():
        chunks = -(-(n - 2) // (limit - 2))  # ceil: each chunk holds limit-2 tokens plus begin/end markers
        warnings.append(f"The {which} is {n} tokens; the text encoder reads {limit} at a time, so compel "
                        f"encoded it in about {chunks} chunks (split at sentence/phrase boundaries). Nothing was "
                        "cut, but words in later chunks tend to count less.")
    return {"prompt_embeds": pos, "negative_prompt_embeds": neg}, warnings


def _cut_message(tok, which: str, text: str, n: int, limit: int) -> str:
    ids = tok(text, truncation=False, verbose=False).input_ids
    kept = tok.decode(ids[1:limit - 1]).strip()
    cut = tok.decode(ids[limit - 1:-1]).strip()
    return (f"The {which} is {n} tokens; the text encoder reads {limit}. Cut: '{cut}' "
            f"(kept: '{kept[:60]}...').")
