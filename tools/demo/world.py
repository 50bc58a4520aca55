"""The demo world in one namespace: the grammar, sampling and drawing modules' public names.

The demo world is coloured shapes on a plain background, a caption grammar and a renderer:
- `tools.demo.grammar`   vocabulary, Scene and Group, `parse` (the grammar is in its docstring)
- `tools.demo.sampling`  random scenes, one-way-wrong captions (`perturb`, `distractors`), prompt sets, `sample`
- `tools.demo.drawing`   layouts, `draw`, `render`, the box-layout images of the demo ControlNet

Importers read them here (`from tools.demo import world as W; W.render(...)`).
"""
from __future__ import annotations

from tools.demo.drawing import Layout, Placed, apart, boxes_image, draw, free_spot, layout, layout_image, render
from tools.demo.grammar import (BACKGROUNDS, CATEGORIES, COLOURS, MAX_OBJECTS, NUMBERS, RELATIONS, SHAPES, SIZE,
                                STYLES, TALL_WIDTH, VOCAB_WORDS, WORD_TO_NUMBER, Group, Scene, parse, validate)
from tools.demo.sampling import (COMPOSITIONAL, compositional_prompt_set, distractors, perturb, prompt_set, sample,
                                 sample_scene)

__all__ = ["BACKGROUNDS", "CATEGORIES", "COLOURS", "MAX_OBJECTS", "NUMBERS", "RELATIONS", "SHAPES", "SIZE", "STYLES",
           "TALL_WIDTH", "VOCAB_WORDS", "WORD_TO_NUMBER", "Group", "Scene", "parse", "validate", "Layout", "Placed",
           "apart", "boxes_image", "draw", "free_spot", "layout", "layout_image", "render", "COMPOSITIONAL",
           "compositional_prompt_set", "distractors", "perturb", "prompt_set", "sample", "sample_scene"]
