"""Perpetual markets in the matcher (issue 9, first part): positions, realised PnL, holds and margin,
Position events, reduce-only orders; both engines (``engine_cls``), the differential stream with perps
(``generators.PerpStreamGenerator``) and the accounting invariants after every chunk."""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from engine.codes import ResultCode as RC
from engine.records import Ev, MarketKind, Stp, Tif
from engine.reference import ReferenceEngine
from engine.views import MarketRiskView, PositionView

from generators import ENGINE_KWARGS, LeveragedPerpStreamGenerator, PerpStreamGenerator, run_stream
from test_differential import run_differential
from test_venues import OP1, T1, T2, codes, ok, state, two_venues

USD, BTC = 1, 2
PERP = 5
BUY, SELL = 0, 1
A, B, C = 11, 12, 13
TAKER_BPS = 10  # maker 0: a fill of notional n costs its taker ceil(n / 1000)


def world(engine_cls, taker_bps=TAKER_BPS, **market):
    e = engine_cls(**ENGINE_KWARGS)
    ok(e.add_asset(USD, "USD", 6))
    ok(e.add_asset(BTC, "BTC", 8))
    ok(e.add_market(PERP, BTC, USD, tick_size=1, lot_size=10, min_size=10, taker_bps=taker_bps,
                    kind=MarketKind.PERPETUAL, **market))
    for account in (A, B, C):
        ok(e.deposit(account, USD, 1_000_000))
    return e


def position_events(events):
    return [ev for ev in events if ev["kind"] == Ev.POSITION]


def trade(e, maker, taker, side, price, qty, cid):
    """maker rests ``qty`` at ``price`` on the other side; taker takes it with an IOC."""
    ok(e.place(maker, PERP, 1 - side, price, qty, cid))
    return ok(e.place(taker, PERP, side, price, qty, cid, tif=Tif.IOC))


def test_open_long_and_short_hold_quote_then_margin(engine_cls):
    e = world(engine_cls)
    ok(e.place(A, PERP, SELL, 100, 50, 1))  # 5 lots: a sell holds quote too, 5 x (100 + ceil(0.1))
    assert e.balance(A, USD) == (1_000_000 - 505, 505)
    assert e.balance(A, BTC) == (0, 0)  # no base moves in a perpetual market
    events = ok(e.place(B, PERP, BUY, 100, 50, 1, tif=Tif.IOC))
    fill = [ev for ev in events if ev["kind"] == Ev.FILL][0]
    assert (fill["price"], fill["qty"], fill["taker_fee"], fill["maker_fee"]) == (100, 50, 1, 0)
    taker, maker = position_events(events)
    # taker first: size, entry value, margin (client_id), pnl of the fill, realised, free and held after
    assert (taker["account"], taker["order_id"], taker["side"], taker["qty"], taker["remaining"], taker["client_id"],
            taker["maker_fee"], taker["taker_fee"], taker["maker_order"], taker["maker_account"]) == (
        B, 2, BUY, 50, 500, 500, 0, 0, 1_000_000 - 501, 500)
    assert (maker["account"], maker["order_id"], maker["qty"], maker["remaining"], maker["client_id"]) == (
        A, 1, -50, 500, 500)
    assert e.position(B, PERP) == PositionView(B, PERP, 50, 500, 500, 0)
    assert e.position(A, PERP) == PositionView(A, PERP, -50, 500, 500, 0)
    assert e.balance(B, USD) == (1_000_000 - 501, 500)  # the fee paid, the notional held as margin
    assert e.balance(A, USD) == (1_000_000 - 500, 500)
    assert e.fees(USD) == 1
    assert e.position(C, PERP) is None


def test_reduce_realises_pnl_pro_rata_and_flip_reopens(engine_cls):
    e = world(engine_cls, taker_bps=0)
    trade(e, A, B, BUY, 100, 30, 1)  # B long 3 lots at 100 (entry 300), A short
    trade(e, C, B, BUY, 101, 10, 2)  # B long 4 lots, entry 401
    assert e.position(B, PERP) == PositionView(B, PERP, 40, 401, 401, 0)
    events = trade(e, C, B, SELL, 110, 10, 3)  # B sells 1 lot at 110: closes 1/4 of entry 401 (floor 100)
    (ev,) = [p for p in position_events(events) if p["account"] == B]
    assert (ev["qty"], ev["remaining"], ev["client_id"], ev["maker_fee"], ev["taker_fee"]) == (30, 301, 301, 10, 10)
    # B sells 6 lots at 90: closes 3 (entry 301, pnl 270 - 301) and opens a 3-lot short at 90
    events = trade(e, C, B, SELL, 90, 60, 4)
    (ev,) = [p for p in position_events(events) if p["account"] == B]
    assert (ev["qty"], ev["remaining"], ev["client_id"], ev["maker_fee"], ev["taker_fee"]) == (-30, 270, 270, -31, -21)
    assert e.position(B, PERP) == PositionView(B, PERP, -30, 270, 270, -21)
    assert e.balance(B, USD) == (1_000_000 - 21 - 270, 270)
    # C's side of the same trades: long 1 at 110 (from its short of 1 at 101: pnl -9), then long 6 at 90
    assert e.position(C, PERP) == PositionView(C, PERP, 60, 540, 540, -9)
    sizes = sum(p.size for p in e.positions())
    assert sizes == 0 and len(e.positions()) == 3


def test_closing_to_flat_releases_all_margin(engine_cls):
    e = world(engine_cls, taker_bps=0)
    trade(e, A, B, BUY, 100, 70, 1)
    trade(e, A, B, SELL, 103, 70, 2)
    assert e.position(B, PERP) == PositionView(B, PERP, 0, 0, 0, 21)
    assert e.position(A, PERP) == PositionView(A, PERP, 0, 0, 0, -21)
    assert e.balance(B, USD) == (1_000_021, 0)
    assert e.balance(A, USD) == (999_979, 0)


def test_cancel_and_amend_move_a_sell_orders_quote_hold(engine_cls):
    e = world(engine_cls)
    ok(e.place(A, PERP, SELL, 200, 30, 1))
    assert e.balance(A, USD) == (1_000_000 - 603, 603)
    ok(e.amend(A, order_id=1, price=300, qty=20))  # 2 lots at 300 + 1
    assert e.balance(A, USD) == (1_000_000 - 602, 602)
    ok(e.cancel(A, order_id=1))
    assert e.balance(A, USD) == (1_000_000, 0)
    assert codes(e.place(A, PERP, SELL, 200_000, 60, 2)) == [RC.INSUFFICIENT_BALANCE]  # 6 x 200,200 > free


def test_reduce_only(engine_cls):
    e = world(engine_cls)
    ioc = dict(tif=Tif.IOC, reduce_only=True)
    assert codes(e.place(A, PERP, SELL, 100, 10, 1, **ioc)) == [RC.REDUCE_ONLY_WOULD_INCREASE]  # flat
    trade(e, A, B, BUY, 100, 30, 2)  # B long 30
    assert codes(e.place(B, PERP, BUY, 100, 10, 3, **ioc)) == [RC.REDUCE_ONLY_WOULD_INCREASE]  # same side
    assert codes(e.place(B, PERP, SELL, 100, 40, 3, **ioc)) == [RC.REDUCE_ONLY_WOULD_INCREASE]  # too large
    assert codes(e.place(B, PERP, SELL, 100, 10, 3, reduce_only=True)) == [RC.INVALID_FLAGS]  # GTC may rest
    ok(e.place(C, PERP, BUY, 100, 100, 4))
    ok(e.place(B, PERP, SELL, 100, 30, 5, **ioc))
    assert e.position(B, PERP).size == 0
    ok(e.add_asset(3, "ETH", 18))
    ok(e.add_market(6, 3, USD, tick_size=1, lot_size=1, min_size=1))
    ok(e.deposit(A, 3, 100))
    assert codes(e.place(A, 6, SELL, 100, 10, 7, **ioc)) == [RC.INVALID_FLAGS]  # a spot market has no position


def test_reduce_only_goes_on_while_the_oracle_is_stale(engine_cls):
    e = two_venues(engine_cls)  # venue 1 (operator OP1); accounts and assets of tests.test_venues
    perp = 7
    ok(e.add_market(perp, 2, 1, tick_size=1, lot_size=1, min_size=1, kind=MarketKind.PERPETUAL))
    ok(e.offer_market(OP1, 1, perp))
    ok(e.configure_oracle(OP1, 1, perp, feed_id=7, feed_account=9001, timeout_ns=1_000, ts=10))
    ok(e.place(T1, perp, SELL, 100, 5, 1, venue=1, ts=10))
    ok(e.place(T2, perp, BUY, 100, 5, 1, venue=1, tif=Tif.IOC, ts=10))
    ok(e.place(T1, perp, BUY, 90, 5, 2, venue=1, ts=10))  # a bid for T2 to close into later
    assert codes(e.place(T2, perp, SELL, 90, 2, 2, venue=1, tif=Tif.IOC, ts=2_000)) == [RC.ORACLE_STALE]
    assert e.oracle(1, perp).stale
    events = ok(e.place(T2, perp, SELL, 90, 2, 3, venue=1, tif=Tif.IOC, reduce_only=True, ts=2_001))
    (ev,) = [p for p in position_events(events) if p["account"] == T2]
    assert (ev["qty"], ev["maker_fee"]) == (3, -20)


def test_positions_survive_export_import():
    from engine.matcher import Engine

    e = world(Engine, taker_bps=0)
    trade(e, A, B, BUY, 100, 30, 1)
    trade(e, C, B, SELL, 104, 10, 2)
    state = e.export_state()
    # in order of first fill (the taker's position first)
    assert state["positions"].tolist() == [(B, PERP, 0, 20, 200, 200, 4), (A, PERP, 0, -30, 300, 300, 0),
                                           (C, PERP, 0, 10, 104, 104, 0)]
    copy = Engine.from_state(state, **ENGINE_KWARGS)
    assert copy.positions() == e.positions()
    for eng in (e, copy):  # and both go on identically
        trade(eng, A, B, SELL, 99, 20, 3)
    assert copy.positions() == e.positions()
    assert e.position(B, PERP).size == 0 and e.position(B, PERP).realised == 4 - 2


def test_import_refuses_a_position_in_a_spot_market():
    from engine.matcher import Engine

    e = world(Engine)
    ok(e.add_market(6, BTC, USD, tick_size=1, lot_size=1, min_size=1))
    state = e.export_state()
    state["positions"] = np.array([(A, 6, 0, 10, 10, 10, 0)], dtype=state["positions"].dtype)
    with pytest.raises(ValueError, match="no such perpetual market"):
        Engine.from_state(state, **ENGINE_KWARGS)


# ---------------------------------------------------------------- leverage and the pre-trade margin check

ADMIN, FEED, D = 99, 77, 14
LEVERAGE = 10


def leveraged_world(engine_cls):
    """``world`` with an admin and PERP at 10x (maintenance 2500 bps of the initial margin)."""
    e = world(engine_cls)
    ok(e.set_venue_params(ADMIN, stake_asset=BTC, min_stake=1, unbond_period=1, protocol_account=800, admin=ADMIN))
    ev = ok(e.market_risk(ADMIN, PERP, max_leverage=LEVERAGE, maintenance_bps=2500))
    assert (ev[0]["kind"], ev[0]["flags"], ev[0]["price"], ev[0]["qty"]) == (Ev.VENUE, 112, LEVERAGE, 2500)
    assert e.market_risks() == [MarketRiskView(PERP, LEVERAGE, 2500, 1, 0, 0)]  # impact 1 lot, no slice, no mark yet
    return e


BAD_RISK = [
    ("account not positive", lambda e: e.market_risk(0, PERP, max_leverage=2, maintenance_bps=1), RC.INVALID_ACCOUNT_ID),
    ("unknown market", lambda e: e.market_risk(ADMIN, 9, max_leverage=2, maintenance_bps=1), RC.UNKNOWN_MARKET),
    ("spot market", lambda e: e.market_risk(ADMIN, 6, max_leverage=2, maintenance_bps=1), RC.INVALID_MARKET_KIND),
    ("not admin nor operator", lambda e: e.market_risk(A, PERP, max_leverage=2, maintenance_bps=1),
     RC.NOT_VENUE_OPERATOR),
    ("leverage 0", lambda e: e.market_risk(ADMIN, PERP, max_leverage=0, maintenance_bps=1), RC.INVALID_LEVERAGE),
    ("leverage 101", lambda e: e.market_risk(ADMIN, PERP, max_leverage=101, maintenance_bps=1), RC.INVALID_LEVERAGE),
    ("maintenance 0", lambda e: e.market_risk(ADMIN, PERP, max_leverage=2, maintenance_bps=0),
     RC.INVALID_MAINTENANCE_MARGIN),
    ("maintenance 10001", lambda e: e.market_risk(ADMIN, PERP, max_leverage=2, maintenance_bps=10_001),
     RC.INVALID_MAINTENANCE_MARGIN),
    ("impact size negative", lambda e: e.market_risk(ADMIN, PERP, max_leverage=2, maintenance_bps=1, impact_lots=-1),
     RC.INVALID_RISK_SIZE),
    ("slice negative", lambda e: e.market_risk(ADMIN, PERP, max_leverage=2, maintenance_bps=1, liquidation_slice=-1),
     RC.INVALID_RISK_SIZE),
    ("open orders", lambda e: e.market_risk(ADMIN, PERP, max_leverage=2, maintenance_bps=1), RC.MARKET_HAS_OPEN_ORDERS),
]


@pytest.mark.parametrize("what, command, code", BAD_RISK, ids=[b[0] for b in BAD_RISK])
def test_bad_market_risk_is_rejected_and_changes_nothing(engine_cls, what, command, code):
    e = leveraged_world(engine_cls)
    ok(e.add_market(6, BTC, USD, tick_size=1, lot_size=1, min_size=1))
    if code == RC.MARKET_HAS_OPEN_ORDERS:
        ok(e.place(A, PERP, BUY, 90, 10, 1))
    before = state(e)
    ev = command(e)
    assert [int(x) for x in ev["kind"]] == [Ev.REJECTED] and codes(ev) == [code], what
    assert state(e) == before


def test_leveraged_holds_and_margin(engine_cls):
    e = leveraged_world(engine_cls)
    ok(e.place(A, PERP, SELL, 100, 50, 1))  # 5 lots of ceil(100 / 10) + ceil(0.1) = 11
    assert e.balance(A, USD) == (1_000_000 - 55, 55)
    ok(e.place(B, PERP, BUY, 100, 50, 1, tif=Tif.IOC))  # taker fee 1; margin ceil(500 / 10) = 50 each
    assert e.balance(B, USD) == (1_000_000 - 51, 50) and e.balance(A, USD) == (1_000_000 - 50, 50)
    assert e.position(B, PERP) == PositionView(B, PERP, 50, 500, 50, 0)
    assert e.position(A, PERP) == PositionView(A, PERP, -50, 500, 50, 0)
    ok(e.place(A, PERP, BUY, 90, 50, 2))  # A closes at 90: +50 realised, its margin back
    ok(e.place(B, PERP, SELL, 90, 50, 2, tif=Tif.IOC))  # B: -50, all of its margin (and a fee of 1)
    assert e.position(A, PERP).realised == 50 and e.position(B, PERP).realised == -50
    assert e.balance(A, USD) == (1_000_000 + 50, 0) and e.balance(B, USD) == (1_000_000 - 52, 0)


def test_a_position_with_no_free_balance_left_is_closed_reduce_only(engine_cls):
    """A reduce-only order holds nothing: D's 10x long uses all its money as margin (free 0), and its close still
    goes through, the fee paid out of the margin and PnL it frees (a hold would be INSUFFICIENT_BALANCE)."""
    e = leveraged_world(engine_cls)
    D = 14  # a fresh account
    ok(e.deposit(D, USD, 55))  # the buy's hold: 5 lots of ceil(100 / 10) + a fee of 1
    ok(e.place(A, PERP, SELL, 100, 50, 1))
    ok(e.place(D, PERP, BUY, 100, 50, 1, tif=Tif.IOC))  # margin 50, taker fee 1
    ok(e.withdraw(D, USD, 4))  # nothing left in free
    assert e.balance(D, USD) == (0, 50)
    ok(e.place(A, PERP, BUY, 98, 50, 2))
    events = ok(e.place(D, PERP, SELL, 98, 50, 2, tif=Tif.IOC, reduce_only=True))
    accepted = events[events["kind"] == Ev.ACCEPTED][0]
    assert e.position(D, PERP) == PositionView(D, PERP, 0, 0, 0, -10)
    assert e.balance(D, USD) == (50 - 10 - 1, 0)  # the margin back, less the loss and the fee of ceil(490 / 1000)
    assert int(accepted["order_id"]) > 0 and not (events["kind"] == Ev.REJECTED).any()

def test_insufficient_margin_on_place_amend_and_withdraw(engine_cls):
    e = leveraged_world(engine_cls)
    ok(e.deposit(D, USD, 100))
    ok(e.place(A, PERP, SELL, 100, 50, 1))
    ok(e.place(D, PERP, BUY, 100, 50, 1, tif=Tif.IOC))  # long 5 lots at 100, margin 50
    assert e.balance(D, USD) == (49, 50)
    trade(e, A, B, BUY, 92, 10, 2)  # the last trade, D's mark: 92
    # excess = free 49 + margin 50 + unrealised -40 - initial ceil(460 / 10) = 13
    ok(e.place(D, PERP, BUY, 90, 10, 3))  # holds 9 + 1 = 10: excess 3 now
    before = state(e)
    for ev in (e.place(D, PERP, BUY, 92, 10, 4),  # holds 11 > 3
               e.amend(D, client_id=3, qty=20),  # 10 more
               e.withdraw(D, USD, 4)):
        assert codes(ev) == [RC.INSUFFICIENT_MARGIN]
        assert state(e) == before
    ok(e.withdraw(D, USD, 3))
    assert codes(e.place(D, PERP, BUY, 92, 10, 5)) == [RC.INSUFFICIENT_MARGIN]
    # a fresh oracle on the listing venue is the mark: at 100 nothing is lost, excess 36 - 3 = 33 once more
    ok(e.configure_oracle(ADMIN, 0, PERP, feed_id=1, feed_account=FEED, timeout_ns=10**15))
    ok(e.oracle_price(FEED, 0, PERP, 100, feed_id=1, source_ts=1))
    ok(e.place(D, PERP, BUY, 92, 20, 5))
    # a reduce-only order is never refused for margin: free 11 is just its hold, the mark back at 92
    ok(e.withdraw(D, USD, e.balance(D, USD)[0] - 11))
    ok(e.oracle_price(FEED, 0, PERP, 92, feed_id=1, source_ts=2))
    ok(e.place(B, PERP, BUY, 91, 10, 6))
    assert codes(e.place(D, PERP, SELL, 91, 10, 8, tif=Tif.IOC)) == [RC.INSUFFICIENT_MARGIN]
    events = ok(e.place(D, PERP, SELL, 91, 10, 7, tif=Tif.IOC, reduce_only=True, stp=Stp.CANCEL_MAKER))
    assert e.position(D, PERP).size == 40 and any(ev["kind"] == Ev.FILL for ev in events)


def test_market_risk_survives_export_import():
    from engine.matcher import Engine

    e = leveraged_world(Engine)
    ok(e.place(A, PERP, SELL, 100, 50, 1))
    copy = Engine.from_state(e.export_state(), **ENGINE_KWARGS)
    assert copy.market_risks() == e.market_risks() and copy.balance(A, USD) == e.balance(A, USD)
    for eng in (e, copy):  # the resting order's hold per lot came back with the leverage
        ok(eng.cancel(A, order_id=1))
    assert copy.balance(A, USD) == e.balance(A, USD) == (1_000_000, 0)


# ---------------------------------------------------------------- invariants on generated streams

def check_perp_invariants(e: ReferenceEngine, net: dict[int, int]) -> None:
    """Per perpetual market the positions sum to 0; entry values and margins are >= 0 and a flat
    position has none; per account and asset, held == its open orders' holds (perpetual orders of
    either side and spot buys: lots x (price + fpl) of quote; spot sells: base) + the margins of its
    positions quoted in it; no balance is negative; per asset, balances + fee pools + venue stakes
    - the open positions' signed entry values == deposits - withdrawals (realised PnL is paid out of
    what the other side of the still-open positions owes: their entry values).  On the reference
    model, whose orders carry their fee per lot (the differential test holds the engines equal)."""
    markets = {m.market_id: m for m in e.markets()}
    leveraged = {markets[r.market_id].quote for r in e.market_risks() if r.max_leverage > 1}
    held: dict[tuple[int, int], int] = defaultdict(int)
    owed: dict[int, int] = defaultdict(int)
    sizes: dict[int, int] = defaultdict(int)
    for p in e.positions():
        m = markets[p.market]
        assert m.kind == MarketKind.PERPETUAL
        assert p.entry_value >= 0 and p.margin >= 0 and p.size % m.lot_size == 0, p
        if p.size == 0:
            assert p.entry_value == 0 and p.margin == 0, p
        sizes[p.market] += p.size
        held[(p.account, m.quote)] += p.margin
        owed[m.quote] += p.entry_value if p.size > 0 else -p.entry_value
    assert all(s == 0 for s in sizes.values()), dict(sizes)
    for o in e._orders.values():
        m = markets[o.market]
        if o.side == BUY or m.kind == MarketKind.PERPETUAL:
            held[(o.account, m.quote)] += (o.remaining // m.lot_size) * e._markets[o.market].per_lot(o.price, o.fpl)
        else:
            held[(o.account, m.base)] += o.remaining
    totals: dict[int, int] = defaultdict(int)
    for account in e.accounts():
        for asset, (free, h) in e.balances(account).items():
            # free goes below 0 only by a leveraged loss larger than the closed margin plus the closing order's hold
            assert (free >= 0 or asset in leveraged) and h >= 0, (account, asset, free, h)
            assert h == held.pop((account, asset), 0), (account, asset, h)
            totals[asset] += free + h
    assert not any(held.values()), held
    for v in e.venues():
        for asset, amount in e.venue_fees(v.venue_id).items():
            totals[asset] += amount
        totals[e.venue_params().stake_asset] += v.stake + v.unbonding
    for a in e.assets():
        got = totals[a.asset_id] + e.fees(a.asset_id) - owed[a.asset_id]
        assert got == net.get(a.asset_id, 0), (a.asset_id, got, net.get(a.asset_id, 0))


@pytest.mark.parametrize("seed, generator", [(1, PerpStreamGenerator), (2, PerpStreamGenerator),
                                             (5, LeveragedPerpStreamGenerator), (7, LeveragedPerpStreamGenerator)])
def test_perp_stream_invariants_after_every_chunk(seed, generator):
    e = ReferenceEngine(**ENGINE_KWARGS)
    gen = generator(seed, limits={k: v for k, v in ENGINE_KWARGS.items()})
    net: dict[int, int] = defaultdict(int)
    position_events_per_market: dict[int, int] = defaultdict(int)
    reduce_only_rejects = realising = 0
    for cmds, events in run_stream(e, gen, 12_000, chunk=100):
        balance = events[events["kind"] == Ev.BALANCE]
        for asset, amount in zip(balance["market"].tolist(), balance["qty"].tolist()):
            net[asset] += amount
        check_perp_invariants(e, net)
        for ev in events[events["kind"] == Ev.POSITION]:
            p = e.position(int(ev["account"]), int(ev["market"]))
            position_events_per_market[p.market] += 1
            realising += int(ev["maker_fee"] != 0)
        rejected = events[events["kind"] == Ev.REJECTED]
        reduce_only_rejects += int(np.count_nonzero(rejected["code"] == RC.REDUCE_ONLY_WOULD_INCREASE))
    assert position_events_per_market[13] > 100 and position_events_per_market[14] > 30, position_events_per_market
    assert reduce_only_rejects > 5 and realising > 20, (reduce_only_rejects, realising)


@pytest.mark.parametrize("seed, generator", [(1, PerpStreamGenerator), (2, PerpStreamGenerator),
                                             (3, LeveragedPerpStreamGenerator), (5, LeveragedPerpStreamGenerator)])
def test_perp_stream_differential(seed, generator, tmp_path):
    stats = run_differential(seed, 15_000, dump_dir=tmp_path, generator=generator)
    assert stats["fills"] > 500


def test_perp_stream_small_tables(tmp_path):
    from generators import SMALL_ENGINE_KWARGS

    run_differential(4, 8_000, engine_kwargs=dict(SMALL_ENGINE_KWARGS, max_venues=16), dump_dir=tmp_path,
                     generator=LeveragedPerpStreamGenerator)
