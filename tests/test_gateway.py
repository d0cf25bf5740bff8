"""The order-entry gateway through real sockets: a supervised engine (matcher, journal, ring,
workers, gateway) on a private config, clients over CurveZMQ on an ipc address."""
from __future__ import annotations

import asyncio
import itertools
import os
import signal
import time

import pytest

from engine.process import read_heartbeats
from engine.records import Cmd
from gateway import messages as m
from gateway.client import AuthenticationError, BadRequest, GatewayError, InsufficientFunds, OrderNotFound, \
    SyncClient

from gateway_harness import GatewayEngine, connected, funded, handshake_refused, kill_stopped_matcher, order_rows, \
    restart_gateway, run, unit_market

ACCOUNTS = {"alice": 7, "bob": 8, "carol": 9, "dave": 10, "erin": 11}
BURST = 200
MAX_BYTES = 65536


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    e = GatewayEngine(tmp_path_factory.mktemp("gateway"), ACCOUNTS, {
        "assets": [dict(id=1, symbol="USD", decimals=2), dict(id=2, symbol="BTC", decimals=8)],
        "markets": [unit_market(1, "BTC", "USD")],
        "accounts": funded(ACCOUNTS.values(), USD=1000000000, BTC=1000000),
        # push_batch small: a burst of row messages is forwarded in several input messages
        "gateway": dict(keys_reload_s=0.1, rate_per_s=1000, burst=BURST, max_message_bytes=MAX_BYTES, push_batch=50),
    })
    yield e
    e.stop()


def test_place_fill_reports_to_maker_and_taker_then_cancel_amend(engine):
    async def scenario():
        alice, bob = await connected(engine, "alice", "bob")
        ask = await alice.create_order("BTC/USD", "limit", "sell", 10, 100, {"clientOrderId": 1})
        assert ask["status"] == "open" and ask["clientOrderId"] == "1" and ask["remaining"] == 10
        ack = ask["info"]
        assert ack.durable_seq >= ack.cmd_seq > 0  # acknowledged only once durable
        bid = await bob.create_order("BTC/USD", "limit", "buy", 4, 100, {"clientOrderId": 1})
        assert bid["filled"] == 4 and bid["status"] == "closed" and bid["trades"][0]["takerOrMaker"] == "taker"
        updates = await asyncio.wait_for(alice.watch_orders(), 5)  # the maker's own report
        maker = next(o for o in updates if o["id"] == ask["id"])
        assert maker["filled"] == 4 and maker["remaining"] == 6 and maker["trades"][0]["takerOrMaker"] == "maker"
        amended = await alice.edit_order(ask["id"], amount=3, price=105)
        assert (amended["price"], amended["remaining"], amended["amount"]) == (105, 3, 7)
        fetched = await alice.fetch_order(params={"clientOrderId": 1})
        assert (fetched["price"], fetched["remaining"], fetched["filled"]) == (105, 3, 4)
        assert [o["id"] for o in await alice.fetch_open_orders("BTC/USD")] == [ask["id"]]
        with pytest.raises(OrderNotFound, match="UNKNOWN_ORDER"):  # bob cannot reach alice's order
            await bob.cancel_order(ask["id"])
        cancelled = await alice.cancel_order(params={"clientOrderId": 1})
        assert cancelled["status"] == "canceled" and cancelled["remaining"] == 0
        with pytest.raises(OrderNotFound, match="ORDER_CLOSED"):
            await alice.cancel_order(ask["id"])
        assert await alice.fetch_open_orders() == []
        assert (await alice.fetch_order(ask["id"]))["status"] == "canceled"
        with pytest.raises(InsufficientFunds, match="INSUFFICIENT_BALANCE"):
            await alice.create_order("BTC/USD", "limit", "buy", 10**9, 10**9, {"clientOrderId": 2})
        for c in (alice, bob):
            await c.close()

    run(scenario())


def test_batch_and_mass_cancel_and_duplicate_client_id(engine):
    async def scenario():
        (carol,) = await connected(engine, "carol")
        specs = [dict(symbol="BTC/USD", side="buy", amount=1, price=50 + i, params={"clientOrderId": 100 + i})
                 for i in range(5)]
        specs.append(dict(symbol="BTC/USD", side="buy", amount=1, price=60, params={"clientOrderId": 100}))
        placed = await carol.create_orders(specs)
        assert [o["status"] for o in placed] == ["open"] * 5 + ["rejected"]
        assert placed[-1]["error"].name == "DUPLICATE_CLIENT_ID"  # the matcher keeps client ids unique
        listed = await carol.fetch_open_orders()
        assert [o["clientOrderId"] for o in listed] == [str(100 + i) for i in range(5)]
        assert await carol.fetch_open_orders(limit=2) == listed[-2:]  # the newest placed
        assert await carol.fetch_open_orders(since=listed[-1]["timestamp"] + 1) == []
        assert await carol.fetch_open_orders(since=listed[0]["timestamp"]) == listed
        cancelled = await carol.cancel_all_orders()
        assert sorted(o["clientOrderId"] for o in cancelled) == [str(100 + i) for i in range(5)]
        assert all(o["status"] == "canceled" for o in cancelled)
        assert await carol.fetch_open_orders() == []
        closed = await carol.fetch_closed_orders()  # the rejected one never was an order
        assert sorted(o["clientOrderId"] for o in closed) == [str(100 + i) for i in range(5)]
        assert all(o["status"] == "canceled" and o["remaining"] == 0 for o in closed)
        assert await carol.fetch_closed_orders("BTC/USD") == closed
        assert await carol.fetch_closed_orders(limit=2) == closed[-2:]  # the newest closed
        newest = max(o["info"].ts for o in closed)
        assert await carol.fetch_closed_orders(since=newest // 1_000_000 + 1) == []
        assert len(await carol.fetch_closed_orders(since=newest // 1_000_000)) >= 1
        with pytest.raises(BadRequest, match="limit"):
            await carol.request(m.ClosedOrders(rid=carol.next_rid(), limit=-1))
        with pytest.raises(TypeError, match="since must be None or an int >= 0, not float 1.5"):
            await carol.fetch_closed_orders(since=1.5)
        await carol.close()

    run(scenario())



def test_watched_updates_of_another_symbol_wait_for_their_own_call():
    """``Updates`` (behind ``watch_orders`` and ``watch_my_trades``): a call for one symbol takes its items, each
    once and in order, and leaves the others' for a later call, which returns them without waiting."""
    from gateway.client import Updates

    async def scenario():
        updates = Updates()
        btc, eth = {"symbol": "BTC/USD", "n": 1}, {"symbol": "ETH/USD", "n": 2}
        for item in (btc, eth, btc, {"symbol": "BTC/USD", "n": 3}):
            updates.put(item)
        assert [i["n"] for i in await updates.take("BTC/USD")] == [1, 3]
        assert await asyncio.wait_for(updates.take("ETH/USD"), 1) == [eth]
        waiting = asyncio.ensure_future(updates.take(None))
        await asyncio.sleep(0.01)
        assert not waiting.done()
        updates.put(eth)
        assert await asyncio.wait_for(waiting, 1) == [eth]

    run(scenario())

def test_my_trades_are_the_settlement_ledgers_fills_as_the_reports_told_them(engine):
    """``fetch_my_trades`` reads the settlement worker's ledger: once it has caught up, the taker's fills there are
    its execution reports' trades field for field, the maker's the same fills as maker; newest ``limit``, ``since``
    and the symbol filter as CCXT has them."""
    async def scenario():
        bob, alice = await connected(engine, "bob", "alice")
        ask = await bob.create_order("BTC/USD", "limit", "sell", 5, 100, {"clientOrderId": 905})  # no price move
        bid = await alice.create_order("BTC/USD", "limit", "buy", 5, 100, {"clientOrderId": 905})
        reported = {t["id"]: t for t in bid["trades"]}  # whichever asks it took, bob's the last
        assert bid["filled"] == 5 and sum(t["amount"] for t in reported.values()) == 5
        deadline = time.monotonic() + 10
        mine = await alice.fetch_my_trades()
        while not reported.keys() <= {t["id"] for t in mine}:
            assert time.monotonic() < deadline, "the ledger did not catch up"
            await asyncio.sleep(0.05)
            mine = await alice.fetch_my_trades()
        for t in mine:
            assert t["info"]["as_of_seq"] >= int(t["id"])
        assert [t["timestamp"] for t in mine] == sorted(t["timestamp"] for t in mine)  # oldest first
        for t in (t for t in mine if t["id"] in reported):
            assert {k: v for k, v in t.items() if k != "info"} == reported[t["id"]]
            assert (t["takerOrMaker"], t["side"], t["order"], t["symbol"]) == ("taker", "buy", bid["id"], "BTC/USD")
        assert await alice.fetch_my_trades("BTC/USD") == mine
        assert await alice.fetch_my_trades(limit=1) == mine[-1:]
        assert await alice.fetch_my_trades(since=mine[-1]["timestamp"] + 1) == []
        assert (await alice.fetch_my_trades(since=mine[-1]["timestamp"]))[-1] == mine[-1]
        assert await asyncio.wait_for(alice.watch_my_trades("BTC/USD"), 5) == bid["trades"]  # from the reports
        sold = [t for t in await bob.fetch_my_trades() if t["id"] in reported]
        watched = await asyncio.wait_for(bob.watch_my_trades(), 5)
        assert [{k: v for k, v in t.items() if k != "info"} for t in sold] == watched[::-1]
        assert all((t["takerOrMaker"], t["side"], t["order"]) == ("maker", "sell", ask["id"]) for t in sold)
        assert sum(t["amount"] for t in sold) == (await bob.fetch_order(ask["id"]))["filled"] > 0
        with pytest.raises(ValueError, match=r"limit must be None or an int in 0 \.\. 2147483647, not -1"):
            await alice.fetch_my_trades(limit=-1)
        with pytest.raises(BadRequest, match="limit"):  # the message's own check, for clients of other languages
            await alice.request(m.MyTrades(rid=alice.next_rid(), limit=-1))
        await bob.cancel_all_orders()
        for c in (bob, alice):
            await c.close()

    run(scenario())


def test_balances_come_from_the_margin_worker(engine):
    async def scenario():
        (dave,) = await connected(engine, "dave")
        await dave.create_order("BTC/USD", "limit", "buy", 3, 40, {"clientOrderId": 1})
        deadline = time.monotonic() + 5
        while True:  # the margin worker checkpoints every 0.2 s
            bal = await dave.fetch_balance()
            if bal["used"].get("USD") == 120 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert bal["USD"] == {"free": 1000000000 - 120, "used": 120, "total": 1000000000}
        assert bal["info"]["as_of_seq"] > 0 and bal["info"]["equity"] > 0 and bal["info"]["valued"] is True
        await dave.cancel_all_orders()
        await dave.close()

    run(scenario())


def test_rate_limit_rejects_past_the_burst(engine):
    async def scenario():
        (erin,) = await connected(engine, "erin")
        specs = [dict(symbol="BTC/USD", side="buy", amount=1, price=10, params={"clientOrderId": 1000 + i})
                 for i in range(BURST + 100)]
        results = await erin.create_orders(specs)
        limited = [r for r in results if r["status"] == "rejected"]
        assert BURST - 5 <= len(results) - len(limited) <= BURST + 20  # refill is 1000/s
        assert limited and all(r["error"].name == "RATE_LIMITED" for r in limited)
        await asyncio.sleep(0.3)  # the bucket refills
        await erin.cancel_all_orders()
        await erin.close()

    run(scenario())


def test_dead_man_switch_cancels_a_silent_sessions_orders(engine):
    async def scenario():
        (carol,) = await connected(engine, "carol")
        o = await carol.create_order("BTC/USD", "limit", "buy", 1, 20, {"clientOrderId": 500})
        await carol.set_deadman(300)
        updates = await asyncio.wait_for(carol.watch_orders(), 5)  # sent nothing since: the switch fires
        gone = next(u for u in updates if u["id"] == o["id"])
        assert gone["status"] == "canceled" and gone["info"]["cancel_reason"] == "MASS"
        assert await carol.fetch_open_orders() == []
        await carol.set_deadman(0)
        await carol.close()

    run(scenario())


def test_malformed_unknown_and_oversized_get_errors_and_the_gateway_serves_on(engine):
    async def scenario():
        alice, bob = await connected(engine, "alice", "bob")
        await alice.send_raw(b"\xc1")
        err = await alice.expect_reply(0)
        assert type(err) is m.Error and err.name == "MALFORMED_MESSAGE"
        await alice.send_raw(m.encoder.encode(["launch_rocket", 41]))
        err = await alice.expect_reply(41)
        assert type(err) is m.Error and err.name == "UNKNOWN_MESSAGE" and "launch_rocket" in err.reason
        await alice.send_raw(m.encoder.encode(["place", 42, 1, 0, 10]))  # fields missing
        err = await alice.expect_reply(42)
        assert err.name == "MALFORMED_MESSAGE"
        await alice.send_raw(b"\x92\xa9heartbea\xf7\x2c")  # a tag that is not UTF-8 (msgspec < 0.23: UnicodeDecodeError)
        err = await alice.expect_reply(0)
        assert err.name == "MALFORMED_MESSAGE" and "utf-8" in err.reason.lower()
        await alice.send_raw(m.encoder.encode(["heartbeat", 43, "x" * MAX_BYTES]))
        err = await alice.expect_reply(0)
        assert err.name == "MESSAGE_TOO_LARGE"
        with pytest.raises(BadRequest, match="INVALID_REQUEST"):
            await alice.request(m.CancelOrder(rid=alice.next_rid(), order_id=1, client_id=1))
        # both sessions are still served
        o = await bob.create_order("BTC/USD", "limit", "buy", 1, 30, {"clientOrderId": 77})
        assert await alice.heartbeat() > 0
        await bob.cancel_order(o["id"])
        for c in (alice, bob):
            await c.close()

    run(scenario())


def test_a_request_in_several_frames_is_refused_and_framing_holds(engine):
    async def scenario():
        (alice,) = await connected(engine, "alice")
        await alice.socket.send_multipart([m.encode(m.Heartbeat(rid=51)), b"second", b"third"])
        err = await alice.expect_reply(0)
        assert type(err) is m.Error and err.name == "MALFORMED_MESSAGE" and "one frame" in err.reason
        assert await alice.heartbeat() > 0  # the frames after the first were not taken for new messages
        await alice.close()

    run(scenario())


def test_unknown_key_cannot_connect_and_a_revoked_key_cannot_place(engine):
    async def scenario():
        assert await handshake_refused(engine)
        (bob,) = await connected(engine, "bob")
        engine.revoke("bob")
        await asyncio.sleep(0.5)  # keys_reload_s = 0.1
        with pytest.raises(AuthenticationError, match="NOT_AUTHENTICATED"):
            await bob.request(m.PlaceOrder(rid=bob.next_rid(), market=1, side=0, price=10, qty=1, client_id=900))
        await bob.close()
        assert not any(c["kind"] == Cmd.PLACE and c["id"] == 900 for c in engine.journal())

    run(scenario())


def test_no_ack_while_the_matcher_is_paused_then_acks_after_durability(engine):
    async def scenario():
        (alice,) = await connected(engine, "alice")
        matcher = engine.sup.procs["matcher"]
        os.kill(matcher.pid, signal.SIGSTOP)
        try:
            pending = asyncio.ensure_future(
                alice.create_order("BTC/USD", "limit", "buy", 1, 11, {"clientOrderId": 600}))
            await asyncio.sleep(0.5)
            assert not pending.done()  # the gateway does not answer what the journal does not hold
        finally:
            os.kill(matcher.pid, signal.SIGCONT)
        o = await asyncio.wait_for(pending, 5)
        assert o["info"].durable_seq >= o["info"].cmd_seq
        journaled = engine.journal()
        assert len(journaled) >= o["info"].cmd_seq
        cmd = journaled[o["info"].cmd_seq - 1]
        assert (cmd["kind"], cmd["account"], cmd["id"]) == (Cmd.PLACE, ACCOUNTS["alice"], 600)
        await alice.cancel_order(o["id"])
        await alice.close()

    run(scenario())


def test_xos_status_shows_the_command_ring_with_both_ends_alive(engine):
    from typer.testing import CliRunner

    from engine.cli import app

    async def scenario():
        (erin,) = await connected(engine, "erin")
        await erin.create_order("BTC/USD", "limit", "buy", 1, 11, {"clientOrderId": 600})
        await erin.cancel_all_orders()
        await erin.close()

    result = CliRunner().invoke(app, ["status", "--config", str(engine.path)])
    assert f"gateway pid {engine.sup.procs['gateway'].pid} alive" in result.output  # attached from its start
    run(scenario())
    result = CliRunner().invoke(app, ["status", "--config", str(engine.path)])
    assert result.exit_code == 0, result.output
    line = next(l for l in result.output.splitlines() if l.startswith("command ring"))
    assert f"/dev/shm/{engine.cfg.command_ring_name}" in line and "(lag 0)" in line
    assert f"gateway pid {engine.sup.procs['gateway'].pid} alive" in line


def test_matcher_killed_the_gateway_reattaches_and_answers_every_command(engine):
    async def scenario():
        (alice,) = await connected(engine, "alice")
        os.kill(engine.sup.procs["matcher"].pid, signal.SIGSTOP)
        first = asyncio.ensure_future(alice.create_order("BTC/USD", "limit", "buy", 1, 12, {"clientOrderId": 700}))
        await asyncio.sleep(0.2)
        await kill_stopped_matcher(engine)
        second = await alice.create_order("BTC/USD", "limit", "buy", 1, 13, {"clientOrderId": 701})
        assert second["info"].durable_seq >= second["info"].cmd_seq
        journaled = engine.journal()
        # sent while the matcher was stopped: it waited in the command ring, which the new matcher took over
        o = await asyncio.wait_for(first, 5)
        assert o["clientOrderId"] == "700" and o["info"].durable_seq >= o["info"].cmd_seq
        assert ((journaled["kind"] == Cmd.PLACE) & (journaled["id"] == 700)).sum() == 1
        await alice.cancel_all_orders()
        await alice.close()

    run(scenario())
    for _ in range(50):  # the engine keeps running for the rest of the module
        engine.sup.check()
        time.sleep(0.05)


def test_commands_the_dead_matcher_took_but_never_journaled_are_answered_lost(engine):
    """The last commands of an account taken by a matcher that died before journaling them: no later command of
    the account shows them lost, the new matcher's heartbeat marks do.  Each gets COMMAND_LOST, a dead-man
    switch's lost mass cancel goes again, and what comes next is answered as usual."""
    async def scenario():
        alice, carol = await connected(engine, "alice", "carol")
        resting = await carol.create_order("BTC/USD", "limit", "buy", 1, 15, {"clientOrderId": 720})
        os.kill(engine.sup.procs["matcher"].pid, signal.SIGSTOP)
        placed = [asyncio.ensure_future(alice.create_order("BTC/USD", "limit", "buy", 1, 14, {"clientOrderId": i}))
                  for i in (710, 711, 712)]
        await carol.set_deadman(200)  # then silence: the gateway's own mass cancel goes into the ring too
        await asyncio.sleep(0.6)
        assert sorted(await kill_stopped_matcher(engine, take=4)) == [0, 710, 711, 712]
        for future in placed:
            with pytest.raises(GatewayError) as lost:
                await asyncio.wait_for(future, 5)
            assert lost.value.name == "COMMAND_LOST"
        journaled = engine.journal()
        assert not ((journaled["kind"] == Cmd.PLACE) & (journaled["account"] == ACCOUNTS["alice"])
                    & (journaled["id"] >= 710) & (journaled["id"] <= 712)).any()
        deadline = time.monotonic() + 5  # carol's order is cancelled after all, by the mass cancel sent again
        while resting["id"] in [o["id"] for o in await alice.fetch_open_orders()] + [
                o["id"] for o in await carol.fetch_open_orders()]:
            assert time.monotonic() < deadline, "the dead-man switch's mass cancel was not sent again"
            await asyncio.sleep(0.1)
        await carol.set_deadman(0)
        again = await alice.create_order("BTC/USD", "limit", "buy", 1, 14, {"clientOrderId": 710})
        assert again["status"] == "open" and again["info"].durable_seq >= again["info"].cmd_seq
        await alice.cancel_all_orders()
        for c in (alice, carol):
            await c.close()

    run(scenario())


def test_a_gateway_restarted_alone_still_knows_the_orders_placed_before(engine):
    async def place():
        (dave,) = await connected(engine, "dave")
        o = await dave.create_order("BTC/USD", "limit", "buy", 1, 21, {"clientOrderId": 800})
        await dave.close()
        return o

    async def check(o):
        (dave,) = await connected(engine, "dave")
        assert [x["id"] for x in await dave.fetch_open_orders()] == [o["id"]]
        assert (await dave.fetch_order(params={"clientOrderId": 800}))["status"] == "open"
        assert (await dave.cancel_order(o["id"]))["status"] == "canceled"  # and its cancel is routed
        await dave.close()

    o = run(place())
    restart_gateway(engine)
    run(check(o))


def test_idle_sessions_with_nothing_to_report_are_forgotten_and_come_back_with_a_request(tmp_path):
    """With ``session_idle_s`` 0.5: a client gone without a word, and one idle with no order open, are forgotten;
    one with an open order, or with a dead-man switch armed, is kept and still gets its fill report; the idle
    client's next request is answered (a new session)."""
    e = GatewayEngine(tmp_path, ACCOUNTS, {
        "assets": [dict(id=1, symbol="USD", decimals=2), dict(id=2, symbol="BTC", decimals=8)],
        "markets": [unit_market(1, "BTC", "USD")],
        "accounts": funded(ACCOUNTS.values(), USD=1000000000, BTC=1000000),
        "gateway": dict(session_idle_s=0.5),
    })

    async def gateway_beat(after: float) -> dict:
        while True:
            beat = read_heartbeats(e.cfg)["gateway"]
            if beat["time"] > after:
                return beat
            await asyncio.sleep(0.05)

    async def scenario():
        alice, bob, carol, dave, erin = await connected(e, "alice", "bob", "carol", "dave", "erin")
        o = await alice.create_order("BTC/USD", "limit", "buy", 1, 10, {"clientOrderId": 1})
        await alice.cancel_order(o["id"])
        ask = await bob.create_order("BTC/USD", "limit", "sell", 1, 20, {"clientOrderId": 1})
        await dave.set_deadman(60_000)
        await erin.heartbeat()
        await erin.close()  # gone without a word
        assert (await gateway_beat(time.time()))["sessions"] == 5
        await asyncio.sleep(1.5)
        beat = await gateway_beat(time.time())
        assert beat["sessions"] == 2 and beat["sessions_idle"] == 3  # bob (an open order), dave (a dead-man switch)
        assert await alice.fetch_open_orders() == []  # answered: a new session
        assert (await carol.create_order("BTC/USD", "limit", "buy", 1, 20, {"clientOrderId": 1}))["filled"] == 1
        fill = next(u for u in await asyncio.wait_for(bob.watch_orders(), 5) if u["id"] == ask["id"])
        assert fill["status"] == "closed" and fill["filled"] == 1
        await dave.set_deadman(0)
        for c in (alice, bob, carol, dave):
            await c.close()

    try:
        run(scenario())
    finally:
        e.stop()


def test_sync_client_and_heartbeats_in_status(engine):
    with SyncClient(engine.cfg.gateway.address, server_key=engine.server_key,
                    secret_key_file=engine.key("dave")) as dave:
        o = dave.create_order("BTC/USD", "limit", "sell", 2, 900, {"clientOrderId": 42})
        assert dave.fetch_order(o["id"])["status"] == "open"
        assert dave.fetch_order(None, params={"clientOrderId": "42"})["id"] == o["id"]  # a string of digits is one
        assert dave.cancel_order(o["id"])["status"] == "canceled"
        with pytest.raises(TypeError, match="engine units"):
            dave.create_order("BTC/USD", "limit", "sell", 2.5, 900, {"clientOrderId": 43})
        # refused before sending, naming the field: no msgspec OverflowError, no int() error
        with pytest.raises(ValueError, match=rf"amount must fit in int64 \(-2\*\*63 \.\. 2\*\*63 - 1\), not {1 << 64}"):
            dave.create_order("BTC/USD", "limit", "sell", 1 << 64, 900, {"clientOrderId": 43})
        with pytest.raises(ValueError, match=r"id must be an order id \(decimal digits\), not 'abc'"):
            dave.fetch_order("abc")
        with pytest.raises(ValueError, match="clientOrderId must be an order id"):
            dave.cancel_order(None, params={"clientOrderId": "4x"})
    deadline = time.monotonic() + 5
    while not read_heartbeats(engine.cfg)["gateway"].get("acks"):  # the next beat (every 0.2 s) counts them
        assert time.monotonic() < deadline, read_heartbeats(engine.cfg)["gateway"]
        time.sleep(0.05)
    assert read_heartbeats(engine.cfg)["gateway"]["state"] == "running"


def test_order_rows_place_fill_cancel_amend_as_packed_rows(engine):
    async def scenario():
        alice, erin = await connected(engine, "alice", "erin")  # (bob was revoked above)
        asks = order_rows(dict(kind=Cmd.PLACE, side=1, market=1, price=100, qty=5, id=901),
                          dict(kind=Cmd.PLACE, side=1, market=1, price=101, qty=5, id=902),
                          dict(kind=Cmd.PLACE, side=1, market=1, price=102, qty=5, id=901))  # duplicate client id
        acks = await alice.send_order_rows(asks)
        assert [type(a) for a in acks] == [m.Ack, m.Ack, m.Reject] and acks[2].name == "DUPLICATE_CLIENT_ID"
        assert all(a.durable_seq >= a.cmd_seq for a in acks[:2]) and [a.client_id for a in acks[:2]] == [901, 902]
        # erin's buy takes 7: all of 901, 2 of 902 (prices near the module's first trade: no circuit
        # breaker); both sides get packed fill reports
        (take,) = await erin.send_order_rows(order_rows(dict(kind=Cmd.PLACE, side=0, market=1, price=101, qty=7, id=77)))
        assert type(take) is m.Ack
        deadline = time.monotonic() + 5
        while alice.orders.get(acks[1].order_id, {}).get("filled") != 2:
            assert time.monotonic() < deadline, alice.orders
            await asyncio.sleep(0.02)
        maker = alice.orders[acks[0].order_id]
        assert maker["status"] == "closed" and maker["clientOrderId"] == "901" and maker["trades"][0]["takerOrMaker"] == "maker"
        assert alice.orders[acks[1].order_id]["remaining"] == 3
        taker = erin.orders[take.order_id]
        assert taker["filled"] == 7 and taker["trades"][-1]["takerOrMaker"] == "taker" and taker["clientOrderId"] == "77"
        # amend 902 by client id, then cancel it by order id; a mass cancel row answers with its count
        amend, cancel = await alice.send_order_rows(order_rows(
            dict(kind=Cmd.AMEND, flags=2, price=103, qty=2, id=902), dict(kind=Cmd.CANCEL, id=acks[1].order_id)))
        assert type(amend) is m.Ack and type(cancel) is m.Ack and cancel.order_id == acks[1].order_id
        assert (await alice.fetch_order(params={"clientOrderId": 902}))["status"] == "canceled"
        await alice.create_order("BTC/USD", "limit", "sell", 1, 400, {"clientOrderId": 903})  # a struct request
        (mass,) = await alice.send_order_rows(order_rows(dict(kind=Cmd.MASS_CANCEL)))
        assert type(mass) is m.Ack and mass.count == 1 and await alice.fetch_open_orders() == []
        for c in (alice, erin):
            await c.close()

    run(scenario())


def test_a_bad_row_refuses_the_whole_message(engine):
    async def scenario():
        (carol,) = await connected(engine, "carol")
        good = dict(kind=Cmd.PLACE, side=0, market=1, price=5, qty=1, id=950)
        bad_cases = [
            (order_rows(good, dict(good, kind=9, id=951)), "row 1: kind 9 is not"),
            (order_rows(good, dict(good, side=2, id=951)), "row 1: side 2 is not 0 (buy) or 1 (sell)"),
            (order_rows(dict(good, flags=2)), "row 0: flags 2 not allowed for kind 1"),
            (order_rows(dict(kind=Cmd.CANCEL)), "row 0: a cancel or amend needs the order id"),
            (order_rows(good, dict(kind=Cmd.CANCEL, id=5, venue=1)), "row 1: venue 1 on a kind 2 row"),
        ]
        for (rows, reason), row_format in itertools.product(bad_cases, m.ROW_FORMATS):
            rid = carol.next_rid()
            await carol.send_raw(m.encode(m.OrderRows(rid=rid, rows=m.pack_rows(rows, row_format), format=row_format)))
            err = await carol.expect_reply(rid)
            assert type(err) is m.Error and err.name == "MALFORMED_MESSAGE" and reason in err.reason, err
        # packed rows that do not read: the Error says where
        packed = m.pack_rows(order_rows(good, dict(good, id=951)), m.PACKED_ROWS)
        for data, reason in ((packed[:-1], "packed rows: row 1, field id: the bytes end inside it"),
                             (packed[:-1] + b"\x80\x00", "row 1, field id: a varint past 64 bits or longer"),
                             (packed + b"\x00\xff", "row 2's presence map: its map marks a field past the row's 13"),
                             (b"\x01\x00\x80\x02", "row 0, field kind: its value does not fit uint8")):
            rid = carol.next_rid()
            await carol.send_raw(m.encode(m.OrderRows(rid=rid, rows=data, format=m.PACKED_ROWS)))
            err = await carol.expect_reply(rid)
            assert err.name == "MALFORMED_MESSAGE" and reason in err.reason, err
        many = order_rows(*[dict(good, id=1000 + i) for i in range(4097)])  # max_batch + 1, within max_message_bytes
        rid = carol.next_rid()
        await carol.send_raw(m.encode(m.OrderRows(rid=rid, rows=m.pack_rows(many, m.PACKED_ROWS), format=m.PACKED_ROWS)))
        err = await carol.expect_reply(rid)
        assert err.name == "BATCH_TOO_LARGE" and "more than 4096 rows" in err.reason, err
        rid = carol.next_rid()  # format 1 (50-byte rows without a venue) is refused by name, not misread
        await carol.send_raw(m.encoder.encode(["rows", rid, order_rows(good).tobytes()[:50] * 27]))
        err = await carol.expect_reply(rid)
        assert err.name == "MALFORMED_MESSAGE" and "rows.format 1" in err.reason
        rid = carol.next_rid()
        await carol.send_raw(m.encode(m.OrderRows(rid=rid, rows=b"x" * 53, format=m.FIXED_ROWS)))
        err = await carol.expect_reply(rid)
        assert err.name == "MALFORMED_MESSAGE" and "not a multiple of the 54-byte" in err.reason
        assert await carol.fetch_open_orders() == []  # nothing of a refused message was placed
        (ok,) = await carol.send_order_rows(order_rows(good))  # and the session serves on
        assert type(ok) is m.Ack
        (fixed,) = await carol.send_order_rows(order_rows(dict(good, id=952)), {"format": m.FIXED_ROWS})
        assert type(fixed) is m.Ack and fixed.client_id == 952
        with pytest.raises(ValueError, match="format must be one of \\(2, 3\\).*not 7"):
            await carol.send_order_rows(order_rows(good), {"format": 7})
        await carol.cancel_all_orders()
        await carol.close()

    run(scenario())


def test_two_sessions_of_an_account_get_the_same_reports_in_their_own_row_formats(engine, monkeypatch):
    """One of alice's sessions sends packed rows, the other fixed rows; erin's sell fills both sessions' bids: each
    session gets the account's execution reports in its own format, and reads the same fills from them."""
    report_formats = set()
    unpack_rows = m.unpack_rows

    def noting(data, dtype, row_format, max_rows=-1):
        if dtype == m.REPORT_ROW_DTYPE:
            report_formats.add(row_format)
        return unpack_rows(data, dtype, row_format, max_rows)

    monkeypatch.setattr(m, "unpack_rows", noting)

    async def scenario():
        packed, fixed, erin = await connected(engine, "alice", "alice", "erin")  # (bob was revoked above)
        bid = dict(kind=Cmd.PLACE, side=0, market=1, price=100, qty=2)  # the last trade's price: no halt
        (a,) = await packed.send_order_rows(order_rows(dict(bid, id=7001)))
        (b,) = await fixed.send_order_rows(order_rows(dict(bid, id=7002, qty=1)), {"format": m.FIXED_ROWS})
        assert type(a) is m.Ack and type(b) is m.Ack
        sold = await erin.create_order("BTC/USD", "limit", "sell", 3, 100, {"clientOrderId": 7003})
        assert sold["filled"] == 3

        def fills(session) -> dict:
            return {oid: [(t["id"], t["price"], t["amount"], t["fee"]) for t in o["trades"]]
                    for oid, o in session.orders.items() if oid in (a.order_id, b.order_id)}

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(sum(len(t) for t in fills(s).values()) == 2
                                                      for s in (packed, fixed)):
            await asyncio.sleep(0.02)
        assert fills(packed) == fills(fixed) and len(fills(packed)) == 2
        assert report_formats == {m.FIXED_ROWS, m.PACKED_ROWS}
        assert all(o["status"] == "closed" for s in (packed, fixed) for oid, o in s.orders.items()
                   if oid in (a.order_id, b.order_id))
        for c in (packed, fixed, erin):
            await c.close()

    run(scenario())


def test_row_messages_sent_back_to_back_are_answered_as_if_one_by_one(engine):
    """Messages that arrive together are checked and rate-limited together (joined per session in C):
    a bad row still refuses only its own message, and the rate limit cuts the run of rows where the
    tokens end, whichever message that falls in."""
    async def scenario():
        (erin,) = await connected(engine, "erin")
        loop = asyncio.get_running_loop()
        await asyncio.sleep(0.3)  # a full bucket

        def message(n: int, first_id: int, bad_at: int = -1) -> tuple[int, list, bytes]:
            specs = [dict(kind=Cmd.PLACE, side=0, market=1, price=4, qty=1, id=first_id + i) for i in range(n)]
            if bad_at >= 0:
                specs[bad_at]["side"] = 2
            rows = order_rows(*specs)
            rows["rid"] = [erin.next_rid() for _ in range(n)]
            rid = erin.next_rid()
            futures = []  # the reader pops them as it answers
            for r in rows["rid"].tolist():
                futures.append(erin.waiting.setdefault(r, loop.create_future()))
            erin.batches[rid] = rows["rid"].tolist()
            row_format = m.ROW_FORMATS[first_id // 100 % 2]  # fixed and packed in turn
            return rid, futures, m.encode(m.OrderRows(rid=rid, rows=m.pack_rows(rows, row_format), format=row_format))

        sent = [message(40, 3000), message(40, 3100, bad_at=7), message(40, 3200)] + \
            [message(40, 3300 + 100 * k) for k in range(6)]  # 320 good rows against a burst of 200
        t0 = loop.time()
        for _, _, payload in sent:
            await erin.send_raw(payload)
        refused = [await asyncio.wait_for(f, 10) for f in sent[1][1]]  # an Error answers each row
        assert all(type(e) is m.Error and e.name == "MALFORMED_MESSAGE" and "row 7: side 2" in e.reason
                   for e in refused), refused[0]
        replies = [await asyncio.wait_for(f, 10) for k, (_, futures, _) in enumerate(sent) if k != 1 for f in futures]
        # tokens refill at 1,000/s: on a loaded machine the messages may come in several bursts, and the
        # rows of a later one take what refilled meanwhile
        refill = int(1000 * (loop.time() - t0)) + 1
        kinds = [type(r).__name__ for r in replies]
        cut = kinds.index("Reject")
        # the refused message's 40 rows took their tokens too: the rate limit comes before the row checks
        assert BURST - 45 <= cut <= BURST - 20 + refill and kinds[:cut] == ["Ack"] * cut
        assert kinds[cut:].count("Ack") <= refill
        assert all(r.name == "RATE_LIMITED" for r in replies if type(r) is not m.Ack)
        good_ids = [i for k in (0, 2, 3, 4, 5, 6, 7, 8) for i in range(3000 + 100 * k, 3040 + 100 * k)]
        assert [o["clientOrderId"] for o in await erin.fetch_open_orders()] == \
            [str(i) for i, kind in zip(good_ids, kinds) if kind == "Ack"]
        await asyncio.sleep(0.3)
        await erin.cancel_all_orders()
        await erin.close()

    run(scenario())


def test_requests_of_every_kind_sent_back_to_back_reach_the_matcher_in_the_order_sent(engine):
    """PlaceOrder, OrderRows, Batch and CancelOrder messages of one session arriving together (its first row
    messages joined in C, the rest read one by one), with forwards cut at push_batch (50) inside them: the
    journal holds the session's commands in the order they were sent, each one answered."""
    async def scenario():
        (carol,) = await connected(engine, "carol")
        loop = asyncio.get_running_loop()
        await asyncio.sleep(0.3)  # a full bucket
        futures, payloads, want = [], [], []

        def expect(rid: int) -> None:
            futures.append(carol.waiting.setdefault(rid, loop.create_future()))

        def place(cid: int) -> m.PlaceOrder:
            rid = carol.next_rid()
            expect(rid)
            want.append((Cmd.PLACE, cid))
            return m.PlaceOrder(rid=rid, market=1, side=0, price=3, qty=1, client_id=cid)

        def rows(*cids: int) -> bytes:
            packed = order_rows(*[dict(kind=Cmd.PLACE, side=0, market=1, price=3, qty=1, id=c) for c in cids])
            packed["rid"] = [carol.next_rid() for _ in cids]
            for rid in packed["rid"].tolist():
                expect(rid)
            want.extend((Cmd.PLACE, c) for c in cids)
            rid = carol.next_rid()
            carol.batches[rid] = packed["rid"].tolist()
            row_format = m.ROW_FORMATS[len(cids) % 2]
            return m.encode(m.OrderRows(rid=rid, rows=m.pack_rows(packed, row_format), format=row_format))

        payloads.append(rows(5001, 5002))
        payloads.append(rows(*range(5003, 5041)))
        payloads.append(m.encode(place(5041)))  # from here on this session's messages of the burst go one by one
        payloads.append(rows(*range(5042, 5101)))  # crosses push_batch
        cancel_rid = carol.next_rid()
        batch = [place(5101), place(5102), m.CancelOrder(rid=cancel_rid, client_id=5001)]
        expect(cancel_rid)
        want.append((Cmd.CANCEL, 5001))
        payloads.append(m.encode(m.Batch(rid=carol.next_rid(), requests=batch)))
        payloads.append(m.encode(place(5103)))
        for payload in payloads:
            await carol.send_raw(payload)
        replies = [await asyncio.wait_for(f, 10) for f in futures]
        assert all(type(r) is m.Ack for r in replies), [r for r in replies if type(r) is not m.Ack][:1]
        journaled = engine.journal()
        mine = journaled[(journaled["account"] == ACCOUNTS["carol"]) & (journaled["id"] >= 5001) &
                         (journaled["id"] <= 5103)]
        assert list(zip(mine["kind"].tolist(), mine["id"].tolist())) == want
        await carol.cancel_all_orders()
        await carol.close()

    run(scenario())


def test_order_rows_past_the_burst_are_rate_limited_row_by_row(engine):
    async def scenario():
        (dave,) = await connected(engine, "dave")
        await asyncio.sleep(0.3)  # a full bucket
        rows = order_rows(*[dict(kind=Cmd.PLACE, side=0, market=1, price=3, qty=1, id=2000 + i)
                            for i in range(BURST + 100)])
        replies = await dave.send_order_rows(rows)
        limited = [r for r in replies if type(r) is m.Reject]
        assert BURST - 5 <= len(replies) - len(limited) <= BURST + 20
        assert limited and all(r.name == "RATE_LIMITED" for r in limited)
        assert [r.client_id for r in limited] == list(range(2000 + len(replies) - len(limited), 2000 + len(replies)))
        await asyncio.sleep(0.3)
        await dave.cancel_all_orders()
        await dave.close()

    run(scenario())


def test_xos_keys_new_writes_a_private_pair_in_its_directory_only(tmp_path):
    """`xos keys new NAME --dir D`: D/NAME.key (0644) and D/NAME.key_secret (0600 from its first byte: the umask is
    closed while pyzmq writes it, where it used to be chmod-ed after); a NAME with a directory in it is refused (it
    wrote wherever ../.. led), an existing pair is never overwritten, and --account must be an account id."""
    import stat

    from typer.testing import CliRunner

    from engine.cli import app
    from gateway.keys import load_pair

    keys = tmp_path / "keys"
    made = CliRunner().invoke(app, ["keys", "new", "mm1", "--dir", str(keys), "--account", "1001"])
    assert made.exit_code == 0, made.output
    assert sorted(p.name for p in keys.iterdir()) == ["mm1.key", "mm1.key_secret"]
    assert stat.S_IMODE((keys / "mm1.key_secret").stat().st_mode) == 0o600
    assert stat.S_IMODE((keys / "mm1.key").stat().st_mode) == 0o644
    public, secret = load_pair(keys / "mm1.key_secret")
    assert secret and f'{{ account = 1001, public_key = "{public.decode()}" }}' in made.output
    for name in ("../escaped", "sub/mm2", "..", ""):
        refused = CliRunner().invoke(app, ["keys", "new", name, "--dir", str(keys)])
        assert refused.exit_code == 1 and "a key name is a plain file name" in refused.output, refused.output
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["mm1.key", "mm1.key_secret"]
    again = CliRunner().invoke(app, ["keys", "new", "mm1", "--dir", str(keys)])
    assert again.exit_code == 1 and "keys are never overwritten" in again.output
    assert load_pair(keys / "mm1.key_secret") == (public, secret)
    assert CliRunner().invoke(app, ["keys", "new", "mm3", "--dir", str(keys), "--account", "0"]).exit_code == 2
    assert not list(keys.glob("mm3*"))


def test_a_secret_key_file_readable_by_others_is_warned_of(tmp_path, capsys):
    """Pairs made before session 36 (the feeds' at the umask's 0644) or copied carelessly: loading one says so."""
    from gateway.keys import load_pair, new_pair

    _, secret_file = new_pair(tmp_path, "mm1")
    load_pair(secret_file)
    load_pair(tmp_path / "mm1.key")  # a public key file is for handing out
    assert capsys.readouterr().err == ""
    secret_file.chmod(0o644)
    assert load_pair(secret_file)[1] is not None  # still loaded
    assert capsys.readouterr().err == (f"xos: warning: the secret key file {secret_file} is readable by others "
                                       "(mode 0644): chmod 600 it\n")
