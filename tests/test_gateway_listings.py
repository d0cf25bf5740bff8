"""Markets listed at runtime reach the gateway's clients (issue 7): real sockets (CurveZMQ over ipc) into a supervised
engine with the built-in default's venues.  Venue 1's operator lists ETH/BTC with ListMarket through the gateway; a
client that loaded the markets before reloads them, finds it by symbol with its kind, venue, sizes and fees, and an
order on it trades; a gateway restarted alone learns it again from the ring."""
from __future__ import annotations

import pytest

from gateway import messages as m
from gateway.client import InvalidOrder

from gateway_harness import GatewayEngine, connected, default_like, restart_gateway, run

ACCOUNTS = {"op1": 1001, "demo": 1003}
ETH, BTC = 3, 2  # the default's asset ids
ETH_BTC = 10
LISTING = dict(venue=1, market=ETH_BTC, base=ETH, quote=BTC, tick_size=10, lot_size=1_000, min_size=2_000,
               maker_bps=-1, taker_bps=4, band_bps=0, market_kind=0)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    e = GatewayEngine(tmp_path_factory.mktemp("gwlistings"), ACCOUNTS, default_like())
    yield e
    e.stop()


def test_a_market_listed_by_a_venue_is_traded_by_symbol_and_survives_a_gateway_restart(engine):
    async def list_and_trade():
        op1, demo = await connected(engine, "op1", "demo")  # both loaded the config's markets on connect
        assert "ETH/BTC" not in await demo.load_markets()
        with pytest.raises(InvalidOrder, match="no market 'ETH/BTC'"):
            await demo.create_order("ETH/BTC", "limit", "buy", 2_000, 50_000, {"clientOrderId": 1, "venue": 1})
        ack = await op1.send_command(m.ListMarket, **LISTING)
        assert ack.cmd_seq > 0
        assert "ETH/BTC" not in await demo.load_markets()  # without reload: what it had
        listed = (await demo.load_markets(reload=True))["ETH/BTC"]
        assert {k: listed[k] for k in ("id", "kind", "venue", "tick_size", "lot_size", "maker_bps", "taker_bps",
                                       "base_decimals", "quote_decimals")} == dict(
            id=ETH_BTC, kind="spot", venue=1, tick_size=10, lot_size=1_000, maker_bps=-1, taker_bps=4,
            base_decimals=8, quote_decimals=8)
        assert listed["limits"]["amount"]["min"] == 2_000
        listed = await demo.load_markets()
        btc_usdt = listed["BTC/USDT"]  # the config's, now with the same fields
        assert (btc_usdt["kind"], btc_usdt["venue"], btc_usdt["maker_bps"], btc_usdt["taker_bps"]) == ("spot", 0, -1, 5)
        assert (listed["BTC/USDT:USDT"]["id"], listed["BTC/USDT:USDT"]["kind"]) == (4, "perpetual")
        assert (listed["BTC70K/USDT"]["id"], listed["BTC70K/USDT"]["kind"]) == (5, "outcome")
        await op1.load_markets(reload=True)
        ask = await op1.create_order("ETH/BTC", "limit", "sell", 4_000, 50_000, {"clientOrderId": 1, "venue": 1})
        bid = await demo.create_order("ETH/BTC", "limit", "buy", 2_000, 50_000, {"clientOrderId": 1, "venue": 1})
        assert bid["status"] == "closed" and bid["symbol"] == "ETH/BTC"
        assert [(t["amount"], t["price"], t["takerOrMaker"]) for t in bid["trades"]] == [(2_000, 50_000, "taker")]
        maker = await op1.fetch_order(ask["id"])
        assert (maker["symbol"], maker["filled"], maker["remaining"]) == ("ETH/BTC", 2_000, 2_000)
        await op1.cancel_order(ask["id"])
        for c in (op1, demo):
            await c.close()

    async def after_restart():
        (demo,) = await connected(engine, "demo")
        markets = await demo.load_markets()
        assert markets["ETH/BTC"]["id"] == ETH_BTC and markets["ETH/BTC"]["venue"] == 1
        assert sorted(k["id"] for k in markets.values()) == [1, 2, 3, 4, 5, ETH_BTC]  # 4, 5: the perpetual, the yes/no
        await demo.close()

    run(list_and_trade())
    restart_gateway(engine)
    run(after_restart())


def test_market_symbols_keep_a_spot_market_and_its_perpetual_apart():
    """CCXT's unified symbols: a perpetual is BASE/QUOTE:QUOTE; a second market of one name gets #ID, by market id."""
    from engine.records import MarketKind
    from gateway.listings import market_symbols

    got = market_symbols([(7, "BTC", "USDT", int(MarketKind.SPOT)), (4, "BTC", "USDT", "perpetual"),
                          (1, "BTC", "USDT", "spot"), (9, "BTC", "USDT", int(MarketKind.PERPETUAL)),
                          (5, "YES", "USDT", "outcome")])
    assert got == {1: "BTC/USDT", 4: "BTC/USDT:USDT", 5: "YES/USDT", 7: "BTC/USDT#7", 9: "BTC/USDT:USDT#9"}
