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
        (events for _, events in run_stream(engine, gen, n_commands=12_000, chunk=300))  # one ts per command
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
    chunks = list(run_stream(engine, gen, n_commands=4000, chunk=200))
    half = len(chunks) // 2
    for _, events in chunks[:half]:
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
    for _, events in chunks[half:]:
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
    levels (many collisions in its table), L2 rows that cancel the L3 ones, and some that do not."""
    from gateway.mdcore import level_mismatches

    rng = np.random.default_rng(seed)
    n3 = int(rng.integers(0, 300))
    l3 = np.column_stack([rng.integers(1, 4, n3), rng.integers(0, 2, n3), rng.integers(90, 110, n3),
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
    columns = [np.ascontiguousarray(l2[:, k]) for k in range(5)]
    assert level_mismatches(l3, *columns) == expected
    # the L3 rows alone: every level whose sums are not zero
    assert level_mismatches(l3, *[c[:0] for c in columns]) == sum(1 for v in sums.values() if v != (0, 0))
    with pytest.raises(ValueError, match="one length"):
        level_mismatches(l3, columns[0], columns[1][:0], *columns[2:])


def test_l3_ops_by_hand_an_ioc_that_never_rests_and_a_command_bringing_many_orders():
    """``gateway.mdcore.l3_ops`` on events written here: a resting buy; a sell that takes it and is
    cancelled for the rest (no add, no cancel: it never rested); then one command (a later matcher
    batch) whose 100 orders all rest: each op with its key, the table and the levels' changes."""
    from engine.records import EVENT_DTYPE, Ev
    from engine.workercore import IntTable
    from gateway.mdcore import ORDER_COLUMNS, l3_ops
    from gateway.mdmessages import OP_ADD, OP_DTYPE, OP_EXECUTE

    rows = [dict(kind=Ev.ACCEPTED, cmd_seq=1, ts=10, order_id=1, side=0, market=3, price=100, qty=5, remaining=5),
            dict(kind=Ev.ACCEPTED, cmd_seq=2, ts=10, order_id=2, side=1, market=3, price=100, qty=8, remaining=8),
            dict(kind=Ev.FILL, cmd_seq=2, ts=10, order_id=2, side=1, market=3, price=100, qty=5, remaining=3,
                 maker_order=1),
            dict(kind=Ev.CANCELLED, cmd_seq=2, ts=10, order_id=2, side=1, market=3, price=100, qty=3, remaining=0)]
    rows += [dict(kind=Ev.ACCEPTED, cmd_seq=3, ts=20, order_id=10 + k, side=0, market=4, price=90 - k % 3, qty=1,
                  remaining=1) for k in range(100)]
    events = np.zeros(len(rows), EVENT_DTYPE)
    for i, r in enumerate(rows):
        for name, value in r.items():
            events[name][i] = value
    events["seq"] = np.arange(1, len(rows) + 1)
    table = IntTable(len(ORDER_COLUMNS))
    ops, keys = np.empty(len(rows), OP_DTYPE), np.empty(len(rows), np.int64)
    deltas = np.empty((2 * len(rows), 5), np.int64)
    n, d, unknown = l3_ops(events.view(np.uint8), table, ops, keys, deltas)
    assert (n, unknown) == (102, 0)
    assert ops[:2][["op", "order_id", "side", "qty", "remaining", "trade_id"]].tolist() == [
        (OP_ADD, 1, 0, 5, 5, 0), (OP_EXECUTE, 1, 0, 5, 0, 3)]
    assert keys[:2].tolist() == [3, 3] and set(keys[2:n].tolist()) == {(1 << 32) | 4}
    assert (ops["op"][2:n] == OP_ADD).all() and ops["order_id"][2:n].tolist() == list(range(10, 110))
    assert len(table) == 100 and table.get(1) is None and table.get(10) == (4, 0, 90, 1, 5)
    # the levels: order 1's add and its execution cancel out; 100 orders over three prices of market 4
    deltas = deltas[:d]
    assert deltas[:2].tolist() == [[3, 0, 100, 5, 1], [3, 0, 100, -5, -1]]
    assert deltas[2:, 3].sum() == 100 and sorted(set(deltas[2:, 2].tolist())) == [88, 89, 90]
