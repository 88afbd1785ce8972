"""Our nft table through libnftables: one transaction per apply, read back as JSON."""

from __future__ import annotations

import ctypes
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
    restore: dict[int, str] = field(default_factory=dict)  # mark -> the chain it restores by
    # weight map name -> (first slot, last slot, the chain those slots go to)
    weights: dict[str, list[tuple[int, int, str]]] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)  # named counter -> packets


def _element_text(value: Any) -> str:
    if isinstance(value, dict) and "concat" in value:
        return " . ".join(_element_text(v) for v in value["concat"])
    if isinstance(value, dict) and "prefix" in value:
        return f"{value['prefix']['addr']}/{value['prefix']['len']}"
    if isinstance(value, dict) and "range" in value:
        lo, hi = value["range"]
        return f"{_element_text(lo)}-{_element_text(hi)}"
    return str(value)


def _verdicts(elems: list[Any], ranges: bool = False) -> list[tuple[Any, str]]:
    """The (key, goto target) pairs of a verdict map's JSON elements; with `ranges`,
    each key as (first, last)."""
    out: list[tuple[Any, str]] = []
    for elem in elems:
        if not (isinstance(elem, list) and len(elem) == 2 and isinstance(elem[1], dict)):
            continue
        key, goto = elem[0], elem[1].get("goto")
        if not (isinstance(goto, dict) and "target" in goto):
            continue
        if ranges:
            if isinstance(key, dict) and isinstance(key.get("range"), list):
                key = tuple(key["range"])
            elif isinstance(key, int):
                key = (key, key)
            if not (isinstance(key, tuple) and len(key) == 2
                    and all(isinstance(k, int) for k in key)):
                continue
        elif not isinstance(key, int):
            continue
        out.append((key, str(goto["target"])))
    return out


def _chains(items: list[dict[str, Any]], table: str) -> set[str]:
    return {item["chain"]["name"] for item in items
            if "chain" in item and item["chain"].get("table") == table}


def digest_of(chains: frozenset[str]) -> str | None:
    return next((name.removeprefix(DIGEST_CHAIN_PREFIX) for name in chains
                 if name.startswith(DIGEST_CHAIN_PREFIX)), None)


def _take(state: TableState, item: dict[str, Any]) -> None:
    """One item of a JSON listing into `state` (chains are gathered apart)."""
    if "counter" in item:
        state.counters[item["counter"]["name"]] = int(item["counter"].get("packets", 0))
    elif "set" in item or "map" in item:
        body = item.get("set") or item["map"]
        elems = body.get("elem", [])
        state.sets[body["name"]] = elems
        if body["name"] == "live":
            state.live = frozenset(int(e) for e in elems)
        elif body["name"] == "restore":
            state.restore = dict(_verdicts(elems))
        elif body["name"].startswith(("w_", "w6_")):
            state.weights[body["name"]] = [
                (lo, hi, chain) for (lo, hi), chain in _verdicts(elems, ranges=True)]
        elif body["name"].startswith("st") and "timeout" in body.get("flags", []):
            state.sticky[body["name"]] = [
                StickyEntry(_element_text(e["elem"]["val"]), int(e["elem"].get("expires", 0)))
                for e in elems if isinstance(e, dict) and "elem" in e
            ]


def _dry_run(nft: Any) -> None:
    """Check, never commit. Older bindings (pip's copy of 1.0.2) lack set_dry_run,
    though every libnftables has nft_ctx_set_dry_run."""
    if hasattr(nft, "set_dry_run"):
        nft.set_dry_run(True)
        return
    lib = ctypes.CDLL("libnftables.so.1")
    lib.nft_ctx_set_dry_run.argtypes = [ctypes.c_void_p, ctypes.c_bool]
    lib.nft_ctx_set_dry_run(nft._Nftables__ctx, True)


class NftTable:
    def __init__(self, name: str, family: str = "inet") -> None:
        self.name = name
        self.family = family
        self._nft = nftables.Nftables()
        self._nft.set_handle_output(False)
        self._checker: Any = None

    def check(self, text: str) -> str | None:
        """What the kernel would say to `text` as one transaction, without it
        changing anything: None when it would take it, else nft's error."""
        if self._checker is None:
            self._checker = nftables.Nftables()
            _dry_run(self._checker)
        rc, _, error = self._checker.cmd(text)
        return None if rc == 0 else error.strip() or "refused"

    def run(self, text: str) -> None:
        """Apply `text` as one transaction: all of it, or nothing."""
        self._nft.set_json_output(False)
        rc, _, error = self._nft.cmd(text)
        if rc != 0:
            raise ApplyError(f"nft refused the transaction: {error.strip()}")

    def _list(self, what: str) -> list[dict[str, Any]] | None:
        """The JSON items `list WHAT` gives; None when nft refuses (no such table)."""
        self._nft.set_json_output(True)
        rc, output, _ = self._nft.cmd(f"list {what}")
        if rc != 0:
            return None
        items = json.loads(output).get("nftables", [])
        return [i for i in items if isinstance(i, dict)]

    def read(self) -> TableState | None:
        """The whole table: chains, rules, sets and maps with their elements, counters."""
        items = self._list(f"table {self.family} {self.name}")
        if items is None:
            return None  # no such table
        state = TableState()
        for item in items:
            _take(state, item)
        state.chains = frozenset(_chains(items, self.name))
        state.digest = digest_of(state.chains)
        return state

    def read_brief(self, sticky: bool = True) -> TableState | None:
        """What an apply needs before a whole-table replace, at a fraction of read()'s
        cost: the digest and chain names (no rules), the live set, and with `sticky`
        every set with its elements (the sticky entries to carry over); no maps,
        rules or counters, whose JSON is most of a listing. None when there is no
        such table."""
        if not sticky:
            state = self.read_owner()
            if state is not None:
                state.live = self.read_live() or frozenset()
            return state
        sets = self._list(f"sets table {self.family} {self.name}")
        if sets is None:
            return None
        state = TableState()
        for item in sets:
            _take(state, item)
        state.chains = frozenset(self.chain_names() or ())
        state.digest = digest_of(state.chains)
        return state

    def chain_names(self) -> frozenset[str] | None:
        """The names of our table's chains (its digest among them), without their
        rules; None when nft refuses."""
        items = self._list(f"chains {self.family}")
        return None if items is None else frozenset(_chains(items, self.name))

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

    def read_counters(self) -> dict[str, int] | None:
        """Our named counters (name -> packets); None when the table is not there."""
        self._nft.set_json_output(True)
        rc, output, _ = self._nft.cmd(f"list counters table {self.family} {self.name}")
        if rc != 0:
            return None
        return {item["counter"]["name"]: int(item["counter"].get("packets", 0))
                for item in json.loads(output).get("nftables", []) if "counter" in item}

    def others_of_ours(self, prefix: str = "nmbalance") -> list[str]:
        """Other inet tables named `prefix`... that carry our marker (the digest
        chain): left behind when kernel.table was renamed."""
        items = self._list(f"chains {self.family}") or []
        return sorted({item["chain"]["table"] for item in items
                       if "chain" in item and item["chain"].get("table") != self.name
                       and str(item["chain"].get("table", "")).startswith(prefix)
                       and str(item["chain"].get("name")).startswith(DIGEST_CHAIN_PREFIX)})

    def read_owner(self) -> TableState | None:
        """The table's digest and chain names, nothing else; None when there is no
        such table. Far cheaper than read() with big maps in the table: nft 1.0.6
        fetches every set's elements for most listings, not for chain names."""
        names = self.chain_names()
        if not names:
            return self.read()  # no chains (not ours), or no table: little to list
        return TableState(digest=digest_of(names), chains=names)

    def exists(self) -> bool:
        return self.read_owner() is not None

    def delete(self) -> bool:
        if not self.exists():
            return False
        self.run(f"delete table {self.family} {self.name}")
        return True
