"""Margin tiers of perpetual markets (issue 9; ARCHITECTURE, "Margin tiers"): MarginTiers' checks, the tiered initial
margin at the bracket boundaries through the pre-trade check (Withdraw), Liquidate's maintenance requirement, holds
unchanged, snapshots; both engines (``engine_cls``)."""
from __future__ import annotations

import numpy as np
import pytest

from engine.codes import ResultCode as RC
from engine.matcher import Engine
from engine.records import Cmd, Ev, MarketKind, Tif, pack_tier_leverage
from engine.views import MarginTiersView

from generators import ENGINE_KWARGS
from test_venues import codes, ok, state

USD, BTC = 1, 2
PERP, SPOT = 5, 6
BUY, SELL = 0, 1
ADMIN, FEED, PROTOCOL, KEEPER = 99, 77, 800, 55
A, B = 11, 12
BRACKETS = [(10_000, 5), (20_000, 2)]  # 0-10,000 at 10x, 10,000-20,000 at 5x, above at 2x


def tier_world(engine_cls, brackets=BRACKETS):
    """PERP (tick 1, lot 10) at 10x, maintenance 5000 bps, venue 0's oracle at 1000 as the mark; A long 10 lots and B
    short 10 lots at 1000 (notional 10,000, each with margin 1000); both hold 100,000 more."""
    e = engine_cls(**ENGINE_KWARGS)
    ok(e.add_asset(USD, "USD", 6))
    ok(e.add_asset(BTC, "BTC", 8))
    ok(e.add_market(PERP, BTC, USD, tick_size=1, lot_size=10, min_size=10, kind=MarketKind.PERPETUAL))
    ok(e.add_market(SPOT, BTC, USD, tick_size=1, lot_size=10, min_size=10))
    ok(e.set_venue_params(ADMIN, stake_asset=BTC, min_stake=1, unbond_period=1, protocol_account=PROTOCOL,
                          admin=ADMIN))
    ok(e.market_risk(ADMIN, PERP, max_leverage=10, maintenance_bps=5000))
    ok(e.configure_oracle(ADMIN, 0, PERP, feed_id=1, feed_account=FEED, timeout_ns=10**15))
    ok(e.oracle_price(FEED, 0, PERP, 1000, feed_id=1, source_ts=1))
    if brackets is not None:
        ok(e.set_margin_tiers(ADMIN, PERP, brackets))
    for account in (A, B):
        ok(e.deposit(account, USD, 101_000))
    ok(e.place(B, PERP, SELL, 1000, 100, 1))
    ok(e.place(A, PERP, BUY, 1000, 100, 1, tif=Tif.IOC))
    return e


def initial(value, brackets=BRACKETS, leverage=10):
    """The tiered initial margin, bracket by bracket (the rule under test, written independently)."""
    edges = [0] + [floor for floor, _ in brackets] + [None]
    leverages = [leverage] + [lev for _, lev in brackets]
    total = 0
    for low, high, lev in zip(edges, edges[1:], leverages):
        part = max(0, (value if high is None else min(value, high)) - low)
        total += -(-part // lev)
    return total


def test_initial_margin_rule():
    assert [initial(v) for v in (0, 1, 10_000, 10_010, 20_000, 20_010, 25_000)] == [
        0, 1, 1000, 1002, 3000, 3005, 5500]
    assert initial(25_000, []) == 2500 and initial(9, [(3, 5), (6, 1)]) == 1 + 1 + 3


@pytest.mark.parametrize("mark", [1001, 1999, 2000, 2001, 2500])
def test_pre_trade_check_uses_the_tiered_initial_margin_at_each_boundary(engine_cls, mark):
    """B's largest withdrawal is free + margin + unrealised - tiered initial margin of its short 10 lots at the mark
    (a short: its loss keeps the answer below its free balance, which Withdraw checks first)."""
    e = tier_world(engine_cls)
    ok(e.oracle_price(FEED, 0, PERP, mark, feed_id=1, source_ts=2))
    assert e.market_risks()[0].mark == mark
    value = mark * 10
    free, held = e.balance(B, USD)
    assert held == 1000 and free == 100_000
    excess = free + 1000 + (10_000 - value) - initial(value)
    before = state(e)
    assert codes(e.withdraw(B, USD, excess + 1)) == [RC.INSUFFICIENT_MARGIN]
    assert state(e) == before
    ok(e.withdraw(B, USD, excess))


def test_liquidate_maintenance_is_half_the_tiered_initial_margin(engine_cls):
    """B short 10 lots, entry 10,000: at mark 2,000 (value 20,000) its maintenance is ceil(3000 / 2) = 1500, at
    2,010 ceil((3000 + ceil(100 / 2)) / 2) = 1525; the equity (free + margin 1000 - loss) decides."""
    e = tier_world(engine_cls)
    ok(e.withdraw(B, USD, 100_000 - 10_600))  # equity at 2,000: 10,600 + 1000 - 10,000 = 1600 >= 1500
    ok(e.oracle_price(FEED, 0, PERP, 2000, feed_id=1, source_ts=2))
    assert codes(e.liquidate(KEEPER, B, 0, USD)) == [RC.NOT_LIQUIDATABLE]
    ok(e.oracle_price(FEED, 0, PERP, 2010, feed_id=1, source_ts=3))  # equity 1500, maintenance ceil(3050 / 2) = 1525
    events = ok(e.liquidate(KEEPER, B, 0, USD))
    liq = events[events["kind"] == Ev.LIQUIDATION][0]
    assert (int(liq["price"]), int(liq["qty"])) == (1500, -(-initial(20_100) // 2)) == (1500, 1525)


def test_without_tiers_the_first_bracket_is_the_whole_notional(engine_cls):
    e = tier_world(engine_cls, brackets=None)
    assert e.margin_tiers() == [MarginTiersView(PERP, ((0, 10),))]
    ok(e.oracle_price(FEED, 0, PERP, 2500, feed_id=1, source_ts=2))
    excess = 100_000 + 1000 - 15_000 - 2500  # B short: margin - its loss - ceil(25,000 / 10)
    assert codes(e.withdraw(B, USD, excess + 1)) == [RC.INSUFFICIENT_MARGIN]
    ok(e.withdraw(B, USD, excess))


def test_holds_keep_the_first_brackets_leverage_and_tiers_may_change_with_open_orders(engine_cls):
    e = tier_world(engine_cls, brackets=None)
    ok(e.place(A, PERP, BUY, 3000, 100, 2))  # notional 30,000: holds ceil(3000 / 10) per lot whatever the tiers
    assert e.balance(A, USD) == (101_000 - 1000 - 3000, 1000 + 3000)
    events = ok(e.set_margin_tiers(ADMIN, PERP, BRACKETS))
    assert e.balance(A, USD) == (101_000 - 1000 - 3000, 1000 + 3000)
    echo = events[0]
    assert (int(echo["kind"]), int(echo["flags"]), int(echo["price"]), int(echo["qty"]), int(echo["client_id"]),
            int(echo["remaining"])) == (Ev.VENUE, Cmd.MARGIN_TIERS, 10_000, 20_000, 0, pack_tier_leverage([5, 2]))
    assert e.margin_tiers() == [MarginTiersView(PERP, ((0, 10), (10_000, 5), (20_000, 2)))]
    ok(e.set_margin_tiers(ADMIN, PERP, []))
    assert e.margin_tiers() == [MarginTiersView(PERP, ((0, 10),))]


def test_a_bracket_leverage_above_the_one_below_counts_as_that_one(engine_cls):
    """MarketRisk may lower the first bracket's leverage below a tier's: the tier then counts at the lower one."""
    e = tier_world(engine_cls, brackets=[(5_000, 8)])
    assert codes(e.market_risk(ADMIN, PERP, max_leverage=4, maintenance_bps=5000)) == []
    # 10 lots at 1000: ceil(5000 / 4) + ceil(5000 / min(8, 4)) = 2500 (margin held: 1000 at the old 10x)
    excess = 100_000 + 1000 - 2500
    assert codes(e.withdraw(A, USD, excess + 1)) == [RC.INSUFFICIENT_MARGIN]
    ok(e.withdraw(A, USD, excess))


def raw_tiers(e, account=ADMIN, market=PERP, price=0, qty=0, id=0, aux=0):
    return e.submit(Cmd.MARGIN_TIERS, account=account, market=market, price=price, qty=qty, id=id, aux=aux)


BAD_TIERS = [
    ("sender not positive", dict(account=0, price=10, aux=5), RC.INVALID_ACCOUNT_ID),
    ("unknown market", dict(market=99, price=10, aux=5), RC.UNKNOWN_MARKET),
    ("spot market", dict(market=SPOT, price=10, aux=5), RC.INVALID_MARKET_KIND),
    ("not the operator", dict(account=A, price=10, aux=5), RC.NOT_VENUE_OPERATOR),
    ("floors not increasing", dict(price=10, qty=10, aux=pack_tier_leverage([5, 4])), RC.INVALID_MARGIN_TIER),
    ("a floor not positive", dict(price=-10, aux=5), RC.INVALID_MARGIN_TIER),
    ("a floor without leverage", dict(price=10, aux=0), RC.INVALID_MARGIN_TIER),
    ("leverage without a floor", dict(aux=5), RC.INVALID_MARGIN_TIER),
    ("leverage over 100", dict(price=10, aux=101), RC.INVALID_MARGIN_TIER),
    ("leverage increasing", dict(price=10, qty=20, aux=pack_tier_leverage([5, 6])), RC.INVALID_MARGIN_TIER),
    ("a gap", dict(qty=20, aux=pack_tier_leverage([0, 6])), RC.INVALID_MARGIN_TIER),
    ("a bracket after an unused one", dict(price=10, id=30, aux=pack_tier_leverage([5, 0, 2])),
     RC.INVALID_MARGIN_TIER),
    ("bits past the third leverage", dict(price=10, aux=5 | (1 << 24)), RC.INVALID_MARGIN_TIER),
    ("negative aux", dict(price=10, aux=-1), RC.INVALID_MARGIN_TIER),
    ("a floor past MAX_MONEY", dict(price=(1 << 62) + 1, aux=5), RC.INVALID_MARGIN_TIER),
]


@pytest.mark.parametrize("what, fields, code", BAD_TIERS, ids=[b[0] for b in BAD_TIERS])
def test_bad_margin_tiers_are_rejected_and_change_nothing(engine_cls, what, fields, code):
    e = tier_world(engine_cls)
    before = state(e)
    events = raw_tiers(e, **fields)
    assert [int(x) for x in events["kind"]] == [Ev.REJECTED] and codes(events) == [code], what
    assert state(e) == before


def test_margin_tiers_survive_export_import():
    e = tier_world(Engine, brackets=[(10_000, 5), (20_000, 2), (30_000, 1)])
    copy = Engine.from_state(e.export_state(), **ENGINE_KWARGS)
    assert copy.margin_tiers() == e.margin_tiers() == [
        MarginTiersView(PERP, ((0, 10), (10_000, 5), (20_000, 2), (30_000, 1)))]
    assert np.array_equal(copy.withdraw(A, USD, 1000), e.withdraw(A, USD, 1000))
    bad = e.export_state()
    bad["margin_tiers"]["leverage"][2] = 3  # above the bracket below it
    with pytest.raises(ValueError, match="margin tier 3 of market 5"):
        Engine.from_state(bad, **ENGINE_KWARGS)
