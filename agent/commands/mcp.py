"""Serve imagent to other agents over MCP (Model Context Protocol).

  imagent mcp                                   stdio (for Claude Desktop, Cursor, MCP inspectors)
  imagent mcp --transport http --port 8765      streamable HTTP at http://127.0.0.1:8765/mcp
  imagent mcp --inputs ~/pics --outputs ~/imagent-out --safety strict

Tools: run, generate, edit, upscale, expand, check_safety, score, list_images, get_image, and
start_job / job_status / cancel_job / list_jobs for background runs. Results carry a PNG preview,
the seed and full metadata, and a resource imagent://images/ID with the full file.

Files a client names are read only from --inputs (default $IMAGENT_HOME/inputs) and --outputs
(`..` and symlinks are resolved first); gallery images are reachable by their id. Results are
written only to --outputs (default $IMAGENT_HOME/outputs). Work that runs a model
goes through one queue, one call at a time. The safety policy applies as on the command line.
HTTP binds to 127.0.0.1 by default; another --host exposes the server without authentication.

A client config (stdio):  {"command": "imagent", "args": ["mcp"]}
"""
from __future__ import annotations


from agent.commands.common import add_model_options, note, settings_from


def add_arguments(p) -> None:
    p.add_argument("--transport", choices=["stdio", "http"], default="stdio",
                   help="stdio (default) or streamable HTTP")
    p.add_argument("--host", default="127.0.0.1", help="HTTP address to bind (default: 127.0.0.1, loopback only)")
    p.add_argument("--port", type=int, default=8765, help="HTTP port (default: 8765)")
    p.add_argument("--inputs", metavar="DIR", help="folder clients may read images from (default: $IMAGENT_HOME/inputs)")
    p.add_argument("--outputs", metavar="DIR", help="folder results are written to (default: $IMAGENT_HOME/outputs)")
    add_model_options(p)


def run(args) -> int:
    from agent.capabilities import PathPolicy
    from agent.errors import ConfigError, InvalidInput
    from agent.session import Session

    try:
        from agent.mcp_server import build_server, serve_http, serve_stdio
    except ImportError as exc:  # mcp 1.x (e.g. pulled in by langchain-mcp-adapters) has no mcp_types
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = f"mcp {version('mcp')} is installed"
        except PackageNotFoundError:
            found = "the MCP SDK is not installed"
        raise ConfigError(f"imagent mcp needs the MCP Python SDK 2.x; {found} ({exc}).",
                          "pip install 'mcp>=2' 'mcp-types>=2' in imagent's environment; keep "
                          "langchain-mcp-adapters (which needs mcp<2) in your LangChain app's own environment.") from None

    settings = settings_from(args)
    if not 0 < args.port < 65536:
        raise InvalidInput(f"--port {args.port} is out of range.", "Use 1 to 65535.")
    paths = PathPolicy.confined(args.inputs or settings.home / "inputs", args.outputs or settings.outputs_dir)
    app = build_server(Session(settings), paths)
    where = "stdio" if args.transport == "stdio" else f"http://{args.host}:{args.port}/mcp"
    note(f"imagent mcp: serving on {where}; model {settings.model}, safety {settings.safety}; "
         f"inputs {paths.inputs[0]}, outputs {paths.outputs}")
    if args.transport == "stdio":
        serve_stdio(app)
    else:
        serve_http(app, args.host, args.port)
    return 0
