"""Multi-leg orders and exposure caps through the gateway (issue 9): real sockets (CurveZMQ over ipc) into a
supervised engine with spot BTC/USD and ETH/USD and a SOL/USD:USD perpetual, all offered by venue 1 too.  A
MultiLegOrder goes into the matcher as one header and its legs, is answered once (Ack when its legs' Accepted are
durable, or one Reject naming the leg) and its legs' fills come as execution reports; SetExposureCap goes as the
session's account and the matcher's cap check answers the orders after it."""
from __future__ import annotations

import asyncio
import re
import time

import msgspec
import pytest

from engine.records import Cmd
from engine.venues import rebuild
from gateway import messages as m
from gateway.client import BadRequest, InvalidOrder
from gateway.server import TokenBucket

from gateway_harness import GatewayEngine, connected, funded, run, unit_market
from test_venues import state

KEYS = {"maker": 21, "trader": 31}
BTC_USD, ETH_USD, SOL_PERP = 1, 2, 3
FUND = 1_000_000


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    e = GatewayEngine(tmp_path_factory.mktemp("gwmultileg"), KEYS, {
        "assets": [dict(id=1, symbol="USD", decimals=2), dict(id=2, symbol="BTC", decimals=0),
                   dict(id=3, symbol="ETH", decimals=0), dict(id=4, symbol="SOL", decimals=0),
                   dict(id=5, symbol="OKB", decimals=0)],
        "markets": [unit_market(BTC_USD, "BTC", "USD"), unit_market(ETH_USD, "ETH", "USD"),
                    unit_market(SOL_PERP, "SOL", "USD", kind="perpetual")],
        "accounts": funded((11, 21, 31), USD=FUND, BTC=FUND, ETH=FUND, SOL=FUND, OKB=FUND),
        "venues": dict(admin=99, protocol_account=98, stake_asset="OKB", min_stake=1000,
                       launch=[dict(id=1, operator=11, insurance_account=901, stake=5000,
                                    markets=[BTC_USD, ETH_USD, SOL_PERP])]),
    })
    yield e
    e.stop()


async def until(check, what: str, timeout_s: float = 5.0):
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


def leg(market, side, amount, price, client_id, **params) -> dict:
    return {"symbol": market, "side": side, "amount": amount, "price": price,
            "params": {"clientOrderId": client_id, **params}}


def test_all_legs_fill_across_markets_and_venues_answered_once(engine):
    async def scenario():
        maker, trader = await connected(engine, "maker", "trader")
        asks = [await maker.create_order(BTC_USD, "limit", "sell", 5, 100, {"clientOrderId": 1}),
                await maker.create_order(SOL_PERP, "limit", "sell", 5, 30, {"clientOrderId": 3})]
        bid = await maker.create_order(ETH_USD, "limit", "buy", 5, 50, {"clientOrderId": 2, "venue": 1})
        unit = await trader.create_multi_leg_order(
            [leg(BTC_USD, "buy", 3, 100, 11), leg(ETH_USD, "sell", 2, 50, 12, venue=1),
             leg(SOL_PERP, "buy", 4, 30, 13, venue=1)], {"clientOrderId": 77})
        await until(lambda: [maker.orders[int(o["id"])]["filled"] for o in (*asks, bid)] == [3, 4, 2],
                    "the makers' fill reports")
        status = [await trader.fetch_order(params={"clientOrderId": c}) for c in (11, 12, 13)]
        open_orders = await trader.fetch_open_orders()
        for c in (maker, trader):
            await c.close()
        return unit, status, open_orders

    unit, status, open_orders = run(scenario())
    ack = unit["info"]
    assert (unit["clientOrderId"], ack.client_id) == ("77", 77) and ack.durable_seq >= ack.cmd_seq + 3
    # the legs' orders, numbered in leg order, filled in full by their execution reports
    assert [(o["id"], o["clientOrderId"], o["status"], o["amount"], o["filled"], o["remaining"], o["venue"],
             o["timeInForce"]) for o in unit["legs"]] == [
        (str(ack.order_id), "11", "closed", 3, 3, 0, 0, "FOK"), (str(ack.order_id + 1), "12", "closed", 2, 2, 0, 1, "FOK"),
        (str(ack.order_id + 2), "13", "closed", 4, 4, 0, 1, "FOK")]
    assert [t["takerOrMaker"] for o in unit["legs"] for t in o["trades"]] == ["taker"] * 3
    # order status knows the legs like orders; none rests
    assert [(s["id"], s["status"], s["filled"], s["venue"]) for s in status] == [
        (o["id"], "closed", o["amount"], o["venue"]) for o in unit["legs"]]
    assert open_orders == []
    # one header and its legs in the journal, all as the key's account
    sent = engine.journal()[ack.cmd_seq - 1:ack.cmd_seq + 3]
    assert sent["kind"].tolist() == [Cmd.MULTI_LEG, Cmd.LEG, Cmd.LEG, Cmd.LEG]
    assert set(sent["account"].tolist()) == {31} and int(sent[0]["id"]) == 77 and int(sent[0]["qty"]) == 3
    e = rebuild(engine.cfg)[0]
    assert e.balance(31, 2)[0] == FUND + 3 and e.balance(31, 3)[0] == FUND - 2
    assert e.position(31, SOL_PERP).size == 4 and e.position(21, SOL_PERP).size == -4


def test_one_thin_leg_rejects_the_whole_naming_it_and_changes_nothing(engine):
    before = state(rebuild(engine.cfg)[0])

    async def scenario():
        (trader,) = await connected(engine, "trader")
        with pytest.raises(InvalidOrder, match="LEG_NOT_FILLABLE") as thin:  # the ETH bid has 3 left
            await trader.create_multi_leg_order([leg(BTC_USD, "buy", 2, 100, 21), leg(ETH_USD, "sell", 9, 50, 22)],
                                                {"clientOrderId": 78})
        with pytest.raises(InvalidOrder, match="DUPLICATE_LEG_MARKET") as duplicate:
            await trader.create_multi_leg_order([leg(BTC_USD, "buy", 1, 100, 23), leg(BTC_USD, "buy", 1, 100, 24)],
                                                {"clientOrderId": 79})
        open_orders = await trader.fetch_open_orders()
        await trader.close()
        return thin.value, duplicate.value, open_orders

    thin, duplicate, open_orders = run(scenario())
    assert (thin.leg, duplicate.leg) == (2, 2) and "leg 2 (client id 22)" in thin.reason
    assert open_orders == []
    assert state(rebuild(engine.cfg)[0]) == before  # the first leg would have filled alone: nothing did


def test_a_bad_field_is_refused_naming_it_and_the_session_goes_on(engine):
    good = m.OrderLeg(market=BTC_USD, side=0, price=100, qty=1, client_id=31)

    async def scenario():
        (trader,) = await connected(engine, "trader")
        refusals = []
        for legs, parent in (([good, m.OrderLeg(market=ETH_USD, side=7, price=50, qty=1, client_id=32)], 80),
                             ([good], 81), ([good] * 5, 82), ([good, msgspec.structs.replace(good, price=1.5)], 83),
                             ([good, m.OrderLeg(market=ETH_USD, side=1, price=50, qty=1, client_id=32)], 0)):
            with pytest.raises(BadRequest) as refused:
                await trader.request(m.MultiLegOrder(rid=trader.next_rid(), client_id=parent, legs=legs))
            refusals.append(refused.value.reason)
        with pytest.raises(ValueError, match=r"legs\[1\]\.params\['clientOrderId'\]"):
            await trader.create_multi_leg_order([leg(BTC_USD, "buy", 1, 100, 33), {"symbol": ETH_USD, "side": "sell",
                                                                                   "amount": 1, "price": 50}],
                                                {"clientOrderId": 84})
        with pytest.raises(TypeError, match=r"legs\[0\]\.amount"):
            await trader.create_multi_leg_order([leg(BTC_USD, "buy", 1.0, 100, 33), leg(ETH_USD, "sell", 1, 50, 34)],
                                                {"clientOrderId": 85})
        served = await trader.heartbeat()
        await trader.close()
        return refusals, served

    refusals, served = run(scenario())
    assert [re.search(r"(multi_leg\.[\w\[\].]+): ", r).group(1) for r in refusals] == [
        "multi_leg.legs[1].side", "multi_leg.legs", "multi_leg.legs", "multi_leg.legs[1].price", "multi_leg.client_id"]
    assert served > 0


def test_an_exposure_cap_is_set_as_the_keys_account_and_binds_its_orders(engine):
    async def scenario():
        (trader,) = await connected(engine, "trader")
        # venue 0 lists the perpetual: its group may use 10 % of the trader's equity (about 100,000 cents)
        ack = await trader.send_command(m.SetExposureCap, venue=0, cap_bps=1000)
        caps = rebuild(engine.cfg)[0].exposure_caps()
        with pytest.raises(InvalidOrder, match="EXPOSURE_CAP_EXCEEDED"):
            await trader.create_order(SOL_PERP, "limit", "buy", 6_000, 20, {"clientOrderId": 41})  # holds 120,000
        with pytest.raises(InvalidOrder, match="EXPOSURE_CAP_EXCEEDED") as unit:
            await trader.create_multi_leg_order([leg(BTC_USD, "buy", 1, 100, 42), leg(SOL_PERP, "buy", 6_000, 20, 43)],
                                                {"clientOrderId": 86})
        small = await trader.create_order(SOL_PERP, "limit", "buy", 1_000, 20, {"clientOrderId": 44})  # 20,000
        spot = await trader.create_order(BTC_USD, "limit", "buy", 500, 90, {"clientOrderId": 45})  # spot: uncapped
        with pytest.raises(InvalidOrder, match="INVALID_EXPOSURE_CAP"):
            await trader.send_command(m.SetExposureCap, venue=0, cap_bps=10_001)
        with pytest.raises(InvalidOrder, match="UNKNOWN_VENUE"):
            await trader.send_command(m.SetExposureCap, venue=7, cap_bps=1000)
        removed = await trader.send_command(m.SetExposureCap, venue=0, cap_bps=0)
        for o in (small, spot):
            await trader.cancel_order(o["id"])
        await trader.close()
        return ack, caps, unit.value, removed

    ack, caps, unit, removed = run(scenario())
    sent = engine.journal()[ack.cmd_seq - 1]
    assert (int(sent["kind"]), int(sent["account"]), int(sent["venue"]), int(sent["qty"])) == \
        (Cmd.SET_EXPOSURE_CAP, 31, 0, 1000)
    assert ack.durable_seq >= ack.cmd_seq and (ack.order_id, ack.client_id) == (0, 0)
    assert caps == [(31, 0, 1000)] and unit.leg == 2
    assert int(engine.journal()[removed.cmd_seq - 1]["qty"]) == 0 and rebuild(engine.cfg)[0].exposure_caps() == []


def test_the_rate_limit_takes_a_units_legs_all_or_none():
    bucket = TokenBucket(6)
    now = bucket.last
    assert bucket.take(now, 100, 6, 4)  # a 4-leg order
    assert not bucket.take(now, 100, 6, 4) and bucket.tokens == 2  # refused whole: the 2 left stay
    assert bucket.take(now + 0.021, 100, 6, 4)  # 21 ms at 100/s refill two (and a bit: clock floats round)
