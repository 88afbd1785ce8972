"""Which network manager to follow: whichever owns its name on the bus,
switching when one appears or leaves; none means netlink alone.

Matches are added before anything is read, so no signal falls in between.
What a manager said last is kept while it is gone (a restart must not take
uplinks out of rotation) and while the bus itself is gone (a dbus-daemon
restart must not either), and replaced by a fresh read when both are back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from nmbalance.bus.client import DBUS, BusCallError, add_match, name_has_owner
from nmbalance.bus.compat import Message, MessageBus, MessageType
from nmbalance.core.facts import GatewaySource, ManagedLink
from nmbalance.sources.networkd import NetworkdSource
from nmbalance.sources.networkmanager import NetworkManagerSource

log = logging.getLogger(__name__)


class Source(Protocol):
    name: str
    manager: GatewaySource
    matches: tuple[str, ...]

    def wants(self, msg: Message) -> bool: ...

    async def snapshot(self) -> dict[str, ManagedLink]: ...


class ManagerWatch:
    """Outlives the bus: attach() it to each new connection, detach() when one is lost."""

    def __init__(self, on_change: Callable[[], None],
                 sources: Callable[[MessageBus], list[Source]] | None = None) -> None:
        self.on_change = on_change
        self._make_sources = sources or (lambda bus: [NetworkManagerSource(bus),
                                                      NetworkdSource(bus)])
        self.bus: MessageBus | None = None
        self.sources: list[Source] = []
        self.present: dict[str, bool] = {}
        self.links: dict[str, ManagedLink] = {}
        self._stale = True

    @property
    def following(self) -> list[str]:
        return [s.manager.value for s in self.sources if self.present.get(s.name)]

    async def attach(self, bus: MessageBus) -> None:
        """Subscribe on `bus`, then read who is there; what they say is read at the
        next current(), so nothing is lost between subscribing and reading."""
        self.bus, self.sources = bus, self._make_sources(bus)
        bus.add_message_handler(self._on_message)
        for source in self.sources:
            await add_match(bus, f"type='signal',sender='{DBUS}',interface='{DBUS}',"
                                 f"member='NameOwnerChanged',arg0='{source.name}'")
            for rule in source.matches:
                await add_match(bus, rule)
        for source in self.sources:
            self.present[source.name] = await name_has_owner(bus, source.name)
        self._stale = True
        log.info("following %s", ", ".join(self.following) or "the kernel alone (no network manager)")

    def detach(self) -> None:
        """The bus is gone: keep every manager's last word until it can be asked again."""
        self.bus, self.sources = None, []
        self.present = {}

    def _on_message(self, msg: Message) -> None:
        if msg.message_type != MessageType.SIGNAL:
            return
        if msg.member == "NameOwnerChanged" and msg.interface == DBUS and msg.body:
            for source in self.sources:
                if msg.body[0] == source.name:
                    present = bool(msg.body[2])
                    if present != self.present.get(source.name):
                        self.present[source.name] = present
                        log.info("%s %s the bus", source.manager.value,
                                 "joined" if present else "left")
                        self._changed()
            return
        if any(self.present.get(s.name) and s.wants(msg) for s in self.sources):
            self._changed()

    def invalidate(self) -> None:
        """Read the managers again at the next reconcile (a dispatcher asked)."""
        self._stale = True

    def _changed(self) -> None:
        self._stale = True
        self.on_change()

    async def current(self) -> dict[str, ManagedLink]:
        """What the managers say now; read again only after a signal said it changed.
        Without a bus, what they said last."""
        if not self._stale or self.bus is None:
            return self.links
        self._stale = False
        links = dict(self.links)
        for source in self.sources:
            if not self.present.get(source.name):
                continue  # gone (or restarting): keep what it said last
            try:
                fresh = await source.snapshot()
            except (BusCallError, OSError) as exc:
                log.warning("reading %s failed, keeping what it said before: %s",
                            source.manager.value, exc)
                self._stale = True
                continue
            except Exception:  # a reply no check foresaw: keep what it said before
                log.exception("reading %s failed, keeping what it said before",
                              source.manager.value)
                continue
            links = {k: v for k, v in links.items() if v.manager is not source.manager}
            links.update(fresh)
        self.links = links
        return links


async def _read_once(timeout: float) -> dict[str, ManagedLink]:
    from nmbalance.bus.client import close, connect

    bus = await connect()
    try:
        links: dict[str, ManagedLink] = {}
        for source in (NetworkManagerSource(bus), NetworkdSource(bus)):
            if await name_has_owner(bus, source.name):
                links.update(await asyncio.wait_for(source.snapshot(), timeout))
        return links
    finally:
        await close(bus)


def read_once(timeout: float = 5.0) -> dict[str, ManagedLink]:
    """For one-shot commands: what the running managers say, or nothing."""
    try:
        return asyncio.run(_read_once(timeout))
    except Exception as exc:  # no bus, or a broken one: the kernel alone then
        log.info("no network manager read (%s): using the kernel alone", exc)
        return {}
