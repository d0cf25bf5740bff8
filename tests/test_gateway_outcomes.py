"""Outcome markets and liquidation through the gateway: real sockets (CurveZMQ over ipc) into a
supervised engine with a perpetual market (1) and an event of two outcome markets (3, 4).  Each
command goes as the session's account; the matcher decides who may (the admin configures, only the
resolver's key resolves, any key liquidates a target the matcher itself finds under maintenance)."""
from __future__ import annotations

import asyncio
import os
import signal

import pytest

from engine.records import Cmd
from engine.venues import rebuild
from gateway import messages as m
from gateway.client import BadRequest, GatewayError, InvalidOrder, PermissionDenied

from gateway_harness import GatewayEngine, connected, funded, run, unit_market

KEYS = {"admin": 99, "resolver": 21, "alice": 31, "bob": 32, "carol": 33, "keeper": 41, "dave": 34, "erin": 35}
PERP, YES_A, YES_B = 1, 3, 4  # YES_A and YES_B: the two outcomes of event 7
PAYOUT = 100  # USD cents per outcome lot


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    e = GatewayEngine(tmp_path_factory.mktemp("gwoutcomes"), KEYS, {
        "assets": [dict(id=1, symbol="USD", decimals=2), dict(id=2, symbol="BTC", decimals=0),
                   dict(id=3, symbol="ELA", decimals=0), dict(id=4, symbol="ELB", decimals=0)],
        "markets": [unit_market(PERP, "BTC", "USD", kind="perpetual"),
                    unit_market(YES_A, "ELA", "USD", kind="outcome"), unit_market(YES_B, "ELB", "USD", kind="outcome")],
        # carol's 150 carries a 10-lot long at 100 with 10x leverage (margin 100) until the mark falls below 90
        "accounts": funded((31, 32, 34, 35, 98), USD=1_000_000) + funded((33,), USD=150),
        "venues": dict(admin=99, protocol_account=98, stake_asset="USD", min_stake=1000),
    })
    yield e
    e.stop()


def state(engine):
    return rebuild(engine.cfg)[0]


def sent(engine, ack: m.Ack) -> tuple[int, int]:
    """The journaled command an Ack answers: (kind, account)."""
    cmd = engine.journal()[ack.cmd_seq - 1]
    return int(cmd["kind"]), int(cmd["account"])


def test_a_trader_isolates_a_position_and_moves_its_margin(engine):
    """Isolated margin through the gateway (first in this module: the later crash halts the market): SetMarginMode
    (only while flat), IsolatedMargin added and reduced, each acked once durable or refused with the matcher's code;
    the journal holds them as dave's commands."""
    async def scenario():
        dave, erin = await connected(engine, "dave", "erin")
        mode = await dave.set_margin_mode("isolated", "BTC/USD:USD")
        with pytest.raises(GatewayError, match="MARGIN_MODE_UNCHANGED"):
            await dave.set_margin_mode("isolated", PERP)
        with pytest.raises(GatewayError, match="NO_ISOLATED_POSITION"):  # nothing open yet
            await dave.add_margin(PERP, 50)
        await erin.create_order(PERP, "limit", "sell", 2, 100, {"clientOrderId": 40})
        await dave.create_order(PERP, "limit", "buy", 2, 100, {"clientOrderId": 40})
        added = await dave.add_margin(PERP, 50)
        with pytest.raises(GatewayError, match="ISOLATED_MARGIN_SHORT"):  # below the initial margin
            await dave.reduce_margin(PERP, 10_000)
        reduced = await dave.reduce_margin(PERP, 20)
        with pytest.raises(GatewayError, match="POSITION_OPEN"):
            await dave.set_margin_mode("cross", PERP)
        with pytest.raises(ValueError, match="marginMode"):
            await dave.set_margin_mode("portfolio", PERP)
        for c in (dave, erin):
            await c.close()
        return mode, added, reduced

    acks = run(scenario())
    assert [sent(engine, ack) for ack in acks] == [(Cmd.MARGIN_MODE, 34), (Cmd.ISOLATED_MARGIN, 34),
                                                   (Cmd.ISOLATED_MARGIN, 34)]
    assert [int(engine.journal()[ack.cmd_seq - 1]["qty"]) for ack in acks] == [1, 50, -20]
    e = state(engine)
    assert (34, PERP) in e.margin_modes()
    leverage = {r.market_id: r.max_leverage for r in e.market_risks()}[PERP]
    p = e.position(34, PERP)
    assert (p.size, p.entry_value, p.margin) == (2, 200, -(-200 // leverage) + 50 - 20)


def test_the_admin_configures_a_trader_converts_and_only_the_resolver_resolves(engine):
    async def scenario():
        admin, resolver, alice, bob = await connected(engine, "admin", "resolver", "alice", "bob")
        acks = [await admin.send_command(m.OutcomeConfig, market=market, payout=PAYOUT, resolver=21, event=7)
                for market in (YES_A, YES_B)]
        with pytest.raises(PermissionDenied, match="NOT_VENUE_OPERATOR"):
            await bob.send_command(m.OutcomeConfig, market=YES_A, payout=PAYOUT, resolver=32)
        await alice.create_order(YES_A, "limit", "sell", 10, 40, {"clientOrderId": 1})  # buys NO at 60
        await bob.create_order(YES_A, "limit", "buy", 10, 40, {"clientOrderId": 1})
        acks.append(await alice.send_command(m.Convert, market=YES_A, qty=4))  # 4 NO of A -> 4 YES of B
        with pytest.raises(InvalidOrder, match="NO_SHARES_TO_CONVERT"):
            await bob.send_command(m.Convert, market=YES_A, qty=1)  # bob holds YES, not NO
        with pytest.raises(BadRequest, match=r"convert\.qty"):
            await alice.send_command(m.Convert, market=YES_A, qty=0)
        with pytest.raises(BadRequest, match=r"resolve\.outcome"):
            await resolver.send_command(m.Resolve, market=YES_B, outcome=2)
        with pytest.raises(BadRequest, match=r"outcome_config\.resolver"):
            await admin.send_command(m.OutcomeConfig, market=YES_A, payout=PAYOUT, resolver=0)
        resting = await alice.create_order(YES_B, "limit", "buy", 1, 30, {"clientOrderId": 2})
        with pytest.raises(PermissionDenied, match="NOT_RESOLVER"):
            await bob.send_command(m.Resolve, market=YES_B, outcome=1)
        # B wins the event: A resolves NO first (configuration order), alice's order in B is cancelled
        # first of all; the Ack still answers the Resolve
        acks.append(await resolver.send_command(m.Resolve, market=YES_B, outcome=1))
        cancelled = await alice.fetch_order(resting["id"])
        for c in (admin, resolver, alice, bob):
            await c.close()
        return acks, cancelled

    acks, cancelled = run(scenario())
    assert [sent(engine, a) for a in acks] == [(Cmd.OUTCOME_CONFIG, 99), (Cmd.OUTCOME_CONFIG, 99),
                                               (Cmd.CONVERT, 31), (Cmd.RESOLVE, 21)]
    assert all(a.durable_seq >= a.cmd_seq > 0 and a.order_id == 0 and a.client_id == 0 for a in acks)
    assert cancelled["status"] == "canceled"
    e = state(engine)
    assert [(o.market, o.state, o.outcome, o.resolver, o.event) for o in e.outcomes()] == \
        [(YES_A, 3, 0, 21, 7), (YES_B, 3, 1, 21, 7)]  # both final: B won
    # alice paid 10 x 60 for NO of A and kept 6 (paid 100 each at the end) after converting 4 into YES of B (won:
    # 100 each); bob paid 10 x 40 for YES of A, which lost
    assert e.balance(31, 1) == (1_000_000 - 600 + 600 + 400, 0)
    assert e.balance(32, 1) == (1_000_000 - 400, 0)
    assert (e.position(31, YES_A).realised, e.position(31, YES_B).realised) == (0, 400)


def test_a_keeper_key_liquidates_what_the_matcher_finds_under_maintenance(engine):
    margin_worker = engine.sup.procs["margin"]

    async def scenario():
        admin, alice, bob, carol, keeper = await connected(engine, "admin", "alice", "bob", "carol", "keeper")
        await admin.send_command(m.MarketRisk, market=PERP, max_leverage=10, maintenance_bps=5000)
        await bob.create_order(PERP, "limit", "sell", 10, 100, {"clientOrderId": 11})
        await carol.create_order(PERP, "limit", "buy", 10, 100, {"clientOrderId": 11})  # long 10 at 10x
        with pytest.raises(InvalidOrder, match="NOT_LIQUIDATABLE"):  # healthy: the matcher re-checks
            await keeper.send_command(m.Liquidate, target=33, venue=0, asset=1)
        with pytest.raises(BadRequest, match=r"liquidate\.target"):
            await keeper.send_command(m.Liquidate, target=-33, venue=0, asset=1)
        # the margin worker would liquidate carol itself: held still, the keeper's key does it
        os.kill(margin_worker.pid, signal.SIGSTOP)
        try:
            await bob.create_order(PERP, "limit", "sell", 1, 89, {"clientOrderId": 12})
            await alice.create_order(PERP, "limit", "buy", 1, 89, {"clientOrderId": 12})  # last trade, mark: 89
            ack = await keeper.send_command(m.Liquidate, target=33, venue=0, asset=1)
        finally:
            os.kill(margin_worker.pid, signal.SIGCONT)
        for c in (admin, alice, bob, carol, keeper):
            await c.close()
        return ack

    ack = run(scenario())
    assert sent(engine, ack) == (Cmd.LIQUIDATE, 41) and ack.durable_seq >= ack.cmd_seq
    assert int(engine.journal()[ack.cmd_seq - 1]["id"]) == 33  # the target
    e = state(engine)
    assert e.position(33, PERP) is None or e.position(33, PERP).size == 0


def test_positions_and_margin_as_the_margin_worker_values_them(engine):
    """After the liquidation above: bob short 11 (10 at 100, 1 at 89), alice long 1 at 89, the mark 89; dave's
    isolated long 2 (the first test's) shows its margin mode."""
    e = state(engine)
    mark = {r.market_id: r.mark for r in e.market_risks()}[PERP]

    async def scenario():
        alice, bob, carol, dave = await connected(engine, "alice", "bob", "carol", "dave")
        deadline = asyncio.get_running_loop().time() + 10
        while True:  # the margin worker's next checkpoint after it was let go
            short, long_ = await bob.fetch_positions(), await alice.fetch_positions(["BTC/USD:USD"])
            if [p["contracts"] for p in short] == [11] and [p["contracts"] for p in long_] == [1]:
                break
            assert asyncio.get_running_loop().time() < deadline, (short, long_)
            await asyncio.sleep(0.05)
        got = short, long_, await carol.fetch_positions(), await bob.fetch_balance(), await dave.fetch_positions()
        for c in (alice, bob, carol, dave):
            await c.close()
        return got

    (short,), (long_,), liquidated, balance, (isolated,) = run(scenario())
    assert (isolated["marginMode"], isolated["contracts"], isolated["collateral"]) == ("isolated", 2,
                                                                                   e.position(34, PERP).margin)
    assert liquidated == []  # carol's long went with the liquidation; each key sees its own account only
    b = e.position(32, PERP)
    assert (short["symbol"], short["side"], short["initialMargin"], short["info"]["position"].entry) == \
        ("BTC/USD:USD", "short", b.margin, b.entry_value)
    assert (short["markPrice"], short["unrealizedPnl"], short["entryPrice"]) == (mark, b.entry_value - 11 * mark,
                                                                                 b.entry_value // 11)
    assert short["liquidationPrice"] > mark and short["adl_rank"] == 1  # the only short
    assert (short["marginMode"], short["info"]["position"].isolated) == ("cross", 0)
    assert short["maintenanceMargin"] == balance["info"]["maintenance"] > 0  # bob's one position
    assert (long_["side"], long_["entryPrice"], long_["unrealizedPnl"]) == ("long", 89, 89 - mark)
    assert long_["adl_rank"] in (1, 2)  # alice and the insurance fund hold the longs
    assert balance["info"]["equity"] == sum(e.balance(32, 1)) + short["unrealizedPnl"]



def test_collateral_settings_through_the_gateway(engine):
    """Last in this module (it turns the unified account on): the admin's key declares the valuation asset and sets
    venue 0's weight for it; another key is refused by the matcher (NOT_ADMIN, NOT_VENUE_OPERATOR)."""
    async def scenario():
        admin, alice = await connected(engine, "admin", "alice")
        with pytest.raises(GatewayError, match="NOT_ADMIN"):
            await alice.send_command(m.CollateralAsset, asset=1, price_market=0, max_weight_bps=10_000)
        declared = await admin.send_command(m.CollateralAsset, asset=1, price_market=0, max_weight_bps=10_000)
        with pytest.raises(PermissionDenied, match="NOT_VENUE_OPERATOR"):
            await alice.send_command(m.VenueCollateral, venue=0, asset=1, weight_bps=9_000)
        with pytest.raises(GatewayError, match="COLLATERAL_WEIGHT_ABOVE_BOUND|INVALID_COLLATERAL_WEIGHT"):
            await admin.send_command(m.VenueCollateral, venue=0, asset=1, weight_bps=10_001)
        weighted = await admin.send_command(m.VenueCollateral, venue=0, asset=1, weight_bps=9_000)
        for c in (admin, alice):
            await c.close()
        return declared, weighted

    declared, weighted = run(scenario())
    assert [sent(engine, ack) for ack in (declared, weighted)] == [(Cmd.COLLATERAL_ASSET, 99), (Cmd.VENUE_COLLATERAL, 99)]
    e = state(engine)
    assert [(c.asset, c.price_market, c.max_weight_bps) for c in e.collateral_assets()] == [(1, 0, 10_000)]
    assert [(v.venue, v.asset, v.weight_bps) for v in e.venue_collaterals()] == [(0, 1, 9_000)]
