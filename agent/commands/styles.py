"""List the style presets for --style, with a one-line description each.

Presets are JSON files in the package's prompts/styles/; add or override one by placing
NAME.json ({"name", "description", "positive" with {prompt}, "negative"}) in
$IMAGENT_HOME/prompts/styles/.
"""
from __future__ import annotations

import json

from agent.commands.common import say


def add_arguments(p) -> None:
    p.add_argument("--json", action="store_true", help="print the presets (with templates) as JSON")


def run(args) -> int:
    from agent.config import load_settings
    from agent.expand import load_styles

    styles = load_styles(load_settings().home)
    if args.json:
        print(json.dumps([vars(s) for s in styles.values()]))
        return 0
    width = max(len(n) for n in styles) + 2
    for name, style in styles.items():
        say(f"{name:<{width}}{style.description}")
    return 0
