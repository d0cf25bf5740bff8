"""Market-data core (``gateway.marketdata.MarketDataCore``) against the matcher's own book.

A seeded adversarial stream (tests/generators.py) runs through the real engine; its events are fed
to the core in slices of random size (so commands are cut between batches too), and the messages
the core publishes are applied to a subscriber's books.  At every check the core's books, the
subscriber's L2 and L3 replicas and the checksums all equal ``Engine.l2`` / ``Engine.l3``.
"""
from __future__ import annotations

import json
import pickle
import random

import numpy as np
import pytest
from generators import ENGINE_KWARGS, StreamGenerator, run_stream

from engine.matcher import Engine
from engine.records import EVENT_DTYPE
from engine.workers import SequenceGapError
from gateway.marketdata import MarketDataCore
from gateway.mdmessages import (
    ASK,
    BID,
    CHANNEL_BOOK,
    CHANNEL_ORDERS,
    CHANNEL_STATUS,
    CHANNEL_TRADES,
    ENCODER,
    PUB_DECODER,
    Book,
    BookSnapshotRequest,
    BookUpdate,
    MarketsRequest,
    MdError,
    OrderSnapshotRequest,
    OrderUpdate,
    Trades,
    book_checksum,
    PRIORITY_LOST,
    ops_of,
    trades_of,
)

ALL = 1 << 30


def engine_l2(engine, market):
    bids, asks = engine.l2(market, depth=ALL)
    return [tuple(lv) for lv in bids], [tuple(lv) for lv in asks]


def engine_l3(engine, market):
    return [(o.order_id, o.side, o.price, o.remaining) for o in engine.l3(market)]


class Subscriber:
    """Applies published messages the way a client does, checking seqs and checksums."""

    def __init__(self):
        self.l2: dict[int, Book] = {}
        self.l3: dict[int, Book] = {}
        self.trade_numbers: dict[int, int] = {}
        self.trades = 0

    def receive(self, channel, msg) -> None:
        msg = PUB_DECODER.decode(ENCODER.encode(msg))  # through the wire format
        m = msg.market
        if channel == CHANNEL_BOOK:
            assert isinstance(msg, BookUpdate)
            book = self.l2.setdefault(m, Book(m))
            assert msg.seq == book.seq + 1
            book.apply_levels(msg)
            assert book.checksum() == msg.checksum
        elif channel == CHANNEL_ORDERS:
            assert isinstance(msg, OrderUpdate)
            book = self.l3.setdefault(m, Book(m))
            assert msg.seq == book.seq + 1
            book.apply_ops(msg)
            assert book.checksum() == msg.checksum
        elif channel == CHANNEL_TRADES:
            assert isinstance(msg, Trades)
            for number in trades_of(msg)["number"].tolist():
                assert number == self.trade_numbers.get(m, 0) + 1
                self.trade_numbers[m] = number
                self.trades += 1
        else:
            assert channel == CHANNEL_STATUS


def check_against_engine(core, engine, sub):
    markets = [mv.market_id for mv in engine.markets()]
    assert sorted(core.books) == sorted(markets)
    for m in markets:
        bids, asks = engine_l2(engine, m)
        book = core.books[m]
        assert book.side_levels(BID) == bids and book.side_levels(ASK) == asks
        assert [(o.order_id, o.side, o.price, o.qty) for o in core.resting(m)] == engine_l3(engine, m)
        assert book.checksum() == book_checksum(bids, asks)
        if m in sub.l2:
            assert sub.l2[m].side_levels(BID) == bids and sub.l2[m].side_levels(ASK) == asks
            assert [(o.order_id, o.side, o.price, o.qty) for o in sub.l3[m].resting_orders()] == engine_l3(engine, m)
    assert core.l3_mismatches == 0 and core.unknown_orders == 0


def matcher_batches(engine, gen: StreamGenerator, n_commands: int, chunk: int, rng: random.Random):
    """``run_stream`` with the matcher's batching: each chunk is processed in batches of random size
    whose commands carry one ``ts`` (as ``MatcherStage`` stamps its input batches); yields the
    events of each chunk."""
    done = 0
    while done < n_commands:
        cmds = gen.next_chunk(min(chunk, n_commands - done))
        parts = []
        start = 0
        while start < len(cmds):
            stop = min(len(cmds), start + rng.randint(1, 80))
            cmds["ts"][start:stop] = cmds["ts"][start:stop].max()
            parts.append(engine.process(cmds[start:stop]))
            start = stop
        events = np.concatenate(parts)
        gen.observe(cmds, events)
        done += len(cmds)
        yield events


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_core_books_equal_the_matchers_after_a_random_stream(seed):
    rng = random.Random(seed)
    engine = Engine(**ENGINE_KWARGS)
    gen = StreamGenerator(seed=seed, depth=3 if seed == 3 else 1)
    core = MarketDataCore()
    whole = MarketDataCore()  # the same events in whole chunks
    sub = Subscriber()
    fills = 0
    chunks = matcher_batches(engine, gen, 12_000, 300, rng) if seed != 2 else \
        (events for _, events in run_stream(engine, gen, n_commands=12_000, chunk=1))  # a batch (one ts) a command
    for i, events in enumerate(chunks):
        fills += int((events["kind"] == 3).sum())
        published = []
        start = 0
        while start < len(events):  # slices of random size: matcher batches get cut between them
            stop = min(len(events), start + rng.randint(1, 400))
            for channel, msg in core.apply(events[start:stop], complete=stop == len(events)):
                sub.receive(channel, msg)
                published.append(msg)
            start = stop
        assert published == [msg for _, msg in whole.apply(events)]  # numbering ignores the ring's batching
        if i % 5 == 4:
            check_against_engine(core, engine, sub)
        if i == 20:  # a checkpointed core carries on exactly
            core = pickle.loads(pickle.dumps(core))
    check_against_engine(core, engine, sub)
    assert sub.trades == fills > 100
    assert len(core.orders) == engine.open_orders > 0


def test_takes_that_end_a_matcher_batch_are_applied_in_place(monkeypatch):
    """A take is whole when the next event is of a later ``ts`` (the service asks ``RingConsumer.next_ts``):
    then nothing is held and nothing is copied; one cut inside a batch holds that batch and joins it with
    the rest of it.  Either way the messages are those of a core fed everything at once."""
    import gateway.marketdata as md

    engine = Engine(**ENGINE_KWARGS)
    events = np.concatenate(list(matcher_batches(engine, StreamGenerator(seed=12), 3_000, 300, random.Random(12))))
    rng = random.Random(12)
    ends = np.flatnonzero(np.diff(events["ts"]) != 0) + 1  # where a matcher batch ends
    inside = np.flatnonzero(np.diff(events["ts"]) == 0) + 1
    cuts = sorted(set(rng.sample(ends.tolist(), 25) + rng.sample(inside.tolist(), 10) + [len(events)]))
    joins, join_records = [], md.join_records
    monkeypatch.setattr(md, "join_records", lambda parts: joins.append(len(parts)) or join_records(parts))
    core, published, start = MarketDataCore(), [], 0
    for stop in cuts:
        piece = events[start:stop]
        complete = stop == len(events) or events["ts"][stop] != piece["ts"][-1]
        was_held, n_joins = len(core.held), len(joins)
        published += core.apply(piece, complete=complete)
        if complete:
            assert len(core.held) == 0
            if not was_held:
                assert len(joins) == n_joins  # applied in place
        else:
            assert len(core.held) and core.held["ts"][-1] == piece["ts"][-1]
        start = stop
    assert joins and published == MarketDataCore().apply(events)
    check_against_engine(core, engine, Subscriber())


def test_takes_from_a_ring_cut_anywhere_publish_what_a_core_fed_all_at_once_does(tmp_path):
    """The service's loop on a real ring: takes of random sizes (cut inside batches and between them),
    each applied as complete when ``ends_a_batch`` says so from the ring's ``next_ts``."""
    import os

    from engine.ring import EventRing, RingConsumer
    from gateway.marketdata import FOLLOWED, ends_a_batch

    engine = Engine(**ENGINE_KWARGS)
    rng = random.Random(13)
    batches = list(matcher_batches(engine, StreamGenerator(seed=13), 4_000, 300, rng))
    name = f"/xos-test-md-{os.getpid()}"
    ring = EventRing.create(name, 1 << 16)
    try:
        consumer = RingConsumer.attach(name, "md")
        core, published = MarketDataCore(), []
        for k, events in enumerate(batches):
            ring.publish_array(events)
            if k % 3 != 2 and k + 1 < len(batches):
                continue  # let several batches pile up in the ring
            while consumer.available():
                size = rng.choice((rng.randint(1, 3), rng.randint(1, 700)))  # small: often none of FOLLOWED
                chosen, first, last = consumer.take_kinds(size, FOLLOWED)
                published += core.apply_taken(chosen, first, last,
                                              complete=ends_a_batch(consumer.next_ts(), chosen, core.held))
                consumer.release_to(last)
        assert len(core.held) == 0
        reference = MarketDataCore()
        assert published == reference.apply(np.concatenate(batches))
        check_against_engine(core, engine, Subscriber())
        consumer.detach()
    finally:
        ring.close()


def test_ends_a_batch():
    from gateway.marketdata import ends_a_batch

    events = np.zeros(3, EVENT_DTYPE)
    events["ts"] = [5, 5, 7]
    none = events[:0]
    assert ends_a_batch(None, events, none) and ends_a_batch(8, events, none)
    assert not ends_a_batch(7, events, none)  # the batch of ts 7 goes on
    assert not ends_a_batch(5, none, events[:2]) and ends_a_batch(6, none, events[:2])  # nothing followed taken
    assert ends_a_batch(5, none, none)


def test_a_held_matcher_batch_goes_into_the_checkpoint():
    """Events cut inside a matcher batch: the core publishes the whole batches before it and holds
    that one; a checkpoint taken then holds it too, and both go on exactly as a core fed all at once."""
    engine = Engine(**ENGINE_KWARGS)
    events = np.concatenate(list(matcher_batches(engine, StreamGenerator(seed=11), 600, 600, random.Random(11))))
    inside = np.flatnonzero(np.diff(events["ts"]) == 0)  # between two events of one matcher batch
    cut = int(inside[len(inside) // 2]) + 1
    core = MarketDataCore()
    first = core.apply(events[:cut], complete=False)
    held_from = int(np.searchsorted(events["ts"], events["ts"][cut - 1]))
    assert core.cursor == events["seq"][cut - 1] and len(core.held) and first
    restored = pickle.loads(pickle.dumps(core))
    assert np.array_equal(restored.held, core.held) and restored.cursor == core.cursor
    assert core.held["seq"][0] >= events["seq"][held_from]
    rest = core.apply(events[cut:])
    again = restored.apply(events[cut:])
    assert rest == again and rest
    reference = MarketDataCore()
    assert reference.apply(events) == first + rest
    check_against_engine(core, engine, Subscriber())


def test_replayed_events_are_skipped_and_a_gap_is_refused():
    engine = Engine(**ENGINE_KWARGS)
    gen = StreamGenerator(seed=5)
    core = MarketDataCore()
    chunks = [events for _, events in run_stream(engine, gen, n_commands=2000, chunk=200)]
    first = [m for e in chunks[:5] for m in core.apply(e)]
    again = core.apply(np.concatenate(chunks[:5]))  # a restarted ring replays from seq 1
    assert first and again == []
    with pytest.raises(SequenceGapError):
        core.apply(chunks[6])
    for e in chunks[5:]:
        core.apply(e)
    check_against_engine(core, engine, Subscriber())


def test_snapshots_answer_at_the_published_seq():
    engine = Engine(**ENGINE_KWARGS)
    gen = StreamGenerator(seed=7)
    core = MarketDataCore()
    live = Subscriber()
    late = Subscriber()
    chunks = list(matcher_batches(engine, gen, 4000, 200, random.Random(7)))  # one ts a matcher batch
    half = len(chunks) // 2
    for events in chunks[:half]:
        for channel, msg in core.apply(events):
            live.receive(channel, msg)
    markets = core.market_list().markets
    assert [mi.market for mi in markets] == sorted(mv.market_id for mv in engine.markets())
    assert all("/" in mi.symbol for mi in markets)
    for mi in markets:  # a late joiner: snapshots now, then only what follows
        snap = core.answer(BookSnapshotRequest(mi.market))
        late.l2[mi.market] = Book(mi.market)
        late.l2[mi.market].load(snap)
        late.trade_numbers[mi.market] = snap.trade_number
        assert snap.seq == core.books[mi.market].seq and snap.checksum == core.books[mi.market].checksum()
        orders = core.answer(OrderSnapshotRequest(mi.market))
        late.l3[mi.market] = Book(mi.market)
        late.l3[mi.market].load_orders(orders)
        assert orders.seq == snap.seq and late.l3[mi.market].checksum() == snap.checksum
        top = core.answer(BookSnapshotRequest(mi.market, depth=2))
        assert len(top.bids) <= 2 and len(top.asks) <= 2 and top.checksum == snap.checksum
    for events in chunks[half:]:
        for channel, msg in core.apply(events):
            live.receive(channel, msg)
            late.receive(channel, msg)
    check_against_engine(core, engine, late)
    assert isinstance(core.answer(BookSnapshotRequest(9999)), MdError)
    assert isinstance(core.answer(MarketsRequest()), type(core.market_list()))


def test_core_handles_priority_loss_partial_fills_and_status():
    """Hand-made cases: an amended order that crosses and rests, one that fills away, a halt."""
    core = MarketDataCore()
    sub = Subscriber()
    log = []

    def run(events):
        for channel, msg in core.apply(events):
            sub.receive(channel, msg)
            log.append(msg)

    events = []
    e = Engine(**ENGINE_KWARGS)
    events.append(e.add_asset(1, "BTC", 8))
    events.append(e.add_asset(2, "USD", 2))
    events.append(e.add_market(7, 1, 2, tick_size=1, lot_size=1, min_size=1))
    for acct in (1, 2):
        events.append(e.deposit(acct, 1, 10_000))
        events.append(e.deposit(acct, 2, 10_000_000))
    events.append(e.place(1, 7, 0, 100, 5, 1))  # bid 5 @ 100
    events.append(e.place(1, 7, 0, 100, 3, 2))  # bid 3 @ 100 (behind)
    events.append(e.place(2, 7, 1, 105, 4, 1))  # ask 4 @ 105
    events.append(e.amend(1, client_id=2, price=106, qty=6))  # crosses: fills 4 @ 105, rests 2 @ 106
    events.append(e.amend(1, client_id=1, qty=2))  # in place, size down
    events.append(e.place(2, 7, 1, 100, 1, 2))  # sells into the bids: 1 @ 106
    events.append(e.halt(7))
    for ev in events:
        run(ev)
    check_against_engine(core, e, sub)
    ops = np.concatenate([ops_of(m) for m in log if isinstance(m, OrderUpdate)])
    assert bytes(ops["op"]).decode() == "aaameme"  # in event order: the amend, then the trade it made
    assert ops["qty"][:3].tolist() == [5, 3, 4] and ops["remaining"][:3].tolist() == [5, 3, 4]
    assert ops[3]["reason"] == PRIORITY_LOST and ops[3]["price"] == 106 and ops[3]["remaining"] == 2
    assert ops[4]["order_id"] == ops[2]["order_id"] and ops[4]["qty"] == 4 and ops[4]["remaining"] == 0
    assert ops[5]["reason"] == 0 and ops[5]["remaining"] == 2 and ops[5]["price"] == 100
    assert ops[6]["qty"] == 1 and ops[6]["remaining"] == 1 and ops[6]["trade_id"] > 0
    assert core.books[7].halted and core.books[7].trade_number == 2


def test_a_core_bootstrapped_from_a_matcher_snapshot_goes_on_with_the_stream():
    """``from_matcher_state``: the books of an exported engine state (orders in time priority, levels
    summed from them), then the events after it; seqs and trade numbers start at the snapshot's
    event seq."""
    rng = random.Random(4)
    engine = Engine(**ENGINE_KWARGS)
    gen = StreamGenerator(seed=4, depth=3)
    chunks = matcher_batches(engine, gen, 8_000, 300, rng)
    fed = MarketDataCore()  # from the first event on
    for _ in range(12):
        fed.apply(next(chunks))
    state = engine.export_state()
    core = MarketDataCore.from_matcher_state(state)
    assert core.cursor == engine.event_seq and len(core.orders) == engine.open_orders > 0
    check_against_engine(core, engine, Subscriber())
    assert all(b.seq == engine.event_seq == b.trade_number for b in core.books.values())
    assert core.market_list() == fed.market_list()
    for events in chunks:
        core.apply(events)
    check_against_engine(core, engine, Subscriber())


def test_benchmark_runs_small(tmp_path):
    from bench import marketdata as bench

    out = tmp_path / "md.json"
    assert bench.main(["--commands", "3000", "--runs", "1", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["events"] > 3000 and result["messages"] > 0 and result["events_per_s"] > 0


def test_level_check_catches_an_l3_change_its_book_level_does_not_state():
    """The per-level L3/L2 check is live: a fill whose size was altered on the way is counted."""
    engine = Engine(**ENGINE_KWARGS)
    events = np.concatenate([ev for _, ev in run_stream(engine, StreamGenerator(seed=6), n_commands=1500)])
    fills = np.flatnonzero(events["kind"] == 3)
    bad = events.copy()
    bad["qty"][fills[len(fills) // 2]] -= 1
    core = MarketDataCore()
    core.apply(events)
    assert core.l3_mismatches == 0
    core = MarketDataCore()
    core.apply(bad)
    assert core.l3_mismatches > 0


@pytest.mark.parametrize("seed", range(6))
def test_level_mismatches_counts_the_levels_whose_two_sums_differ(seed):
    """``gateway.mdcore.level_mismatches`` against a dict of per-level sums, on random changes: few
    levels (many collisions in its table), L2 rows that cancel the L3 ones, and some that do not; the
    last two seeds with more levels than its table starts with room for."""
    from gateway.mdcore import level_mismatches
    from gateway.mdmessages import LEVEL_DTYPE

    rng = np.random.default_rng(seed)
    n3, top = (int(rng.integers(0, 300)), 110) if seed < 4 else (3000, 400)
    l3 = np.column_stack([rng.integers(1, 4, n3), rng.integers(0, 2, n3), rng.integers(90, top, n3),
                          rng.integers(-5, 6, n3), rng.integers(-1, 2, n3)]).astype(np.int64)
    sums: dict = {}
    for market, side, price, dq, dc in l3.tolist():
        q, c = sums.get((market, side, price), (0, 0))
        sums[market, side, price] = q + dq, c + dc
    # one L2 row per level: its sums, off by one for some, and levels the L3 rows never touched
    levels = list(sums) + [(9, 0, 100 + k) for k in range(int(rng.integers(0, 5)))]
    off = rng.random(len(levels)) < 0.2
    l2 = np.array([(*key, *sums.get(key, (0, 0))) for key in levels], np.int64).reshape(-1, 5)
    l2[off, 3 + rng.integers(0, 2)] += 1
    expected = sum(1 for key, row in zip(levels, l2.tolist()) if (row[3], row[4]) != sums.get(key, (0, 0)))
    assert expected == int(np.count_nonzero(off))
    rows = np.zeros(len(l2), LEVEL_DTYPE)
    rows["side"], rows["price"] = l2[:, 1], l2[:, 2]
    key = (np.arange(len(l2)) << 32) | l2[:, 0]  # batch numbers do not matter to it: the market does
    assert level_mismatches(l3, rows, key, l2[:, 3].copy(), l2[:, 4].copy()) == expected
    # the L3 rows alone: every level whose sums are not zero
    empty = np.zeros(0, np.int64)
    assert level_mismatches(l3, rows[:0], empty, empty, empty) == sum(1 for v in sums.values() if v != (0, 0))
    with pytest.raises(ValueError, match="one length"):
        level_mismatches(l3, rows, key[:0], l2[:, 3].copy(), l2[:, 4].copy())


def run_md_pass(rows: list[dict]):
    """``gateway.mdcore.md_pass`` on events made of ``rows`` (field: value; seq 1, 2, ...) with an empty
    order table: its outputs cut to what it wrote, the table, and the events."""
    from types import SimpleNamespace

    from engine.workercore import IntTable
    from gateway.mdcore import GROUP_COLUMNS, ORDER_COLUMNS, md_pass
    from gateway.mdmessages import LEVEL_DTYPE, OP_DTYPE, TRADE_DTYPE

    events = np.zeros(len(rows), EVENT_DTYPE)
    for i, r in enumerate(rows):
        for name, value in r.items():
            events[name][i] = value
    events["seq"] = np.arange(1, len(rows) + 1)
    n = len(rows)
    table = IntTable(len(ORDER_COLUMNS))
    ops, levels, trades = np.empty(n, OP_DTYPE), np.empty(n, LEVEL_DTYPE), np.empty(n, TRADE_DTYPE)
    level_key, batch_ts = np.empty(n, np.int64), np.empty(n, np.int64)
    groups, deltas = np.empty((n, len(GROUP_COLUMNS)), np.int64), np.empty((2 * n, 5), np.int64)
    n_groups, n_ops, n_levels, n_trades, n_deltas, unknown, orderless = md_pass(
        events.view(np.uint8), table, ops, deltas, levels, level_key, trades, groups, batch_ts)
    return SimpleNamespace(groups=groups[:n_groups], ops=ops[:n_ops], levels=levels[:n_levels],
                           level_key=level_key[:n_levels], trades=trades[:n_trades], deltas=deltas[:n_deltas],
                           batch_ts=batch_ts, unknown=unknown, orderless=orderless, table=table, events=events)


def test_md_pass_by_hand_an_ioc_that_never_rests_and_a_command_bringing_many_orders():
    """``gateway.mdcore.md_pass`` on events written here.  Batch 0: a resting buy in market 3; a halt of
    market 5; a sell that takes the buy and is cancelled for the rest (no add, no cancel: it never
    rested); an ask; market 5 resumed.  Batch 1: one command whose 100 orders all rest in market 4.
    Each output by hand: ops, levels (the last BookLevel of each, bids first), the trade, the groups
    with their bounds and halts, the table, and the levels' changes with ``level_mismatches``."""
    from engine.records import Ev
    from engine.workercore import IntTable
    from gateway.mdcore import ORDER_COLUMNS, level_mismatches, md_pass
    from gateway.mdmessages import OP_ADD, OP_EXECUTE

    def level(cmd, ts, market, side, price, qty, count):
        return dict(kind=Ev.BOOK_LEVEL, cmd_seq=cmd, ts=ts, market=market, side=side, price=price, qty=qty,
                    remaining=count)

    rows = [dict(kind=Ev.ACCEPTED, cmd_seq=1, ts=10, order_id=1, side=0, market=3, price=100, qty=5, remaining=5),
            level(1, 10, 3, 0, 100, 5, 1),
            dict(kind=Ev.MARKET_STATUS, cmd_seq=2, ts=10, market=5, qty=1),
            dict(kind=Ev.ACCEPTED, cmd_seq=3, ts=10, order_id=2, side=1, market=3, price=100, qty=8, remaining=8),
            dict(kind=Ev.FILL, cmd_seq=3, ts=10, order_id=2, side=1, market=3, price=100, qty=5, remaining=3,
                 maker_order=1),
            dict(kind=Ev.CANCELLED, cmd_seq=3, ts=10, order_id=2, side=1, market=3, price=100, qty=3, remaining=0),
            level(3, 10, 3, 0, 100, 0, 0),
            dict(kind=Ev.ACCEPTED, cmd_seq=4, ts=10, order_id=3, side=1, market=3, price=101, qty=2, remaining=2),
            level(4, 10, 3, 1, 101, 2, 1),
            dict(kind=Ev.MARKET_STATUS, cmd_seq=5, ts=10, market=5, qty=0)]
    for k in range(100):  # each order's BookLevel after it: its level's size and count so far
        price = 90 - k % 3
        rows += [dict(kind=Ev.ACCEPTED, cmd_seq=6, ts=20, order_id=10 + k, side=0, market=4, price=price, qty=1,
                      remaining=1), level(6, 20, 4, 0, price, k // 3 + 1, k // 3 + 1)]
    rows.append(dict(kind=Ev.ACCEPTED, cmd_seq=7, ts=20, market=0, order_id=0))  # no order's (a mass cancel's): no op
    r = run_md_pass(rows)
    ops, levels, level_key, table, deltas = r.ops, r.levels, r.level_key, r.table, r.deltas
    assert (len(r.groups), len(ops), len(levels), len(r.trades), r.unknown, r.orderless) == (3, 103, 5, 1, 0, 1)
    assert r.batch_ts[:2].tolist() == [10, 20]
    assert ops[:3][["op", "order_id", "side", "qty", "remaining", "trade_id"]].tolist() == [
        (OP_ADD, 1, 0, 5, 5, 0), (OP_EXECUTE, 1, 0, 5, 0, 5), (OP_ADD, 3, 1, 2, 2, 0)]
    assert (ops["op"][3:] == OP_ADD).all() and ops["order_id"][3:].tolist() == list(range(10, 110))
    assert levels.tolist() == [(0, 100, 0, 0), (1, 101, 2, 1), (0, 88, 33, 33), (0, 89, 33, 33), (0, 90, 34, 34)]
    b1m4 = (1 << 32) | 4
    assert level_key.tolist() == [3, 3, b1m4, b1m4, b1m4]
    assert r.trades.tolist() == [(5, 0, 100, 5, 1, 2, 1)]
    assert r.groups.tolist() == [[3, 0, 3, 0, 2, 0, 1, -1], [5, 3, 3, 2, 2, 1, 1, 0], [b1m4, 3, 103, 2, 5, 1, 1, -1]]
    assert len(table) == 101 and table.get(1) is None and table.get(3) == (3, 1, 101, 2, 8)
    assert table.get(10) == (4, 0, 90, 1, 11)
    # the levels: order 1's add and its execution cancel out; 100 orders over three prices of market 4
    assert deltas[:3].tolist() == [[3, 0, 100, 5, 1], [3, 0, 100, -5, -1], [3, 1, 101, 2, 1]]
    assert deltas[3:, 3].sum() == 100 and sorted(set(deltas[3:, 2].tolist())) == [88, 89, 90]
    # the books were empty: each level's change is its aggregate; one changed otherwise is a mismatch
    dq, dc = levels["qty"].copy(), levels["count"].copy()
    assert level_mismatches(deltas, levels, level_key, dq, dc) == 0
    dq[3] -= 1
    assert level_mismatches(deltas, levels, level_key, dq, dc) == 1
    with pytest.raises(ValueError, match="need room"):
        md_pass(r.events.view(np.uint8), IntTable(len(ORDER_COLUMNS)), ops[:5], np.empty((2 * len(rows), 5), np.int64),
                levels, level_key, r.trades, r.groups, r.batch_ts)


def md_pass_reference(rows: list[dict]) -> tuple:
    """What ``md_pass`` must make of events that each stand alone (one command each: an order that rests
    whole, a BookLevel, a Fill of a maker the table does not hold, a MarketStatus), in plain Python:
    batches by ``ts``; the adds by key in event order; the last BookLevel of each level by key, side and
    price; the Fills by key in event order; the last status per key; the groups with their bounds."""
    batch, b, last_ts = [], -1, None
    for r in rows:
        if r["ts"] != last_ts:
            b, last_ts = b + 1, r["ts"]
        batch.append(b)
    def key(i):
        return (batch[i] << 32) | rows[i]["market"]
    adds = sorted((i for i, r in enumerate(rows) if r["kind"] == 1), key=lambda i: (key(i), i))
    last_level = {}
    for i, r in enumerate(rows):
        if r["kind"] == 6:
            last_level[(batch[i], r["market"], r["side"], r["price"])] = i
    levels = [last_level[k] for k in sorted(last_level)]
    trades = sorted((i for i, r in enumerate(rows) if r["kind"] == 3), key=lambda i: (key(i), i))
    halted = {}
    for i, r in enumerate(rows):
        if r["kind"] == 8:
            halted[key(i)] = int(r["qty"] == 1)
    groups = []
    for k in sorted({key(i) for i in adds} | {key(i) for i in levels} | set(halted)):
        def bounds(seq):
            ks = [key(i) for i in seq]
            lo = sum(1 for x in ks if x < k)
            return lo, lo + ks.count(k)
        groups.append([k, *bounds(adds), *bounds(levels), *bounds(trades), halted.get(k, -1)])
    return adds, levels, trades, groups


@pytest.mark.parametrize("seed", range(8))
def test_md_pass_sorts_and_groups_like_the_python_reference(seed):
    """Many markets interleaved in each matcher batch, levels touched several times, statuses flipping:
    the merge sorts (on rows out of order) and the grouping of ``md_pass`` against ``md_pass_reference``; the
    last two seeds with enough levels (some 1,000) to grow the table that keeps each one's last BookLevel."""
    rng = random.Random(seed)
    rows, ts, order_id = [], 100, 1
    for cmd in range(1, rng.randint(1, 400) if seed < 6 else 3000):
        if rng.random() < 0.1:
            ts += rng.randint(1, 3)  # the next matcher batch
        market, side, price = rng.randint(1, 6), rng.randint(0, 1), rng.randint(95, 105)
        kind = rng.choice((1, 1, 6, 6, 6, 3, 8))
        r = dict(kind=kind, cmd_seq=cmd, ts=ts, market=market, side=side, price=price, qty=rng.randint(0, 9),
                 remaining=rng.randint(0, 9))
        if kind == 1:  # an order that rests whole
            r.update(order_id=order_id, qty=5, remaining=5)
            order_id += 1
        elif kind == 3:  # a fill of a maker the table does not hold: a trade, its op left out
            r.update(order_id=order_id, maker_order=10**9 + cmd)
            order_id += 1
        elif kind == 8:
            r.update(qty=rng.randint(0, 1))
        rows.append(r)
    got = run_md_pass(rows)
    adds, levels, trades, groups = md_pass_reference(rows)
    assert got.unknown == len(trades)  # each fill's maker is unknown to the table
    assert got.ops["order_id"].tolist() == [rows[i]["order_id"] for i in adds]
    assert got.levels[["side", "price", "qty", "count"]].tolist() == [
        (rows[i]["side"], rows[i]["price"], rows[i]["qty"], rows[i]["remaining"]) for i in levels]
    assert (got.level_key & 0xFFFFFFFF).tolist() == [rows[i]["market"] for i in levels]
    assert got.trades["id"].tolist() == [i + 1 for i in trades]
    assert got.groups.tolist() == groups
