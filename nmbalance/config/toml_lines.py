"""Where each key of a TOML document sits, so errors can name a line.

tomllib returns plain values without positions; this walks the text once, in
linear time, and records the line of every table header and key, keyed by the
same path pydantic reports (`("uplink", 1, "weight")`). It follows TOML's own
idea of a line (only "\\n" ends one, not U+2028 or a form feed) and skips what
sits inside strings, multi-line strings and multi-line arrays. It only needs
to be right for documents tomllib already accepted.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

Path = tuple[str | int, ...]

_BARE = re.compile(r"[A-Za-z0-9_-]+")
_SPECIAL = re.compile(r"[\"'#\[\]{}]")  # what can open or close something, or end the line


def _quoted(text: str, i: int) -> tuple[str, int]:
    """The quoted key at text[i] (a quote) and the index after it."""
    quote, out, i = text[i], [], i + 1
    while i < len(text) and text[i] != quote:
        if quote == '"' and text[i] == "\\" and i + 1 < len(text):
            out.append(text[i + 1])  # close enough for a position: the key itself differs
            i += 2
            continue
        out.append(text[i])
        i += 1
    return "".join(out), i + 1


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t":
        i += 1
    return i


def parse_key(text: str, i: int) -> tuple[list[str], int]:
    """A dotted key starting at text[i]: its parts and the index after it."""
    parts: list[str] = []
    while i < len(text):
        i = _skip_space(text, i)
        if i < len(text) and text[i] in "\"'":
            part, i = _quoted(text, i)
        else:
            m = _BARE.match(text, i)
            if m is None:
                return parts, i
            part, i = m.group(), m.end()
        parts.append(part)
        i = _skip_space(text, i)
        if i < len(text) and text[i] == ".":
            i += 1
            continue
        break
    return parts, i


class _Scanner:
    """What the rest of a line leaves open: a multi-line string, or brackets."""

    def __init__(self) -> None:
        self.string = ""  # the delimiter of an open multi-line string
        self.depth = 0

    @property
    def open(self) -> bool:
        return bool(self.string) or self.depth > 0

    def feed(self, line: str, i: int = 0) -> None:
        n = len(line)
        while i < n:
            if self.string:
                end = self._close(line, i)
                if end < 0:
                    return
                self.string, i = "", end
                continue
            m = _SPECIAL.search(line, i)
            if m is None:
                return
            i = m.start()
            ch = line[i]
            if ch == "#":
                return
            if line.startswith('"""', i) or line.startswith("'''", i):
                self.string, i = line[i:i + 3], i + 3
            elif ch in "\"'":
                i = self._single(line, i)
            elif ch in "[{":
                self.depth, i = self.depth + 1, i + 1
            else:
                self.depth, i = max(self.depth - 1, 0), i + 1

    def _close(self, line: str, i: int) -> int:
        """The index after the open multi-line string's end on this line, or -1."""
        delim = self.string
        while True:
            j = line.find(delim, i)
            if j < 0:
                return -1
            if delim == '"""':
                k = j  # count the backslashes before it: an odd number escapes it
                while k > i and line[k - 1] == "\\":
                    k -= 1
                if (j - k) % 2:
                    i = j + 1
                    continue
            # Up to two more quotes may belong to the content: """a""""" ends after them.
            end = j + 3
            while end < len(line) and line[end] == delim[0] and end - j < 5:
                end += 1
            return end

    @staticmethod
    def _single(line: str, i: int) -> int:
        """The index after the one-line string opening at line[i]."""
        quote = line[i]
        while True:
            j = line.find(quote, i + 1)
            if j < 0:
                return len(line)
            k = j
            while quote == '"' and k > i + 1 and line[k - 1] == "\\":
                k -= 1
            if (j - k) % 2 == 0:  # not escaped
                return j + 1
            i = j


def _scan(text: str) -> Iterator[tuple[Path, int]]:
    """(path, line) of every table header and key, in document order."""
    counts: dict[tuple[str, ...], int] = {}
    prefix: Path = ()
    scan = _Scanner()
    for number, line in enumerate(text.split("\n"), start=1):
        if scan.open:  # inside a multi-line string, array or inline table
            scan.feed(line)
            continue
        stripped = line.lstrip(" \t")
        start = len(line) - len(stripped)
        if stripped.startswith("[["):
            parts, end = parse_key(line, start + 2)
            index = counts.get(tuple(parts), 0)
            counts[tuple(parts)] = index + 1
            prefix = (*parts, index)
            yield tuple(parts), number
            yield prefix, number
            scan.feed(line, line.find("]]", end) + 2 if "]]" in line[end:] else len(line))
        elif stripped.startswith("["):
            parts, end = parse_key(line, start + 1)
            prefix = tuple(parts)
            yield prefix, number
            scan.feed(line, line.find("]", end) + 1 if "]" in line[end:] else len(line))
        elif stripped and stripped[0] != "#":
            parts, end = parse_key(line, start)
            rest = line[end:].lstrip(" \t")
            if parts and rest.startswith("="):
                yield (*prefix, *parts), number
                scan.feed(line, len(line) - len(rest) + 1)


class KeyLines:
    """The lines of a document's keys, read only as far as a question needs: an
    error near the top of a huge file costs nothing for the rest of it."""

    def __init__(self, text: str) -> None:
        self._rest = _scan(text)
        self._seen: dict[Path, int] = {}

    def _find(self, loc: Path) -> int | None:
        while loc not in self._seen:
            path, number = next(self._rest, ((), 0))
            if not number:
                return None
            self._seen.setdefault(path, number)
        return self._seen[loc]

    def line_of(self, loc: Path) -> int | None:
        """The line of `loc`, or of its nearest enclosing key or table."""
        if self._find(loc) is not None:
            return self._seen[loc]
        return line_of(self._seen, loc)


def line_of(lines: dict[Path, int], loc: Path) -> int | None:
    """The line of `loc`, or of its nearest enclosing key or table."""
    for end in range(len(loc), 0, -1):
        if (found := lines.get(tuple(loc[:end]))) is not None:
            return found
    return None
