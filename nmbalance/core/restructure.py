"""The transaction that turns our table's structure into another in place,
touching only the chains, sets, maps and counters whose text differs.

A whole-table replace makes every chain again (at 32 uplinks, 60-odd chains:
most of its cost) and empties every set, so the learned sticky entries must
be read and written back. Most changes of structure touch a few objects: a
group's method, one rule map, one uplink. Pure: it compares two renderings
of ruleset.render_structure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

Key = tuple[str, str]  # (kind, name): ("chain", "classify"), ("map", "w_default")
_HEAD = re.compile(r"^  (chain|set|map|counter) (\S+) \{")


def blocks(structure: str) -> dict[Key, str] | None:
    """Each object of a rendered structure with its text, in order; None when the
    text is not one table's plain rendering (snippets, or anything unexpected)."""
    lines = structure.splitlines()
    start = next((i for i, line in enumerate(lines)
                  if line.startswith("table inet ") and line.endswith(" {")), None)
    if start is None:
        return None
    out: dict[Key, str] = {}
    open_key: Key | None = None
    body: list[str] = []
    for line in lines[start + 1:]:
        if open_key is not None:
            body.append(line)
            if line == "  }":
                out[open_key], open_key = "\n".join(body), None
            continue
        if line == "}":
            return out
        if line.startswith("  comment "):
            continue
        m = _HEAD.match(line)
        if m is None or (m.group(1), m.group(2)) in out:
            return None
        key = (m.group(1), m.group(2))
        if line.endswith("}"):
            out[key] = line
        else:
            open_key, body = key, [line]
    return None  # the table's closing brace never came


@dataclass(frozen=True)
class Restructure:
    """The objects to change, and the nft text that changes them and fills what
    needs filling."""

    text: str
    changed: frozenset[Key]  # made again (empty, for sets and maps)
    added: frozenset[Key]
    removed: frozenset[Key]


def _refers(text: str, key: Key) -> bool:
    kind, name = key
    if kind == "counter":
        return f'counter name "{name}"' in text
    if kind == "chain":
        return re.search(rf"\b(goto|jump) {re.escape(name)}\b", text) is not None
    return re.search(rf"@{re.escape(name)}\b", text) is not None


def contents_blocks(text: str) -> dict[str, str]:
    """A contents transaction by set: each `flush ...` line with the lines that fill it."""
    out: dict[str, str] = {}
    key = ""
    for line in text.splitlines(keepends=True):
        if line.startswith("flush "):
            key = line
        out[key] = out.get(key, "") + line
    return out


def changed_blocks(before: str, after: str) -> str:
    """The part of contents `after` that differs from `before`, set by set."""
    old = contents_blocks(before)
    return "".join(block for key, block in contents_blocks(after).items() if old.get(key) != block)


def _object(flush_line: str) -> Key:
    """("set", "live") of "flush set inet t live"."""
    words = flush_line.split()
    return (words[1], words[4]) if len(words) == 5 else ("", "")


def restructure(table: str, old: tuple[str, str], new: tuple[str, str]) -> Restructure | None:
    """The transaction from `old` to `new`, each (structure, contents) as rendered for
    the same table, or None when a structure is not a plain rendering. Contents are
    sent only for the sets and maps made again or whose elements differ; those that
    stay but hold elements naming a chain about to go are emptied first."""
    before, after = blocks(old[0]), blocks(new[0])
    if before is None or after is None:
        return None
    removed = {k for k in before if k not in after}
    changed = {k for k in before if k in after and before[k] != after[k]}
    added = {k for k in after if k not in before}
    # A set, map or counter made again must lose every rule that uses it first.
    remade = [k for k in removed | changed if k[0] != "chain"]
    changed |= {k for k, text in after.items() if k[0] == "chain" and k in before
                and any(_refers(text, r) for r in remade)}
    gone = removed | changed
    old_fill, new_fill = contents_blocks(old[1]), contents_blocks(new[1])
    gone_chains = [k for k in removed if k[0] == "chain"]
    emptied = [key for key, text in old_fill.items() if key and key in new_fill
               and _object(key) not in gone and any(_refers(text, c) for c in gone_chains)]
    lines = [key.rstrip("\n") for key in emptied]
    lines += [f"flush chain inet {table} {name}" for kind, name in sorted(gone) if kind == "chain"]
    for kind in ("map", "set", "counter", "chain"):  # the referring before the referred
        lines += [f"delete {kind} inet {table} {name}" for k, name in sorted(gone)
                  if k == kind and (kind != "chain" or (k, name) in removed)]
    made = [text for k, text in after.items() if k in added or k in changed]
    if made:
        lines += [f"table inet {table} {{", *made, "}"]
    fills = "".join(text for key, text in new_fill.items()
                    if key in emptied or _object(key) in gone | added
                    or old_fill.get(key) != text)
    return Restructure("".join(f"{line}\n" for line in lines) + fills, frozenset(changed),
                       frozenset(added), frozenset(removed))
