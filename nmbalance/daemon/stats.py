"""What the daemon counts while it runs, for `status` and the metrics."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field

SHARE_WINDOW = 60.0  # seconds of new connections the measured share is taken over


@dataclass
class NewConnections:
    """Each uplink's new connections, from our table's counters. Replacing the
    whole table zeroes them: a drop is a reset, so the totals keep counting."""

    totals: dict[str, int] = field(default_factory=dict)
    _last: dict[str, int] = field(default_factory=dict)
    _samples: deque[tuple[float, dict[str, int]]] = field(default_factory=deque)

    def sample(self, now: float, raw: Mapping[str, int]) -> None:
        for name, value in raw.items():
            last = self._last.get(name, 0)
            self.totals[name] = self.totals.get(name, 0) + (value - last if value >= last else value)
            self._last[name] = value
        self._samples.append((now, dict(self.totals)))
        while len(self._samples) > 2 and now - self._samples[1][0] >= SHARE_WINDOW:
            self._samples.popleft()

    def shares(self) -> dict[str, float]:
        """Each uplink's part of the new connections of about the last minute;
        {} while there were none."""
        if len(self._samples) < 2:
            return {}
        (_, first), (_, last) = self._samples[0], self._samples[-1]
        deltas = {name: count - first.get(name, 0) for name, count in last.items()}
        total = sum(deltas.values())
        return {name: d / total for name, d in deltas.items()} if total > 0 else {}


@dataclass
class Stats:
    applies: int = 0
    apply_seconds: float = 0.0  # in the kernel, summed
    probe_rounds: Counter[str] = field(default_factory=Counter)
    state_changes: Counter[str] = field(default_factory=Counter)
    new_connections: NewConnections = field(default_factory=NewConnections)

    def applied(self, kernel_ms: float) -> None:
        self.applies += 1
        self.apply_seconds += kernel_ms / 1000
