"""The foundation: generation through the diffusers backend, determinism, editing, schedulers."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tools.errors import InvalidInput
from tools.generate import GenerateRequest, check_request
from tools.schedulers import SCHEDULERS


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_same_seed_same_pixels_and_different_seed_differs(tiny_backend):
    a = tiny_backend.generate(GenerateRequest("two red circles", steps=2, seed=7))
    b = tiny_backend.generate(GenerateRequest("two red circles", steps=2, seed=7))
    c = tiny_backend.generate(GenerateRequest("two red circles", steps=2, seed=8))
    assert a.images[0].size == (32, 32)
    assert np.array_equal(pixels(a.images[0]), pixels(b.images[0]))
    assert not np.array_equal(pixels(a.images[0]), pixels(c.images[0]))


def test_count_uses_consecutive_seeds_each_reproducible_alone(tiny_backend):
    batch = tiny_backend.generate(GenerateRequest("a blue square", steps=2, seed=100, count=3))
    assert batch.seeds == [100, 101, 102]
    alone = tiny_backend.generate(GenerateRequest("a blue square", steps=2, seed=102))
    assert np.array_equal(pixels(batch.images[2]), pixels(alone.images[0]))


def test_missing_seed_is_drawn_and_reported(tiny_backend):
    result = tiny_backend.generate(GenerateRequest("a cat", steps=1))
    assert isinstance(result.seeds[0], int) and result.seeds[0] >= 0


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_scheduler_by_name(tiny_backend, name):
    steps = 2 if name != "heun" else 1
    result = tiny_backend.generate(GenerateRequest("a cat", steps=steps, seed=1, scheduler=name))
    assert result.scheduler == name
    # the pipeline's own scheduler is restored after the call
    assert type(tiny_backend.pipeline().scheduler).__name__ == "EulerDiscreteScheduler"


def test_img2img_changes_image_and_respects_strength(tiny_backend):
    init = Image.new("RGB", (32, 32), (200, 30, 30))
    low = tiny_backend.generate(GenerateRequest("a cat", steps=10, seed=3, init_image=init, strength=0.1))
    high = tiny_backend.generate(GenerateRequest("a cat", steps=10, seed=3, init_image=init, strength=0.9))
    assert low.images[0].size == (32, 32)
    d_low = np.abs(pixels(low.images[0]) - pixels(init)).mean()
    d_high = np.abs(pixels(high.images[0]) - pixels(init)).mean()
    assert d_low < d_high


def test_inpainting_keeps_unmasked_region_closer(tiny_backend):
    init = Image.new("RGB", (32, 32), (30, 30, 200))
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (0, 0, 16, 32))  # repaint the left half
    out = tiny_backend.generate(GenerateRequest("a cat", steps=4, seed=2, init_image=init, strength=1.0,
                                                mask=mask)).images[0]
    diff = np.abs(pixels(out) - pixels(init)).mean(axis=2)
    assert diff[:, 20:].mean() < diff[:, :12].mean()


def test_one_set_of_weights_serves_all_modes(tiny_backend):
    txt = tiny_backend.pipeline("txt2img")
    for mode in ("img2img", "inpaint"):
        derived = tiny_backend.pipeline(mode)
        assert derived.unet is txt.unet and derived.vae is txt.vae and derived.text_encoder is txt.text_encoder


def test_cancel_stops_generation(tiny_backend):
    import threading

    from tools.errors import Cancelled

    cancel = threading.Event()
    seen = []

    def progress(done, total):
        seen.append(done)
        cancel.set()

    with pytest.raises(Cancelled):
        tiny_backend.generate(GenerateRequest("a cat", steps=5, seed=1), progress=progress, cancel=cancel)
    assert seen and max(seen) < 5


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(prompt=""), "empty"),
    (dict(prompt="   "), "empty"),
    (dict(prompt="x" * 5000), "limit"),
    (dict(prompt="x", width=33, height=32), "multiple of 8"),
    (dict(prompt="x", width=8192, height=64), "out of range"),
    (dict(prompt="x", steps=0), "steps"),
    (dict(prompt="x", count=0), "count 0 is out of range"),
    (dict(prompt="x", cfg=-1), "cfg"),
    (dict(prompt="x", scheduler="nope"), "Unknown scheduler"),
    (dict(prompt="x", init_image=Image.new("RGB", (32, 32)), strength=1.5), "strength 1.5 is out of range"),
    (dict(prompt="x", init_image=Image.new("RGB", (32, 32)), strength=0.0), "Use above 0 to 1"),
    (dict(prompt="x", init_image=Image.new("RGB", (32, 32)), mask=Image.new("L", (16, 16))), "mask"),
    (dict(prompt="x", mask=Image.new("L", (16, 16))), "without an image"),
])
def test_bad_requests_are_rejected_with_a_hint(kwargs, fragment):
    with pytest.raises(InvalidInput) as info:
        check_request(GenerateRequest(**kwargs))
    assert fragment in str(info.value)


def test_validation_returns_a_new_request_and_never_changes_the_one_given():
    from tools.generate import check_request

    req = GenerateRequest("two red circles", scheduler="Euler A")
    checked = check_request(req)
    assert req.seed is None and req.steps is None and req.scheduler == "Euler A", "the input is untouched"
    assert checked.seed is not None and checked.steps and checked is not req
    assert check_request(checked).seed == checked.seed, "the seed is drawn once"


@pytest.mark.parametrize("field,value,expected", [
    ("cfg", "7", "a number"), ("seed", "1", "an integer"), ("steps", "20", "an integer"),
    ("steps", 20.0, "an integer"), ("width", "512", "an integer"), ("height", 512.0, "an integer"),
    ("count", "2", "an integer"), ("count", True, "an integer"), ("seed", True, "an integer"),
    ("steps", True, "an integer"), ("cfg", True, "a number"), ("strength", "0.5", "a number"),
    ("strength", None, "a number"), ("cfg", float("nan"), "NaN"),
])
def test_numeric_fields_of_the_python_api_are_type_checked(field, value, expected):
    """Through the Python API nothing parses the numbers: a string or bool must be InvalidInput
    naming the field and the expected type, not a raw TypeError from a comparison."""
    with pytest.raises(InvalidInput) as info:
        check_request(GenerateRequest("two red circles", **{field: value}))
    assert field in info.value.message and expected in info.value.message
    assert info.value.hint


def test_ints_for_float_fields_and_numpy_ints_are_accepted():
    import numpy as np

    checked = check_request(GenerateRequest("x", cfg=7, seed=np.int64(3), width=np.int32(64), height=64))
    assert checked.cfg == 7 and checked.seed == 3
