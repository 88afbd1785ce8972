"""The administrator's own nft snippets (snippets_dir/*.nft), applied with our table.

Only trusted ones (nmbalance.trusted: root's, writable by nobody else, inside
the folder): a snippet becomes part of the firewall. An untrusted one is a
config error, not skipped: silently leaving a rule out changes the firewall.
"""

from __future__ import annotations

import re
from pathlib import Path

from nmbalance.config.model import Config
from nmbalance.errors import ConfigError
from nmbalance.trusted import untrusted_file, untrusted_folder

MAX_SNIPPET = 1 << 20
_NAME = re.compile(r"[A-Za-z0-9._-]{1,200}")


def read_snippets(config: Config) -> tuple[tuple[str, str], ...]:
    """(path, text) of each snippet, in name order."""
    if not config.snippets_dir:
        return ()
    folder = Path(config.snippets_dir)
    if not folder.is_dir():
        return ()
    if (why := untrusted_folder(folder)) is not None:
        raise ConfigError(str(folder), f"snippets folder not used: {why}")
    out = []
    for path in sorted(folder.glob("*.nft")):
        if not _NAME.fullmatch(path.name):
            raise ConfigError(str(path), "snippet names may hold only letters, digits, "
                                         "'.', '_' and '-'")
        if (why := untrusted_file(path, folder)) is not None:
            raise ConfigError(str(path), f"snippet not used: {why}")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(str(path), f"cannot read snippet: {exc}") from None
        if len(text) > MAX_SNIPPET:
            raise ConfigError(str(path), "snippet larger than 1 MiB")
        out.append((str(path), text))
    return tuple(out)
