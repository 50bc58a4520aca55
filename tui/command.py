"""Make images in a conversation, in a terminal UI.

  imagent chat                         a new conversation
  imagent chat --resume ID             continue one, with its images (`imagent chat --list` shows ids)
  imagent chat --llm gpt-4o-mini       agent mode with this tool-calling model
  imagent chat --offline               the deterministic router even when an LLM is configured

Agent mode: with a tool-calling chat model (IMAGENT_LLM_MODEL, or --llm; IMAGENT_LLM_BASE_URL for
llama.cpp, vLLM, Ollama) the model reads your messages and decides what to do. Offline mode (the
default without a model): a plain message is an idea to draw, and slash commands do the rest.
Either way /help lists the commands; Esc cancels a running generation; Ctrl+P lists every action.
"""
from __future__ import annotations

import sys

from agent.commands.common import add_model_options, say, settings_from


def add_arguments(p) -> None:
    p.add_argument("--resume", metavar="ID", help="continue the conversation ID")
    p.add_argument("--list", action="store_true", help="list recent conversations and exit")
    p.add_argument("--llm", metavar="MODEL", help="tool-calling chat model (default: $IMAGENT_LLM_MODEL)")
    p.add_argument("--offline", action="store_true", help="no chat model: plain messages are ideas to draw")
    p.add_argument("--style", metavar="NAME", help="default style preset for new images")
    add_model_options(p)


def run(args) -> int:
    from agent.session import Session

    settings = settings_from(args).with_overrides(llm_model=args.llm, style=args.style)
    session = Session(settings)
    if args.list:
        chats = session.gallery.chats(limit=30)
        if not chats:
            print("No conversations yet. Start one with: imagent chat", file=sys.stderr)
        for c in chats:
            n = len((c.get("state") or {}).get("images") or [])
            say(f"{c['id']}  {n:>3} image(s)  {c.get('title') or '(empty)'}")  # a title is the user's text
        return 0
    from tui.app import make_app
    from tui.widgets import pick_image_widget

    image_widget = pick_image_widget()  # asks the terminal about graphics before Textual takes it over
    sys.setswitchinterval(0.001)  # the UI thread gets the GIL back sooner from a busy worker
    app = make_app(session, chat_id=args.resume, image_widget=image_widget, offline=args.offline)
    app.run()
    chat_id = app.controller.chat_id
    print(f"imagent: continue this conversation with: imagent chat --resume {chat_id}", file=sys.stderr)
    return int(app.return_code or 0)
