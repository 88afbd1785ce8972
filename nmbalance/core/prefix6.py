"""ipv6 = "prefix": every LAN gets a /64 of each uplink's prefix6, advertised by
radvd; a LAN host picks its source address, and so its uplink, as RFC 6724 says:
a preferred address before a deprecated one. So only priority is possible: the
top usable uplink's prefix is advertised preferred, the others deprecated (still
valid, so their connections go on). Traffic leaves by its source prefix; a dead
uplink's prefix leaves by the top uplink, translated into its prefix (the rescue),
until the hosts stop using it. Pure, like decide()."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv6Network
from typing import TYPE_CHECKING, Any

from nmbalance.config.model import Config, RadvdSettings

if TYPE_CHECKING:
    from nmbalance.core.decide import Decision

LAN_PREFIX_LENGTH = 64  # what SLAAC needs


def lan_block(prefix6: IPv6Network, k: int) -> IPv6Network:
    """LAN number k's /64 of an uplink's prefix6 (config order; the cross-check made
    sure every LAN has one)."""
    return IPv6Network((int(prefix6.network_address) + (k << (128 - LAN_PREFIX_LENGTH)),
                        LAN_PREFIX_LENGTH))


@dataclass(frozen=True)
class Advertised:
    """One prefix in one LAN's router advertisements."""

    interface: str
    prefix: str
    uplink: str  # name
    preferred: bool


@dataclass(frozen=True)
class RadvdPlan:
    path: str
    pidfile: str
    text: str


def advertised(config: Config, top: str | None) -> list[Advertised]:
    """Every LAN's prefixes: one per uplink with a prefix6, preferred only for `top`
    (the uplink that takes new IPv6 connections; None: none can)."""
    return [Advertised(lan.device, str(lan_block(u.prefix6, k)), u.name, u.name == top)
            for k, lan in enumerate(config.lan)
            for u in config.uplink if u.prefix6 is not None]


def render_radvd(settings: RadvdSettings, prefixes: Sequence[Advertised]) -> str:
    """A whole radvd.conf: one interface block per LAN device."""
    out = ["# Written by nmbalance (ipv6 = \"prefix\"); rewritten on every change."]
    low = max(3, settings.max_interval // 3)
    for device in dict.fromkeys(p.interface for p in prefixes):
        out += [f"interface {device} {{", "  AdvSendAdvert on;",
                f"  MinRtrAdvInterval {low};", f"  MaxRtrAdvInterval {settings.max_interval};"]
        for p in prefixes:
            if p.interface == device:
                preferred = settings.preferred_lifetime if p.preferred else 0
                out += [f"  prefix {p.prefix} {{  # {p.uplink}",
                        "    AdvOnLink on;", "    AdvAutonomous on;",
                        f"    AdvPreferredLifetime {preferred};",
                        f"    AdvValidLifetime {settings.valid_lifetime};", "  };"]
        out.append("};")
    return "\n".join(out) + "\n"


def prefix_contents(config: Config, per: Mapping[str, Decision], usable: set[str],
                    top: str | None, idents: Mapping[str, str]) -> dict[str, Any]:
    """prefix's fields of TableContents: each prefix6 -> the uplink its sources leave
    by (its own while usable, else the top one's), the rescue translations (a dead
    uplink's LAN blocks into the top uplink's), and the prefixes never masqueraded."""
    src: dict[str, str] = {}
    rescue: list[tuple[str, str]] = []
    with6 = [u for u in config.uplink if u.prefix6 is not None]
    for u in with6:
        assert u.prefix6 is not None
        by = u.name if u.name in usable or top is None else top
        src[str(u.prefix6)] = idents[by]
        if by != u.name and (t := next(v for v in with6 if v.name == by)).prefix6 is not None:
            rescue += [(str(lan_block(u.prefix6, k)), str(lan_block(t.prefix6, k)))
                       for k in range(len(config.lan))]
    devices = {d.interface: idents[u.name] for u in with6
               if (d := per[u.name]).facts.present and d.interface}
    return {"prefix6_src": src, "native6": tuple(sorted(src)),
            "npt6": {idents[top]: tuple(rescue)} if top and rescue else {},
            "npt6_devices": devices}
