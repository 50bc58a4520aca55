"""The conversation of `imagent chat`: a chat controller over the session, in one of three modes.

  agent mode   a LangChain `create_agent` with a tool-calling chat model (any model that
               `agent.llm.build_chat_model` builds, or one passed in). Its tools are thin
               adapters over the controller's actions; the model chooses what to do.
  routed mode  a model configured on a server where it does not call tools (small local models
               on llama.cpp): each message is one constrained JSON choice of action and its
               argument (`RouteChoice`), run by the controller; if that call fails, the offline
               router takes the message, and says so.
  router mode  no chat model (the offline default): a deterministic router. A plain message is
               an idea to run; slash commands (`/help`) do the rest.
Agent mode is announced only after the server was seen calling a tool and taking its result back
(agent.llm_probe.tool_support, probed once per server and model and cached).
Slash commands work in both modes and never reach the model.

The package, by job (this module re-exports the names other code imports from `agent.chat`):
  controller  ChatController: construction and resume, mode, events and persistence, undo, the actions
  state       Defaults and ChatState, their JSON round trip, the checking of changed defaults
  slash       the slash commands: their help, and text -> one controller action call
  routing     routed mode and the offline router: text -> one RouteChoice -> one action
  agent_mode  agent mode: the LangChain tool-calling agent over the same actions
  modes       which mode a chat runs in, and why
  refine      pure refining of a structured prompt in words or fields, and rectangle masks
  replies     the longer replies as markdown, from data
"""
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
