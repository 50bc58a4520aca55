"""`imagent expand`, `imagent styles` and `imagent generate --idea/--style/--raw` end to end."""
from __future__ import annotations

import json

from agent.cli import main
from tools.metadata import read_metadata


def cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_styles_lists_presets(capsys):
    code, out, err = cli(capsys, "styles")
    lines = out.splitlines()
    assert code == 0 and len(lines) >= 20 and any(l.startswith("cinematic ") for l in lines)
    assert all(len(l.split(None, 1)) == 2 for l in lines)  # name + one-line description


def test_expand_json_and_human(capsys):
    code, out, err = cli(capsys, "expand", "a cat coding at night", "--style", "cinematic", "--family", "sd", "--json")
    data = json.loads(out)
    assert code == 0 and data["idea"] == "a cat coding at night" and data["spec"]["style"] == "cinematic film still"
    assert data["rendered"]["family"] == "sd" and data["rendered"]["positive"].startswith("a cat coding at night, ")
    code, out, err = cli(capsys, "expand", "two red circles")
    assert code == 0 and "positive: two red circles\n" in out and "demo model" in err


def test_expand_bad_input_is_one_clear_line(capsys):
    code, out, err = cli(capsys, "expand", "a cat", "--style", "cinematc")
    assert code == 2 and out == "" and "Unknown style 'cinematc'" in err and "cinematic" in err
    assert "Traceback" not in err
    code, out, err = cli(capsys, "expand", " ")
    assert code == 2 and "The idea is empty." in err


def test_unreachable_llm_falls_back_with_a_warning(capsys, monkeypatch):
    monkeypatch.setenv("IMAGENT_LLM_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("IMAGENT_LLM_MAX_RETRIES", "0")
    code, out, err = cli(capsys, "expand", "a cat", "--llm", "local", "--family", "sd")
    assert code == 0 and "Cannot reach the LLM server" in err and "template" in out
    monkeypatch.setenv("IMAGENT_LLM_FALLBACK", "error")
    code, out, err = cli(capsys, "expand", "a cat", "--llm", "local")
    assert code == 6 and out == "" and "Cannot reach the LLM server at http://127.0.0.1:9/v1" in err


def test_generate_idea_stores_idea_and_spec(capsys, tiny_sd_path, tmp_path):
    code, out, err = cli(capsys, "generate", "a cat coding at night", "--style", "watercolor", "--model",
                         str(tiny_sd_path), "--steps", "1", "--seed", "5", "--safety", "off", "--out",
                         str(tmp_path), "--json")
    assert code == 0, err
    image = json.loads(out)["images"][0]
    record = read_metadata(image["path"])["record"]
    assert record["idea"] == "a cat coding at night"
    assert record["spec"]["style"] == "watercolor painting" and record["expansion"]["style_preset"] == "watercolor"
    assert record["params"]["prompt"].startswith("a cat coding at night, watercolor painting, ")
    assert "blurry" in record["params"]["negative_prompt"]
    code, out, err = cli(capsys, "gallery", "--json")
    assert "a cat coding at night" in out


def test_generate_default_is_raw_and_raw_conflicts_with_expansion(capsys, tiny_sd_path, tmp_path):
    code, out, err = cli(capsys, "generate", "two red circles", "--model", str(tiny_sd_path), "--steps", "1",
                         "--seed", "5", "--safety", "off", "--out", str(tmp_path), "--json")
    record = read_metadata(json.loads(out)["images"][0]["path"])["record"]
    assert code == 0 and record["params"]["prompt"] == "two red circles" and "idea" not in record
    code, out, err = cli(capsys, "generate", "x", "--raw", "--idea", "--model", str(tiny_sd_path))
    assert code == 2 and "--raw" in err


def test_failed_expansion_writes_no_record(capsys, tiny_sd_path, imagent_home):
    code, out, err = cli(capsys, "generate", "a cat", "--style", "nope", "--model", str(tiny_sd_path))
    assert code == 2
    code, out, err = cli(capsys, "gallery", "--json")
    assert "a cat" not in out
