"""Where each key of a TOML document sits, so errors can name a line.

tomllib returns plain values without positions; this walks the text once and
records the line of every table header and key, keyed by the same path
pydantic reports (`("uplink", 1, "weight")`). It only needs to be right for
documents tomllib already accepted.
"""

from __future__ import annotations

import re

Path = tuple[str | int, ...]

_ARRAY_HEADER = re.compile(r"^\s*\[\[\s*([^\]]+?)\s*\]\]")
_TABLE_HEADER = re.compile(r"^\s*\[\s*([^\]]+?)\s*\]")
_KEY = re.compile(r"^\s*([A-Za-z0-9_.\-\"' ]+?)\s*=")


def _split_key(key: str) -> list[str]:
    return [part.strip().strip("\"'") for part in key.split(".")]


def _bracket_depth(value: str) -> int:
    depth = 0
    quote = ""
    for ch in value:
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            break
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
    return depth


def key_lines(text: str) -> dict[Path, int]:
    lines: dict[Path, int] = {}
    counts: dict[tuple[str, ...], int] = {}
    prefix: Path = ()
    depth = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if depth > 0:  # inside a multi-line array or inline table
            depth += _bracket_depth(line)
            continue
        if m := _ARRAY_HEADER.match(line):
            parts = tuple(_split_key(m.group(1)))
            index = counts.get(parts, 0)
            counts[parts] = index + 1
            prefix = (*parts, index)
            lines.setdefault(parts, number)
            lines[prefix] = number
        elif m := _TABLE_HEADER.match(line):
            prefix = tuple(_split_key(m.group(1)))
            lines.setdefault(prefix, number)
        elif m := _KEY.match(line):
            path = (*prefix, *_split_key(m.group(1)))
            lines.setdefault(path, number)
            depth = _bracket_depth(line[m.end():])
    return lines


def line_of(lines: dict[Path, int], loc: Path) -> int | None:
    """The line of `loc`, or of its nearest enclosing key or table."""
    for end in range(len(loc), 0, -1):
        if (found := lines.get(tuple(loc[:end]))) is not None:
            return found
    return None
