"""imagent's Textual terminal UI."""
