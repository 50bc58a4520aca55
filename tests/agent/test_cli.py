"""The command-line front door (agent/cli.py): a closed output pipe ends every command quietly."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli import EXIT_CLOSED_PIPE, main

ROOT = Path(__file__).resolve().parents[2]


def _fill_gallery(tmp_path, n=5):
    from agent.config import load_settings
    from agent.store import Gallery

    gallery = Gallery(load_settings().gallery_path)
    record = {"model": "m", "backend": "diffusers", "width": 32, "height": 32, "seed": 7,
              "params": {"prompt": "two red circles", "negative_prompt": "", "steps": 1, "cfg": 7.0}}
    run = gallery.start_run("generate")
    for i in range(n):
        gallery.add_image(run, tmp_path / f"image-{i}.png", record, score=0.3)


def _start(argv, stdout):
    return subprocess.Popen([sys.executable, "-m", "agent.cli", *argv], cwd=ROOT, stdout=stdout,
                            stderr=subprocess.PIPE, env=dict(os.environ, OMP_NUM_THREADS="1"))


@pytest.mark.parametrize("argv", [["gallery"], ["gallery", "--json"], ["gallery", "--runs"], ["styles"]])
def test_output_to_a_pipe_closed_before_it_is_written_ends_quietly(imagent_home, tmp_path, argv):
    """The reader is gone before the command writes anything: every write fails (EPIPE)."""
    _fill_gallery(tmp_path)
    read_end, write_end = os.pipe()
    proc = _start(argv, write_end)
    os.close(write_end)
    os.close(read_end)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == EXIT_CLOSED_PIPE, err
    assert err == ""


def test_gallery_piped_to_head_ends_quietly(imagent_home, tmp_path):
    """`imagent gallery | head -1`: the reader takes one line and goes; depending on the timing the
    rest is already in the pipe (exit 0) or meets the closed pipe (exit 141), never an error."""
    _fill_gallery(tmp_path)
    for _ in range(3):
        proc = _start(["gallery"], subprocess.PIPE)
        assert proc.stdout.readline().split()[:2] == [b"ID", b"DATE"]
        proc.stdout.close()
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=120) in (0, EXIT_CLOSED_PIPE), err
        assert "internal error" not in err and "Traceback" not in err and "BrokenPipe" not in err


class _ClosedPipe:
    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self):
        raise BrokenPipeError(32, "Broken pipe")


def test_a_broken_pipe_is_not_reported_as_a_bug(imagent_home, tmp_path, monkeypatch, capsys):
    _fill_gallery(tmp_path)
    for argv in (["gallery"], ["gallery", "--json"], ["styles"]):
        monkeypatch.setattr(sys, "stdout", _ClosedPipe())
        assert main(argv) == EXIT_CLOSED_PIPE
        monkeypatch.undo()
        assert capsys.readouterr().err == ""
