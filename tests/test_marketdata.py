"""Market-data core (``gateway.marketdata.MarketDataCore``) against the matcher's own book.

A seeded adversarial stream (tests/generators.py) runs through the real engine; its events are fed
to the core in slices of random size (so commands are cut between batches too), and the messages
the core publishes are applied to a subscriber's books.  At every check the core's books, the
subscriber's L2 and L3 replicas and the checksums all equal ``Engine.l2`` / ``Engine.l3``.
"""
from __future__ import annotations

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
            for t in msg.trades:
                assert t.number == self.trade_numbers.get(m, 0) + 1
                self.trade_numbers[m] = t.number
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
        assert [(o.order_id, o.side, o.price, o.qty) for o in book.resting_orders()] == engine_l3(engine, m)
        assert book.checksum() == book_checksum(bids, asks)
        if m in sub.l2:
            assert sub.l2[m].side_levels(BID) == bids and sub.l2[m].side_levels(ASK) == asks
            assert [(o.order_id, o.side, o.price, o.qty) for o in sub.l3[m].resting_orders()] == engine_l3(engine, m)
    assert core.l3_mismatches == 0 and core.unknown_orders == 0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_core_books_equal_the_matchers_after_a_random_stream(seed):
    rng = random.Random(seed)
    engine = Engine(**ENGINE_KWARGS)
    gen = StreamGenerator(seed=seed, depth=3 if seed == 3 else 1)
    core = MarketDataCore()
    whole = MarketDataCore()  # the same events in whole chunks
    sub = Subscriber()
    fills = 0
    for i, (_, events) in enumerate(run_stream(engine, gen, n_commands=12_000, chunk=300)):
        fills += int((events["kind"] == 3).sum())
        published = []
        start = 0
        while start < len(events):  # slices of random size: commands get cut between batches
            stop = min(len(events), start + rng.randint(1, 400))
            for channel, msg in core.apply(events[start:stop], complete=stop == len(events)):
                sub.receive(channel, msg)
                published.append(msg)
            start = stop
        assert published == [msg for _, msg in whole.apply(events)]  # numbering ignores batching
        if i % 5 == 4:
            check_against_engine(core, engine, sub)
        if i == 20:  # a checkpointed core carries on exactly
            core = pickle.loads(pickle.dumps(core))
    check_against_engine(core, engine, sub)
    assert sub.trades == fills > 100
    assert sum(len(b.orders) for b in core.books.values()) == engine.open_orders > 0


def test_a_held_command_is_not_checkpointed():
    """A batch cut inside a command: the core applies the whole commands, holds the rest back, and a
    checkpoint taken then resumes from the held command's first event."""
    engine = Engine(**ENGINE_KWARGS)
    events = np.concatenate([ev for _, ev in run_stream(engine, StreamGenerator(seed=11), n_commands=600)])
    multi = np.flatnonzero(np.diff(events["cmd_seq"]) == 0)  # inside a command of several events
    cut = int(multi[len(multi) // 2]) + 1
    core = MarketDataCore()
    first = core.apply(events[:cut], complete=False)
    assert core.cursor < events["seq"][cut - 1] and len(core.held)
    restored = pickle.loads(pickle.dumps(core))
    assert len(restored.held) == 0 and restored.cursor == core.cursor
    rest = core.apply(events[cut:])
    again = restored.apply(events[int(np.searchsorted(events["seq"], restored.cursor + 1)):])
    assert rest == again and first
    reference = MarketDataCore()
    assert [m for _, m in reference.apply(events)] == [m for _, m in first + rest]
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
    ops = [op for m in log if isinstance(m, OrderUpdate) for op in m.ops]
    kinds = [type(op).__name__ for op in ops]
    assert kinds == ["OrderAdd", "OrderAdd", "OrderAdd", "OrderExecute", "OrderAmend", "OrderAmend",
                     "OrderExecute"]
    assert [o.qty for o in ops[:4]] == [5, 3, 4, 4]
    assert ops[4].priority_lost and ops[4].price == 106 and ops[4].qty == 2
    assert not ops[5].priority_lost and ops[5].qty == 2
    assert core.books[7].halted and core.books[7].trade_number == 2
