"""Health events and applies out to the administrator's hooks and mailbox,
one at a time and in the order they happened, off the reconcile path."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nmbalance.config.model import Config
from nmbalance.publish import mail
from nmbalance.publish.hooks import HookRunner

MAILED = ("up", "down", "long-down")


@dataclass(frozen=True)
class Event:
    name: str  # the hook directory: up, down, degraded, long-down, post-apply
    env: dict[str, str]
    subject: str = ""  # one line for the mail, when the event is mailed


class EventQueue:
    def __init__(self, config: Callable[[], Config], config_path: str,
                 summary: Callable[[], str]) -> None:
        self._config = config
        self._config_path = config_path
        self._summary = summary
        self._queue: asyncio.Queue[Event] = asyncio.Queue()

    def put(self, event: Event) -> None:
        self._queue.put_nowait(event)

    def hooks(self) -> HookRunner:
        daemon = self._config().daemon
        return HookRunner(daemon.hooks_dir, daemon.hook_timeout)

    async def run(self) -> None:
        while True:
            event = await self._queue.get()
            config = self._config()
            await self.hooks().run(event.name,
                                   event.env | {"NMBALANCE_CONFIG": self._config_path})
            if config.warn_email and event.subject and event.name in MAILED:
                program = config.daemon.sendmail
                await mail.send(config.warn_email, event.subject,
                                f"{event.subject}\n\n{self._summary()}",
                                config.daemon.hook_timeout, Path(program) if program else None)
