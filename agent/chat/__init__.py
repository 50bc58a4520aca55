"""The chat, split by job; this package re-exports the names other code imports from `agent.chat`."""
from __future__ import annotations

from agent.chat.controller import (COMMAND_HELP, COMMANDS, MAX_RECURSION, ROUTE_ACTIONS, ChatController, Listener,
                                   RouteChoice, change_of, checklist_markdown, explicit_route, help_text, idea_of,
                                   offline_route)
from agent.chat.refine import apply_fields, rect_mask, refine_spec
from agent.chat.state import SIZE_RE, ChatState, Defaults

__all__ = ["COMMAND_HELP", "COMMANDS", "MAX_RECURSION", "ROUTE_ACTIONS", "SIZE_RE", "ChatController", "ChatState",
           "Defaults", "Listener", "RouteChoice", "apply_fields", "change_of", "checklist_markdown", "explicit_route",
           "help_text", "idea_of", "offline_route", "rect_mask", "refine_spec"]
