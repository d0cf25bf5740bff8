"""The gateway's receive loop in C (gateway/intake.pyx ``drain_burst``) over a real ROUTER socket:
which messages it joins per session as plain OrderRows (fixed or packed rows, joined as fixed rows),
which it hands over one by one, and that each session's order survives the split; its sends in C
(``send_slices``, ``send_pair``); and ``readable``."""
from __future__ import annotations

import random
import time

import msgspec
import numpy as np
import pytest
import zmq

from gateway import messages as m
from gateway.intake import drain_burst, readable, send_pair, send_slices

ROW = m.COMMAND_ROW_DTYPE.itemsize
MAX_BYTES, MAX_ROWS = 4096, 16


def rows(n: int, first_rid: int = 1) -> bytes:
    r = np.zeros(n, m.COMMAND_ROW_DTYPE)
    r["kind"], r["market"], r["qty"], r["price"] = 1, 1, 1, 100
    r["rid"] = np.arange(first_rid, first_rid + n)
    return r.tobytes()


def packed(data: bytes) -> bytes:
    return m.COMMAND_PACKING.pack(np.frombuffer(data, m.COMMAND_ROW_DTYPE))


def order_rows(rid: int, data: bytes, row_format: int = m.FIXED_ROWS) -> bytes:
    return m.encode(m.OrderRows(rid=rid, rows=data, format=row_format))


@pytest.fixture
def router():
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.bind("inproc://intake")
    peers = {}

    def peer(name: bytes) -> zmq.Socket:
        if name not in peers:
            d = peers[name] = ctx.socket(zmq.DEALER)
            d.setsockopt(zmq.ROUTING_ID, name)
            d.connect("inproc://intake")
        return peers[name]

    yield sock, peer
    for d in peers.values():
        d.close(linger=0)
    sock.close(linger=0)
    ctx.term()


def drain(sock: zmq.Socket, sessions: dict, expect: int, limit: int = 4096):
    """drain_burst once ``expect`` messages are waiting (inproc delivery is not instant)."""
    deadline = time.monotonic() + 5
    while sock.getsockopt(zmq.EVENTS) & zmq.POLLIN == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    time.sleep(0.05)
    out = drain_burst(sock.underlying, sessions, limit, MAX_BYTES, MAX_ROWS, m.COMMAND_PACKING)
    assert out[2] == min(expect, limit)
    return out


def heads(entry) -> list[tuple[int, int]]:
    return [tuple(h) for h in np.frombuffer(entry[0], np.int64).reshape(-1, 2).tolist()]


RIDS = [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1, -1, -32, -33, -128, -129, -2**15 - 1,
        -2**31 - 1, -2**63]


def test_plain_order_rows_of_a_session_are_joined_with_each_rid_and_count(router):
    sock, peer = router
    a = peer(b"alice")
    sent = []
    for i, rid in enumerate(RIDS):  # every MessagePack integer width msgspec writes for a rid
        data = rows(1 + i % 3, first_rid=10 * i)
        sent.append((rid, data))
        a.send(order_rows(rid, data))
    got, others, taken = drain(sock, {b"alice": object()}, len(RIDS))
    assert others == [] and list(got) == [b"alice"]
    assert heads(got[b"alice"]) == [(rid, len(data) // ROW) for rid, data in sent]
    assert bytes(got[b"alice"][1]) == b"".join(data for _, data in sent)
    assert got[b"alice"][2] == m.FIXED_ROWS
    # the rows as msgspec reads them, whatever the encoding of the rid before them
    for rid, data in sent:
        msg = m.request_decoder.decode(order_rows(rid, data))
        assert (msg.rid, msg.rows) == (rid, data)


def test_packed_rows_are_joined_as_fixed_rows_with_the_last_messages_format(router):
    """Packed and fixed messages of one session interleaved: joined in order as fixed rows; the entry's format is
    the last message's."""
    sock, peer = router
    a = peer(b"alice")
    sent = [(rid, rows(1 + rid % MAX_ROWS, first_rid=100 * rid), m.PACKED_ROWS if rid % 3 else m.FIXED_ROWS)
            for rid in range(1, 40)]
    for rid, data, row_format in sent:
        a.send(order_rows(rid, packed(data) if row_format == m.PACKED_ROWS else data, row_format))
    got, others, taken = drain(sock, {b"alice": object()}, len(sent))
    assert others == []
    assert heads(got[b"alice"]) == [(rid, len(data) // ROW) for rid, data, _ in sent]
    assert bytes(got[b"alice"][1]) == b"".join(data for _, data, _ in sent)
    assert got[b"alice"][2] == sent[-1][2]


def test_packed_rows_are_read_up_to_max_rows_whatever_the_max_rows_of_earlier_bursts(router):
    """The rows are read into room kept across bursts: a burst that allows more rows than any before reads them
    all; a message of exactly max_rows is read, one more row sends it the slow way; the room is never more than
    a message of max_bytes can fill."""
    sock, peer = router
    a = peer(b"alice")
    for max_rows in (MAX_ROWS, 4 * MAX_ROWS, MAX_ROWS):
        sent = [rows(max_rows, first_rid=1000 * max_rows), rows(max_rows + 1, first_rid=7)]
        for rid, data in enumerate(sent):
            a.send(order_rows(rid, packed(data), m.PACKED_ROWS))
        time.sleep(0.05)
        got, others, taken = drain_burst(sock.underlying, {b"alice": object()}, 10, 1 << 20, max_rows,
                                         m.COMMAND_PACKING)
        assert taken == 2 and heads(got[b"alice"]) == [(0, max_rows)] and bytes(got[b"alice"][1]) == sent[0]
        assert [body for _, body, _, _ in others] == [order_rows(1, packed(sent[1]), m.PACKED_ROWS)]
    # a max_rows past what max_bytes can hold asks no room beyond that
    a.send(order_rows(5, packed(rows(3)), m.PACKED_ROWS))
    time.sleep(0.05)
    got, others, taken = drain_burst(sock.underlying, {b"alice": object()}, 10, MAX_BYTES, 10**15, m.COMMAND_PACKING)
    assert heads(got[b"alice"]) == [(5, 3)] and others == []


def test_what_c_does_not_check_goes_to_python_in_order_and_the_session_stays_there(router):
    sock, peer = router
    a, b, stranger = peer(b"alice"), peer(b"bob"), peer(b"stranger")
    plain = order_rows(1, rows(2))
    odd = [
        msgspec.msgpack.encode(["rows", 2, rows(1)]),  # format left to its default: msgspec's to read
        order_rows(3, rows(1), row_format=1),  # another format: refused by the gateway, by name
        order_rows(4, rows(1) + b"x"),  # not whole rows
        order_rows(5, rows(MAX_ROWS + 1)),  # past max_batch
        order_rows(6, b""),  # no rows
        order_rows(7, rows(100)),  # past max_message_bytes
        msgspec.msgpack.encode(["rows", 2**64 - 1, rows(1), 2]),  # a rid past int64: msgspec refuses it
        order_rows(9, packed(rows(1))[:-1], m.PACKED_ROWS),  # packed rows cut short: their Error names where
        order_rows(10, packed(rows(MAX_ROWS + 1)), m.PACKED_ROWS),  # past max_batch
        m.encode(m.Heartbeat(rid=8)),
    ]
    b.send(plain)
    for msg in odd:
        a.send(msg)
        b.send(plain)
    a.send(plain)  # after alice's first odd message: with it, not before it
    a.send_multipart([plain, b"extra"])
    stranger.send(plain)  # not a session: its key is still to be checked
    got, others, taken = drain(sock, {b"alice": object(), b"bob": object()}, 2 * len(odd) + 4)
    assert list(got) == [b"bob"] and heads(got[b"bob"]) == [(1, 2)] * (len(odd) + 1)
    assert [(rid, body) for rid, body, _, _ in others if rid == b"alice"] == \
        [(b"alice", body) for body in odd + [plain, plain]]
    assert [extra for rid, _, _, extra in others if rid == b"alice"] == [0] * (len(odd) + 1) + [1]
    assert [(rid, body, user) for rid, body, user, _ in others if rid == b"stranger"] == [(b"stranger", plain, None)]


def test_a_burst_stops_at_the_limit_and_the_rest_waits(router):
    sock, peer = router
    a = peer(b"alice")
    for rid in range(5):
        a.send(order_rows(rid, rows(1)))
    got, _, taken = drain(sock, {b"alice": object()}, 5, limit=3)
    assert heads(got[b"alice"]) == [(0, 1), (1, 1), (2, 1)]
    got, _, taken = drain_burst(sock.underlying, {b"alice": object()}, 3, MAX_BYTES, MAX_ROWS, m.COMMAND_PACKING)
    assert taken == 2 and heads(got[b"alice"]) == [(3, 1), (4, 1)]


def test_readable_finds_a_message_that_came_after_a_send_took_the_fds_edge(router):
    """The gateway sends its replies and then asks ``readable``: a request that came meanwhile is found though
    the send let libzmq take the signal that made the fd readable; none, and none is found."""
    sock, peer = router
    a = peer(b"alice")
    a.send(order_rows(1, rows(1)))
    deadline = time.monotonic() + 5
    while not readable(sock.underlying):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert send_pair(sock.underlying, b"alice", b"reply") == 0  # libzmq takes its commands here
    assert readable(sock.underlying) and readable(sock.underlying)  # asking takes nothing off
    drain(sock, {b"alice": object()}, 1)
    assert not readable(sock.underlying)
    assert a.recv() == b"reply"


def mutations(rng: random.Random, n: int) -> list[bytes]:
    """Bodies near OrderRows: valid ones with every integer width, fixed and packed rows, then bytes flipped,
    cut, added."""
    out = []
    for _ in range(n):
        rid = rng.choice(RIDS + [rng.randrange(-2**63, 2**63)])
        row_format = rng.choice([m.FIXED_ROWS, m.PACKED_ROWS, m.PACKED_ROWS, 1, 2**40, -1])
        data = rows(rng.randint(0, 3))
        body = bytearray(order_rows(rid, packed(data) if row_format == m.PACKED_ROWS else data, row_format))
        for _ in range(rng.choice([0, 0, 1, 2])):
            what = rng.randrange(3)
            if what == 0 and body:
                body[rng.randrange(len(body))] = rng.randrange(256)
            elif what == 1 and body:
                del body[rng.randrange(len(body)):]
            else:
                body.insert(rng.randrange(len(body) + 1), rng.randrange(256))
        out.append(bytes(body))
    return out


def readable_rows(msg) -> bytes | None:
    """The fixed rows of an OrderRows message that C may take (1 to MAX_ROWS rows that read), else None."""
    if type(msg) is not m.OrderRows or msg.format not in m.ROW_FORMATS:
        return None
    try:
        got = m.unpack_rows(msg.rows, m.COMMAND_ROW_DTYPE, msg.format)
    except ValueError:
        return None
    return got.tobytes() if 0 < len(got) <= MAX_ROWS else None


def test_c_takes_a_body_only_when_msgspec_reads_the_same_order_rows(router):
    """Whatever C joins as a plain OrderRows message, msgspec reads as one with the same rid, rows
    (packed ones as ``unpack_rows`` reads them) and format; whatever C hands over, msgspec refuses or
    reads as something C may not take (one message a burst, so that no body follows another's way)."""
    sock, peer = router
    a = peer(b"alice")
    fast = packed_fast = 0
    for body in mutations(random.Random(14), 3000):
        a.send(body)
        assert sock.poll(5000)
        got, others, taken = drain_burst(sock.underlying, {b"alice": object()}, 1, MAX_BYTES, MAX_ROWS, m.COMMAND_PACKING)
        assert taken == 1 and len(got) + len(others) == 1
        try:
            msg = m.request_decoder.decode(body)
        except m.UNDECODABLE:
            msg = None
        plain = readable_rows(msg)
        if got:
            assert plain is not None and heads(got[b"alice"]) == [(msg.rid, len(plain) // ROW)]
            assert bytes(got[b"alice"][1]) == plain and got[b"alice"][2] == msg.format
            fast += 1
            packed_fast += msg.format == m.PACKED_ROWS
        else:
            assert others[0][1] == body
            assert plain is None or m.encode(msg) != body  # msgspec's own encoding of a plain one is always taken
    assert fast > 600 and packed_fast > 300  # half the bodies have a format and rows C takes; half are left whole


def test_sends_in_c_deliver_in_order_and_report_a_gone_peer_and_a_full_queue():
    """``send_slices`` (a DEALER's messages out of one buffer, in order, waiting for room) and ``send_pair`` (a ROUTER
    with ROUTER_MANDATORY: a reply to a routing id, never waiting) against pyzmq's own receive."""
    ctx = zmq.Context()
    router, dealer = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    try:
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        router.setsockopt(zmq.SNDHWM, 4)
        dealer.setsockopt(zmq.RCVHWM, 4)
        dealer.setsockopt(zmq.ROUTING_ID, b"client-1")
        port = router.bind_to_random_port("tcp://127.0.0.1")
        dealer.connect(f"tcp://127.0.0.1:{port}")
        messages = [bytes([i]) * (i * 37) for i in range(200)]  # the first empty
        blob = np.frombuffer(b"".join(messages), np.uint8)
        offsets = np.concatenate([[0], np.cumsum([len(x) for x in messages])]).astype(np.int64)
        assert send_slices(dealer.underlying, blob, offsets, 0, 150) == 150
        assert send_slices(dealer.underlying, blob, offsets, 150, 50) == 50
        assert send_slices(dealer.underlying, blob, offsets, 200, 0) == 0
        got = [router.recv_multipart() for _ in messages]
        assert all(rid == b"client-1" for rid, _ in got) and [body for _, body in got] == messages
        with pytest.raises(ValueError, match="messages 150 .. 250 of 200"):
            send_slices(dealer.underlying, blob, offsets, 150, 101)
        bad = offsets.copy()
        bad[3] = len(blob) + 1
        with pytest.raises(ValueError, match="message 2 spans bytes"):
            send_slices(dealer.underlying, blob, bad, 0, 3)
        assert not router.poll(50)  # checked before any was sent
        with pytest.raises(TypeError):
            send_pair(router.underlying, None, b"reply")
        assert send_pair(router.underlying, b"client-1", b"reply") == 0
        assert dealer.recv() == b"reply"
        assert send_pair(router.underlying, b"nobody", b"reply") == zmq.EHOSTUNREACH
        # the dealer stops reading: its queue and the router's fill, and the router does not wait
        results = [send_pair(router.underlying, b"client-1", b"x" * 1000) for _ in range(10_000)]
        assert results[0] == 0 and zmq.EAGAIN in results and set(results) <= {0, zmq.EAGAIN}
    finally:
        router.close(linger=0)
        dealer.close(linger=0)
        ctx.term()


def test_send_pair_publishes_a_topic_and_its_update_and_never_waits():
    """Market data's sends (``send_pair`` on a PUB): a subscriber gets the topic and the body as one message, in
    order; a subscriber that does not read costs the publisher nothing (the PUB drops at its high-water mark)."""
    ctx = zmq.Context()
    pub, sub = ctx.socket(zmq.PUB), ctx.socket(zmq.SUB)
    try:
        pub.setsockopt(zmq.SNDHWM, 4)
        sub.setsockopt(zmq.RCVHWM, 4)
        port = pub.bind_to_random_port("tcp://127.0.0.1")
        sub.connect(f"tcp://127.0.0.1:{port}")
        sub.setsockopt(zmq.SUBSCRIBE, b"m1")
        deadline = time.monotonic() + 5
        while not sub.poll(10):  # the subscription reaches the publisher after the connection
            assert time.monotonic() < deadline
            assert send_pair(pub.underlying, b"m1.hello", b"") == 0
        while sub.poll(0):
            sub.recv_multipart()
        for i in range(3):
            assert send_pair(pub.underlying, b"m2.book", b"not subscribed") == 0
            assert send_pair(pub.underlying, b"m1.book", bytes([i]) * i) == 0
        assert [sub.recv_multipart() for _ in range(3)] == [[b"m1.book", bytes([i]) * i] for i in range(3)]
        assert all(send_pair(pub.underlying, b"m1.book", b"x" * 1000) == 0 for _ in range(10_000))
    finally:
        pub.close(linger=0)
        sub.close(linger=0)
        ctx.term()
