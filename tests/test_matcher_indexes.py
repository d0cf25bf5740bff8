"""The matcher's order-id and client-id indexes follow the open orders: they grow with a burst and shrink
back after it (``xos_hmap_fit`` at the end of each batch), and every order stays found.  Each batch's
events are compared with the reference model's."""
from __future__ import annotations

import numpy as np
import pytest

from engine.matcher import Engine
from engine.records import COMMAND_DTYPE, Cmd, CmdFlag, Ev, Side
from engine.reference import ReferenceEngine

BASE, QUOTE, MARKET, LOT, MID = 1, 2, 1, 10, 10_000
KWARGS = dict(max_orders=1 << 16, max_accounts=16, max_markets=4, max_assets=4)
INDEX_KEYS = 1024  # matcher.pyx's: the least the indexes shrink to
LEAST_SLOTS = 2048  # the slots of an index with room for INDEX_KEYS (load <= 1/2)


def fitted(slots: int, count: int) -> bool:
    """What a batch leaves: load at most 1/2, and not so empty that ``xos_hmap_fit`` would shrink it."""
    return 2 * count <= slots and not (16 * count < slots and 4 * max(2 * count, INDEX_KEYS) <= slots)


class Pair:
    """The Cython engine and the reference model fed the same batches."""

    def __init__(self, **capacities):
        kwargs = dict(KWARGS, **capacities)
        self.engines = Engine(**kwargs), ReferenceEngine(**kwargs)
        for e in self.engines:
            e.add_asset(BASE, "BTC", 8)
            e.add_asset(QUOTE, "USD", 2)
            e.add_market(MARKET, BASE, QUOTE, tick_size=1, lot_size=LOT, min_size=LOT)
            for account in (1, 2):
                e.deposit(account, BASE, 10**15)
                e.deposit(account, QUOTE, 10**15)
        self.open: dict[int, tuple[int, int]] = {}  # order id -> (account, client id)

    @property
    def cython(self) -> Engine:
        return self.engines[0]

    def run(self, commands: np.ndarray, how: str = "process") -> np.ndarray:
        cy, ref = self.engines
        if how == "process":
            events = cy.process(commands)
        elif how == "process_count":
            cy.process_count(commands)
            events = cy.last_events()
        else:
            events = cy.process_timed(commands)[0]
        assert np.array_equal(events, ref.process(commands))
        for e in events[events["kind"] == Ev.ACCEPTED]:
            if e["order_id"] and e["remaining"] > 0:
                self.open[int(e["order_id"])] = (int(e["account"]), int(e["client_id"]))
        for e in events[events["kind"] == Ev.CANCELLED]:
            self.open.pop(int(e["order_id"]), None)
        assert cy.open_orders == len(self.open)
        order_slots, client_slots = cy.index_slots
        assert order_slots == client_slots and fitted(order_slots, len(self.open)), (cy.index_slots, len(self.open))
        return events


def places(account: int, first_client_id: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` resting orders: buys below MID, sells above it (none crosses)."""
    c = np.zeros(n, COMMAND_DTYPE)
    side = rng.integers(0, 2, n)
    c["kind"] = Cmd.PLACE
    c["side"] = side
    c["account"] = account
    c["market"] = MARKET
    c["price"] = np.where(side == Side.BUY, MID - rng.integers(1, 400, n), MID + rng.integers(1, 400, n))
    c["qty"] = LOT * rng.integers(1, 5, n)
    c["id"] = np.arange(first_client_id, first_client_id + n)
    return c


def cancels(targets: list[tuple[int, int, int]], by_client_id: np.ndarray) -> np.ndarray:
    """A cancel of each (order id, account, client id), by client id where ``by_client_id`` says so."""
    c = np.zeros(len(targets), COMMAND_DTYPE)
    c["kind"] = Cmd.CANCEL
    for i, (order_id, account, client_id) in enumerate(targets):
        c[i]["account"] = account
        c[i]["flags"] = int(CmdFlag.BY_CLIENT_ID) if by_client_id[i] else 0
        c[i]["id"] = client_id if by_client_id[i] else order_id
    return c


@pytest.mark.parametrize("how", ["process", "process_count", "process_timed"])
def test_indexes_shrink_after_a_burst_and_every_order_is_still_found(how):
    rng = np.random.default_rng(11)
    pair = Pair()
    assert pair.cython.index_slots == (LEAST_SLOTS, LEAST_SLOTS)
    pair.run(places(1, 1, 200, rng), how)
    for k in range(20):  # the burst: 20,000 more open orders of another account
        pair.run(places(2, 1 + 1_000 * k, 1_000, rng), how)
    peak = pair.cython.index_slots[0]
    assert len(pair.open) == 20_200 and peak >= 2 * 20_200
    # cancel the burst in a random order, by order id and by client id, in batches of various sizes
    burst = [(oid, acct, cid) for oid, (acct, cid) in pair.open.items() if acct == 2]
    rng.shuffle(burst)
    keep, gone, at = 300, burst[300:], 0
    shrunk_at = []
    while at < len(gone):
        n = int(rng.integers(1, 3_000))
        batch = gone[at:at + n]
        at += n
        events = pair.run(cancels(batch, rng.integers(0, 2, len(batch)).astype(bool)), how)
        assert np.count_nonzero(events["kind"] == Ev.CANCELLED) == len(batch)
        if pair.cython.index_slots[0] < peak:
            shrunk_at.append(len(pair.open))
            peak = pair.cython.index_slots[0]
    assert shrunk_at and len(pair.open) == 200 + keep
    assert pair.cython.index_slots == (LEAST_SLOTS, LEAST_SLOTS)
    # every order left is found by both keys: amend half of them by client id, then cancel all
    left = [(oid, acct, cid) for oid, (acct, cid) in pair.open.items()]
    amends = np.zeros(len(left) // 2, COMMAND_DTYPE)
    amends["kind"] = Cmd.AMEND
    amends["flags"] = int(CmdFlag.BY_CLIENT_ID)
    amends["account"] = [acct for _, acct, _ in left[::2]][:len(amends)]
    amends["id"] = [cid for _, _, cid in left[::2]][:len(amends)]
    amends["qty"] = LOT
    events = pair.run(amends, how)
    assert np.count_nonzero(events["kind"] == Ev.AMENDED) == len(amends)
    events = pair.run(cancels(left, np.arange(len(left)) % 3 == 0), how)
    assert np.count_nonzero(events["kind"] == Ev.CANCELLED) == len(left)
    assert pair.cython.open_orders == 0 and pair.cython.index_slots == (LEAST_SLOTS, LEAST_SLOTS)


def test_indexes_grow_again_after_shrinking_and_a_mass_cancel_empties_them():
    rng = np.random.default_rng(12)
    pair = Pair()
    for round_ in range(3):
        for k in range(8):
            pair.run(places(2, 1 + 1_000 * k, 1_000, rng))
        grown = pair.cython.index_slots[0]
        assert grown >= 2 * 8_000
        mass_cancel = np.zeros(1, COMMAND_DTYPE)
        mass_cancel[["kind", "flags", "account"]] = (Cmd.MASS_CANCEL, int(CmdFlag.ALL_MARKETS), 2)
        events = pair.run(mass_cancel)
        assert np.count_nonzero(events["kind"] == Ev.CANCELLED) == 8_000
        assert pair.cython.index_slots == (LEAST_SLOTS, LEAST_SLOTS), round_


@pytest.mark.parametrize("how", ["process", "process_count", "process_timed"])
def test_the_event_buffer_shrinks_back_after_a_burst_and_keeps_the_last_batch_until_the_next(how):
    """A mass cancel of 80,000 orders makes 80,000 Cancelled events in one batch: the buffer grows for them and
    they all stay readable (``last_events``); a small batch after it runs in the grown buffer, and the one after
    that (the last batch made far fewer events than the buffer holds) shrinks it back to EVENTS_KEPT, its events
    right; a batch larger than that grows it again."""
    kept = 65_536  # matcher.pyx's EVENTS_KEPT
    rng = np.random.default_rng(13)
    pair = Pair(max_orders=1 << 17)
    for k in range(80):
        pair.run(places(2, 1 + 1_000 * k, 1_000, rng), how)
    assert pair.cython.event_capacity <= kept
    mass_cancel = np.zeros(1, COMMAND_DTYPE)
    mass_cancel[["kind", "flags", "account"]] = (Cmd.MASS_CANCEL, int(CmdFlag.ALL_MARKETS), 2)
    events = pair.run(mass_cancel, how)
    assert np.count_nonzero(events["kind"] == Ev.CANCELLED) == 80_000
    grown = pair.cython.event_capacity
    assert grown >= 80_000
    assert np.array_equal(pair.cython.last_events(), events)  # still there: the buffer shrinks only at the next batch
    pair.run(places(1, 1, 10, rng), how)
    assert pair.cython.event_capacity == grown
    events = pair.run(places(1, 11, 10, rng), how)
    assert np.count_nonzero(events["kind"] == Ev.ACCEPTED) == 10 and pair.cython.event_capacity == kept
    assert np.array_equal(pair.cython.last_events(), events)
    for k in range(3):  # batches of 30,000 orders: 60,000 events or more, within what it keeps
        pair.run(places(2, 100_001 + 30_000 * k, 30_000, rng), how)
        assert pair.cython.event_capacity == kept
    events = pair.run(mass_cancel, how)
    assert np.count_nonzero(events["kind"] == Ev.CANCELLED) == 90_000 and pair.cython.event_capacity >= 90_000
