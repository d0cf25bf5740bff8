"""The unified account (issue 9): collateral assets with venue haircuts, one equity in the valuation asset for the
pre-trade check, Withdraw and Liquidate's trigger; both engines (``engine_cls``), event for event."""
from __future__ import annotations

import numpy as np
import pytest

from engine.codes import ResultCode as RC
from engine.matcher import Engine
from engine.records import Cmd, Ev, MarketKind, OutcomeChange, Tif, Transfer
from engine.reference import ReferenceEngine
from engine.views import CollateralAssetView, VenueCollateralView

from test_exposure_caps import assets_and_venue_one
from test_venues import codes, ok, state

USD, BTC, ETH, OKB = 1, 2, 3, 4
PERP, SPOT, PERP1, ETHSPOT, PERPE, OUT = 5, 6, 7, 8, 9, 10
# PERP: BTC/USD perpetual of venue 0 (10x); SPOT: BTC/USD spot, BTC's price market (its venue 0 oracle);
# PERP1: BTC/USD perpetual of venue 1 (10x); ETHSPOT: ETH/USD spot without an oracle (ETH has no price);
# PERPE: BTC/ETH perpetual of venue 0 (margined in ETH); OUT: an outcome market in USD, payout 100
ADMIN, OP, INS, PROTOCOL, FEED = 900, 10, 901, 800, 700
MAKER, T, T2 = 11, 13, 14
BUY, SELL = 0, 1
CAPS = dict(max_orders=1000, max_accounts=100, max_markets=16, max_assets=8, max_venues=16)


def world(engine_cls, collateral: bool = True):
    """Both venues quote BTC/USD perpetuals at 99 / 100 (MAKER); BTC is priced 100 USD by the spot oracle and
    counts at 80 % (its protocol bound); T holds 100 BTC and nothing else."""
    e = engine_cls(**CAPS)
    assets_and_venue_one(e)  # the same ids and accounts as here
    ok(e.add_market(PERP, BTC, USD, tick_size=1, lot_size=1, min_size=1, kind=MarketKind.PERPETUAL))
    ok(e.add_market(SPOT, BTC, USD, tick_size=1, lot_size=1, min_size=1))
    ok(e.add_market(PERP1, BTC, USD, tick_size=1, lot_size=1, min_size=1, kind=MarketKind.PERPETUAL, venue=1))
    ok(e.add_market(ETHSPOT, ETH, USD, tick_size=1, lot_size=1, min_size=1))
    ok(e.add_market(PERPE, BTC, ETH, tick_size=1, lot_size=1, min_size=1, kind=MarketKind.PERPETUAL))
    ok(e.add_market(OUT, ETH, USD, tick_size=1, lot_size=1, min_size=1, kind=MarketKind.OUTCOME))
    ok(e.configure_outcome(ADMIN, OUT, payout=100, resolver=ADMIN))
    for market in (PERP, PERP1, PERPE):
        ok(e.market_risk(ADMIN, market, max_leverage=10, maintenance_bps=5000))
    ok(e.configure_oracle(ADMIN, 0, PERP, feed_id=1, feed_account=FEED, timeout_ns=10**15))
    ok(e.configure_oracle(ADMIN, 0, SPOT, feed_id=2, feed_account=FEED, timeout_ns=10**15))
    ok(e.oracle_price(FEED, 0, PERP, 100, feed_id=1, source_ts=1))
    ok(e.oracle_price(FEED, 0, SPOT, 100, feed_id=2, source_ts=1))
    ok(e.deposit(MAKER, USD, 10**9))
    ok(e.deposit(MAKER, BTC, 10**6))
    ok(e.deposit(MAKER, ETH, 10**6))
    for k, (market, venue) in enumerate(((PERP, 0), (PERP1, 1), (PERPE, 0))):
        ok(e.place(MAKER, market, SELL, 100, 1000, 1 + 2 * k, venue=venue))
        ok(e.place(MAKER, market, BUY, 99, 1000, 2 + 2 * k, venue=venue))
    if collateral:
        ok(e.set_collateral_asset(ADMIN, USD, 0, 10_000))
        ok(e.set_collateral_asset(ADMIN, BTC, SPOT, 8_000))
    ok(e.deposit(T, BTC, 100))
    return e


def refused(e, events, code):
    assert codes(events) == [code] and len(events) == 1, [Ev(int(k)).name for k in events["kind"]]


def move_oracle(e, market: int, price: int, source_ts: int):
    ok(e.oracle_price(FEED, 0, market, price, feed_id=1 if market == PERP else 2, source_ts=source_ts))


def test_btc_collateral_margins_a_usd_perpetual(engine_cls):
    # without a valuation asset the rule stays per quote asset: no USD, no USD-quoted position
    plain = world(engine_cls, collateral=False)
    refused(plain, plain.place(T, PERP, BUY, 100, 500, 1, tif=Tif.IOC), RC.INSUFFICIENT_BALANCE)

    e = world(engine_cls)
    # 100 BTC at 100 count 8,000 USD: the order's hold (5,000) is lent against them
    ok(e.place(T, PERP, BUY, 100, 500, 1, tif=Tif.IOC))
    assert e.position(T, PERP).size == 500 and e.balance(T, USD) == (-5_000, 5_000)
    ok(e.cancel(MAKER, client_id=1))
    ok(e.cancel(MAKER, client_id=2))  # the mark is the oracle alone now
    move_oracle(e, PERP, 96, 2)  # unrealised -2,000: USD equity -2,000, initial margin 4,800
    assert e.market_risks()[0].mark == 96
    # 8,000 - 2,000 - 80 x k >= 4,800 for a Withdraw of k BTC (one risk group: venue 0's weight, the bound)
    before = state(e)
    refused(e, e.withdraw(T, BTC, 16), RC.INSUFFICIENT_MARGIN)
    assert state(e) == before
    ok(e.withdraw(T, BTC, 15))  # 85 BTC: 6,800 - 2,000 = 4,800, exactly the initial margin
    # the BTC price falls: 85 x 90 x 0.8 - 2,000 = 4,120 < 4,800 initial, >= 2,400 maintenance
    move_oracle(e, SPOT, 90, 2)
    refused(e, e.place(T, PERP, BUY, 96, 1, 2), RC.INSUFFICIENT_MARGIN)
    refused(e, e.liquidate(MAKER, T, 0, USD), RC.NOT_LIQUIDATABLE)
    # and falls further: 85 x 60 x 0.8 - 2,000 = 2,080 < 2,400: the collateral's fall liquidates
    move_oracle(e, SPOT, 60, 3)
    events = ok(e.liquidate(MAKER, T, 0, USD))
    liquidation = events[events["kind"] == Ev.LIQUIDATION][0]
    assert (int(liquidation["price"]), int(liquidation["qty"])) == (2_080, 2_400)
    assert e.position(T, PERP).size == 0


def test_the_venues_haircut_decides(engine_cls):
    e = world(engine_cls)
    before = state(e)
    refused(e, e.set_venue_collateral(OP, 1, BTC, 8_001), RC.COLLATERAL_WEIGHT_ABOVE_BOUND)
    assert state(e) == before
    ev = ok(e.set_venue_collateral(OP, 1, BTC, 5_000))
    assert (ev[0]["kind"], ev[0]["flags"], ev[0]["venue"], ev[0]["market"], ev[0]["qty"]) == (Ev.VENUE, 131, 1, BTC, 5_000)
    assert e.venue_collaterals() == [VenueCollateralView(1, BTC, 5_000)]
    # a 7,000 hold: 8,000 at venue 0's weight (the bound), 5,000 at venue 1's
    before = state(e)
    refused(e, e.place(T, PERP1, BUY, 100, 700, 1, venue=1), RC.INSUFFICIENT_MARGIN)
    assert state(e) == before
    ok(e.place(T, PERP1, BUY, 100, 500, 2, venue=1, tif=Tif.IOC))  # 5,000
    ok(e.place(T, PERP, BUY, 100, 299, 3, tif=Tif.IOC))  # venue 0: 8,000 - 5,000 - 2,990 >= 0
    refused(e, e.place(T, PERP, BUY, 100, 2, 4, tif=Tif.IOC), RC.INSUFFICIENT_MARGIN)
    # the protocol lowers its bound under the venue's weight: the bound wins
    ok(e.set_collateral_asset(ADMIN, BTC, SPOT, 4_000))
    assert e.collateral_assets() == [CollateralAssetView(USD, 0, 10_000), CollateralAssetView(BTC, SPOT, 4_000)]
    refused(e, e.place(T, PERP1, BUY, 100, 1, 5, venue=1, tif=Tif.IOC), RC.INSUFFICIENT_MARGIN)


def test_a_missing_price_refuses_orders_withdrawals_and_liquidation(engine_cls):
    e = world(engine_cls)
    ok(e.set_collateral_asset(ADMIN, ETH, ETHSPOT, 9_000))  # ETHSPOT has no oracle: ETH has no price
    ok(e.deposit(T2, ETH, 1_000))
    ok(e.deposit(T2, USD, 100_000))
    ok(e.place(T2, PERPE, BUY, 100, 50, 1, tif=Tif.IOC))  # fully paid in ETH: no walk, nothing owed
    before = state(e)
    # now T2 must margin 500 ETH it cannot price, however much USD it holds
    refused(e, e.place(T2, PERPE, BUY, 100, 1, 2, tif=Tif.IOC), RC.COLLATERAL_PRICE_MISSING)
    refused(e, e.withdraw(T2, USD, 1), RC.COLLATERAL_PRICE_MISSING)
    refused(e, e.liquidate(MAKER, T2, 0, ETH), RC.COLLATERAL_PRICE_MISSING)
    assert state(e) == before
    # a price for ETH (a perpetual ETH/USD market's mark would do as well) lets it through
    ok(e.configure_oracle(ADMIN, 0, ETHSPOT, feed_id=3, feed_account=FEED, timeout_ns=10**15))
    ok(e.oracle_price(FEED, 0, ETHSPOT, 2, feed_id=3, source_ts=1))
    ok(e.place(T2, PERPE, BUY, 100, 1, 3, tif=Tif.IOC))
    refused(e, e.liquidate(MAKER, T2, 0, ETH), RC.NOT_LIQUIDATABLE)


def test_outcome_shares_count_at_the_outcome_mark(engine_cls):
    e = world(engine_cls)
    ok(e.deposit(T2, USD, 1_000))
    ok(e.place(MAKER, OUT, SELL, 60, 10, 20))
    ok(e.place(T2, OUT, BUY, 60, 10, 1, tif=Tif.IOC))  # 10 YES for 600: 400 USD left
    ok(e.place(MAKER, OUT, BUY, 55, 5, 21))
    ok(e.place(MAKER, OUT, SELL, 65, 5, 22))  # mark: median(55, 65, last 60) = 60, so 10 YES count 600
    before = state(e)
    refused(e, e.place(T2, PERP, BUY, 100, 101, 2, tif=Tif.IOC), RC.INSUFFICIENT_MARGIN)  # 400 + 600 < 1,010
    assert state(e) == before
    ok(e.place(T2, PERP, BUY, 99, 100, 3))  # rests: a 990 hold, 400 of it free, the rest lent against the YES
    ok(e.cancel(T2, client_id=3))
    ok(e.cancel(MAKER, client_id=21))  # no best bid: no outcome mark, the shares count nothing
    refused(e, e.place(T2, PERP, BUY, 100, 41, 4, tif=Tif.IOC), RC.INSUFFICIENT_MARGIN)
    ok(e.place(MAKER, OUT, BUY, 58, 5, 23))  # a bid again: median(58, 65, 60) = 60
    ok(e.place(T2, PERP, BUY, 100, 100, 5, tif=Tif.IOC))


def test_no_shares_count_payout_minus_the_mark(engine_cls):
    e = world(engine_cls)
    ok(e.deposit(T2, USD, 1_000))
    ok(e.place(MAKER, OUT, BUY, 70, 10, 20))
    ok(e.place(T2, OUT, SELL, 70, 10, 1, tif=Tif.IOC))  # T2 sells YES it lacks: 10 NO for 10 x 30 = 300
    ok(e.place(MAKER, OUT, BUY, 60, 5, 21))
    ok(e.place(MAKER, OUT, SELL, 80, 5, 22))  # mark: median(60, 80, last 70) = 70, 10 NO count 10 x 30 = 300
    assert e.balance(T2, USD) == (700, 0)
    refused(e, e.place(T2, PERP, BUY, 100, 101, 2, tif=Tif.IOC), RC.INSUFFICIENT_MARGIN)  # 700 + 300 < 1,010
    ok(e.place(T2, PERP, BUY, 100, 100, 3, tif=Tif.IOC))



def test_the_fund_buys_the_collateral_behind_a_shortfall(engine_cls):
    """A liquidation closes the USD position at the price where the unified equity is 0 (the BTC stands behind it),
    which leaves USD below zero; the venue's fund then buys BTC at the weighted price to cover it."""
    e = world(engine_cls)
    ok(e.deposit(PROTOCOL, USD, 100_000))  # venue 0's insurance fund
    ok(e.place(T, PERP, BUY, 100, 700, 1, tif=Tif.IOC))  # a 7,000 hold lent against 8,000 of BTC
    ok(e.cancel(MAKER, client_id=1))
    ok(e.cancel(MAKER, client_id=2))
    move_oracle(e, PERP, 85, 2)  # unrealised -10,500: unified equity 8,000 - 10,500 = -2,500 < maintenance 2,975
    events = ok(e.liquidate(MAKER, T, 0, USD))
    liquidation = events[events["kind"] == Ev.LIQUIDATION][0]
    assert (int(liquidation["price"]), int(liquidation["qty"])) == (-2_500, 2_975)
    # no bids: the fund takes the long over at ceil((85 x 700 + 2,500) / 700) = 89, T's USD ends at -7,700
    takeover = events[events["kind"] == Ev.DELEVERAGE][0]
    assert (int(takeover["reason"]), int(takeover["price"]), int(takeover["maker_account"])) == (1, 89, PROTOCOL)
    # the fund buys ceil(ceil(7,700 x 10,000 / 8,000) / 100) = 97 BTC (worth 7,760 at 80 %) for 7,700
    moves = [(int(ev["reason"]), int(ev["account"]), int(ev["market"]), int(ev["qty"]), int(ev["price"]))
             for ev in events if ev["kind"] == Ev.VENUE_TRANSFER]
    assert moves == [(Transfer.COLLATERAL_SOLD, T, BTC, -97, 7_700), (Transfer.COLLATERAL_SOLD, PROTOCOL, BTC, 97, 7_700),
                     (Transfer.COLLATERAL_PAID, PROTOCOL, USD, -7_700, 97), (Transfer.COLLATERAL_PAID, T, USD, 7_700, 97)]
    done = events[events["kind"] == Ev.LIQUIDATED][0]
    assert (int(done["price"]), int(done["qty"]), int(done["remaining"]), int(done["maker_fee"])) == (0, 0, 0, 7_700)
    assert e.balance(T, USD) == (0, 0) and e.balance(T, BTC) == (3, 0)
    assert e.balance(PROTOCOL, BTC) == (97, 0)
    for asset in (USD, BTC):  # conservation: every unit in a balance or an open position's entry value
        owed = sum(p.entry_value if p.size > 0 else -p.entry_value for p in e.positions()
                   if p.market in (PERP, PERP1) and asset == USD)
        assert sum(sum(e.balance(a, asset)) for a in e.accounts()) - owed == {USD: 10**9 + 100_000, BTC: 10**6 + 100}[asset]


def test_no_collateral_sale_without_fund_money(engine_cls):
    """The fund buys only with its free balance of the liquidated asset: with none (venue 0's fund holds no USD) the
    BTC stays with the account, and the USD debt it still backs (100 BTC at 100 x 80 % = 8,000 against 7,700) is no
    shortfall: no fund payment, no ADL haircut; it stays a loan, and the BTC behind it cannot leave."""
    e = world(engine_cls)
    ok(e.place(T, PERP, BUY, 100, 700, 1, tif=Tif.IOC))
    ok(e.place(MAKER, PERP, BUY, 89, 700, 30))  # a bid at the bankruptcy price: the book takes the long
    ok(e.cancel(MAKER, client_id=1))
    ok(e.cancel(MAKER, client_id=2))
    move_oracle(e, PERP, 85, 2)
    events = ok(e.liquidate(MAKER, T, 0, USD))
    assert not any(ev["reason"] in (Transfer.COLLATERAL_SOLD, Transfer.COLLATERAL_PAID)
                   for ev in events if ev["kind"] == Ev.VENUE_TRANSFER)
    done = events[events["kind"] == Ev.LIQUIDATED][0]
    # closed at 89 (11 x 700 below entry): the backed equity 8,000 - 7,700 = 300, nothing paid, cut or uncovered
    assert [int(done[f]) for f in ("price", "qty", "remaining", "client_id", "maker_fee")] == [300, 0, 0, 0, 0]
    assert not (events["kind"] == Ev.DELEVERAGE).any()
    assert e.balance(T, BTC) == (100, 0) and e.balance(T, USD) == (-7_700, 0)
    before = state(e)
    assert codes(e.withdraw(T, BTC, 4)) == [RC.INSUFFICIENT_MARGIN]  # 300 - 4 x 80 < 0
    assert state(e) == before
    ok(e.withdraw(T, BTC, 3))  # 300 - 240 >= 0

def test_a_loan_without_a_position_is_liquidated_when_its_collateral_falls(engine_cls):
    """T borrows USD against its BTC for a 10x long and closes it at a loss: no position, a USD debt backed by BTC.
    While the BTC covers it (weighted) Liquidate is refused; once the BTC price falls below, Liquidate (the valuation
    asset, any group) sells the BTC to the venue's fund for the debt, as after a position's liquidation."""
    e = world(engine_cls)
    ok(e.deposit(PROTOCOL, USD, 100_000))  # venue 0's fund has cash to buy collateral
    ok(e.place(T, PERP, BUY, 100, 700, 1, tif=Tif.IOC))
    ok(e.place(T, PERP, SELL, 99, 700, 2, tif=Tif.IOC, reduce_only=True))  # closed: 700 lost, no position
    assert e.position(T, PERP).size == 0 and e.balance(T, USD) == (-700, 0) and e.balance(T, BTC) == (100, 0)
    refused(e, e.liquidate(MAKER, T, 0, BTC), RC.NOTHING_TO_LIQUIDATE)  # not the valuation asset
    refused(e, e.liquidate(MAKER, MAKER, 0, USD), RC.NOTHING_TO_LIQUIDATE)  # no loan, no position
    move_oracle(e, SPOT, 9, 2)  # 100 BTC x 9 x 80 % = 720 >= 700
    refused(e, e.liquidate(MAKER, T, 0, USD), RC.NOT_LIQUIDATABLE)
    move_oracle(e, SPOT, 8, 3)  # 640 < 700
    events = ok(e.liquidate(MAKER, T, 0, USD))
    start = events[events["kind"] == Ev.LIQUIDATION][0]
    assert (int(start["price"]), int(start["qty"])) == (640 - 700, 0)
    moves = [(int(v["reason"]), int(v["account"]), int(v["market"]), int(v["qty"])) for v in events
             if v["kind"] == Ev.VENUE_TRANSFER]
    # the fund buys all 100 BTC (worth 640 weighted) for 640; the last 60 it pays from its margin excess
    assert moves == [(Transfer.COLLATERAL_SOLD, T, BTC, -100), (Transfer.COLLATERAL_SOLD, PROTOCOL, BTC, 100),
                     (Transfer.COLLATERAL_PAID, PROTOCOL, USD, -640), (Transfer.COLLATERAL_PAID, T, USD, 640),
                     (Transfer.INSURANCE_SHORTFALL, PROTOCOL, USD, -60), (Transfer.INSURANCE_SHORTFALL, T, USD, 60)]
    assert e.balance(T, USD) == (0, 0) and e.balance(T, BTC) == (0, 0)
    refused(e, e.liquidate(MAKER, T, 0, USD), RC.NOTHING_TO_LIQUIDATE)  # nothing left to do


def test_an_exposure_cap_measures_the_unified_equity(engine_cls):
    """T holds only BTC (8,000 USD at 80 %) and caps venue 0's group at 50 %: 4,000 USD of margin. Its loans make its
    USD equity 0 or less, so the per-asset cap would refuse everything; the unified one counts the BTC."""
    e = world(engine_cls)
    ok(e.set_exposure_cap(T, 0, 5_000))
    ok(e.place(T, PERP, BUY, 100, 300, 11, tif=Tif.IOC))  # 300 lots at 10x: 3,000 borrowed and used
    assert e.balance(T, USD) == (-3_000, 3_000)
    before = state(e)
    assert codes(e.place(T, PERP, BUY, 100, 200, 12, tif=Tif.IOC)) == [RC.EXPOSURE_CAP_EXCEEDED]  # 5,000 > 4,000
    assert state(e) == before
    ok(e.place(T, PERP, BUY, 100, 100, 13, tif=Tif.IOC))  # exactly 4,000
    assert codes(e.place(T, PERP, BUY, 100, 10, 14, tif=Tif.IOC)) == [RC.EXPOSURE_CAP_EXCEEDED]
    move_oracle(e, SPOT, 150, 2)  # the BTC up by half: 12,000 of collateral, 6,000 of margin
    ok(e.place(T, PERP, BUY, 100, 200, 15, tif=Tif.IOC))
    assert e.position(T, PERP).size == 600


def test_the_fund_buys_outcome_shares_behind_a_shortfall(engine_cls):
    """T's only collateral is 50 YES shares (outcome mark 60: bid 55, ask 65, last 60; 3,000 at USD's weight): a
    10x long of 200 borrowed against them crashes; the fund takes the long over at the bankruptcy price (85), which
    leaves T's USD at -3,000, then buys the shares at the weighted mark: the fewest whole lots that cover it, moved
    like a fill (OutcomePosition reason COLLATERAL, YES price 60), and T ends at 0."""
    e = world(engine_cls)
    ok(e.deposit(PROTOCOL, USD, 100_000))
    ok(e.deposit(T, USD, 3_000))
    ok(e.place(MAKER, OUT, SELL, 60, 50, 40))
    ok(e.place(T, OUT, BUY, 60, 50, 41, tif=Tif.IOC))
    ok(e.place(MAKER, OUT, BUY, 55, 10, 42))
    ok(e.place(MAKER, OUT, SELL, 65, 10, 43))
    ok(e.withdraw(T, BTC, 100))
    ok(e.place(T, PERP, BUY, 100, 200, 44, tif=Tif.IOC))  # 2,000 borrowed against the shares
    assert e.balance(T, USD) == (-2_000, 2_000)
    ok(e.cancel(MAKER, client_id=2))
    move_oracle(e, PERP, 80, 2)
    events = ok(e.liquidate(MAKER, T, 0, USD))
    moves = [(int(x["account"]), int(x["reason"]), int(x["qty"]), int(x["price"]), int(x["maker_fee"])) for x in events
             if x["kind"] == Ev.OUTCOME_POSITION]
    assert moves == [(T, OutcomeChange.COLLATERAL, 0, 60, 3_000), (PROTOCOL, OutcomeChange.COLLATERAL, 50, 60, -3_000)]
    done = events[events["kind"] == Ev.LIQUIDATED][0]
    assert (int(done["price"]), int(done["client_id"]), int(done["maker_fee"])) == (0, 0, 3_000)
    assert e.balance(T, USD) == (0, 0) and e.position(PROTOCOL, OUT).size == 50
    assert e.outcome(OUT).collateral == 100 * 50  # YES = NO = collateral / payout: the shares changed hands


CA_BAD = [
    ("account 0", dict(account=0, asset=ETH, price_market=ETHSPOT, max_weight_bps=1), RC.INVALID_ACCOUNT_ID),
    ("not the admin", dict(account=OP, asset=ETH, price_market=ETHSPOT, max_weight_bps=1), RC.NOT_ADMIN),
    ("unknown asset", dict(account=ADMIN, asset=7, price_market=ETHSPOT, max_weight_bps=1), RC.UNKNOWN_ASSET),
    ("weight negative", dict(account=ADMIN, asset=ETH, price_market=ETHSPOT, max_weight_bps=-1),
     RC.INVALID_COLLATERAL_WEIGHT),
    ("weight above 10000", dict(account=ADMIN, asset=ETH, price_market=ETHSPOT, max_weight_bps=10_001),
     RC.INVALID_COLLATERAL_WEIGHT),
    ("second valuation asset", dict(account=ADMIN, asset=ETH, price_market=0, max_weight_bps=1),
     RC.VALUATION_ASSET_EXISTS),
    ("unknown price market", dict(account=ADMIN, asset=ETH, price_market=15, max_weight_bps=1),
     RC.INVALID_PRICE_MARKET),
    ("price market of another base", dict(account=ADMIN, asset=ETH, price_market=SPOT, max_weight_bps=1),
     RC.INVALID_PRICE_MARKET),
    ("price market not in the valuation asset", dict(account=ADMIN, asset=BTC, price_market=PERPE, max_weight_bps=1),
     RC.INVALID_PRICE_MARKET),
    ("outcome price market", dict(account=ADMIN, asset=ETH, price_market=OUT, max_weight_bps=1),
     RC.INVALID_PRICE_MARKET),
    ("valuation asset with a price market", dict(account=ADMIN, asset=USD, price_market=SPOT, max_weight_bps=1),
     RC.INVALID_PRICE_MARKET),
]


@pytest.mark.parametrize("what, fields, code", CA_BAD, ids=[b[0] for b in CA_BAD])
def test_bad_collateral_asset_is_rejected_and_changes_nothing(engine_cls, what, fields, code):
    e = world(engine_cls)
    before = state(e)
    refused(e, e.set_collateral_asset(**fields), code)
    assert state(e) == before


def test_collateral_before_a_valuation_asset_is_refused(engine_cls):
    e = world(engine_cls, collateral=False)
    before = state(e)
    refused(e, e.set_collateral_asset(ADMIN, BTC, SPOT, 8_000), RC.NO_VALUATION_ASSET)
    assert state(e) == before and e.collateral_assets() == []
    ev = ok(e.set_collateral_asset(ADMIN, USD, 0, 10_000))
    assert (ev[0]["kind"], ev[0]["flags"], ev[0]["market"], ev[0]["client_id"], ev[0]["qty"]) == (
        Ev.VENUE, 130, USD, 0, 10_000)


VC_BAD = [
    ("account 0", dict(account=0, venue=1, asset=BTC, weight_bps=1), RC.INVALID_ACCOUNT_ID),
    ("unknown venue", dict(account=OP, venue=9, asset=BTC, weight_bps=1), RC.UNKNOWN_VENUE),
    ("not the operator", dict(account=T, venue=1, asset=BTC, weight_bps=1), RC.NOT_VENUE_OPERATOR),
    ("unknown asset", dict(account=OP, venue=1, asset=7, weight_bps=1), RC.UNKNOWN_ASSET),
    ("not collateral", dict(account=OP, venue=1, asset=OKB, weight_bps=1), RC.COLLATERAL_NOT_DECLARED),
    ("weight negative", dict(account=OP, venue=1, asset=BTC, weight_bps=-1), RC.INVALID_COLLATERAL_WEIGHT),
    ("above the bound", dict(account=ADMIN, venue=0, asset=BTC, weight_bps=8_001), RC.COLLATERAL_WEIGHT_ABOVE_BOUND),
]


@pytest.mark.parametrize("what, fields, code", VC_BAD, ids=[b[0] for b in VC_BAD])
def test_bad_venue_collateral_is_rejected_and_changes_nothing(engine_cls, what, fields, code):
    e = world(engine_cls)
    before = state(e)
    refused(e, e.set_venue_collateral(**fields), code)
    assert state(e) == before and e.venue_collaterals() == []


def test_a_perpetual_loan_is_checked_when_a_spot_order_moves_the_collateral(engine_cls):
    """A resting perpetual order holding more than the free balance makes the account owe: its spot orders and
    withdrawals walk the unified check too, so the BTC behind the loan cannot leave."""
    e = world(engine_cls)
    ok(e.place(T, PERP, BUY, 90, 880, 1))  # rests: a 7,920 hold (9 per lot), all of it lent against 8,000 of BTC
    assert e.balance(T, USD) == (-7_920, 7_920)
    before = state(e)
    refused(e, e.withdraw(T, BTC, 2), RC.INSUFFICIENT_MARGIN)  # 98 x 80 = 7,840 < 7,920
    refused(e, e.place(T, SPOT, SELL, 100, 2, 2), RC.INSUFFICIENT_MARGIN)  # a held BTC counts nothing
    assert state(e) == before
    ok(e.withdraw(T, BTC, 1))
    ok(e.cancel(T, client_id=1))
    ok(e.withdraw(T, BTC, 99))


def test_multi_leg_legs_borrow_together(engine_cls):
    from engine.api import Leg
    e = world(engine_cls)
    legs = [Leg(PERP, BUY, 100, 500, 1), Leg(PERP1, BUY, 100, 400, 2, venue=1)]  # 5,000 + 4,000 > 8,000
    before = state(e)
    events = e.multi_leg(T, 1, legs)
    assert codes(events) == [RC.INSUFFICIENT_MARGIN] and int(events[0]["reason"]) == 2
    assert state(e) == before
    ok(e.multi_leg(T, 2, [Leg(PERP, BUY, 100, 500, 1), Leg(PERP1, BUY, 100, 300, 2, venue=1)]))


def test_both_engines_emit_the_same_events():
    streams = []
    for cls in (Engine, ReferenceEngine):
        e = world(cls)
        out = [e.place(T, PERP, BUY, 100, 500, 1, tif=Tif.IOC), e.cancel(MAKER, client_id=1),
               e.cancel(MAKER, client_id=2), e.oracle_price(FEED, 0, PERP, 96, feed_id=1, source_ts=2),
               e.withdraw(T, BTC, 16), e.withdraw(T, BTC, 15),
               e.oracle_price(FEED, 0, SPOT, 60, feed_id=2, source_ts=2), e.liquidate(MAKER, T, 0, USD)]
        streams.append(np.concatenate(out))
    assert np.array_equal(streams[0], streams[1])


def test_collateral_survives_export_import():
    e = world(Engine)
    ok(e.set_venue_collateral(OP, 1, BTC, 5_000))
    ok(e.place(T, PERP, BUY, 98, 500, 1))  # a loan against BTC
    copy = Engine.from_state(e.export_state(), **CAPS)
    assert copy.collateral_assets() == e.collateral_assets() and copy.venue_collaterals() == e.venue_collaterals()
    assert state(copy) == state(e)
    for engine in (e, copy):
        refused(engine, engine.place(T, PERP1, BUY, 100, 100, 2, venue=1), RC.INSUFFICIENT_MARGIN)
        refused(engine, engine.withdraw(T, BTC, 40), RC.INSUFFICIENT_MARGIN)
    for key, row, match in (("collateral_assets", (ETH, SPOT, 1), "price market"),
                            ("collateral_assets", (ETH, 0, 1), "second valuation asset"),
                            ("collateral_assets", (BTC, SPOT, 10_001), "weight out of range"),
                            ("venue_collateral", (1, BTC, 9_000), "venue collateral"),
                            ("venue_collateral", (1, OKB, 1), "venue collateral")):
        bad = e.export_state()
        bad[key] = np.concatenate([bad[key], np.array([row], dtype=bad[key].dtype)])
        with pytest.raises(ValueError, match=match):
            Engine.from_state(bad, **CAPS)


@pytest.mark.parametrize("seed", [21, 22])
def test_collateral_stream_differential(seed, tmp_path):
    from test_differential import run_differential

    from generators import CollateralStreamGenerator

    stats = run_differential(seed, 20_000, dump_dir=tmp_path, generator=CollateralStreamGenerator)
    # (seed 21: 330 since an untraded perpetual's band is around its mark, which the stream's oracle moves take up to
    # 40 % from its book: its orders wait for a mark near the book before the first trade)
    assert stats["fills"] > 300


def test_collateral_stream_invariants_after_every_chunk():
    """The perpetual invariants (test_perp) after every chunk of a collateral stream on the reference model, and the
    stream reaches what it is for: collateral settings taken and refused, negative quote balances in accounts holding
    other assets, and the unified check's refusals for missing prices (its accounts are deep: INSUFFICIENT_MARGIN is
    the unit tests' part)."""
    from collections import defaultdict

    from test_perp import check_perp_invariants

    from generators import ENGINE_KWARGS, CollateralStreamGenerator, run_stream

    e = ReferenceEngine(**ENGINE_KWARGS)
    gen = CollateralStreamGenerator(23, limits=dict(ENGINE_KWARGS))
    net: dict[int, int] = defaultdict(int)
    seen: dict[str, int] = defaultdict(int)
    for cmds, events in run_stream(e, gen, 10_000, chunk=100):
        balance = events[events["kind"] == Ev.BALANCE]
        for asset, amount in zip(balance["market"].tolist(), balance["qty"].tolist()):
            net[asset] += amount
        check_perp_invariants(e, net)
        venue = events[events["kind"] == Ev.VENUE]
        seen["settings"] += int(np.count_nonzero((venue["flags"] == 130) | (venue["flags"] == 131)))
        rejected = events[events["kind"] == Ev.REJECTED]["code"].tolist()
        for code in (RC.COLLATERAL_PRICE_MISSING, RC.COLLATERAL_WEIGHT_ABOVE_BOUND, RC.INVALID_PRICE_MARKET):
            seen[code.name] += rejected.count(code)
        seen["loans"] += sum(1 for a in e.accounts() for asset, (free, _) in e.balances(a).items()
                             if free < 0 and any(f > 0 for other, (f, _) in e.balances(a).items() if other != asset))
    assert all(seen[k] > 0 for k in ("settings", "loans", "COLLATERAL_PRICE_MISSING", "COLLATERAL_WEIGHT_ABOVE_BOUND",
                                     "INVALID_PRICE_MARKET")), dict(seen)


@pytest.mark.parametrize("seed", range(4))
def test_random_crashes_with_collateral_differential_and_invariants(seed):
    """test_liquidation's random crash streams in unified mode: the traders also hold BTC, priced by the perpetual's
    own mark at 70 %, so they borrow USD against it, a crash takes both their positions and their collateral down,
    and liquidations close at the unified bankruptcy price and sell BTC to the fund.  Both engines event for event,
    the perpetual invariants (conservation of USD and BTC) after every command on the reference model."""
    import random
    from collections import defaultdict

    from test_liquidation import ADMIN as LADMIN, DEPOSITS, PERP as LPERP, liq_world, random_crash_commands, replay_on_both
    from test_perp import check_perp_invariants

    r = random.Random(seed)
    engines = [liq_world(cls) for cls in (Engine, ReferenceEngine)]
    for e in engines:
        ok(e.set_collateral_asset(LADMIN, USD, 0, 10_000))
        ok(e.set_collateral_asset(LADMIN, BTC, LPERP, 7_000))
    cmds = [("deposit", dict(account=a, asset=BTC, amount=r.choice([10, 50, 200]))) for a in range(30, 42)]
    cmds += random_crash_commands(seed)
    ref = engines[1]
    net = defaultdict(int)
    net[USD] = sum(DEPOSITS.values())
    seen = defaultdict(int)
    for _, ev in replay_on_both(engines, cmds, net, check_perp_invariants):
        seen["liquidated"] += int(np.count_nonzero(ev["kind"] == Ev.LIQUIDATED))
        seen["sold"] += int(np.count_nonzero((ev["kind"] == Ev.VENUE_TRANSFER) & (ev["reason"] == Transfer.COLLATERAL_SOLD)))
        seen["borrowed"] += sum(1 for a in range(30, 42) if ref.balance(a, USD)[0] < 0 < ref.balance(a, BTC)[0])
    assert seen["liquidated"] > 0 and seen["sold"] > 0 and seen["borrowed"] > 0, dict(seen)


@pytest.mark.parametrize("seed", [31, 32])
def test_collateral_with_isolated_positions_differential_and_invariants(seed, tmp_path):
    """The unified account and isolated margin in one stream: Cython = reference event for event, and on the
    reference the perpetual invariants after every chunk, with isolated positions, loans and isolated liquidations."""
    from collections import defaultdict

    from test_differential import run_differential
    from test_perp import check_perp_invariants

    from generators import ENGINE_KWARGS, IsolatedCollateralStreamGenerator, run_stream

    stats = run_differential(seed, 12_000, dump_dir=tmp_path, generator=IsolatedCollateralStreamGenerator)
    assert stats["fills"] > 300
    e = ReferenceEngine(**ENGINE_KWARGS)
    gen = IsolatedCollateralStreamGenerator(seed, limits=dict(ENGINE_KWARGS))
    net: dict[int, int] = defaultdict(int)
    seen: dict[str, int] = defaultdict(int)
    for cmds, events in run_stream(e, gen, 8_000, chunk=100):
        balance = events[events["kind"] == Ev.BALANCE]
        for asset, amount in zip(balance["market"].tolist(), balance["qty"].tolist()):
            net[asset] += amount
        check_perp_invariants(e, net)
        venue = events[events["kind"] == Ev.VENUE]
        seen["modes"] += int(np.count_nonzero(venue["flags"] == Cmd.MARGIN_MODE))
        seen["collateral"] += int(np.count_nonzero(venue["flags"] == Cmd.COLLATERAL_ASSET))
    seen["isolated"] = len(e.margin_modes())
    assert seen["modes"] > 0 and seen["collateral"] > 0 and seen["isolated"] > 0, dict(seen)


@pytest.mark.parametrize("seed", [1, 2])
def test_collateral_with_outcome_shares_differential_and_invariants(seed, tmp_path):
    """The unified account with outcome markets in one stream: the unified checks value outcome shares at the outcome
    mark thousands of times (most with a mark); Cython = reference event for event, and on the reference the outcome
    and conservation invariants (test_outcome_stream's, with loans) after every chunk."""
    from collections import defaultdict

    from test_differential import run_differential
    from test_outcome_stream import check_stream_invariants

    from generators import ENGINE_KWARGS, OutcomeCollateralStreamGenerator, run_stream

    stats = run_differential(seed, 12_000, dump_dir=tmp_path, generator=OutcomeCollateralStreamGenerator)
    assert stats["fills"] > 200
    e = ReferenceEngine(**ENGINE_KWARGS)
    gen = OutcomeCollateralStreamGenerator(seed, limits=dict(ENGINE_KWARGS))
    net: dict[int, int] = defaultdict(int)
    shares = 0
    for cmds, events in run_stream(e, gen, 8_000, chunk=100):
        balance = events[events["kind"] == Ev.BALANCE]
        for asset, amount in zip(balance["market"].tolist(), balance["qty"].tolist()):
            net[asset] += amount
        check_stream_invariants(e, net, loans=True)
        shares += int(np.count_nonzero(events["kind"] == Ev.OUTCOME_POSITION))
    assert shares > 50 and e.collateral_assets(), shares


@pytest.mark.parametrize("seed", [1, 3])
def test_collateral_with_caps_and_multi_leg_orders_differential(seed, tmp_path):
    """Exposure caps and multi-leg orders in the unified account: Cython = reference event for event, and caps do
    refuse orders against the unified equity."""
    from test_differential import run_differential

    from generators import ENGINE_KWARGS, CollateralMultiLegStreamGenerator, run_stream

    run_differential(seed, 12_000, dump_dir=tmp_path, generator=CollateralMultiLegStreamGenerator)
    e = ReferenceEngine(**ENGINE_KWARGS)
    gen = CollateralMultiLegStreamGenerator(seed, limits=dict(ENGINE_KWARGS))
    refused = sum(int(np.count_nonzero(events["code"] == RC.EXPOSURE_CAP_EXCEEDED))
                  for _, events in run_stream(e, gen, 12_000, chunk=200))
    assert refused > 0 and e.collateral_assets() and e.exposure_caps()


@pytest.mark.parametrize("seed", [0, 2, 4, 6, 7, 8])  # seeds whose crashes reach a share sale
def test_random_crashes_with_outcome_shares_as_collateral(seed):
    """test_liquidation's random crash streams in unified mode where the traders' collateral is BTC and YES shares of
    an outcome market (a two-sided book, so the shares have a mark): liquidations sell both to the fund. Both engines
    event for event; on the reference after every command the outcome and conservation invariants (with loans)."""
    import random
    from collections import defaultdict

    from test_liquidation import (ADMIN as LADMIN, DEPOSITS, D as LMAKER, PERP as LPERP, liq_world, random_crash_commands,
                                  replay_on_both)
    from test_outcome_stream import check_stream_invariants

    YES, SHARES = 7, 12  # the outcome market's share asset and id (payout 1000 per lot of 10)
    r = random.Random(seed)
    engines = [liq_world(cls) for cls in (Engine, ReferenceEngine)]
    setup = [("add_asset", dict(asset_id=YES, symbol="YES", decimals=0)),
             ("add_market", dict(market_id=SHARES, base=YES, quote=USD, tick_size=1, lot_size=10, min_size=10,
                                 kind=MarketKind.OUTCOME)),
             ("configure_outcome", dict(account=LADMIN, market=SHARES, payout=1000, resolver=LADMIN)),
             ("set_collateral_asset", dict(account=LADMIN, asset=USD, price_market=0, max_weight_bps=10_000)),
             ("set_collateral_asset", dict(account=LADMIN, asset=BTC, price_market=LPERP, max_weight_bps=7_000)),
             ("place", dict(account=LMAKER, market=SHARES, side=1, price=600, qty=600, client_id=9001)),
             ("place", dict(account=LMAKER, market=SHARES, side=0, price=500, qty=100, client_id=9002))]
    for a in range(30, 42):  # each trader buys 1-4 lots of YES (mark: bid 500, ask 600, last 600) and some BTC
        lots = r.randint(1, 4)
        setup += [("deposit", dict(account=a, asset=USD, amount=600 * lots)),
                  ("place", dict(account=a, market=SHARES, side=0, price=600, qty=10 * lots, client_id=9000 + a,
                                 tif=Tif.IOC)),
                  ("deposit", dict(account=a, asset=BTC, amount=r.choice([0, 0, 10])))]  # 0: shares only
    net = defaultdict(int)
    net[USD] = sum(DEPOSITS.values())
    seen = defaultdict(int)
    cmds = setup + random_crash_commands(seed)
    for i, ev in replay_on_both(engines, cmds, net, lambda ref, net: check_stream_invariants(ref, net, loans=True)):
        assert i >= len(setup) or not (ev["kind"] == Ev.REJECTED).any(), cmds[i]  # the setup all goes through
        seen["liquidated"] += int(np.count_nonzero(ev["kind"] == Ev.LIQUIDATED))
        seen["shares sold"] += int(np.count_nonzero((ev["kind"] == Ev.OUTCOME_POSITION)
                                                    & (ev["reason"] == OutcomeChange.COLLATERAL)))
    assert seen["liquidated"] > 0 and seen["shares sold"] > 0, dict(seen)
