"""The ctnetlink flush request nmbalance sends, and how it reads the answer."""

from __future__ import annotations

import socket
import struct

from nmbalance.dataplane.conntrack import ack_error, flush_request


def test_the_flush_request_names_family_mark_and_mask() -> None:
    msg = flush_request(socket.AF_INET6, 0x200, 0xFF00, 7)
    length, kind, flags, seq, port = struct.unpack_from("=IHHII", msg)
    assert (length, kind, flags, seq, port) == (len(msg), (1 << 8) | 2, 0x5, 7, 0)
    assert msg[16:20] == struct.pack("=BBH", socket.AF_INET6, 0, 0)
    # CTA_MARK then CTA_MARK_MASK, each a big-endian u32.
    assert msg[20:] == (struct.pack("=HH", 8, 8) + struct.pack("!I", 0x200)
                        + struct.pack("=HH", 8, 21) + struct.pack("!I", 0xFF00))


def _ack(seq: int, error: int) -> bytes:
    return struct.pack("=IHHII", 36, 2, 0, seq, 0) + struct.pack("=i", error) + b"\0" * 16


def test_the_answer_is_read_by_sequence() -> None:
    assert ack_error(_ack(7, 0), 7) == 0
    assert ack_error(_ack(7, -2), 7) == 2  # ENOENT
    assert ack_error(_ack(6, -1) + _ack(7, -1), 7) == 1
    assert ack_error(_ack(6, 0), 7) is None
    assert ack_error(b"\x01\x00", 7) is None and ack_error(b"", 7) is None
