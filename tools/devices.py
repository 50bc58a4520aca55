"""Device and dtype selection: CUDA fp16, Apple MPS fp16, else CPU fp32; overridable."""
from __future__ import annotations

from tools.errors import InvalidInput

DTYPES = {"fp32": "float32", "float32": "float32", "fp16": "float16", "float16": "float16",
          "bf16": "bfloat16", "bfloat16": "bfloat16"}


def pick_device(requested: str | None = None) -> str:
    import torch

    if requested and requested != "auto":
        kind = requested.split(":")[0]
        if kind == "cuda" and not torch.cuda.is_available():
            raise InvalidInput("--device cuda was asked for but no CUDA GPU is available.",
                               "Use --device cpu or leave --device unset.")
        if kind == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise InvalidInput("--device mps was asked for but Apple MPS is not available.",
                               "Use --device cpu or leave --device unset.")
        if kind not in {"cuda", "mps", "cpu"}:
            raise InvalidInput(f"Unknown device '{requested}'.", "Use auto, cpu, cuda, cuda:N or mps.")
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if hasattr(torch.backends, "mps") and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(device: str, requested: str | None = None):
    import torch

    if requested and requested != "auto":
        name = DTYPES.get(requested.lower())
        if name is None:
            raise InvalidInput(f"Unknown dtype '{requested}'.", "Use auto, fp32, fp16 or bf16.")
        return getattr(torch, name)
    return torch.float16 if device.startswith(("cuda", "mps")) else torch.float32
