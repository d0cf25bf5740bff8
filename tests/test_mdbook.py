"""The publisher's L2 book in C (gateway/mdbook.pyx) against a subscriber's ``mdmessages.LevelBook``, the
reference: seeded batches of level changes on both sides (new levels, changed ones, removals, empty sides),
the changes it reports, the levels best first at any depth, the checksum, and a pickled copy; bad rows refused."""
from __future__ import annotations

import pickle
import random

import numpy as np
import pytest

from gateway.mdbook import MarketBook
from gateway.mdmessages import ASK, BID, LEVEL_DTYPE, LevelBook


def batch_of_changes(rng: random.Random, prices: range) -> list[tuple[int, int, int, int]]:
    """Bids then asks, each ascending by price, each price once; about a third of them removals."""
    rows = []
    for side in (BID, ASK):
        for price in sorted(rng.sample(prices, rng.randrange(0, 8))):
            gone = rng.random() < 0.35
            rows.append((side, price, 0 if gone else rng.randrange(1, 10**12), 0 if gone else rng.randrange(1, 50)))
    return rows


@pytest.mark.parametrize("seed", range(4))
def test_the_c_book_keeps_the_levels_and_checksum_of_the_reference(seed):
    rng = random.Random(seed)
    book, reference = MarketBook(3), LevelBook(3)
    prices = range(1, 40 + 40 * seed)  # narrow: levels come and go; wider: deep books
    for step in range(1500):
        rows = batch_of_changes(rng, prices)
        dq, dc = np.full(len(rows), -7, np.int64), np.full(len(rows), -7, np.int64)
        book.update(np.array(rows, LEVEL_DTYPE).view(np.uint8), dq, dc)
        for (side, price, qty, count), got_q, got_c in zip(rows, dq.tolist(), dc.tolist()):
            old_q, old_c = reference.set_level(side, price, qty, count)
            assert (got_q, got_c) == (qty - old_q, count - old_c)
        for side in (BID, ASK):
            assert book.side_levels(side) == reference.side_levels(side)
            depth = rng.randrange(1, 15)
            assert book.side_levels(side, depth) == reference.side_levels(side, depth)
        assert book.checksum() == reference.checksum()
    book.seq, book.trade_number, book.ts, book.halted = 11, 12, 13, True
    copy = pickle.loads(pickle.dumps(book))
    assert (copy.market, copy.seq, copy.trade_number, copy.ts, copy.halted) == (3, 11, 12, 13, True)
    assert [copy.side_levels(s) for s in (BID, ASK)] == [book.side_levels(s) for s in (BID, ASK)]
    assert copy.checksum() == book.checksum()


@pytest.mark.parametrize("rows, what", [
    ([(ASK, 5, 1, 1), (BID, 4, 1, 1)], "out of order"),  # asks before bids
    ([(BID, 5, 1, 1), (BID, 5, 2, 1)], "out of order"),  # a price twice
    ([(BID, 6, 1, 1), (BID, 5, 2, 1)], "out of order"),  # descending
    ([(2, 5, 1, 1)], "out of order"),  # no such side
])
def test_rows_out_of_order_are_refused_and_the_book_is_unchanged(rows, what):
    book = MarketBook(1)
    scratch = np.zeros(4, np.int64)
    book.update(np.array([(BID, 3, 9, 1), (ASK, 8, 9, 1)], LEVEL_DTYPE).view(np.uint8), scratch, scratch)
    before = [book.side_levels(s) for s in (BID, ASK)], book.checksum()
    with pytest.raises(ValueError, match=what):
        book.update(np.array(rows, LEVEL_DTYPE).view(np.uint8), scratch, scratch)
    with pytest.raises(ValueError, match="room for"):
        book.update(np.array([(BID, 1, 1, 1)] * 2, LEVEL_DTYPE).view(np.uint8), scratch[:1], scratch[:1])
    assert ([book.side_levels(s) for s in (BID, ASK)], book.checksum()) == before
