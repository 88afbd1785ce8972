"""Refused routes: out until their retry time, each refusal doubling the wait."""

from __future__ import annotations

from nmbalance.core.backoff import MAX_DELAY, RefusedRoutes, delay


def test_the_wait_doubles_up_to_a_cap() -> None:
    assert [delay(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert delay(20) == MAX_DELAY


def test_an_uplink_is_out_until_its_retry_time() -> None:
    book = RefusedRoutes()
    book.refused("ISP2", "Nexthop has invalid gateway", now=10.0)
    assert book.active(10.5) == {"ISP2": "Nexthop has invalid gateway"}
    assert book.deadline(10.5) == 11.0
    assert book.active(11.0) == {}  # due: the next plan asks for its routes again
    book.refused("ISP2", "again", now=11.0)
    assert book.entries["ISP2"].retry_at == 13.0
    assert book.accepted(["ISP1", "ISP2"]) == ["ISP2"] and not book.entries


def test_a_due_refusal_of_an_uplink_no_plan_routes_is_forgotten() -> None:
    book = RefusedRoutes()
    book.refused("ISP2", "x", now=0.0)
    book.refused("ISP3", "y", now=0.0)
    book.drop_due(0.5, routed=[])
    assert set(book.entries) == {"ISP2", "ISP3"}  # not due yet
    book.drop_due(1.5, routed=["ISP3"])
    assert set(book.entries) == {"ISP3"}
