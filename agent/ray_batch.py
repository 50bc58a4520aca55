"""`imagent batch FILE --ray [ADDRESS|auto]`: the batch's items on Ray actors, one loaded model each.

Every actor (`BatchWorker`) holds one Session, so one backend and one loaded model, and does items
one at a time with the same `agent.batch.process_item` as the in-process loop. The driver (the
`imagent batch` process) alone writes records.jsonl: it hands each idle actor the next item,
takes the records back as they finish (`ray.wait`) and appends them, so `--resume` works exactly
as without Ray (the keys already recorded are skipped, an image that landed without its record is
recovered, never redone). Records come in the order items finish, not the input order.

Placement: with GPUs in the cluster (and a diffusers backend), one actor per GPU (`num_gpus=1`;
Ray sets CUDA_VISIBLE_DEVICES, so each sees its GPU as cuda); without, one CPU actor holding
the cluster's CPUs (`--ray-actors N` shares them out). Actors need the output folder: they write
the PNGs into OUT/images themselves (on a cluster OUT must be a shared filesystem mounted at the
same path on every node); the gallery rows go to the gallery at the driver's IMAGENT_HOME path on
the node that made the image.

A worker that dies mid-item (killed, out of memory, a segfault) is replaced by a fresh actor and
its item is tried once more; a second death records the item as failed ("WorkerDied") and the
batch goes on. Nothing here imports Ray until a batch asks for it.
"""
from __future__ import annotations

import os
import re
import socket
import time
from collections import deque
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from agent.batch import (FATAL, BatchOptions, Item, RecordLog, Summary, _now, error_record, find_finished_images,
                         process_item)
from agent.config import Settings
from agent.errors import BackendError, Cancelled, ConfigError, ImagentError

RAY_MISSING = "Ray is not installed: pip install 'imagent[ray]'"
ATTEMPTS = 2                 # a dead worker's item: tried once more, then recorded as failed
CONNECT_TIMEOUT = 5.0        # seconds to reach HEAD:PORT before saying it is unreachable


def import_ray():
    """The ray module, or ConfigError (exit 2) saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(RAY_MISSING) from None
    return ray


class WorkerDied(BackendError):
    """The Ray worker running an item died (killed, out of memory, crashed) on every attempt."""


@contextmanager
def ray_connection(address: str | None):
    """Connected to Ray for the block: `None` starts a local Ray on this machine (or joins
    $RAY_ADDRESS); 'auto' the cluster started here with `ray start --head`; 'HOST:PORT' or
    'ray://HOST:PORT' that one. Already connected (ray.init by the caller): that connection, kept
    open afterwards. Yields the ray module; disconnects at the end when it connected."""
    ray = check_ray(address)
    if ray.is_initialized():
        yield ray
        return
    try:
        if address is None and not os.environ.get("RAY_ADDRESS"):
            ray.init(include_dashboard=False, configure_logging=False)
        else:
            ray.init(address=address, configure_logging=False)
    except ConnectionError as exc:
        where = address or os.environ.get("RAY_ADDRESS")
        raise ConfigError(f"Cannot connect to the Ray cluster at {where}: {_first_line(exc)}",
                          "Start it with `ray start --head` on the head node, or pass --ray HEAD:6379.") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def check_ray(address: str | None):
    """The ray module once Ray is installed and ADDRESS (if one) answers; else ConfigError (exit 2)."""
    ray = import_ray()
    if address and address != "auto":
        _check_reachable(address)
    return ray


def _check_reachable(address: str) -> None:
    """A clear error for a HOST:PORT nothing answers on, instead of Ray retrying for a minute."""
    hostport = address.split("://", 1)[-1].rsplit("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--ray '{address}' is not an address.", "Use --ray HEAD:6379, --ray auto or bare --ray.")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT).close()
    except OSError as exc:
        raise ConfigError(f"The Ray cluster at {address} is unreachable ({exc.strerror or exc}).",
                          "Start it with `ray start --head` on that machine, or check the address and port.") from None


def placement(ray, settings: Settings, actors: int | None) -> tuple[int, dict]:
    """(number of actors, the resources each asks for): one per GPU when the cluster has GPUs
    and the model runs on one, else CPU actors sharing the cluster's CPUs."""
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 1))
    on_gpu = gpus > 0 and "diffusers" in settings.backends and settings.device.split(":")[0] in ("auto", "cuda")
    if actors is not None and actors < 1:
        raise ConfigError(f"--ray-actors {actors} must be at least 1.")
    if on_gpu:
        n = actors or gpus
        if n > gpus:
            raise ConfigError(f"--ray-actors {n} needs {n} GPUs, but the Ray cluster has {gpus}.",
                              f"Use --ray-actors {gpus} or fewer, or add GPU nodes.")
        return n, {"num_gpus": 1, "num_cpus": 1}
    n = actors or 1
    if n > cpus:
        raise ConfigError(f"--ray-actors {n} needs {n} CPUs, but the Ray cluster has {cpus}.",
                          f"Use --ray-actors {cpus} or fewer, or add nodes.")
    return n, {"num_cpus": max(1, cpus // n)}


class BatchWorker:
    """A Ray actor: one Session (one backend, its model loaded once) doing batch items one at a time.

    `exit_on`: (key, attempt) pairs on which the worker process exits at once, as a kill would
    leave it (a test-only fault hook)."""

    def __init__(self, settings: Settings, options: BatchOptions, images_dir: str,
                 exit_on: frozenset = frozenset()):
        from agent.session import Session

        if settings.device.startswith("cuda:"):   # Ray gives this actor its GPU as the only visible one
            settings = settings.with_overrides(device="cuda")
        self.session = Session(settings)
        self.options = options
        self.images_dir = Path(images_dir)
        self.exit_on = exit_on

    def ready(self) -> dict:
        """Load the model now (a missing model fails here, before any item); where this actor runs."""
        import ray

        backend = self.session.backend()
        if hasattr(backend, "pipeline"):
            backend.pipeline()
        return {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(),
                "gpus": [str(g) for g in ray.get_gpu_ids()]}

    def run(self, item: Item, png: str | None, attempt: int) -> dict:
        if (item.key, attempt) in self.exit_on:
            os._exit(1)
        return process_item(self.session, item, Path(png) if png else None, self.options, self.images_dir)


def run_ray_batch(settings: Settings, items: list[Item], log: RecordLog, done: dict[str, dict],
                  options: BatchOptions, out: Path, *, address: str | None = None, actors: int | None = None,
                  on_record: Callable[[dict, int, int], None] | None = None,
                  on_start: Callable[[int, dict], None] | None = None,
                  exit_on: frozenset = frozenset()) -> Summary:
    """`agent.batch.run_batch` with the items on Ray actors (see the module's docstring).
    `on_start(actors, resources)` is called once the actors are placed."""
    with ray_connection(address) as ray:
        return _run(ray, settings, items, log, done, options, out, actors=actors, on_record=on_record,
                    on_start=on_start, exit_on=exit_on)


def _run(ray, settings, items, log, done, options, out, *, actors, on_record, on_start, exit_on) -> Summary:
    from ray.exceptions import RayActorError, RayTaskError

    todo = [it for it in items if it.key not in done]
    summary = Summary(total=len(items), done_before=len(items) - len(todo), records=str(log.path), out=str(out))
    images_dir = out / "images"
    pool: list = []
    t0 = time.perf_counter()
    try:
        if not todo:
            return summary
        n, resources = placement(ray, settings, actors)
        n = min(n, len(todo))
        worker = ray.remote(max_restarts=0, max_task_retries=0, **resources)(BatchWorker)

        def new_actor():
            return worker.remote(settings, options, str(images_dir), exit_on)

        pool = [new_actor() for _ in range(n)]
        try:
            ray.get([a.ready.remote() for a in pool])
        except RayTaskError as exc:
            raise _cause(exc) from None
        except RayActorError as exc:
            raise ConfigError(f"The Ray workers could not start imagent: {_first_line(exc)}",
                              "Install the same imagent (pip install 'imagent[ray]') on every node.") from None
        if on_start:
            on_start(n, resources)
        finished = {k: str(p) for k, p in find_finished_images(images_dir, {it.key for it in todo}).items()}
        queue, attempts, running = deque(todo), {}, {}

        def submit(slot: int) -> None:
            if queue:
                item = queue.popleft()
                attempts[item.key] = attempts.get(item.key, 0) + 1
                ref = pool[slot].run.remote(item, finished.get(item.key), attempts[item.key])
                running[ref] = (slot, item)

        for slot in range(n):
            submit(slot)
        count = 0
        while running:
            (ref,), _ = ray.wait(list(running), num_returns=1)
            slot, item = running.pop(ref)
            try:
                record = ray.get(ref)
            except RayTaskError as exc:  # only what process_item lets through: FATAL, Cancelled
                raise _cause(exc) from None
            except RayActorError as exc:  # the worker died: a fresh actor in its slot, the item once more
                pool[slot] = new_actor()
                if attempts[item.key] < ATTEMPTS:
                    found = find_finished_images(images_dir, {item.key})  # its PNG may have landed first
                    finished.update({k: str(p) for k, p in found.items()})
                    queue.appendleft(item)
                    submit(slot)
                    continue
                record = error_record(item, WorkerDied(
                    f"The Ray worker doing this item died {ATTEMPTS} times (last: {_death(exc)}).",
                    "See the worker's log (ray logs; out of memory?); redo it with --resume --retry-errors."))
                record["timings"], record["finished"] = {"seconds": 0.0}, _now()
            if attempts[item.key] > 1:
                record["attempts"] = attempts[item.key]
            log.append(record)
            summary.add(record)
            count += 1
            if on_record:
                on_record(record, count, len(todo))
            submit(slot)
    except (Cancelled, KeyboardInterrupt):
        summary.cancelled = True
    finally:
        for actor in pool:
            ray.kill(actor)
        summary.seconds = round(time.perf_counter() - t0, 3)
    return summary


def _cause(exc) -> BaseException:
    """The imagent error a Ray task failed with (FATAL: the batch stops), or a plain one."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, (*FATAL, Cancelled, ImagentError)):
        return cause
    return ImagentError(f"A Ray worker failed: {_first_line(exc)}",
                        "Run again with IMAGENT_DEBUG=1, or see the worker's log (ray logs).")


def _death(exc) -> str:
    """How a Ray worker died, in one short line (Ray's own message is a paragraph)."""
    text = " ".join(str(exc).split())
    found = re.search(r"Worker exit type: (\S+) Worker exit detail: (.*?\.)(?: |$)", text)
    return f"{found[1]}, {found[2]}" if found else text[:200]


def _first_line(exc) -> str:
    text = str(getattr(exc, "cause", None) or exc).strip()
    return text.splitlines()[-1] if text else type(exc).__name__

