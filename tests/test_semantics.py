"""Scenario tests for every rule of docs/ARCHITECTURE.md "Engine semantics".

Each test runs against every implementation (``engine_cls`` fixture). Events
are compared field by field (every field but the envelope seq/cmd_seq/
durable_seq/ts, which ``assert_envelope`` checks), so unnamed fields must be
0 as listed in engine/reference.py's docstring. Every rejection also checks
that the state (canonical_state without its counters, plus last_order_id and
open_orders) is unchanged.
"""
from __future__ import annotations

import random

import numpy as np
import pytest

from engine.codes import ResultCode as RC
from engine.records import (
    COMMAND_DTYPE,
    EVENT_DTYPE,
    CancelReason as CR,
    Cmd,
    CmdFlag,
    Ev,
    EvFlag,
    MarketKind,
    OrdType,
    Side,
    Stp,
    Tif,
    pack_market_assets,
    pack_market_params,
    pack_symbol,
)
from engine.state import canonical_state, state_hash
from engine.views import AssetView, MarketView, OrderView
from generators import check_batch_book_levels, same_but_book_levels

MAX_MONEY = 1 << 62
BASE, QUOTE, OTHER = 1, 2, 3
MKT, MKT2 = 1, 2
A, B, C = 11, 22, 33
FUND_BASE = 100_000
FUND_QUOTE = 10_000_000
BUY, SELL = int(Side.BUY), int(Side.SELL)

ENVELOPE = ("seq", "cmd_seq", "durable_seq", "ts")
BODY = tuple(n for n in EVENT_DTYPE.names if n not in ENVELOPE)


# ---------------------------------------------------------------- event helpers
def E(kind, **fields) -> dict:
    d = dict.fromkeys(BODY, 0)
    d["kind"] = int(kind)
    for k, v in fields.items():
        assert k in d, k
        d[k] = int(v)
    return d


def body(ev) -> dict:
    return {n: int(ev[n]) for n in BODY}


def assert_events(got, expected) -> None:
    assert [body(x) for x in got] == expected


def accepted(oid, acct, cid, side, price, qty, market=MKT):
    return E(Ev.ACCEPTED, order_id=oid, account=acct, client_id=cid, side=side, price=price,
             qty=qty, remaining=qty, market=market)


def fill(taker, tacct, side, maker, macct, price, qty, remaining, *, mfee=0, tfee=0, flags=0,
         market=MKT):
    return E(Ev.FILL, order_id=taker, account=tacct, side=side, maker_order=maker,
             maker_account=macct, price=price, qty=qty, remaining=remaining, maker_fee=mfee,
             taker_fee=tfee, flags=flags, market=market)


def cancelled(oid, acct, cid, side, price, qty, remaining, reason, code=0, market=MKT):
    return E(Ev.CANCELLED, order_id=oid, account=acct, client_id=cid, side=side, price=price,
             qty=qty, remaining=remaining, reason=reason, code=code, market=market)


def amended(oid, acct, cid, side, price, qty, flags=0, market=MKT):
    return E(Ev.AMENDED, order_id=oid, account=acct, client_id=cid, side=side, price=price,
             qty=qty, remaining=qty, flags=flags, market=market)


def level(side, price, qty, count, market=MKT):
    return E(Ev.BOOK_LEVEL, side=side, price=price, qty=qty, remaining=count, market=market)


def balance_ev(acct, asset, delta, free, held):
    return E(Ev.BALANCE, account=acct, market=asset, qty=delta, remaining=free, taker_fee=held)


DONE_M, DONE_T = int(EvFlag.MAKER_DONE), int(EvFlag.TAKER_DONE)


# ---------------------------------------------------------------- engine helpers
def make(engine_cls, *, tick=1, lot=10, min_size=10, maker=0, taker=0, band=0, fund=True, **caps):
    e = engine_cls(**caps)
    e.add_asset(BASE, "BTC", 8)
    e.add_asset(QUOTE, "USD", 2)
    e.add_market(MKT, BASE, QUOTE, tick_size=tick, lot_size=lot, min_size=min_size,
                 maker_bps=maker, taker_bps=taker, band_bps=band)
    if fund:
        for acct in (A, B, C):
            e.deposit(acct, BASE, FUND_BASE)
            e.deposit(acct, QUOTE, FUND_QUOTE)
    return e


def frozen(e):
    """The state without the counters that every command moves (cmd_seq, event_seq, now)."""
    return canonical_state(e)[:-1] + (e.last_order_id, e.open_orders)


def cmd_fields(kind, **fields) -> dict:
    rec = np.zeros((), dtype=COMMAND_DTYPE)
    rec["kind"] = kind
    for k, v in fields.items():
        rec[k] = v
    return {n: int(rec[n]) for n in COMMAND_DTYPE.names}


def reject(e, code, kind, **fields):
    """Submit one command, expect exactly Rejected(code) copying the command, state unchanged."""
    before = frozen(e)
    seq = e.cmd_seq
    out = e.submit(kind, **fields)
    c = cmd_fields(kind, **fields)
    assert_events(out, [E(Ev.REJECTED, code=code, flags=int(kind), account=c["account"], market=c["market"],
                          venue=c["venue"], side=c["side"], price=c["price"], qty=c["qty"],
                          client_id=c["id"])])
    assert int(out[0]["cmd_seq"]) == seq + 1 == e.cmd_seq
    assert frozen(e) == before


def place_fields(**over) -> dict:
    d = dict(account=A, market=MKT, side=BUY, price=100, qty=10, id=1, tif=int(Tif.GTC),
             ord_type=int(OrdType.LIMIT), stp=0, flags=0, aux=0, venue=0)
    d.update(over)
    return d


def reject_place(e, code, **over):
    reject(e, code, Cmd.PLACE, **place_fields(**over))


def fpl(price, taker):
    return -((-price * max(taker, 0)) // 10000)


def check_invariants(e, net: dict | None = None):
    """held == sum of the open orders' holds; conservation per asset if net deposits given."""
    markets = {m.market_id: m for m in e.markets()}
    expect_held: dict[tuple[int, int], int] = {}
    for m in markets.values():
        for o in e.l3(m.market_id):
            if o.side == BUY:
                key, hold = (o.account, m.quote), (o.remaining // m.lot_size) * (o.price + fpl(o.price, m.taker_bps))
            else:
                key, hold = (o.account, m.base), o.remaining
            expect_held[key] = expect_held.get(key, 0) + hold
            assert o.remaining > 0 and o.remaining % m.lot_size == 0
            assert o.qty >= o.filled + o.remaining
    totals: dict[int, int] = {}
    for acct in e.accounts():
        for asset, (free, held) in e.balances(acct).items():
            assert free >= 0 and held >= 0
            assert held == expect_held.get((acct, asset), 0), (acct, asset)
            totals[asset] = totals.get(asset, 0) + free + held
    assert sum(expect_held.values()) == sum(
        h for acct in e.accounts() for (_, h) in e.balances(acct).values())
    if net is not None:
        for a in e.assets():
            assert totals.get(a.asset_id, 0) + e.fees(a.asset_id) == net.get(a.asset_id, 0)


NET_FUNDED = {BASE: 3 * FUND_BASE, QUOTE: 3 * FUND_QUOTE}


# ================================================================ envelope, admin
def test_event_envelope_seq_cmd_seq_ts(engine_cls):
    e = engine_cls()
    out = e.add_asset(BASE, "BTC", 8, ts=50)
    assert [int(x) for x in out["seq"]] == [1]
    assert int(out[0]["cmd_seq"]) == 1 and int(out[0]["durable_seq"]) == 0 and int(out[0]["ts"]) == 50
    out = e.add_asset(BASE, "BTC", 8, ts=40)  # rejected, clock does not go back
    assert int(out[0]["seq"]) == 2 and int(out[0]["cmd_seq"]) == 2 and int(out[0]["ts"]) == 50
    assert e.now == 50 and e.cmd_seq == 2 and e.event_seq == 2
    out = e.submit(99, ts=70)
    assert_events(out, [E(Ev.REJECTED, code=RC.UNKNOWN_COMMAND, flags=99)])  # flags: the refused command's kind
    assert int(out[0]["ts"]) == 70 and e.now == 70 and e.cmd_seq == 3
    for attr in ("cmd_seq", "event_seq", "last_order_id", "now", "open_orders"):
        assert type(getattr(e, attr)) is int


def test_batch_equals_one_by_one(engine_cls):
    cmds = np.zeros(6, dtype=COMMAND_DTYPE)
    lo, hi = pack_symbol("BTC")
    cmds[0] = (Cmd.ADD_ASSET, 0, 0, 0, 0, 0, 0, BASE, 1, 0, 8, 0, lo, hi)
    lo, hi = pack_symbol("USD")
    cmds[1] = (Cmd.ADD_ASSET, 0, 0, 0, 0, 0, 0, QUOTE, 2, 0, 2, 0, lo, hi)
    cmds[2] = (Cmd.ADD_MARKET, 0, 0, 0, 0, 0, 0, MKT, 3, pack_market_assets(BASE, QUOTE), 1, 10, 10,
               pack_market_params(0, 5, 0))
    cmds[3] = (Cmd.DEPOSIT, 0, 0, 0, 0, 0, 0, BASE, 4, A, 0, 100, 0, 0)
    cmds[4] = (Cmd.DEPOSIT, 0, 0, 0, 0, 0, 0, QUOTE, 5, B, 0, 10_000, 0, 0)
    cmds[5] = (Cmd.PLACE, SELL, 0, 0, 0, 0, 0, MKT, 6, A, 100, 50, 7, 0)
    e1, e2 = engine_cls(), engine_cls()
    batch = e1.process(cmds)
    singles = np.concatenate([e2.process(cmds[i:i + 1]) for i in range(len(cmds))])
    assert batch.dtype == EVENT_DTYPE
    assert batch.tolist() == singles.tolist()
    assert [int(x) for x in batch["seq"]] == list(range(1, len(batch) + 1))
    assert [int(x) for x in batch["cmd_seq"]] == [1, 2, 3, 4, 5, 6, 6]
    assert state_hash(e1) == state_hash(e2)
    assert len(e1.process(np.zeros(0, dtype=COMMAND_DTYPE))) == 0


def test_add_asset_and_rejections(engine_cls):
    e = engine_cls(max_assets=8)
    lo3, hi3 = pack_symbol("ETH")
    assert_events(e.add_asset(3, "ETH", 18), [E(Ev.ACCEPTED, market=3, price=18, client_id=lo3, remaining=hi3, flags=EvFlag.ASSET_LISTING)])
    assert e.assets() == [AssetView(3, "ETH", 18)]
    lo, hi = pack_symbol("X")
    reject(e, RC.INVALID_ASSET_ID, Cmd.ADD_ASSET, market=0, price=2, id=lo, aux=hi)
    reject(e, RC.INVALID_ASSET_ID, Cmd.ADD_ASSET, market=9, price=2, id=lo, aux=hi)
    reject(e, RC.ASSET_EXISTS, Cmd.ADD_ASSET, market=3, price=99, id=lo, aux=hi)  # exists before decimals
    reject(e, RC.INVALID_DECIMALS, Cmd.ADD_ASSET, market=4, price=19, id=lo, aux=hi)
    reject(e, RC.INVALID_DECIMALS, Cmd.ADD_ASSET, market=4, price=-1, id=lo, aux=hi)
    lo8, hi8 = pack_symbol("ABCDEFGHIJKLMNOP")
    assert_events(e.add_asset(8, "ABCDEFGHIJKLMNOP", 0), [E(Ev.ACCEPTED, market=8, client_id=lo8, remaining=hi8, flags=EvFlag.ASSET_LISTING)])
    assert e.assets() == [AssetView(3, "ETH", 18), AssetView(8, "ABCDEFGHIJKLMNOP", 0)]
    assert e.fees(3) == 0 and e.fees(5) == 0


def test_add_market_and_rejections(engine_cls):
    e = engine_cls(max_markets=16)
    e.add_asset(BASE, "BTC", 8)
    e.add_asset(QUOTE, "USD", 2)
    out = e.add_market(5, BASE, QUOTE, tick_size=5, lot_size=10, min_size=30, maker_bps=-2,
                       taker_bps=7, band_bps=500)
    assert_events(out, [E(Ev.ACCEPTED, market=5, account=pack_market_assets(BASE, QUOTE), price=5, qty=10,
                          client_id=30, remaining=pack_market_params(-2, 7, 500), flags=EvFlag.MARKET_LISTING)])
    assert e.markets() == [MarketView(5, 0, int(MarketKind.SPOT), BASE, QUOTE, 5, 10, 30, -2, 7, 500)]
    assert e.best_bid(5) == 0 and e.best_ask(5) == 0 and e.last_price(5) == 0
    assert e.l2(5) == ([], []) and e.l3(5) == []

    def bad(code, market_id=6, base=BASE, quote=QUOTE, tick=1, lot=10, min_size=10, maker=0,
            taker=0, band=0, kind=0, venue=0):
        reject(e, code, Cmd.ADD_MARKET, market=market_id, venue=venue, side=kind,
               account=pack_market_assets(base, quote), price=tick, qty=lot, id=min_size,
               aux=pack_market_params(maker, taker, band))

    bad(RC.INVALID_MARKET_ID, market_id=0)
    bad(RC.INVALID_MARKET_ID, market_id=17, venue=3)
    bad(RC.MARKET_EXISTS, market_id=5, tick=0)
    bad(RC.UNKNOWN_VENUE, venue=1, kind=9)
    bad(RC.INVALID_MARKET_KIND, kind=3, base=9)
    bad(RC.UNKNOWN_ASSET, base=9)
    bad(RC.UNKNOWN_ASSET, quote=9, tick=0)
    bad(RC.UNKNOWN_ASSET, base=9, quote=9)
    bad(RC.SAME_BASE_AND_QUOTE, quote=BASE, tick=0)
    bad(RC.INVALID_TICK_SIZE, tick=0, lot=0)
    bad(RC.INVALID_TICK_SIZE, tick=-5)
    bad(RC.INVALID_LOT_SIZE, lot=0, min_size=0)
    bad(RC.INVALID_LOT_SIZE, lot=-10)
    bad(RC.INVALID_MIN_SIZE, min_size=0, maker=5000)
    bad(RC.INVALID_MIN_SIZE, min_size=15)
    bad(RC.INVALID_MIN_SIZE, min_size=-10)
    bad(RC.INVALID_FEES, maker=5, taker=4, band=20000)
    bad(RC.INVALID_FEES, taker=1001)
    bad(RC.INVALID_FEES, maker=-1001, taker=1001)
    bad(RC.INVALID_FEES, maker=-5, taker=4)
    bad(RC.INVALID_PRICE_BAND, band=10001)
    # boundaries that are fine
    assert_events(e.add_market(6, QUOTE, BASE, tick_size=1, lot_size=1, min_size=1, maker_bps=-1000,
                               taker_bps=1000, band_bps=10000),
                  [E(Ev.ACCEPTED, market=6, account=pack_market_assets(QUOTE, BASE), price=1, qty=1,
                     client_id=1, remaining=pack_market_params(-1000, 1000, 10000), flags=EvFlag.MARKET_LISTING)])
    assert_events(e.add_market(16, BASE, QUOTE, tick_size=1, lot_size=1, min_size=1, maker_bps=3,
                               taker_bps=3, kind=MarketKind.PERPETUAL),
                  [E(Ev.ACCEPTED, market=16, side=MarketKind.PERPETUAL, account=pack_market_assets(BASE, QUOTE),
                     price=1, qty=1, client_id=1, remaining=pack_market_params(3, 3, 0), flags=EvFlag.MARKET_LISTING)])
    assert [m.market_id for m in e.markets()] == [5, 6, 16]


# ================================================================ deposit / withdraw
def test_deposit_withdraw_events_and_balances(engine_cls):
    e = make(engine_cls, fund=False)
    assert e.accounts() == []
    assert_events(e.deposit(B, QUOTE, 500), [balance_ev(B, QUOTE, 500, 500, 0)])
    assert_events(e.deposit(A, QUOTE, 7), [balance_ev(A, QUOTE, 7, 7, 0)])
    assert_events(e.deposit(B, QUOTE, 20), [balance_ev(B, QUOTE, 20, 520, 0)])
    assert e.accounts() == [A, B]
    assert_events(e.withdraw(B, QUOTE, 120), [balance_ev(B, QUOTE, -120, 400, 0)])
    assert e.balance(B, QUOTE) == (400, 0)
    assert e.balances(B) == {QUOTE: (400, 0)}
    assert_events(e.withdraw(B, QUOTE, 400), [balance_ev(B, QUOTE, -400, 0, 0)])
    assert e.balances(B) == {QUOTE: (0, 0)}  # touched assets stay listed at (0, 0)
    assert e.balance(B, BASE) == (0, 0) and e.balance(999, QUOTE) == (0, 0) and e.balances(999) == {}
    # held shows in the Balance event's taker_fee
    e.place(A, MKT, BUY, 1, 10, 1)  # holds 1
    assert_events(e.deposit(A, QUOTE, 3), [balance_ev(A, QUOTE, 3, 9, 1)])
    assert all(type(x) is int for x in e.balance(A, QUOTE))


def test_deposit_rejections(engine_cls):
    e = make(engine_cls, fund=False, max_accounts=2)
    reject(e, RC.INVALID_ACCOUNT_ID, Cmd.DEPOSIT, account=0, market=99, qty=0)
    reject(e, RC.INVALID_ACCOUNT_ID, Cmd.DEPOSIT, account=-4, market=BASE, qty=5)
    reject(e, RC.UNKNOWN_ASSET, Cmd.DEPOSIT, account=A, market=99, qty=0)
    reject(e, RC.UNKNOWN_ASSET, Cmd.DEPOSIT, account=A, market=0, qty=5)
    reject(e, RC.AMOUNT_NOT_POSITIVE, Cmd.DEPOSIT, account=A, market=BASE, qty=0)
    reject(e, RC.AMOUNT_NOT_POSITIVE, Cmd.DEPOSIT, account=A, market=BASE, qty=-3)
    reject(e, RC.BALANCE_OVERFLOW, Cmd.DEPOSIT, account=A, market=BASE, qty=MAX_MONEY + 1)
    e.deposit(A, BASE, MAX_MONEY - 10)
    reject(e, RC.BALANCE_OVERFLOW, Cmd.DEPOSIT, account=B, market=BASE, qty=11)  # outstanding total
    assert_events(e.deposit(B, BASE, 10), [balance_ev(B, BASE, 10, 10, 0)])
    reject(e, RC.BALANCE_OVERFLOW, Cmd.DEPOSIT, account=C, market=BASE, qty=1)  # before capacity
    reject(e, RC.ACCOUNT_CAPACITY, Cmd.DEPOSIT, account=C, market=QUOTE, qty=1)
    e.withdraw(A, BASE, 5)  # room again
    assert_events(e.deposit(B, BASE, 5), [balance_ev(B, BASE, 5, 15, 0)])
    assert_events(e.deposit(A, QUOTE, 1), [balance_ev(A, QUOTE, 1, 1, 0)])  # existing account: fine
    assert e.accounts() == [A, B]


def test_withdraw_rejections(engine_cls):
    e = make(engine_cls)
    reject(e, RC.INVALID_ACCOUNT_ID, Cmd.WITHDRAW, account=0, market=99, qty=-1)
    reject(e, RC.UNKNOWN_ACCOUNT, Cmd.WITHDRAW, account=77, market=99, qty=-1)
    reject(e, RC.UNKNOWN_ASSET, Cmd.WITHDRAW, account=A, market=99, qty=-1)
    reject(e, RC.AMOUNT_NOT_POSITIVE, Cmd.WITHDRAW, account=A, market=BASE, qty=0)
    reject(e, RC.INSUFFICIENT_FREE_BALANCE, Cmd.WITHDRAW, account=A, market=BASE, qty=FUND_BASE + 1)
    e.add_asset(OTHER, "ETH", 18)
    reject(e, RC.INSUFFICIENT_FREE_BALANCE, Cmd.WITHDRAW, account=A, market=OTHER, qty=1)
    e.place(A, MKT, SELL, 100, 30_000, 1)  # 30_000 base held
    reject(e, RC.INSUFFICIENT_FREE_BALANCE, Cmd.WITHDRAW, account=A, market=BASE, qty=70_001)
    assert_events(e.withdraw(A, BASE, 70_000), [balance_ev(A, BASE, -70_000, 0, 30_000)])
    check_invariants(e, {BASE: 3 * FUND_BASE - 70_000, QUOTE: 3 * FUND_QUOTE})


# ================================================================ place: validation
def test_place_validation_codes(engine_cls):
    e = make(engine_cls, tick=5, lot=10, min_size=20)
    e.add_asset(OTHER, "ETH", 18)
    e.add_market(MKT2, OTHER, QUOTE, tick_size=1, lot_size=1, min_size=1, kind=MarketKind.OUTCOME)
    e.deposit(44, OTHER, 5)  # an account with no quote / base of MKT
    ok = dict(price=100, qty=20)
    reject_place(e, RC.INVALID_SIDE, side=2, ord_type=9, market=99)
    reject_place(e, RC.INVALID_ORDER_TYPE, ord_type=2, tif=9)
    reject_place(e, RC.INVALID_TIF, tif=3, stp=9, **ok)
    reject_place(e, RC.INVALID_TIF, ord_type=int(OrdType.MARKET), tif=int(Tif.GTC), **ok)
    reject_place(e, RC.INVALID_STP, stp=4, flags=8, **ok)
    reject_place(e, RC.INVALID_FLAGS, flags=int(CmdFlag.BY_CLIENT_ID), market=99, **ok)
    reject_place(e, RC.INVALID_FLAGS, flags=int(CmdFlag.POST_ONLY) | int(CmdFlag.ALL_MARKETS), **ok)
    reject_place(e, RC.INVALID_FLAGS, flags=int(CmdFlag.POST_ONLY), tif=int(Tif.IOC), **ok)
    reject_place(e, RC.INVALID_FLAGS, flags=int(CmdFlag.POST_ONLY), tif=int(Tif.FOK), **ok)
    reject_place(e, RC.INVALID_FLAGS, flags=int(CmdFlag.POST_ONLY), ord_type=int(OrdType.MARKET),
                 tif=int(Tif.IOC), **ok)
    reject_place(e, RC.UNKNOWN_MARKET, market=99, venue=3, **ok)
    reject_place(e, RC.UNKNOWN_MARKET, market=0, **ok)
    reject_place(e, RC.OUTCOME_NOT_CONFIGURED, market=MKT2, venue=3, **ok)  # no OutcomeConfig yet
    reject_place(e, RC.UNKNOWN_VENUE, venue=1, account=0, **ok)
    reject_place(e, RC.INVALID_ACCOUNT_ID, account=0, id=0, **ok)
    reject_place(e, RC.INVALID_ACCOUNT_ID, account=-1, **ok)
    reject_place(e, RC.UNKNOWN_ACCOUNT, account=999, id=0, **ok)
    reject_place(e, RC.INVALID_CLIENT_ID, id=0, price=0, qty=20)
    reject_place(e, RC.INVALID_CLIENT_ID, id=-7, **ok)
    reject_place(e, RC.PRICE_NOT_POSITIVE, price=0, qty=0)
    reject_place(e, RC.PRICE_NOT_POSITIVE, price=-5, qty=20)
    reject_place(e, RC.PRICE_OFF_TICK, price=102, qty=0)
    reject_place(e, RC.QTY_NOT_POSITIVE, price=100, qty=0)
    reject_place(e, RC.QTY_NOT_POSITIVE, price=100, qty=-20)
    reject_place(e, RC.QTY_OFF_LOT, price=100, qty=25)
    reject_place(e, RC.QTY_BELOW_MIN, price=100, qty=10)
    reject_place(e, RC.INVALID_EXPIRY, aux=-1, **ok)
    reject_place(e, RC.INVALID_EXPIRY, aux=5, tif=int(Tif.IOC), **ok)
    reject_place(e, RC.INVALID_EXPIRY, aux=5, tif=int(Tif.FOK), ord_type=int(OrdType.MARKET), **ok)
    reject_place(e, RC.INSUFFICIENT_BALANCE, account=44, **ok)  # no quote entry at all
    reject_place(e, RC.INSUFFICIENT_BALANCE, account=44, side=SELL, **ok)
    assert e.balances(44) == {OTHER: (5, 0)}  # a rejected order creates no balance entries
    reject_place(e, RC.INSUFFICIENT_BALANCE, side=SELL, qty=FUND_BASE + 10, price=100)
    # market orders take the same price checks on the protection price
    reject_place(e, RC.PRICE_NOT_POSITIVE, ord_type=int(OrdType.MARKET), tif=int(Tif.IOC), price=0, qty=20)
    reject_place(e, RC.PRICE_OFF_TICK, ord_type=int(OrdType.MARKET), tif=int(Tif.IOC), price=3, qty=20)
    assert e.last_order_id == 0 and e.open_orders == 0


def test_place_expiry_checks(engine_cls):
    e = make(engine_cls)
    e.deposit(A, QUOTE, 1, ts=1000)
    assert e.now == 1000
    reject_place(e, RC.EXPIRED_ON_ARRIVAL, aux=1000)
    reject_place(e, RC.EXPIRED_ON_ARRIVAL, aux=999)
    reject_place(e, RC.EXPIRED_ON_ARRIVAL, aux=1500, ts=1500)  # ts moves now first
    assert e.now == 1500
    out = e.place(A, MKT, BUY, 100, 10, 1, expire_at=1501)
    assert_events(out, [accepted(1, A, 1, BUY, 100, 10), level(BUY, 100, 10, 1)])
    assert e.order(1).expire_at == 1501


def test_place_qty_and_price_bounds(engine_cls):
    e = make(engine_cls, lot=1, min_size=1, taker=10)
    e.deposit(B, QUOTE, MAX_MONEY - 3 * FUND_QUOTE)
    reject_place(e, RC.QTY_TOO_LARGE, qty=MAX_MONEY + 1, price=1)  # qty bound before hold bound
    reject_place(e, RC.QTY_TOO_LARGE, qty=MAX_MONEY + 1, price=1, aux=-1)
    # hold = lots x (price + ceil(price x 10 / 10000)): price 1 -> fpl 1, so 2^61 lots hold 2^62
    reject_place(e, RC.INSUFFICIENT_BALANCE, qty=1 << 61, price=1)  # the bound is fine, the balance not
    reject_place(e, RC.PRICE_TOO_LARGE, qty=(1 << 61) + 1, price=1, aux=-1)
    reject_place(e, RC.PRICE_TOO_LARGE, qty=1, price=MAX_MONEY)  # fpl makes it exceed
    reject_place(e, RC.PRICE_TOO_LARGE, qty=3, price=(1 << 61), side=SELL)  # buy formula for sells too
    p = (MAX_MONEY - 3 * FUND_QUOTE) // 1001 * 1000  # p + fpl = p x 1.001: all of B's free quote
    assert p + fpl(p, 10) <= e.balance(B, QUOTE)[0]
    out = e.place(B, MKT, BUY, p, 1, 1)
    assert_events(out, [accepted(1, B, 1, BUY, p, 1), level(BUY, p, 1, 1)])
    assert e.balance(B, QUOTE)[1] == p + fpl(p, 10)


def test_place_fee_free_hold_bound_exact(engine_cls):
    e = make(engine_cls, lot=1, min_size=1)
    reject_place(e, RC.PRICE_TOO_LARGE, qty=2, price=(1 << 61) + 1)
    reject_place(e, RC.INSUFFICIENT_BALANCE, qty=2, price=1 << 61)  # exactly MAX_MONEY is allowed


def test_duplicate_client_id(engine_cls):
    e = make(engine_cls)
    e.place(A, MKT, BUY, 100, 10, 5)
    reject_place(e, RC.DUPLICATE_CLIENT_ID, id=5, price=90)
    # another account may use it
    assert_events(e.place(B, MKT, BUY, 99, 10, 5), [accepted(2, B, 5, BUY, 99, 10), level(BUY, 99, 10, 1)])
    # an order that never rested (IOC) does not hold the id
    out = e.place(A, MKT, BUY, 90, 10, 6, tif=Tif.IOC)
    assert_events(out, [accepted(3, A, 6, BUY, 90, 10), cancelled(3, A, 6, BUY, 90, 10, 0, CR.IOC, RC.IOC_NOT_FILLED)])
    assert_events(e.place(A, MKT, BUY, 90, 10, 6), [accepted(4, A, 6, BUY, 90, 10), level(BUY, 90, 10, 1)])
    e.cancel(A, order_id=1)
    assert_events(e.place(A, MKT, SELL, 200, 10, 5), [accepted(5, A, 5, SELL, 200, 10), level(SELL, 200, 10, 1)])


def test_price_band(engine_cls):
    e = make(engine_cls, band=1000)  # 10 %
    # no trade yet: no band
    e.place(A, MKT, SELL, 100, 10, 1)
    e.place(B, MKT, BUY, 100, 10, 1)
    assert e.last_price(MKT) == 100
    reject_place(e, RC.PRICE_OUTSIDE_BAND, price=111, account=C)
    reject_place(e, RC.PRICE_OUTSIDE_BAND, price=89, account=C, side=SELL)
    reject_place(e, RC.PRICE_OUTSIDE_BAND, price=111, account=C, ord_type=int(OrdType.MARKET), tif=int(Tif.IOC))
    assert e.place(C, MKT, BUY, 110, 10, 1)[0]["kind"] == Ev.ACCEPTED
    assert e.place(C, MKT, SELL, 190, 10, 2)[0]["code"] == RC.PRICE_OUTSIDE_BAND
    out = e.place(B, MKT, SELL, 90, 10, 3)
    assert int(out[1]["kind"]) == Ev.FILL and int(out[1]["price"]) == 110
    assert e.last_price(MKT) == 110
    assert e.place(C, MKT, SELL, 121, 10, 4)[0]["kind"] == Ev.ACCEPTED  # band now around 110
    reject_place(e, RC.PRICE_OUTSIDE_BAND, price=122, account=C, id=9, side=SELL)


def test_band_check_after_duplicate_and_before_balance(engine_cls):
    e = make(engine_cls, band=100)
    e.place(A, MKT, SELL, 100, 10, 1)
    e.place(B, MKT, BUY, 100, 10, 1)
    e.place(C, MKT, BUY, 100, 10, 1)
    reject_place(e, RC.DUPLICATE_CLIENT_ID, account=C, id=1, price=500)
    reject_place(e, RC.PRICE_OUTSIDE_BAND, account=C, id=2, price=500, qty=10 * FUND_QUOTE)
    reject_place(e, RC.INSUFFICIENT_BALANCE, account=C, id=2, price=100, qty=10 * FUND_QUOTE)


def test_insufficient_balance_exact_hold(engine_cls):
    e = make(engine_cls, fund=False, lot=10, min_size=10, taker=25)
    # price 1001 per lot, fpl = ceil(1001 x 25 / 10000) = 3; 4 lots hold 4 x 1004 = 4016
    e.deposit(A, QUOTE, 4015)
    e.deposit(B, BASE, 39)
    reject_place(e, RC.INSUFFICIENT_BALANCE, price=1001, qty=40)
    reject_place(e, RC.INSUFFICIENT_BALANCE, account=B, side=SELL, price=1001, qty=40)
    e.deposit(A, QUOTE, 1)
    assert e.place(A, MKT, BUY, 1001, 40, 1)[0]["kind"] == Ev.ACCEPTED
    assert e.balance(A, QUOTE) == (0, 4016)
    assert e.balances(A) == {BASE: (0, 0), QUOTE: (0, 4016)}  # acceptance created the base entry
    e.deposit(B, BASE, 1)
    assert e.place(B, MKT, SELL, 2000, 40, 1)[0]["kind"] == Ev.ACCEPTED
    assert e.balance(B, BASE) == (0, 40)
    check_invariants(e, {QUOTE: 4016, BASE: 40})


def test_order_capacity(engine_cls):
    e = make(engine_cls, max_orders=2)
    e.place(A, MKT, BUY, 100, 10, 1)
    e.place(A, MKT, BUY, 99, 10, 2)
    reject_place(e, RC.ORDER_CAPACITY, price=98, id=3)
    # an order that would not rest still needs a free slot
    reject_place(e, RC.ORDER_CAPACITY, account=B, side=SELL, price=100, id=1, tif=int(Tif.IOC))
    e.cancel(A, order_id=2)
    assert e.place(A, MKT, BUY, 98, 10, 3)[0]["kind"] == Ev.ACCEPTED
    assert e.open_orders == 2 and e.last_order_id == 3


# ================================================================ matching
def test_rest_and_queries(engine_cls):
    e = make(engine_cls)
    assert_events(e.place(A, MKT, BUY, 100, 30, 1), [accepted(1, A, 1, BUY, 100, 30), level(BUY, 100, 30, 1)])
    assert_events(e.place(B, MKT, BUY, 100, 20, 1), [accepted(2, B, 1, BUY, 100, 20), level(BUY, 100, 50, 2)])
    e.place(C, MKT, BUY, 99, 10, 1)
    e.place(A, MKT, SELL, 105, 10, 2)
    e.place(B, MKT, SELL, 103, 40, 2)
    assert e.best_bid(MKT) == 100 and e.best_ask(MKT) == 103
    assert e.l2(MKT) == ([(100, 50, 2), (99, 10, 1)], [(103, 40, 1), (105, 10, 1)])
    assert e.l2(MKT, depth=1) == ([(100, 50, 2)], [(103, 40, 1)])
    assert [o.order_id for o in e.l3(MKT)] == [1, 2, 3, 5, 4]
    assert e.order(2) == OrderView(2, B, 1, MKT, 0, BUY, 100, 20, 0, 20, 0, int(Stp.CANCEL_TAKER), False)
    assert e.order(99) is None
    assert e.open_orders == 5
    assert e.balance(A, QUOTE) == (FUND_QUOTE - 300, 300)
    assert e.balance(A, BASE) == (FUND_BASE - 10, 10)
    assert e.last_price(MKT) == 0
    assert all(type(x) is int for o in e.l3(MKT) for x in o[:-1])
    check_invariants(e, NET_FUNDED)


def test_price_time_priority_and_partial_fills(engine_cls):
    e = make(engine_cls)
    e.place(B, MKT, SELL, 101, 20, 1)  # 1
    e.place(C, MKT, SELL, 100, 20, 1)  # 2
    e.place(B, MKT, SELL, 100, 30, 2)  # 3
    out = e.place(A, MKT, BUY, 101, 60, 1)  # 4
    assert_events(out, [
        accepted(4, A, 1, BUY, 101, 60),
        fill(4, A, BUY, 2, C, 100, 20, 40, flags=DONE_M),
        fill(4, A, BUY, 3, B, 100, 30, 10, flags=DONE_M),
        fill(4, A, BUY, 1, B, 101, 10, 0, flags=DONE_T),
        level(SELL, 100, 0, 0),
        level(SELL, 101, 10, 1),
    ])
    assert e.order(1) == OrderView(1, B, 1, MKT, 0, SELL, 101, 20, 10, 10, 0, 0, False)
    assert e.order(2) is None and e.order(4) is None
    assert e.last_price(MKT) == 101
    assert e.balance(A, QUOTE) == (FUND_QUOTE - 5 * 100 - 101, 0)
    assert e.balance(B, BASE) == (FUND_BASE - 50, 10)
    check_invariants(e, NET_FUNDED)


def test_fill_settlement_exact(engine_cls):
    e = make(engine_cls)
    e.place(B, MKT, SELL, 100, 20, 1)  # 1
    e.place(C, MKT, SELL, 102, 30, 1)  # 2
    out = e.place(A, MKT, BUY, 105, 60, 1)  # 3: 2 lots at 100, 3 lots at 102, 1 lot rests at 105
    assert_events(out, [
        accepted(3, A, 1, BUY, 105, 60),
        fill(3, A, BUY, 1, B, 100, 20, 40, flags=DONE_M),
        fill(3, A, BUY, 2, C, 102, 30, 10, flags=DONE_M),
        level(SELL, 100, 0, 0),
        level(SELL, 102, 0, 0),
        level(BUY, 105, 10, 1),
    ])
    spent = 2 * 100 + 3 * 102
    assert e.balance(A, QUOTE) == (FUND_QUOTE - spent - 105, 105)
    assert e.balance(A, BASE) == (FUND_BASE + 50, 0)
    assert e.balance(B, QUOTE) == (FUND_QUOTE + 200, 0)
    assert e.balance(B, BASE) == (FUND_BASE - 20, 0)
    assert e.balance(C, QUOTE) == (FUND_QUOTE + 306, 0)
    assert e.balance(C, BASE) == (FUND_BASE - 30, 0)
    assert e.order(3) == OrderView(3, A, 1, MKT, 0, BUY, 105, 60, 50, 10, 0, 0, False)
    assert e.fees(QUOTE) == 0
    check_invariants(e, NET_FUNDED)


def test_sell_taker_sweeps_bids(engine_cls):
    e = make(engine_cls)
    e.place(A, MKT, BUY, 98, 10, 1)
    e.place(B, MKT, BUY, 99, 10, 1)
    out = e.place(C, MKT, SELL, 98, 30, 1)
    assert_events(out, [
        accepted(3, C, 1, SELL, 98, 30),
        fill(3, C, SELL, 2, B, 99, 10, 20, flags=DONE_M),
        fill(3, C, SELL, 1, A, 98, 10, 10, flags=DONE_M),
        level(BUY, 99, 0, 0),
        level(BUY, 98, 0, 0),
        level(SELL, 98, 10, 1),
    ])
    assert e.balance(C, QUOTE) == (FUND_QUOTE + 99 + 98, 0)
    assert e.balance(C, BASE) == (FUND_BASE - 30, 10)
    assert e.best_ask(MKT) == 98 and e.best_bid(MKT) == 0
    check_invariants(e, NET_FUNDED)


def test_fees_rebate_and_rounding(engine_cls):
    # taker 7 bps, maker -3 bps (rebate); fpl for a buy at 12345 = ceil(12345 x 7 / 10000) = 9
    e = make(engine_cls, lot=10, min_size=10, maker=-3, taker=7)
    e.place(B, MKT, SELL, 12345, 10, 1)
    e.place(B, MKT, SELL, 12346, 20, 2)
    out = e.place(A, MKT, BUY, 12346, 30, 1)
    # fill 1: notional 12345: taker ceil(8.6415) = 9, maker ceil(-3.7035) = -3
    # fill 2: notional 24692: taker ceil(17.2844) = 18, maker ceil(-7.4076) = -7
    assert_events(out, [
        accepted(3, A, 1, BUY, 12346, 30),
        fill(3, A, BUY, 1, B, 12345, 10, 20, mfee=-3, tfee=9, flags=DONE_M),
        fill(3, A, BUY, 2, B, 12346, 20, 0, mfee=-7, tfee=18, flags=DONE_M | DONE_T),
        level(SELL, 12345, 0, 0),
        level(SELL, 12346, 0, 0),
    ])
    assert e.balance(A, QUOTE) == (FUND_QUOTE - 12345 - 9 - 24692 - 18, 0)
    assert e.balance(B, QUOTE) == (FUND_QUOTE + 12345 + 3 + 24692 + 7, 0)
    assert e.fees(QUOTE) == 9 - 3 + 18 - 7
    assert e.fees(BASE) == 0
    check_invariants(e, NET_FUNDED)


def test_fee_rounds_up_to_exchange_on_tiny_notional(engine_cls):
    e = make(engine_cls, lot=1, min_size=1, maker=-1, taker=1)
    e.place(A, MKT, BUY, 3, 1, 1)  # hold 1 x (3 + ceil(3/10000) = 1) = 4
    assert e.balance(A, QUOTE) == (FUND_QUOTE - 4, 4)
    out = e.place(B, MKT, SELL, 3, 1, 1)
    # seller is taker: fee ceil(3 x 1 / 10000) = 1; maker rebate ceil(-0.0003) = 0
    assert_events(out, [accepted(2, B, 1, SELL, 3, 1), fill(2, B, SELL, 1, A, 3, 1, 0, mfee=0, tfee=1, flags=DONE_M | DONE_T),
                        level(BUY, 3, 0, 0)])
    assert e.balance(A, QUOTE) == (FUND_QUOTE - 3, 0)  # maker buyer pays notional + 0, the fpl comes back
    assert e.balance(B, QUOTE) == (FUND_QUOTE + 2, 0)
    assert e.fees(QUOTE) == 1
    check_invariants(e, NET_FUNDED)


def test_buy_maker_hold_release_with_fees(engine_cls):
    e = make(engine_cls, maker=2, taker=30)
    e.place(A, MKT, BUY, 1000, 50, 1)  # fpl = 3: hold 5 x 1003
    assert e.balance(A, QUOTE) == (FUND_QUOTE - 5015, 5015)
    e.place(B, MKT, SELL, 990, 20, 1)  # fills 2 lots at 1000: notional 2000, maker fee 1 (0.4 up), taker 6
    assert e.balance(A, QUOTE) == (FUND_QUOTE - 2001 - 3009, 3009)
    assert e.balance(B, QUOTE) == (FUND_QUOTE + 2000 - 6, 0)
    assert e.fees(QUOTE) == 7
    e.cancel(A, order_id=1)
    assert e.balance(A, QUOTE) == (FUND_QUOTE - 2001, 0)
    check_invariants(e, NET_FUNDED)


def test_ioc_remainder_and_no_fill(engine_cls):
    e = make(engine_cls)
    e.place(B, MKT, SELL, 100, 10, 1)
    out = e.place(A, MKT, BUY, 100, 30, 1, tif=Tif.IOC)
    assert_events(out, [
        accepted(2, A, 1, BUY, 100, 30),
        fill(2, A, BUY, 1, B, 100, 10, 20, flags=DONE_M),
        cancelled(2, A, 1, BUY, 100, 20, 0, CR.IOC, RC.IOC_NOT_FILLED),
        level(SELL, 100, 0, 0),
    ])
    out = e.place(A, MKT, BUY, 100, 30, 2, tif=Tif.IOC)
    assert_events(out, [accepted(3, A, 2, BUY, 100, 30), cancelled(3, A, 2, BUY, 100, 30, 0, CR.IOC, RC.IOC_NOT_FILLED)])
    assert e.balance(A, QUOTE) == (FUND_QUOTE - 100, 0)
    assert e.open_orders == 0 and e.last_order_id == 3
    check_invariants(e, NET_FUNDED)


def test_fok_fillable_and_not(engine_cls):
    e = make(engine_cls)
    e.place(B, MKT, SELL, 100, 10, 1)
    e.place(C, MKT, SELL, 101, 20, 1)
    e.place(C, MKT, SELL, 103, 50, 2)
    before = frozen(e)
    out = e.place(A, MKT, BUY, 101, 40, 1, tif=Tif.FOK)  # only 30 up to 101
    assert_events(out, [accepted(4, A, 1, BUY, 101, 40), cancelled(4, A, 1, BUY, 101, 40, 0, CR.FOK, RC.FOK_NOT_FILLABLE)])
    assert frozen(e)[:-2] == before[:-2]  # nothing but the order id moved
    out = e.place(A, MKT, BUY, 101, 30, 2, tif=Tif.FOK)
    assert_events(out, [
        accepted(5, A, 2, BUY, 101, 30),
        fill(5, A, BUY, 1, B, 100, 10, 20, flags=DONE_M),
        fill(5, A, BUY, 2, C, 101, 20, 0, flags=DONE_M | DONE_T),
        level(SELL, 100, 0, 0),
        level(SELL, 101, 0, 0),
    ])
    check_invariants(e, NET_FUNDED)


def test_fok_walk_with_own_orders(engine_cls):
    e = make(engine_cls)
    e.place(B, MKT, SELL, 100, 10, 1)  # 1
    e.place(A, MKT, SELL, 100, 10, 1)  # 2 own
    e.place(C, MKT, SELL, 101, 10, 1)  # 3
    # the own order ends the walk (10 < 20) except under CANCEL_MAKER, which skips it
    for stp in (Stp.CANCEL_TAKER, Stp.CANCEL_BOTH, Stp.DECREMENT_BOTH):
        out = e.place(A, MKT, BUY, 101, 20, 10 + int(stp), tif=Tif.FOK, stp=stp)
        assert [int(x) for x in out["kind"]] == [Ev.ACCEPTED, Ev.CANCELLED]
        assert int(out[1]["reason"]) == CR.FOK and int(out[1]["code"]) == RC.FOK_NOT_FILLABLE
    oid = e.last_order_id + 1
    out = e.place(A, MKT, BUY, 101, 20, 20, tif=Tif.FOK, stp=Stp.CANCEL_MAKER)
    assert_events(out, [
        accepted(oid, A, 20, BUY, 101, 20),
        fill(oid, A, BUY, 1, B, 100, 10, 10, flags=DONE_M),
        cancelled(2, A, 1, SELL, 100, 10, 0, CR.STP, RC.SELF_TRADE_PREVENTED),
        fill(oid, A, BUY, 3, C, 101, 10, 0, flags=DONE_M | DONE_T),
        level(SELL, 100, 0, 0),
        level(SELL, 101, 0, 0),
    ])
    check_invariants(e, NET_FUNDED)


def test_fok_own_order_after_enough_liquidity(engine_cls):
    e = make(engine_cls)
    e.place(B, MKT, SELL, 100, 20, 1)
    e.place(A, MKT, SELL, 100, 10, 1)
    out = e.place(A, MKT, BUY, 100, 20, 2, tif=Tif.FOK)
    assert_events(out, [accepted(3, A, 2, BUY, 100, 20), fill(3, A, BUY, 1, B, 100, 20, 0, flags=DONE_M | DONE_T),
                        level(SELL, 100, 10, 1)])


def test_post_only(engine_cls):
    e = make(engine_cls)
    e.place(B, MKT, SELL, 101, 10, 1)
    e.place(B, MKT, BUY, 98, 10, 2)
    out = e.place(A, MKT, BUY, 101, 10, 1, post_only=True)  # equal to the best ask: crosses
    assert_events(out, [accepted(3, A, 1, BUY, 101, 10), cancelled(3, A, 1, BUY, 101, 10, 0, CR.POST_ONLY, RC.POST_ONLY_WOULD_CROSS)])
    out = e.place(A, MKT, SELL, 98, 10, 2, post_only=True)
    assert_events(out, [accepted(4, A, 2, SELL, 98, 10), cancelled(4, A, 2, SELL, 98, 10, 0, CR.POST_ONLY, RC.POST_ONLY_WOULD_CROSS)])
    out = e.place(A, MKT, BUY, 100, 10, 3, post_only=True)
    assert_events(out, [accepted(5, A, 3, BUY, 100, 10), level(BUY, 100, 10, 1)])
    assert e.order(5).post_only is True
    # post-only crossing only its own order is still a cross (the check is before STP)
    out = e.place(A, MKT, SELL, 100, 10, 4, post_only=True)
    assert [int(x) for x in out["reason"]] == [0, CR.POST_ONLY]
    assert e.balance(A, QUOTE) == (FUND_QUOTE - 100, 100)
    check_invariants(e, NET_FUNDED)


def test_market_order_with_protection_price(engine_cls):
    e = make(engine_cls, taker=10)
    e.place(B, MKT, SELL, 100, 10, 1)
    e.place(B, MKT, SELL, 105, 10, 2)
    e.place(B, MKT, SELL, 111, 10, 3)
    out = e.place(A, MKT, BUY, 110, 40, 1, ord_type=OrdType.MARKET, tif=Tif.IOC)
    assert_events(out, [
        accepted(4, A, 1, BUY, 110, 40),
        fill(4, A, BUY, 1, B, 100, 10, 30, tfee=1, flags=DONE_M),
        fill(4, A, BUY, 2, B, 105, 10, 20, tfee=1, flags=DONE_M),
        cancelled(4, A, 1, BUY, 110, 20, 0, CR.IOC, RC.IOC_NOT_FILLED),
        level(SELL, 100, 0, 0),
        level(SELL, 105, 0, 0),
    ])
    assert e.balance(A, QUOTE) == (FUND_QUOTE - 207, 0)
    out = e.place(A, MKT, BUY, 110, 10, 2, ord_type=OrdType.MARKET, tif=Tif.FOK)
    assert [int(x) for x in out["reason"]] == [0, CR.FOK]
    out = e.place(A, MKT, SELL, 1, 10, 3, ord_type=OrdType.MARKET, tif=Tif.IOC)  # nothing to hit
    assert_events(out, [accepted(6, A, 3, SELL, 1, 10), cancelled(6, A, 3, SELL, 1, 10, 0, CR.IOC, RC.IOC_NOT_FILLED)])
    check_invariants(e, NET_FUNDED)


# ================================================================ self-trade prevention
def stp_book(engine_cls):
    e = make(engine_cls)
    e.place(B, MKT, SELL, 100, 10, 1)  # 1
    e.place(A, MKT, SELL, 100, 20, 1)  # 2 own
    e.place(C, MKT, SELL, 100, 10, 1)  # 3
    return e


def test_stp_cancel_taker(engine_cls):
    e = stp_book(engine_cls)
    out = e.place(A, MKT, BUY, 100, 40, 2, stp=Stp.CANCEL_TAKER)
    assert_events(out, [
        accepted(4, A, 2, BUY, 100, 40),
        fill(4, A, BUY, 1, B, 100, 10, 30, flags=DONE_M),
        cancelled(4, A, 2, BUY, 100, 30, 0, CR.STP, RC.SELF_TRADE_PREVENTED),
        level(SELL, 100, 30, 2),
    ])
    assert [o.order_id for o in e.l3(MKT)] == [2, 3]
    assert e.balance(A, QUOTE) == (FUND_QUOTE - 100, 0)
    check_invariants(e, NET_FUNDED)


def test_stp_cancel_maker(engine_cls):
    e = stp_book(engine_cls)
    out = e.place(A, MKT, BUY, 100, 40, 2, stp=Stp.CANCEL_MAKER)
    assert_events(out, [
        accepted(4, A, 2, BUY, 100, 40),
        fill(4, A, BUY, 1, B, 100, 10, 30, flags=DONE_M),
        cancelled(2, A, 1, SELL, 100, 20, 0, CR.STP, RC.SELF_TRADE_PREVENTED),
        fill(4, A, BUY, 3, C, 100, 10, 20, flags=DONE_M),
        level(SELL, 100, 0, 0),
        level(BUY, 100, 20, 1),
    ])
    assert e.balance(A, BASE) == (FUND_BASE + 20, 0)
    check_invariants(e, NET_FUNDED)


def test_stp_cancel_both(engine_cls):
    e = stp_book(engine_cls)
    out = e.place(A, MKT, BUY, 100, 40, 2, stp=Stp.CANCEL_BOTH)
    assert_events(out, [
        accepted(4, A, 2, BUY, 100, 40),
        fill(4, A, BUY, 1, B, 100, 10, 30, flags=DONE_M),
        cancelled(2, A, 1, SELL, 100, 20, 0, CR.STP, RC.SELF_TRADE_PREVENTED),
        cancelled(4, A, 2, BUY, 100, 30, 0, CR.STP, RC.SELF_TRADE_PREVENTED),
        level(SELL, 100, 10, 1),
    ])
    assert [o.order_id for o in e.l3(MKT)] == [3]
    assert e.balance(A, BASE) == (FUND_BASE + 10, 0) and e.balance(A, QUOTE) == (FUND_QUOTE - 100, 0)
    check_invariants(e, NET_FUNDED)


def test_stp_decrement_both_taker_larger(engine_cls):
    e = stp_book(engine_cls)
    out = e.place(A, MKT, BUY, 100, 50, 2, stp=Stp.DECREMENT_BOTH)
    assert_events(out, [
        accepted(4, A, 2, BUY, 100, 50),
        fill(4, A, BUY, 1, B, 100, 10, 40, flags=DONE_M),
        cancelled(2, A, 1, SELL, 100, 20, 0, CR.STP, RC.SELF_TRADE_PREVENTED),
        cancelled(4, A, 2, BUY, 100, 20, 20, CR.STP, RC.SELF_TRADE_PREVENTED),
        fill(4, A, BUY, 3, C, 100, 10, 10, flags=DONE_M),
        level(SELL, 100, 0, 0),
        level(BUY, 100, 10, 1),
    ])
    # the decrement comes off qty too, so qty == filled + remaining always holds
    assert e.order(4) == OrderView(4, A, 2, MKT, 0, BUY, 100, 30, 20, 10, 0, int(Stp.DECREMENT_BOTH), False)
    assert e.balance(A, QUOTE) == (FUND_QUOTE - 200 - 100, 100)
    assert e.balance(A, BASE) == (FUND_BASE + 20, 0)
    assert e.last_price(MKT) == 100
    check_invariants(e, NET_FUNDED)


def test_stp_decrement_both_maker_larger(engine_cls):
    e = make(engine_cls)
    e.place(A, MKT, SELL, 100, 50, 1)  # 1 own
    e.place(B, MKT, SELL, 100, 10, 1)  # 2
    out = e.place(A, MKT, BUY, 100, 20, 2, stp=Stp.DECREMENT_BOTH)
    assert_events(out, [
        accepted(3, A, 2, BUY, 100, 20),
        cancelled(1, A, 1, SELL, 100, 20, 30, CR.STP, RC.SELF_TRADE_PREVENTED),
        cancelled(3, A, 2, BUY, 100, 20, 0, CR.STP, RC.SELF_TRADE_PREVENTED),
        level(SELL, 100, 40, 2),
    ])
    assert [o.order_id for o in e.l3(MKT)] == [1, 2]  # keeps its place
    assert e.order(1) == OrderView(1, A, 1, MKT, 0, SELL, 100, 30, 0, 30, 0, 0, False)
    assert e.balance(A, BASE) == (FUND_BASE - 30, 30)
    assert e.balance(A, QUOTE) == (FUND_QUOTE, 0)
    assert e.last_price(MKT) == 0  # no trade
    check_invariants(e, NET_FUNDED)


def test_stp_uses_taker_mode_not_maker(engine_cls):
    e = make(engine_cls)
    e.place(A, MKT, SELL, 100, 10, 1, stp=Stp.CANCEL_MAKER)
    out = e.place(A, MKT, BUY, 100, 10, 2, stp=Stp.CANCEL_TAKER)
    assert [int(x) for x in out["order_id"]] == [2, 2]
    assert e.order(1) is not None and e.open_orders == 1


# ================================================================ cancel
def test_cancel_by_order_id_and_client_id(engine_cls):
    e = make(engine_cls)
    e.place(A, MKT, BUY, 100, 30, 7)  # 1
    e.place(A, MKT, BUY, 100, 20, 8)  # 2
    out = e.cancel(A, order_id=1)
    assert_events(out, [cancelled(1, A, 7, BUY, 100, 30, 0, CR.USER), level(BUY, 100, 20, 1)])
    out = e.cancel(A, client_id=8)
    assert_events(out, [cancelled(2, A, 8, BUY, 100, 20, 0, CR.USER), level(BUY, 100, 0, 0)])
    assert e.balance(A, QUOTE) == (FUND_QUOTE, 0)
    assert e.l2(MKT) == ([], [])
    check_invariants(e, NET_FUNDED)


def test_cancel_rejections(engine_cls):
    e = make(engine_cls)
    e.place(A, MKT, BUY, 100, 30, 7)  # 1
    e.place(B, MKT, SELL, 200, 10, 7)  # 2
    e.place(B, MKT, SELL, 90, 10, 9, tif=Tif.IOC)  # 3: partially fills 1, never open
    bcid = int(CmdFlag.BY_CLIENT_ID)
    reject(e, RC.INVALID_FLAGS, Cmd.CANCEL, account=A, id=1, flags=int(CmdFlag.POST_ONLY))
    reject(e, RC.INVALID_FLAGS, Cmd.CANCEL, account=0, id=1, flags=bcid | int(CmdFlag.ALL_MARKETS))
    reject(e, RC.INVALID_ACCOUNT_ID, Cmd.CANCEL, account=0, id=1)
    reject(e, RC.INVALID_ACCOUNT_ID, Cmd.CANCEL, account=-3, id=1)
    reject(e, RC.UNKNOWN_ACCOUNT, Cmd.CANCEL, account=555, id=1)
    reject(e, RC.UNKNOWN_ORDER, Cmd.CANCEL, account=A, id=0)
    reject(e, RC.UNKNOWN_ORDER, Cmd.CANCEL, account=A, id=4)
    reject(e, RC.UNKNOWN_ORDER, Cmd.CANCEL, account=A, id=-1)
    reject(e, RC.UNKNOWN_ORDER, Cmd.CANCEL, account=A, id=2)  # B's open order
    reject(e, RC.ORDER_CLOSED, Cmd.CANCEL, account=B, id=3)  # IOC, gone
    reject(e, RC.ORDER_CLOSED, Cmd.CANCEL, account=A, id=3)  # closed: whoever asks
    reject(e, RC.UNKNOWN_ORDER, Cmd.CANCEL, account=A, id=9, flags=bcid)
    reject(e, RC.UNKNOWN_ORDER, Cmd.CANCEL, account=C, id=7, flags=bcid)
    e.cancel(A, order_id=1)
    reject(e, RC.ORDER_CLOSED, Cmd.CANCEL, account=A, id=1)
    reject(e, RC.UNKNOWN_ORDER, Cmd.CANCEL, account=A, id=7, flags=bcid)


def test_cancel_partially_filled_releases_rest(engine_cls):
    e = make(engine_cls, taker=50)
    e.place(A, MKT, BUY, 1000, 50, 1)  # fpl 5, hold 5 x 1005 = 5025
    e.place(B, MKT, SELL, 1000, 20, 1)
    assert e.balance(A, QUOTE) == (FUND_QUOTE - 2000 - 3015, 3015)
    out = e.cancel(A, order_id=1)
    assert_events(out, [cancelled(1, A, 1, BUY, 1000, 30, 0, CR.USER), level(BUY, 1000, 0, 0)])
    assert e.balance(A, QUOTE) == (FUND_QUOTE - 2000, 0)
    assert e.fees(QUOTE) == 10
    check_invariants(e, NET_FUNDED)


# ================================================================ amend
def test_amend_keeps_priority_on_size_decrease(engine_cls):
    e = make(engine_cls)
    e.place(A, MKT, BUY, 100, 50, 1)  # 1
    e.place(B, MKT, BUY, 100, 10, 1)  # 2
    out = e.amend(A, order_id=1, qty=30)
    assert_events(out, [amended(1, A, 1, BUY, 100, 30), level(BUY, 100, 40, 2)])
    assert [o.order_id for o in e.l3(MKT)] == [1, 2]
    assert e.order(1) == OrderView(1, A, 1, MKT, 0, BUY, 100, 30, 0, 30, 0, 0, False)
    assert e.balance(A, QUOTE) == (FUND_QUOTE - 300, 300)
    out = e.amend(A, client_id=1, price=100, qty=30)  # no change at all: still Amended + BookLevel
    assert_events(out, [amended(1, A, 1, BUY, 100, 30), level(BUY, 100, 40, 2)])
    check_invariants(e, NET_FUNDED)


def test_amend_size_increase_loses_priority(engine_cls):
    e = make(engine_cls)
    e.place(A, MKT, SELL, 100, 10, 1)  # 1
    e.place(B, MKT, SELL, 100, 10, 1)  # 2
    out = e.amend(A, order_id=1, qty=20)
    assert_events(out, [amended(1, A, 1, SELL, 100, 20, flags=EvFlag.PRIORITY_LOST), level(SELL, 100, 30, 2)])
    assert [o.order_id for o in e.l3(MKT)] == [2, 1]
    assert e.balance(A, BASE) == (FUND_BASE - 20, 20)
    check_invariants(e, NET_FUNDED)


def test_amend_price_change_moves_level(engine_cls):
    e = make(engine_cls)
    e.place(A, MKT, BUY, 100, 20, 1)  # 1
    e.place(B, MKT, BUY, 99, 10, 1)  # 2
    out = e.amend(A, order_id=1, price=99, qty=20)
    assert_events(out, [amended(1, A, 1, BUY, 99, 20, flags=EvFlag.PRIORITY_LOST), level(BUY, 100, 0, 0),
                        level(BUY, 99, 30, 2)])
    assert [o.order_id for o in e.l3(MKT)] == [2, 1]
    assert e.balance(A, QUOTE) == (FUND_QUOTE - 198, 198)
    check_invariants(e, NET_FUNDED)


def test_amend_crossing_trades_as_taker(engine_cls):
    e = make(engine_cls, maker=-1, taker=20)
    e.place(B, MKT, SELL, 105, 20, 1)  # 1
    e.place(A, MKT, BUY, 100, 30, 1)  # 2: fpl ceil(100 x 20 / 10000) = 1 -> hold 3 x 101
    e.place(A, MKT, BUY, 100, 10, 2)  # 3
    assert e.balance(A, QUOTE) == (FUND_QUOTE - 404, 404)
    out = e.amend(A, order_id=2, price=105, qty=40)  # fpl 1 -> hold 4 x 106 = 424; fills 2 lots at 105
    assert_events(out, [
        amended(2, A, 1, BUY, 105, 40, flags=EvFlag.PRIORITY_LOST),
        fill(2, A, BUY, 1, B, 105, 20, 20, mfee=0, tfee=1, flags=DONE_M),
        level(BUY, 100, 10, 1),
        level(SELL, 105, 0, 0),
        level(BUY, 105, 20, 1),
    ])
    assert e.order(2) == OrderView(2, A, 1, MKT, 0, BUY, 105, 40, 20, 20, 0, 0, False)
    # paid 210 + 1; holds 2 x 106 for order 2 and 101 for order 3
    assert e.balance(A, QUOTE) == (FUND_QUOTE - 211 - 212 - 101, 313)
    assert e.balance(A, BASE) == (FUND_BASE + 20, 0)
    assert e.fees(QUOTE) == 1
    # the amended order's total qty is filled + new remaining
    out = e.amend(A, order_id=2, qty=10)
    assert_events(out, [amended(2, A, 1, BUY, 105, 10), level(BUY, 105, 10, 1)])
    assert e.order(2).qty == 30 and e.order(2).filled == 20
    check_invariants(e, NET_FUNDED)


def test_amend_post_only_cross_cancels(engine_cls):
    e = make(engine_cls)
    e.place(B, MKT, SELL, 105, 10, 1)
    e.place(A, MKT, BUY, 100, 10, 1, post_only=True)  # 2
    out = e.amend(A, order_id=2, price=105, qty=10)
    assert_events(out, [
        amended(2, A, 1, BUY, 105, 10, flags=EvFlag.PRIORITY_LOST),
        cancelled(2, A, 1, BUY, 105, 10, 0, CR.POST_ONLY, RC.POST_ONLY_WOULD_CROSS),
        level(BUY, 100, 0, 0),
    ])
    assert e.order(2) is None and e.balance(A, QUOTE) == (FUND_QUOTE, 0)
    check_invariants(e, NET_FUNDED)


def test_amend_into_own_order_stp(engine_cls):
    e = make(engine_cls)
    e.place(A, MKT, SELL, 105, 10, 1)  # 1
    e.place(A, MKT, BUY, 100, 10, 2, stp=Stp.CANCEL_MAKER)  # 2
    out = e.amend(A, order_id=2, price=105, qty=10)
    assert_events(out, [
        amended(2, A, 2, BUY, 105, 10, flags=EvFlag.PRIORITY_LOST),
        cancelled(1, A, 1, SELL, 105, 10, 0, CR.STP, RC.SELF_TRADE_PREVENTED),
        level(BUY, 100, 0, 0),
        level(SELL, 105, 0, 0),
        level(BUY, 105, 10, 1),
    ])
    check_invariants(e, NET_FUNDED)


def test_amend_rejections(engine_cls):
    e = make(engine_cls, tick=5, lot=10, min_size=40, band=1000, taker=10)
    e.place(A, MKT, SELL, 100, 80, 1)  # 1
    e.place(B, MKT, BUY, 100, 40, 1)  # 2 trades (closed): last 100
    e.place(B, MKT, BUY, 95, 40, 2)  # 3 B's open order
    e.place(A, MKT, SELL, 105, 40, 3, tif=Tif.IOC)  # 4 closed
    assert e.last_order_id == 4 and e.open_orders == 2
    bcid = int(CmdFlag.BY_CLIENT_ID)

    def bad(code, account=A, ident=1, price=0, qty=20, flags=0):
        reject(e, code, Cmd.AMEND, account=account, id=ident, price=price, qty=qty, flags=flags)

    bad(RC.INVALID_FLAGS, flags=int(CmdFlag.ALL_MARKETS), account=0)
    bad(RC.INVALID_FLAGS, flags=int(CmdFlag.POST_ONLY))
    bad(RC.INVALID_ACCOUNT_ID, account=0, ident=0)
    bad(RC.UNKNOWN_ACCOUNT, account=999, price=-5)
    bad(RC.UNKNOWN_ORDER, ident=3, price=-5)
    bad(RC.UNKNOWN_ORDER, ident=5)
    bad(RC.UNKNOWN_ORDER, ident=0)
    bad(RC.UNKNOWN_ORDER, ident=2, flags=bcid, price=-5)
    bad(RC.ORDER_CLOSED, ident=2, price=-5)  # B's order 2, filled
    bad(RC.ORDER_CLOSED, ident=4, price=-5)
    bad(RC.PRICE_NOT_POSITIVE, price=-5, qty=0)
    bad(RC.PRICE_OFF_TICK, price=101, qty=0)
    bad(RC.QTY_NOT_POSITIVE, qty=0)
    bad(RC.QTY_NOT_POSITIVE, qty=-10)
    bad(RC.QTY_OFF_LOT, qty=25)
    # order 1 has 40 left: decreasing below the min size is fine, increasing to below it is not
    assert e.order(1).remaining == 40
    assert_events(e.amend(A, order_id=1, qty=20), [amended(1, A, 1, SELL, 100, 20), level(SELL, 100, 20, 1)])
    bad(RC.QTY_BELOW_MIN, qty=30)
    bad(RC.QTY_TOO_LARGE, qty=(MAX_MONEY // 10 + 1) * 10, price=MAX_MONEY // 5 * 5)
    bad(RC.PRICE_TOO_LARGE, price=MAX_MONEY // 5 * 5, qty=40)
    bad(RC.PRICE_OUTSIDE_BAND, price=115, qty=20)
    bad(RC.INSUFFICIENT_BALANCE, qty=FUND_BASE + 100, price=100)
    bad(RC.INSUFFICIENT_BALANCE, account=B, ident=3, price=95, qty=(FUND_QUOTE // 95 + 1) * 10)
    # by client id finds the account's own open order
    assert_events(e.amend(A, client_id=1, qty=40), [amended(1, A, 1, SELL, 100, 40, flags=EvFlag.PRIORITY_LOST),
                                                    level(SELL, 100, 40, 1)])
    # the band only applies when the price changes
    e.place(C, MKT, SELL, 110, 40, 1)
    e.place(B, MKT, BUY, 110, 80, 9)  # takes A's 40 at 100 and C's 40 at 110
    assert e.last_price(MKT) == 110 and e.open_orders == 1
    assert e.amend(B, order_id=3, qty=20)[0]["kind"] == Ev.AMENDED  # 95 is outside the band now
    assert e.amend(B, order_id=3, price=95, qty=20)[0]["kind"] == Ev.AMENDED
    bad(RC.PRICE_OUTSIDE_BAND, account=B, ident=3, price=90, qty=20)
    check_invariants(e, NET_FUNDED)


def test_amend_extra_hold_exactly_fits(engine_cls):
    e = make(engine_cls, fund=False, taker=10)
    e.deposit(A, QUOTE, 203)
    e.place(A, MKT, BUY, 100, 20, 1)  # fpl 1: hold 2 x 101
    assert e.balance(A, QUOTE) == (1, 202)
    reject(e, RC.INSUFFICIENT_BALANCE, Cmd.AMEND, account=A, id=1, price=101, qty=20)  # needs 2 more
    assert_events(e.amend(A, order_id=1, qty=10), [amended(1, A, 1, BUY, 100, 10), level(BUY, 100, 10, 1)])
    assert e.balance(A, QUOTE) == (102, 101)
    out = e.amend(A, order_id=1, price=101, qty=10)  # hold 102: one more
    assert_events(out, [amended(1, A, 1, BUY, 101, 10, flags=EvFlag.PRIORITY_LOST), level(BUY, 100, 0, 0),
                        level(BUY, 101, 10, 1)])
    assert e.balance(A, QUOTE) == (101, 102)
    reject(e, RC.INSUFFICIENT_BALANCE, Cmd.AMEND, account=A, id=1, qty=20)  # extra 102 > 101
    e.deposit(A, QUOTE, 1)
    assert_events(e.amend(A, order_id=1, qty=20), [amended(1, A, 1, BUY, 101, 20, flags=EvFlag.PRIORITY_LOST),
                                                   level(BUY, 101, 20, 1)])
    assert e.balance(A, QUOTE) == (0, 204)
    assert e.order(1) == OrderView(1, A, 1, MKT, 0, BUY, 101, 20, 0, 20, 0, 0, False)
    check_invariants(e, {QUOTE: 204})


# ================================================================ mass cancel
def test_mass_cancel_one_market_and_all(engine_cls):
    e = make(engine_cls)
    e.add_market(MKT2, BASE, QUOTE, tick_size=1, lot_size=1, min_size=1)
    e.place(A, MKT, BUY, 100, 10, 1)  # 1
    e.place(A, MKT2, SELL, 300, 5, 2)  # 2
    e.place(B, MKT, BUY, 100, 10, 1)  # 3
    e.place(A, MKT, SELL, 200, 20, 3)  # 4
    e.place(A, MKT, BUY, 99, 10, 4)  # 5
    out = e.mass_cancel(A, MKT)
    assert_events(out, [
        E(Ev.ACCEPTED, account=A, market=MKT, qty=3),
        cancelled(1, A, 1, BUY, 100, 10, 0, CR.MASS),
        cancelled(4, A, 3, SELL, 200, 20, 0, CR.MASS),
        cancelled(5, A, 4, BUY, 99, 10, 0, CR.MASS),
        level(BUY, 100, 10, 1),
        level(SELL, 200, 0, 0),
        level(BUY, 99, 0, 0),
    ])
    e.place(A, MKT, BUY, 98, 10, 5)  # 6
    out = e.mass_cancel(A)
    assert_events(out, [
        E(Ev.ACCEPTED, account=A, qty=2),
        cancelled(2, A, 2, SELL, 300, 5, 0, CR.MASS, market=MKT2),
        cancelled(6, A, 5, BUY, 98, 10, 0, CR.MASS),
        level(SELL, 300, 0, 0, market=MKT2),
        level(BUY, 98, 0, 0),
    ])
    assert_events(e.mass_cancel(A), [E(Ev.ACCEPTED, account=A, qty=0)])
    assert_events(e.mass_cancel(C, MKT2), [E(Ev.ACCEPTED, account=C, market=MKT2, qty=0)])
    assert e.balance(A, QUOTE) == (FUND_QUOTE, 0) and e.balance(A, BASE) == (FUND_BASE, 0)
    assert [o.order_id for o in e.l3(MKT)] == [3]
    check_invariants(e, NET_FUNDED)


def test_mass_cancel_rejections(engine_cls):
    e = make(engine_cls)
    e.place(A, MKT, BUY, 100, 10, 1)
    am = int(CmdFlag.ALL_MARKETS)
    reject(e, RC.INVALID_FLAGS, Cmd.MASS_CANCEL, account=0, market=99, flags=int(CmdFlag.POST_ONLY))
    reject(e, RC.INVALID_FLAGS, Cmd.MASS_CANCEL, account=A, flags=am | int(CmdFlag.BY_CLIENT_ID))
    reject(e, RC.INVALID_ACCOUNT_ID, Cmd.MASS_CANCEL, account=0, market=99)
    reject(e, RC.UNKNOWN_ACCOUNT, Cmd.MASS_CANCEL, account=77, market=99)
    reject(e, RC.UNKNOWN_MARKET, Cmd.MASS_CANCEL, account=A, market=99)
    reject(e, RC.UNKNOWN_MARKET, Cmd.MASS_CANCEL, account=A, market=0)
    # with ALL_MARKETS the market field is ignored
    out = e.submit(Cmd.MASS_CANCEL, account=A, market=99, flags=am)
    assert [int(x) for x in out["kind"]] == [Ev.ACCEPTED, Ev.CANCELLED, Ev.BOOK_LEVEL]
    assert int(out[0]["qty"]) == 1 and int(out[0]["market"]) == 0


# ================================================================ expiry
def test_expiry_on_later_command(engine_cls):
    e = make(engine_cls)
    e.place(A, MKT, BUY, 100, 10, 1, expire_at=500, ts=10)  # 1
    e.place(B, MKT, BUY, 100, 10, 1, expire_at=300, ts=20)  # 2
    e.place(C, MKT, BUY, 99, 10, 1, expire_at=300, ts=30)  # 3
    e.place(C, MKT, BUY, 98, 10, 2, ts=40)  # 4 no expiry
    assert_events(e.deposit(A, BASE, 1, ts=299), [balance_ev(A, BASE, 1, FUND_BASE + 1, 0)])
    # ts 300: orders 2 and 3 expire in (expire_at, order_id) order, before the command itself
    out = e.place(C, MKT, SELL, 99, 20, 3, ts=300)
    assert_events(out, [
        cancelled(2, B, 1, BUY, 100, 10, 0, CR.EXPIRED),
        cancelled(3, C, 1, BUY, 99, 10, 0, CR.EXPIRED),
        accepted(5, C, 3, SELL, 99, 20),
        fill(5, C, SELL, 1, A, 100, 10, 10, flags=DONE_M),
        level(BUY, 100, 0, 0),
        level(BUY, 99, 0, 0),
        level(SELL, 99, 10, 1),
    ])
    assert all(int(x) == 300 for x in out["ts"])
    assert e.balance(B, QUOTE) == (FUND_QUOTE, 0)
    check_invariants(e, {BASE: 3 * FUND_BASE + 1, QUOTE: 3 * FUND_QUOTE})


def test_expiry_order_by_time_then_id_and_rejected_command(engine_cls):
    e = make(engine_cls)
    e.place(A, MKT, SELL, 103, 10, 1, expire_at=900)  # 1
    e.place(A, MKT, SELL, 101, 10, 2, expire_at=800)  # 2
    e.place(B, MKT, SELL, 102, 10, 1, expire_at=800)  # 3
    e.place(B, MKT, SELL, 101, 10, 2)  # 4
    # a rejected command still triggers expiry; its own events start with Rejected
    out = e.submit(Cmd.CANCEL, account=C, id=999, ts=1000)
    assert_events(out, [
        cancelled(2, A, 2, SELL, 101, 10, 0, CR.EXPIRED),
        cancelled(3, B, 1, SELL, 102, 10, 0, CR.EXPIRED),
        cancelled(1, A, 1, SELL, 103, 10, 0, CR.EXPIRED),
        E(Ev.REJECTED, code=RC.UNKNOWN_ORDER, flags=Cmd.CANCEL, account=C, client_id=999),
        level(SELL, 101, 10, 1),
        level(SELL, 102, 0, 0),
        level(SELL, 103, 0, 0),
    ])
    assert e.balance(A, BASE) == (FUND_BASE, 0)
    # nothing more to expire; clock stays at 1000
    assert_events(e.cancel(B, order_id=4, ts=5), [cancelled(4, B, 2, SELL, 101, 10, 0, CR.USER), level(SELL, 101, 0, 0)])
    assert e.now == 1000


def test_expired_order_not_matched_and_cancelled_order_not_expired(engine_cls):
    e = make(engine_cls)
    e.place(A, MKT, SELL, 100, 10, 1, expire_at=100)  # 1
    e.place(A, MKT, SELL, 100, 10, 2, expire_at=200)  # 2
    e.cancel(A, order_id=2)
    out = e.place(B, MKT, BUY, 100, 10, 1, ts=200)
    assert_events(out, [
        cancelled(1, A, 1, SELL, 100, 10, 0, CR.EXPIRED),
        accepted(3, B, 1, BUY, 100, 10),
        level(SELL, 100, 0, 0),
        level(BUY, 100, 10, 1),
    ])
    check_invariants(e, NET_FUNDED)


def test_amended_order_keeps_expiry(engine_cls):
    e = make(engine_cls)
    e.place(A, MKT, BUY, 100, 10, 1, expire_at=50)
    e.amend(A, order_id=1, price=101, qty=20)
    assert e.order(1).expire_at == 50
    out = e.deposit(C, BASE, 1, ts=50)
    assert_events(out, [cancelled(1, A, 1, BUY, 101, 20, 0, CR.EXPIRED), balance_ev(C, BASE, 1, FUND_BASE + 1, 0),
                        level(BUY, 101, 0, 0)])


# ================================================================ book levels
def test_book_level_first_touch_order_and_dedup(engine_cls):
    e = make(engine_cls)
    e.place(B, MKT, SELL, 101, 10, 1)  # 1
    e.place(B, MKT, SELL, 100, 10, 2)  # 2
    e.place(C, MKT, SELL, 100, 10, 1)  # 3
    e.place(C, MKT, SELL, 102, 10, 2)  # 4
    out = e.place(A, MKT, BUY, 101, 40, 1)
    kinds = [int(x) for x in out["kind"]]
    assert kinds == [Ev.ACCEPTED, Ev.FILL, Ev.FILL, Ev.FILL, Ev.BOOK_LEVEL, Ev.BOOK_LEVEL, Ev.BOOK_LEVEL]
    assert [body(x) for x in out[4:]] == [level(SELL, 100, 0, 0), level(SELL, 101, 0, 0), level(BUY, 101, 10, 1)]
    assert e.l2(MKT) == ([(101, 10, 1)], [(102, 10, 1)])


# ================================================================ conservation over a random stream
def random_stream(seed, n):
    rng = random.Random(seed)
    cmds = np.zeros(n, dtype=COMMAND_DTYPE)
    accounts = [A, B, C, 44]
    ts = 0
    for i in range(n):
        ts += rng.randrange(0, 30)
        r = rng.random()
        acct = rng.choice(accounts)
        if r < 0.06:
            cmds[i] = (Cmd.DEPOSIT, 0, 0, 0, 0, 0, 0, rng.choice([BASE, QUOTE]), ts, acct, 0,
                       rng.randrange(-10, 200_000), 0, 0)
        elif r < 0.09:
            cmds[i] = (Cmd.WITHDRAW, 0, 0, 0, 0, 0, 0, rng.choice([BASE, QUOTE]), ts, acct, 0,
                       rng.randrange(1, 50_000), 0, 0)
        elif r < 0.7:
            tif = rng.choice([0, 0, 0, 1, 2])
            ot = 1 if tif and rng.random() < 0.3 else 0
            flags = 1 if tif == 0 and ot == 0 and rng.random() < 0.1 else 0
            aux = ts + rng.randrange(1, 400) if tif == 0 and rng.random() < 0.2 else 0
            cmds[i] = (Cmd.PLACE, rng.randrange(2), tif, ot, rng.randrange(4), flags, 0,
                       rng.choice([MKT, MKT, MKT2]), ts, acct, rng.randrange(95, 106) * 5,
                       rng.randrange(1, 12) * 10, rng.randrange(1, 40), aux)
        elif r < 0.85:
            by_cid = rng.random() < 0.3
            cmds[i] = (Cmd.CANCEL, 0, 0, 0, 0, 2 if by_cid else 0, 0, 0, ts, acct, 0, 0,
                       rng.randrange(1, 40) if by_cid else rng.randrange(1, i + 2), 0)
        elif r < 0.98:
            by_cid = rng.random() < 0.3
            cmds[i] = (Cmd.AMEND, 0, 0, 0, 0, 2 if by_cid else 0, 0, 0, ts, acct,
                       rng.choice([0, rng.randrange(95, 106) * 5]), rng.randrange(1, 12) * 10,
                       rng.randrange(1, 40) if by_cid else rng.randrange(1, i + 2), 0)
        else:
            all_m = rng.random() < 0.5
            cmds[i] = (Cmd.MASS_CANCEL, 0, 0, 0, 0, 4 if all_m else 0, 0, MKT, ts, acct, 0, 0, 0, 0)
    return cmds


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_stream_invariants(engine_cls, seed):
    e = make(engine_cls, tick=5, lot=10, min_size=10, maker=-2, taker=9)
    e.add_market(MKT2, BASE, QUOTE, tick_size=5, lot_size=10, min_size=20, maker_bps=3,
                 taker_bps=3, band_bps=300)
    cmds = random_stream(seed, 4000)
    net = dict(NET_FUNDED)
    all_events = []
    for chunk in range(0, len(cmds), 500):
        out = e.process(cmds[chunk:chunk + 500])
        check_batch_book_levels(e, out)
        all_events.append(out)
        for ev in out[out["kind"] == Ev.BALANCE]:
            net[int(ev["market"])] += int(ev["qty"])
        check_invariants(e, net)
        # every book level matches the orders listed
        for m in (MKT, MKT2):
            bids, asks = e.l2(m, depth=1000)
            for lv_list, side in ((bids, BUY), (asks, SELL)):
                for price, qty, count in lv_list:
                    os = [o for o in e.l3(m) if o.side == side and o.price == price]
                    assert (qty, count) == (sum(o.remaining for o in os), len(os))
            if bids and asks:
                assert bids[0][0] < asks[0][0]  # never crossed at rest
    events = np.concatenate(all_events)
    assert [int(x) for x in events["seq"]] == list(range(int(events["seq"][0]), e.event_seq + 1))
    cs = events["cmd_seq"].astype(np.int64)
    assert (np.diff(cs) >= 0).all() and len(np.unique(cs)) == len(cmds)
    assert (events["durable_seq"] == 0).all()
    kinds = set(int(k) for k in events["kind"])
    assert {int(Ev.FILL), int(Ev.CANCELLED), int(Ev.AMENDED), int(Ev.REJECTED)} <= kinds
    # determinism: a second engine fed the same stream in one batch ends in the same state; only the BookLevels,
    # one per level a batch changed at its end, differ, and so the event count
    e2 = make(engine_cls, tick=5, lot=10, min_size=10, maker=-2, taker=9)
    e2.add_market(MKT2, BASE, QUOTE, tick_size=5, lot_size=10, min_size=20, maker_bps=3,
                  taker_bps=3, band_bps=300)
    out2 = e2.process(cmds)
    check_batch_book_levels(e2, out2)
    assert same_but_book_levels(out2, events)
    assert canonical_state(e2)[:-1] == canonical_state(e)[:-1] and e2.cmd_seq == e.cmd_seq


def test_halt_stops_new_orders_and_amends_but_not_cancels(engine_cls):
    e = make(engine_cls)
    e.place(A, MKT, SELL, 100, 10, 1)
    out = e.halt(MKT, account=77)
    assert_events(out, [E(Ev.MARKET_STATUS, market=MKT, account=77, qty=1)])
    assert e.markets()[0].halted is True
    before = canonical_state(e)[:-1]
    reject_place = e.place(B, MKT, BUY, 100, 10, 1)
    assert [int(x) for x in reject_place["code"]] == [RC.MARKET_HALTED]
    reject_amend = e.amend(A, order_id=1, qty=20)
    assert [int(x) for x in reject_amend["code"]] == [RC.MARKET_HALTED]
    assert canonical_state(e)[:-1] == before
    assert [int(x) for x in e.halt(MKT)["code"]] == [RC.MARKET_STATUS_UNCHANGED]
    assert [int(x) for x in e.halt(999)["code"]] == [RC.UNKNOWN_MARKET]
    out = e.cancel(A, order_id=1)
    assert int(out[0]["kind"]) == Ev.CANCELLED
    assert_events(e.resume(MKT), [E(Ev.MARKET_STATUS, market=MKT)])
    assert e.markets()[0].halted is False
    out = e.place(B, MKT, BUY, 100, 10, 2)
    assert int(out[0]["kind"]) == Ev.ACCEPTED
    assert [int(x) for x in e.resume(MKT)["code"]] == [RC.MARKET_STATUS_UNCHANGED]
