"""Run inside the router's namespace: walk a daemon-like Applier through a list
of configs (changes of structure done in place), and after each step compare
the kernel's table with the same config's table made whole by a fresh
Applier. Prints one JSON line per step: the modes used and the differences.

    python tests/lab/inplace_walk.py CONFIG.toml...
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute

from nmbalance.config import load_config
from nmbalance.core.decide import decide
from nmbalance.dataplane.apply import Applier, flush
from nmbalance.sources.kernel_facts import snapshot

TABLE = "nmbalance"


def listing() -> dict[str, Any]:
    """Our table as the kernel holds it, without handles or counts and in no
    particular order of objects: chains with their rules, sets with their
    elements, counters by name."""
    out = subprocess.run(["nft", "-j", "list", "table", "inet", TABLE], capture_output=True,
                         text=True, check=True).stdout
    chains: dict[str, list[str]] = {}
    objects: dict[str, str] = {}
    for item in json.loads(out)["nftables"]:
        kind, body = next(iter(item.items()))
        if kind in ("metainfo", "table"):
            continue
        body = {k: v for k, v in body.items() if k not in ("handle", "packets", "bytes")}
        if kind == "rule":
            chains.setdefault(body["chain"], []).append(json.dumps(body["expr"], sort_keys=True))
        elif kind == "chain":
            chains.setdefault(body["name"], [])
            objects[f"chain {body['name']}"] = json.dumps(body, sort_keys=True)
        else:
            if "elem" in body:
                body["elem"] = sorted(json.dumps(e, sort_keys=True) for e in body["elem"])
            objects[f"{kind} {body['name']}"] = json.dumps(body, sort_keys=True)
    objects.update({f"rules {name}": "\n".join(rules) for name, rules in chains.items()})
    # The digest chain is named after the structure, which both have alike.
    return objects


def differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def main() -> None:
    paths = sys.argv[1:]
    ipr = IPRoute(strict_check=True)
    daemon = Applier(ipr, flush_in_background=True)
    for path in paths:
        config = load_config(path)
        plan = decide(config, snapshot(ipr, config))
        report = daemon.apply(plan)
        walked = listing()
        flush(ipr, TABLE, config.kernel.route_protocol)
        fresh = Applier(ipr)
        fresh.apply(plan)
        made = listing()
        fresh.close()
        daemon.forget()  # the table was made again behind its back
        daemon.apply(plan)  # ... and is its own again, for the next step
        print(json.dumps({"config": Path(path).name, "mode": report.nft_mode,
                          "differ": differences(walked, made)}), flush=True)
    daemon.close()
    flush(ipr, TABLE, 211)


if __name__ == "__main__":
    main()
