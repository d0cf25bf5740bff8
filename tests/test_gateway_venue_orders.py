"""Orders through the gateway on a chosen venue: real sockets (CurveZMQ over ipc) into a supervised
engine with the built-in default's venues (1 permissionless, operator 1001; 2 an allow-list of
1002 and 1003) on the shared BTC/USDT book.  The venue goes from PlaceOrder, Batch and OrderRows
into the command; the matcher's answer (a fill across venues, ACCOUNT_NOT_ALLOWED) comes back, and
the venue shows in acks' orders, execution reports, order status and open orders."""
from __future__ import annotations

import asyncio
import time

import pytest

from engine.records import Cmd
from gateway import messages as m
from gateway.client import InvalidOrder

from gateway_harness import GatewayEngine, connected, default_like, order_rows, run

ACCOUNTS = {"op1": 1001, "op2": 1002, "demo": 1003}
PRICE = 5_000_000  # BTC/USDT: quote units per lot of 100,000 (0.001 BTC)
LOT = 100_000


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    e = GatewayEngine(tmp_path_factory.mktemp("gwvenueorders"), ACCOUNTS, default_like())
    yield e
    e.stop()


async def until(check, what: str, timeout_s: float = 5.0):
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


def test_an_order_on_the_permissionless_venue_trades_with_venue_0s(engine):
    async def scenario():
        op1, demo = await connected(engine, "op1", "demo")
        ask = await demo.create_order("BTC/USDT", "limit", "sell", 2 * LOT, PRICE, {"clientOrderId": 1})
        assert ask["venue"] == 0  # no venue given: the protocol's venue 0
        bid = await op1.create_order("BTC/USDT", "limit", "buy", LOT, PRICE, {"clientOrderId": 1, "venue": 1})
        assert bid["venue"] == 1 and bid["status"] == "closed" and bid["trades"][0]["takerOrMaker"] == "taker"
        assert engine.journal()[bid["info"].cmd_seq - 1]["venue"] == 1  # the command carried it
        await until(lambda: demo.orders[int(ask["id"])]["filled"] == LOT, "the maker's fill report")
        maker = await demo.fetch_order(ask["id"])
        assert (maker["venue"], maker["remaining"], maker["status"]) == (0, LOT, "open")
        rest = await op1.create_order("BTC/USDT", "limit", "buy", LOT, PRICE - 100, {"clientOrderId": 2, "venue": 1})
        assert [(o["id"], o["venue"]) for o in await op1.fetch_open_orders("BTC/USDT")] == [(rest["id"], 1)]
        status = await op1.fetch_order(params={"clientOrderId": 2})
        assert status["info"].venue == 1
        for c, o in ((op1, rest), (demo, ask)):
            await c.cancel_order(o["id"])
            await c.close()

    run(scenario())


def test_an_account_off_the_allow_list_is_refused_by_the_matcher_on_every_path(engine):
    async def scenario():
        (op1,) = await connected(engine, "op1")
        with pytest.raises(InvalidOrder, match="ACCOUNT_NOT_ALLOWED"):
            await op1.create_order("BTC/USDT", "limit", "buy", LOT, PRICE - 200, {"clientOrderId": 10, "venue": 2})
        with pytest.raises(InvalidOrder, match="UNKNOWN_VENUE"):
            await op1.create_order("BTC/USDT", "limit", "buy", LOT, PRICE - 200, {"clientOrderId": 10, "venue": 77})
        placed = await op1.create_orders([dict(symbol="BTC/USDT", side="buy", amount=LOT, price=PRICE - 200,
                                               params={"clientOrderId": cid, "venue": venue})
                                          for cid, venue in ((11, 1), (12, 2))])
        assert placed[0]["status"] == "open" and placed[0]["venue"] == 1
        assert placed[1]["status"] == "rejected" and placed[1]["error"].name == "ACCOUNT_NOT_ALLOWED"
        bid = dict(kind=Cmd.PLACE, side=0, market=1, price=PRICE - 200, qty=LOT, id=13)
        (refused,) = await op1.send_order_rows(order_rows(bid), {"venue": 2})
        assert type(refused) is m.Reject and refused.name == "ACCOUNT_NOT_ALLOWED" and refused.client_id == 13
        assert refused.cmd_seq and engine.journal()[refused.cmd_seq - 1]["venue"] == 2
        assert [(o["clientOrderId"], o["venue"]) for o in await op1.fetch_open_orders()] == [("11", 1)]
        await op1.cancel_all_orders()
        await op1.close()

    run(scenario())


def test_order_rows_carry_their_venue_and_packed_reports_name_each_sides_venue(engine):
    async def scenario():
        demo, op1 = await connected(engine, "demo", "op1")
        ask = dict(kind=Cmd.PLACE, side=1, market=1, price=PRICE, qty=LOT, id=20, venue=2)  # the row's own venue
        (ask,) = await demo.send_order_rows(order_rows(ask))
        assert type(ask) is m.Ack
        assert [(o["id"], o["venue"]) for o in await demo.fetch_open_orders()] == [(str(ask.order_id), 2)]
        (watcher,) = await connected(engine, "demo")  # a second session of 1003: it learns the order from reports
        bid = dict(kind=Cmd.PLACE, side=0, market=1, price=PRICE, qty=LOT, id=21)
        (bid,) = await op1.send_order_rows(order_rows(bid), {"venue": 1})
        assert type(bid) is m.Ack
        await until(lambda: bid.order_id in op1.orders and ask.order_id in watcher.orders, "the fill reports")
        taker, maker = op1.orders[bid.order_id], watcher.orders[ask.order_id]
        assert (taker["venue"], taker["filled"], taker["trades"][0]["takerOrMaker"]) == (1, LOT, "taker")
        assert (maker["venue"], maker["status"], maker["trades"][0]["takerOrMaker"]) == (2, "closed", "maker")
        for c in (demo, op1, watcher):
            await c.close()

    run(scenario())


def test_cancel_all_orders_of_one_venue(engine):
    """A market maker quoting one book through venues 0 and 1 pulls venue 1's quotes only (MassCancel.venue)."""
    async def scenario():
        (op1,) = await connected(engine, "op1")
        for cid, venue in ((30, 0), (31, 1), (32, 1)):
            await op1.create_order("BTC/USDT", "limit", "buy", LOT, PRICE - 100 * cid, {"clientOrderId": cid, "venue": venue})
        cancelled = await op1.cancel_all_orders("BTC/USDT", {"venue": 1})
        assert sorted(o["clientOrderId"] for o in cancelled) == ["31", "32"]
        assert engine.journal()[-1]["venue"] == 1
        assert [(o["clientOrderId"], o["venue"]) for o in await op1.fetch_open_orders()] == [("30", 0)]
        with pytest.raises(InvalidOrder, match="UNKNOWN_VENUE"):
            await op1.cancel_all_orders(params={"venue": 77})
        await op1.cancel_all_orders()
        assert await op1.fetch_open_orders() == []
        await op1.close()

    run(scenario())
