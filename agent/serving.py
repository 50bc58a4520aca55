"""Serve an ASGI app with uvicorn on a free loopback port in a background thread (tests,
benchmarks, embedding): one helper for the HTTP service and the MCP server."""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager


def log_config() -> dict:
    """uvicorn's logging setup with its access log ("GET /healthz 200") on stderr beside its other
    messages: uvicorn sends it to stdout, which holds only results in imagent."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    for handler in config.get("handlers", {}).values():
        if handler.get("stream") == "ext://sys.stdout":
            handler["stream"] = "ext://sys.stderr"
    return config


@contextmanager
def uvicorn_in_thread(asgi_app, *, start_timeout: float = 10.0, what: str = "the HTTP server"):
    """Yields the base URL (http://127.0.0.1:PORT) once uvicorn has started; stops it on exit."""
    import socket

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(asgi_app, host="127.0.0.1", port=port, log_level="error",
                                          log_config=log_config()))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + start_timeout
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError(f"{what} did not start on 127.0.0.1:{port}")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
