"""imagent on a real local Ray (2 CPUs, started and stopped by this module, shared by its tests):
`batch --ray` gives the same records and images as the in-process batch, resumes a partial run
without redoing anything, and survives a worker killed mid-item; `serve --ray` answers the
OpenAI client from a Ray Serve replica."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from agent.batch import BatchOptions, Sweep, image_name, open_batch, plan, read_lines, run_batch

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'imagent[ray]'")
ROOT = Path(__file__).resolve().parents[2]


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def pixels(path) -> np.ndarray:
    from tools.images import load_image

    return np.asarray(load_image(path)).astype(int)


def same_image(p, q) -> bool:
    """The same image up to float rounding: each actor runs on its own CPU share (one torch
    thread), the in-process batch on the test's threads, and a sum split over other threads rounds
    differently."""
    return np.abs(pixels(p) - pixels(q)).max() <= 2


@pytest.fixture(scope="module")
def local_ray():
    # the workers import imagent from this checkout, as the tests do (pytest's pythonpath is not inherited)
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield ray
    ray.shutdown()


def test_without_ray_or_with_an_unreachable_address_exits_2_with_what_to_do(tiny_sd_path, tmp_path, capsys,
                                                                             monkeypatch):
    from agent.cli import main

    src = tmp_path / "ideas.txt"
    src.write_text("two red circles\n")
    argv = ["batch", str(src), "--steps", "1", "--model", str(tiny_sd_path), "--out", str(tmp_path / "out")]
    assert main([*argv, "--ray", "127.0.0.1:1"]) == 2
    assert "Ray cluster at 127.0.0.1:1 is unreachable" in capsys.readouterr().err
    assert main([*argv, "--ray-actors", "2"]) == 2
    assert "--ray-actors needs --ray" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError, as without it installed
    assert main([*argv, "--ray"]) == 2
    assert "Ray is not installed: pip install 'imagent[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists(), "nothing is written before the error"


def test_batch_ray_matches_in_process_and_resumes_without_redoing(local_ray, session, tiny_sd_path, tmp_path,
                                                                 capsys):
    from agent.cli import main

    src = tmp_path / "ideas.txt"
    src.write_text("two red circles\na blue square\n")
    _, lines = read_lines(src)
    sweep, options = Sweep(seeds=(1, 2), steps=(1,)), BatchOptions()
    items = plan(lines, sweep)
    here, there = tmp_path / "here", tmp_path / "there"
    log, done = open_batch(src, here, fmt="txt", sweep=sweep, options=options, resume=False)
    run_batch(session, items, log, done, options, here)
    argv = ["batch", str(src), "--seeds", "1-2", "--steps", "1", "--model", str(tiny_sd_path), "--safety", "off",
            "--out", str(there), "--no-progress", "--json", "--ray"]
    assert main([*argv, "--ray-actors", "2"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["ok"] == 4 and "2 Ray actor(s), each with 1 CPU and its own model" in out.err
    a = {r["key"]: r for r in records(here / "records.jsonl")}
    b = {r["key"]: r for r in records(there / "records.jsonl")}
    assert sorted(a) == sorted(b) == sorted(i.key for i in items)      # every item once
    for key in a:
        assert set(a[key]) == set(b[key]), key                          # the same record fields
        for field in ("status", "seed", "prompt", "negative_prompt", "params", "backend", "line", "sweep"):
            assert a[key][field] == b[key][field], (key, field)
        assert Path(b[key]["path"]) == there / "images" / image_name(key)
        assert same_image(a[key]["path"], b[key]["path"]), key                # the same images

    # a partial run: the last two records lost (one image still on disk, one gone) and a torn line
    text = (there / "records.jsonl").read_text().splitlines()
    lost = [json.loads(x) for x in text[2:]]
    Path(lost[1]["path"]).unlink()
    (there / "records.jsonl").write_text("\n".join(text[:2]) + "\n" + text[2][:25])
    images_before = session.gallery.count_images()
    assert main([*argv, "--resume"]) == 0
    summary = json.loads(capsys.readouterr().out)
    recs = {r["key"]: r for r in records(there / "records.jsonl")}
    assert summary["ok"] == 2 and summary["done_before"] == 2 and sorted(recs) == sorted(i.key for i in items)
    assert recs[lost[0]["key"]].get("recovered") is True                # its PNG was there: recorded, not redone
    assert not recs[lost[1]["key"]].get("recovered")                     # its PNG was gone: made again, the same
    assert same_image(recs[lost[1]["key"]]["path"], a[lost[1]["key"]]["path"])
    assert session.gallery.count_images() == images_before + 1          # one new image, the one that was gone

    # finished: a resume starts no actor and writes nothing
    assert main([*argv, "--resume"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["done_before"] == 4 and "Ray actor" not in out.err
    assert len(records(there / "records.jsonl")) == 4


def test_a_killed_worker_is_replaced_its_item_retried_once_then_failed(local_ray, settings, tmp_path):
    from agent.ray_batch import run_ray_batch

    src = tmp_path / "ideas.txt"
    src.write_text("two red circles\na blue square\n")
    _, lines = read_lines(src)
    sweep, options = Sweep(seeds=(1, 2)), BatchOptions(steps=1)
    items, out = plan(lines, sweep), tmp_path / "out"
    log, done = open_batch(src, out, fmt="txt", sweep=sweep, options=options, resume=False)
    # the worker process exits (os._exit, as a kill) on L1/seed=1's first attempt and on both of L2/seed=2's
    exit_on = frozenset({("L1/seed=1", 1), ("L2/seed=2", 1), ("L2/seed=2", 2)})
    placed = []
    summary = run_ray_batch(settings, items, log, done, options, out, actors=1, exit_on=exit_on,
                            on_start=lambda n, res: placed.append((n, res)))
    assert placed == [(1, {"num_cpus": 2})]
    recs = {r["key"]: r for r in records(out / "records.jsonl")}
    assert sorted(recs) == sorted(i.key for i in items) and not summary.cancelled   # the batch finished
    assert summary.ok == 3 and summary.failed == 1
    assert recs["L1/seed=1"]["status"] == "ok" and recs["L1/seed=1"]["attempts"] == 2   # retried on a new actor
    dead = recs["L2/seed=2"]
    assert dead["status"] == "error" and dead["attempts"] == 2 and dead["error"]["type"] == "WorkerDied"
    assert "died 2 times" in dead["error"]["message"] and "--retry-errors" in dead["error"]["hint"]
    assert all("attempts" not in recs[k] for k in ("L1/seed=2", "L2/seed=1"))


def test_serve_on_ray_serve_answers_the_openai_client(local_ray, imagent_home):
    import base64
    import io
    import socket

    import httpx
    import openai
    from PIL import Image
    from ray import serve

    from agent import ray_serve
    from agent.config import load_settings

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = load_settings(safety="off")                               # the demo model
    replicas, resources = ray_serve.start(local_ray, settings, host="127.0.0.1", port=port, token=None,
                                          queue_size=4, cache=True)
    try:
        assert (replicas, resources) == (1, {"num_cpus": 2})
        base = f"http://127.0.0.1:{port}"
        health = httpx.get(f"{base}/healthz", timeout=30).json()
        assert health["status"] == "ok" and health["model"] == "demo"
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="anything", max_retries=0, timeout=120)
        res = client.images.generate(prompt="two red circles", extra_body={"seed": 5, "steps": 2})
        (item,) = res.data
        assert item.seed == 5 and Image.open(io.BytesIO(base64.b64decode(item.b64_json))).size == (64, 64)
        with pytest.raises(openai.BadRequestError) as err:                # OpenAI's error body, through Serve
            client.images.generate(prompt="two red circles", model="dall-e-3")
        assert err.value.code == "model_not_found"
    finally:
        serve.shutdown()
