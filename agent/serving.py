"""Serve an ASGI app with uvicorn on a free loopback port in a background thread (tests,
benchmarks, embedding): one helper for the HTTP service and the MCP server."""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager


@contextmanager
def uvicorn_in_thread(asgi_app, *, start_timeout: float = 10.0, what: str = "the HTTP server"):
    """Yields the base URL (http://127.0.0.1:PORT) once uvicorn has started; stops it on exit."""
    import socket

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(asgi_app, host="127.0.0.1", port=port, log_level="error"))
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
