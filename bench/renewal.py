"""How soon nmbalance follows a gateway change that only a DHCP renewal tells.

A real NetworkManager manages two DHCP uplinks (dnsmasq at each ISP); the
ISP hands out a new router and, at the next renewal, NetworkManager
announces it on the bus. We time, from that signal:

- baseline: NetworkManager's own default route in the main table moving to
  the new router (ISP1, an ordinary connection);
- nmbalance: our per-uplink table 7701 following it.

NetworkManager 1.42 runs no dispatcher script for such a renewal, so a
dispatcher-only balancer would not follow at all.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from labkit.daemon import DaemonProcess  # noqa: E402
from labkit.lab import Lab, isp_probe  # noqa: E402
from labkit.managers import Bus, NetworkManager, set_router  # noqa: E402
from tests.integration.watch import SignalWatch  # noqa: E402

TRIALS = 4


def route_seen(lab: Lab, table: str, route: str, timeout: float) -> float:
    """When `route` shows up in `table` (polled every 2 ms)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if route in lab.ip(lab.rtr, "route", "show", "table", table).stdout:
            return time.monotonic()
        time.sleep(0.002)
    raise TimeoutError(f"{route} never appeared in table {table}")


def main() -> int:
    with Lab(isps=2, dhcp=True) as lab:
        bus = Bus(lab)
        NetworkManager(lab, bus).wait_activated(1, 2)
        config = lab.write(lab.config(weights=(1,), health={"interval_ms": 500}))
        config_text = Path(config).read_text().replace(f'probe = ["{isp_probe(2)}"]\n', "")
        Path(config).write_text(config_text)
        daemon = DaemonProcess(lab, config)
        daemon.wait_for("running:")
        lab.ip(lab.isp(1), "addr", "add", "10.101.0.254/24", "dev", "rtr")
        nm_ms, ours_ms = [], []
        routers = ["10.101.0.254", "10.101.0.1"] * TRIALS
        for router in routers[:TRIALS]:
            with SignalWatch(bus.address, "org.freedesktop.NetworkManager", needle=router) as w:
                set_router(lab, 1, router)
                signalled = w.wait(timeout=40)
                main_at = route_seen(lab, "main", f"default via {router} dev wan1 proto dhcp", 10)
                ours_at = route_seen(lab, "7701", f"default via {router} dev wan1 proto 211", 10)
            nm_ms.append((main_at - signalled) * 1000)
            ours_ms.append((ours_at - signalled) * 1000)
        daemon.stop()
    print(f"gateway change at a DHCP renewal, {TRIALS} renewals, from NetworkManager's signal:")
    print(f"  NetworkManager's own main-table route: median {statistics.median(nm_ms):6.1f} ms, "
          f"max {max(nm_ms):6.1f} ms")
    print(f"  nmbalance's table 7701:                median {statistics.median(ours_ms):6.1f} ms, "
          f"max {max(ours_ms):6.1f} ms  (target < 1000 ms)")
    print(f"  ratio of medians (nmbalance / NetworkManager): "
          f"{statistics.median(ours_ms) / max(statistics.median(nm_ms), 0.1):.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
