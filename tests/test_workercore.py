"""engine/workercore.pyx: the worker cores' C state survives pickling (worker checkpoints) mid-stream,
and a core restored from a checkpoint continues exactly like one that never stopped."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.matcher import Engine
from engine.records import Ev, Side
from engine.workercore import IntTable, band_breaches, breaker_walk, revalue_cells
from engine.workers.margin import MarginBook, value_of
from engine.workers.risk import RiskConfig, RiskMonitor
from gateway.marketdata import MarketDataCore
from generators import ENGINE_KWARGS, StreamGenerator, run_stream


def test_int_table_roundtrip():
    t = IntTable(3)
    keys = np.arange(-500, 4500, 7, dtype=np.int64)
    vals = np.stack([keys, keys * 2, -keys], axis=1)
    t.update(keys, vals)
    assert len(t) == len(keys) and 4 in t and 5 not in t
    assert t.get(-3) == (-3, -6, 3) and t.get(1) is None
    u = pickle.loads(pickle.dumps(t))
    assert u.to_dict() == t.to_dict() and u.ncols == 3


INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
# few enough keys that probes collide and deletions shift, and the extremes
TABLE_KEYS = st.one_of(st.integers(0, 300), st.sampled_from([INT64_MIN, INT64_MIN + 1, INT64_MAX, -1]))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["set", "pop", "pickle"]), TABLE_KEYS, st.integers(-9, 9)),
                max_size=400))
def test_int_table_acts_as_a_dict(ops):
    """Sets, pops and pickling against a dict, through growth and backward-shift deletion."""
    t, model = IntTable(2), {}
    for op, key, value in ops:
        if op == "set":
            t.update(np.array([key], np.int64), np.array([[value, -value]], np.int64))
            model[key] = (value, -value)
        elif op == "pop":
            assert t.pop(key) == model.pop(key, None)
        else:
            t = pickle.loads(pickle.dumps(t))
        assert len(t) == len(model) and (key in t) == (key in model) and t.get(key) == model.get(key)
    assert t.to_dict() == model and all(t.get(k) == v for k, v in model.items())
    assert t.slots >= 2 * len(model)


@pytest.fixture(scope="module")
def events():
    e = Engine(**ENGINE_KWARGS)
    return np.concatenate([ev for _, ev in run_stream(e, StreamGenerator(seed=5), 6000, chunk=300)])


@pytest.mark.parametrize("make", [lambda: MarginBook(accounts=2), lambda: RiskMonitor(RiskConfig(move_bps=150))])
def test_checkpoint_mid_stream(events, make):
    whole, part = make(), make()
    cut = len(events) // 2
    for i in range(0, len(events), 777):
        whole.apply(events[i:i + 777])
    for i in range(0, cut, 500):
        part.apply(events[i:min(i + 500, cut)])
    part = pickle.loads(pickle.dumps(part, protocol=pickle.HIGHEST_PROTOCOL))
    part.apply(events[cut - 10:])  # replays the last 10 (skipped), then the rest
    assert part.cursor == whole.cursor
    assert part.orders.to_dict() == whole.orders.to_dict()
    if isinstance(whole, MarginBook):
        n = whole.n_accounts
        assert np.array_equal(part.total[:n], whole.total[:n]) and np.array_equal(part.held[:n], whole.held[:n])
        assert part.index == whole.index and np.array_equal(part.snapshot(), whole.snapshot())
        old = MarginBook.__new__(MarginBook)  # a checkpoint from before per-account bounds kept supply totals
        old.__setstate__({**whole.__getstate__(), "outstanding": {0: 1}})
        assert not hasattr(old, "outstanding") and np.array_equal(old.snapshot(), whole.snapshot())
    else:
        assert part.oi == whole.oi and part.rates.to_dict() == whole.rates.to_dict()


def test_int_table_ids_of_assigns_dense_ids_in_first_seen_order():
    t = IntTable(1)
    assert t.ids_of(np.array([50, 7, 50, -3], np.int64)).tolist() == [0, 1, 0, 2]
    keys = np.arange(1000, dtype=np.int64) * 7919  # past several doublings of the table
    ids = t.ids_of(keys)
    assert ids[0] == 3 and ids.tolist() == list(range(3, 1003)) and len(t) == 1003
    assert t.ids_of(np.array([7, 0], np.int64)).tolist() == [1, 3]  # 0 = keys[0], seen in the second call
    slots = t.slots
    t.ids_of(np.tile(keys, 20))  # known keys: the table stays as it was
    assert t.slots == slots and len(t) == 1003
    with pytest.raises(ValueError, match="one-column"):
        IntTable(2).ids_of(keys)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_risk_walks_picks_what_the_numpy_selection_did(seed):
    """``risk_walks`` against the numpy it replaced: the control events (listings, market status, the risk
    worker's own refused status change, venue risk settings), the fills, the Balance count and the latest ts."""
    from engine.codes import ResultCode
    from engine.records import EVENT_DTYPE, Cmd, Ev
    from engine.workercore import risk_walks

    rng = np.random.default_rng(seed)
    me, unchanged, venue_risk = -1001, int(ResultCode.MARKET_STATUS_UNCHANGED), int(Cmd.VENUE_MARKET_RISK)
    for n in (0, 1, 7, 500):
        ev = np.zeros(n, EVENT_DTYPE)
        ev["kind"] = rng.choice([int(k) for k in Ev], n)
        ev["order_id"] = rng.choice([0, 5], n)
        ev["account"] = rng.choice([me, 7], n)
        ev["code"] = rng.choice([0, unchanged], n)
        ev["flags"] = rng.choice([0, venue_risk], n)
        ev["ts"] = rng.integers(-10**12, 10**12, n)
        kind = ev["kind"]
        control = ((kind == Ev.ACCEPTED) & (ev["order_id"] == 0)) | (kind == Ev.MARKET_STATUS) | (
            (kind == Ev.REJECTED) & (ev["account"] == me) & (ev["code"] == unchanged)) | (
            (kind == Ev.VENUE) & (ev["flags"] == venue_risk))
        others, fills = np.empty(n, np.int64), np.empty(n, np.int64)
        nc, nf, balances, ts_max = risk_walks(ev, me, unchanged, venue_risk, others, fills)
        assert others[:nc].tolist() == np.flatnonzero(control).tolist()
        assert fills[:nf].tolist() == np.flatnonzero(kind == Ev.FILL).tolist()
        assert balances == int((kind == Ev.BALANCE).sum())
        assert ts_max == (int(ev["ts"].max()) if n else 0)
    with pytest.raises(ValueError, match="risk_walks: 3 events, room for 2"):
        risk_walks(np.zeros(3, EVENT_DTYPE), me, unchanged, venue_risk, np.empty(2, np.int64), np.empty(3, np.int64))


def test_risk_orders_takes_an_orders_lot_from_its_market_listed_before_it():
    """An order's open interest counts whole lots of its market; a market not listed before the order's
    Accepted (or never) counts lots of 1, as the numpy lookup it replaced did."""
    from engine.records import EVENT_DTYPE, Ev
    from engine.workercore import RATE_COLUMNS, RISK_COLUMNS, risk_orders

    ev = np.zeros(3, EVENT_DTYPE)
    ev["kind"], ev["seq"], ev["venue"] = Ev.ACCEPTED, [5, 6, 7], [1, 2, 3]
    ev["order_id"], ev["market"], ev["price"], ev["qty"] = [11, 12, 13], [7, 8, 9], 100, 25
    ids, lots, listed_at = (np.array(v, np.int64) for v in ([7, 8], [10, 10], [3, 6]))  # 8 listed at seq 6: after
    orders, oi, rates = IntTable(RISK_COLUMNS), IntTable(1), IntTable(RATE_COLUMNS)
    risk_orders(orders, oi, rates, ev, ids, lots, listed_at)
    assert {v: x[0] for v, x in oi.to_dict().items()} == {1: 100 * (25 // 10), 2: 100 * 25, 3: 100 * 25}
    with pytest.raises(ValueError, match="market ids, lots and listing seqs disagree"):
        risk_orders(orders, oi, rates, ev, ids, lots[:1], listed_at)


def test_order_tables_grow_with_a_burst_and_shrink_once_it_has_gone():
    """A core's order table grows as a pass brings orders and shrinks once they have gone, so a batch
    whose 3,000 orders nearly all go within it leaves a small table of what rests; each core (margin,
    risk, market data) ends exactly as one fed the same events a few at a time."""
    e = Engine(**ENGINE_KWARGS)
    ts = iter(range(1, 10**6))
    setup = np.concatenate([e.add_asset(1, "USD", 2), e.add_asset(2, "BTC", 0),
                            e.add_market(1, 2, 1, tick_size=1, lot_size=1, min_size=1, band_bps=0),
                            e.deposit(1, 1, 10**12, ts=next(ts)), e.deposit(2, 2, 10**9, ts=next(ts))])
    burst = [e.place(1, 1, Side.BUY, 1000 - i % 50, 1 + i % 3, client_id=10 + i, ts=next(ts)) for i in range(3000)]
    burst += [e.place(2, 1, Side.SELL, 990, 40, client_id=1, ts=next(ts))]  # fills the best bids
    burst += [e.cancel(1, client_id=10 + i, ts=next(ts)) for i in range(3000) if i % 700]
    events = np.concatenate([setup, *burst])
    placed = events["order_id"][events["kind"] == Ev.ACCEPTED]
    assert 0 < e.open_orders < 5 and (placed > 0).sum() == 3001
    for make in (lambda: MarginBook(accounts=2), lambda: RiskMonitor(RiskConfig(move_bps=150)), MarketDataCore):
        whole, bits = make(), make()
        whole.apply(events)
        for piece in np.split(events, np.flatnonzero(np.diff(events["ts"]))[::97] + 1):  # whole commands
            bits.apply(piece)
        assert whole.orders.to_dict() == bits.orders.to_dict()
        assert len(whole.orders) == e.open_orders and whole.orders.slots <= 32
        if isinstance(whole, MarginBook):
            for account in (1, 2):
                for asset, (free, held) in e.balances(account).items():
                    assert whole.balance(account, asset) == bits.balance(account, asset) == (free + held, held)


def test_margin_refuses_an_order_in_a_market_it_never_saw_listed():
    e = Engine(**ENGINE_KWARGS)
    events = np.concatenate([e.add_asset(1, "USD", 2), e.add_asset(2, "BTC", 0),
                             e.add_market(1, 2, 1, tick_size=1, lot_size=1, min_size=1, band_bps=0),
                             e.deposit(1, 1, 10**9), e.place(1, 1, Side.BUY, 100, 2, client_id=1)])
    book = MarginBook(accounts=2)
    stranger = events[-2:].copy()  # the order's Accepted and BookLevel, in a market never listed
    stranger["market"] = 99
    book.apply(events[:-2])
    with pytest.raises(KeyError, match="99"):
        book.apply(stranger)
    book.apply(events[-2:])
    assert book.balance(1, 1) == (10**9, 200) and len(book.orders) == 1


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 9), st.integers(0, 9), st.data())
def test_nonzero_cells_finds_the_cells_of_the_rows_and_columns_asked(height, width, data):
    """``nonzero_cells``: numpy's ``flatnonzero`` of ``a[:nrows, :ncols]`` (or of ``a | b``) as indices into the
    whole array; cells outside the rows and columns asked are left out, zero or not."""
    from engine.workercore import nonzero_cells

    values = st.sampled_from([0, 0, 1, -1, np.iinfo(np.int64).min])
    a = np.array(data.draw(st.lists(values, min_size=height * width, max_size=height * width)), np.int64)
    b = np.array(data.draw(st.lists(values, min_size=height * width, max_size=height * width)), np.int64)
    a, b = a.reshape(height, width), b.reshape(height, width)
    nrows, ncols = data.draw(st.integers(0, height)), data.draw(st.integers(0, width))
    inside = np.zeros((height, width), bool)
    inside[:nrows, :ncols] = True
    assert nonzero_cells(a, nrows, ncols).tolist() == np.flatnonzero(inside & (a != 0)).tolist()
    assert nonzero_cells(a, nrows, ncols, b).tolist() == np.flatnonzero(inside & ((a != 0) | (b != 0))).tolist()


def test_nonzero_cells_refuses_cells_past_the_array():
    from engine.workercore import nonzero_cells

    a = np.ones((3, 4), np.int64)
    with pytest.raises(ValueError, match="4 x 4 cells of an array of shape 3 x 4"):
        nonzero_cells(a, 4, 4)
    with pytest.raises(ValueError, match="3 x -1 cells"):
        nonzero_cells(a, 3, -1)
    with pytest.raises(ValueError, match="b's shape 3 x 5 is not a's 3 x 4"):
        nonzero_cells(a, 3, 4, np.ones((3, 5), np.int64))
    with pytest.raises(ValueError, match="contiguous"):
        nonzero_cells(np.ones((3, 8), np.int64)[:, ::2], 3, 4)
    assert nonzero_cells(np.ones((4000, 3), np.int64), 4000, 3).tolist() == list(range(12_000))  # past its first room


def test_count_kinds_counts_each_kind_and_the_accepted_of_no_order():
    from engine.records import EVENT_DTYPE
    from engine.workercore import count_kinds
    ev = np.zeros(6, EVENT_DTYPE)
    ev["seq"] = np.arange(1, 7)
    ev["kind"] = [Ev.ACCEPTED, Ev.ACCEPTED, Ev.FILL, Ev.ACCEPTED, Ev.CANCELLED, Ev.BOOK_LEVEL]
    ev["order_id"] = [5, 0, 5, 0, 5, 0]  # two Accepted of no order: a listing's, a mass cancel's
    present = np.zeros(int(max(Ev)) + 1, np.int64)
    assert count_kinds(ev, present) == 2
    assert present.tolist() == np.bincount(ev["kind"], minlength=len(present)).tolist()
    with pytest.raises(ValueError, match="kind 6 .seq 6. is past the 6 counted"):
        count_kinds(ev, np.zeros(6, np.int64))


def test_margin_rows_refuses_ids_and_rooms_that_disagree_with_the_batch():
    from engine.records import EVENT_DTYPE
    from engine.workercore import margin_rows

    ev = np.zeros(3, EVENT_DTYPE)
    ev["kind"], ev["market"], ev["account"] = Ev.ACCEPTED, 7, 1001
    ids, idx = np.array([7], np.int64), np.array([0], np.int64)
    room = np.empty(3, np.int64)
    with pytest.raises(ValueError, match="differ in length"):
        margin_rows(ev, ids, np.zeros(2, np.int64), ids, idx, room, room.copy())
    with pytest.raises(ValueError, match="3 events, room for 2"):
        margin_rows(ev, ids, idx, ids, idx, room[:2].copy(), room.copy())
    midx, rows = room.copy(), room.copy()
    assert margin_rows(ev, ids, idx, np.array([1001], np.int64), np.array([4], np.int64), midx, rows) == (-1, False)
    assert midx.tolist() == [0, 0, 0] and rows.tolist() == [4, 4, 4]
    assert margin_rows(ev, ids, idx, np.zeros(0, np.int64), np.zeros(0, np.int64), midx, rows) == (-1, True)
    assert margin_rows(ev, np.array([8], np.int64), idx, ids, idx, midx, rows)[0] == 0  # market 7 not listed


I64 = st.integers(-(1 << 63), (1 << 63) - 1)
CELL_ENTRY = st.tuples(st.integers(0, 4 * 3 - 1), st.one_of(I64, st.integers(-1000, 1000),
                                                            st.sampled_from([-(1 << 63), (1 << 63) - 1, 0])))


@settings(max_examples=300, deadline=None)
@given(entries=st.lists(CELL_ENTRY, max_size=40),
       w=st.lists(st.integers(0, (1 << 31) - 1), min_size=3, max_size=3),
       s=st.lists(st.one_of(st.integers(-110, 140), st.integers(25, 40)), min_size=3, max_size=3))
def test_revalue_cells_is_the_exact_sum_or_refuses(entries, w, s):
    """Against Python integers: a row's value is the sum over its cells of ``floor(amount * w / 2**s)``, a cell's
    amounts added first; refused (value 0) exactly where that sum leaves int64 or a cell's value reaches 2**100."""
    entries.sort(key=lambda e: e[0])
    cells = np.array([c for c, _ in entries], np.int64)
    amounts = np.array([a for _, a in entries], np.int64)
    values, over = revalue_cells(cells, amounts, np.array(w, np.int64), np.array(s, np.int64), 4)
    summed: dict[int, int] = {}
    for cell, amount in entries:
        summed[cell] = summed.get(cell, 0) + amount
    exact, refused = [0] * 4, set()
    for cell, amount in summed.items():
        row, col = divmod(cell, 3)
        v = value_of(amount, w[col], s[col])
        exact[row] += v
        if abs(v) >= 1 << 100:
            refused.add(row)
    refused |= {row for row in range(4) if not -(1 << 63) <= exact[row] < 1 << 63}
    assert over.tolist() == sorted(refused)
    assert values.tolist() == [0 if row in refused else exact[row] for row in range(4)]


def reference_breaker_walk(window_ts, window_price, ts, price, window_ns, bps):
    """The breaker's rule in Python integers (the numpy version it replaced): each trade's reference by a binary
    search of every time, the first trade moved past ``bps`` trips, the window kept from the last reference on."""
    import bisect

    all_ts, all_price = window_ts + ts, window_price + price
    trip, end, ref = -1, len(ts) - 1, 0
    for i in range(len(ts)):
        ref = bisect.bisect_left(all_ts, ts[i] - window_ns)
        r = all_price[ref]
        if r > 0 and abs(price[i] - r) * 10000 > bps * r:
            trip = end = i
            break
    kept = [(t, p) for k, (t, p) in enumerate(zip(all_ts, all_price)) if ref <= k <= len(window_ts) + end]
    first = [(t, p) for k, (t, p) in enumerate(kept) if k == 0 or t != kept[k - 1][0]]
    return trip, [t for t, _ in first], [p for _, p in first]


PRICE = st.one_of(st.integers(0, 50), st.integers(95, 105), st.sampled_from([(1 << 62), (1 << 63) - 1]))


@settings(max_examples=400, deadline=None)
@given(window=st.lists(st.tuples(st.integers(0, 3), PRICE), max_size=6),
       run=st.lists(st.tuples(st.integers(0, 3), PRICE), min_size=1, max_size=12),
       window_ns=st.integers(0, 6), bps=st.one_of(st.integers(0, 3000), st.just((1 << 63) - 1)))
def test_breaker_walk_and_band_breaches_follow_the_rule_exactly(window, run, window_ns, bps):
    """The breaker's walk in C against the rule in Python integers: times that repeat and jump, a window of the
    first trade of each time, prices of 0 (never a reference) and near int64's end, any ``bps``; and the band
    watch's count of trades moved past ``bps`` of the trade before."""
    window_ts, t = [], 0
    for step, _ in window:
        t += step + 1  # a window holds one trade a time
        window_ts.append(t)
    window_price = [p for _, p in window]
    ts = []
    for step, _ in run:
        t += step
        ts.append(t)
    price = [p for _, p in run]
    trip, kept_ts, kept_price = breaker_walk(np.array(window_ts, np.int64), np.array(window_price, np.int64),
                                             np.array(ts, np.int64), np.array(price, np.int64), window_ns, bps)
    assert (trip, kept_ts.tolist(), kept_price.tolist()) == reference_breaker_walk(
        window_ts, window_price, ts, price, window_ns, bps)
    before = [window_price[-1] if window_price else 0] + price[:-1]
    assert band_breaches(np.array(price, np.int64), before[0], bps) == sum(
        r > 0 and abs(p - r) * 10000 > bps * r for p, r in zip(price, before))


def test_breaker_walk_refuses_trades_out_of_time_order():
    one = np.array([5], np.int64)
    with pytest.raises(ValueError, match="before the one before it"):
        breaker_walk(one, one, np.array([6, 4], np.int64), np.array([1, 1], np.int64), 10, 100)
    with pytest.raises(ValueError, match="before the one before it"):
        breaker_walk(np.array([9], np.int64), one, np.array([6], np.int64), one, 10, 100)
