"""Changes of structure done in place (core.restructure) leave the kernel with
the very table a whole replace would have made, and keep what was learned in
the sets they do not touch."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable

from labkit.lab import ROOT, Lab
from tests.lab.conftest import THREE_ISPS

WriteConfig = Callable[..., str]


def _rule(name: str, uplink: str, cond: str) -> str:
    return f'[[rule]]\nname = "{name}"\nmethod = "enforced"\nuplinks = ["{uplink}"]\n{cond}\n'


def _many(count: int, first: int = 0) -> str:
    return "".join(_rule(f"m{i}", f"ISP{1 + i % 3}", f'dst = ["10.{100 + i // 250}.{i % 250}.0/24"]')
                   for i in range(first, first + count))


def test_every_change_in_place_makes_the_table_a_replace_would(
    router: Lab, write_config: WriteConfig
) -> None:
    weighted = THREE_ISPS.format(mode="weighted")
    two = weighted.split("[[uplink]]\nname = \"ISP3\"")[0] + '[[lan]]\nname = "LAN"\ninterface = "lan0"\n'
    steps = {
        "weighted": weighted,
        "persistence": THREE_ISPS.format(mode="persistence"),
        "priority": THREE_ISPS.format(mode="priority"),
        "a rule": weighted + _rule("web", "ISP2", 'proto = "tcp"\ndport = [443]'),
        "300 rules": weighted + _many(300),
        "301 rules": weighted + _many(300) + _many(1, 300),
        "a sticky rule": weighted + _many(300) + _rule("s", "ISP1", 'proto = "udp"').replace(
            'method = "enforced"', 'method = "persistence"'),
        "two uplinks": two,
        "three again": weighted,
        "fastest": THREE_ISPS.format(mode="fastest-response"),
        "port forward": weighted + '[[port_forward]]\nport = "8080"\nto = "10.250.0.20"\n',
        "mark mask": weighted + "[kernel]\nmark_mask = 0xff0000\n",
        "weighted at last": weighted,
    }
    paths = [write_config(text, f"step{i}.toml") for i, text in enumerate(steps.values())]
    walk = subprocess.run(["ip", "netns", "exec", router.rtr, sys.executable,
                           "tests/lab/inplace_walk.py", *paths], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)
    assert walk.returncode == 0, walk.stderr
    results = [json.loads(line) for line in walk.stdout.splitlines()]
    assert len(results) == len(steps)
    for name, result in zip(steps, results, strict=True):
        assert result["differ"] == [], (name, result)
    modes = [r["mode"] for r in results]
    # The first makes the table; "mark mask" changes every uplink's chains (still in
    # place); none falls back to a whole replace.
    assert modes[0] == "full" and set(modes[1:]) == {"in place"}, modes


KEEP = """
import json, subprocess, sys
from pyroute2 import IPRoute
from nmbalance.config import load_config
from nmbalance.core.decide import decide
from nmbalance.dataplane.apply import Applier
from nmbalance.sources.kernel_facts import snapshot

def sticky():
    out = subprocess.run(["nft", "-j", "list", "set", "inet", "nmbalance", "st_default__ISP1"],
                         capture_output=True, text=True, check=True).stdout
    elems = next(i["set"] for i in json.loads(out)["nftables"] if "set" in i).get("elem", [])
    return sorted((e["elem"]["val"], e["elem"]["expires"]) for e in elems)

ipr = IPRoute(strict_check=True)
applier = Applier(ipr)
steps = []
for path in sys.argv[1:]:
    config = load_config(path)
    steps.append(applier.apply(decide(config, snapshot(ipr, config))).nft_mode)
    if len(steps) == 1:
        subprocess.run(["nft", "add", "element", "inet", "nmbalance", "st_default__ISP1",
                        "{ 10.250.0.77 timeout 500s expires 400s }"], check=True)
    steps.append(sticky())
print(json.dumps(steps))
applier.close()
"""


def test_sticky_entries_stay_through_changes_in_place(
    router: Lab, write_config: WriteConfig
) -> None:
    sticky = THREE_ISPS.format(mode="persistence")
    paths = [write_config(text, f"keep{i}.toml") for i, text in enumerate([
        sticky,
        sticky + '[[port_forward]]\nport = "8080"\nto = "10.250.0.20"\n',  # sets untouched
        # The sticky sets made again: their entries carried over.
        sticky.replace('mode = "persistence"\n', 'mode = "persistence"\npersistence_timeout = 60\n'),
    ])]
    run = subprocess.run(["ip", "netns", "exec", router.rtr, sys.executable, "-c", KEEP, *paths],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 0, run.stderr
    first, learned, second, kept, third, carried = json.loads(run.stdout)
    assert (first, second, third) == ("full", "in place", "in place")
    assert [addr for addr, _ in learned] == ["10.250.0.77"] and learned[0][1] > 390
    assert [addr for addr, _ in kept] == ["10.250.0.77"] and kept[0][1] > 390
    # Made again with the new timeout, which caps what was learned before it.
    assert [addr for addr, _ in carried] == ["10.250.0.77"] and 50 < carried[0][1] <= 60


FALLBACK = """
import json, logging, subprocess, sys
logging.basicConfig(level=logging.INFO)
from pyroute2 import IPRoute
from nmbalance.config import load_config
from nmbalance.core.decide import decide
from nmbalance.dataplane.apply import Applier
from nmbalance.sources.kernel_facts import snapshot

ipr = IPRoute(strict_check=True)
applier = Applier(ipr)
modes = []
for i, path in enumerate(sys.argv[1:]):
    config = load_config(path)
    modes.append(applier.apply(decide(config, snapshot(ipr, config))).nft_mode)
    if i == 0:  # someone's rule in our chain, using a set the next config has no use for
        subprocess.run(["nft", "insert", "rule", "inet", "nmbalance", "prerouting",
                        "ip", "saddr", "@st_default__ISP1", "counter"], check=True)
print(json.dumps(modes))
applier.close()
"""


def test_a_change_in_place_the_kernel_refuses_is_done_whole(
    router: Lab, write_config: WriteConfig
) -> None:
    paths = [write_config(THREE_ISPS.format(mode=mode), f"fallback{i}.toml")
             for i, mode in enumerate(("persistence", "weighted"))]
    run = subprocess.run(["ip", "netns", "exec", router.rtr, sys.executable, "-c", FALLBACK,
                          *paths], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 0, run.stderr
    # In place, the sticky sets cannot be deleted while the foreign rule uses them.
    assert json.loads(run.stdout) == ["full", "full"], run.stdout
    assert "replacing the whole table" in run.stderr
    listing = router.sh(router.rtr, "nft", "list", "table", "inet", "nmbalance").stdout
    assert "st_default__ISP1" not in listing and "numgen random" in listing
