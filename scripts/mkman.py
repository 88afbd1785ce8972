#!/usr/bin/env python3
"""Turn docs/*.md (a small markdown subset) into man pages (roff).

    % NAME(SECTION) | footer        the title line
    # HEADING / ## Subheading       .SH / .SS
    * `term` text                   a tagged paragraph (.TP); its text follows on the next lines
    ```                             a literal block (.nf/.fi)
    `code`, *emphasis*              bold, italic
    blank line                      a new paragraph

Usage: mkman.py SOURCE.md... -o DIR    (writes DIR/NAME.SECTION)
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

TITLE = re.compile(r"^% ([A-Za-z0-9._-]+)\((\d)\) \| (.*)$")


def _escape(text: str) -> str:
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return text


def _inline(text: str) -> str:
    out = []
    for i, part in enumerate(re.split(r"(`[^`]*`)", text)):
        if i % 2:
            out.append(r"\fB" + _escape(part[1:-1]) + r"\fR")
        else:
            part = _escape(part)
            out.append(re.sub(r"\*([^*\s][^*]*)\*", r"\\fI\1\\fR", part))
    line = "".join(out)
    return "\\&" + line if line.startswith((".", "'")) else line


def convert(source: str) -> tuple[str, str, str]:
    lines = source.splitlines()
    m = TITLE.match(lines[0]) if lines else None
    if m is None:
        raise SystemExit("the first line must be: % NAME(SECTION) | footer")
    name, section, footer = m.groups()
    out = [f'.TH "{name.upper()}" "{section}" "" "{footer}" "{footer.split()[0]}"']
    literal = False
    for line in lines[1:]:
        if line.startswith("```"):
            out.append(".nf" if not literal else ".fi")
            literal = not literal
        elif literal:
            out.append(_inline(line.replace("`", "\0")).replace("\0", "`") if line else "")
        elif line.startswith("## "):
            out.append(f'.SS "{_escape(line[3:])}"')
        elif line.startswith("# "):
            out.append(f".SH {_escape(line[2:].upper())}")
        elif line.startswith("* "):
            out += [".TP", _inline(line[2:])]
        elif not line.strip():
            if out[-1] not in (".PP", ".TP") and not out[-1].startswith((".SH", ".SS")):
                out.append(".PP")
        else:
            out.append(_inline(line.strip()))
    return name, section, "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sources", nargs="+", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    for source in args.sources:
        name, section, roff = convert(source.read_text(encoding="utf-8"))
        (args.output / f"{name}.{section}").write_text(roff, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
