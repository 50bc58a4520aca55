"""`imagent gallery`: the table (header, date, score) and --json, upscaled images with their source's prompt."""
from __future__ import annotations

import json
from datetime import datetime

from agent.cli import main


def cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _fill(tmp_path):
    from agent.config import load_settings
    from agent.store import Gallery

    gallery = Gallery(load_settings().gallery_path)
    src = {"model": "m", "backend": "diffusers", "width": 32, "height": 32, "seed": 7,
           "params": {"prompt": "two red circles", "negative_prompt": "", "steps": 1, "cfg": 7.0}}
    first = gallery.add_image(gallery.start_run("generate"), tmp_path / "a.png", src, score=0.3125)
    up = {"kind": "upscale", "model": "lanczos", "backend": "upscale", "width": 64, "height": 64, "seed": 7,
          "upscale": {"source": str(tmp_path / "a.png")}, "source": {"seed": 7, "params": src["params"]}}
    second = gallery.add_image(gallery.start_run("upscale"), tmp_path / "a-x2-lanczos.png", up)
    return first, second


def test_gallery_table_has_header_date_score_and_upscale_source_prompt(capsys, imagent_home, tmp_path):
    first, second = _fill(tmp_path)
    code, out, err = cli(capsys, "gallery")
    assert code == 0, err
    header, up, gen = out.splitlines()
    assert header.split() == ["ID", "DATE", "SEED", "SCORE", "PATH", "PROMPT"]
    today = datetime.now().strftime("%Y-%m-%d")
    assert today in gen and "0.312" in gen and "two red circles" in gen
    assert today in up and "a-x2-lanczos.png" in up and up.rstrip().endswith("two red circles")


def test_gallery_json_keeps_its_keys_and_parses(capsys, imagent_home, tmp_path):
    _fill(tmp_path)
    code, out, err = cli(capsys, "gallery", "--json")
    images = json.loads(out)["images"]
    for key in ("id", "run_id", "path", "seed", "prompt", "width", "height", "model", "score"):
        assert all(key in im for im in images)
    assert [im["prompt"] for im in images] == ["two red circles", "two red circles"]
    assert images[1]["score"] == 0.3125 and images[0]["score"] is None


def test_empty_gallery_prints_nothing(capsys, imagent_home):
    assert cli(capsys, "gallery") == (0, "", "")


def test_search_matches_an_upscale_by_its_source_prompt(capsys, imagent_home, tmp_path):
    from agent.config import load_settings
    from agent.store import Gallery

    first, second = _fill(tmp_path)
    gallery = Gallery(load_settings().gallery_path)
    other = gallery.add_image(gallery.start_run("generate"), tmp_path / "b.png",
                              {"seed": 1, "params": {"prompt": "a blue square"}})
    broken = gallery.add_image(gallery.start_run("upscale"), tmp_path / "c.png", {"kind": "upscale", "source": "x"})
    code, out, err = cli(capsys, "gallery", "--search", "red circ", "--json")
    assert code == 0, err
    assert [im["id"] for im in json.loads(out)["images"]] == [second, first]
    assert [im["id"] for im in gallery.images(query="red circ")] == [second, first]      # MCP list_images too
    code, out, err = cli(capsys, "gallery", "--search", "red circ")
    rows = out.splitlines()[1:]
    assert len(rows) == 2 and "a-x2-lanczos.png" in rows[0] and rows[0].rstrip().endswith("two red circles")
    assert [im["id"] for im in gallery.images(query="blue")] == [other]
    assert broken not in [im["id"] for im in gallery.images(query="x")]
