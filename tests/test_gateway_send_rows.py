"""``ReplyRouter.send_rows`` (gateway/routing.pyx): a batch's acks and execution reports sent from C, one message a
session, against what the gateway's outbox would send for the same rows (``AckRows``, ``ReportRows`` or the two
in a ``Replies``, encoded by msgspec, each session's in its row format), over the matcher's own streams routed in
batches of every size; and what it does when a session takes structs, when a peer is gone and when the counts are
out of range."""
from __future__ import annotations

import collections

import numpy as np
import pytest
import zmq
from generators import ENGINE_KWARGS, StreamGenerator, run_stream
from test_gateway_answers import enqueue, pending_rows, router_for

from engine.matcher import Engine
from engine.records import Cmd
from gateway import messages as m
from gateway.routing import LEG_RECORD, PendingQueue
from gateway.server import OrderTable, Session


@pytest.fixture
def router_socket():
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.ROUTER_MANDATORY, 1)
    router.bind("inproc://send-rows")
    peers = {}
    for name in (b"s0", b"s1", b"s2", b"s3"):
        peer = ctx.socket(zmq.DEALER)
        peer.setsockopt(zmq.IDENTITY, name)
        peer.connect("inproc://send-rows")
        peers[name] = peer
    yield router, peers
    for sock in (router, *peers.values()):
        sock.close(linger=0)
    ctx.term()


def received(peers: dict, expect=()) -> dict:
    """Every message waiting at each peer, by routing id (over inproc a sent message is there at once; those
    in ``expect`` are waited for a while all the same)."""
    out = {}
    for name, peer in peers.items():
        while peer.poll(1000 if name in expect and name not in out else 0):
            out.setdefault(name, []).append(peer.recv())
    return out


def expected(router, n_acks: int, n_reports: int, by_sid: dict, by_account: dict) -> dict:
    """What the outbox sends each session for these rows (``acknowledge``, ``report``, ``flush``)."""
    sids, to = router.ack_sid[:n_acks], router.report_to[:n_reports]
    out = {}
    sessions = {s for s in by_sid.values()} | {s for group in by_account.values() for s in group}
    for s in sessions:
        mine_acks = np.array([by_sid.get(sid) is s for sid in sids.tolist()], bool)
        mine_reports = np.array([s in by_account.get(a, ()) for a in to.tolist()], bool)
        items = []
        if mine_acks.any():
            items.append(m.AckRows(rows=m.pack_rows(router.acks[:n_acks][mine_acks], s.row_format),
                                   format=s.row_format))
        if mine_reports.any():
            items.append(m.ReportRows(rows=m.pack_rows(router.reports[:n_reports][mine_reports], s.row_format),
                                      format=s.row_format))
        if items:
            out[s.routing_id] = [m.encode(items[0] if len(items) == 1 else m.Replies(items=items))]
    return out


@pytest.mark.parametrize("chunk, spread, sizes_seen, formats", [
    (1, 3, (0, 0x100), (m.FIXED_ROWS,)), (3, 3, (0, 0x100), (m.FIXED_ROWS, m.PACKED_ROWS)),
    (40, 3, (0, 0x10000), (m.PACKED_ROWS, m.FIXED_ROWS)), (700, 3, (0x100, 0x10000), (m.FIXED_ROWS,)),
    (700, 3, (0x100, 0x10000), (m.PACKED_ROWS,)), (2500, 1, (0x10000, 1 << 30), (m.FIXED_ROWS, m.PACKED_ROWS))])
def test_each_session_gets_what_the_outbox_would_send(router_socket, chunk, spread, sizes_seen, formats):
    """Streams routed in batches of ``chunk`` commands; each command's session one of ``spread`` (some commands'
    none), each account's reports to one session, two, or none; the sessions' row formats taken in turn from
    ``formats``: the bytes each session receives are msgspec's for its rows, and the counts are the rows that had
    a session.  Some payloads are ``sizes_seen`` long (a bin 8, 16 or 32 of rows)."""
    socket, peers = router_socket
    fifo = collections.defaultdict(PendingQueue)
    keyed: set[int] = set()
    router, table = router_for(fifo, keyed), OrderTable()
    sessions = [Session(i, name, f"key{i}", 0) for i, name in enumerate(sorted(peers))]
    for i, s in enumerate(sessions):
        s.row_format = formats[i % len(formats)]
    by_sid: dict = {}
    by_account: dict = collections.defaultdict(set)
    seen = batches = both = 0
    sizes = set()
    for cmds, events in run_stream(Engine(**ENGINE_KWARGS), StreamGenerator(3), min(6000, 300 * chunk), chunk=chunk):
        rows = pending_rows(cmds, seen + 1)
        seen += len(cmds)
        if len(rows):
            enqueue(fifo, rows)
            keyed.update(rows["cmd"]["account"].tolist())
            router.set_keyed(np.array(sorted(keyed), np.int64))
        for sid in rows["sid"][rows["sid"] != LEG_RECORD].tolist():
            if sid % 7:  # the rest: a session already gone
                by_sid[sid] = sessions[sid % spread]
        for account in rows["cmd"]["account"].tolist():
            if account not in by_account and account % 5:
                by_account[account] = {sessions[account % spread]} | ({sessions[3]} if account % 2 else set())
        events["durable_seq"] = seen
        n_acks, n_reports, _ = router.route(np.ascontiguousarray(events).view(np.uint8), 0, 0, table)
        want = expected(router, n_acks, n_reports, by_sid, by_account)
        replies, reports, dropped, gone = router.send_rows(socket.underlying, n_acks, n_reports, by_sid, by_account)
        got = received(peers, want)
        assert got == want
        assert replies == sum(2 if msg[0][:9] == b"\x92\xa7replies" else 1 for msg in want.values())
        assert reports == sum(bool(by_account.get(a)) for a in router.report_to[:n_reports].tolist())
        assert dropped == 0 and gone == []
        for payload in (msg for msgs in got.values() for msg in msgs):  # and the client's decoder reads them
            assert type(m.reply_decoder.decode(payload)) in (m.AckRows, m.ReportRows, m.Replies)
        batches += bool(want)
        sizes.update(len(msg) for msgs in got.values() for msg in msgs)
        both += any(msg[0][:9] == b"\x92\xa7replies" for msg in want.values())
    assert batches > 0 and both > 0
    assert any(sizes_seen[0] <= size < sizes_seen[1] for size in sizes)


def routed_stream(chunk: int = 200):
    """A router that routed a stream's first batch with acks and reports, with the accounts' sessions."""
    fifo = collections.defaultdict(PendingQueue)
    router, table = router_for(fifo, set()), OrderTable()
    seen = 0
    for cmds, events in run_stream(Engine(**ENGINE_KWARGS), StreamGenerator(5), 4000, chunk=chunk):
        rows = pending_rows(cmds, seen + 1)
        seen += len(cmds)
        enqueue(fifo, rows)
        router.set_keyed(np.unique(rows["cmd"]["account"]))
        events["durable_seq"] = seen
        n_acks, n_reports, _ = router.route(np.ascontiguousarray(events).view(np.uint8), 0, 0, table)
        if n_acks and n_reports and (cmds["kind"] == Cmd.PLACE).any():
            return router, n_acks, n_reports, rows
    raise AssertionError("no batch with acks and reports")


def test_a_session_that_takes_structs_sends_nothing(router_socket):
    """One session among those the rows go to takes Ack structs: None, and no session gets anything (the outbox
    sends the batch instead)."""
    socket, peers = router_socket
    router, n_acks, n_reports, rows = routed_stream()
    packed, structs = Session(0, b"s0", "k0", 0), Session(1, b"s1", "k1", 0)
    packed.row_format = m.PACKED_ROWS
    sids = rows["sid"][rows["sid"] != LEG_RECORD].tolist()
    by_sid = {sid: packed for sid in sids}
    by_sid[sids[-1]] = structs
    assert router.send_rows(socket.underlying, n_acks, n_reports, by_sid, {}) is None
    by_account = {a: {packed, structs} for a in rows["cmd"]["account"].tolist()}
    assert router.send_rows(socket.underlying, 0, n_reports, {}, by_account) is None
    assert received(peers) == {}


def test_a_gone_peer_is_named_and_the_others_still_get_theirs(router_socket):
    socket, peers = router_socket
    router, n_acks, n_reports, rows = routed_stream()
    here, gone = Session(0, b"s0", "k0", 0), Session(1, b"nobody", "k1", 0)
    here.row_format = gone.row_format = m.FIXED_ROWS
    sids = rows["sid"][rows["sid"] != LEG_RECORD].tolist()
    by_sid = {sid: (here if i % 2 else gone) for i, sid in enumerate(sids)}
    replies, reports, dropped, lost = router.send_rows(socket.underlying, n_acks, 0, by_sid, {})
    assert lost == [gone] and replies == 1 and reports == dropped == 0
    (payload,) = received(peers, [b"s0"])[b"s0"]
    acks = m.ack_rows(m.reply_decoder.decode(payload))
    assert len(acks) == sum(by_sid.get(sid) is here for sid in router.ack_sid[:n_acks].tolist()) > 0


def test_counts_out_of_range_are_refused(router_socket):
    socket, _ = router_socket
    router, n_acks, n_reports, _ = routed_stream()
    for bad_acks, bad_reports in ((-1, 0), (0, -1), (len(router.ack_sid) + 1, 0), (0, len(router.report_to) + 1)):
        with pytest.raises(ValueError, match="send_rows"):
            router.send_rows(socket.underlying, bad_acks, bad_reports, {}, {})


def test_a_session_with_an_unknown_row_format_is_refused_before_anything_is_sent(router_socket):
    socket, peers = router_socket
    router, n_acks, n_reports, rows = routed_stream()
    good, bad = Session(0, b"s0", "k0", 0), Session(1, b"s1", "k1", 0)
    good.row_format, bad.row_format = m.PACKED_ROWS, 1
    sids = rows["sid"][rows["sid"] != LEG_RECORD].tolist()
    by_sid = {sid: good for sid in sids}
    by_sid[sids[-1]] = bad
    with pytest.raises(ValueError, match="row_format 1"):
        router.send_rows(socket.underlying, n_acks, 0, by_sid, {})
    assert received(peers) == {}


def test_a_routing_id_that_is_not_bytes_is_refused(router_socket):
    socket, _ = router_socket
    router, n_acks, n_reports, rows = routed_stream()
    s = Session(0, "s0", "k0", 0)
    s.row_format = m.PACKED_ROWS
    with pytest.raises(TypeError, match="routing_id of str"):
        router.send_rows(socket.underlying, n_acks, 0, {sid: s for sid in rows["sid"].tolist()}, {})
