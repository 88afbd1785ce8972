"""Uplinks whose routes the kernel refused, and when to try each again. Pure:
the clock comes in as `now`.

A refused uplink stays out of the plan (no route, no rules, no new
connections) until its retry time; then the plan asks for its routes again,
and each further refusal doubles the wait, up to MAX_DELAY.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

FIRST_DELAY = 1.0
MAX_DELAY = 60.0


def delay(failures: int, first: float = FIRST_DELAY, cap: float = MAX_DELAY) -> float:
    """The wait after the `failures`-th failure in a row: first, 2 x first, ... up to cap."""
    return min(first * 2.0 ** max(failures - 1, 0), cap)


@dataclass(frozen=True)
class Refusal:
    why: str
    failures: int
    retry_at: float


class RefusedRoutes:
    def __init__(self) -> None:
        self.entries: dict[str, Refusal] = {}

    def refused(self, name: str, why: str, now: float) -> Refusal:
        failures = self.entries[name].failures + 1 if name in self.entries else 1
        entry = self.entries[name] = Refusal(why, failures, now + delay(failures))
        return entry

    def accepted(self, names: Iterable[str]) -> list[str]:
        """These uplinks' routes are in place: forget their refusals; the ones that had one."""
        back = [name for name in names if name in self.entries]
        for name in back:
            del self.entries[name]
        return back

    def drop_due(self, now: float, routed: Iterable[str]) -> None:
        """Forget refusals due for a retry whose uplink the plan does not route now
        (its carrier went, say): there is nothing to retry."""
        asked = set(routed)
        self.entries = {n: e for n, e in self.entries.items() if e.retry_at > now or n in asked}

    def keep_only(self, names: Iterable[str]) -> None:
        wanted = set(names)
        self.entries = {n: e for n, e in self.entries.items() if n in wanted}

    def active(self, now: float) -> dict[str, str]:
        """Uplinks to keep out of the plan now, with the kernel's reason."""
        return {n: e.why for n, e in self.entries.items() if e.retry_at > now}

    def deadline(self, now: float) -> float | None:
        times = [e.retry_at for e in self.entries.values() if e.retry_at > now]
        return min(times) if times else None
