"""The administrator's own nft snippets (snippets_dir/*.nft), applied with our table."""

from __future__ import annotations

from pathlib import Path

from nmbalance.config.model import Config
from nmbalance.errors import ConfigError


def read_snippets(config: Config) -> tuple[tuple[str, str], ...]:
    if not config.snippets_dir:
        return ()
    folder = Path(config.snippets_dir)
    if not folder.is_dir():
        return ()
    out = []
    for path in sorted(folder.glob("*.nft")):
        try:
            out.append((path.name, path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(str(path), f"cannot read snippet: {exc}") from None
    return tuple(out)
