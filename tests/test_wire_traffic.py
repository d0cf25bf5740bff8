"""The wire benchmark's load: ``bench.wire.Traffic`` makes every message into one buffer, a chunk at a
time; whatever the chunks, the messages decode to the intended command stream, in order."""
from __future__ import annotations

import numpy as np
import pytest

from bench.wire import BASE_PRICE, RESTING, Traffic
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
            rows = np.frombuffer(msg.rows, m.COMMAND_ROW_DTYPE)
            assert msg.format == m.ROW_FORMAT and (rows["market"][rows["kind"] == 1] == 1).all()
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


@pytest.mark.parametrize("wire", ["rows", "structs"])
@pytest.mark.parametrize("batch", [1, 16])
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


def test_rows_messages_are_the_template_around_the_rows():
    traffic = Traffic(1, "rows", 16)
    traffic.prepare(3)
    size = int(traffic.offsets[1])
    assert (np.diff(traffic.offsets) == size).all() and len(traffic.blob) == 3 * size
    assert traffic.made == 3 and traffic.take(2) == 0 and traffic.made == 1 and traffic.take(1) == 2
