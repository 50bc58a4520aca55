"""LoRA adapters and ControlNet conditions: parsing, their effect on the image, errors, records."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tools.adapters import (Control, Lora, controls_from_specs, parse_control, parse_lora,
                            split_prompt_loras)
from tools.errors import InvalidInput, ModelNotFound
from tools.generate import GenerateRequest, check_request


def px(image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32)


@pytest.fixture(scope="module")
def adapter_backend(tiny_sd_path):
    """A backend of its own (adapters stay loaded in a backend), over the tiny pipeline."""
    import torch

    from tools.diffusers_backend import DiffusersBackend

    return DiffusersBackend(str(tiny_sd_path), "cpu", torch.float32)


@pytest.fixture(scope="module")
def pristine_unet(tiny_sd_path):
    """The tiny model's UNet as saved (a loaded backend's UNet carries the adapters it has used)."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_pretrained(str(tiny_sd_path / "unet"))


@pytest.fixture(scope="module")
def tiny_lora(pristine_unet, tmp_path_factory):
    from tiny_models import save_tiny_lora

    return save_tiny_lora(pristine_unet, tmp_path_factory.mktemp("lora") / "tiny.safetensors")


@pytest.fixture(scope="module")
def tiny_controlnet(pristine_unet, tmp_path_factory):
    from tiny_models import save_tiny_controlnet

    return save_tiny_controlnet(pristine_unet, tmp_path_factory.mktemp("cn") / "tiny-cn")


def gen(backend, prompt="two red circles", **kw):
    return px(backend.generate(GenerateRequest(prompt, steps=3, seed=5, **kw)).images[0])


# -- parsing ---------------------------------------------------------------------------------------

def test_lora_spec_parsing_keeps_paths_and_ids_whole():
    assert parse_lora("style.safetensors:0.8") == Lora("style.safetensors", 0.8)
    assert parse_lora("style.safetensors") == Lora("style.safetensors", 1.0)
    assert parse_lora(r"C:\loras\x.safetensors") == Lora(r"C:\loras\x.safetensors", 1.0)
    assert parse_lora(r"C:\loras\x.safetensors:-0.5") == Lora(r"C:\loras\x.safetensors", -0.5)
    assert parse_lora("org/some-lora:1.2") == Lora("org/some-lora", 1.2)
    assert parse_lora("/x/y/tall.safetensors:0.5").tag() == "<lora:tall:0.5>"
    with pytest.raises(InvalidInput, match="out of range"):
        parse_lora("x.safetensors:9")
    with pytest.raises(InvalidInput, match="empty"):
        parse_lora("  ")


def test_prompt_tags_become_loras_and_leave_the_prompt():
    text, loras = split_prompt_loras("two red circles, <lora:tall:0.6> <lora:ink>")
    assert text == "two red circles"
    assert loras == [Lora("tall", 0.6), Lora("ink", 1.0)]
    req = check_request(GenerateRequest("a cat <lora:tall:0.5>", loras=("tall:0.9", Lora("ink", 0.3))))
    assert req.prompt == "a cat"
    assert req.loras == (Lora("tall", 0.5), Lora("ink", 0.3))  # the tag, last, wins for the same name
    assert req.params()["loras"] == [{"source": "tall", "weight": 0.5}, {"source": "ink", "weight": 0.3}]
    with pytest.raises(InvalidInput, match="only LoRA tags"):
        check_request(GenerateRequest("<lora:tall:1>"))
    with pytest.raises(InvalidInput, match="not a number"):
        check_request(GenerateRequest("a cat <lora:tall:lots>"))


def test_control_spec_parsing_and_checks(tmp_path):
    Image.new("RGB", (64, 48), "white").save(tmp_path / "c.png")
    assert parse_control(f"canny:{tmp_path}/c.png:0.7") == ("canny", f"{tmp_path}/c.png", 0.7)
    with pytest.raises(InvalidInput, match="KIND:IMAGE"):
        parse_control("canny")
    with pytest.raises(InvalidInput, match="Unknown control kind"):
        parse_control("xray:c.png")
    (c,) = controls_from_specs([f"canny:{tmp_path}/c.png"], ["canny=some/net"], 0.1, 0.9)
    assert (c.kind, c.scale, c.start, c.end, c.model) == ("canny", 1.0, 0.1, 0.9, "some/net")
    assert c.to_json()["image"] == str((tmp_path / "c.png").resolve())
    with pytest.raises(InvalidInput, match="no control condition of that kind"):
        controls_from_specs([f"canny:{tmp_path}/c.png"], ["depth=x"])
    with pytest.raises(InvalidInput, match="shapes differ"):
        check_request(GenerateRequest("a cat", width=64, height=64, controls=(c,)))
    with pytest.raises(InvalidInput, match="range within 0..1"):
        check_request(GenerateRequest("a cat", controls=(Control("canny", c.image, 1.0, 0.8, 0.2),)))
    with pytest.raises(InvalidInput, match="scale"):
        check_request(GenerateRequest("a cat", controls=(Control("canny", c.image, 9.0),)))
    with pytest.raises(InvalidInput, match="inpainting"):
        img = Image.new("RGB", (64, 48))
        check_request(GenerateRequest("a cat", init_image=img, mask=Image.new("L", (64, 48)), controls=(c,)))


# -- LoRA on the image -----------------------------------------------------------------------------

def test_lora_changes_the_image_weight_zero_and_unloaded_do_not(adapter_backend, tiny_lora):
    base = gen(adapter_backend)
    full = gen(adapter_backend, loras=(Lora(str(tiny_lora), 1.0),))
    half = gen(adapter_backend, loras=(Lora(str(tiny_lora), 0.5),))
    off = gen(adapter_backend, loras=(Lora(str(tiny_lora), 0.0),))
    assert np.abs(full - base).mean() > 2.0
    assert 0 < np.abs(half - base).mean() < np.abs(full - base).mean()
    assert np.array_equal(off, base)
    assert np.array_equal(gen(adapter_backend), base)  # a later call without it is the base model again
    tagged = gen(adapter_backend, prompt=f"two red circles <lora:{tiny_lora}:1>")
    assert np.array_equal(tagged, full)


def test_a_kohya_a1111_lora_file_draws_what_the_same_weights_in_diffusers_format_draw(adapter_backend, tiny_lora,
                                                                                        tmp_path):
    from tiny_models import save_kohya_lora

    kohya = save_kohya_lora(tiny_lora, tmp_path / "civitai-style.safetensors")
    base = gen(adapter_backend)
    full = gen(adapter_backend, loras=(Lora(str(tiny_lora), 1.0),))
    converted = gen(adapter_backend, loras=(Lora(str(kohya), 1.0),))
    assert np.abs(converted - base).mean() > 2.0, "the kohya file changed nothing"
    assert np.abs(converted - full).max() <= 2, "the kohya file is read as other weights"
    assert np.array_equal(gen(adapter_backend), base)


def _peft_warnings(caught) -> list[str]:
    return [str(w.message)[:200] for w in caught if "inconsistency was discovered" in str(w.message)]


def test_a_lora_file_of_mixed_key_layouts_loads_every_layer_without_a_peft_warning(adapter_backend, pristine_unet,
                                                                                    tmp_path):
    """convert_state_dict_to_diffusers renames attention keys only (`to_q.lora.down`), so a peft LoRA
    on attention and other layers (`proj_in.lora_A`) is saved in two layouts, as the shipped demo
    LoRAs are. diffusers takes the first key's layout for all: the attention half stayed at zero and
    peft warned, naming each module. Read with every key in peft's layout, it draws what the same
    weights saved in one layout draw."""
    import warnings

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from tiny_models import save_tiny_lora

    mixed = save_tiny_lora(pristine_unet, tmp_path / "mixed.safetensors", seed=3,
                           targets=("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out"))
    with safe_open(str(mixed), "pt") as f:
        keys = list(f.keys())
    assert any(".lora.down." in k for k in keys) and any(".lora_A." in k for k in keys), "not a mixed file"
    one_layout = tmp_path / "one-layout.safetensors"
    save_file({k.replace(".lora.down.", ".lora_A.").replace(".lora.up.", ".lora_B."): v
               for k, v in load_file(str(mixed)).items()}, str(one_layout))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from_mixed = gen(adapter_backend, loras=(Lora(str(mixed), 1.0),))
    assert _peft_warnings(caught) == []
    assert np.abs(from_mixed - gen(adapter_backend, loras=(Lora(str(one_layout), 1.0),))).max() <= 2


@pytest.mark.parametrize("name", ["demo-tall", "demo-lcm"])
def test_shipped_loras_load_without_a_peft_warning(name):
    """The shipped LoRAs are such mixed files (56 attention modules in the older layout, 44 others
    in peft's). They load as their model card measures them (as pipe.load_lora_weights(folder)
    does: the 44), and peft's warning naming the 56 others is not printed."""
    import warnings

    import torch

    from tools.diffusers_backend import DiffusersBackend

    backend = DiffusersBackend("demo", "cpu", torch.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        backend.generate(GenerateRequest("two red circles", steps=1, seed=0, loras=(Lora(name),)))
    assert _peft_warnings(caught) == []
    (adapter,) = backend.loras.loaded.values()
    ups = [p for n, p in backend.pipeline().unet.named_parameters() if f"lora_B.{adapter}." in n]
    assert len(ups) == 44 and all(p.abs().max() > 0 for p in ups), "not loaded as measured"


def test_lora_that_matches_no_layer_is_refused_not_silently_ignored(adapter_backend, tmp_path):
    import torch
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"unet.no_such_block.attn.to_q.lora.down.weight": torch.ones(4, 32),
               "unet.no_such_block.attn.to_q.lora.up.weight": torch.ones(32, 4)}, str(foreign))
    base = gen(adapter_backend)
    with pytest.raises(InvalidInput):
        gen(adapter_backend, loras=(Lora(str(foreign)),))
    assert np.array_equal(gen(adapter_backend), base)


def test_lora_found_by_name_in_the_lora_folder(tiny_sd_path, tiny_lora, tmp_path):
    import shutil

    import torch

    from tools.diffusers_backend import DiffusersBackend

    folder = tmp_path / "loras"
    folder.mkdir()
    shutil.copy(tiny_lora, folder / "mystyle.safetensors")
    backend = DiffusersBackend(str(tiny_sd_path), "cpu", torch.float32, lora_dirs=[folder])
    assert not np.array_equal(gen(backend, loras=(Lora("mystyle"),)), gen(backend))
    with pytest.raises(ModelNotFound, match="No LoRA 'nosuch'"):
        gen(backend, loras=(Lora("nosuch"),))


def test_bad_loras_give_clear_errors(adapter_backend, tmp_path):
    import torch

    from tiny_models import save_tiny_lora
    from tools.demo import load_pipeline

    with pytest.raises(ModelNotFound, match="No LoRA"):
        gen(adapter_backend, loras=(Lora(str(tmp_path / "missing.safetensors")),))
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(InvalidInput, match="could not be loaded"):
        gen(adapter_backend, loras=(Lora(str(garbage)),))
    torch.manual_seed(0)
    other = save_tiny_lora(load_pipeline().unet, tmp_path / "other-base.safetensors")  # for the demo model
    with pytest.raises(InvalidInput, match="does not fit"):
        gen(adapter_backend, loras=(Lora(str(other)),))
    base = gen(adapter_backend)  # nothing half-loaded stays behind
    assert np.array_equal(base, gen(adapter_backend))


# -- ControlNet on the image -----------------------------------------------------------------------

def test_control_changes_the_image_and_scale_zero_does_not(tiny_sd_path, tiny_controlnet):
    import torch

    from tools.diffusers_backend import DiffusersBackend

    backend = DiffusersBackend(str(tiny_sd_path), "cpu", torch.float32, control_models={"canny": str(tiny_controlnet)})
    rng = np.random.default_rng(0)
    picture = Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    base = gen(backend)
    on = gen(backend, controls=(Control("canny", picture, 1.0),))
    off = gen(backend, controls=(Control("canny", picture, 0.0),))
    assert np.abs(on - base).mean() > 2.0
    assert np.array_equal(off, base)
    two = gen(backend, controls=(Control("canny", picture, 1.0),
                                 Control("scribble", picture, 1.0, model=str(tiny_controlnet))))
    assert np.abs(two - on).mean() > 1.0
    late = gen(backend, controls=(Control("canny", picture, 1.0, start=0.5, end=1.0),))
    assert not np.array_equal(late, on)
    edited = backend.generate(GenerateRequest("a cat", steps=3, seed=5, init_image=picture, strength=0.8,
                                              controls=(Control("canny", picture, 1.0),)))
    assert edited.images[0].size == (32, 32)
    with pytest.raises(InvalidInput, match="No ControlNet is set"):
        gen(backend, controls=(Control("depth", picture, 1.0),))


class _NoModels:
    """A DiffusersBackend that must not load a model: what a request gets wrong is told first."""

    def __init__(self, model):
        import torch

        from tools.diffusers_backend import DiffusersBackend

        self.backend = DiffusersBackend(model, "cpu", torch.float32)

        def refuse(*args, **kwargs):
            raise AssertionError("a model was loaded before the request was checked")

        self.backend.pipeline = refuse
        self.backend.native_size = refuse
        self.backend.controlnets.load = refuse


def test_a_condition_without_a_controlnet_is_refused_before_any_model_loads_naming_the_shipped_kinds(tiny_sd_path):
    picture = Image.new("RGB", (32, 32), "white")
    demo = _NoModels("demo").backend
    with pytest.raises(InvalidInput, match="No ControlNet is set for the control kind 'canny'") as info:
        demo.generate(GenerateRequest("two red circles", controls=(Control("canny", picture),)))
    assert "ships a ControlNet for layout" in info.value.hint and info.value.param == "control_model"
    other = _NoModels(str(tiny_sd_path)).backend
    with pytest.raises(InvalidInput, match="No ControlNet is set") as info:
        other.generate(GenerateRequest("two red circles", controls=(Control("depth", picture),)))
    assert "depth=PATH_OR_ID" in info.value.hint and "demo model (layout)" in info.value.hint


def test_a_missing_lora_is_refused_before_any_model_loads_naming_every_shipped_lora(tiny_sd_path, capsys):
    from agent.cli import main
    from tools.adapters import DEMO_LORAS

    backend = _NoModels(str(tiny_sd_path)).backend
    with pytest.raises(ModelNotFound, match="No LoRA 'nonexist'") as info:
        backend.generate(GenerateRequest("two red circles", loras=(Lora("nonexist"),)))
    assert DEMO_LORAS and all(name in info.value.hint for name in DEMO_LORAS), info.value.hint
    assert main(["generate", "a cat", "--model", str(tiny_sd_path), "--safety", "off", "--lora", "nonexist"]) == 3
    err = capsys.readouterr().err
    assert "demo-tall" in err and "demo-lcm" in err


def test_canny_condition_is_an_edge_map():
    from tools.adapters import condition_image

    img = Image.new("RGB", (64, 64), "white")
    img.paste((200, 0, 0), (16, 16, 48, 48))
    edges = np.asarray(condition_image(Control("canny", img), (64, 64)))
    assert set(np.unique(edges)) <= {0, 255}
    assert edges[32, 32].max() == 0 and edges[2, 2].max() == 0    # flat areas: no edge
    assert edges[16, 20:44].max() == 255 or edges[15, 20:44].max() == 255  # the square's border


def test_controlnet_for_another_base_is_refused(tiny_sd_path, tmp_path):
    import torch

    from tiny_models import save_tiny_controlnet
    from tools.demo import load_pipeline
    from tools.diffusers_backend import DiffusersBackend

    other = save_tiny_controlnet(load_pipeline().unet, tmp_path / "demo-cn", embed=(16, 32, 64))
    backend = DiffusersBackend(str(tiny_sd_path), "cpu", torch.float32)
    picture = Image.new("RGB", (32, 32))
    with pytest.raises(InvalidInput, match="another base model"):
        gen(backend, controls=(Control("canny", picture, 1.0, model=str(other)),))
    with pytest.raises(ModelNotFound, match="no config.json"):
        gen(backend, controls=(Control("canny", picture, 1.0, model=str(tmp_path)),))


# -- every path: CLI, record, rerun ----------------------------------------------------------------

def test_cli_lora_and_control_round_trip_through_the_png_and_rerun(tiny_sd_path, tiny_lora, tiny_controlnet,
                                                                   tmp_path, capsys):
    from agent.cli import main
    from tools.metadata import read_metadata

    cond = tmp_path / "cond.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(cond)
    out = tmp_path / "out"
    code = main(["generate", "two red circles", "--model", str(tiny_sd_path), "--safety", "off", "--steps", "3",
                 "--seed", "4", "--lora", f"{tiny_lora}:0.7", "--control", f"canny:{cond}:0.9",
                 "--control-model", f"canny={tiny_controlnet}", "--out", str(out), "--json"])
    assert code == 0
    first = json.loads(capsys.readouterr().out)["images"][0]["path"]
    meta = read_metadata(first)
    params = meta["record"]["params"]
    assert params["loras"] == [{"source": str(tiny_lora), "weight": 0.7}]
    assert params["controls"][0]["kind"] == "canny" and params["controls"][0]["scale"] == 0.9
    assert "<lora:tiny:0.7>" in meta["parameters"] and "ControlNet 0:" in meta["parameters"]
    assert main(["rerun", first, "--out", str(out), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)["images"][0]["path"]
    assert np.array_equal(px(Image.open(first)), px(Image.open(again)))
    # without the adapter and the condition the same seed gives another image
    assert main(["generate", "two red circles", "--model", str(tiny_sd_path), "--safety", "off", "--steps", "3",
                 "--seed", "4", "--out", str(out), "--json"]) == 0
    plain = json.loads(capsys.readouterr().out)["images"][0]["path"]
    assert not np.array_equal(px(Image.open(first)), px(Image.open(plain)))


def test_cli_bad_lora_exits_with_a_clear_error_and_writes_nothing(tiny_sd_path, tmp_path, capsys):
    from agent.cli import main

    out = tmp_path / "out"
    code = main(["generate", "a cat", "--model", str(tiny_sd_path), "--safety", "off", "--steps", "2",
                 "--lora", str(tmp_path / "nope.safetensors"), "--out", str(out)])
    assert code == 3
    assert "No LoRA" in capsys.readouterr().err
    assert not list(out.glob("*.png")) if out.exists() else True
    code = main(["generate", "a cat", "--model", str(tiny_sd_path), "--safety", "off", "--steps", "2",
                 "--control", f"canny:{tmp_path / 'missing.png'}", "--out", str(out)])
    assert code == 2


def test_tool_call_with_loras_and_options_is_recorded(settings, adapter_backend, tiny_scorer, tiny_lora, tmp_path):
    from agent.capabilities import Capabilities, PathPolicy
    from agent.session import Session
    from tools.metadata import read_metadata

    session = Session(settings, backend=adapter_backend, scorer=tiny_scorer)
    caps = Capabilities(session, PathPolicy.open())
    out = caps.call("generate", {"prompt": "two red circles", "steps": 2, "seed": 3, "loras": [f"{tiny_lora}:0.5"],
                                 "vae_slicing": True})
    params = read_metadata(out["images"][0]["path"])["record"]["params"]
    assert params["loras"] == [{"source": str(tiny_lora), "weight": 0.5}] and params["vae_slicing"] is True
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        caps.call("generate", {"prompt": "a cat", "loras": ["x"] * 9})


def test_shipped_demo_lora_draws_the_tall_style_and_weight_zero_is_the_base_model():
    import random

    import torch

    from tools.demo import oracle, world
    from tools.diffusers_backend import DiffusersBackend

    backend = DiffusersBackend("demo", "cpu", torch.float32)
    prompts = [world.sample_scene(random.Random(f"lora-test-{i}")).caption() for i in range(8)]

    def share(loras):
        tall = total = 0
        images = []
        for i, p in enumerate(prompts):
            img = backend.generate(GenerateRequest(p, seed=i, loras=loras)).images[0]
            objects = oracle.read(img).objects
            tall += sum(o.style == "tall" for o in objects)
            total += len(objects)
            images.append(px(img))
        return tall / max(total, 1), images

    base_share, base_images = share(())
    tall_share, _ = share((Lora("demo-tall", 1.0),))
    _, zero_images = share((Lora("demo-tall", 0.0),))
    assert base_share <= 0.2 and tall_share >= 0.7, (base_share, tall_share)
    assert all(np.array_equal(a, b) for a, b in zip(base_images, zero_images))


def test_shipped_demo_controlnet_puts_objects_where_the_layout_says():
    import random

    import torch

    from tools.demo import oracle, world
    from tools.diffusers_backend import DiffusersBackend

    backend = DiffusersBackend("demo", "cpu", torch.float32)
    prompts = world.prompt_set("position", 8)
    rng = random.Random("controlnet-test")
    with_layout = without = 0
    for i, p in enumerate(prompts):
        layout = world.layout_image(world.layout(world.parse(p), rng))
        free = backend.generate(GenerateRequest(p, seed=i)).images[0]
        guided = backend.generate(GenerateRequest(p, seed=i, controls=(Control("layout", layout),))).images[0]
        without += oracle.check(free, p).correct
        with_layout += oracle.check(guided, p).correct
    assert with_layout >= 6 and with_layout > without, (with_layout, without)


def test_a_fused_lora_draws_the_unfused_image_and_is_undone_for_other_calls(adapter_backend, tiny_lora):
    base = gen(adapter_backend)
    unfused = gen(adapter_backend, loras=(Lora(str(tiny_lora), 0.8),))
    fused = gen(adapter_backend, loras=(Lora(str(tiny_lora), 0.8),), lora_fuse=True)
    assert adapter_backend.loras.fused is not None
    assert np.abs(fused - unfused).max() <= 2 and np.abs(fused - base).mean() > 1.0
    assert np.array_equal(gen(adapter_backend, loras=(Lora(str(tiny_lora), 0.8),), lora_fuse=True), fused), \
        "kept fused for the same LoRA"
    other = gen(adapter_backend, loras=(Lora(str(tiny_lora), 0.4),), lora_fuse=True)
    assert np.abs(other - fused).mean() > 0.5, "another weight is merged afresh"
    after = gen(adapter_backend)
    assert adapter_backend.loras.fused is None and np.abs(after - base).max() <= 2, "unfused for a call without it"
    assert check_request(GenerateRequest("x", lora_fuse=True)).params()["lora_fuse"] is True
    assert "lora_fuse" not in check_request(GenerateRequest("x")).params()


def test_shipped_demo_lcm_lora_draws_in_few_steps_what_the_base_model_draws_in_20():
    import dataclasses
    import random

    import torch

    from tools.demo import oracle, world
    from tools.diffusers_backend import DiffusersBackend
    from tools.generate import fast_defaults

    backend = DiffusersBackend("demo", "cpu", torch.float32)
    lcm = (Lora("demo-lcm"),)
    prompts = [world.sample_scene(random.Random(f"lcm-test-{i}")).caption() for i in range(24)]

    def correct(p, req):
        return oracle.check(backend.generate(req).images[0], p).correct

    base = four = two = two_without = 0
    for i, p in enumerate(prompts):
        base += correct(p, GenerateRequest(p, seed=i, steps=20, cfg=5.0))
        req = GenerateRequest(p, seed=i, loras=lcm)
        fast = fast_defaults("demo", req)
        assert fast == {"steps": 4, "cfg": 1.0, "scheduler": "lcm"}, "an LCM-LoRA gets LCM's sampling defaults"
        four += correct(p, dataclasses.replace(req, **fast))
        two += correct(p, GenerateRequest(p, seed=i, steps=2, cfg=1.0, scheduler="lcm", loras=lcm))
        two_without += correct(p, GenerateRequest(p, seed=i, steps=2, cfg=1.0, scheduler="lcm"))
    assert four >= base - 4, ("4 LCM steps fall far behind 20 steps", four, base)
    assert two >= two_without + 6, ("the LoRA adds little over the LCM scheduler alone", two, two_without)
