"""The health state machine of one uplink. Pure: the clock comes in as `now`.

    UP ──loss/latency──▶ DEGRADED ──recovered──▶ UP
    UP, DEGRADED ──lost in a row / heavy loss / loss over max / link gone──▶ DOWN
    DOWN ──replies in a row and loss low (or link back, unprobed)──▶ RECOVERING ──hold──▶ UP
    RECOVERING ──any loss / link gone──▶ DOWN

RECOVERING takes no new traffic: an uplink must stay healthy for the hold
time first, and the hold doubles for each failure within the flap window, so
a flapping uplink stays out instead of taking the site with it. The loss
window runs through every phase and is never cleared: a lossy uplink that
answers a few probes in a row is not let back while its loss over the window
is still above min_packet_loss. LONG_DOWN is an event, not a state: reported
once per outage after long_down_time.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from statistics import median

from nmbalance.config.model import HealthSettings
from nmbalance.core.facts import Health


class Phase(StrEnum):
    UP = "up"
    DEGRADED = "degraded"
    DOWN = "down"
    RECOVERING = "recovering"

    @property
    def health(self) -> Health:
        """What decide() sees: a recovering uplink takes no new traffic yet."""
        if self is Phase.UP:
            return Health.UP
        if self is Phase.DEGRADED:
            return Health.DEGRADED
        return Health.DOWN


ALLOWED: dict[Phase, frozenset[Phase]] = {
    Phase.UP: frozenset({Phase.DEGRADED, Phase.DOWN}),
    Phase.DEGRADED: frozenset({Phase.UP, Phase.DOWN}),
    Phase.DOWN: frozenset({Phase.RECOVERING}),
    Phase.RECOVERING: frozenset({Phase.UP, Phase.DOWN}),
}

LONG_DOWN = "long-down"


RTT_ALPHA = 0.4  # the weight of each new round trip in Tracker.smoothed_ms


@dataclass(frozen=True)
class Policy:
    probed: bool
    max_packet_loss: int
    min_packet_loss: int
    max_lost: int
    min_rcvd: int
    window: int
    max_latency_ms: float | None
    long_down_time: float
    hold_time: float
    flap_window: float
    max_hold_time: float

    @classmethod
    def from_config(cls, health: HealthSettings, probed: bool) -> Policy:
        return cls(
            probed=probed,
            max_packet_loss=health.max_packet_loss,
            min_packet_loss=health.min_packet_loss,
            max_lost=health.max_successive_pkts_lost,
            min_rcvd=health.min_successive_pkts_rcvd,
            window=health.loss_window,
            max_latency_ms=health.max_latency_ms,
            long_down_time=float(health.long_down_time),
            hold_time=health.hold_time,
            flap_window=health.flap_window,
            max_hold_time=health.max_hold_time,
        )


# --- what can happen to an uplink ------------------------------------------------------
@dataclass(frozen=True)
class Reply:
    """A probe round met the reliability count."""

    rtt_ms: float


@dataclass(frozen=True)
class Lost:
    """A probe round did not; `detail` says to whom, e.g. "to 192.0.2.1"."""

    detail: str


@dataclass(frozen=True)
class LinkState:
    """Carrier, address and gateway as the sources see them; `why` when not usable."""

    usable: bool
    why: str = ""


@dataclass(frozen=True)
class Tick:
    """Time passed (hold time, long-down)."""


Observation = Reply | Lost | LinkState | Tick


@dataclass(frozen=True)
class Transition:
    previous: Phase
    phase: Phase
    reason: str
    event: str  # the hook event: the new phase's name, or "long-down"


@dataclass(frozen=True)
class Tracker:
    phase: Phase = Phase.UP
    since: float = 0.0
    reason: str = ""
    link_ok: bool = True
    lost_in_row: int = 0
    rcvd_in_row: int = 0
    window: tuple[bool, ...] = ()  # True: a reply
    rtts: tuple[float, ...] = ()
    down_since: float | None = None
    long_down_reported: bool = False
    downs: tuple[float, ...] = ()  # when recent outages began, for damping
    hold: float = 0.0  # what RECOVERING must last this time
    latency_ms: float | None = field(default=None)
    # An exponential average of the round trips: follows a change within a few rounds
    # (the median over the window takes half of it), for lowest-latency.
    smoothed_ms: float | None = None


def loss_percent(p: Policy, t: Tracker) -> float | None:
    """Loss over the window, counted against the whole window even before it
    fills, so one early loss is not taken for a high rate."""
    if not t.window:
        return None
    return 100.0 * t.window.count(False) / max(len(t.window), p.window)


def lossy(p: Policy, t: Tracker) -> bool:
    """Loss over the window above min_packet_loss."""
    loss = loss_percent(p, t)
    return loss is not None and loss > p.min_packet_loss


def heavy_loss(p: Policy, t: Tracker) -> int:
    """Losses among the last 2 x max_successive_pkts_lost probes when they are at
    least half of them (else 0): heavy random loss is out within a few rounds
    instead of waiting for the long window to fill."""
    recent = t.window[-2 * p.max_lost:]
    lost = recent.count(False)
    return lost if lost >= p.max_lost else 0


def _move(t: Tracker, phase: Phase, now: float, reason: str) -> tuple[Tracker, Transition]:
    if phase not in ALLOWED[t.phase]:
        raise ValueError(f"health transition {t.phase} -> {phase} is not allowed")
    moved = replace(t, phase=phase, since=now, reason=reason)
    return moved, Transition(t.phase, phase, reason, phase.value)


def _go_down(p: Policy, t: Tracker, now: float, reason: str) -> tuple[Tracker, Transition]:
    if t.phase in (Phase.UP, Phase.DEGRADED):
        downs = (*(d for d in t.downs if now - d < p.flap_window), now)
        t = replace(t, downs=downs, down_since=now, long_down_reported=False)
    return _move(replace(t, rcvd_in_row=0), Phase.DOWN, now, reason)


def hold_for(p: Policy, t: Tracker, now: float) -> float:
    recent = sum(1 for d in t.downs if now - d < p.flap_window)
    return min(p.hold_time * 2.0 ** max(recent - 1, 0), p.max_hold_time)


def _recover(p: Policy, t: Tracker, now: float, reason: str) -> tuple[Tracker, list[Transition]]:
    hold = hold_for(p, t, now)
    t, moved = _move(replace(t, hold=hold), Phase.RECOVERING, now,
                     f"{reason}; holding {hold:g} s")
    if hold > 0:
        return t, [moved]
    t, up = _move(t, Phase.UP, now, reason)
    return t, [moved, up]


def _last(items: tuple[float, ...], item: float, keep: int) -> tuple[float, ...]:
    return (*items, item)[-keep:]


def _judge_quality(p: Policy, t: Tracker, now: float) -> tuple[Tracker, Transition | None]:
    """UP <-> DEGRADED on loss between the thresholds or latency over max_latency_ms."""
    loss = loss_percent(p, t)
    is_lossy = lossy(p, t)
    slow = p.max_latency_ms is not None and t.latency_ms is not None and (
        t.latency_ms > p.max_latency_ms if t.phase is Phase.UP
        else t.latency_ms > 0.8 * p.max_latency_ms
    )
    if t.phase is Phase.UP and (is_lossy or slow):
        why = (f"loss {loss:.0f}% over the last {len(t.window)} probes" if is_lossy
               else f"median round trip {t.latency_ms:.0f} ms over {p.max_latency_ms:g} ms")
        return _move(t, Phase.DEGRADED, now, why)
    if t.phase is Phase.DEGRADED and not is_lossy and not slow:
        return _move(t, Phase.UP, now, "loss and latency back under the thresholds")
    return t, None


def _judge_loss(p: Policy, t: Tracker, now: float, detail: str) -> tuple[Tracker, Transition | None]:
    """After a lost probe while in rotation: down, degraded, or as it was."""
    loss = loss_percent(p, t)
    if t.lost_in_row >= p.max_lost:
        return _go_down(p, t, now, f"{t.lost_in_row} probes lost in a row {detail}")
    if heavy := heavy_loss(p, t):
        return _go_down(p, t, now, f"{heavy} of the last {min(len(t.window), 2 * p.max_lost)} "
                                   f"probes lost {detail}")
    if loss is not None and loss > p.max_packet_loss:
        return _go_down(p, t, now, f"loss {loss:.0f}% over the last {len(t.window)} probes "
                                   f"(max {p.max_packet_loss}%)")
    return _judge_quality(p, t, now)


def step(p: Policy, t: Tracker, obs: Observation, now: float) -> tuple[Tracker, list[Transition]]:
    """Apply one observation; return the new tracker and what changed, in order."""
    out: list[Transition] = []

    def take(result: tuple[Tracker, Transition | None]) -> Tracker:
        tracker, transition = result
        if transition is not None:
            out.append(transition)
        return tracker

    if isinstance(obs, LinkState):
        if not obs.usable:
            t = replace(t, link_ok=False, rcvd_in_row=0, lost_in_row=0)
            if t.phase is not Phase.DOWN:
                t = take(_go_down(p, t, now, obs.why))
        elif not t.link_ok:
            t = replace(t, link_ok=True)
            if not p.probed and t.phase is Phase.DOWN:
                t, moved = _recover(p, t, now, "link is back")
                out += moved
    elif isinstance(obs, Reply | Lost) and not t.link_ok:
        pass  # a probe while the link is known gone says nothing about its quality
    elif isinstance(obs, Reply):
        rtts = _last(t.rtts, obs.rtt_ms, p.window)
        smoothed = obs.rtt_ms if t.smoothed_ms is None else (
            t.smoothed_ms + RTT_ALPHA * (obs.rtt_ms - t.smoothed_ms))
        t = replace(t, lost_in_row=0, rcvd_in_row=t.rcvd_in_row + 1,
                    window=(*t.window, True)[-p.window:], rtts=rtts, latency_ms=median(rtts),
                    smoothed_ms=smoothed)
        if t.phase in (Phase.UP, Phase.DEGRADED):
            t = take(_judge_quality(p, t, now))
        elif t.phase is Phase.DOWN and t.rcvd_in_row >= p.min_rcvd and not lossy(p, t):
            t, moved = _recover(p, t, now, f"{t.rcvd_in_row} replies in a row, loss "
                                           f"{loss_percent(p, t):.0f}% over the last "
                                           f"{len(t.window)} probes")
            out += moved
        elif t.phase is Phase.RECOVERING and now - t.since >= t.hold:
            t = take(_move(t, Phase.UP, now, f"healthy for {t.hold:g} s"))
    elif isinstance(obs, Lost):
        t = replace(t, lost_in_row=t.lost_in_row + 1, rcvd_in_row=0,
                    window=(*t.window, False)[-p.window:])
        if t.phase in (Phase.UP, Phase.DEGRADED):
            t = take(_judge_loss(p, t, now, obs.detail))
        elif t.phase is Phase.RECOVERING:
            t = take(_go_down(p, t, now, f"probe lost while recovering {obs.detail}"))
    elif t.phase is Phase.RECOVERING and now - t.since >= t.hold:
        t = take(_move(t, Phase.UP, now, f"healthy for {t.hold:g} s"))

    began = t.down_since
    if (began is not None and t.phase in (Phase.DOWN, Phase.RECOVERING)
            and not t.long_down_reported and now - began >= p.long_down_time):
        t = replace(t, long_down_reported=True)
        out.append(Transition(t.phase, t.phase, f"down for {now - began:.0f} s", LONG_DOWN))
    if t.phase is Phase.UP and t.down_since is not None:
        t = replace(t, down_since=None)  # the outage is over
    return t, out


def deadline(p: Policy, t: Tracker) -> float | None:
    """When a Tick could next change something, or None."""
    times = []
    if t.phase is Phase.RECOVERING:
        times.append(t.since + t.hold)
    if t.down_since is not None and not t.long_down_reported and t.phase in (
            Phase.DOWN, Phase.RECOVERING):
        times.append(t.down_since + p.long_down_time)
    return min(times) if times else None
