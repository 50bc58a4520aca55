"""Architectures of the demo world's models (tiny, standard diffusers/transformers classes).

Nothing here downloads anything; every model is built from a config in code.
"""
from __future__ import annotations

import json
from pathlib import Path

from tools.demo.world import SIZE, VOCAB_WORDS

MAX_TOKENS = 20          # tokenizer.model_max_length == text max_position_embeddings
TEXT_HIDDEN = 128
LATENT_CHANNELS = 4
LATENT_SIZE = 16         # 64x64 image -> 16x16x4 latent
SPECIALS = ["<|startoftext|>", "<|endoftext|>", "<|unk|>"]


# ----------------------------------------------------------------------------- tokenizer

def _word_merges(word: str) -> list[tuple[str, str]]:
    """Left-to-right merges that turn a word's characters into the single token word</w>."""
    chars = list(word[:-1]) + [word[-1] + "</w>"]
    merges = []
    cur = chars[0]
    for c in chars[1:]:
        merges.append((cur, c))
        cur = cur + c
    return merges


def write_tokenizer(folder: str | Path) -> Path:
    """Write a word-level CLIPTokenizer (vocab.json, merges.txt, configs) into `folder`.

    Every grammar word is one token. Intermediate merge products are in the vocab too, so a
    misspelt word becomes several known tokens instead of failing.
    """
    from transformers import CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab: dict[str, int] = {}
    merges: list[tuple[str, str]] = []

    def add(tok: str):
        if tok not in vocab:
            vocab[tok] = len(vocab)

    for tok in SPECIALS:
        add(tok)
    for w in sorted(set(VOCAB_WORDS)):
        add(w + "</w>")
    # single characters (plain and end-of-word) so any lowercase text tokenizes
    for c in "abcdefghijklmnopqrstuvwxyz0123456789.,'-!?":
        add(c)
        add(c + "</w>")
    seen = set()
    for w in sorted(set(VOCAB_WORDS), key=lambda x: (-len(x), x)):
        for a, b in _word_merges(w):
            if (a, b) not in seen:
                seen.add((a, b))
                merges.append((a, b))
                add(a + b)
    (folder / "vocab.json").write_text(json.dumps(vocab, indent=0))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n")
    tok = CLIPTokenizer(
        str(folder / "vocab.json"), str(folder / "merges.txt"),
        unk_token="<|unk|>", bos_token="<|startoftext|>", eos_token="<|endoftext|>",
        pad_token="<|endoftext|>", model_max_length=MAX_TOKENS,
    )
    tok.save_pretrained(str(folder))
    for w in VOCAB_WORDS:  # every grammar word must be one token
        ids = tok(w, add_special_tokens=False).input_ids
        if len(ids) != 1:
            raise RuntimeError(f"tokenizer splits {w!r} into {ids}")
    return folder


def load_tokenizer(folder: str | Path):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(folder))


def token_ids(tok) -> dict[str, int]:
    return {"bos": tok.bos_token_id, "eos": tok.eos_token_id, "pad": tok.pad_token_id,
            "vocab": len(tok)}


# ----------------------------------------------------------------------------- configs

def text_config(tok, hidden: int = TEXT_HIDDEN, layers: int = 3):
    from transformers import CLIPTextConfig

    ids = token_ids(tok)
    return CLIPTextConfig(
        vocab_size=ids["vocab"], hidden_size=hidden, intermediate_size=hidden * 4,
        projection_dim=hidden, num_hidden_layers=layers, num_attention_heads=4,
        max_position_embeddings=MAX_TOKENS, hidden_act="quick_gelu",
        bos_token_id=ids["bos"], eos_token_id=ids["eos"], pad_token_id=ids["pad"],
    )


def clip_config(tok):
    from transformers import CLIPConfig, CLIPVisionConfig

    vision = CLIPVisionConfig(
        hidden_size=128, intermediate_size=512, projection_dim=128, num_hidden_layers=4,
        num_attention_heads=4, image_size=SIZE, patch_size=8, hidden_act="quick_gelu",
    )
    return CLIPConfig(text_config=text_config(tok).to_dict(), vision_config=vision.to_dict(),
                      projection_dim=128)


def make_clip(tok):
    from transformers import CLIPModel

    return CLIPModel(clip_config(tok))


def image_processor():
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(
        do_resize=True, size={"shortest_edge": SIZE}, do_center_crop=True,
        crop_size={"height": SIZE, "width": SIZE}, do_rescale=True, rescale_factor=1 / 255,
        do_normalize=True, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
        do_convert_rgb=True, resample=3,
    )


def make_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 64), layers_per_block=1, latent_channels=LATENT_CHANNELS,
        norm_num_groups=8, sample_size=SIZE, mid_block_add_attention=False,
    )


UNET_PRESETS = {
    # name: (block_out_channels, cross-attention per level, layers_per_block, heads)
    # attention is skipped at 16x16 where it costs most; the 8x8 levels and the mid block
    # attend to the text and to each other.
    "b": ((64, 128), (False, True), 1, 4),
    "b3": ((64, 128, 128), (False, True, True), 1, 4),
    "a": ((32, 64), (True, True), 1, 2),
}


def make_unet(preset: str = "b", cross_dim: int = TEXT_HIDDEN):
    from diffusers import UNet2DConditionModel

    ch, attn, lpb, heads = UNET_PRESETS[preset]
    return UNet2DConditionModel(
        sample_size=LATENT_SIZE, in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS,
        down_block_types=tuple("CrossAttnDownBlock2D" if x else "DownBlock2D" for x in attn),
        up_block_types=tuple("CrossAttnUpBlock2D" if x else "UpBlock2D" for x in reversed(attn)),
        mid_block_type="UNetMidBlock2DCrossAttn",
        block_out_channels=ch, layers_per_block=lpb, cross_attention_dim=cross_dim,
        attention_head_dim=heads, norm_num_groups=16 if min(ch) < 64 else 32,
    )


def make_scheduler(prediction_type: str = "epsilon"):
    """Training schedule (SD's scaled-linear betas). Inference uses DPM++ 2M on the same betas."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                         beta_schedule="scaled_linear", prediction_type=prediction_type,
                         clip_sample=False)


def make_inference_scheduler(prediction_type: str = "epsilon"):
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
        beta_schedule="scaled_linear", prediction_type=prediction_type,
        algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=False,
        timestep_spacing="trailing", final_sigmas_type="zero", steps_offset=1,
    )


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())
