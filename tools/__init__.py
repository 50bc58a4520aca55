"""imagent's pixel tools: one capability per module behind a small contract.

`tools` never imports `agent`, LangChain, Textual or MCP.
"""
