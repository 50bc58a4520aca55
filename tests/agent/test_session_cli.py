"""Session + CLI: metadata round trip, rerun, gallery, atomic writes, bad input at the front door."""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from agent.cli import main
from agent.errors import InvalidInput
from agent.session import Session
from tools.generate import GenerateRequest
from tools.images import load_image
from tools.metadata import parse_a1111, read_metadata


def cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_generated_png_carries_a1111_parameters_and_full_record(session, tmp_path):
    outcome = session.generate(GenerateRequest("two red circles", negative_prompt="blurry", steps=2, cfg=5.5,
                                               seed=42, scheduler="euler_a"), out_dir=tmp_path, idea="red things")
    meta = read_metadata(outcome.images[0].path)
    text = meta["parameters"]
    assert text.splitlines()[0] == "two red circles"
    assert "Negative prompt: blurry" in text
    for piece in ("Steps: 2", "Sampler: Euler a", "CFG scale: 5.5", "Seed: 42", "Size: 32x32", "Model: "):
        assert piece in text
    parsed = parse_a1111(text)
    assert parsed == {**parsed, "prompt": "two red circles", "negative_prompt": "blurry", "steps": 2,
                      "cfg": 5.5, "seed": 42, "width": 32, "height": 32, "scheduler": "euler_a"}
    record = meta["record"]
    assert record["idea"] == "red things" and record["seed"] == 42 and record["params"]["steps"] == 2


def test_parse_a1111_text_from_other_tools():
    text = ("masterpiece, a castle\nNegative prompt: lowres, bad hands\n"
            "Steps: 30, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1234, Size: 512x768, Model: sd15")
    parsed = parse_a1111(text)
    assert parsed["prompt"] == "masterpiece, a castle" and parsed["negative_prompt"] == "lowres, bad hands"
    assert (parsed["steps"], parsed["seed"], parsed["width"], parsed["height"]) == (30, 1234, 512, 768)
    assert parsed["scheduler"] == "dpmpp_2m_karras" and parsed["model"] == "sd15"


def test_rerun_from_png_gives_identical_pixels(session, tmp_path):
    first = session.generate(GenerateRequest("a green triangle", steps=3, seed=9, scheduler="dpmpp_2m"),
                             out_dir=tmp_path).images[0]
    again = session.rerun(first.path, out_dir=tmp_path).images[0]
    assert again.path != first.path
    assert np.array_equal(np.asarray(load_image(first.path)), np.asarray(load_image(again.path)))
    assert again.record["rerun_of"] == str(first.path)


def test_rerun_of_an_inpainting_uses_the_recorded_inputs(session, tmp_path):
    src = tmp_path / "in.png"
    Image.new("RGB", (32, 32), (10, 200, 10)).save(src)
    mask = tmp_path / "mask.png"
    m = Image.new("L", (32, 32), 0)
    m.paste(255, (8, 8, 24, 24))
    m.save(mask)
    req, inputs = session.edit_request("a red circle", src, mask_path=mask, steps=3, seed=5, strength=0.8)
    first = session.generate(req, out_dir=tmp_path, inputs=inputs).images[0]
    assert first.record["params"]["mode"] == "inpaint"
    again = session.rerun(first.path, out_dir=tmp_path).images[0]
    assert np.array_equal(np.asarray(load_image(first.path)), np.asarray(load_image(again.path)))


def test_rerun_with_another_model_says_how_to_select_it(session, tmp_path, settings, tiny_backend):
    first = session.generate(GenerateRequest("a cat", steps=1, seed=1), out_dir=tmp_path).images[0]
    other = Session(settings.with_overrides(model="somewhere/else"), backend=type(tiny_backend)(
        "somewhere/else", "cpu", pipe=tiny_backend.pipeline()))
    with pytest.raises(InvalidInput, match="--model"):
        other.rerun(first.path)


def test_gallery_records_runs_and_images(session, tmp_path):
    outcome = session.generate(GenerateRequest("a blue square", steps=1, seed=3, count=2), out_dir=tmp_path)
    rows = session.gallery.images(run_id=outcome.run_id)
    assert sorted(r["seed"] for r in rows) == [3, 4]
    assert all(os.path.exists(r["path"]) for r in rows)
    run = session.gallery.run(outcome.run_id)
    assert run["status"] == "done" and run["params"]["prompt"] == "a blue square"
    assert session.gallery.images(query="blue")[0]["run_id"] == outcome.run_id


def test_failed_save_leaves_no_partial_file_and_marks_run_failed(session, tmp_path, monkeypatch):
    def broken_save(self, fp, *a, **k):
        fp.write(b"\x89PNG partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError):
        session.generate(GenerateRequest("a cat", steps=1, seed=1), out_dir=tmp_path / "out")
    monkeypatch.undo()
    assert not list((tmp_path / "out").glob("*")), "no partial or temporary file may remain"
    run = session.gallery.runs(limit=1)[0]
    assert run["status"] == "failed" and "disk full" in run["error"]
    assert session.gallery.images(run_id=run["id"]) == []


def test_cli_generate_json_show_and_rerun(capsys, tiny_sd_path, tmp_path):
    code, out, err = cli(capsys, "generate", "two red circles", "--model", str(tiny_sd_path), "--steps", "2",
                         "--seed", "11", "-n", "2", "--safety", "off", "--out", str(tmp_path), "--json")
    assert code == 0, err
    record = json.loads(out)
    assert [i["seed"] for i in record["images"]] == [11, 12]
    path = record["images"][0]["path"]
    code, out, err = cli(capsys, "show", path)
    assert code == 0 and out.startswith("two red circles\nSteps: 2")
    code, out, err = cli(capsys, "rerun", path, "--json", "--out", str(tmp_path))
    assert code == 0, err
    assert json.loads(out)["identical"] is True


def test_cli_without_seed_reports_the_drawn_one(capsys, tiny_sd_path, tmp_path):
    code, out, err = cli(capsys, "generate", "a cat", "--model", str(tiny_sd_path), "--steps", "1",
                         "--safety", "off", "--out", str(tmp_path))
    assert code == 0
    seed = int(err.split("seed ")[1].split(";")[0])
    assert f"-{seed}.png" in out


@pytest.mark.parametrize("extra, fragment, code", [
    (["generate", ""], "empty", 2),
    (["generate", "x", "--size", "33x32"], "multiple of 8", 2),
    (["generate", "x", "--size", "100000x64"], "out of range", 2),
    (["generate", "x", "--size", "big"], "WIDTHxHEIGHT", 2),
    (["generate", "x", "--scheduler", "warp"], "Unknown scheduler", 2),
    (["generate", "x", "--init-image", "missing.png"], "does not exist", 2),
    (["generate", "x", "--init-image", "{notimage}"], "not a readable image", 2),
    (["generate", "x", "--init-image", "{img}", "--strength", "2"], "strength 2.0 is out of range.\n  Use above 0 "
                                                                    "to 1 (0.3 keeps most of the image, 1 replaces it). "
                                                                    "(option --strength)", 2),
    (["generate", "x", "--steps", "600"], "steps 600 is out of range.\n  Use 1 to 500 steps. (option --steps)", 2),
    (["generate", "x", "-n", "0"], "count 0 is out of range.\n  Use 1 to 64 images. (option --count)", 2),
    (["generate", "x", "--init-image", "{img}", "--mask", "{smallmask}"], "mask is 16x16", 2),
    (["generate", "x", "--mask", "{smallmask}"], "--init-image", 2),
    (["generate", "x", "--model", "{tmp}"], "not a diffusers model", 3),
    (["generate", "x", "--model", "nobody/no-such-model"], "nobody/no-such-model", 3),
    (["show", "{notimage}"], "not a readable image", 2),
    (["show", "{img}"], "no generation metadata", 2),
])
def test_cli_bad_input_one_line_error_and_gallery_untouched(capsys, tiny_sd_path, tmp_path, extra, fragment, code):
    (tmp_path / "notimage.png").write_text("this is not a png")
    Image.new("RGB", (32, 32)).save(tmp_path / "img.png")
    Image.new("L", (16, 16)).save(tmp_path / "smallmask.png")
    names = {"notimage": tmp_path / "notimage.png", "img": tmp_path / "img.png",
             "smallmask": tmp_path / "smallmask.png", "tmp": tmp_path}
    argv = [a.format(**names) for a in extra]
    if argv[0] == "generate" and "--model" not in argv:
        argv += ["--model", str(tiny_sd_path)]
    # a gallery with one earlier image, which must stay as it is
    assert cli(capsys, "generate", "a cat", "--model", str(tiny_sd_path), "--steps", "1", "--seed", "1",
               "--out", str(tmp_path / "keep"))[0] == 0
    db = os.environ["IMAGENT_HOME"] + "/gallery.db"
    before = sqlite3.connect(db).execute("SELECT id, path, record_json FROM images").fetchall()
    rc, out, err = cli(capsys, *argv)
    assert rc == code, err
    assert fragment in err and "Traceback" not in err and out == ""
    assert err.startswith("imagent: error: ")
    after = sqlite3.connect(db).execute("SELECT id, path, record_json FROM images").fetchall()
    assert after == before


def test_killed_mid_run_leaves_gallery_readable(tiny_sd_path, tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "generate", "a cat", "--model", str(tiny_sd_path),
                             "--steps", "3", "-n", "64", "--seed", "1", "--out", str(tmp_path / "out")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    db = os.path.join(os.environ["IMAGENT_HOME"], "gallery.db")
    deadline = time.time() + 60
    while time.time() < deadline and not os.path.exists(db):
        time.sleep(0.1)
    time.sleep(2.0)
    proc.kill()
    proc.wait()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    for (path,) in conn.execute("SELECT path FROM images"):
        assert load_image(path).size == (32, 32)
    for png in (tmp_path / "out").glob("*.png"):
        load_image(png)  # every file present is complete


def test_rerun_of_an_upscale_points_to_its_source_and_gallery_lists_it(capsys, session, tmp_path):
    first = session.generate(GenerateRequest("a cat", steps=1, seed=1), out_dir=tmp_path).images[0]
    up = session.upscale(first.path, scale=2, method="lanczos", out_dir=tmp_path)
    code, out, err = cli(capsys, "rerun", str(up.path))
    assert code == 2 and "imagent rerun" in err and str(first.path) in err
    code, out, err = cli(capsys, "gallery")
    assert code == 0 and str(up.path) in out


def test_cli_run_prints_only_the_path_on_stdout_and_the_table_on_stderr(capsys, tiny_sd_path, tiny_clip_path,
                                                                         tmp_path):
    code, out, err = cli(capsys, "run", "two red circles", "--model", str(tiny_sd_path), "--clip",
                         str(tiny_clip_path), "--steps", "2", "--rounds", "1", "--candidates", "1", "--seed", "4",
                         "--safety", "off", "--out", str(tmp_path))
    assert code == 0
    assert out.strip().splitlines() == [out.strip()] and out.strip().endswith(".png"), "IMG=$(imagent run ...)"
    assert "round" in err and ("FAIL" in err or "pass" in err)
    assert "no detector for this model" in err.lower()


def test_seed_minus_one_is_random_and_dash_reads_the_prompt_from_stdin(capsys, tiny_sd_path, tmp_path, monkeypatch):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("two red circles\n"))
    code, out, err = cli(capsys, "generate", "-", "--model", str(tiny_sd_path), "--steps", "1", "--seed", "-1",
                         "--safety", "off", "--out", str(tmp_path), "--json")
    assert code == 0, err
    image = json.loads(out)["images"][0]
    assert image["params"]["prompt"] == "two red circles" and 0 <= image["seed"] < 2**63


def test_ctrl_c_mid_generation_is_recorded_as_cancelled(session, tmp_path):
    from agent.events import Call

    def interrupt(event):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        session.generate(GenerateRequest("a cat", steps=2, seed=1), out_dir=tmp_path, call=Call(sink=interrupt))
    assert session.gallery.runs(limit=1)[0]["status"] == "cancelled"


def test_progress_into_a_pipe_is_plain_lines(capsys, tiny_sd_path, tmp_path):
    code, out, err = cli(capsys, "generate", "a cat", "--model", str(tiny_sd_path), "--steps", "4", "--seed", "1",
                         "--safety", "off", "--out", str(tmp_path), "--progress")
    assert code == 0
    lines = [x for x in err.splitlines() if x.startswith("imagent: generating")]
    assert lines and lines[-1] == "imagent: generating 4/4", err
