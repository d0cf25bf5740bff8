"""Mark prices, liquidation, the insurance fund and auto-deleveraging (issue 9; ARCHITECTURE, "Liquidation,
insurance and ADL"), on both engines (``engine_cls``)."""
from __future__ import annotations

import numpy as np
import pytest

from engine.codes import ResultCode as RC
from engine.records import Ev, MarketKind, Tif

from generators import ENGINE_KWARGS
from test_venues import codes, ok, state

USD, BTC = 1, 2
PERP, SPOT = 5, 6
BUY, SELL = 0, 1
ADMIN, FEED, PROTOCOL = 99, 77, 800
A, B, C, D = 11, 12, 13, 14
TICK = 5


def marks(events) -> list[tuple]:
    """(market, mark, oracle, impact mid, last, impact bid, impact ask) of each Mark event."""
    return [(int(e["market"]), int(e["price"]), int(e["qty"]), int(e["remaining"]), int(e["client_id"]),
             int(e["maker_order"]), int(e["maker_account"])) for e in events if e["kind"] == Ev.MARK]


def mark_world(engine_cls, impact_lots=2):
    """PERP (tick 5, lot 10) with an oracle of venue 0 fed by FEED, impact size ``impact_lots``; SPOT alongside."""
    e = engine_cls(**ENGINE_KWARGS)
    ok(e.add_asset(USD, "USD", 6))
    ok(e.add_asset(BTC, "BTC", 8))
    ok(e.add_market(PERP, BTC, USD, tick_size=TICK, lot_size=10, min_size=10, kind=MarketKind.PERPETUAL))
    ok(e.add_market(SPOT, BTC, USD, tick_size=TICK, lot_size=10, min_size=10))
    ok(e.set_venue_params(ADMIN, stake_asset=BTC, min_stake=1, unbond_period=1, protocol_account=PROTOCOL,
                          admin=ADMIN))
    ok(e.market_risk(ADMIN, PERP, max_leverage=1, maintenance_bps=5000, impact_lots=impact_lots))
    ok(e.configure_oracle(ADMIN, 0, PERP, feed_id=1, feed_account=FEED, timeout_ns=1_000))
    for account in (A, B, C, D):
        ok(e.deposit(account, USD, 10_000_000))
        ok(e.deposit(account, BTC, 10_000))
    return e


def test_mark_rule_inputs_missing_and_median(engine_cls):
    e = mark_world(engine_cls)
    assert e.market_risks()[0].mark == 0
    # only the impact mid: 2 lots deep on each side (bids 100 x1 + 95 x2, asks 120 x3) -> (95 + 120) / 2 = 107.5 -> 105
    ok(e.place(A, PERP, BUY, 100, 10, 1))
    assert marks(ok(e.place(A, PERP, BUY, 95, 20, 2))) == []  # one side only: no impact mid yet
    assert marks(ok(e.place(B, PERP, SELL, 120, 30, 1))) == [(PERP, 105, 0, 105, 0, 95, 120)]
    # the oracle alone with the impact mid: the oracle wins over a book-derived input
    assert marks(ok(e.oracle_price(FEED, 0, PERP, 200, feed_id=1, source_ts=1))) == [(PERP, 200, 200, 105, 0, 95, 120)]
    # a trade: all three, the median; the trade took one lot of asks, so the impact ask is still 120
    events = ok(e.place(C, PERP, BUY, 120, 10, 1, tif=Tif.IOC))
    assert marks(events) == [(PERP, 120, 200, 105, 120, 95, 120)]
    assert events[-1]["kind"] == Ev.MARK  # after the BookLevel events: the last of the command
    assert e.market_risks()[0].mark == 120
    # the oracle goes stale (a command past its timeout): oracle missing, the last trade over the impact mid (120
    # again: no Mark event); then a lower oracle price is the median
    assert marks(ok(e.deposit(D, USD, 1, ts=5_000))) == [] and e.oracle(0, PERP).stale
    ok(e.oracle_price(FEED, 0, PERP, 110, feed_id=1, source_ts=2, ts=5_001))
    assert e.market_risks()[0].mark == 110  # median(110, 105, 120)
    # spot markets have no mark
    ok(e.place(A, SPOT, BUY, 100, 10, 3))
    assert marks(ok(e.place(B, SPOT, SELL, 100, 10, 3, tif=Tif.IOC))) == []


def test_mark_survives_export_import():
    from engine.matcher import Engine

    e = mark_world(Engine)
    ok(e.place(A, PERP, BUY, 100, 30, 1))
    ok(e.place(B, PERP, SELL, 130, 20, 1))
    ok(e.oracle_price(FEED, 0, PERP, 125, feed_id=1, source_ts=1))
    ok(e.place(C, PERP, SELL, 100, 10, 1, tif=Tif.IOC))
    copy = Engine.from_state(e.export_state(), **ENGINE_KWARGS)
    assert copy.market_risks() == e.market_risks() and e.market_risks()[0][3:] == (2, 0, 115)  # median(125, 115, 100)
    assert state(copy) == state(e)
