"""Batch runs: input formats, sweeps, error records, resume (also after a kill), the CLI."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from agent.batch import (BatchOptions, Sweep, open_batch, parse_floats, parse_ints, plan, read_lines,
                         run_batch)
from agent.errors import InvalidInput

PARTI = Path("/work/shared/data/prompts/partiprompts/PartiPrompts.tsv")


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_text_jsonl_and_tsv_inputs(tmp_path):
    txt = tmp_path / "ideas.txt"
    txt.write_text("two red circles\n\n# a comment\n  a blue square  \n")
    fmt, lines = read_lines(txt)
    assert fmt == "txt" and [(l.number, l.fields) for l in lines] == [(1, {"idea": "two red circles"}),
                                                                        (4, {"idea": "a blue square"})]
    js = tmp_path / "p.jsonl"
    js.write_text('{"prompt": "a cat", "seed": 3, "cfg": 5}\nnot json\n[1, 2]\n\n{"idea": "a dog"}\n')
    fmt, lines = read_lines(js)
    assert fmt == "jsonl" and [l.number for l in lines] == [1, 2, 3, 5]
    assert lines[0].fields["seed"] == 3 and "not valid JSON" in lines[1].error and "not a JSON object" in lines[2].error
    tsv = tmp_path / "t.tsv"
    tsv.write_text("Prompt\tCategory\tseed\n\"a \"\"quoted\"\" cat\"\tAnimals\t7\n\tEmpty\t\n")
    _, lines = read_lines(tsv)
    assert lines[0].fields == {"idea": 'a "quoted" cat', "seed": 7} and lines[0].meta == {"category": "Animals"}
    assert lines[1].error
    with pytest.raises(InvalidInput, match="no 'prompt'"):
        bad = tmp_path / "b.tsv"
        bad.write_text("text\tx\na\tb\n")
        read_lines(bad)


@pytest.mark.skipif(not PARTI.exists(), reason="PartiPrompts not present")
def test_partiprompts_reads_as_is():
    fmt, lines = read_lines(PARTI)
    assert fmt == "tsv" and len(lines) == 1632 and not any(l.error for l in lines)
    assert lines[0].number == 2 and lines[0].fields == {"idea": "bond"}
    assert lines[0].meta["category"] == "Abstract" and lines[0].meta["challenge"] == "Basic"


def test_sweeps_form_a_grid_with_stable_keys(tmp_path):
    assert parse_ints("1-4", "seeds") == [1, 2, 3, 4] and parse_ints("1,5-6,5", "seeds") == [1, 5, 6]
    assert parse_floats("5,7.5", "cfg") == [5.0, 7.5]
    for bad in ("a", "4-1", "1-"):
        with pytest.raises(InvalidInput):
            parse_ints(bad, "seeds")
    txt = tmp_path / "i.txt"
    txt.write_text("a\nb\n")
    _, lines = read_lines(txt)
    items = plan(lines, Sweep(seeds=(1, 2), cfgs=(5.0, 7.5), steps=(10,)))
    assert len(items) == 8 and items[0].key == "L1/seed=1/cfg=5/steps=10"
    assert items[-1].key == "L2/seed=2/cfg=7.5/steps=10" and items[-1].point == {"seed": 2, "cfg": 7.5, "steps": 10}
    assert [i.key for i in plan(lines, Sweep())] == ["L1", "L2"]


@pytest.fixture
def guarded_session(session):
    """The tiny-model session with the real standard safety policy (blocklist + classifier)."""
    from agent.config import load_settings
    from agent.session import Session

    return Session(load_settings(model=session.settings.model, clip_model=session.settings.clip_model,
                                 safety="standard"), backend=session.backend(), scorer=session.scorer())


def test_batch_records_errors_and_goes_on_then_resumes(guarded_session, tmp_path):
    src = tmp_path / "p.jsonl"
    src.write_text("\n".join([
        json.dumps({"prompt": "two red circles", "steps": 1}),
        json.dumps({"idea": "a blue square", "steps": 1, "colour": "blue"}),        # unknown key
        json.dumps({"prompt": "a naked woman, explicit porn", "steps": 1}),          # blocked
        "{broken",
        json.dumps({"prompt": "a cat", "steps": 1, "size": "36x36", "id": "cat-1"}),
    ]) + "\n")
    _, lines = read_lines(src)
    sweep, options = Sweep(seeds=(1, 2)), BatchOptions(score=True)
    items = plan(lines, sweep)
    out = tmp_path / "out"
    log, done = open_batch(src, out, fmt="jsonl", sweep=sweep, options=options, resume=False)
    summary = run_batch(guarded_session, items, log, done, options, out)
    recs = records(out / "records.jsonl")
    assert [r["key"] for r in recs] == [i.key for i in items]
    by = {r["key"]: r for r in recs}
    ok = by["L1/seed=2"]
    assert ok["status"] == "ok" and ok["seed"] == 2 and Path(ok["path"]).is_file()
    assert ok["params"]["steps"] == 1 and ok["prompt"] == "two red circles" and isinstance(ok["score"], float)
    assert ok["timings"]["seconds"] > 0 and ok["image_id"]
    assert by["L2/seed=1"]["error"]["type"] == "InvalidInput" and "colour" in by["L2/seed=1"]["error"]["message"]
    assert by["L3/seed=1"]["error"]["type"] == "SafetyBlocked"
    assert "not valid JSON" in by["L4/seed=1"]["error"]["message"]
    assert by["L5/seed=1"]["error"]["type"] == "InvalidInput" and "multiple of 8" in by["L5/seed=1"]["error"]["message"]
    assert summary.ok == 2 and summary.failed == 8

    # resume: nothing to redo; with different options: refused; without --resume: refused
    log, done = open_batch(src, out, fmt="jsonl", sweep=sweep, options=options, resume=True)
    assert run_batch(guarded_session, items, log, done, options, out).ok == 0
    assert len(records(out / "records.jsonl")) == 10
    with pytest.raises(InvalidInput, match="options differ"):
        open_batch(src, out, fmt="jsonl", sweep=sweep, options=BatchOptions(), resume=True)
    with pytest.raises(InvalidInput, match="--resume"):
        open_batch(src, out, fmt="jsonl", sweep=sweep, options=options, resume=False)
    # --retry-errors drops the error records and redoes those items (still one record per key)
    log, done = open_batch(src, out, fmt="jsonl", sweep=sweep, options=options, resume=True, retry_errors=True)
    assert set(done) == {"L1/seed=1", "L1/seed=2"}
    run_batch(guarded_session, items, log, done, options, out)
    keys = [r["key"] for r in records(out / "records.jsonl")]
    assert sorted(keys) == sorted(i.key for i in items)


def test_torn_last_line_is_cut_and_redone(session, tmp_path):
    src = tmp_path / "i.txt"
    src.write_text("two red circles\na blue square\n")
    _, lines = read_lines(src)
    options, out = BatchOptions(steps=1), tmp_path / "out"
    items = plan(lines, Sweep())
    log, done = open_batch(src, out, fmt="txt", sweep=Sweep(), options=options, resume=False)
    run_batch(session, items, log, done, options, out)
    text = (out / "records.jsonl").read_text().splitlines()     # what a kill in the middle of a write leaves
    (out / "records.jsonl").write_text(text[0] + "\n" + text[1][:30])
    log, done = open_batch(src, out, fmt="txt", sweep=Sweep(), options=options, resume=True)
    assert set(done) == {"L1"}
    run_batch(session, items, log, done, options, out)
    assert [r["key"] for r in records(out / "records.jsonl")] == ["L1", "L2"]


def test_loop_mode_records_scores_and_rounds(session, tmp_path):
    src = tmp_path / "i.txt"
    src.write_text("two red circles\n")
    _, lines = read_lines(src)
    options = BatchOptions(loop=True, rounds=1, candidates=1, steps=1)
    out = tmp_path / "out"
    log, done = open_batch(src, out, fmt="txt", sweep=Sweep(seeds=(4,)), options=options, resume=False)
    summary = run_batch(session, plan(lines, Sweep(seeds=(4,))), log, done, options, out)
    (rec,) = records(out / "records.jsonl")
    assert summary.ok == 1 and rec["status"] == "ok" and rec["rounds"] and isinstance(rec["score"], float)
    assert Path(rec["path"]).is_file()


def test_killed_batch_resumes_with_one_record_per_item(tiny_sd_path, imagent_home, tmp_path):
    from agent.cli import main

    src = tmp_path / "ideas.txt"
    src.write_text("two red circles\na blue square\n")
    out = tmp_path / "out"
    argv = ["batch", str(src), "--seeds", "1-6", "--steps", "1", "--model", str(tiny_sd_path), "--safety", "off",
            "--out", str(out), "--no-progress"]
    env = {**os.environ, "IMAGENT_HOME": str(imagent_home)}
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli", *argv], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    rec_file = out / "records.jsonl"
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:
            if rec_file.exists() and rec_file.read_bytes().count(b"\n") >= 2:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.005)
    finally:
        proc.kill()
        proc.wait()
    written = rec_file.read_bytes().count(b"\n")
    assert 2 <= written < 12, f"the batch was not killed midway ({written} records)"
    assert main([*argv, "--resume"]) == 0
    keys = [r["key"] for r in records(rec_file)]
    assert len(keys) == 12 == len(set(keys))
    assert all(r["status"] == "ok" for r in records(rec_file))
    assert main([*argv, "--resume"]) == 0                 # finished: nothing redone
    assert len(records(rec_file)) == 12


def test_cli_json_summary_and_refusals(tiny_sd_path, tmp_path, capsys):
    from agent.cli import main

    src = tmp_path / "ideas.txt"
    src.write_text("two red circles\n")
    argv = ["batch", str(src), "--cfg", "5,7.5", "--steps", "1", "--model", str(tiny_sd_path), "--safety", "off",
            "--json", "--no-progress"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["ok"] == 2 and summary["total"] == 2 and summary["images_per_minute"]
    assert Path(summary["records"]).parent == tmp_path / "imagent-home" / "batches" / "ideas"
    assert main(argv) == 2                                   # exists: needs --resume
    assert "--resume" in capsys.readouterr().err
    assert main(["batch", str(src), "--seeds", "x", "--model", str(tiny_sd_path)]) == 2
    assert main(["batch", str(tmp_path / "missing.txt")]) == 2


def test_resume_of_a_batch_with_failed_items_still_exits_1(tiny_sd_path, imagent_home, tmp_path):
    from agent.cli import main

    src = tmp_path / "items.jsonl"
    src.write_text('{"prompt": "two red circles"}\n{"prompt": "a cat", "steps": 0}\n')
    argv = ["batch", str(src), "--steps", "1", "--model", str(tiny_sd_path), "--safety", "off",
            "--out", str(tmp_path / "out")]
    assert main(argv) == 1, "one item failed"
    assert main([*argv, "--resume"]) == 1, "the failed item is still failed after a resume"


class _Killed(BaseException):
    """What a SIGKILL at that point leaves: nothing after it runs."""


@pytest.mark.parametrize("loop", [False, True], ids=["plain", "loop"])
@pytest.mark.parametrize("where", ["before_record", "before_rename"])
def test_kill_after_png_landed_is_recorded_not_redone(session, tmp_path, monkeypatch, where, loop):
    import agent.batch as batch

    src = tmp_path / "i.txt"
    src.write_text("two red circles\na blue square\n")
    _, lines = read_lines(src)
    options = BatchOptions(loop=True, rounds=1, candidates=1, steps=1) if loop else BatchOptions(steps=1)
    sweep, out = Sweep(seeds=(1, 2)), tmp_path / "out"
    items = plan(lines, sweep)
    before = session.gallery.count_images()
    log, done = open_batch(src, out, fmt="txt", sweep=sweep, options=options, resume=False)
    calls = []
    if where == "before_record":                     # the PNG is in place, its JSONL record not yet written
        real = batch.RecordLog.append

        def append(self, record):
            calls.append(record["key"])
            if len(calls) == 2:
                raise _Killed
            real(self, record)
        monkeypatch.setattr(batch.RecordLog, "append", append)
    else:                                            # the PNG landed under the session's name, not yet renamed
        real = batch.settle_image

        def settle(*a, **k):
            calls.append(1)
            if len(calls) == 2:
                raise _Killed
            return real(*a, **k)
        monkeypatch.setattr(batch, "settle_image", settle)
    with pytest.raises(_Killed):
        run_batch(session, items, log, done, options, out)
    monkeypatch.undo()
    assert len(records(out / "records.jsonl")) == 1 and len(list((out / "images").glob("*.png"))) == 2
    log, done = open_batch(src, out, fmt="txt", sweep=sweep, options=options, resume=True)
    summary = run_batch(session, items, log, done, options, out)
    recs = records(out / "records.jsonl")
    assert [r["key"] for r in recs] == [i.key for i in items] and all(r["status"] == "ok" for r in recs)
    assert recs[1].get("recovered") is True and summary.ok == 3
    pngs = sorted(p.name for p in (out / "images").glob("*.png"))
    assert pngs == ["L1_seed=1.png", "L1_seed=2.png", "L2_seed=1.png", "L2_seed=2.png"]   # none orphaned
    assert session.gallery.count_images() - before == 4
    for r in recs:
        assert Path(r["path"]).name == batch.image_name(r["key"])
        assert session.gallery.image(r["image_id"])["path"] == r["path"]
    if loop:                                         # the recovered record is a loop record like the others
        fresh, recovered = recs[0], recs[1]
        for k in ("score", "rounds", "scores", "threshold", "met"):
            assert type(recovered[k]) is type(fresh[k]), k
        assert recovered["rounds"] and recovered["scores"] == [r.get("scores") for r in recovered["rounds"]]
        assert session.gallery.image(recovered["image_id"])["score"] == pytest.approx(recovered["score"], abs=1e-4)


def test_speed_options_apply_to_every_line_keep_the_image_and_allow_a_resume(tiny_sd_path, imagent_home,
                                                                            tmp_path, capsys):
    from agent.cli import main
    from tools.images import load_image

    src = tmp_path / "ideas.txt"
    src.write_text("two red circles\na blue square\n")
    common = ["batch", str(src), "--seeds", "3", "--steps", "2", "--model", str(tiny_sd_path), "--safety", "off",
              "--json", "--no-progress"]
    assert main([*common, "--out", str(tmp_path / "plain")]) == 0
    assert main([*common, "--out", str(tmp_path / "sliced"), "--attention", "sliced", "--vae-slicing"]) == 0
    plain, sliced = records(tmp_path / "plain" / "records.jsonl"), records(tmp_path / "sliced" / "records.jsonl")
    assert all(r["params"]["attention"] == "sliced" and r["params"]["vae_slicing"] for r in sliced)
    assert all("attention" not in r["params"] for r in plain)
    for a, b in zip(plain, sliced):
        assert np.abs(np.asarray(load_image(a["path"])).astype(int) - np.asarray(load_image(b["path"]))).max() <= 2
    capsys.readouterr()
    assert main([*common, "--out", str(tmp_path / "plain"), "--resume", "--attention", "sliced"]) == 0
    assert "Cannot resume" not in capsys.readouterr().err, "speed options are not part of what a resume compares"


def _interrupt_after(monkeypatch, n: int) -> dict:
    """Ctrl-C once `n` items of a CLI batch have run (as run_batch sees it: KeyboardInterrupt from an item);
    set state["after"] = None to let the next batch run through."""
    import agent.batch as batch

    real, state = batch.process_item, {"after": n, "calls": 0}

    def process(*a, **k):
        state["calls"] += 1
        if state["after"] is not None and state["calls"] > state["after"]:
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(batch, "process_item", process)
    return state


def _fake_ray(monkeypatch) -> list:
    """--ray without a Ray cluster: check_ray passes, run_ray_batch runs the items in this process."""
    import agent.ray_batch as ray_batch
    from agent.batch import run_batch
    from agent.session import Session

    calls = []

    def run_ray_batch(settings, items, log, done, options, out, *, address=None, actors=None, on_record=None,
                      on_start=None, exit_on=frozenset()):
        calls.append(address)
        return run_batch(Session(settings), items, log, done, options, out, on_record=on_record)
    monkeypatch.setattr(ray_batch, "check_ray", lambda address: None)
    monkeypatch.setattr(ray_batch, "run_ray_batch", run_ray_batch)
    return calls


@pytest.mark.parametrize("ray", [False, True], ids=["in_process", "ray"])
def test_the_interrupted_batchs_hint_resumes_it_as_written(tiny_sd_path, tmp_path, capsys, monkeypatch, ray):
    import shlex

    from agent.cli import main

    src = tmp_path / "ray4.txt"
    src.write_text("two red circles\na blue square\na green triangle\n")
    out = tmp_path / "out dir"
    argv = ["batch", str(src), "--seeds", "3,5", "--cfg", "5", "--steps", "1", "--negative", "blurry, dark",
            "--limit", "2", "--rounds", "4", "--model", str(tiny_sd_path), "--safety", "off", "--out", str(out),
            "--no-progress"] + (["--ray"] if ray else [])
    ray_calls = _fake_ray(monkeypatch) if ray else []
    state = _interrupt_after(monkeypatch, 1)
    assert main(argv) == 130
    (hint,) = [line.split("continue with: ", 1)[1] for line in capsys.readouterr().err.splitlines()
               if "continue with: " in line]
    command = shlex.split(hint)
    assert command[:2] == ["imagent", "batch"]
    state["after"] = None
    assert main(command[1:]) == 0, capsys.readouterr().err      # as written: no "the sweep differs"
    assert ("--ray" in command) == ray
    for flag in ("--seeds", "--cfg", "--steps", "--negative", "--limit", "--rounds", "--out"):
        assert flag in command, flag                            # the options a resume compares, in the hint
    recs = records(out / "records.jsonl")
    assert sorted(r["key"] for r in recs) == sorted(f"L{n}/seed={s}/cfg=5/steps=1" for n in (1, 2) for s in (3, 5))
    assert all(r["status"] == "ok" and r["negative_prompt"] == "blurry, dark" for r in recs)
    assert len(ray_calls) == (2 if ray else 0)


def test_resume_takes_the_options_left_out_from_the_batchs_record(tiny_sd_path, tmp_path, capsys, monkeypatch):
    from agent.cli import main

    src = tmp_path / "ideas.txt"
    src.write_text("two red circles\na blue square\n")
    out = tmp_path / "out"
    state = _interrupt_after(monkeypatch, 1)
    assert main(["batch", str(src), "--seeds", "2", "--steps", "1", "--model", str(tiny_sd_path), "--safety", "off",
                 "--out", str(out), "--no-progress"]) == 130
    state["after"] = None
    capsys.readouterr()
    assert main(["batch", str(src), "--resume", "--out", str(out), "--seeds", "3", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "the sweep differs" in err and "seeds" in err, "an option given that differs is still refused"
    assert main(["batch", str(src), "--resume", "--out", str(out), "--no-progress"]) == 0, capsys.readouterr().err
    recs = records(out / "records.jsonl")
    assert [r["key"] for r in recs] == ["L1/seed=2/steps=1", "L2/seed=2/steps=1"]
    assert all(r["status"] == "ok" and r["seed"] == 2 and r["params"]["steps"] == 1 for r in recs)
    assert recs[1]["params"]["width"] == recs[0]["params"]["width"] == 32, "the batch's own (tiny) model"


@pytest.mark.parametrize("ray", [False, True], ids=["in_process", "ray"])
def test_resume_with_nothing_left_stops_without_ray_or_a_model(tiny_sd_path, tmp_path, capsys, monkeypatch, ray):
    from agent.cli import main
    from agent.session import Session

    src = tmp_path / "ideas.txt"
    src.write_text("two red circles\n")
    out = tmp_path / "out"
    assert main(["batch", str(src), "--seeds", "1,2", "--steps", "1", "--model", str(tiny_sd_path), "--safety",
                 "off", "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()

    def no(*a, **k):
        raise AssertionError("a finished batch's --resume loaded a model")
    monkeypatch.setattr(Session, "_build_backend", no)
    monkeypatch.setattr(Session, "scorer", no)
    monkeypatch.setitem(sys.modules, "ray", None)     # import ray -> ImportError: Ray is not started either
    argv = ["batch", str(src), "--resume", "--out", str(out), "--json", "--no-progress"] + (["--ray"] if ray else [])
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "nothing left" in captured.err
    summary = json.loads(captured.out)
    assert summary["total"] == summary["done_before"] == 2 and summary["ok"] == summary["failed"] == 0
    assert len(records(out / "records.jsonl")) == 2
