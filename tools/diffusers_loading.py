"""Loading diffusers pipelines: the shipped demo model, local folders (checked first, so a broken
file is named) and hub ids (with a clear error when the hub cannot be reached)."""
from __future__ import annotations

import os
from pathlib import Path

from tools.errors import ModelNotFound

from tools.demo import DEMO as DEMO_MODEL  # the demo-world pipeline shipped inside the package


def load_pipeline(model: str, device: str, dtype):
    """Load a text-to-image pipeline from a local diffusers folder or a hub id."""
    import diffusers

    if model == DEMO_MODEL:
        from tools import demo

        model = str(demo.pipeline_path())
    local = Path(model).expanduser()
    source = str(local) if local.exists() else model
    if local.exists() and not (local / "model_index.json").is_file():
        raise ModelNotFound(f"'{model}' is a folder but not a diffusers model (no model_index.json).",
                            "Point --model at a folder saved with save_pretrained(), or a hub id.")
    if local.exists():
        check_model_folder(local)
    from tools.loading import quiet_loading

    quiet_loading()
    if not local.exists():
        _require_hub(model)
    kwargs = {"dtype": dtype}
    try:
        try:
            pipe = diffusers.AutoPipelineForText2Image.from_pretrained(
                source, safety_checker=None, requires_safety_checker=False, **kwargs)
        except TypeError:  # a pipeline class without a safety checker argument
            pipe = diffusers.AutoPipelineForText2Image.from_pretrained(source, **kwargs)
    except Exception as exc:  # noqa: BLE001  (a local folder: whatever broke, say it is the folder)
        if not local.exists():
            if isinstance(exc, (OSError, ValueError)):
                raise _hub_error(model, exc) from None
            raise
        raise ModelNotFound(
            f"The model folder '{local}' could not be loaded ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200] if str(exc) else 'no detail'}).",
            _RESAVE_HINT) from None
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


_RESAVE_HINT = ("The folder is damaged or incomplete: re-save it with save_pretrained() or re-download it "
                "(e.g. huggingface-cli download MODEL --local-dir FOLDER).")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".msgpack", ".onnx", ".gguf")


def check_model_folder(folder: Path) -> None:
    """Check a local diffusers folder before loading it, and name what is broken: an unreadable
    `model_index.json`, an index listing no components, a listed subfolder that is missing, a model
    subfolder without weights, and an empty, truncated or garbled `.safetensors` file. Raises
    ModelNotFound with the path and the hint to re-save or re-download the folder."""
    import json

    index_path = folder / "model_index.json"
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelNotFound(f"The model index '{index_path}' is not readable JSON ({exc}).", _RESAVE_HINT) from None
    if not isinstance(index, dict):
        raise ModelNotFound(f"The model index '{index_path}' is not a JSON object.", _RESAVE_HINT)
    components = {name: spec for name, spec in index.items()
                  if not name.startswith("_") and isinstance(spec, list) and len(spec) == 2
                  and spec[0] is not None and spec[1] is not None}
    if not components:
        raise ModelNotFound(f"The model index '{index_path}' lists no components (no unet, vae, text encoder, ...), "
                            "so there are no weights to load.", _RESAVE_HINT)
    weighted = 0
    for name in sorted(components):
        sub = folder / name
        if not sub.is_dir():
            raise ModelNotFound(f"The model folder '{folder}' has no '{name}/' subfolder, which model_index.json "
                                f"lists ({components[name][1]}).", _RESAVE_HINT)
        if not (sub / "config.json").is_file():
            continue  # a scheduler, tokenizer or feature extractor: configuration only
        weights = [f for f in sorted(sub.iterdir()) if f.is_file() and f.name.endswith(_WEIGHT_SUFFIXES)]
        if not weights:
            raise ModelNotFound(f"The model subfolder '{sub}' has no weights file (.safetensors or .bin).",
                                _RESAVE_HINT)
        weighted += 1
        for f in weights:
            _check_weights_file(f)
    if not weighted:
        raise ModelNotFound(f"The model folder '{folder}' has no weights: no listed component has a config.json "
                            "and a weights file.", _RESAVE_HINT)


def _check_weights_file(path: Path) -> None:
    """An empty file, or a `.safetensors` file whose header is garbage or whose data is cut short."""
    import json
    import struct

    size = path.stat().st_size
    if size == 0:
        raise ModelNotFound(f"The weights file '{path}' is empty (0 bytes).", _RESAVE_HINT)
    if not path.name.endswith(".safetensors"):
        return
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise ValueError("shorter than the 8-byte header length")
            (n,) = struct.unpack("<Q", head)
            if n < 2 or 8 + n > size:
                raise ValueError(f"the header claims {n} bytes but the file has {size}")
            header = json.loads(fh.read(n).decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        ends = [t.get("data_offsets", [0, 0])[1] for k, t in header.items() if k != "__metadata__" and isinstance(t, dict)]
    except (OSError, ValueError, UnicodeDecodeError, struct.error, TypeError, IndexError, AttributeError) as exc:
        raise ModelNotFound(f"The weights file '{path}' has a garbled safetensors header ({exc}).", _RESAVE_HINT) from None
    need = 8 + n + max(ends, default=0)
    if need > size:
        raise ModelNotFound(f"The weights file '{path}' is truncated: {size} bytes of the {need} its header "
                            "describes.", _RESAVE_HINT)


def _hub_error(model: str, exc: Exception) -> ModelNotFound:
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    where = "is not a local folder and could not be fetched from the hub" + (" (HF_HUB_OFFLINE=1)" if offline else "")
    return ModelNotFound(
        f"Model '{model}' {where}: {(str(exc).splitlines() or [''])[0][:160]}",
        "Pass --model PATH to a diffusers folder (or set IMAGENT_MODEL); with network access, check the hub id.",
    )


def _require_hub(model: str) -> None:
    """Fail fast (instead of minutes of retries) when a hub id is neither cached nor reachable."""
    import socket
    from urllib.parse import urlparse

    try:
        from huggingface_hub import snapshot_download

        snapshot_download(model, local_files_only=True, allow_patterns=["model_index.json"])
        return  # cached: from_pretrained can load it offline
    except Exception:
        pass
    hint = ("Pass --model PATH to a local diffusers folder (or set IMAGENT_MODEL), "
            "or connect to the network to download it.")
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ModelNotFound(f"Model '{model}' is not a local folder and not in the Hugging Face cache "
                            "(HF_HUB_OFFLINE=1).", hint)
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=3).close()
    except OSError:
        raise ModelNotFound(f"Model '{model}' is not a local folder or cached, and {host} cannot be reached "
                            "(offline?).", hint) from None
