"""Address types shared by the config, the core and the sources."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Address, IPv6Interface, IPv6Network

AnyAddress = IPv4Address | IPv6Address
AnyInterface = IPv4Interface | IPv6Interface
AnyNetwork = IPv4Network | IPv6Network
