"""Build and tear down the lab topology:

    lan (client) -- rtr (nmbalance) -- ispN (gateway) -- inet (servers)

Every namespace name starts with a prefix unique to this process, every
interface lives only inside the lab namespaces, and close() stops the
processes it started (by PID) and deletes the namespaces.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVER_ADDR = "203.0.113.10"
SERVER_ADDR6 = "2001:db8:ff::10"
SERVER_PORT = 8000
DNS_ADDR = "203.0.113.53"
LAN_NET = "10.250.0"
_counter = itertools.count(1)


def isp_gateway(n: int) -> str:
    return f"10.10{n}.0.1" if n < 10 else f"10.1{n}.0.1"


def isp_router_addr(n: int) -> str:
    return f"10.10{n}.0.2" if n < 10 else f"10.1{n}.0.2"


def isp_probe(n: int) -> str:
    """A per-ISP probe target inside the inet namespace."""
    return f"198.51.100.{n}"


def isp_net6(n: int) -> str:
    """ISP n's prefix on the router's link: the router is ::2, and only sources in it
    get through the ISP (BCP38)."""
    return f"2001:db8:1{n:02d}::"


def isp_pd6(n: int) -> str:
    """The prefix ISP n delegates to the router (routed to its uplink address)."""
    return f"2001:db8:1{n:02d}:100::/56"


def isp_probe6(n: int) -> str:
    """A per-ISP IPv6 probe target inside the inet namespace."""
    return f"2001:db8:ff:1::{n}"


LAN6_NET = "fd00:250::"  # a ULA LAN: out only through nat66
ISP_GATEWAY6 = "fe80::1"  # every ISP's router announces the same link-local address


def run(cmd: Sequence[str], check: bool = True, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), check=check, text=True, capture_output=True, **kw)  # type: ignore[call-overload, no-any-return]


@dataclass
class Lab:
    isps: int = 3
    # Uplinks get their address and gateway by DHCP from dnsmasq in each ISP, for
    # NetworkManager or systemd-networkd to configure; else they are static.
    dhcp: bool = False
    prefix: str = ""
    lan: str = ""
    rtr: str = ""
    inet: str = ""
    procs: list[subprocess.Popen[str]] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    workdir: Path = Path("/tmp")
    resolv_dirs: list[Path] = field(default_factory=list)  # /etc/netns/NS of ours
    delayed: dict[tuple[int, str | None], int] = field(default_factory=dict)  # -> its queue
    dual: tuple[int, ...] = ()  # ISPs that carry IPv6 too (dual_stack)

    def __post_init__(self) -> None:
        if not self.prefix:
            self.prefix = f"nmb{os.getpid() % 10000}x{next(_counter)}"
        self.lan, self.rtr, self.inet = (f"{self.prefix}-{r}" for r in ("lan", "rtr", "inet"))
        self.workdir = Path(f"/tmp/{self.prefix}")
        # Never this machine's own system bus: the lab's (labkit.managers.Bus), or none.
        self.bus_address = f"unix:path={self.workdir}/no-bus.sock"

    def isp(self, n: int) -> str:
        return f"{self.prefix}-isp{n}"

    # --- running things in namespaces -------------------------------------------------
    def sh(self, ns: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(["ip", "netns", "exec", ns, *cmd], check=check)

    def ip(self, ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(["ip", "-n", ns, *args], check=check)

    def spawn(self, ns: str, *cmd: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *cmd], text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.procs.append(proc)
        return proc

    def python(self, ns: str, module: str, *args: str) -> list[str]:
        return ["ip", "netns", "exec", ns, sys.executable, "-m", module, *args]

    def nmbalance(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, PYTHONPATH=str(ROOT), DBUS_SYSTEM_BUS_ADDRESS=self.bus_address)
        return subprocess.run(
            ["ip", "netns", "exec", self.rtr, sys.executable, "-m", "nmbalance", *args],
            text=True, capture_output=True, check=check, env=env,
        )

    # --- building ----------------------------------------------------------------------
    def _netns(self, name: str) -> None:
        run(["ip", "netns", "add", name])
        self.namespaces.append(name)
        self.ip(name, "link", "set", "lo", "up")
        # Link-local IPv6 addresses appear at once instead of after DAD, so
        # kernel state does not drift while a test compares it.
        self.sh(name, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0",
                "net.ipv6.conf.all.accept_dad=0")

    def build(self) -> Lab:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def _build(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for ns in (self.lan, self.rtr, self.inet, *(self.isp(n) for n in range(1, self.isps + 1))):
            self._netns(ns)
        # LAN <-> router
        self.ip(self.rtr, "link", "add", "lan0", "type", "veth", "peer", "name", "eth0",
                "netns", self.lan)
        self.ip(self.rtr, "addr", "add", f"{LAN_NET}.1/24", "dev", "lan0")
        self.ip(self.lan, "addr", "add", f"{LAN_NET}.2/24", "dev", "eth0")
        for ns, dev in ((self.rtr, "lan0"), (self.lan, "eth0")):
            self.ip(ns, "link", "set", dev, "up")
        self.ip(self.lan, "route", "add", "default", "via", f"{LAN_NET}.1")
        self.sh(self.rtr, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        self.sh(self.inet, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        self.ip(self.inet, "addr", "add", f"{SERVER_ADDR}/32", "dev", "lo")
        for n in range(1, self.isps + 1):
            self.add_isp(n)
        self.start_server()

    def add_isp(self, n: int) -> None:
        isp = self.isp(n)
        # router wanN <-> ISP "rtr"; ISP "inet" <-> inet "ispN"
        self.ip(self.rtr, "link", "add", f"wan{n}", "type", "veth", "peer", "name", "rtr",
                "netns", isp)
        self.ip(isp, "link", "add", "inet", "type", "veth", "peer", "name", f"isp{n}",
                "netns", self.inet)
        self.ip(isp, "addr", "add", f"{isp_gateway(n)}/24", "dev", "rtr")
        if not self.dhcp:
            self.ip(self.rtr, "addr", "add", f"{isp_router_addr(n)}/24", "dev", f"wan{n}")
        self.ip(isp, "addr", "add", f"10.20{n}.0.1/30" if n < 10 else f"10.2{n}.0.1/30",
                "dev", "inet")
        inet_side = f"10.20{n}.0.2" if n < 10 else f"10.2{n}.0.2"
        self.ip(self.inet, "addr", "add", f"{inet_side}/30", "dev", f"isp{n}")
        for ns, dev in ((isp, "rtr"), (isp, "inet"), (self.inet, f"isp{n}")):
            self.ip(ns, "link", "set", dev, "up")
        self.sh(isp, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        self.ip(isp, "route", "add", "default", "via", inet_side)
        self.ip(self.inet, "route", "add", f"10.10{n}.0.0/24" if n < 10 else f"10.1{n}.0.0/24",
                "via", f"10.20{n}.0.1" if n < 10 else f"10.2{n}.0.1")
        self.ip(self.inet, "addr", "add", f"{isp_probe(n)}/32", "dev", "lo")
        if self.dhcp:
            # The router's side stays down: its network manager brings it up and asks.
            from labkit.managers import start_dnsmasq

            start_dnsmasq(self, n)
            return
        self.ip(self.rtr, "link", "set", f"wan{n}", "up")
        # What a DHCP client would install: a default route per uplink, distinct metrics.
        self.ip(self.rtr, "route", "add", "default", "via", isp_gateway(n), "dev", f"wan{n}",
                "metric", str(100 + n))

    def start_server(self, address: str = SERVER_ADDR, ns: str | None = None,
                     port: int = SERVER_PORT) -> None:
        proc = subprocess.Popen(
            self.python(ns or self.inet, "labkit.server", address, str(port)),
            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
        )
        self.procs.append(proc)
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("lab server did not start: " + (proc.stderr.read() if proc.stderr else ""))

    def add_lan(self, n: int) -> str:
        """Another LAN: router `lanN` 10.25N.0.1/24, a host namespace at .2."""
        ns = f"{self.prefix}-lan{n}"
        self._netns(ns)
        self.ip(self.rtr, "link", "add", f"lan{n}", "type", "veth", "peer", "name", "eth0",
                "netns", ns)
        self.ip(self.rtr, "addr", "add", f"10.25{n}.0.1/24", "dev", f"lan{n}")
        self.ip(ns, "addr", "add", f"10.25{n}.0.2/24", "dev", "eth0")
        for where, dev in ((self.rtr, f"lan{n}"), (ns, "eth0")):
            self.ip(where, "link", "set", dev, "up")
        self.ip(ns, "route", "add", "default", "via", f"10.25{n}.0.1")
        return ns

    def start_dns(self, names: Mapping[str, str], address: str = DNS_ADDR) -> None:
        """A DNS server in the internet namespace answering `names` (name -> address),
        and the router's resolv.conf pointing at it (`ip netns exec` mounts
        /etc/netns/NS/resolv.conf for what runs in the namespace)."""
        self.ip(self.inet, "addr", "add", f"{address}/32", "dev", "lo")
        log = self.workdir / "dns.log"
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.inet, "dnsmasq", "--keep-in-foreground",
             "--conf-file=/dev/null", "--no-resolv", "--no-hosts", f"--listen-address={address}",
             "--bind-interfaces", "--port=53", "--user=root", f"--log-facility={log}",
             "--log-queries", *(f"--address=/{n}/{a}" for n, a in names.items())],
            text=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        etc = Path("/etc/netns") / self.rtr
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "resolv.conf").write_text(f"nameserver {address}\n")
        self.resolv_dirs.append(etc)
        if not wait_for(lambda: log.exists() and "started" in log.read_text(), 5):
            raise RuntimeError("the lab's DNS server did not start")

    def dns_queries(self) -> list[str]:
        """What the lab's DNS server was asked, as "NAME from SOURCE"."""
        log = self.workdir / "dns.log"
        out = []
        for line in log.read_text().splitlines() if log.exists() else []:
            parts = line.split()
            if "query[A]" in parts:
                i = parts.index("query[A]")
                out.append(f"{parts[i + 1]} from {parts[i + 3]}")
        return out

    def add_ipv6(self, via: int = 1) -> str:
        """Global IPv6 for the LAN, routed by the system (not by nmbalance) through ISP
        `via`, with a server on the internet side; its address."""
        lan_net, up, far = "2001:db8:250::", f"2001:db8:10{via}::", f"2001:db8:20{via}::"
        for ns in (self.rtr, self.isp(via), self.inet):
            self.sh(ns, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
        self.ip(self.rtr, "-6", "addr", "add", f"{lan_net}1/64", "dev", "lan0")
        self.ip(self.lan, "-6", "addr", "add", f"{lan_net}2/64", "dev", "eth0")
        self.ip(self.lan, "-6", "route", "add", "default", "via", f"{lan_net}1")
        self.ip(self.rtr, "-6", "addr", "add", f"{up}2/64", "dev", f"wan{via}")
        self.ip(self.isp(via), "-6", "addr", "add", f"{up}1/64", "dev", "rtr")
        self.ip(self.rtr, "-6", "route", "add", "default", "via", f"{up}1", "dev", f"wan{via}")
        self.ip(self.isp(via), "-6", "addr", "add", f"{far}1/64", "dev", "inet")
        self.ip(self.inet, "-6", "addr", "add", f"{far}2/64", "dev", f"isp{via}")
        self.ip(self.isp(via), "-6", "route", "add", "default", "via", f"{far}2")
        self.ip(self.isp(via), "-6", "route", "add", f"{lan_net}/64", "via", f"{up}2")
        self.ip(self.inet, "-6", "route", "add", "2001:db8::/32", "via", f"{far}1")
        self.ip(self.inet, "-6", "addr", "add", f"{SERVER_ADDR6}/128", "dev", "lo")
        self.start_server(SERVER_ADDR6)
        return SERVER_ADDR6

    def dual_stack(self, isps: Sequence[int] | None = None) -> str:
        """IPv6 through each ISP of `isps` (all: None), as real ones give it: the
        router's uplink gets 2001:db8:1NN::2/64 and a default route via fe80::1 (what a
        router advertisement installs); the ISP forwards only sources of that prefix.
        Each ISP also routes a delegated prefix (isp_pd6) to the router, for npt.
        A ULA LAN (fd00:250::/64) gets out only by nat66 or npt. Returns the server's
        address."""
        self.dual = tuple(isps or range(1, self.isps + 1))
        for ns in (self.rtr, self.inet, *(self.isp(n) for n in self.dual)):
            self.sh(ns, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
        for n in self.dual:
            # carrier() sets the ISP's side down: a real ISP's router keeps its addresses.
            self.sh(self.isp(n), "sysctl", "-qw", "net.ipv6.conf.rtr.keep_addr_on_down=1")
        self.ip(self.rtr, "-6", "addr", "add", f"{LAN6_NET}1/64", "dev", "lan0")
        self.ip(self.lan, "-6", "addr", "add", f"{LAN6_NET}2/64", "dev", "eth0")
        self.ip(self.lan, "-6", "route", "add", "default", "via", f"{LAN6_NET}1")
        for n in self.dual:
            isp, net, far = self.isp(n), isp_net6(n), f"2001:db8:2{n:02d}::"
            self.ip(isp, "-6", "addr", "add", f"{ISP_GATEWAY6}/64", "dev", "rtr")
            self.ip(isp, "-6", "addr", "add", f"{net}1/64", "dev", "rtr")
            self.ip(self.rtr, "-6", "addr", "add", f"{net}2/64", "dev", f"wan{n}")
            self.ip(isp, "-6", "addr", "add", f"{far}1/64", "dev", "inet")
            self.ip(self.inet, "-6", "addr", "add", f"{far}2/64", "dev", f"isp{n}")
            self.ip(isp, "-6", "route", "add", "default", "via", f"{far}2")
            self.ip(self.inet, "-6", "route", "add", f"{net}/64", "via", f"{far}1")
            self.ip(isp, "-6", "route", "add", isp_pd6(n), "via", f"{net}2", "dev", "rtr")
            self.ip(self.inet, "-6", "route", "add", isp_pd6(n), "via", f"{far}1")
            self.ip(self.inet, "-6", "addr", "add", f"{isp_probe6(n)}/128", "dev", "lo")
            self.sh(isp, "nft", f"add table inet bcp38; add chain inet bcp38 forward {{ type "
                    f"filter hook forward priority -10; iifname \"rtr\" meta nfproto ipv6 "
                    f"ip6 saddr != {{ {net}/64, {isp_pd6(n)} }} drop; }}")
            self.router_advertised(n)
        self.ip(self.inet, "-6", "addr", "add", f"{SERVER_ADDR6}/128", "dev", "lo")
        self.start_server(SERVER_ADDR6)
        return SERVER_ADDR6

    def router_advertised(self, n: int) -> None:
        """The router's IPv6 default route via ISP n, as its advertisement installs it
        (the kernel drops it with the carrier, and the next advertisement brings it back)."""
        self.ip(self.rtr, "-6", "route", "replace", "default", "via", ISP_GATEWAY6, "dev",
                f"wan{n}", "metric", str(100 + n))

    def start_radvd(self) -> subprocess.Popen[str]:
        """radvd on the router, reading the config nmbalance wrote (config(ipv6="prefix"))."""
        return self.spawn(self.rtr, "radvd", "-n", "-C", str(self.workdir / "radvd.conf"),
                          "-p", str(self.workdir / "radvd.pid"), "-m", "logfile", "-l",
                          str(self.workdir / "radvd.log"))

    def slaac(self) -> dict[str, tuple[str, bool]]:
        """The LAN host's autoconfigured addresses: /64 prefix -> (address, deprecated)."""
        out = json.loads(self.ip(self.lan, "-j", "-6", "addr", "show", "dev", "eth0").stdout)
        return {str(ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}").network):
                (a["local"], bool(a.get("deprecated")))
                for link in out for a in link.get("addr_info", [])
                if a.get("dynamic") and a.get("scope") == "global"}

    def ipv6_dead(self, n: int, on: bool) -> None:
        """ISP n forwards no IPv6, while its IPv4 and its carrier stay."""
        self._isp_filter(n, "v6dead", "meta nfproto ipv6 drop;", on)

    def ipv4_dead(self, n: int, on: bool) -> None:
        """ISP n forwards no IPv4, while its IPv6 and its carrier stay."""
        self._isp_filter(n, "v4dead", "meta nfproto ipv4 drop;", on)

    # --- configs ----------------------------------------------------------------------
    def config(self, mode: str = "weighted", weights: Sequence[int] = (1, 3, 2),
               probe: bool = True, health: dict[str, object] | None = None,
               extra: str = "", top: str = "", ipv6: bool | str = False) -> str:
        """A TOML config for this lab: one uplink per ISP, each probing its own target
        (with `ipv6`: ipv6 = "nat66", or the mode it names, and its IPv6 target too
        where it has IPv6; under "npt" its delegated prefix as prefix6).
        `top` holds top-level keys, `extra` more tables."""
        lines = [f'mode = "{mode}"', 'snippets_dir = ""', *top.splitlines()]
        mode6 = ipv6 if isinstance(ipv6, str) else "nat66" if ipv6 else ""
        if mode6:
            lines.append(f'ipv6 = "{mode6}"')
        for n in range(1, self.isps + 1):
            lines += ["[[uplink]]", f'name = "ISP{n}"', f'interface = "wan{n}"',
                      f"weight = {weights[(n - 1) % len(weights)]}"]
            targets = [isp_probe(n), *([isp_probe6(n)] if mode6 and n in self.dual else [])]
            if mode6 in ("npt", "prefix") and n in self.dual:
                lines.append(f'prefix6 = "{isp_pd6(n)}"')
            if probe:
                lines.append("probe = [" + ", ".join(f'"{t}"' for t in targets) + "]")
        lines += ["[[lan]]", 'name = "LAN"', 'interface = "lan0"']
        if mode6 == "prefix":
            lines += ["[radvd]", f'config = "{self.workdir}/radvd.conf"',
                      f'pidfile = "{self.workdir}/radvd.pid"', "max_interval = 4"]
        if health:
            lines.append("[health]")
            lines += [f"{k} = {str(v).lower() if isinstance(v, bool) else v}"
                      for k, v in health.items()]
        return "\n".join(lines) + "\n" + extra

    def write(self, text: str, name: str = "nmbalance.toml") -> str:
        path = self.workdir / name
        path.write_text(text)
        return str(path)

    # --- things tests do ---------------------------------------------------------------
    def carrier(self, n: int, up: bool) -> None:
        self.ip(self.isp(n), "link", "set", "rtr", "up" if up else "down")
        if up and n in self.dual:
            # The kernel drops a link-local address with the link, even with
            # keep_addr_on_down: the ISP's router takes its fe80::1 back.
            self.ip(self.isp(n), "-6", "addr", "replace", f"{ISP_GATEWAY6}/64", "dev", "rtr")
            if wait_for(lambda: "LOWER_UP" in self.ip(self.rtr, "link", "show", f"wan{n}").stdout,
                        3):
                self.router_advertised(n)

    def blackhole(self, n: int, on: bool) -> None:
        """ISP n drops everything it would forward; its carrier stays up."""
        self._isp_filter(n, "blackhole", "policy drop;", on)

    def lossy(self, n: int, percent: int | None) -> None:
        """ISP n drops `percent` % of what it forwards, at random; None: repaired."""
        self._isp_filter(n, "lossy", f"numgen random mod 100 < {percent} drop;",
                         percent is not None)

    def delay(self, n: int, ms: float, dst: str | None = None) -> None:
        """Delay what the router sends through ISP n (to `dst` only, if given, IPv4 or
        IPv6; else its IPv4) by `ms`
        (labkit.delayer: this kernel has no netem). The first call starts the
        delayer; later ones retune it."""
        key = (n, dst)
        queue = self.delayed.setdefault(key, 100 + len(self.delayed))
        path = self.workdir / f"delay{queue}"
        fresh = not path.exists()
        path.write_text(f"{ms}\n")
        if not fresh:
            return
        proc = subprocess.Popen(self.python(self.isp(n), "labkit.delayer", str(queue), str(path)),
                                text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=dict(os.environ, PYTHONPATH=str(ROOT)))
        self.procs.append(proc)
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("delayer did not start: " + (proc.stderr.read() if proc.stderr
                                                            else ""))
        # One destination's delay goes before any ISP-wide one (a queue's verdict ends
        # the chain for that packet).
        tables = "ip6tables" if dst and ":" in dst else "iptables"
        self.sh(self.isp(n), tables, *(["-I", "FORWARD", "1"] if dst else ["-A", "FORWARD"]),
                "-i", "rtr",
                *(["-d", dst] if dst else []), "-j", "NFQUEUE", "--queue-num", str(queue),
                "--queue-bypass")

    def block_probes(self, n: int, on: bool) -> None:
        """Drop only traffic to the probe targets: the ISP carries everything else."""
        self._isp_filter(n, "labprobe", "ip daddr 198.51.100.0/24 drop; "
                         "ip6 daddr 2001:db8:ff:1::/64 drop;", on)

    def _isp_filter(self, n: int, table: str, rule: str, on: bool) -> None:
        if on:
            self.sh(self.isp(n), "nft", f"add table inet {table}; add chain inet {table} forward_"
                    f"{table} {{ type filter hook forward priority 0; {rule} }}")
        else:
            self.sh(self.isp(n), "nft", f"delete table inet {table}", check=False)

    def sources(self, count: int, ns: str | None = None, concurrency: int = 32,
                bind: str | None = None, server: str = SERVER_ADDR, port: int = SERVER_PORT
                ) -> dict[str, int]:
        """Open `count` connections to the server; how many it saw from each source."""
        args = [server, str(port), str(count), str(concurrency)]
        if bind:
            args.append(bind)
        out = run(self.python(ns or self.lan, "labkit.client", *args),
                  env=dict(os.environ, PYTHONPATH=str(ROOT))).stdout
        return {line.split()[0]: int(line.split()[1]) for line in out.splitlines()}

    def connections(self, count: int, ns: str | None = None, concurrency: int = 32,
                    bind: str | None = None, port: int = SERVER_PORT) -> dict[int, int]:
        """Open `count` connections to the server; how many each ISP carried."""
        seen = self.sources(count, ns, concurrency, bind, port=port)
        tally: dict[int, int] = {}
        for source, n in seen.items():
            tally[self.isp_of(source)] = tally.get(self.isp_of(source), 0) + n
        return tally

    def start_stream(self, seconds: float, interval_ms: float = 5, server: str = SERVER_ADDR
                     ) -> tuple[subprocess.Popen[str], int]:
        """A long echo stream from the LAN (labkit.stream); its process and local port.
        Read its result with json.loads(proc.stdout.readline())."""
        proc = subprocess.Popen(
            self.python(self.lan, "labkit.stream", server, str(SERVER_PORT), str(seconds),
                        str(interval_ms)),
            stdout=subprocess.PIPE, text=True, env={"PYTHONPATH": str(ROOT)},
        )
        self.procs.append(proc)  # stopped by close() even if the caller fails
        assert proc.stdout is not None
        return proc, int(json.loads(proc.stdout.readline())["port"])

    def flow_mark(self, port: int) -> int:
        """The ct mark of the LAN's TCP flow from `port` (0: none, or no such flow)."""
        out = self.sh(self.rtr, "conntrack", "-L", "-p", "tcp", "--sport", str(port)).stdout
        return int(out.split("mark=")[1].split()[0]) if "mark=" in out else 0

    # --- someone else's state in the router, which nmbalance must never touch ---------------
    def add_foreign_nft(self) -> None:
        self.sh(self.rtr, "nft", "add table inet userfw; add chain inet userfw input "
                "{ type filter hook input priority 10; policy accept; }; "
                "add rule inet userfw input tcp dport 2222 accept; "
                "add set inet userfw blocked { type ipv4_addr; elements = { 192.0.2.66 } }")

    def add_foreign(self) -> None:
        """A firewall table, and a rule and routes inside our own priority and table
        ranges without our proto: none of it is ours."""
        self.add_foreign_nft()
        self.ip(self.rtr, "rule", "add", "priority", "7705", "from", "192.0.2.0/24",
                "lookup", "7750")
        self.ip(self.rtr, "route", "add", "192.0.2.0/24", "via", "10.101.0.1", "table", "7701")
        self.ip(self.rtr, "route", "add", "198.18.0.0/15", "via", "10.102.0.1", "table", "7750")

    def remove_foreign(self) -> None:
        self.sh(self.rtr, "nft", "delete table inet userfw", check=False)
        self.ip(self.rtr, "rule", "del", "priority", "7705", check=False)
        self.ip(self.rtr, "route", "del", "192.0.2.0/24", "table", "7701", check=False)
        self.ip(self.rtr, "route", "flush", "table", "7750", check=False)

    def foreign_state(self) -> str:
        """Everything that is not ours: the foreign table, rules and routes without our proto."""
        table = self.sh(self.rtr, "nft", "list", "table", "inet", "userfw", check=False).stdout
        rules = [line for line in self.ip(self.rtr, "rule", "show").stdout.splitlines()
                 if "proto 211" not in line]
        # Sorted: a device that comes back up gets its kernel routes listed in another order.
        routes = sorted(line for line in self.ip(self.rtr, "route", "show", "table", "all"
                                                 ).stdout.splitlines() if "proto 211" not in line)
        return "\n".join([table, *rules, *routes])

    def isp_of(self, source: str) -> int:
        if ":" in source:  # IPv6: masqueraded to the uplink's address in the ISP's prefix
            for n in self.dual:
                if any(ipaddress.ip_address(source) in ipaddress.ip_network(net)
                       for net in (f"{isp_net6(n)}/64", isp_pd6(n))):
                    return n
            return 0
        for n in range(1, self.isps + 1):
            if source.rsplit(".", 1)[0] == isp_router_addr(n).rsplit(".", 1)[0]:
                return n
        return 0  # not through any ISP (or failed: "-")

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
        self.procs.clear()
        for ns in reversed(self.namespaces):
            pids = run(["ip", "netns", "pids", ns], check=False).stdout.split()
            for pid in pids:  # only processes inside our own namespace
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            run(["ip", "netns", "del", ns], check=False)
        self.namespaces.clear()
        for etc in self.resolv_dirs:
            shutil.rmtree(etc, ignore_errors=True)
        run(["rm", "-rf", str(self.workdir)], check=False)

    def __enter__(self) -> Lab:
        return self.build()

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_for(predicate: object, timeout: float = 5.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return True
        time.sleep(interval)
    return False
