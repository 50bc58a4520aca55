"""Serve imagent over HTTP as an OpenAI-compatible images API (plus the critique loop as jobs).

  imagent serve                                  http://127.0.0.1:8000 (loopback, no token needed)
  imagent serve --host 0.0.0.0 --token SECRET    reachable from other machines: a token is required
  imagent serve --queue 4 --no-cache --safety strict
  imagent serve --ray --replicas 2               the same API on Ray Serve, two replicas (pip install 'imagent[ray]')
  imagent serve --ray auto --host 0.0.0.0 --token SECRET    on the cluster started with `ray start --head`

Endpoints: POST /v1/images/generations, POST /v1/images/edits (OpenAI's formats, with imagent
extras seed, steps, cfg, negative_prompt, style), POST /v1/runs (the critique loop as a job),
GET/DELETE /v1/jobs/ID, GET /v1/jobs/ID/events (server-sent events), GET /v1/images/ID (the
PNG), /v1/models, /healthz, /metrics (Prometheus). Point any OpenAI client at it:
  OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="TOKEN or anything")
Model work runs one request at a time; at most --queue requests wait or run, more get 429.
An identical request with an explicit seed is answered from the gallery (--no-cache: never).
The token can also come from $IMAGENT_SERVE_TOKEN. See docs/serve.md.
With --ray the app runs as a Ray Serve deployment of --replicas N replicas (default: one per GPU,
else 1), each with its own model and queue; Ray Serve's proxy listens on --host:--port. Jobs
(/v1/runs, /v1/jobs) and /metrics are per replica.
"""
from __future__ import annotations

import os

from agent.commands.common import add_model_options, note, settings_from


def add_arguments(p) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, loopback only)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument("--token", help="bearer token clients must send (required unless the host is loopback; "
                                   "default: $IMAGENT_SERVE_TOKEN)")
    p.add_argument("--queue", type=int, default=8, metavar="N",
                   help="at most N requests waiting or running; more get 429 (default: 8)")
    p.add_argument("--no-cache", action="store_true",
                   help="always generate, even for a seeded request identical to one in the gallery")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn's log level (default: info)")
    add_model_options(p)
    g = p.add_argument_group("scale-out on Ray Serve (pip install 'imagent[ray]')")
    g.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS|auto",
                   help="serve with Ray Serve: bare --ray starts a local Ray (or joins $RAY_ADDRESS), auto joins "
                        "the cluster started here with `ray start --head`, HEAD:6379 that one")
    g.add_argument("--replicas", type=int, metavar="N",
                   help="replicas, each with its own loaded model (default: one per GPU, else 1)")


def run(args) -> int:
    from agent.errors import InvalidInput
    from agent.server import check_bind, make_app, serve
    from agent.session import Session

    token = args.token or os.environ.get("IMAGENT_SERVE_TOKEN") or None
    check_bind(args.host, token)  # before anything is built
    if not 0 < args.port < 65536:
        raise InvalidInput(f"--port {args.port} is out of range.", "Use 1 to 65535.")
    if args.queue < 1:
        raise InvalidInput(f"--queue {args.queue} is out of range.", "Use 1 or more.")
    if args.replicas is not None and not args.ray:
        raise InvalidInput("--replicas needs --ray.", "Add --ray (or --ray auto on a cluster).")
    settings = settings_from(args)
    if args.ray:
        return _serve_on_ray(args, settings, token)
    app = make_app(Session(settings), token=token, queue_size=args.queue, cache=not args.no_cache)
    note(f"imagent serve: http://{args.host}:{args.port}/v1 (OpenAI images API); backend {settings.backend}, "
         f"model {settings.model}, "
         f"safety {settings.safety}, queue {args.queue}, cache {'off' if args.no_cache else 'on'}, "
         f"token {'required' if token else 'off (loopback)'}")
    serve(app, args.host, args.port, log_level=args.log_level)
    return 0


def _serve_on_ray(args, settings, token) -> int:
    from agent.ray_batch import check_ray
    from agent.ray_serve import serve_forever

    address = None if args.ray == "local" else args.ray
    check_ray(address)

    def started(replicas, resources):
        each = ", ".join(f"{v} {k.removeprefix('num_').upper().rstrip('S')}" for k, v in resources.items())
        note(f"imagent serve: http://{args.host}:{args.port}/v1 on Ray Serve, {replicas} replica(s) with {each} "
             f"each; backend {settings.backend}, model {settings.model}, safety {settings.safety}, queue "
             f"{args.queue} per replica, cache {'off' if args.no_cache else 'on'}, "
             f"token {'required' if token else 'off (loopback)'}")

    serve_forever(settings, host=args.host, port=args.port, token=token, queue_size=args.queue,
                  cache=not args.no_cache, replicas=args.replicas, address=address, on_start=started)
    return 0
