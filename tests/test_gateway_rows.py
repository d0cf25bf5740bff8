"""The OrderRows check and conversion in C (gateway/routing.pyx ``ForwardBatch.add_rows``) against a plain
Python reading of the row rules (docs/ARCHITECTURE.md, OrderRows) on random rows; and the batch's other
entry (``add``), its FIFO pass (``enqueue``) and its publish straight into the command ring."""
from __future__ import annotations

import collections
import os
import uuid

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.cmdring import CommandRing
from engine.records import COMMAND_DTYPE, Cmd, CmdFlag
from gateway import messages as m
from gateway.routing import LEG_RECORD, PENDING_DTYPE, ForwardBatch, PendingQueue
from gateway.server import ROW_RULES, MatcherFeed


def rule_broken(r) -> int:
    kind = int(r["kind"])
    allowed = {1: CmdFlag.POST_ONLY, 2: CmdFlag.BY_CLIENT_ID, 3: CmdFlag.BY_CLIENT_ID}.get(kind, 0)
    rules = [not 1 <= kind <= 4, r["side"] > 1, r["tif"] > 2, r["ord_type"] > 1, r["stp"] > 3,
             int(r["flags"]) & ~allowed, kind in (2, 3) and r["id"] == 0, kind != 1 and r["venue"] != 0]
    return next((i + 1 for i, broken in enumerate(rules) if broken), 0)


def random_rows(rng, n: int) -> np.ndarray:
    """OrderRows rows, most keeping every rule, the rest breaking one or more at random."""
    rows = np.zeros(n, m.COMMAND_ROW_DTYPE)
    good = rng.random(n) < 0.97  # most rows keep every rule, so most messages pass
    rows["kind"] = np.where(good, rng.integers(1, 5, n), rng.integers(0, 7, n))
    for name, top in (("side", 1), ("tif", 2), ("ord_type", 1), ("stp", 3)):
        rows[name] = np.where(good, rng.integers(0, top + 1, n), rng.integers(0, top + 3, n))
    rows["flags"] = np.where(good, 0, rng.integers(0, 4, n))
    rows["venue"] = np.where(rows["kind"] == 1, rng.integers(0, 3, n), np.where(good, 0, 1))
    rows["id"] = np.where(good, rng.integers(1, 1000, n), rng.integers(0, 2, n))
    for name in ("market", "rid", "price", "qty", "expire_at"):
        rows[name] = rng.integers(0, 1 << 31, n)
    rows["market"][rng.random(n) < 0.3] = 0
    return rows


@pytest.mark.parametrize("seed", [7, 8, 9])
def test_add_rows_keeps_the_rules_and_fills_every_command_field(seed):
    """Bursts of several sessions, each a run of messages of one session and account (one ``add_rows``
    each), into one batch: the rows of each message that keeps every rule, in order, with every command
    field; each message with a bad row left out whole, named by its rid, first bad row, rule and offset."""
    rng = np.random.default_rng(seed)
    batch, expected, at = ForwardBatch(), [], 0
    for burst in range(120):
        counts = rng.integers(1, 6, rng.integers(1, 5))
        rows = random_rows(rng, int(counts.sum()))
        sid, account = int(rng.integers(0, 9)), int(rng.integers(1, 1 << 40))
        heads = np.stack([rng.integers(1, 1 << 40, len(counts)), counts], axis=1)  # (rid, row count) per message
        data = rows.tobytes() if burst % 2 else bytearray(rows.tobytes())  # as order_rows / drain_burst give them
        refused = batch.add_rows(sid, account, heads, data)
        want, first = [], 0
        for (rid, count) in heads.tolist():
            message = rows[first:first + count]
            broken = [(j, rule_broken(r)) for j, r in enumerate(message) if rule_broken(r)]
            if broken:
                row, rule = broken[0]
                assert ROW_RULES[rule](message[row])  # each rule has its description
                want.append((rid, row, rule, (first + row) * m.COMMAND_ROW_DTYPE.itemsize))
            else:
                expected += [(sid, account, r) for r in message]
            first += count
        assert refused == (want or None)
        at += len(rows)
    pending = batch.pending()
    assert 0 < len(batch) == len(pending) == len(expected) < at
    for p, (sid, account, r) in zip(pending, expected):
        cmd = p["cmd"]
        all_markets = r["kind"] == 4 and r["market"] == 0
        assert (p["sid"], p["rid"], cmd["account"], cmd["ts"]) == (sid, r["rid"], account, 0)
        assert int(cmd["flags"]) == (CmdFlag.ALL_MARKETS if all_markets else r["flags"])
        assert cmd["aux"] == r["expire_at"]
        for name in ("kind", "side", "tif", "ord_type", "stp", "venue", "market", "price", "qty", "id"):
            assert cmd[name] == r[name], name


def test_add_rows_and_add_refuse_bad_arguments_and_add_nothing():
    rows = np.zeros(3, m.COMMAND_ROW_DTYPE)
    rows["kind"] = 1
    heads = np.array([[1, 2], [2, 1]], np.int64)
    batch = ForwardBatch()
    assert batch.add_rows(5, 7, heads, rows.tobytes()) is None and len(batch) == 3
    for hs, data, reason in ((np.array([[1, 3], [2, 1]], np.int64), rows.tobytes(), "message 1 has 1 rows, 3 rows"),
                             (np.array([[1, 1], [2, 1]], np.int64), rows.tobytes(),
                              "the messages have 2 rows, 3 given"),
                             (heads, rows.tobytes()[:-1], "161 bytes are not whole 54-byte rows"),
                             (heads.astype(np.int32), rows.tobytes(), "int64 array of \\(rid, row count\\)"),
                             (heads[:, :1].copy(), rows.tobytes(), "pairs"),
                             (np.asfortranarray(np.array([[1, 2], [2, 1], [3, 0]], np.int64)), rows.tobytes(),
                              "C-contiguous"),
                             (np.array([[1, 4], [2, -1]], np.int64), rows.tobytes(), "message 0 has 4 rows"),
                             (np.array([[1, 2], [2, -1]], np.int64), rows.tobytes(), "message 1 has -1 rows"),
                             (np.array([[1, 1 << 62], [2, 1]], np.int64), rows.tobytes(), "message 0 has 4611")):
        with pytest.raises(ValueError, match=reason):
            batch.add_rows(5, 7, hs, data)
    with pytest.raises(TypeError):
        batch.add_rows(5, 7, heads, "not bytes")
    command = (Cmd.PLACE, 0, 0, 0, 0, 0, 0, 1, 0, 7, 100, 1, 9, 0)
    for bad, error, reason in ((command[:13], ValueError, "14 fields, not 13"),
                               (command[:5] + (1 << 16,) + command[6:], OverflowError, None),  # flags: 16 bits
                               (command[:11] + (1 << 63,) + command[12:], OverflowError, None),  # qty: int64
                               (command[:1] + (-1,) + command[2:], OverflowError, None)):  # side: unsigned
        with pytest.raises(error, match=reason):
            batch.add(1, 2, bad)
    assert len(batch) == 3
    batch.add(1, 2, command)
    assert len(batch) == 4 and batch.pending()[3].tolist() == (1, 2, command, 3)
    for bad in (np.zeros(2, m.COMMAND_ROW_DTYPE), np.zeros((2, 1), COMMAND_DTYPE), np.zeros(4, COMMAND_DTYPE)[::2]):
        with pytest.raises(TypeError, match="1-d C-contiguous array of COMMAND_DTYPE"):
            batch.add_multi_leg(1, 3, bad)
    assert len(batch) == 4
    batch.clear()
    assert len(batch) == 0 and len(batch.pending()) == 0


def test_a_batch_grows_and_enqueues_each_accounts_runs_in_order():
    """Single commands and multi-leg orders of several accounts, past the first capacity: each account's
    FIFO gets its commands in order and no Leg record (its header answers for it)."""
    batch, fifo, sent = ForwardBatch(), collections.defaultdict(PendingQueue), []
    rng = np.random.default_rng(3)
    for i in range(700):
        account = int(rng.integers(1, 4))
        cmd = (Cmd.PLACE, 0, 0, 0, 0, 0, 0, 1, 0, account, 100 + i, 1, i + 1, 0)
        if i % 7 == 3:  # a multi-leg order: its header and two legs, each leg a Leg record
            legs = [(Cmd.MULTI_LEG, 0, 0, 0, 0, 0, 0, 0, 0, account, 0, 2, i + 1, 0)] + [
                (Cmd.LEG, 0, 0, 0, 0, 0, 0, 1 + k, 0, account, 100 + i, 1, i + 1, 0) for k in range(2)]
            batch.add_multi_leg(account * 10, i, np.array(legs, COMMAND_DTYPE))
            sent += [(account * 10 if k == 0 else LEG_RECORD, i, leg, len(sent) + k) for k, leg in enumerate(legs)]
        else:
            batch.add(account * 10, i, cmd)
            sent.append((account * 10, i, cmd, len(sent)))
    assert batch.enqueue(fifo) == len(batch) == len(sent) == 900
    assert batch.pending().tolist() == sent
    for account in (1, 2, 3):
        want = np.array([row for row in sent if row[2][9] == account and row[0] != LEG_RECORD], PENDING_DTYPE)
        assert fifo[account].rows_bytes() == want.tobytes()


@pytest.fixture
def name():
    n = f"xos-test-fwd-{uuid.uuid4().hex[:8]}"
    yield n
    for path in (f"/dev/shm/{n}", f"/dev/shm/{n}.doorbell"):
        if os.path.exists(path):
            os.unlink(path)


def test_a_batch_publishes_straight_into_the_ring_or_waits_whole_in_the_feed(name):
    """``publish`` copies each command from beside its session and rid into the slots, wrapping round the
    ring; a batch without room waits whole in the feed's backlog (as an array) and goes in, in order, once
    the matcher has taken; a closed ring answers -1 and the feed attaches to the next."""
    def batch_of(first: int, n: int) -> ForwardBatch:
        batch = ForwardBatch()
        for i in range(first, first + n):
            batch.add(9, i, (Cmd.PLACE, 0, 0, 0, 0, 0, 0, 1, 0, 7, i, 1, i, 0))
        return batch

    def take(ring, k: int) -> list[int]:
        out = np.zeros(k, COMMAND_DTYPE)
        assert ring.take_into(out.view(np.uint8), 0, k) == k
        return out["id"].tolist()

    with CommandRing.consumer(name, 8) as matcher:
        feed = MatcherFeed(name)
        feed.send(np.zeros(0, COMMAND_DTYPE))  # attaches
        assert batch_of(1, 6).publish(feed.ring) == 1 and take(matcher, 6) == list(range(1, 7))
        assert batch_of(7, 5).publish(feed.ring) == 1  # wraps: 2 slots at the end, 3 at the start
        assert take(matcher, 5) == list(range(7, 12))
        feed.send_batch(batch_of(12, 6))
        feed.send_batch(batch_of(18, 4))  # 2 slots left: it waits whole
        assert matcher.available() == 6 and feed.unsent == 4 and feed.ring.stats["full"] == 1
        feed.send_batch(batch_of(22, 1))  # behind it, though it would fit
        assert feed.unsent == 5 and take(matcher, 6) == list(range(12, 18))
        assert feed.flush() and take(matcher, 5) == list(range(18, 23))
        stale = feed.ring
    assert batch_of(1, 1).publish(stale) == -1  # the matcher closed it
    feed.send_batch(batch_of(23, 2))
    assert feed.unsent == 2  # no ring: kept
    with CommandRing.consumer(name, 8) as restarted:
        feed.send_batch(batch_of(25, 1))  # behind those waiting
        assert feed.unsent == 3 and feed.flush() and take(restarted, 3) == [23, 24, 25]
    feed.close()


def test_the_feed_names_the_first_command_a_new_matcher_takes_and_the_fifo_gives_up_those_before(name):
    """``MatcherFeed.sent_before`` maps a matcher's first command-ring position to the gateway's ``send_seq``:
    a matcher that takes over the ring from position 2 reads from the third command sent; a ring another
    matcher consumes gives no answer; a closed ring reads nothing more.  ``PendingQueue.take_sent_before`` then
    hands out an account's commands before it, oldest first, as lost tuples."""
    batch, fifo, feed, me = ForwardBatch(), collections.defaultdict(PendingQueue), MatcherFeed(name), os.getpid()

    def forward(*ids: int) -> None:
        for i in ids:
            batch.add(i, i, (Cmd.PLACE, 0, 0, 0, 0, 0, 0, 1, 0, 8 if i % 2 else 7, 100, 1, i, 0))  # odd: 8
        batch.enqueue(fifo)
        feed.send_batch(batch)
        batch.clear()

    taken = np.zeros(8, COMMAND_DTYPE)
    with CommandRing.consumer(name, 8) as dying:
        forward(1, 2, 3)  # attaches on the first send
        assert dying.take_into(taken.view(np.uint8), 0, 2) == 2  # taken, then it dies unjournaled
        forward(4, 5)
        with CommandRing.consumer(name, 8):  # its successor takes the ring over at position 2
            assert feed.sent_before(me, 2) == 2 and feed.sent_before(me + 1, 2) is None
            assert fifo[7].take_sent_before(2) == [(2, 2, Cmd.PLACE, 2, 7)] and len(fifo[7]) == 1  # 4: sent after
            assert fifo[8].take_sent_before(2) == [(1, 1, Cmd.PLACE, 1, 8)] and len(fifo[8]) == 2
            assert fifo[8].take_sent_before(0) == [] and len(fifo[8]) == 2
    assert feed.sent_before(me, 0) == 5  # closed: every command sent went to a ring no matcher reads now
    with CommandRing.consumer(name, 8) as fresh:
        forward(6)  # into the new ring, from its position 0
        assert feed.sent_before(me, 0) == 5 and feed.sent_before(me, 1) == 6
        assert fresh.take_into(taken.view(np.uint8), 0, 8) == 1 and taken["id"][0] == 6
        assert fifo[8].take_sent_before(6) == [(3, 3, Cmd.PLACE, 3, 8), (5, 5, Cmd.PLACE, 5, 8)]
        assert len(fifo[8]) == 0
        assert fifo[7].take_sent_before(6) == [(4, 4, Cmd.PLACE, 4, 7), (6, 6, Cmd.PLACE, 6, 7)]
        assert len(fifo[7]) == 0
    feed.close()


# ------------------------------------------------------------------ ForwardBatch against a Python model

FIELD_RANGES = [(0, (1 << 16) - 1), (0, 255), (0, 255), (0, 255), (0, 255), (0, (1 << 16) - 1), (0, (1 << 32) - 1),
                (0, (1 << 32) - 1)] + [(-(1 << 63), (1 << 63) - 1)] * 6  # COMMAND_DTYPE's fields, in order


class ReferenceForward:
    """``ForwardBatch`` in Python: the pending rows as (sid, rid, command tuple, send_seq), the FIFOs as lists."""

    def __init__(self):
        self.rows: list[tuple] = []
        self.sent = 0  # the commands enqueued so far: the next one's send_seq

    def add(self, sid: int, rid: int, command: tuple) -> None:
        if len(command) != 14:
            raise ValueError("14 fields")
        if any(not lo <= v <= hi for v, (lo, hi) in zip(command, FIELD_RANGES)):
            raise OverflowError
        self.append(sid, rid, command)

    def append(self, sid: int, rid: int, command: tuple) -> None:
        self.rows.append((sid, rid, command, self.sent + len(self.rows)))

    def add_rows(self, sid: int, account: int, heads: np.ndarray, data: bytes):
        rows, refused, first = np.frombuffer(data, m.COMMAND_ROW_DTYPE), [], 0
        for rid, count in heads.tolist():
            message = rows[first:first + count]
            broken = next(((j, rule_broken(r)) for j, r in enumerate(message) if rule_broken(r)), None)
            if broken:
                refused.append((rid, *broken, (first + broken[0]) * m.COMMAND_ROW_DTYPE.itemsize))
            for r in message if broken is None else ():
                flags = int(CmdFlag.ALL_MARKETS) if r["kind"] == 4 and r["market"] == 0 else int(r["flags"])
                fields = [int(r[name]) for name in ("kind", "side", "tif", "ord_type", "stp")]
                fields += [flags, int(r["venue"]), int(r["market"]), 0, account]
                fields += [int(r[name]) for name in ("price", "qty", "id", "expire_at")]
                self.append(sid, int(r["rid"]), tuple(fields))
            first += count
        return refused or None

    def add_multi_leg(self, sid: int, rid: int, commands: np.ndarray) -> None:
        for k, c in enumerate(commands.tolist()):
            self.append(sid if k == 0 else LEG_RECORD, rid, c)

    def enqueue(self, fifo) -> int:
        for row in self.rows:
            if row[0] != LEG_RECORD:
                fifo[row[2][9]].append(row)
        self.sent += len(self.rows)
        return len(self.rows)


field_value = st.one_of(st.integers(0, 3), st.integers(-(1 << 64), 1 << 64))
single = st.tuples(st.just("add"), st.integers(-1, 9), st.integers(0, 1 << 40),
                   st.lists(field_value, min_size=13, max_size=15).map(tuple))
row_messages = st.tuples(st.just("rows"), st.integers(0, 9), st.integers(1, 5), st.lists(st.integers(1, 4), max_size=4),
                         st.integers(0, 2**32 - 1))
multi = st.tuples(st.just("multi"), st.integers(0, 9), st.integers(0, 1 << 40), st.integers(1, 4))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(single, row_messages, multi, st.tuples(st.just("forward"))), max_size=40))
def test_a_forward_batch_agrees_with_its_python_model(ops):
    """Random interleavings of single commands (some with fields out of range or the wrong count), row messages
    (some breaking a rule) and multi-leg orders, forwarded now and then: after every step the C batch holds the
    model's rows and says what the model says (refused messages, errors), and each forward fills the FIFOs the
    same way, oldest first."""
    batch, model = ForwardBatch(), ReferenceForward()
    fifo, want = collections.defaultdict(PendingQueue), collections.defaultdict(list)
    for op in ops:
        if op[0] == "add":
            _, sid, rid, command = op
            errors = []
            for target in (batch, model):
                try:
                    target.add(sid, rid, command)
                except (ValueError, OverflowError) as exc:
                    errors.append(type(exc))
            assert errors in ([], [ValueError, ValueError], [OverflowError, OverflowError])
        elif op[0] == "rows":
            _, sid, account, counts, seed = op
            rows = random_rows(np.random.default_rng(seed), sum(counts))
            heads = np.array([[seed + k, c] for k, c in enumerate(counts)], np.int64).reshape(-1, 2)
            assert batch.add_rows(sid, account, heads, rows.tobytes()) == model.add_rows(sid, account, heads,
                                                                                        rows.tobytes())
        elif op[0] == "multi":
            _, sid, rid, legs = op
            records = np.zeros(legs + 1, COMMAND_DTYPE)
            records["kind"], records["account"], records["id"] = Cmd.LEG, sid + 100, np.arange(legs + 1)
            records["kind"][0], records["qty"][0] = Cmd.MULTI_LEG, legs
            batch.add_multi_leg(sid, rid, records)
            model.add_multi_leg(sid, rid, records)
        else:
            assert batch.enqueue(fifo) == model.enqueue(want)
            batch.clear()
            model.rows = []
        assert batch.pending().tolist() == model.rows
    for account, rows in want.items():
        assert fifo[account].rows_bytes() == np.array(rows, PENDING_DTYPE).tobytes()
    assert all(len(q) == 0 for account, q in fifo.items() if account not in want)
