"""Tiny random-weight models built in the tests (the diffusers `get_dummy_components` pattern).

Saved with save_pretrained so the product loads them through the same code path as real models.
"""
from __future__ import annotations

import json
from pathlib import Path

WORDS = ("a an the two three four red green blue yellow purple orange white black gray circle circles "
         "square squares triangle triangles left right of above below on background cat dog photo "
         "of in at night coding watercolor portrait landscape city").split()


def word_tokenizer(folder: Path, words=WORDS):
    """A word-level CLIPTokenizer built in memory: each word is one token, other text is spelled out."""
    from transformers import CLIPTokenizer

    vocab: dict[str, int] = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    merges: list[str] = []

    def add(tok):
        vocab.setdefault(tok, len(vocab))

    for c in "abcdefghijklmnopqrstuvwxyz0123456789,.!?:()'-":
        add(c)
        add(c + "</w>")
    for w in words:
        parts = list(w[:-1]) + [w[-1] + "</w>"]
        acc = parts[0]
        for nxt in parts[1:]:
            line = f"{acc} {nxt}"
            if line not in merges:
                merges.append(line)
            acc = acc + nxt
            add(acc)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token="<|endoftext|>",
                         model_max_length=77)


def tiny_sd_components(tmp: Path, seed: int = 0, in_channels: int = 4) -> dict:
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = word_tokenizer(tmp / "tok")
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=16, in_channels=in_channels, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32, norm_num_groups=4,
        attention_head_dim=4)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       num_train_timesteps=1000)
    torch.manual_seed(seed)
    vae = AutoencoderKL(block_out_channels=[8, 16], in_channels=3, out_channels=3,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                        latent_channels=4, norm_num_groups=4, sample_size=32)
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32, intermediate_size=37,
        num_attention_heads=4, num_hidden_layers=2, vocab_size=len(tokenizer), max_position_embeddings=77))
    return {"unet": unet, "scheduler": scheduler, "vae": vae, "text_encoder": text_encoder,
            "tokenizer": tokenizer, "safety_checker": None, "feature_extractor": None,
            "image_encoder": None}


def save_tiny_sd(folder: Path, in_channels: int = 4) -> Path:
    """Save a tiny random Stable Diffusion pipeline (native size 32x32) as a diffusers folder
    (`in_channels=9`: an inpainting UNet, as in SD inpainting checkpoints)."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(**tiny_sd_components(folder.parent / (folder.name + "-build"),
                                                        in_channels=in_channels),
                                   requires_safety_checker=False)
    pipe.save_pretrained(folder)
    return folder


def _tiny_towers(tokenizer, *, max_positions: int) -> dict:
    """Text and vision tower configs (width 32, 2 layers, 32x32 images in 8x8 patches) for CLIP-like models."""
    return {"text_config": dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                num_attention_heads=4, max_position_embeddings=max_positions, bos_token_id=0,
                                eos_token_id=1, pad_token_id=1),
            "vision_config": dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=37,
                                  num_hidden_layers=2, num_attention_heads=4)}


def save_tiny_clip(folder: Path, seed: int = 0) -> Path:
    """A tiny random transformers CLIPModel (32x32 images) with tokenizer and image processor."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    tokenizer = word_tokenizer(folder.parent / (folder.name + "-tok"))
    config = CLIPConfig(**_tiny_towers(tokenizer, max_positions=77), projection_dim=16)
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def save_tiny_owlvit(folder: Path, seed: int = 0) -> Path:
    """A tiny random transformers OwlViTForObjectDetection (32x32 images) with its processor."""
    import torch
    from transformers import OwlViTConfig, OwlViTForObjectDetection, OwlViTImageProcessor, OwlViTProcessor

    tokenizer = word_tokenizer(folder.parent / (folder.name + "-tok"))
    tokenizer.model_max_length = 16
    # OWL-ViT compares class embeddings (text width) with projected queries: projection = text width
    config = OwlViTConfig(**_tiny_towers(tokenizer, max_positions=16), projection_dim=32)
    torch.manual_seed(seed)
    OwlViTForObjectDetection(config).save_pretrained(folder)
    OwlViTProcessor(image_processor=OwlViTImageProcessor(size={"height": 32, "width": 32}, do_center_crop=False),
                    tokenizer=tokenizer).save_pretrained(folder)
    return folder


def save_tiny_lora(unet, path: Path, *, rank: int = 4, seed: int = 0, scale: float = 0.5,
                   targets=("to_q", "to_k", "to_v", "to_out.0")) -> Path:
    """A random LoRA for `unet` (attention projections, or `targets`) made with peft, saved as one
    .safetensors file in diffusers format (convert_state_dict_to_diffusers renames only attention
    keys, so other targets keep peft's layout: a file of mixed layouts, as the demo LoRAs are).
    `unet` is copied, never changed."""
    import copy

    import torch
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig, get_peft_model_state_dict

    u = copy.deepcopy(unet)
    u.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                             target_modules=list(targets)))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in u.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * scale)
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(u))
    path.parent.mkdir(parents=True, exist_ok=True)
    StableDiffusionPipeline.save_lora_weights(str(path.parent), unet_lora_layers=layers, weight_name=path.name)
    return path


def save_kohya_lora(diffusers_file: Path, path: Path, *, rank: int = 4) -> Path:
    """The same LoRA in the kohya / A1111 layout (`lora_unet_<module>.lora_down/lora_up.weight`
    and `.alpha`), as civitai files are: the keys rewritten, the tensors unchanged."""
    import torch
    from safetensors.torch import load_file, save_file

    out = {}
    for key, tensor in load_file(str(diffusers_file)).items():   # unet.<module>.lora.down|up.weight
        module, _, kind = key.removeprefix("unet.").rpartition(".lora.")
        name = "lora_unet_" + module.replace(".", "_")
        out[f"{name}.lora_{kind}"] = tensor.contiguous()
        out[f"{name}.alpha"] = torch.tensor(float(rank))
    save_file(out, str(path))
    return path


def save_tiny_controlnet(unet, folder: Path, *, seed: int = 0, embed=(8, 16), scale: float = 0.3) -> Path:
    """A ControlNet made from `unet` (ControlNetModel.from_unet) with random output convolutions
    (a trained one's are not zero), so a condition visibly changes the image."""
    import torch
    from diffusers import ControlNetModel

    net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=embed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for block in [*net.controlnet_down_blocks, net.controlnet_mid_block]:
            block.weight.copy_(torch.randn(block.weight.shape, generator=gen) * scale)
    net.save_pretrained(str(folder))
    return folder


def tiny_sdxl_components(tmp: Path, seed: int = 0, *, refiner: bool = False) -> dict:
    """Tiny random SDXL parts (diffusers' SDXL test pattern): two text encoders (the second with a
    projection), a `text_time` UNet. `refiner`: the img2img refiner's parts (text encoder 2 only,
    aesthetic-score time ids), as SDXL's refiner is built."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    tokenizer = word_tokenizer(tmp / "tok")
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=(5 if refiner else 6) * 8 + 32,
        cross_attention_dim=32 if refiner else 64, norm_num_groups=4)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       timestep_spacing="leading", steps_offset=1)
    torch.manual_seed(seed)
    vae = AutoencoderKL(block_out_channels=[8, 16], in_channels=3, out_channels=3,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                        latent_channels=4, norm_num_groups=4, sample_size=32)
    config = CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32, intermediate_size=37,
                            num_attention_heads=4, num_hidden_layers=2, vocab_size=len(tokenizer),
                            max_position_embeddings=77, projection_dim=32, hidden_act="gelu")
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(config)
    torch.manual_seed(seed + 1)
    text_encoder_2 = CLIPTextModelWithProjection(config)
    parts = {"unet": unet, "scheduler": scheduler, "vae": vae, "text_encoder_2": text_encoder_2,
             "tokenizer_2": tokenizer, "image_encoder": None, "feature_extractor": None}
    if refiner:
        parts.update(text_encoder=None, tokenizer=None, requires_aesthetics_score=True)
    else:
        parts.update(text_encoder=text_encoder, tokenizer=tokenizer)
    return parts


def save_tiny_sdxl(folder: Path, *, refiner: bool = False, seed: int = 0) -> Path:
    """A tiny random SDXL base (32x32) or refiner (`refiner`) saved as a diffusers folder."""
    from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

    parts = tiny_sdxl_components(folder.parent / (folder.name + "-build"), seed, refiner=refiner)
    cls = StableDiffusionXLImg2ImgPipeline if refiner else StableDiffusionXLPipeline
    if not refiner:
        parts.pop("requires_aesthetics_score", None)
    cls(**parts).save_pretrained(folder)
    return folder


def save_tiny_ip_adapter(unet, folder: Path, *, seed: int = 0, tokens: int = 4, embed_dim: int = 32,
                         image_size: int = 32, scale: float = 0.5) -> Path:
    """A random IP-Adapter for `unet` in the layout of h94/IP-Adapter: `ip-adapter.safetensors`
    (`image_proj.*`: the image-embedding projection to `tokens` text tokens; `ip_adapter.N.to_k_ip`
    and `.to_v_ip` for each cross-attention layer, N = 1, 3, 5, ...) and `image_encoder/` (a tiny
    CLIPVisionModelWithProjection)."""
    import torch
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    gen = torch.Generator().manual_seed(seed)
    cross = unet.config.cross_attention_dim
    weights = {"image_proj.proj.weight": torch.randn(tokens * cross, embed_dim, generator=gen) * scale,
               "image_proj.proj.bias": torch.zeros(tokens * cross),
               "image_proj.norm.weight": torch.ones(cross), "image_proj.norm.bias": torch.zeros(cross)}
    key = 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        if name.startswith("mid_block"):
            hidden = unet.config.block_out_channels[-1]
        elif name.startswith("up_blocks"):
            hidden = list(reversed(unet.config.block_out_channels))[int(name[len("up_blocks.")])]
        else:
            hidden = unet.config.block_out_channels[int(name[len("down_blocks.")])]
        for part in ("to_k_ip", "to_v_ip"):
            weights[f"ip_adapter.{key}.{part}.weight"] = torch.randn(hidden, cross, generator=gen) * scale
        key += 2
    folder.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(folder / "ip-adapter.safetensors"))
    torch.manual_seed(seed)
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, image_size=image_size,
        patch_size=8, projection_dim=embed_dim))
    encoder.save_pretrained(str(folder / "image_encoder"))
    return folder
