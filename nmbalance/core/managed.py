"""Lay what the network managers say over the kernel's facts. Pure.

The kernel stays the authority on presence, carrier and addresses; a
manager adds what the kernel cannot tell: the gateway of an uplink that has
no default route (NetworkManager's never-default, networkd's UseGateway=no),
its DNS servers, and which interface a NetworkManager connection is on now.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from nmbalance.config.model import Config
from nmbalance.core.facts import Facts, GatewaySource, ManagedLink


def resolve_interfaces(config: Config, managed: Mapping[str, ManagedLink]) -> dict[str, str]:
    """Uplink name -> interface, for uplinks named by connection (id or uuid)."""
    out: dict[str, str] = {}
    for u in config.uplink:
        if u.connection is None:
            continue
        for link in sorted(managed.values(), key=lambda m: m.interface):
            if u.connection in (link.connection_id, link.connection_uuid) and (
                    u.interface is None or u.interface == link.interface):
                out[u.name] = link.interface
                break
    return out


def with_managed(config: Config, facts: Facts, managed: Mapping[str, ManagedLink]) -> Facts:
    dns_configured = {u.name for u in config.uplink if u.dns}
    uplinks = []
    for f in facts.uplinks:
        link = managed.get(f.interface or "")
        if link is not None and f.present and not f.point_to_point:
            gateway = link.gateway
            if gateway is not None and gateway.version == 4 and any(
                    gateway in a.network for a in f.addresses if a.version == 4):
                f = replace(f, gateway=gateway, gateway_source=link.gateway_source,
                            gateway_reason="")
            elif gateway is not None and f.gateway is None:
                # Said, but not reachable from the addresses the kernel has now
                # (a manager tearing the link down, or a stale lease): not usable.
                f = replace(f, gateway_reason=f"{link.manager.value} gateway {gateway} is not "
                                              f"on a network of {link.interface}")
            elif f.gateway is None:
                f = replace(f, gateway_reason=f"{link.manager.value} reports no gateway for "
                                              f"{link.interface} ({link.state})")
            if link.dns and f.name not in dns_configured:
                f = replace(f, dns=link.dns)
            if (link.gateway6 is not None and link.gateway6.version == 6
                    and f.gateway6_source is not GatewaySource.STATIC):
                f = replace(f, gateway6=link.gateway6, gateway6_source=link.manager)
        uplinks.append(f)
    return replace(facts, uplinks=tuple(uplinks))
