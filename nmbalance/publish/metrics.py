"""The daemon's figures as Prometheus metrics, through the client library:
OpenMetrics text for `nmbalance metrics`, an HTTP endpoint and a
node_exporter textfile. Every value comes from one MetricsView the daemon
builds from what it publishes on the bus, so metrics and `status` agree."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server, write_to_textfile
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    StateSetMetricFamily,
)
from prometheus_client.openmetrics.exposition import generate_latest
from prometheus_client.registry import Collector

from nmbalance.sources.counters import LinkStats

log = logging.getLogger(__name__)

STATES = ("active", "standby", "degraded", "left-out", "down", "no-gateway", "absent", "error")
HEALTHS = ("up", "degraded", "down")


@dataclass(frozen=True)
class MetricsView:
    uplinks: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # bus properties
    links: Mapping[str, LinkStats] = field(default_factory=dict)  # by interface
    state_changes: Mapping[str, int] = field(default_factory=dict)
    probe_rounds: Mapping[str, int] = field(default_factory=dict)
    applies: int = 0
    apply_seconds: float = 0.0
    repairs: int = 0
    raced: int = 0
    learned: int = 0


def families(view: MetricsView) -> Iterator[Any]:
    label = ["uplink"]

    def per_uplink(family: Any, value: Callable[[str, Mapping[str, Any]], float | None]) -> Any:
        for name, props in view.uplinks.items():
            v = value(name, props)
            if v is not None:
                family.add_metric([name], v)
        return family

    def link(name: str, props: Mapping[str, Any], what: str) -> float | None:
        stats = view.links.get(str(props.get("Interface") or ""))
        return float(getattr(stats, what)) if stats is not None else None

    state = StateSetMetricFamily("nmbalance_uplink_state", "What the uplink does now",
                                 labels=label)
    health = StateSetMetricFamily("nmbalance_uplink_health", "What its probes say",
                                  labels=label)
    for name, props in view.uplinks.items():
        state.add_metric([name], {s: props.get("State") == s for s in STATES})
        health.add_metric([name], {h: props.get("Health") == h for h in HEALTHS})
    yield state
    yield health
    yield per_uplink(GaugeMetricFamily(
        "nmbalance_uplink_enabled", "0 while left out by request (nmbalance disable)",
        labels=label), lambda _, p: float(bool(p.get("Enabled", True))))
    yield per_uplink(GaugeMetricFamily(
        "nmbalance_uplink_latency_seconds", "Round trip of its last probes", labels=label),
        lambda _, p: p["LatencyMs"] / 1000 if p.get("LatencyMs", -1) >= 0 else None)
    yield per_uplink(GaugeMetricFamily(
        "nmbalance_uplink_loss_ratio", "Probes lost, of the recent window", labels=label),
        lambda _, p: p["LossPercent"] / 100 if p.get("LossPercent", -1) >= 0 else None)
    yield per_uplink(GaugeMetricFamily(
        "nmbalance_uplink_weight", "Its configured weight", labels=label),
        lambda _, p: float(p.get("Weight", 0.0)))
    yield per_uplink(GaugeMetricFamily(
        "nmbalance_uplink_share_ratio", "Its part of new connections as decided",
        labels=label), lambda _, p: float(p.get("Share", 0.0)))
    yield per_uplink(GaugeMetricFamily(
        "nmbalance_uplink_measured_share_ratio",
        "Its part of the new connections of about the last minute", labels=label),
        lambda _, p: p["MeasuredShare"] if p.get("MeasuredShare", -1) >= 0 else None)
    yield per_uplink(CounterMetricFamily(
        "nmbalance_uplink_new_connections", "New connections it took", labels=label),
        lambda _, p: float(p.get("NewConnections", 0)))
    for what, help_text in (("receive_bytes", "Bytes received on its interface"),
                            ("transmit_bytes", "Bytes sent on its interface"),
                            ("receive_packets", "Packets received on its interface"),
                            ("transmit_packets", "Packets sent on its interface")):
        direction, unit = what.split("_")
        stat = f"{'rx' if direction == 'receive' else 'tx'}_{unit}"
        yield per_uplink(CounterMetricFamily(
            f"nmbalance_uplink_{what}", help_text, labels=label),
            lambda n, p, stat=stat: link(n, p, stat))  # type: ignore[misc]
    yield per_uplink(CounterMetricFamily(
        "nmbalance_uplink_state_changes", "Changes of its health", labels=label),
        lambda n, _: float(view.state_changes.get(n, 0)))
    yield per_uplink(CounterMetricFamily(
        "nmbalance_uplink_probe_rounds", "Probe rounds sent through it", labels=label),
        lambda n, _: float(view.probe_rounds.get(n, 0)))
    for name, help_text, value in (
            ("nmbalance_applies", "Changes applied to the kernel", view.applies),
            ("nmbalance_apply_seconds", "Time the kernel took for them, summed",
             view.apply_seconds),
            ("nmbalance_drift_repairs", "Repairs of what another program changed of ours",
             view.repairs),
            ("nmbalance_destinations_raced",
             "fastest-response: new destinations raced over the uplinks", view.raced),
            ("nmbalance_destinations_learned", "fastest-response: destinations learned",
             view.learned)):
        total = CounterMetricFamily(name, help_text)
        total.add_metric([], value)
        yield total


class ViewCollector(Collector):  # type: ignore[misc]
    def __init__(self, view: Callable[[], MetricsView]) -> None:
        self._view = view

    def collect(self) -> Iterator[Any]:
        return families(self._view())


def registry_of(view: Callable[[], MetricsView]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ViewCollector(view))
    return registry


def openmetrics(view: MetricsView) -> str:
    return str(generate_latest(registry_of(lambda: view)).decode())  # type: ignore[no-untyped-call]


class Exporter:
    """The HTTP endpoint and the textfile, as [metrics] asks. The endpoint's
    thread reads the view the daemon last built (a reference swapped whole)."""

    def __init__(self, listen: str | None, textfile: str | None) -> None:
        self.view = MetricsView()
        self.textfile = textfile
        self._registry = registry_of(lambda: self.view)
        self._server: Any = None
        if listen:
            host, _, port = listen.rpartition(":")
            started = start_http_server(int(port), host.strip("[]"), self._registry)
            # prometheus_client >= 0.17 returns the server, to be shut down with us.
            self._server = started[0] if isinstance(started, tuple) else None
            log.info("serving metrics on http://%s/metrics", listen)

    def write(self) -> None:
        if self.textfile:
            try:
                write_to_textfile(self.textfile, self._registry)
                os.chmod(self.textfile, 0o644)  # node_exporter reads it as another user
            except OSError as exc:
                log.warning("cannot write the metrics textfile %s: %s", self.textfile, exc)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
