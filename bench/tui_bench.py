"""`imagent chat` responsiveness benchmark (issue 6). Prints figures; asserts nothing.

Both figures are taken the way a user meets them: `imagent chat` runs in a subprocess on a
pseudo-terminal (120x36, TERM=xterm-256color) and the bench reads what it draws.

  launch  time from starting the process to the input's placeholder on screen (an interactive
          prompt), over --launches runs (goal <= 1.5 s on the 2-core dev machine).
  echo    time from writing a key to the pty to that character appearing in the drawn input,
          while a generation runs in the background (a tiny random-weight Stable Diffusion,
          500 steps x 4 candidates, so the CPU is busy the whole time), p50/p95 over --presses
          (goal p95 <= 50 ms). Also: the same while the models load (the first message imports
          torch and diffusers and loads the pipeline in the worker), and idle, for reference.

  python bench/tui_bench.py                  # both, tiny model built in a temp folder
  python bench/tui_bench.py --model PATH     # echo with a real diffusers model in the background
  python bench/tui_bench.py --only launch

The bench answers the two terminal queries a real terminal answers at start (device attributes,
cell size), so textual-image's graphics detection does not wait for its timeouts.
"""
from __future__ import annotations

import argparse
import fcntl
import os
import random
import re
import select
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ANSI = re.compile(r"\x1b\[[0-9;?<>=]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[PX^_].*?\x1b\\|\x1b[()][A-Z0-9]|\x1b[=>]")
COLS, ROWS = 120, 36


class Terminal:
    """`imagent chat` on a pty; a reader thread keeps everything drawn (escapes stripped) with times."""

    def __init__(self, env: dict, args: list[str]):
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, COLS * 10, ROWS * 20))
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "chat", *args], stdin=slave, stdout=slave,
                                     stderr=slave, env=env, cwd=str(ROOT), start_new_session=True, close_fds=True)
        os.close(slave)
        self.fd = master
        self.text = ""
        self.cond = threading.Condition()
        self.alive = True
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        raw = ""
        while self.alive:
            ready, _, _ = select.select([self.fd], [], [], 0.05)
            if not ready:
                continue
            try:
                chunk = os.read(self.fd, 65536).decode("utf-8", "replace")
            except OSError:
                break
            raw += chunk
            if "\x1b[c" in chunk:           # device attributes: a VT220 without sixel
                os.write(self.fd, b"\x1b[?62;22c")
            if "\x1b[16t" in chunk:         # cell size in pixels
                os.write(self.fd, b"\x1b[6;20;10t")
            with self.cond:
                self.text += ANSI.sub("", raw[-65536:] if len(raw) > 65536 else raw)
                raw = ""
                self.cond.notify_all()

    def mark(self) -> int:
        with self.cond:
            return len(self.text)

    def wait_for(self, needle: str, since: int = 0, timeout: float = 30.0, regex: bool = False) -> float:
        """Seconds (perf_counter) when `needle` (a regex with `regex`) appeared in what was drawn
        after offset `since`."""
        deadline = time.perf_counter() + timeout
        pattern = re.compile(needle if regex else re.escape(needle))
        with self.cond:
            while not pattern.search(self.text, since):
                left = deadline - time.perf_counter()
                if left <= 0 or self.proc.poll() is not None:
                    Path(tempfile.gettempdir(), "tui_bench_screen.txt").write_text(self.text)
                    raise TimeoutError(f"'{needle}' did not appear (exit code {self.proc.poll()}); "
                                       f"last output: {self.text[-400:]!r}")
                self.cond.wait(left)
            return time.perf_counter()

    def send(self, data: str) -> float:
        t = time.perf_counter()
        os.write(self.fd, data.encode())
        return t

    def close(self) -> None:
        try:
            self.send("\x11")  # ctrl+q
            self.proc.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.alive = False
        os.close(self.fd)


def environment(home: str, model: str | None, clip: str | None) -> dict:
    env = dict(os.environ, IMAGENT_HOME=home, TERM="xterm-256color", COLUMNS=str(COLS), LINES=str(ROWS),
               IMAGENT_SAFETY="off", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.pop("IMAGENT_LLM_MODEL", None)
    if model:
        env["IMAGENT_MODEL"] = model
    if clip:
        env["IMAGENT_CLIP"] = clip
    return env


def bench_launch(n: int, bytecode_cache: bool) -> list[float]:
    """Launch times. With `bytecode_cache`, compiled modules are cached (in a temp folder, after
    one untimed warm-up launch) as in any normal install; without it every module is compiled at
    each start (PYTHONDONTWRITEBYTECODE=1, as some sandboxes set)."""
    times = []
    with tempfile.TemporaryDirectory(prefix="imagent-tui-bench-pyc-") as pyc:
        for i in range(n + (1 if bytecode_cache else 0)):
            with tempfile.TemporaryDirectory(prefix="imagent-tui-bench-") as home:
                env = environment(home, None, None)
                if bytecode_cache:
                    env.pop("PYTHONDONTWRITEBYTECODE", None)
                    env["PYTHONPYCACHEPREFIX"] = pyc
                else:
                    env["PYTHONDONTWRITEBYTECODE"] = "1"
                term = Terminal(env, [])
                try:
                    t = term.wait_for("Describe an image") - term.t0
                finally:
                    term.close()
                if not (bytecode_cache and i == 0):
                    times.append(t)
    return times


def tiny_models(folder: Path) -> tuple[str, str]:
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_models import save_tiny_clip, save_tiny_sd

    return str(save_tiny_sd(folder / "tiny-sd")), str(save_tiny_clip(folder / "tiny-clip"))


def bench_echo(presses: int, model: str | None, clip: str | None) -> dict:
    with tempfile.TemporaryDirectory(prefix="imagent-tui-bench-") as home:
        if model is None:
            model, clip = tiny_models(Path(home) / "models")
        term = Terminal(environment(home, model, clip), ["--offline"])
        try:
            term.wait_for("Describe an image")
            time.sleep(1.0)  # keys sent while the terminal is still being set up can arrive as cooked input
            for command in ("/steps 500", "/candidates 4", "/rounds 10"):
                since = term.mark()
                term.send(command + "\r")
                term.wait_for("ready ·", since)
            since = term.mark()
            term.send("two red circles\r")
            term.wait_for("working", since)
            loading = type_keys(term, presses // 4)  # while torch, diffusers and the models load
            done_loading = "round 1/10" in term.text[since:]
            term.wait_for("round 1/10", since, timeout=300)
            term.wait_for(r"[1-9]%", since, timeout=300, regex=True)  # the step bar moves: diffusion is running
            busy = type_keys(term, presses, clear_first=True)
            since = term.mark()
            t = term.send("\x1b")
            cancel_s = term.wait_for("ready", since, timeout=60) - t
            still_running = "Cancelled" in term.text[since:]  # the run was stopped by Esc, not finished
            idle = type_keys(term, presses // 2, clear_first=True)  # Esc put the idea back in the input
        finally:
            term.close()
    return {"busy": percentiles(busy), "idle": percentiles(idle), "loading": percentiles(loading),
            "loading_finished_while_typing": done_loading, "generation_still_running": still_running,
            "cancel_to_ready_s": round(cancel_s, 3)}


def type_keys(term: Terminal, presses: int, *, clear_first: bool = False) -> list[float]:
    """Type `presses` letters 10-40 ms apart (clearing the input every 40, untimed); echo latencies.
    A key counts as echoed when the input's line shows everything typed so far."""
    rng = random.Random(0)
    latencies, typed = [], ""
    if clear_first:
        since = term.mark()
        term.send("\x15")  # ctrl+u: start from an empty input
        term.wait_for("Describe an image", since)
    for i in range(presses):
        if len(typed) >= 40:
            since = term.mark()
            term.send("\x15")
            term.wait_for("Describe an image", since)
            typed = ""
        ch = "abcdefghij"[i % 10]
        typed += ch
        since = term.mark()
        t = term.send(ch)
        latencies.append(term.wait_for("▊  " + typed, since) - t)
        time.sleep(rng.uniform(0.01, 0.04))
    return latencies


def percentiles(latencies: list[float]) -> dict:
    ms = sorted(x * 1000 for x in latencies)
    return {"presses": len(ms), "p50_ms": round(statistics.median(ms), 1),
            "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 1), "max_ms": round(ms[-1], 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["launch", "echo"])
    ap.add_argument("--launches", type=int, default=5)
    ap.add_argument("--presses", type=int, default=200)
    ap.add_argument("--model", help="diffusers model for the background generation (default: a tiny random one)")
    ap.add_argument("--clip", help="CLIP model for scoring with --model (default: $IMAGENT_CLIP)")
    a = ap.parse_args()
    print(f"machine: {os.cpu_count()} CPU cores, Python {sys.version.split()[0]}")
    if a.only in (None, "launch"):
        for cached in (True, False):
            times = bench_launch(a.launches, cached)
            print(f"launch to interactive prompt ({'bytecode cached' if cached else 'no bytecode cache'}): "
                  f"median {statistics.median(times):.3f} s, max {max(times):.3f} s over {len(times)} runs "
                  f"(goal <= 1.5 s): " + ", ".join(f"{t:.3f}" for t in times))
        print(f"load average: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if a.only in (None, "echo"):
        r = bench_echo(a.presses, a.model, a.clip)
        b, i = r["busy"], r["idle"]
        print(f"key echo during a generation: p50 {b['p50_ms']} ms, p95 {b['p95_ms']} ms, max {b['max_ms']} ms "
              f"over {b['presses']} presses (goal p95 <= 50 ms); generation still running at the end: "
              f"{r['generation_still_running']}; Esc to ready: {r['cancel_to_ready_s']} s")
        print(f"key echo when idle (reference): p50 {i['p50_ms']} ms, p95 {i['p95_ms']} ms, max {i['max_ms']} ms "
              f"over {i['presses']} presses")
        lo = r["loading"]
        print(f"key echo while the models load (first message): p50 {lo['p50_ms']} ms, p95 {lo['p95_ms']} ms, "
              f"max {lo['max_ms']} ms over {lo['presses']} presses"
              + (" (loading finished before the last press)" if r["loading_finished_while_typing"] else ""))
        print(f"load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
