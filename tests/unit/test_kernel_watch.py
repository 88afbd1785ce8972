"""Reading nftables notifications: whose transaction touched our table."""

from __future__ import annotations

import struct

from nmbalance.sources.kernel_watch import EventKind, NftTransactions


def attr(kind: int, value: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(value), kind) + value
    return raw + b"\0" * (-len(raw) % 4)


def message(msg: int, family: int, *attrs: bytes) -> bytes:
    body = bytes([family, 0, 0, 0]) + b"".join(attrs)
    return struct.pack("=IHHII", 16 + len(body), (10 << 8) | msg, 0, 0, 0) + body


def newgen(pid: int, name: bytes) -> bytes:
    return message(15, 0, attr(1, struct.pack(">I", 7)), attr(2, struct.pack(">I", pid)),
                   attr(3, name + b"\0"))


def test_another_process_deleting_our_table_is_one_event() -> None:
    watch = NftTransactions("nmbalance", ours=lambda pid: pid == 100)
    batch = (message(8, 1, attr(1, b"nmbalance\0")) + message(2, 1, attr(1, b"nmbalance\0"))
             + newgen(4242, b"nft"))
    [event] = watch.feed(batch)
    assert event.kind is EventKind.NFT and event.owned
    assert event.detail == "table inet nmbalance: rules changed, table deleted by nft (pid 4242)"


def test_our_own_transactions_and_other_tables_are_not_events() -> None:
    watch = NftTransactions("nmbalance", ours=lambda pid: pid == 100)
    assert watch.feed(message(12, 1, attr(1, b"nmbalance\0")) + newgen(100, b"python")) == []
    assert watch.feed(message(6, 1, attr(1, b"firewalld\0")) + newgen(4242, b"firewalld")) == []
    assert watch.feed(message(6, 2, attr(1, b"nmbalance\0")) + newgen(4242, b"nft")) == []  # ip family


def test_a_transaction_split_over_reads_is_still_one_event() -> None:
    watch = NftTransactions("nmbalance", ours=lambda pid: False)
    assert watch.feed(message(6, 1, attr(1, b"nmbalance\0"))) == []
    assert len(watch.feed(newgen(7, b"nft"))) == 1
    assert watch.feed(newgen(7, b"nft")) == []  # nothing of ours in that one


def test_truncated_or_garbage_input_is_ignored() -> None:
    watch = NftTransactions("nmbalance", ours=lambda pid: False)
    assert watch.feed(b"\x01\x02") == []
    assert watch.feed(struct.pack("=IHHII", 8, 0, 0, 0, 0)) == []
    assert watch.feed(message(6, 1, struct.pack("=HH", 2, 1))) == []
