"""`imagent serve --ray [--replicas N]`: the same FastAPI app (agent.server.make_app) served by Ray
Serve, one deployment with N replicas, each its own Session (one loaded model) and job queue.

Ray Serve's HTTP proxy takes the requests (on every node, at --host:--port) and spreads them over
the replicas; each replica answers exactly as `imagent serve` does (`serve.ingress`, the app built
on the replica by `__serve_build_asgi_app__`). GPU-aware as `batch --ray`: one GPU per replica
when the cluster has GPUs. What a replica holds stays on it: jobs (`POST /v1/runs` and
`/v1/jobs/...`) and `/metrics` are per replica (see docs/serve.md). Ray is imported only here.
"""
from __future__ import annotations

from agent.config import Settings
from agent.ray_batch import placement, ray_connection

APP_NAME = "imagent"


class ImagentReplica:
    """One Serve replica: one Session and the FastAPI app over it."""

    def __init__(self, settings: Settings, token: str | None, queue_size: int, cache: bool):
        self.settings, self.token, self.queue_size, self.cache = settings, token, queue_size, cache

    def __serve_build_asgi_app__(self):
        from agent.server import make_app
        from agent.session import Session

        settings = self.settings
        if settings.device.startswith("cuda:"):  # Ray gives this replica its GPU as the only visible one
            settings = settings.with_overrides(device="cuda")
        return make_app(Session(settings), token=self.token, queue_size=self.queue_size, cache=self.cache)


def application(ray, settings: Settings, *, token: str | None, queue_size: int, cache: bool,
                replicas: int | None = None):
    """(the bound Serve application, replicas, the resources each asks for)."""
    from ray import serve

    n, resources = placement(ray, settings, replicas)
    deployment = serve.deployment(
        name=APP_NAME, num_replicas=n, ray_actor_options=resources,
        # the app bounds its own queue (429 beyond --queue); SSE streams and status polls are cheap
        max_ongoing_requests=max(32, 4 * queue_size))(serve.ingress()(ImagentReplica))
    return deployment.bind(settings, token, queue_size, cache), n, resources


def start(ray, settings: Settings, *, host: str, port: int, token: str | None, queue_size: int, cache: bool,
          replicas: int | None = None):
    """Deploy on the connected Ray (returns once every replica is up): (replicas, resources)."""
    from ray import serve

    app, n, resources = application(ray, settings, token=token, queue_size=queue_size, cache=cache,
                                    replicas=replicas)
    serve.start(http_options={"host": host, "port": port})
    serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
    return n, resources


def serve_forever(settings: Settings, *, host: str, port: int, token: str | None, queue_size: int, cache: bool,
                  replicas: int | None = None, address: str | None = None, on_start=None) -> None:
    """Serve until interrupted (Ctrl-C or SIGTERM), then take the deployment down (and the local Ray,
    if it was started here)."""
    import signal
    import time

    def stop(signum, frame):
        raise KeyboardInterrupt

    with ray_connection(address) as ray:
        from ray import serve

        signal.signal(signal.SIGTERM, stop)
        try:
            n, resources = start(ray, settings, host=host, port=port, token=token, queue_size=queue_size,
                                 cache=cache, replicas=replicas)
            if on_start:
                on_start(n, resources)
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            serve.shutdown()
