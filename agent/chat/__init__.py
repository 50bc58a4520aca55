"""The chat, split by job; this package re-exports the names other code imports from `agent.chat`."""
from __future__ import annotations

from agent.chat.agent_mode import MAX_RECURSION, ToolAgent
from agent.chat.controller import ChatController, Listener
from agent.chat.replies import checklist_markdown
from agent.chat.refine import apply_fields, rect_mask, refine_spec
from agent.chat.routing import ROUTE_ACTIONS, RouteChoice, Router, change_of, explicit_route, idea_of, offline_route
from agent.chat.slash import COMMAND_HELP, COMMANDS, SlashCommands, help_text
from agent.chat.state import SIZE_RE, ChatState, Defaults

__all__ = ["COMMAND_HELP", "COMMANDS", "MAX_RECURSION", "ROUTE_ACTIONS", "SIZE_RE", "ChatController", "ChatState",
           "Defaults", "Listener", "RouteChoice", "Router", "SlashCommands", "ToolAgent", "apply_fields", "change_of",
           "checklist_markdown", "explicit_route", "help_text", "idea_of", "offline_route", "rect_mask", "refine_spec"]
