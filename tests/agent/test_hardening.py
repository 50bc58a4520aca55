"""Hardening: hostile or damaged input gives a clear InvalidInput/ConfigError (never an internal
error), and what imagent writes and prints is safe."""
from __future__ import annotations

import json
import os
import stat
import struct
import time
import warnings
import zlib

import pytest
from PIL import Image, PngImagePlugin

from agent.cli import main
from agent.errors import InvalidInput
from tools.generate import GenerateRequest, check_request
import tools.images as images
from tools.metadata import parse_a1111, read_metadata
from tools.images import atomic_save_png, load_image, load_image_raw, load_mask


def cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def claimed_png(path, width: int, height: int):
    """A tiny PNG (well under a kilobyte) whose header claims width x height RGB pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + _chunk(b"IEND", b""))
    path.write_bytes(data)
    return path


# -- 1. decompression bombs and init image sizes ---------------------------------------------------
@pytest.mark.parametrize("side", [30000, 10000])  # PIL refuses 30000^2 and only warns for 10000^2
def test_image_claiming_a_huge_size_is_invalid_input(tmp_path, side):
    bomb = claimed_png(tmp_path / "bomb.png", side, side)
    assert bomb.stat().st_size < 500
    for load in (load_image, load_image_raw, lambda p: load_mask(p, (32, 32)), lambda p: images.open_image(p.read_bytes())):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(InvalidInput) as info:
                load(bomb)
        assert f"{side}x{side}" in info.value.message and info.value.hint
    with pytest.raises(InvalidInput, match="bomb.png"):
        load_image(bomb)


@pytest.mark.parametrize("command", ["generate", "show", "rerun"])
def test_cli_with_a_bomb_image_exits_2(capsys, tmp_path, command):
    bomb = str(claimed_png(tmp_path / "bomb.png", 30000, 30000))
    argv = ["generate", "a cat", "--init-image", bomb] if command == "generate" else [command, bomb]
    code, out, err = cli(capsys, *argv)
    assert code == 2, err
    assert err.startswith("imagent: error: ") and "30000x30000" in err and "internal error" not in err


@pytest.mark.parametrize("size, fragment", [
    ((4160, 16), "16 to 4096"),
    ((65, 67), "multiples of 8"),
    ((8, 32), "16 to 4096"),
])
def test_init_image_of_a_size_no_model_makes_is_rejected(size, fragment):
    req = GenerateRequest("a cat", init_image=Image.new("RGB", size))
    with pytest.raises(InvalidInput, match=fragment):
        check_request(req)


def test_init_image_not_a_multiple_of_8_names_the_nearest_valid_size(capsys, tiny_sd_path, tmp_path):
    Image.new("RGB", (65, 67), (200, 10, 10)).save(tmp_path / "odd.png")
    code, out, err = cli(capsys, "generate", "a cat", "--init-image", str(tmp_path / "odd.png"), "--model",
                         str(tiny_sd_path), "--steps", "1", "--safety", "off", "--out", str(tmp_path / "out"))
    assert code == 2 and "65x67" in err and "64x64" in err and out == ""
    assert not (tmp_path / "out").exists()


# -- 6. output file mode and partial files ------------------------------------------------------------
@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_saved_png_is_readable_by_others_per_umask(tmp_path, umask_022):
    path = atomic_save_png(Image.new("RGB", (16, 16)), tmp_path / "a.png", {"k": "v"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    os.umask(0o077)
    path = atomic_save_png(Image.new("RGB", (16, 16)), tmp_path / "b.png")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_partial_png_has_a_name_users_can_spot(tmp_path, monkeypatch):
    seen = []
    real_save = Image.Image.save

    def spy(self, fp, *a, **k):
        seen.extend(p.name for p in tmp_path.iterdir())
        return real_save(self, fp, *a, **k)

    monkeypatch.setattr(Image.Image, "save", spy)
    atomic_save_png(Image.new("RGB", (16, 16)), tmp_path / "cat-1.png")
    assert len(seen) == 1 and seen[0].startswith("cat-1.png.") and seen[0].endswith(".imagent-partial")
    assert [p.name for p in tmp_path.iterdir()] == ["cat-1.png"]


def test_stale_partial_files_are_removed_at_the_next_save(tmp_path):
    stale = [tmp_path / "cat-1.png.0a1b2c3d.imagent-partial", tmp_path / ".tmp-k2j4_x9q.png"]
    fresh = tmp_path / "cat-2.png.ffffffff.imagent-partial"
    mine = tmp_path / ".tmp-notmine-at-all.png"  # not a name imagent ever wrote
    for p in (*stale, fresh, mine):
        p.write_bytes(b"\x89PNG partial")
    old = time.time() - 120
    for p in (*stale, mine):
        os.utime(p, (old, old))
    atomic_save_png(Image.new("RGB", (16, 16)), tmp_path / "dog.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([fresh.name, mine.name, "dog.png"])


# -- 2. settings: config.json and the environment --------------------------------------------------------
@pytest.mark.parametrize("content, fragments", [
    (b'["model", "demo"]', ["config.json", "list", "object"]),
    (b'"demo"', ["config.json", "string", "object"]),
    (b'{"model": "caf\xe9"}', ["config.json", "UTF-8"]),
    (b'{"steps": "abc"}', ["config.json", "'steps'", "whole number", '"abc"']),
    (b'{"llm_timeout": "soon"}', ["config.json", "'llm_timeout'", "a number", '"soon"']),
    (b'{"steps": 2.5}', ["config.json", "'steps'", "whole number"]),
    (b'{"model": 5}', ["config.json", "'model'", "a string"]),
    (b'{"safety": null}', ["config.json", "'safety'", "a string"]),
    (b'{"cfg": true}', ["config.json", "'cfg'", "a number"]),
    (b'{"home": "/elsewhere"}', ["config.json", "Unknown setting", "home"]),
])
def test_bad_config_file_is_a_config_error_naming_file_key_and_type(imagent_home, content, fragments):
    from agent.config import load_settings
    from agent.errors import ConfigError

    imagent_home.mkdir(parents=True, exist_ok=True)
    (imagent_home / "config.json").write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_settings()
    for fragment in fragments:
        assert fragment in info.value.message
    assert info.value.hint


@pytest.mark.parametrize("var, value, key, expected", [
    ("IMAGENT_LLM_TIMEOUT", "abc", "llm_timeout", "a number"),
    ("IMAGENT_LLM_TIMEOUT", "nan", "llm_timeout", "a number"),
    ("IMAGENT_LLM_MAX_RETRIES", "1.5", "llm_max_retries", "a whole number"),
])
def test_bad_environment_value_is_a_config_error_naming_the_variable(monkeypatch, var, value, key, expected):
    from agent.config import load_settings
    from agent.errors import ConfigError

    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert var in info.value.message and f"'{key}'" in info.value.message and expected in info.value.message
    assert var in info.value.hint


@pytest.mark.parametrize("content, fragments", [
    ('{"steps": 0}', ["'steps'", "from 1 to 500", "not 0"]),
    ('{"steps": 501}', ["'steps'", "from 1 to 500", "not 501"]),
    ('{"cfg": -1}', ["'cfg'", "from 0 to 50", "not -1"]),
    ('{"llm_timeout": 0}', ["'llm_timeout'", "more than 0", "not 0"]),
    ('{"llm_timeout": -5}', ["'llm_timeout'", "more than 0"]),
    ('{"llm_max_retries": -1}', ["'llm_max_retries'", "from 0 to 10", "not -1"]),
    ('{"openai_timeout": 0}', ["'openai_timeout'", "more than 0"]),
])
def test_out_of_range_config_value_is_a_config_error_naming_file_key_and_range(imagent_home, content, fragments):
    from agent.config import load_settings
    from agent.errors import ConfigError

    imagent_home.mkdir(parents=True, exist_ok=True)
    (imagent_home / "config.json").write_text(content)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "config.json" in info.value.message and "config.json" in info.value.hint
    for fragment in fragments:
        assert fragment in info.value.message


@pytest.mark.parametrize("var, value, key, allowed", [
    ("IMAGENT_LLM_TIMEOUT", "0", "llm_timeout", "more than 0"),
    ("IMAGENT_LLM_TIMEOUT", "-1.5", "llm_timeout", "more than 0"),
    ("IMAGENT_LLM_MAX_RETRIES", "-1", "llm_max_retries", "from 0 to 10"),
    ("IMAGENT_LLM_MAX_RETRIES", "1000", "llm_max_retries", "from 0 to 10"),
])
def test_out_of_range_environment_value_is_a_config_error_naming_the_variable(monkeypatch, var, value, key, allowed):
    from agent.config import load_settings
    from agent.errors import ConfigError

    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert var in info.value.message and f"'{key}'" in info.value.message and allowed in info.value.message
    assert var in info.value.hint


def test_settings_at_the_ends_of_their_ranges_are_accepted(imagent_home, monkeypatch):
    from agent.config import load_settings

    imagent_home.mkdir(parents=True, exist_ok=True)
    (imagent_home / "config.json").write_text('{"steps": 500, "cfg": 0, "llm_max_retries": 10}')
    monkeypatch.setenv("IMAGENT_LLM_TIMEOUT", "0.5")
    monkeypatch.setenv("IMAGENT_LLM_MAX_RETRIES", "0")
    s = load_settings()
    assert (s.steps, s.cfg, s.llm_timeout, s.llm_max_retries) == (500, 0.0, 0.5, 0)


def test_config_values_are_parsed_through_one_typed_table(imagent_home, monkeypatch):
    from agent.config import load_settings

    imagent_home.mkdir(parents=True, exist_ok=True)
    (imagent_home / "config.json").write_text('{"steps": "12", "cfg": 6, "llm_timeout": 5, "style": null}')
    monkeypatch.setenv("IMAGENT_LLM_MAX_RETRIES", " 4 ")
    s = load_settings()
    assert (s.steps, s.cfg, s.llm_timeout, s.style, s.llm_max_retries) == (12, 6.0, 5.0, None, 4)
    assert isinstance(s.cfg, float) and isinstance(s.llm_timeout, float)


def test_cli_with_a_broken_config_exits_2_with_one_line(capsys, imagent_home, monkeypatch):
    monkeypatch.setenv("IMAGENT_LLM_MAX_RETRIES", "1.5")
    code, out, err = cli(capsys, "gallery")
    assert code == 2 and err.startswith("imagent: error: ") and "IMAGENT_LLM_MAX_RETRIES" in err
    assert "internal error" not in err


# -- 3. damaged or hand-made PNG metadata ----------------------------------------------------------------
GOOD_RECORD = {"model": "somewhere/model", "backend": "diffusers", "width": 32, "height": 32, "seed": 1,
               "params": {"prompt": "a cat", "steps": 1, "cfg": 7.0, "mode": "txt2img"}}


def png_with_text(path, chunks: dict):
    info = PngImagePlugin.PngInfo()
    for key, value in chunks.items():
        info.add_text(key, value)
    Image.new("RGB", (32, 32)).save(path, pnginfo=info)
    return str(path)


def _without(d: dict, key: str) -> dict:
    return {k: v for k, v in d.items() if k != key}


@pytest.mark.parametrize("record, fragment", [
    (["a", "list"], "JSON list, not an object"),
    ("just text", "JSON string, not an object"),
    (_without(GOOD_RECORD, "model"), "lacks model"),
    (_without(GOOD_RECORD, "width"), "lacks width"),
    ({**GOOD_RECORD, "params": "a cat"}, "params is the string"),
    ({**GOOD_RECORD, "params": {"steps": 1}}, "lacks params.prompt"),
    ({**GOOD_RECORD, "params": {"prompt": "a cat", "steps": "many"}}, "params.steps is the string"),
    ({**GOOD_RECORD, "safety": "off"}, "safety is the string"),
    ({**GOOD_RECORD, "params": {"prompt": "a cat", "mode": "img2img", "strength": 0.5}}, "lacks inputs.init_image"),
])
@pytest.mark.parametrize("command", ["show", "rerun"])
def test_damaged_imagent_record_is_invalid_input_saying_what_is_wrong(capsys, tmp_path, record, fragment, command):
    path = png_with_text(tmp_path / "hand-made.png", {"imagent": json.dumps(record)})
    code, out, err = cli(capsys, command, path)
    assert code == 2, err
    assert err.startswith("imagent: error: ") and "damaged" in err and fragment in err and "hand-made.png" in err


def test_imagent_record_that_is_not_json_is_damaged(tmp_path):
    path = png_with_text(tmp_path / "broken.png", {"imagent": '{"model": "x", '})
    with pytest.raises(InvalidInput, match="damaged: its JSON does not parse"):
        read_metadata(path)


def test_a1111_size_that_is_not_wxh_is_left_out(capsys, tmp_path):
    text = "a castle\nSteps: 30, Sampler: Euler a, CFG scale: 7, Seed: 5, Size: 512xbig, Model: sd15"
    path = png_with_text(tmp_path / "other-tool.png", {"parameters": text})
    parsed = read_metadata(path)["parsed"]
    assert parsed["steps"] == 30 and "width" not in parsed and "height" not in parsed
    code, out, err = cli(capsys, "show", path)
    assert code == 0 and out.startswith("a castle"), err
    assert parse_a1111("x\nSteps: 1, Size: 64 x 48")["width"] == 64


def test_valid_hand_made_record_still_reads(tmp_path):
    path = png_with_text(tmp_path / "ok.png", {"imagent": json.dumps(GOOD_RECORD)})
    assert read_metadata(path)["record"] == GOOD_RECORD


# -- 4. control characters: rejected on input, escaped on output --------------------------------------------
@pytest.mark.parametrize("field, text, name", [
    ("prompt", "a cat\x1b[2J", "ESC (U+001B)"),
    ("prompt", "a cat\x07", "BEL (U+0007)"),
    ("prompt", "a\x00cat", "NUL (U+0000)"),
    ("prompt", "a cat\r", "CR (U+000D)"),
    ("prompt", "a cat\x9b31m", "U+009B"),
    ("negative_prompt", "blurry\x00", "NUL (U+0000)"),
])
def test_control_characters_in_prompts_are_rejected(field, text, name):
    req = GenerateRequest(**{"prompt": "a cat", field: text})
    with pytest.raises(InvalidInput) as info:
        check_request(req)
    what = "negative prompt" if field == "negative_prompt" else "prompt"
    assert info.value.message.startswith(f"The {what} contains") and name in info.value.message
    check_request(GenerateRequest("a cat\tin a hat\non a mat"))  # tab and newline are fine


def test_control_characters_in_ideas_are_rejected():
    from agent.expand import check_idea

    with pytest.raises(InvalidInput, match="The idea contains the control character ESC"):
        check_idea("a cat \x1b]0;owned\x07 coding")
    assert check_idea("a cat\tcoding\nat night") == "a cat coding at night"


def test_cli_rejects_a_prompt_with_escapes_and_writes_nothing(capsys, tiny_sd_path, tmp_path):
    code, out, err = cli(capsys, "generate", "a cat\x1b]0;owned\x07", "--model", str(tiny_sd_path), "--steps", "1",
                         "--out", str(tmp_path / "out"))
    assert code == 2 and "control character ESC" in err and out == "" and "\x1b" not in err
    assert not (tmp_path / "out").exists()


def test_gallery_and_show_escape_control_characters_already_stored(capsys, tmp_path):
    from agent.config import load_settings
    from agent.store import Gallery

    evil = "a cat\x1b]0;owned\x07\x1b[2J\nsecond line"
    record = {**GOOD_RECORD, "params": {**GOOD_RECORD["params"], "prompt": evil}, "idea": "idea\x1b[31m red"}
    png = png_with_text(tmp_path / "old\x1b[1m.png", {"imagent": json.dumps(record),
                                                      "parameters": evil + "\nSteps: 1, Seed: 1"})
    gallery = Gallery(load_settings().gallery_path)
    gallery.add_image(gallery.start_run("generate"), png, record)

    code, out, err = cli(capsys, "gallery")
    assert code == 0, err
    assert "\x1b" not in out and "\x07" not in out and len(out.splitlines()) == 2   # the header and the image
    assert "a cat\\x1b]0;owned\\x07\\x1b[2J\\nsecond line" in out and "old\\x1b[1m.png" in out
    code, out, err = cli(capsys, "show", png)
    assert code == 0, err
    assert "\x1b" not in out and "\x07" not in out
    assert out.startswith("a cat\\x1b]0;owned\\x07\\x1b[2J\nsecond line\n") and "idea: idea\\x1b[31m red" in out
    code, out, err = cli(capsys, "gallery", "--json")
    assert json.loads(out)["images"][0]["prompt"] == evil  # JSON keeps the text exactly (escaped by JSON)


# -- 5. the over-length message names the field ---------------------------------------------------------------
PWNED = "\x1b]0;pwned\x07"        # sets the terminal's title, then rings its bell
SHOWN = "\\x1b]0;pwned\\x07"     # how it is printed instead


def no_raw_controls(*texts):
    for text in texts:
        assert "\x1b" not in text and "\x07" not in text, repr(text)


def test_expand_prints_the_llms_control_characters_escaped(capsys, monkeypatch):
    from loopback_llm import LoopbackLLM

    answer = {"subject": f"a cat{PWNED}", "style": "ink\x1b[2J", "negatives": [f"blurry{PWNED}"]}
    with LoopbackLLM([answer]) as server:
        monkeypatch.setenv("IMAGENT_LLM_BASE_URL", server.base_url)
        monkeypatch.setenv("IMAGENT_LLM_FALLBACK", "error")
        monkeypatch.setenv("IMAGENT_LLM_METHOD", "json_schema")
        code, out, err = cli(capsys, "expand", "a cat", "--llm", "local", "--family", "sd")
        assert code == 0, err
        no_raw_controls(out, err)
        assert f"subject:     a cat{SHOWN}\n" in out and "style:       ink\\x1b[2J\n" in out
        assert f"positive: a cat{SHOWN}" in out and f"blurry{SHOWN}" in out
        code, out, err = cli(capsys, "expand", "a cat", "--llm", "local", "--family", "sd", "--json")
    assert code == 0, err
    no_raw_controls(out, err)                                   # JSON escapes them (\u001b) and stays valid
    assert json.loads(out)["spec"]["subject"] == f"a cat{PWNED}"


def test_run_round_table_and_checklist_print_model_text_escaped():
    import io
    from types import SimpleNamespace

    from agent.commands.run import print_round_table

    outcome = SimpleNamespace(
        run_id="r1", threshold={"mode": "absolute", "target": 1.5, "formula": "clipscore"},
        rounds=[{"round": 1, "repair": "prompt", "change": f"more{PWNED}", "seeds": [1], "scores": [0.5],
                 "best_checks": {"passed": 0, "total": 1}, "failed": [f"c1{PWNED}"], "seconds": 1.0}],
        checks=[{"passed": False, "kind": "object", "text": f"two cats{PWNED} [bold]now[/]",
                 "evidence": {"count": 1, "wanted": 2, "found": [{"attribute": "red[/]", "noun": f"cat{PWNED}"}]}}],
        met=False, best=SimpleNamespace(seed=1), score=0.5, stop_reason="rounds spent", images=1)
    buf = io.StringIO()
    print_round_table(outcome, file=buf)
    text = buf.getvalue()
    no_raw_controls(text)
    assert f"FAIL two cats{SHOWN} [bold]now[/]" in text           # Rich markup in the text prints as written
    assert f"(read: red[/] cat{SHOWN})" in text and "\\x1b" in text.split("FAIL")[0]   # the table's cells too


def test_batch_diagnostics_print_stored_text_escaped(capsys, tmp_path):
    src = tmp_path / "p.jsonl"
    src.write_text(json.dumps({"prompt": "a cat", f"colour{PWNED}": "red"}) + "\n")
    code, out, err = cli(capsys, "batch", str(src), "--out", str(tmp_path / "out"), "--no-progress")
    assert code == 1, err
    no_raw_controls(out, err)
    assert err.count(f"colour{SHOWN}") == 2                        # the item's line and the summary's


def test_error_messages_print_user_text_escaped(capsys, tmp_path):
    code, out, err = cli(capsys, "batch", str(tmp_path / f"ideas{PWNED}.txt"))
    assert code == 2 and "does not exist" in err and f"ideas{SHOWN}.txt" in err
    no_raw_controls(out, err)


async def test_chat_log_shows_the_models_control_characters_escaped(session):
    from fakes import scripted
    from textual.widgets import Markdown

    from tui.app import make_app
    from tui.widgets import LogLine, PromptInput

    app = make_app(session, chat_model=scripted(f"Hello{PWNED} there."))
    async with app.run_test(size=(120, 36)) as pilot:
        app.query_one("#prompt", PromptInput).value = f"hi{PWNED}"
        await pilot.press("enter")
        for _ in range(200):
            await pilot.pause(0.05)
            if not app.busy:
                break
        await pilot.pause()
        texts = [str(w.render()) if isinstance(w, LogLine) else w.source
                 for w in app.query("#log > *") if isinstance(w, (LogLine, Markdown))]
    no_raw_controls(*texts)
    assert f"Hello{SHOWN} there." in texts


def test_too_long_negative_prompt_says_which_field_and_its_length():
    with pytest.raises(InvalidInput) as info:
        check_request(GenerateRequest("a short prompt", negative_prompt="x" * 4900))
    assert info.value.message == "The negative prompt is 4900 characters; the limit is 4000."
    with pytest.raises(InvalidInput, match="^The prompt is 4001 characters"):
        check_request(GenerateRequest("y" * 4001))


# -- 7. gallery --run with an unknown id ------------------------------------------------------------------------
def test_gallery_for_an_unknown_run_is_invalid_input_saying_how_to_list_runs(capsys):
    code, out, err = cli(capsys, "gallery", "--run", "nosuchrun")
    assert code == 2 and out == ""
    assert err.startswith("imagent: error: There is no run 'nosuchrun'") and "imagent gallery --runs" in err


def test_gallery_lists_runs_and_images_of_a_known_run(capsys, tmp_path):
    from agent.config import load_settings
    from agent.store import Gallery

    gallery = Gallery(load_settings().gallery_path)
    run_id = gallery.start_run("generate", idea="a cat", params={"prompt": "a cat, watercolor"})
    empty_run = gallery.start_run("generate", params={"prompt": "nothing yet"})
    gallery.add_image(run_id, png_with_text(tmp_path / "cat.png", {"imagent": json.dumps(GOOD_RECORD)}), GOOD_RECORD)
    code, out, err = cli(capsys, "gallery", "--runs")
    assert code == 0 and out.splitlines()[0].startswith(empty_run) and run_id in out and "a cat" in out
    code, out, err = cli(capsys, "gallery", "--run", run_id)
    assert code == 0 and "cat.png" in out
    assert cli(capsys, "gallery", "--run", empty_run)[:2] == (0, "")
