"""The wire benchmark's load: ``bench.wire.Traffic`` makes every message into one buffer, a chunk at a
time; whatever the chunks, the messages decode to the intended command stream, in order."""
from __future__ import annotations

import numpy as np
import pytest

from bench.wire import BASE_PRICE, RESTING, ROW_WIRES, Traffic, framed
from gateway import messages as m


def expected_commands(n: int) -> list[tuple]:
    """(kind, rid, client id, price) of commands 0 .. n - 1: RESTING places, then each place preceded
    by the cancel of the oldest one resting."""
    out = []
    for i in range(n):
        rid = i + 1
        if i < RESTING:
            out.append(("place", rid, rid, BASE_PRICE - rid % 64))
        elif (i - RESTING) % 2 == 0:
            out.append(("cancel", rid, (i - RESTING) // 2 + 1, 0))
        else:
            cid = RESTING + (i - RESTING) // 2 + 1
            out.append(("place", rid, cid, BASE_PRICE - cid % 64))
    return out


def decoded(traffic: Traffic, first: int, n: int) -> list[tuple]:
    out = []
    for raw in traffic.message_bytes(first, n):
        msg = m.request_decoder.decode(raw)
        if type(msg) is m.OrderRows:
            assert msg.format == ROW_WIRES[traffic.wire] and m.encode(msg) == raw  # msgspec's own encoding
            rows = m.unpack_rows(msg.rows, m.COMMAND_ROW_DTYPE, msg.format)
            assert (rows["market"][rows["kind"] == 1] == 1).all()
            out += [("place" if kind == 1 else "cancel", rid, cid, price)
                    for kind, rid, cid, price in rows[["kind", "rid", "id", "price"]].tolist()]
        else:
            for req in msg.requests if type(msg) is m.Batch else [msg]:
                if type(req) is m.PlaceOrder:
                    assert req.market == 1 and req.qty == 1 and req.side == m.Side.BUY
                    out.append(("place", req.rid, req.client_id, req.price))
                else:
                    out.append(("cancel", req.rid, req.client_id, 0))
    return out


@pytest.mark.parametrize("wire", [*ROW_WIRES, "structs"])
@pytest.mark.parametrize("batch", [1, 16, 256])
def test_messages_decode_to_the_command_stream_across_chunks(wire, batch):
    traffic = Traffic(1, wire, batch)
    traffic.CHUNK_ORDERS = 64 * batch  # many chunks: messages taken across their boundaries
    traffic.prepare(RESTING // batch + 3)  # before the clock
    got, sizes = [], [1, 2, 40, 3, 64, 65, 1, 130]
    while len(got) < RESTING + 4 * traffic.CHUNK_ORDERS:  # past the first places, into the cancel-place pairs
        n = sizes[traffic.taken % len(sizes)]
        first = traffic.take(n)
        got += decoded(traffic, first, n)
        assert traffic.taken * batch == len(got)
    assert got == expected_commands(len(got))


def test_fixed_rows_messages_are_one_size_and_packed_rows_a_sixth_of_it():
    """16 orders a message: fixed rows make every message the same size; packed rows take a sixth of it or less
    (~9 bytes an order of this flow, the message's head included, instead of 58)."""
    fixed, packed = Traffic(1, "fixed-rows", 16), Traffic(1, "rows", 16)
    for traffic in (fixed, packed):
        traffic.prepare(RESTING // 16 + 200)  # past the first places
    size = int(fixed.offsets[1])
    assert (np.diff(fixed.offsets) == size).all() and len(fixed.blob) == fixed.made * size
    assert len(packed.blob) * 6 <= len(fixed.blob)
    assert fixed.made == 231 and fixed.take(2) == 0 and fixed.made == 229 and fixed.take(1) == 2


def test_framed_makes_msgspecs_bytes_for_every_bin_width():
    rng = np.random.default_rng(3)
    lengths = np.array([0, 1, 255, 256, 300, 65535, 7], np.int64)
    data = rng.integers(0, 256, int(lengths.sum()), np.uint8)
    header = np.frombuffer(m.encode(m.OrderRows(rid=0, rows=b"", format=m.PACKED_ROWS))[:-3], np.uint8)
    blob, sizes = framed(header, data, lengths, np.array([m.PACKED_ROWS], np.uint8))
    ends, starts = np.cumsum(sizes), np.cumsum(lengths) - lengths
    assert [blob[e - s:e].tobytes() for e, s in zip(ends.tolist(), sizes.tolist())] == \
        [m.encode(m.OrderRows(rid=0, rows=data[a:a + n].tobytes(), format=m.PACKED_ROWS))
         for a, n in zip(starts.tolist(), lengths.tolist())]
    with pytest.raises(ValueError, match="65536 bytes"):
        framed(header, np.zeros(65536, np.uint8), np.array([65536]), np.zeros(1, np.uint8))
