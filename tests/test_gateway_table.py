"""The gateway's reply pass (gateway/routing.pyx ``ReplyRouter.route``) against its Python reference
(tests/reply_reference.py) and its order table against the matcher's own open orders: adversarial streams
(tests/generators.py) with fills, partial fills sweeping several makers, STP decrements, amends, cancels and
mass cancels, cut into ring-sized batches of every length."""
from __future__ import annotations

import collections
import random

import numpy as np
import pytest
from generators import ENGINE_KWARGS, StreamGenerator, run_stream
from reply_reference import ReferenceReplies, full_rows, routed

from engine.config import Config, EngineSection
from engine.matcher import Engine
from engine.records import EVENT_DTYPE, Ev, EvFlag
from gateway.routing import PendingQueue, ReplyRouter
from gateway.server import CLOSED_KEPT, EVENT_ACCOUNTS_KINDS, OPEN, ORDER_ROW_DTYPE, OWN_FIRST, ROUTED, \
    OrderTable, load_history, save_history

MAKER_DONE = int(EvFlag.MAKER_DONE)


def keyed_events(events: np.ndarray, keyed: np.ndarray) -> np.ndarray:
    """The orders' events of accounts with keys, and the fills whose maker has one."""
    kinds = events["kind"]
    mine = np.isin(kinds, EVENT_ACCOUNTS_KINDS) & (np.isin(events["account"], keyed) |
                                                 ((kinds == Ev.FILL) & np.isin(events["maker_account"], keyed)))
    return events[mine]


def router_for(keyed) -> ReplyRouter:
    router = ReplyRouter(ROUTED, OWN_FIRST, collections.defaultdict(PendingQueue), True)
    router.set_keyed(np.array(sorted(keyed), np.int64))
    return router


def test_the_reply_pass_agrees_with_its_reference_event_by_event():
    """Which events concern the keyed accounts (other accounts' events, book levels, listings in every batch),
    the reports they make (their client ids and maker sizes as the table had them) and the listings counted,
    over batches routed again in part (a restarted matcher republishing: ``after``) and read quietly (a
    restarted gateway: ``quiet_until``, only the table follows)."""
    engine = Engine(**ENGINE_KWARGS)
    gen = StreamGenerator(4)
    keyed = gen.accounts[:3]
    router, table, reference = router_for(keyed), OrderTable(capacity=8), ReferenceReplies(keyed)
    rng = random.Random(4)
    routed_seq = listings = fills = quiet = 0
    previous = np.zeros(0, EVENT_DTYPE)
    for _, events in run_stream(engine, gen, 3000, chunk=97):
        if len(previous) and rng.random() < 0.3:  # republished: the last routed events come again first
            events = np.concatenate([previous[-rng.randint(1, len(previous)):], events])
        quiet_until = routed_seq + rng.randint(1, 20) if rng.random() < 0.1 else 0
        got = routed(router, table, events, routed_seq, quiet_until)
        want = reference.route(events, routed_seq, quiet_until)
        assert got[:3] == ([], [], [])  # nothing was sent: nothing is answered
        assert got[3] == full_rows(want[3]) and got[4] == want[4]
        routed_seq, previous = int(events["seq"][-1]), events
        listings += want[4]
        fills += sum(row["kind"] == 1 for _, row in want[3])
        quiet += quiet_until > 0
        live = table.rows[:table.n]  # (compaction drops closed orders the reference keeps)
        for order_id, client_id, remaining in live[["order_id", "client_id", "remaining"]].tolist():
            assert reference.orders[order_id] == [client_id, remaining]
    assert listings and fills > 100 and quiet


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_order_table_follows_the_matcher(seed):
    engine = Engine(**ENGINE_KWARGS)
    gen = StreamGenerator(seed)
    keyed = np.array(gen.accounts[:3], np.int64)
    table = OrderTable(capacity=16)  # small: grows and compacts on the way
    rng = random.Random(seed)
    router, reference = router_for(keyed.tolist()), ReferenceReplies(keyed.tolist())
    fills_seen = swept = 0
    before: dict[int, int] = {}  # keyed order id -> remaining, from the matcher's last export
    for _, events in run_stream(engine, gen, 4000, chunk=rng.randint(1, 300)):
        reports = routed(router, table, events)[3]
        assert reports == full_rows(reference.route(events)[3])
        ev = keyed_events(events, keyed)
        f = ev[ev["kind"] == Ev.FILL]
        maker_lefts = [row["remaining"] for _, row in reports if row["kind"] == 1 and row["liquidity"] == 1]
        assert len(maker_lefts) == len(f)
        fills_seen += len(f)
        swept += len(f) - len(np.unique(f["order_id"]))  # a taker filled by several makers in one batch
        # each fill's maker remaining is the maker's open size right after it, followed here one
        # event at a time from the matcher's last export (amends and cancels in the batch included)
        left = dict(before)
        fill_rows = iter(maker_lefts)
        keyed_set = set(keyed.tolist())
        for kind, account, order, maker, qty, remaining, flags in ev[
                ["kind", "account", "order_id", "maker_order", "qty", "remaining", "flags"]].tolist():
            if kind == Ev.FILL:
                maker_left = next(fill_rows)
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


def test_a_predecessors_closed_orders_join_a_table_seeded_from_a_snapshot_once_each(tmp_path):
    """``OrderTable.closed`` keeps each account's newest CLOSED_KEPT closed rows; written and read back
    (``save_history``, ``load_history``), ``add_history`` takes those closed by the snapshot, of accounts with keys,
    and none the snapshot's open orders or the events after it give the table again."""
    before = OrderTable()
    rows = np.zeros(CLOSED_KEPT + 7, ORDER_ROW_DTYPE)
    n = len(rows)
    rows["order_id"] = np.arange(1, n + 1)
    rows["account"], rows["status"], rows["closed_seq"] = 5, 2, rows["order_id"]
    rows[-6:]["account"] = 6, 6, 6, 6, 9, 6  # orders n - 5 .. n; the last still open
    rows[-1]["status"], rows[-1]["closed_seq"] = OPEN, 0
    before.insert(rows)
    closed = before.closed()
    assert (closed["status"] != OPEN).all() and (closed["account"] == 5).sum() == CLOSED_KEPT
    assert closed["order_id"].tolist() == list(range(2, n))  # account 5's oldest went, and the open one
    path = Config(engine=EngineSection(data_dir=str(tmp_path))).history_path
    save_history(path, closed)
    history = load_history(path)
    assert history.tobytes() == closed.tobytes()
    # the snapshot: orders up to n - 2 placed, order n - 3 open then (it closed after), the others closed by then
    after = OrderTable()
    after.insert(rows[n - 4:n - 3].copy())
    after.rows["status"][0], after.rows["closed_seq"][0] = OPEN, 0
    history["closed_seq"][history["order_id"] == n - 3] = 10 * n
    assert after.add_history(history, [5, 6], last_order_id=n - 2, event_seq=5 * n) == CLOSED_KEPT + 3
    live = after.rows[:after.n]
    assert live["order_id"].tolist() == list(range(2, n - 1))  # sorted, each once: no account 9's, none later
    assert live["status"][live["order_id"] == n - 3] == OPEN  # the snapshot's row, not the predecessor's


@pytest.mark.parametrize("content", [b"not a zip", b""])
def test_an_unreadable_history_is_reported_and_skipped(tmp_path, capsys, content):
    path = tmp_path / "closed_orders.npz"
    path.write_bytes(content)
    assert load_history(path) is None
    assert "the closed orders of the last run are not read" in capsys.readouterr().err
    np.savez(path, rows=np.zeros(3, np.int64))  # another layout
    assert load_history(path) is None and "not a list of this gateway's order rows" in capsys.readouterr().err
    assert load_history(tmp_path / "none.npz") is None and capsys.readouterr().err == ""


def compact_reference(rows: np.ndarray, keep: int) -> np.ndarray:
    """``compact_orders`` in numpy (as the gateway did it until session 27): each account's closed rows ranked
    newest ``closed_seq`` first, equal ones in row order; those ranked ``keep`` or later dropped."""
    closed = np.flatnonzero(rows["status"] != OPEN)
    order = closed[np.lexsort((-rows["closed_seq"][closed], rows["account"][closed]))]
    accounts = rows["account"][order]
    starts = np.flatnonzero(np.r_[True, accounts[1:] != accounts[:-1]])
    rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    kept = np.ones(len(rows), bool)
    kept[order[rank >= keep]] = False
    return rows[kept]


@pytest.mark.parametrize("seed", range(8))
def test_compact_orders_keeps_what_the_numpy_ranking_kept(seed):
    """Random tables: a few accounts or hundreds (its count table grows), closed_seqs with many ties, limits
    from 0 up past every account's closed count; the rows kept, in order, as ``compact_reference``'s."""
    from gateway.routing import compact_orders

    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 5000))
    rows = np.zeros(n + 7, ORDER_ROW_DTYPE)  # room past n: never touched
    rows["order_id"][:n] = np.arange(1, n + 1)
    rows["account"][:n] = rng.integers(1, 4 if seed % 2 else 400, n)
    rows["status"][:n] = rng.choice([OPEN, 1, 2], n, p=[0.2, 0.3, 0.5])
    rows["closed_seq"][:n] = np.where(rows["status"][:n] == OPEN, 0, rng.integers(1, 50 if seed < 4 else 10**6, n))
    rows["client_id"] = np.arange(len(rows)) + 10**6
    tail = rows[n:].copy()
    for keep in (0, 1, 3, 40, 1000, n + 1):
        table = rows.copy()
        left = compact_orders(table, n, keep)
        assert table[:left].tolist() == compact_reference(rows[:n], keep).tolist(), keep
        assert table[n:].tolist() == tail.tolist()
    with pytest.raises(ValueError, match="rows of"):
        compact_orders(rows, len(rows) + 1, 3)
    with pytest.raises(ValueError, match="keep -1"):
        compact_orders(rows, n, -1)



def invariant_table(seed: int, n: int) -> np.ndarray:
    """Random order rows as the matcher leaves them: sorted by order id, a client id reused by an account only
    once its earlier order under it closed (closed_seqs grow with order ids), several accounts and markets."""
    rng = np.random.default_rng(seed)
    rows = np.zeros(n, ORDER_ROW_DTYPE)
    rows["order_id"] = np.cumsum(rng.integers(1, 4, n))
    rows["account"] = rng.integers(1, 9, n)
    rows["client_id"] = rng.integers(0, max(2, n // 4), n)
    rows["market"] = rng.integers(1, 4, n)
    rows["price"] = rng.integers(1, 10**6, n)
    rows["status"] = rng.choice([OPEN, 1, 2], n, p=[0.3, 0.3, 0.4])
    for places in client_id_groups(rows):  # only an account's newest order under a client id may be open
        older = places[:-1][rows["status"][places[:-1]] == OPEN]
        rows["status"][older] = 2
    rows["closed_seq"] = np.where(rows["status"] == OPEN, 0, 4 * rows["order_id"] + rng.integers(0, 4, n))
    return rows


def client_id_groups(rows: np.ndarray) -> list[np.ndarray]:
    """The places of the rows of each (account, client id), in order."""
    groups: dict = collections.defaultdict(list)
    for i, key in enumerate(zip(rows["account"].tolist(), rows["client_id"].tolist())):
        groups[key].append(i)
    return [np.array(places) for places in groups.values()]


@pytest.mark.parametrize("seed", range(6))
def test_the_order_tables_queries_in_c_agree_with_numpy(seed):
    """Each query's pass in C (gateway/routing.pyx) against the numpy masks the gateway used until session 32,
    over random tables: open orders by account and market, closed rows, the trading accounts, lookups by order id
    and by client id (the open order, else the newest closed, as the matcher's reuse of client ids makes them),
    row copies; the rows past ``n`` are never looked at."""
    from gateway.routing import accounts_trading, client_order_row, order_row, order_rows, take_rows

    n = [0, 1, 50, 3000, 3000, 20000][seed]
    table = OrderTable(capacity=n + 5)
    table.insert(invariant_table(seed, n))
    table.rows[n:]["status"] = OPEN  # beyond n: open orders of every account, which no query may see
    table.rows[n:]["account"] = np.arange(1, 6)
    live = table.rows[:n]
    for account in range(0, 10):  # 0: every account
        for market in range(4):  # 0: every market
            where = ((live["account"] == account) | (account == 0)) & ((live["market"] == market) | (market == 0))
            mask = where & (live["status"] == OPEN)
            assert order_rows(table.rows, n, account, market, False).tolist() == np.flatnonzero(mask).tolist()
            closed = where & (live["status"] != OPEN)
            assert order_rows(table.rows, n, account, market, True).tolist() == np.flatnonzero(closed).tolist()
            if not market:
                assert [o.order_id for o in table.open_orders(account, 0)] == live["order_id"][mask].tolist()
    places = order_rows(table.rows, n, 0, 0, True)
    assert take_rows(table.rows, places).tolist() == live[places].tolist()
    accounts = np.arange(0, 12, dtype=np.int64)
    assert accounts_trading(table.rows, n, accounts).tolist() == \
        np.isin(accounts, live["account"][live["status"] == OPEN]).tolist()
    assert accounts_trading(table.rows, n, accounts[:0]).tolist() == []
    rng = np.random.default_rng(seed)
    for order_id in rng.integers(0, int(live["order_id"][-1]) + 2 if n else 3, 200).tolist():
        hit = np.flatnonzero(live["order_id"] == order_id)
        assert order_row(table.rows, n, order_id) == (int(hit[0]) if len(hit) else -1)
    for account, client_id in zip(rng.integers(0, 10, 300).tolist(), rng.integers(0, max(2, n // 4) + 1, 300).tolist()):
        hit = live[(live["account"] == account) & (live["client_id"] == client_id)]
        open_ = hit[hit["status"] == OPEN]
        expected = None if not len(hit) else open_[-1] if len(open_) else hit[np.argmax(hit["closed_seq"])]
        found = table.find(account, 0, client_id) if client_id else None  # client id 0: by order id
        if client_id:
            assert (found and found.order_id) == (expected and int(expected["order_id"]))
        at = client_order_row(table.rows, n, account, client_id)
        assert (at >= 0 and int(live["order_id"][at])) == (expected is not None and int(expected["order_id"]))
        if found:
            r = expected
            assert (found.client_id, found.market, found.price, found.status) == \
                (client_id, r["market"], r["price"], ("open", "filled", "cancelled")[r["status"]])
    for bad in (lambda: order_rows(table.rows, n + 6, 1, 0, False), lambda: order_rows(table.rows, -1, 0, 0, True),
                lambda: order_row(table.rows, n + 6, 1), lambda: client_order_row(table.rows, n + 6, 1, 1),
                lambda: accounts_trading(table.rows, n + 6, accounts)):
        with pytest.raises(ValueError, match=f"{n + 6} rows of {n + 5}|-1 rows of"):
            bad()
    with pytest.raises(ValueError, match=f"take_rows: place {n + 5} of {n + 5} rows"):
        take_rows(table.rows, np.array([0, n + 5], np.intp))
    with pytest.raises(ValueError, match="int64"):
        accounts_trading(table.rows, n, accounts.astype(np.int32))



@pytest.mark.parametrize("seed", range(3))
def test_closed_orders_are_the_newest_closed_oldest_first(seed):
    """``OrderTable.closed_orders`` against numpy: an account's closed rows in a market, placed at or after
    ``since``, ordered by when they closed (not by order id), the newest ``limit`` (0: all, never more than
    CLOSED_KEPT, though the table holds more until it is compacted)."""
    rng = np.random.default_rng(seed)
    n = 2600
    table = OrderTable(capacity=n)
    rows = invariant_table(seed, n)
    rows["account"] = rng.choice([1, 2], n, p=[0.9, 0.1])  # account 1 past CLOSED_KEPT closed orders
    rows["ts"] = rng.integers(1, 1000, n)
    rows["closed_seq"] = np.where(rows["status"] == OPEN, 0, rng.permutation(n) + 1)
    table.insert(rows)
    for account, market, since, limit in [(1, 0, 0, 0), (1, 2, 0, 0), (2, 0, 0, 0), (1, 0, 500, 0), (1, 3, 0, 7),
                                          (2, 1, 300, 1), (3, 0, 0, 0), (1, 0, 2000, 5)]:
        mine = rows[(rows["account"] == account) & (rows["status"] != OPEN) & (rows["ts"] >= since) &
                    ((rows["market"] == market) | (market == 0))]
        mine = mine[np.argsort(mine["closed_seq"])][-min(limit or CLOSED_KEPT, CLOSED_KEPT):]
        got = table.closed_orders(account, market, since, limit)
        assert [o.order_id for o in got] == mine["order_id"].tolist()
        assert all(o.status != "open" and o.ts >= since for o in got)
    assert len(table.closed_orders(1, 0, 0, 0)) == CLOSED_KEPT


def test_the_reply_pass_refuses_bad_input_with_the_reason():
    """Events that are not whole records, keyed accounts out of order or of another type, a table whose
    length is not inside its rows, kind masks too long: each refused with what is wrong, nothing written."""
    router, table = router_for([1]), OrderTable(capacity=4)
    ev = np.zeros(2, EVENT_DTYPE)
    with pytest.raises(ValueError, match="not whole"):
        router.route(ev.view(np.uint8)[:-1], 0, 0, table)
    for keyed in ([3, 1], [1, 1]):
        with pytest.raises(ValueError, match="sorted and unique"):
            router.set_keyed(np.array(keyed, np.int64))
    with pytest.raises(ValueError, match="expected 'const int64_t' but got 'int'"):
        router.set_keyed(np.array([1], np.int32))
    with pytest.raises(TypeError, match="int64 values: expected a numpy array"):
        router.set_keyed([1, 2])
    assert router.keyed.tolist() == [1]
    table.n = -1
    with pytest.raises(ValueError, match="a table of -1 rows in 4"):
        router.route(ev.view(np.uint8), 0, 0, table)
    with pytest.raises(ValueError, match="kind masks of 65 and"):
        ReplyRouter(np.zeros(65, np.uint8), OWN_FIRST, {}, True)


def test_record_arrays_for_c_are_checked_once_per_dtype_and_refused_with_the_reason():
    """The structured arrays C fills (gateway/routing.pyx, mdcore.pyx, through engine/arrays.pyx; here the
    order table's rows that ``route`` writes): the dtype is checked against the C struct field by field the
    first time each dtype object is seen, then by identity, and the shape, the contiguity and the
    writability every time."""
    router = router_for([1])
    events = np.zeros(0, EVENT_DTYPE).view(np.uint8)

    def route(rows) -> tuple:
        table = OrderTable(capacity=1)
        table.rows = rows
        return router.route(events, 0, 0, table)

    assert route(np.zeros(1, ORDER_ROW_DTYPE)) == (0, 0, 0)
    equal = np.dtype(ORDER_ROW_DTYPE.descr)  # an equal dtype, another object: checked, then used
    assert equal is not ORDER_ROW_DTYPE and route(np.zeros(1, equal)) == (0, 0, 0)
    assert route(np.zeros(1, ORDER_ROW_DTYPE)) == (0, 0, 0)  # and back
    read_only = np.zeros(1, ORDER_ROW_DTYPE)
    read_only.flags.writeable = False
    for bad, error, reason in (
            (np.zeros(1, [("order_id", "<i8"), ("account", "<i4")]), ValueError, "dtype mismatch"),
            (np.zeros((1, 1), ORDER_ROW_DTYPE), ValueError, "order rows: expected a 1-d C-contiguous array"),
            (np.zeros(4, ORDER_ROW_DTYPE)[::2], ValueError, "1-d C-contiguous"),
            (read_only, ValueError, "order rows: the array is read-only"),
            (bytearray(ORDER_ROW_DTYPE.itemsize), TypeError, "order rows: expected a numpy array, not bytearray")):
        with pytest.raises(error, match=reason):
            route(bad)
    assert route(np.zeros(1, ORDER_ROW_DTYPE)) == (0, 0, 0)  # a refused array changes nothing
