"""The chat controller without any UI: refining in words, defaults, the router, agent mode with a
scripted tool-calling model, persistence and resume."""
from __future__ import annotations

import pytest
from fakes import scripted
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import ToolMessage

from agent.chat import ChatController, refine_spec, rect_mask
from agent.errors import InvalidInput, LLMError

SPEC = {"subject": "a cat on a sofa", "style": "", "lighting": "soft natural light", "composition": "",
        "quality": ["sharp focus"], "negatives": ["blurry"], "extras": ["clutter on the floor"]}
FAST = ("/steps 1", "/rounds 1", "/candidates 1", "/seed 11")


def fast(controller: ChatController) -> ChatController:
    for command in FAST:
        controller.handle(command)
    return controller


def test_refine_in_words_edits_the_right_fields():
    spec, notes = refine_spec(SPEC, "warmer light, less clutter, close-up shot and watercolor style; a red hat")
    assert spec["lighting"] == "warmer light"
    assert "clutter" in spec["negatives"] and spec["extras"] == ["a red hat"]
    assert spec["composition"] == "close-up shot" and spec["style"] == "watercolor style"
    assert spec["subject"] == SPEC["subject"] and SPEC["extras"] == ["clutter on the floor"]  # input untouched
    assert notes == ["lighting: warmer light", "avoid: clutter", "composition: close-up shot",
                     "style: watercolor style", "add: a red hat"]
    with pytest.raises(InvalidInput):
        refine_spec(SPEC, "   ")


def test_rect_mask_in_pixels_and_fractions():
    m = rect_mask((32, 32), "0.25,0.25,0.5,0.5")
    assert m.getbbox() == (8, 8, 24, 24)
    assert rect_mask((32, 32), "0,0,8,4").getbbox() == (0, 0, 8, 4)
    with pytest.raises(InvalidInput, match="not inside"):
        rect_mask((32, 32), "30,30,8,8")


def test_defaults_are_checked_and_persisted(session):
    chat = ChatController(session)
    chat.handle("/size 48x64")
    chat.handle("/style watercolor")
    chat.handle("/raw on")
    with pytest.raises(InvalidInput, match="multiples of 8"):
        chat.handle("/size 33x33")
    with pytest.raises(InvalidInput) as err:
        chat.handle("/style watercolour")
    assert "Did you mean watercolor" in err.value.hint
    with pytest.raises(InvalidInput, match="Unknown command"):
        chat.handle("/frobnicate")
    d = ChatController(session, chat_id=chat.chat_id).state.defaults
    assert (d.width, d.height, d.style, d.raw) == (48, 64, "watercolor", True)
    roles = [m["role"] for m in chat.messages()]
    assert roles.count("error") == 3 and roles.count("user") == 6
    # the failed commands left nothing to undo: three undos take back the three changes
    for _ in range(3):
        assert chat.handle("/undo") == "Undid change defaults."
    assert chat.state.defaults == type(chat.state.defaults)() and chat.handle("/undo") == "Nothing to undo."


def test_modes_are_announced(session):
    assert ChatController(session).mode == "router"
    assert "offline mode" in ChatController(session).mode_line()
    no_tools = ChatController(session, chat_model=FakeListChatModel(responses=["hi"]))
    assert no_tools.mode == "router" and "cannot call tools" in no_tools.mode_line()
    assert ChatController(session, chat_model=scripted("ok")).mode == "agent"
    configured = ChatController(type(session)(session.settings.with_overrides(llm_model="some-model")))
    assert configured.mode == "agent" and "some-model" in configured.mode_line()


def test_router_idea_refine_undo_and_resume(session):
    events = []
    chat = fast(ChatController(session, listener=events.append))
    reply = chat.handle("two red circles")
    first = chat.state.image_id
    assert "Made image **#" in reply and first is not None
    assert chat.state.spec["subject"] == "two red circles" and len(chat.state.rounds) == 1
    from agent.events import ImageSaved, RoundFinished, RoundStarted, StateChanged, Step

    kinds = {type(e) for e in events}
    assert {Step, RoundStarted, RoundFinished, ImageSaved, StateChanged} <= kinds, kinds

    first_seed = chat.state.seed
    chat.handle("/refine warmer light, less clutter")
    assert chat.state.image_id != first
    assert chat.state.rounds[0]["seeds"][0] == first_seed, "a refine keeps the seed (as A1111 and Fooocus do)"
    assert chat.state.spec["lighting"] == "warmer light" and "clutter" in chat.state.spec["negatives"]
    assert chat.state.idea == "two red circles"
    assert "| round |" in chat.handle("/scores")

    assert "Undid refine" in chat.handle("/undo")
    assert chat.state.image_id == first and chat.state.spec["lighting"] != "warmer light"

    again = ChatController(session, chat_id=chat.chat_id)
    assert again.resumed and again.state.image_id == first and len(again.state.images) == 2
    assert [m["content"] for m in again.messages()][-2:] == ["/undo", chat.messages()[-1]["content"]]
    assert {r["id"] for r in session.gallery.chat_images(chat.chat_id)} == set(again.state.images)
    with pytest.raises(InvalidInput, match="No chat with id"):
        ChatController(session, chat_id="nope")


def test_agent_mode_calls_tools_and_reads_their_errors(session):
    model = scripted(
        ("tool", "set_defaults", {"steps": 1, "rounds": 1, "candidates": 1, "seed": 5}), "Defaults set.",
        ("tool", "create_image", {"idea": "two red circles"}), "Here are **two red circles**.",
        ("tool", "set_defaults", {"size": "33x33"}), "That size does not work; try 32x32.",
        ("tool", "refine_last", {"instruction": "warmer light", "lighting": "warm golden light"}), "Warmer now.",
    )
    chat = ChatController(session, chat_model=model)
    assert chat.handle("use 1 step, 1 round, 1 candidate, seed 5") == "Defaults set."
    assert chat.state.defaults.steps == 1
    assert chat.handle("draw two red circles") == "Here are **two red circles**."
    first = chat.state.image_id
    assert first is not None and chat.state.seed == 5
    assert chat.handle("make it 33 by 33") == "That size does not work; try 32x32."
    tool_answers = [m for m in model.seen[-1] if isinstance(m, ToolMessage)]
    assert tool_answers[-1].content.startswith("Error: Size 33x33")
    assert chat.handle("warmer please") == "Warmer now."
    assert chat.state.spec["lighting"] == "warm golden light" and chat.state.image_id != first
    # the conversation so far reaches the model on each turn
    humans = [m.content for m in model.seen[-1] if m.type == "human"]
    assert humans[:2] == ["use 1 step, 1 round, 1 candidate, seed 5", "draw two red circles"]
    tools = [m["content"] for m in chat.messages() if m["role"] == "tool"]
    assert any(t.startswith("create_image(idea='two red circles')") for t in tools)


def test_edit_inpaint_upscale_open_and_save(session, tmp_path):
    from PIL import Image

    from tools.images import load_image
    from tools.metadata import read_metadata

    chat = fast(ChatController(session))
    chat.handle("two red circles")
    first = chat.state.image_id
    chat.handle("/edit a blue square rect=0.25,0.25,0.5,0.5 strength=0.9")
    inpainted = read_metadata(chat.state.image_path)["record"]
    assert inpainted["params"]["mode"] == "inpaint" and inpainted["params"]["prompt"] == "a blue square"
    mask = load_image(inpainted["inputs"]["mask"]).convert("L")
    assert mask.getbbox() == (8, 8, 24, 24)
    mask_file = tmp_path / "mask.png"
    Image.new("L", (32, 32), 255).save(mask_file)
    chat.handle(f"/edit #{first} green mask={mask_file}")
    assert read_metadata(chat.state.image_path)["record"]["inputs"]["mask"] == str(mask_file.resolve())
    chat.handle(f"/edit #{first} at night")
    record = read_metadata(chat.state.image_path)["record"]
    assert record["params"]["mode"] == "img2img" and record["params"]["prompt"].endswith(", at night")
    assert "(64x64)" in chat.handle("/upscale x2 method=lanczos")
    assert load_image(chat.state.image_path).size == (64, 64)
    assert "#" + str(first) in chat.handle("/images")
    chat.handle(f"/open #{first}")
    assert chat.state.image_id == first
    reply = chat.handle(f"/save {tmp_path / 'out' / 'mine'}")
    saved = tmp_path / "out" / "mine.png"
    assert str(saved) in reply and read_metadata(saved)["record"]["seed"] == chat.state.seed
    with pytest.raises(InvalidInput, match="either mask"):
        chat.handle(f"/edit x mask={mask_file} rect=0,0,8,8")
    assert len(chat.state.images) == 5


def test_an_unreachable_chat_model_says_what_to_do(session):
    class Broken(type(scripted("x"))):
        def _generate(self, messages, stop=None, run_manager=None, **kwargs):
            raise ConnectionError("connection refused")

    chat = ChatController(session, chat_model=Broken(messages=iter([])))
    with pytest.raises(LLMError) as err:
        chat.handle("draw a cat")
    assert "ConnectionError" in err.value.message and "/mode offline" in err.value.hint
    assert chat.messages()[-1]["role"] == "error"
    assert "offline" in chat.handle("/mode offline") and chat.mode == "router"


def test_the_last_runs_requirements_show_with_pass_fail_marks(session):
    from agent.chat import checklist_markdown
    from tui.panel import params_text

    chat = ChatController(session)
    checks = [{"id": "o1", "text": "two red circles", "passed": True},
              {"id": "only", "text": "nothing else in the picture", "passed": False}]
    chat.state.checks = checks
    assert checklist_markdown(checks) == "- ✓ two red circles\n- ✗ nothing else in the picture"
    panel = params_text(chat)
    assert "requirements" in panel and "✗ nothing else in the picture" in panel


def test_upscale_has_one_default_for_chat_cli_and_mcp(session, monkeypatch):
    import inspect

    from agent.chat import ChatController
    from agent.cli import build_parser
    from agent.tool_schemas import UpscaleInput
    from tools.upscale import DEFAULT_METHOD, Upscaler

    seen = []
    monkeypatch.setattr(ChatController, "upscale", lambda self, **kw: seen.append(kw) or "ok")
    chat = ChatController(session)
    chat.slash.run("/upscale x2")
    assert seen == [{"image": None, "scale": 2, "method": DEFAULT_METHOD}]
    assert build_parser(["upscale", "a.png"]).parse_args(["upscale", "a.png"]).method == DEFAULT_METHOD
    assert UpscaleInput(image="a.png").method == DEFAULT_METHOD
    agent_tool = {t.name: t for t in chat.tool_agent.tools()}["upscale_image"]
    assert agent_tool.args_schema.model_fields["method"].default == DEFAULT_METHOD
    assert inspect.signature(Upscaler.upscale).parameters["method"].default == DEFAULT_METHOD


def test_lora_and_control_defaults_change_new_images_and_are_recorded(session, tmp_path):
    import numpy as np
    from diffusers import UNet2DConditionModel
    from PIL import Image
    from tiny_models import save_tiny_controlnet, save_tiny_lora

    from tools.images import load_image
    from tools.metadata import read_metadata

    unet = UNet2DConditionModel.from_pretrained(str(session.settings.model) + "/unet")
    lora = save_tiny_lora(unet, tmp_path / "style.safetensors")
    net = save_tiny_controlnet(unet, tmp_path / "cn")
    Image.new("RGB", (32, 32), (255, 255, 255)).save(tmp_path / "edges.png")
    chat = fast(ChatController(session))

    def image():
        chat.handle("two red circles")
        path = session.gallery.image(chat.state.image_id)["path"]
        return np.asarray(load_image(path)).astype(int), read_metadata(path)["record"]["params"]

    base, params = image()
    assert "loras" not in params and "controls" not in params
    assert "lora **" in chat.handle(f"/lora {lora}:1")
    styled, params = image()
    assert params["loras"] == [{"source": str(lora), "weight": 1.0}]
    assert np.abs(styled - base).mean() > 2.0, "the LoRA changed nothing"
    again = session.rerun(session.gallery.image(chat.state.image_id)["path"], out_dir=tmp_path).images[0]
    assert np.array_equal(np.asarray(load_image(again.path)).astype(int), styled), "a run's LoRA is replayed"
    chat.handle("/lora off")
    reply = chat.handle(f"/control canny:{tmp_path / 'edges.png'}:1 canny={net}")
    assert "control **canny:" in reply
    controlled, params = image()
    assert params["controls"][0]["kind"] == "canny" and params["controls"][0]["model"] == str(net)
    assert np.abs(controlled - base).mean() > 1.0, "the condition changed nothing"
    chat.handle("/control off")
    again, params = image()
    assert "controls" not in params and np.array_equal(again, base)
    with pytest.raises(InvalidInput, match="does not exist|not found|No such|cannot"):
        chat.handle(f"/control canny:{tmp_path / 'missing.png'}")
    with pytest.raises(InvalidInput, match="Unknown control kind"):
        chat.handle(f"/control sketchy:{tmp_path / 'edges.png'}")
