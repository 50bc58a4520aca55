"""A job queue with ONE worker thread: every piece of pixel work a server accepts runs through it,
in order, so concurrent requests queue up instead of exhausting GPU/CPU memory.

A job is a callable `fn(call) -> dict` plus bookkeeping (id, status, progress, result, error);
`call` is the job's own agent.events.Call: its events feed the job's ProgressTracker, and
cancelling the job sets its cancel only (another job's run is untouched).
Synchronous requests submit a job and wait for it; "start a job" requests return the id at once
and the caller polls `snapshot()`. Nothing starts at construction; the thread starts with the
first job. Used by agent.mcp_server; free of MCP so it is testable on its own.
"""
from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from agent.capabilities import error_payload
from agent.errors import Cancelled, InvalidInput
from agent.events import Call, Event, Phase, RoundStarted, Step

STATUSES = ("queued", "running", "done", "failed", "cancelled")


class ProgressTracker:
    """Folds a call's events into one monotonic count (diffusion steps restart for every image or
    round; the count keeps growing) and a line saying where the work is."""

    def __init__(self):
        self.lock = threading.Lock()
        self.overall = 0
        self.total: int | None = None
        self.phase = ""
        self.step = (0, 0)
        self._offset = 0
        self._ticks = 0

    def __call__(self, event: Event) -> None:
        with self.lock:
            match event:
                case Step(done=done, total=total):
                    last_done, last_total = self.step
                    if done < last_done:       # a new image or round started: keep counting up
                        self._offset += last_total
                    self.step = (done, total)
                    self.overall = self._offset + done
                case RoundStarted(round=r, rounds=rounds):
                    self.phase = f"round {r}/{rounds}"
                case Phase(label=label):
                    self.phase = label
                case _:
                    return
            self._ticks += 1

    def snapshot(self) -> dict:
        with self.lock:
            done, total = self.step
            parts = [p for p in (self.phase, f"step {done}/{total}" if total else "") if p]
            # the steps known so far: the images finished plus the one in progress (grows per image)
            known = self._offset + total if total else self.total
            return {"progress": self.overall, "total": known, "message": ", ".join(parts),
                    "ticks": self._ticks}


@dataclass
class Job:
    id: str
    tool: str
    arguments: dict
    created: float = field(default_factory=time.time)
    status: str = "queued"
    started: float | None = None
    finished: float | None = None
    result: dict | None = None
    error: dict | None = None
    tracker: ProgressTracker = field(default_factory=ProgressTracker)
    call: Call = field(init=False)      # the job's own control: its sink is the tracker
    future: Future | None = None
    done_event: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self):
        self.call = Call(sink=self.tracker)

    def snapshot(self, *, with_result: bool = True) -> dict:
        out = {"job_id": self.id, "tool": self.tool, "status": self.status, "created": self.created,
               "started": self.started, "finished": self.finished, "progress": self.tracker.snapshot()}
        if self.started:
            out["seconds"] = round((self.finished or time.time()) - self.started, 3)
        if self.error is not None:
            out["error"] = self.error
        if with_result and self.result is not None:
            out["result"] = self.result
        return out


class JobQueue:
    """One worker thread; jobs run in submission order; each has its own Call to cancel it by."""

    def __init__(self, *, keep: int = 200):
        self._keep = keep
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None

    def submit(self, tool: str, arguments: dict, fn: Callable[[Call], dict]) -> Job:
        job = Job(id=uuid.uuid4().hex[:12], tool=tool, arguments=arguments)
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="imagent-work")
            self._jobs[job.id] = job
            self._forget_old()
            job.future = self._executor.submit(self._work, job, fn)
        job.future.add_done_callback(lambda f: self._on_done(job, f))
        return job

    def _work(self, job: Job, fn) -> dict:
        job.status, job.started = "running", time.time()
        try:
            job.call.check("The job was cancelled.")
            job.result = fn(job.call)
            job.status = "done"
        except Cancelled as exc:
            job.status, job.error = "cancelled", error_payload(exc)["error"]
        except BaseException as exc:  # recorded, never crashes the worker or the server
            job.status, job.error = "failed", error_payload(exc)["error"]
        finally:
            job.finished = time.time()
        return job.result or {}

    def _on_done(self, job: Job, future: Future) -> None:
        if future.cancelled():  # cancelled while queued: never ran
            job.status, job.finished = "cancelled", time.time()
            job.error = {"type": "Cancelled", "message": "The job was cancelled before it started.", "hint": None}
        job.done_event.set()

    def _forget_old(self) -> None:
        finished = [j for j in self._jobs.values() if j.status in {"done", "failed", "cancelled"}]
        for j in sorted(finished, key=lambda j: j.created)[:max(0, len(self._jobs) - self._keep)]:
            self._jobs.pop(j.id, None)

    def get(self, job_id: str) -> Job:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise InvalidInput(f"There is no job '{job_id}'.",
                               "Use the job_id that start_job returned; finished jobs are kept for a while only.")
        return job

    def jobs(self) -> list[Job]:
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j.created)

    def position(self, job: Job) -> int:
        """How many jobs run or wait before this one (0 = running or next)."""
        with self._lock:
            return sum(1 for j in self._jobs.values()
                       if j.created < job.created and j.status in {"queued", "running"}) if job.status == "queued" else 0

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued job, or ask the running one to stop at its next step."""
        job = self.get(job_id)
        if job.status == "queued" and job.future is not None and job.future.cancel():
            return job
        job.call.stop()  # running: it stops at its next step; between the checks above: before it starts
        return job

    def wait(self, job: Job, timeout: float | None = None) -> bool:
        return job.done_event.wait(timeout)

    def shutdown(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            for job in self.jobs():
                if job.status == "queued" and job.future is not None:
                    job.future.cancel()
                job.call.stop()
            executor.shutdown(wait=True)


__all__ = ["JobQueue", "Job", "ProgressTracker", "STATUSES", "CancelledError"]
