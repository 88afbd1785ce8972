"""`nmbalance status --watch`: the status table redrawn in place every second,
with each uplink's recent latency and load as sparklines; on a pipe or in a
log, one line per change instead. Ctrl-C ends it cleanly."""

from __future__ import annotations

import signal
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from nmbalance.report.render import change_lines, render

HISTORY = 40  # samples of the sparklines
BARS = "▁▂▃▄▅▆▇█"
ASCII_BARS = "_.-=+*#@"


def sparkline(values: Sequence[float | None], bars: str = BARS) -> str:
    """Each value as a bar between the lowest and the highest shown; gaps as spaces."""
    known = [v for v in values if v is not None]
    if not known:
        return ""
    lo, hi = min(known), max(known)
    span = hi - lo or 1.0
    return "".join(" " if v is None else bars[round((v - lo) / span * (len(bars) - 1))]
                   for v in values)


class History:
    def __init__(self) -> None:
        self.rtt: dict[str, deque[float | None]] = {}
        self.load: dict[str, deque[float | None]] = {}

    def add(self, status: dict[str, Any]) -> None:
        for u in status["uplinks"]:
            self.rtt.setdefault(u["name"], deque(maxlen=HISTORY)).append(u["latency_ms"])
            down, up = u["load_down_mbps"], u["load_up_mbps"]
            self.load.setdefault(u["name"], deque(maxlen=HISTORY)).append(
                None if down is None else down + up)

    def lines(self, status: dict[str, Any], bars: str) -> list[str]:
        out = []
        for u in status["uplinks"]:
            rtt = sparkline(self.rtt.get(u["name"], ()), bars)
            load = sparkline(self.load.get(u["name"], ()), bars)
            if rtt or load:
                now = "" if u["latency_ms"] is None else f"{u['latency_ms']:.1f} ms"
                out.append(f"{u['name']:<12} rtt  {rtt:<{HISTORY}} {now}")
            if load:
                out.append(f"{'':<12} load {load:<{HISTORY}} "
                           f"{u['load_down_mbps'] + u['load_up_mbps']:.1f} Mbit/s")
        return out


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def watch(get: Callable[[], dict[str, Any]], out: TextIO, interval: float = 1.0,
          sleep: Callable[[float], None] = time.sleep) -> int:
    # A handler of our own: asyncio.run (the daemon's status over the bus) replaces
    # only the default one, with one that cancels its task, and a cancellation the
    # bus library swallows would lose the Ctrl-C that should end the watch.
    previous_handler = signal.signal(signal.SIGINT, _interrupted)
    tty = out.isatty()
    bars = BARS if (getattr(out, "encoding", "") or "").lower().replace("-", "") == "utf8" \
        else ASCII_BARS
    history = History()
    previous: dict[str, Any] | None = None
    try:
        if tty:
            out.write("\x1b[?25l")  # no cursor blinking over the table
        while True:
            status = get()
            history.add(status)
            if tty:
                footer = f"{time.strftime('%H:%M:%S')}  every {interval:g} s; Ctrl-C to stop"
                out.write("\x1b[H\x1b[J" + render(status) + "\n".join(
                    [*history.lines(status, bars), footer]) + "\n")
            else:
                for line in change_lines(previous, status):
                    out.write(line + "\n")
            out.flush()
            previous = status
            sleep(interval)
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGINT, previous_handler)
        if tty:
            out.write("\x1b[?25h")
            out.flush()
