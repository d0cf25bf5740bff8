"""A gateway restarted on its own on an engine whose ring has wrapped since the matcher started: it rebuilds its
order table from the newest snapshot before its ring cursor and the journal after it (the ring no longer holds
those events), so the orders placed before it started keep their client ids in queries and reports; and (slow)
rounds of random trading, each ended by a kill -9 of the gateway, against the matcher's own open orders."""
from __future__ import annotations

import asyncio
import os
import random
import signal
import time

import pytest

from engine.process import read_heartbeats
from engine.snapshot import load_newest
from engine.supervisor import Supervisor
from gateway_harness import GatewayEngine, connected, funded, kill_stopped_matcher, restart_gateway, run, \
    unit_market

ACCOUNTS = {"alice": 7, "bob": 8}
RING = 1024  # the smallest ring: a few hundred orders wrap it


def small_ring_engine(tmp_path, snapshot_interval_s: float, **gateway) -> GatewayEngine:
    """Alice and Bob, well funded, trading BTC/USD on an engine whose ring holds RING events."""
    return GatewayEngine(tmp_path, ACCOUNTS, {
        "engine": dict(ring_capacity=RING, batch_max=256, snapshot_interval_s=snapshot_interval_s),
        "assets": [dict(id=1, symbol="USD", decimals=2), dict(id=2, symbol="BTC", decimals=8)],
        "markets": [unit_market(1, "BTC", "USD")],
        "accounts": funded(ACCOUNTS.values(), USD=10**12, BTC=10**9),
        "gateway": dict(rate_per_s=100000, burst=100000, **gateway),
    })


@pytest.fixture(params=["no snapshot", "restored snapshot"])
def engine(request, tmp_path):
    e = small_ring_engine(tmp_path, snapshot_interval_s=0)  # snapshots only at a stop
    e.first_orders_before_a_restart = request.param == "restored snapshot"
    yield e
    e.stop()


def restart_everything(engine: GatewayEngine) -> None:
    """A clean stop (the matcher writes a snapshot) and a start that restores from it."""
    engine.sup.stop()
    engine.sup = Supervisor(engine.cfg, str(engine.path), log=lambda msg: None)
    engine.sup.start()
    assert read_heartbeats(engine.cfg)["matcher"]["restored_from"]


async def churn(engine: GatewayEngine, rounds: int = 2) -> None:
    """Bob's orders placed and cancelled: ~4 events an order, several rings' worth."""
    (bob,) = await connected(engine, "bob")
    for r in range(rounds):
        specs = [dict(symbol="BTC/USD", side="buy", amount=1, price=10 + i, params={"clientOrderId": 1000 * r + i + 1})
                 for i in range(300)]
        assert all(o["status"] == "open" for o in await bob.create_orders(specs))
        await bob.cancel_all_orders()
    await bob.close()


def test_orders_placed_before_keep_their_client_ids(engine):
    async def place(*orders):
        (alice,) = await connected(engine, "alice")
        placed = [await alice.create_order("BTC/USD", "limit", "sell", qty, price, {"clientOrderId": cid})
                  for cid, qty, price in orders]
        await alice.close()
        return placed

    before = run(place((1, 10, 500), (2, 5, 600)))
    if engine.first_orders_before_a_restart:
        restart_everything(engine)
    run(churn(engine))
    after = run(place((3, 7, 700)))
    run(churn(engine))
    assert read_heartbeats(engine.cfg)["matcher"]["event_seq"] > 2 * RING + after[0]["info"].cmd_seq
    restart_gateway(engine)

    async def check():
        alice, bob = await connected(engine, "alice", "bob")
        open_ = {o["clientOrderId"]: o for o in await alice.fetch_open_orders()}
        assert {cid: (o["id"], o["remaining"]) for cid, o in open_.items()} == {
            "1": (before[0]["id"], 10), "2": (before[1]["id"], 5), "3": (after[0]["id"], 7)}
        taken = await bob.create_order("BTC/USD", "limit", "buy", 4, 500, {"clientOrderId": 9})
        assert taken["filled"] == 4
        report = next(o for o in await asyncio.wait_for(alice.watch_orders(), 5) if o["id"] == before[0]["id"])
        assert report["clientOrderId"] == "1" and report["filled"] == 4 and report["remaining"] == 6
        assert (await alice.fetch_order(params={"clientOrderId": 1}))["remaining"] == 6
        assert (await alice.cancel_order(params={"clientOrderId": 3}))["status"] == "canceled"
        assert [o["clientOrderId"] for o in await alice.fetch_open_orders()] == ["1", "2"]
        await alice.cancel_all_orders()
        for c in (alice, bob):
            await c.close()

    run(check())


def test_a_matcher_killed_replays_more_events_than_its_ring_holds_and_the_gateway_answers_all(engine):
    """The journal after the snapshot holds several rings' worth of events: the new matcher's replay can only go
    on as the gateway routes them (its slot in the ring), and the orders sent while it was stopped, waiting in
    the command ring, are answered after it."""
    async def scenario():
        alice, bob = await connected(engine, "alice", "bob")
        os.kill(engine.sup.procs["matcher"].pid, signal.SIGSTOP)
        waiting = [asyncio.ensure_future(alice.create_order("BTC/USD", "limit", "sell", 1, 900 + i,
                                                            {"clientOrderId": 50 + i})) for i in range(3)]
        await asyncio.sleep(0.2)
        await kill_stopped_matcher(engine)
        placed = [await asyncio.wait_for(w, 10) for w in waiting]
        assert [o["status"] for o in placed] == ["open"] * 3
        assert sorted(o["clientOrderId"] for o in await alice.fetch_open_orders()) == ["50", "51", "52"]
        assert (await bob.create_order("BTC/USD", "limit", "buy", 1, 900, {"clientOrderId": 60}))["filled"] == 1
        await alice.cancel_all_orders()
        for c in (alice, bob):
            await c.close()

    if engine.first_orders_before_a_restart:
        restart_everything(engine)
    run(churn(engine, rounds=4))
    assert read_heartbeats(engine.cfg)["matcher"]["event_seq"] > 3 * RING
    run(scenario())


async def close_some_orders(engine: GatewayEngine) -> dict:
    """Alice's orders by client id: 1 cancelled, 2 filled by Bob's 3, 4 open."""
    alice, bob = await connected(engine, "alice", "bob")
    gone = await alice.create_order("BTC/USD", "limit", "buy", 1, 10, {"clientOrderId": 1})
    await alice.cancel_order(gone["id"])
    ask = await alice.create_order("BTC/USD", "limit", "sell", 2, 50, {"clientOrderId": 2})
    bid = await bob.create_order("BTC/USD", "limit", "buy", 2, 50, {"clientOrderId": 3})
    rest = await alice.create_order("BTC/USD", "limit", "buy", 1, 11, {"clientOrderId": 4})
    for c in (alice, bob):
        await c.close()
    return {1: gone["id"], 2: ask["id"], 3: bid["id"], 4: rest["id"]}


async def check_closed_orders(engine: GatewayEngine, ids: dict) -> None:
    """``close_some_orders``' orders, by client id and by order id, with their status, and among the closed
    ones; none listed twice."""
    alice, bob = await connected(engine, "alice", "bob")
    for who, cid, status, filled in ((alice, 1, "canceled", 0), (alice, 2, "closed", 2), (bob, 3, "closed", 2),
                                     (alice, 4, "open", 0)):
        for found in (await who.fetch_order(params={"clientOrderId": cid}), await who.fetch_order(ids[cid])):
            assert (found["id"], found["status"], found["filled"]) == (ids[cid], status, filled)
    assert [o["id"] for o in await alice.fetch_open_orders()] == [ids[4]]
    assert [o["id"] for o in await alice.fetch_closed_orders()] == [ids[1], ids[2]]  # in the order they closed
    assert [o["id"] for o in await bob.fetch_closed_orders()] == [ids[3]]
    for c in (alice, bob):
        await c.close()


def test_orders_closed_before_a_clean_stop_keep_their_status_in_the_next_run(tmp_path):
    """A clean stop leaves the gateway's closed orders to the next run (``Config.history_path``), which starts from the
    snapshot of that stop, with no event of those orders to read: ``fetch_order`` still finds a cancelled and a
    filled order after the whole engine restarts, and again after the gateway alone is killed and restarted."""
    e = small_ring_engine(tmp_path, snapshot_interval_s=0)
    try:
        ids = run(close_some_orders(e))
        restart_everything(e)
        run(check_closed_orders(e, ids))
        restart_gateway(e)
        run(check_closed_orders(e, ids))
    finally:
        e.stop()


def test_a_gateway_killed_knows_the_orders_closed_before_the_snapshot_it_restarts_from(tmp_path):
    """The closed orders are also written every ``history_s``: a gateway killed after a snapshot that followed the
    orders' last events still finds them."""
    e = small_ring_engine(tmp_path, snapshot_interval_s=0.3, history_s=0.2)
    try:
        ids = run(close_some_orders(e))
        time.sleep(0.5)  # the heartbeats are written every 0.2 s
        traded = read_heartbeats(e.cfg)["matcher"]["event_seq"]
        deadline = time.monotonic() + 10
        while True:  # a snapshot after the orders' events, and the history written after them
            state = load_newest(e.cfg.data_path / "snapshots")[0]
            if state is not None and state["counters"][2] >= traded and \
                    read_heartbeats(e.cfg)["gateway"]["history_seq"] >= traded:
                break
            assert time.monotonic() < deadline, "no snapshot or history after the trades"
            time.sleep(0.1)
        restart_gateway(e)
        run(check_closed_orders(e, ids))
    finally:
        e.stop()


@pytest.mark.slow
@pytest.mark.parametrize("snapshot_interval_s", [0, 0.3])
def test_gateway_killed_at_random_points_keeps_every_open_order(tmp_path, snapshot_interval_s):
    """Rounds of random trading (alice rests on both sides, bob crosses, cancels), each ended by a kill -9 of the
    gateway at a random moment; after each restart alice's open orders as the gateway gives them equal the matcher's
    (the journal replayed here), with their client ids, prices and remaining sizes."""
    from engine.journal import JournalReader
    from engine.matcher import Engine

    e = small_ring_engine(tmp_path, snapshot_interval_s)
    rng = random.Random(snapshot_interval_s * 10 + 1)
    next_id = {"alice": 1, "bob": 1}

    async def trade():
        clients = dict(zip(("alice", "bob"), await connected(e, "alice", "bob")))
        for _ in range(rng.randint(30, 200)):
            who = rng.choice(("alice", "bob"))
            c, x = clients[who], rng.random()
            if x < 0.6:
                specs = []
                for i in range(8):
                    side = rng.choice(("buy", "sell"))
                    price = rng.randint(99, 101) if who == "bob" else \
                        rng.randint(96, 99) if side == "buy" else rng.randint(101, 104)
                    specs.append(dict(symbol="BTC/USD", side=side, amount=rng.randint(1, 9), price=price,
                                      params={"clientOrderId": next_id[who] + i}))
                next_id[who] += 8
                assert all(o["status"] != "rejected" for o in await c.create_orders(specs))
            elif x < 0.97:
                mine = await c.fetch_open_orders()
                for o in rng.sample(mine, min(len(mine), 4)):
                    await c.cancel_order(o["id"])
            else:
                await c.cancel_all_orders()
        for c in clients.values():
            await c.close()

    async def gateway_view():
        (alice,) = await connected(e, "alice")
        orders = await alice.fetch_open_orders()
        await alice.close()
        return sorted((int(o["id"]), int(o["clientOrderId"]), o["price"], o["remaining"]) for o in orders)

    def matcher_view():
        engine = Engine(**e.cfg.engine.capacities())
        for _, commands in JournalReader(e.cfg.data_path / "journal").read_from(1):
            engine.process(commands)
        return sorted((o.order_id, o.client_id, o.price, o.remaining) for o in engine.l3(1)
                      if o.account == ACCOUNTS["alice"])

    try:
        resting = []
        for _ in range(5):
            run(trade())
            time.sleep(rng.random() * 0.05)
            restart_gateway(e)
            got = run(gateway_view())
            assert got == matcher_view()
            resting.append(len(got))
        assert sum(resting) > 50  # the rounds left orders to find
    finally:
        e.stop()
