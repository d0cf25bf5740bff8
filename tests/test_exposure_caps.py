"""Per-venue exposure caps inside one account (issue 9): SetExposureCap and the pre-trade check that keeps the
margin an account's positions and orders in one venue's risk group use within a share of its equity, while cross
margin works as before within the caps; both engines (``engine_cls``)."""
from __future__ import annotations

import numpy as np
import pytest

from engine.api import Leg
from engine.codes import ResultCode as RC
from engine.matcher import Engine
from engine.records import Ev, MarketKind, Tif

from test_venues import codes, ok, state

USD, BTC, ETH, OKB = 1, 2, 3, 4
PERP0, PERP1, PERP1B, SPOT = 5, 6, 7, 8  # PERP0 listed by venue 0, PERP1 and PERP1B by venue 1
ADMIN, OP, INS, PROTOCOL = 900, 10, 901, 800
MAKER, T, X = 11, 13, 14
BUY, SELL = 0, 1
EQUITY = 10_000


def assets_and_venue_one(e) -> None:
    """USD, BTC, ETH and OKB listed; venue 1 launched by OP on an OKB stake, insured by INS."""
    for asset, symbol in ((USD, "USD"), (BTC, "BTC"), (ETH, "ETH"), (OKB, "OKB")):
        ok(e.add_asset(asset, symbol, 6))
    ok(e.deposit(OP, OKB, 10_000))
    ok(e.set_venue_params(ADMIN, stake_asset=OKB, min_stake=1_000, unbond_period=1, protocol_account=PROTOCOL,
                          admin=ADMIN))
    ok(e.launch_venue(OP, 1, 5_000, insurance_account=INS))


def world(engine_cls):
    """Perpetuals at 10x in two risk groups (venue 0: PERP0; venue 1: PERP1, PERP1B) and a spot market; T holds
    10,000 USD; MAKER rests 1,000 lots on both sides of every perpetual at 100."""
    e = engine_cls(max_orders=1000, max_accounts=100, max_markets=16, max_assets=8, max_venues=16)
    assets_and_venue_one(e)
    ok(e.add_market(PERP0, BTC, USD, tick_size=1, lot_size=1, min_size=1, kind=MarketKind.PERPETUAL))
    ok(e.add_market(PERP1, ETH, USD, tick_size=1, lot_size=1, min_size=1, kind=MarketKind.PERPETUAL, venue=1))
    ok(e.add_market(PERP1B, BTC, USD, tick_size=1, lot_size=1, min_size=1, kind=MarketKind.PERPETUAL, venue=1))
    ok(e.add_market(SPOT, BTC, USD, tick_size=1, lot_size=1, min_size=1))
    for market in (PERP0, PERP1, PERP1B):
        ok(e.market_risk(ADMIN, market, max_leverage=10, maintenance_bps=5000))
    ok(e.deposit(T, USD, EQUITY))
    ok(e.deposit(MAKER, USD, 10**9))
    ok(e.deposit(MAKER, BTC, 10**6))
    ok(e.deposit(X, USD, 10**6))
    for k, market in enumerate((PERP0, PERP1, PERP1B)):
        venue = 0 if market == PERP0 else 1
        ok(e.place(MAKER, market, SELL, 100, 1000, 1 + 2 * k, venue=venue))
        ok(e.place(MAKER, market, BUY, 99, 1000, 2 + 2 * k, venue=venue))
    return e


def refused(e, events, code):
    assert codes(events) == [code] and len(events) == 1, [Ev(int(k)).name for k in events["kind"]]


def test_cap_limits_one_venues_margin_and_cross_margin_goes_on(engine_cls):
    e = world(engine_cls)
    ev = ok(e.set_exposure_cap(T, 1, 2000))  # venue 1's group may use 20 % of T's equity: 2,000 USD
    assert (ev[0]["kind"], ev[0]["flags"], ev[0]["venue"], ev[0]["account"], ev[0]["qty"]) == (Ev.VENUE, 126, 1, T, 2000)
    assert e.exposure_caps() == [(T, 1, 2000)]
    ok(e.place(T, PERP1, BUY, 90, 150, 1, venue=1))  # rests: holds 150 x 9 = 1,350
    ok(e.place(T, PERP1B, BUY, 100, 60, 2, tif=Tif.IOC, venue=1))  # a long of 60: initial margin 600 at mark 100
    before = state(e)
    refused(e, e.place(T, PERP1, BUY, 90, 10, 3, venue=1), RC.EXPOSURE_CAP_EXCEEDED)  # 1,350 + 600 + 90 > 2,000
    assert state(e) == before
    ok(e.place(T, PERP1, BUY, 90, 5, 4, venue=1))  # 1,350 + 600 + 45 = 1,995
    # the other risk group and spot trade on the same equity, beyond the cap's share
    ok(e.place(T, PERP0, BUY, 100, 500, 5, tif=Tif.IOC))  # 5,000 of initial margin in venue 0's group
    ok(e.place(T, SPOT, BUY, 50, 10, 6))
    # reduce-only orders take on no risk: they pass the cap
    ok(e.place(T, PERP1B, SELL, 99, 10, 7, tif=Tif.IOC, venue=1, reduce_only=True))
    # removing the cap lifts the limit
    ok(e.set_exposure_cap(T, 1, 0))
    assert e.exposure_caps() == []
    ok(e.place(T, PERP1, BUY, 90, 10, 8, venue=1))


def test_amend_that_raises_the_hold_meets_the_cap(engine_cls):
    e = world(engine_cls)
    ok(e.set_exposure_cap(T, 1, 1000))  # 1,000 USD
    ok(e.place(T, PERP1, BUY, 90, 100, 1, venue=1))  # 900
    before = state(e)
    refused(e, e.amend(T, client_id=1, qty=120), RC.EXPOSURE_CAP_EXCEEDED)  # 1,080
    assert state(e) == before
    ok(e.amend(T, client_id=1, qty=110))  # 990
    ok(e.amend(T, client_id=1, qty=50))


def test_equity_counts_unrealised_pnl_at_mark(engine_cls):
    e = world(engine_cls)
    ok(e.place(T, PERP0, BUY, 100, 200, 1, tif=Tif.IOC))  # long 200 at 100 in venue 0's group
    ok(e.set_exposure_cap(T, 1, 1000))  # 10 % of 10,000 = 1,000
    ok(e.place(T, PERP1, BUY, 90, 110, 2, venue=1))  # 990
    ok(e.cancel(T, client_id=2))
    # PERP0 trades at 90 and its bids are gone: the mark (no oracle, no impact bid) is the last trade, 90
    ok(e.cancel(MAKER, client_id=2))
    ok(e.place(MAKER, PERP0, BUY, 90, 1, 10))
    ok(e.place(X, PERP0, SELL, 90, 1, 1, tif=Tif.IOC))
    assert e.market_risks()[0].mark == 90
    before = state(e)
    refused(e, e.place(T, PERP1, BUY, 90, 110, 3, venue=1), RC.EXPOSURE_CAP_EXCEEDED)  # 990 > 10 % of 8,000
    assert state(e) == before
    ok(e.place(T, PERP1, BUY, 90, 88, 4, venue=1))  # 792 <= 800


def test_multi_leg_orders_count_their_legs_together(engine_cls):
    e = world(engine_cls)
    ok(e.set_exposure_cap(T, 1, 1000))
    legs = [Leg(PERP1, BUY, 100, 60, 1, venue=1), Leg(PERP1B, BUY, 100, 50, 2, venue=1)]  # 600 + 500
    before = state(e)
    events = e.multi_leg(T, 1, legs)
    assert codes(events) == [RC.EXPOSURE_CAP_EXCEEDED] and int(events[0]["reason"]) == 2
    assert state(e) == before
    # a leg in venue 0's group does not count against venue 1's cap
    ok(e.multi_leg(T, 2, [Leg(PERP1, BUY, 100, 60, 1, venue=1), Leg(PERP0, BUY, 100, 50, 2)]))


BAD = [
    ("account 0", dict(account=0, venue=1, cap_bps=10), RC.INVALID_ACCOUNT_ID),
    ("unknown account", dict(account=4242, venue=1, cap_bps=10), RC.UNKNOWN_ACCOUNT),
    ("unknown venue", dict(account=T, venue=7, cap_bps=10), RC.UNKNOWN_VENUE),
    ("cap negative", dict(account=T, venue=1, cap_bps=-1), RC.INVALID_EXPOSURE_CAP),
    ("cap above 10000", dict(account=T, venue=1, cap_bps=10_001), RC.INVALID_EXPOSURE_CAP),
]


@pytest.mark.parametrize("what, fields, code", BAD, ids=[b[0] for b in BAD])
def test_bad_exposure_cap_is_rejected_and_changes_nothing(engine_cls, what, fields, code):
    e = world(engine_cls)
    before = state(e)
    refused(e, e.set_exposure_cap(**fields), code)
    assert state(e) == before and e.exposure_caps() == []


def test_caps_survive_export_import():
    e = world(Engine)
    ok(e.set_exposure_cap(T, 1, 1500))
    ok(e.set_exposure_cap(T, 0, 9000))
    copy = Engine.from_state(e.export_state(), max_orders=1000, max_accounts=100, max_markets=16, max_assets=8,
                             max_venues=16)
    assert copy.exposure_caps() == e.exposure_caps() == [(T, 0, 9000), (T, 1, 1500)]
    assert state(copy) == state(e)
    for engine in (e, copy):
        refused(engine, engine.place(T, PERP1, BUY, 100, 200, 1, venue=1), RC.EXPOSURE_CAP_EXCEEDED)
    bad = e.export_state()
    bad["exposure_caps"] = np.array([(T, 1, 0)], dtype=bad["exposure_caps"].dtype)
    with pytest.raises(ValueError, match="exposure cap"):
        Engine.from_state(bad, max_orders=1000, max_accounts=100, max_markets=16, max_assets=8, max_venues=16)

