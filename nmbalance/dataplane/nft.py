"""Our nft table through libnftables: one transaction per apply, read back as JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import nftables

from nmbalance.core.ruleset import DIGEST_CHAIN_PREFIX
from nmbalance.errors import ApplyError


@dataclass(frozen=True)
class StickyEntry:
    key: str  # nft text of the element key
    expires_s: int


@dataclass
class TableState:
    """What we need to know of our table as the kernel holds it."""

    digest: str | None = None
    live: frozenset[int] = frozenset()
    sets: dict[str, list[Any]] = field(default_factory=dict)  # set/map name -> raw elements
    sticky: dict[str, list[StickyEntry]] = field(default_factory=dict)
    chains: frozenset[str] = frozenset()


def _element_text(value: Any) -> str:
    if isinstance(value, dict) and "concat" in value:
        return " . ".join(_element_text(v) for v in value["concat"])
    if isinstance(value, dict) and "prefix" in value:
        return f"{value['prefix']['addr']}/{value['prefix']['len']}"
    if isinstance(value, dict) and "range" in value:
        lo, hi = value["range"]
        return f"{_element_text(lo)}-{_element_text(hi)}"
    return str(value)


class NftTable:
    def __init__(self, name: str, family: str = "inet") -> None:
        self.name = name
        self.family = family
        self._nft = nftables.Nftables()
        self._nft.set_handle_output(False)

    def run(self, text: str) -> None:
        """Apply `text` as one transaction: all of it, or nothing."""
        self._nft.set_json_output(False)
        rc, _, error = self._nft.cmd(text)
        if rc != 0:
            raise ApplyError(f"nft refused the transaction: {error.strip()}")

    def read(self) -> TableState | None:
        self._nft.set_json_output(True)
        rc, output, _ = self._nft.cmd(f"list table {self.family} {self.name}")
        if rc != 0:
            return None  # no such table
        state = TableState()
        chains = set()
        for item in json.loads(output).get("nftables", []):
            if "chain" in item:
                name = item["chain"]["name"]
                chains.add(name)
                if name.startswith(DIGEST_CHAIN_PREFIX):
                    state.digest = name.removeprefix(DIGEST_CHAIN_PREFIX)
            elif "set" in item or "map" in item:
                body = item.get("set") or item["map"]
                elems = body.get("elem", [])
                state.sets[body["name"]] = elems
                if body["name"] == "live":
                    state.live = frozenset(int(e) for e in elems)
                elif body["name"].startswith("st") and "timeout" in body.get("flags", []):
                    state.sticky[body["name"]] = [
                        StickyEntry(_element_text(e["elem"]["val"]), int(e["elem"].get("expires", 0)))
                        for e in elems if isinstance(e, dict) and "elem" in e
                    ]
        state.chains = frozenset(chains)
        return state

    def read_live(self) -> frozenset[int] | None:
        """Just the live-marks set: the cheap read-back after a contents update."""
        self._nft.set_json_output(True)
        rc, output, _ = self._nft.cmd(f"list set {self.family} {self.name} live")
        if rc != 0:
            return None
        for item in json.loads(output).get("nftables", []):
            if "set" in item:
                return frozenset(int(e) for e in item["set"].get("elem", []))
        return None

    def exists(self) -> bool:
        return self.read() is not None

    def delete(self) -> bool:
        if not self.exists():
            return False
        self.run(f"delete table {self.family} {self.name}")
        return True
