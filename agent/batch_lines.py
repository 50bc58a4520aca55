"""The batch's input: the line model, reading .txt/.jsonl/.tsv files, parameter sweeps and the planned items.

The formats and the sweep grid are described in agent.batch's docstring; agent.batch re-exports
every name here.
"""
from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agent.errors import InvalidInput
from tools.limits import IDEA_CHARS, MAX_CONTROLS, MAX_LORAS, PROMPT_CHARS, bounds

FORMATS = ("txt", "jsonl", "tsv")
MAX_GRID = 100_000


# -- input ----------------------------------------------------------------------------------------
class LineParams(BaseModel):
    """The parameters one input line may carry (JSONL keys, TSV columns)."""

    model_config = ConfigDict(extra="forbid")

    idea: str | None = Field(None, min_length=1, max_length=IDEA_CHARS)
    prompt: str | None = Field(None, min_length=1, max_length=PROMPT_CHARS)
    negative: str = Field("", max_length=PROMPT_CHARS)
    seed: int | None = Field(None, **bounds("seed"))
    steps: int | None = Field(None, **bounds("steps"))
    cfg: float | None = Field(None, **bounds("cfg"))
    size: str | None = None
    width: int | None = None
    height: int | None = None
    scheduler: str | None = None
    style: str | None = None
    rounds: int | None = Field(None, **bounds("rounds"))
    candidates: int | None = Field(None, **bounds("candidates"))
    threshold: float | None = None
    lora: list[str] = Field([], max_length=MAX_LORAS)        # 'PATH_OR_NAME[:WEIGHT]'; one string is one LoRA
    control: list[str] = Field([], max_length=MAX_CONTROLS)  # 'KIND:IMAGE[:SCALE]'
    id: str | int | None = None

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data):
        if isinstance(data, dict) and "negative_prompt" in data and "negative" not in data:
            data = {**data, "negative": data.pop("negative_prompt")}
        if isinstance(data, dict):
            for key in ("lora", "control"):
                if isinstance(data.get(key), str):
                    data = {**data, key: [data[key]] if data[key].strip() else []}
        return data

    @model_validator(mode="after")
    def _text(self):
        if (self.idea is None) == (self.prompt is None):
            raise ValueError("give exactly one of 'idea' or 'prompt'")
        return self


@dataclass
class Line:
    """One input line: its number in the file, its raw fields, or why it could not be read."""

    number: int
    fields: dict
    meta: dict = field(default_factory=dict)
    error: str | None = None


def detect_format(path: Path, fmt: str | None = None) -> str:
    if fmt:
        if fmt not in FORMATS:
            raise InvalidInput(f"Unknown batch format '{fmt}'.", f"Use one of: {', '.join(FORMATS)}.")
        return fmt
    suffix = path.suffix.lower()
    return {".jsonl": "jsonl", ".ndjson": "jsonl", ".tsv": "tsv"}.get(suffix, "txt")


def read_lines(path: str | Path, fmt: str | None = None) -> tuple[str, list[Line]]:
    """(format, lines) of a batch input file. Unreadable lines come back with `.error` set."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"The batch file '{path}' does not exist.", "Check the path.")
    fmt = detect_format(path, fmt)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidInput(f"The batch file '{path}' is not UTF-8 text.", "Save it as UTF-8.") from None
    rows = text.splitlines()
    lines: list[Line] = []
    if fmt == "txt":
        for n, row in enumerate(rows, 1):
            if row.strip() and not row.lstrip().startswith("#"):
                lines.append(Line(n, {"idea": row.strip()}))
    elif fmt == "jsonl":
        for n, row in enumerate(rows, 1):
            if not row.strip() or row.lstrip().startswith("#"):
                continue
            try:
                obj = json.loads(row)
            except json.JSONDecodeError as exc:
                lines.append(Line(n, {}, error=f"line {n} is not valid JSON ({exc.msg} at column {exc.colno})"))
                continue
            if not isinstance(obj, dict):
                lines.append(Line(n, {}, error=f"line {n} is not a JSON object"))
                continue
            lines.append(Line(n, obj))
    else:
        lines = _read_tsv(path, rows)
    return fmt, lines


def _read_tsv(path: Path, rows: list[str]) -> list[Line]:
    if not rows:
        return []
    header = [_unquote(h).strip() for h in rows[0].split("\t")]
    lower = [h.lower() for h in header]
    text_col = next((c for c in ("prompt", "idea") if c in lower), None)
    if text_col is None:
        raise InvalidInput(f"The TSV file '{path}' has no 'prompt' or 'idea' column (header: {', '.join(header)}).",
                           "Add a header row whose prompt column is named 'prompt'.")
    known = set(LineParams.model_fields) | {"negative_prompt"}
    out = []
    for n, row in enumerate(rows[1:], 2):
        if not row.strip():
            continue
        cells = [_unquote(c) for c in row.split("\t")]
        cells += [""] * (len(header) - len(cells))
        fields, meta = {}, {}
        for name, low, value in zip(header, lower, cells):
            if low == text_col:
                fields["idea"] = value.strip()
            elif low in known:
                if value.strip():
                    fields[low] = _number(value.strip())
            elif value.strip():
                meta[low] = value.strip()
        out.append(Line(n, fields, meta=meta, error=None if fields.get("idea") else f"line {n} has an empty prompt"))
    return out


def _unquote(cell: str) -> str:
    if len(cell) >= 2 and cell[0] == cell[-1] == '"':
        return cell[1:-1].replace('""', '"')
    return cell


def _number(value: str):
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


# -- sweeps ---------------------------------------------------------------------------------------
def parse_ints(text: str | None, what: str) -> list[int] | None:
    """'1-4,7' -> [1, 2, 3, 4, 7]."""
    if text is None:
        return None
    out: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part[1:]:
                a, b = part.split("-", 1) if not part.startswith("-") else (part, "")
                lo, hi = int(a), int(b)
                if hi < lo or hi - lo > MAX_GRID:
                    raise ValueError
                out.extend(range(lo, hi + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise InvalidInput(f"--{what} '{text}' is not a list of integers.",
                           f"Write it like --{what} 1-4 or --{what} 1,5,9.") from None
    return list(dict.fromkeys(out))


def parse_floats(text: str | None, what: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return list(dict.fromkeys(float(x) for x in text.split(",") if x.strip()))
    except ValueError:
        raise InvalidInput(f"--{what} '{text}' is not a list of numbers.", f"Write it like --{what} 5,7.5.") from None


@dataclass(frozen=True)
class Sweep:
    seeds: tuple[int, ...] | None = None
    cfgs: tuple[float, ...] | None = None
    steps: tuple[int, ...] | None = None

    def points(self) -> list[dict]:
        axes = [(k, v) for k, v in (("seed", self.seeds), ("cfg", self.cfgs), ("steps", self.steps)) if v]
        return [dict(zip([k for k, _ in axes], combo)) for combo in itertools.product(*[v for _, v in axes])]


def item_key(line: int, point: dict) -> str:
    return "/".join([f"L{line}", *(f"{k}={_fmt(v)}" for k, v in point.items())])


def image_name(key: str) -> str:
    """The batch image's file name for an item key: 'L12/seed=3/cfg=7.5' -> 'L12_seed=3_cfg=7.5.png'."""
    return re.sub(r"[^A-Za-z0-9=._-]", "_", key.replace("/", "_")) + ".png"


def _fmt(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


@dataclass
class Item:
    key: str
    line: Line
    point: dict


def plan(lines: list[Line], sweep: Sweep) -> list[Item]:
    points = sweep.points() or [{}]
    if len(lines) * len(points) > MAX_GRID:
        raise InvalidInput(f"The batch has {len(lines)} lines x {len(points)} sweep points, over {MAX_GRID} items.",
                           "Split the file or sweep fewer values.")
    return [Item(item_key(line.number, p), line, p) for line in lines for p in points]
