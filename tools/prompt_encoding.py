"""Turn prompt text into the keyword arguments a diffusers pipeline call takes.

This first version passes text through and reports what the tokenizer would cut. The prompt-
expansion work replaces the body with compel (weighting and long prompts) behind the same
function, so the backend does not change.
"""
from __future__ import annotations


def pipeline_prompt_kwargs(pipe, prompt: str, negative: str) -> tuple[dict, list[str]]:
    """(kwargs for pipe(...), warnings for the user)."""
    warnings = []
    tok = getattr(pipe, "tokenizer", None)
    if tok is not None:
        ids = tok(prompt, truncation=False).input_ids
        limit = tok.model_max_length
        if len(ids) > limit:
            kept = tok.decode(ids[1:limit - 1])
            cut = tok.decode(ids[limit - 1:-1])
            warnings.append(f"The prompt is {len(ids)} tokens; the text encoder reads {limit}. "
                            f"Cut: '{cut.strip()}' (kept: '{kept.strip()[:60]}...').")
    return {"prompt": prompt, "negative_prompt": negative or None}, warnings
