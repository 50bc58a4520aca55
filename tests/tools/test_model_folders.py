"""Broken local model folders name the broken file or subfolder (not "could not be fetched from the hub")."""
from __future__ import annotations

import json
import shutil

import pytest

from tools.diffusers_loading import load_pipeline
from tools.errors import ImagentError, InvalidInput, ModelNotFound


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _zero(path):
    path.write_bytes(b"")


def _garbage_header(path):
    data = path.read_bytes()
    path.write_bytes(b"\xff" * 8 + b"this is not json" + data[24:])


def _index_without_weights(folder):
    (folder / "model_index.json").write_text(json.dumps(
        {"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.30.0"}))


DAMAGES = {
    "truncated unet weights": (lambda f: _truncate(f / "unet" / "diffusion_pytorch_model.safetensors"),
                               "unet/diffusion_pytorch_model.safetensors", "truncated"),
    "zero-byte vae weights": (lambda f: _zero(f / "vae" / "diffusion_pytorch_model.safetensors"),
                              "vae/diffusion_pytorch_model.safetensors", "empty"),
    "corrupt model_index.json": (lambda f: (f / "model_index.json").write_text('{"_class_name": "StableDiff'),
                                 "model_index.json", "JSON"),
    "missing vae/": (lambda f: shutil.rmtree(f / "vae"), "vae/", "no 'vae/' subfolder"),
    "index lists no weights": (_index_without_weights, "model_index.json", "lists no components"),
    "garbage safetensors header": (lambda f: _garbage_header(f / "text_encoder" / "model.safetensors"),
                                   "text_encoder/model.safetensors", "header"),
    "weights file removed": (lambda f: (f / "unet" / "diffusion_pytorch_model.safetensors").unlink(),
                             "unet", "no weights"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_broken_local_folder_names_what_is_broken(tiny_sd_path, tmp_path, damage):
    import torch

    folder = tmp_path / "model"
    shutil.copytree(tiny_sd_path, folder)
    harm, where, fragment = DAMAGES[damage]
    harm(folder)
    with pytest.raises(ImagentError) as info:
        load_pipeline(str(folder), "cpu", torch.float32)
    err = info.value
    assert isinstance(err, (ModelNotFound, InvalidInput))
    assert "could not be fetched from the hub" not in err.message
    assert where.rstrip("/") in err.message.replace(str(folder) + "/", ""), err.message
    assert str(folder) in err.message
    assert fragment in err.message, err.message
    assert "re-save" in err.hint and "re-download" in err.hint


def test_the_intact_copy_still_loads(tiny_sd_path, tmp_path):
    import torch

    folder = tmp_path / "model"
    shutil.copytree(tiny_sd_path, folder)
    assert load_pipeline(str(folder), "cpu", torch.float32).unet is not None
