"""The gateway's order table (gateway/routing.pyx follows a batch of events in C) against the matcher's own open
orders, and its execution report rows against rows made here: adversarial streams (tests/generators.py) with fills, partial fills sweeping several makers,
STP decrements, amends, cancels and mass cancels, cut into ring-sized batches of every length."""
from __future__ import annotations

import random

import numpy as np
import pytest
from generators import ENGINE_KWARGS, StreamGenerator, run_stream

from engine.matcher import Engine
from engine.records import EVENT_DTYPE, Ev, EvFlag
from engine.workers import KIND_SLOTS
from gateway import messages as m
from gateway.routing import follow, own_firsts, report_rows, select_keyed
from gateway.server import (CLOSED_KEPT, EVENT_ACCOUNTS_KINDS, OPEN, ORDER_ROW_DTYPE, OWN_FIRST, OWN_FIRST_KINDS, ROUTED,
                            OrderTable)

MAKER_DONE = int(EvFlag.MAKER_DONE)


def keyed_events(events: np.ndarray, keyed: np.ndarray) -> np.ndarray:
    """What the gateway's route hands its table (the events of accounts with keys)."""
    kinds = events["kind"]
    mine = np.isin(kinds, EVENT_ACCOUNTS_KINDS) & (np.isin(events["account"], keyed) |
                                                 ((kinds == Ev.FILL) & np.isin(events["maker_account"], keyed)))
    return events[mine]


def assert_reports(ev: np.ndarray, fills: np.ndarray) -> None:
    """``report_rows`` (C) against the rows made here, field by field, event by event."""
    expected, accounts = [], []
    fill_rows = iter(fills.tolist())
    for e in ev.tolist() if len(ev) else ():
        e = dict(zip(ev.dtype.names, e))
        if e["kind"] not in (Ev.FILL, Ev.CANCELLED, Ev.AMENDED):
            continue
        row = {name: e[name] for name in ("side", "market", "venue", "order_id", "client_id", "price", "qty",
                                          "remaining", "seq", "cmd_seq", "ts")}
        if e["kind"] == Ev.FILL:
            taker_client, maker_client, maker_left = next(fill_rows)
            expected.append(dict(row, kind=1, liquidity=2, fee=e["taker_fee"], client_id=taker_client))
            expected.append(dict(row, kind=1, liquidity=1, fee=e["maker_fee"], order_id=e["maker_order"],
                                 venue=e["client_id"], client_id=maker_client, side=1 - e["side"],
                                 remaining=maker_left))
            accounts += [e["account"], e["maker_account"]]
        else:
            cancel = e["kind"] == Ev.CANCELLED
            expected.append(dict(row, kind=2 if cancel else 3, reason=e["reason"] if cancel else 0,
                                 code=e["code"] if cancel else 0))
            accounts.append(e["account"])
    rows = np.frombuffer(b"\xa5" * (len(expected) * m.REPORT_ROW_DTYPE.itemsize), m.REPORT_ROW_DTYPE).copy()
    to = np.empty(len(expected), np.int64)  # rows full of garbage: each is written whole (the gateway reuses them)
    assert report_rows(np.ascontiguousarray(ev).view(np.uint8), fills, rows, to) == len(expected)
    assert to.tolist() == accounts
    for got, want in zip(rows.tolist(), expected):
        assert dict(zip(m.REPORT_ROW_DTYPE.names, got)) == {name: want.get(name, 0) for name in m.REPORT_ROW_DTYPE.names}


def test_keyed_events_and_each_commands_answer_are_picked_as_the_rules_say():
    """``select_keyed`` and ``own_firsts`` (C) against the rules written out here, over a stream
    whose batches hold other accounts' events, book levels and commands answered across batches."""
    engine = Engine(**ENGINE_KWARGS)
    gen = StreamGenerator(4)
    keyed = np.array(sorted(gen.accounts[:3]), np.int64)
    claimed = listings = listed = 0
    for _, events in run_stream(engine, gen, 3000, chunk=97):
        raw = events.view(np.uint8)
        mine, census = np.empty(len(events), np.uint8), np.zeros(len(ROUTED), np.int64)
        n, n_listings = select_keyed(raw, ROUTED, keyed, mine, census)
        rows = events[["kind", "account", "maker_account", "flags"]].tolist()
        want = [kind in EVENT_ACCOUNTS_KINDS and (account in keyed or (kind == Ev.FILL or kind == Ev.ACCEPTED and flags
                                                                        == EvFlag.MARKET_LISTING) and maker in keyed)
                for kind, account, maker, flags in rows]
        assert mine.view(bool).tolist() == want and n == sum(want)
        assert census.tolist() == np.bincount(events["kind"][mine.view(bool)], minlength=len(ROUTED)).tolist()
        assert n_listings == sum(kind == Ev.ACCEPTED and flags & (EvFlag.ASSET_LISTING | EvFlag.MARKET_LISTING) != 0
                                 for kind, _, _, flags in rows)
        listed += n_listings
        at, sender = np.empty(len(events), np.int64), np.empty(len(events), np.int64)
        k = own_firsts(raw, OWN_FIRST, claimed, at, sender)
        want_at = []
        for i, (kind, reason, flags, cmd_seq) in enumerate(events[["kind", "reason", "flags", "cmd_seq"]].tolist()):
            if kind in OWN_FIRST_KINDS and (kind != Ev.CANCELLED or reason == 1) and kind != Ev.POSITION:
                if cmd_seq != claimed:
                    want_at.append(i)
                claimed = cmd_seq
        firsts = events[want_at]
        listing = (firsts["kind"] == Ev.ACCEPTED) & (firsts["flags"] == EvFlag.MARKET_LISTING)
        want_sender = np.where(firsts["kind"] == Ev.LIQUIDATION, firsts["client_id"],
                               np.where(listing, firsts["maker_account"], firsts["account"]))
        assert at[:k].tolist() == want_at and sender[:k].tolist() == want_sender.tolist()
        listings += int(listing.sum())
    assert listings and listed  # the stream's setup lists its markets: their echoes answer the lister


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_order_table_follows_the_matcher(seed):
    engine = Engine(**ENGINE_KWARGS)
    gen = StreamGenerator(seed)
    keyed = np.array(gen.accounts[:3], np.int64)
    table = OrderTable(capacity=16)  # small: grows and compacts on the way
    rng = random.Random(seed)
    fills_seen = swept = 0
    before: dict[int, int] = {}  # keyed order id -> remaining, from the matcher's last export
    for _, events in run_stream(engine, gen, 4000, chunk=rng.randint(1, 300)):
        ev = np.ascontiguousarray(keyed_events(events, keyed))
        fills = table.apply(ev.view(np.uint8), np.bincount(ev["kind"], minlength=KIND_SLOTS))
        assert_reports(ev, fills)
        f = ev[ev["kind"] == Ev.FILL]
        assert fills.shape == (len(f), 3)
        fills_seen += len(f)
        swept += len(f) - len(np.unique(f["order_id"]))  # a taker filled by several makers in one batch
        # each fill's maker remaining is the maker's open size right after it, followed here one
        # event at a time from the matcher's last export (amends and cancels in the batch included)
        left = dict(before)
        fill_rows = iter(fills.tolist())
        keyed_set = set(keyed.tolist())
        for kind, account, order, maker, qty, remaining, flags in ev[
                ["kind", "account", "order_id", "maker_order", "qty", "remaining", "flags"]].tolist():
            if kind == Ev.FILL:
                _, _, maker_left = next(fill_rows)
                if maker in left:
                    left[maker] = 0 if flags & MAKER_DONE else left[maker] - qty
                    assert maker_left == left[maker]
            if account in keyed_set and (kind in (Ev.FILL, Ev.CANCELLED, Ev.AMENDED) or kind == Ev.ACCEPTED
                                         and order > 0):
                left[order] = remaining
        state = engine.export_state()["orders"]
        ours = state[np.isin(state["account"], keyed)]
        before = dict(zip(ours["order_id"].tolist(), ours["remaining"].tolist()))
        live = table.rows[:table.n]
        open_ = live[live["status"] == OPEN]
        assert open_["order_id"].tolist() == np.sort(ours["order_id"]).tolist()
        mine = ours[np.argsort(ours["order_id"])]
        for name in ("account", "client_id", "price", "remaining", "filled", "market", "side"):
            assert open_[name].tolist() == mine[name].tolist(), name
    assert fills_seen > 100 and swept > 0  # the stream exercised fills and multi-round batches
    # queries: by order id and by client id (open), and closed orders stay findable
    account = int(keyed[0])
    live = table.rows[:table.n]
    for r in live[(live["account"] == account)][-20:]:
        by_id = table.find(account, int(r["order_id"]), 0)
        assert by_id is not None and by_id.order_id == r["order_id"]
        assert table.find(account + 1, int(r["order_id"]), 0) is None  # another account's order is not found
    assert [o.order_id for o in table.open_orders(account, 0)] == \
        live[(live["account"] == account) & (live["status"] == OPEN)]["order_id"].tolist()


def test_compaction_keeps_each_accounts_newest_closed_orders():
    table = OrderTable(capacity=8)
    n = 3 * CLOSED_KEPT
    rows = np.zeros(n, table.rows.dtype)
    rows["order_id"] = np.arange(1, n + 1)
    rows["account"] = np.where(np.arange(n) % 3 == 0, 5, 6)
    rows["client_id"] = rows["order_id"]
    rows["status"] = np.where(np.arange(n) % 7 == 0, OPEN, 2)
    rows["closed_seq"] = np.where(rows["status"] == OPEN, 0, 10 * n - rows["order_id"])  # older ids closed later
    table.insert(rows)
    table.compact()
    live = table.rows[:table.n]
    assert (live["status"] == OPEN).sum() == (rows["status"] == OPEN).sum()  # every open order stays
    for account in (5, 6):
        closed = rows[(rows["account"] == account) & (rows["status"] != OPEN)]
        kept = live[(live["account"] == account) & (live["status"] != OPEN)]
        newest = np.sort(closed["closed_seq"])[-CLOSED_KEPT:]
        assert sorted(kept["closed_seq"].tolist()) == newest.tolist()
    assert (np.diff(live["order_id"]) > 0).all()  # still sorted for the lookups


def test_the_c_kernels_refuse_arrays_too_small_rather_than_write_past_them():
    ev = np.zeros(2, EVENT_DTYPE)
    ev["kind"] = [Ev.FILL, Ev.CANCELLED]
    raw = ev.view(np.uint8)
    for rows, to, fills in ((2, 3, 1), (3, 2, 1), (3, 3, 0)):
        with pytest.raises(ValueError, match="more reports than the rows"):
            report_rows(raw, np.zeros((fills, 3), np.int64), np.zeros(rows, m.REPORT_ROW_DTYPE), np.zeros(to, np.int64))
    assert report_rows(raw, np.zeros((1, 3), np.int64), np.zeros(3, m.REPORT_ROW_DTYPE), np.zeros(3, np.int64)) == 3
    with pytest.raises(ValueError, match="not whole"):
        report_rows(raw[:-1], np.zeros((1, 3), np.int64), np.zeros(3, m.REPORT_ROW_DTYPE), np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="room"):
        select_keyed(raw, ROUTED, np.array([1], np.int64), np.zeros(1, np.uint8), np.zeros(len(ROUTED), np.int64))
    with pytest.raises(ValueError, match="census"):
        select_keyed(raw, ROUTED, np.array([1], np.int64), np.zeros(9, np.uint8), np.zeros(len(ROUTED) - 1, np.int64))
    with pytest.raises(ValueError, match="room"):
        own_firsts(raw, OWN_FIRST, 0, np.zeros(1, np.int64), np.zeros(2, np.int64))
    accepted = np.zeros(1, EVENT_DTYPE)
    accepted["kind"], accepted["order_id"] = Ev.ACCEPTED, 7
    with pytest.raises(ValueError, match="no room for another order"):
        follow(np.zeros(0, ORDER_ROW_DTYPE), 0, accepted.view(np.uint8), np.zeros((0, 3), np.int64))
    with pytest.raises(ValueError, match="more fills"):
        follow(np.zeros(4, ORDER_ROW_DTYPE), 0, raw, np.zeros((0, 3), np.int64))
