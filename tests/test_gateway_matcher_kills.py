"""The matcher killed again and again under trading through the gateway, each time with some of the commands it
had taken never journaled: every request still gets one answer, and the answers agree with the journal.  An
acknowledged command is in the journal once; a COMMAND_LOST one is not there at all; the open orders the gateway
reports are those acknowledged and not cancelled.  Slow (about 30 s): ``pytest -m slow``."""
from __future__ import annotations

import asyncio
import os
import random
import signal

import pytest

from engine.records import Cmd
from gateway.client import GatewayError

from gateway_harness import GatewayEngine, connected, funded, kill_stopped_matcher, unit_market

ACCOUNTS = {"alice": 7, "bob": 8}
ROUNDS = 6


@pytest.mark.slow
def test_every_command_is_answered_once_and_as_the_journal_says_across_matcher_kills(tmp_path):
    engine = GatewayEngine(tmp_path, ACCOUNTS, {
        "assets": [dict(id=1, symbol="USD", decimals=2), dict(id=2, symbol="BTC", decimals=8)],
        "markets": [unit_market(1, "BTC", "USD")],
        "accounts": funded(ACCOUNTS.values(), USD=10 ** 12, BTC=10 ** 9),
        "gateway": dict(rate_per_s=100000, burst=100000),
    })
    rng = random.Random(31)
    next_id = {who: 1 for who in ACCOUNTS}
    acked_places: dict[str, dict[int, int]] = {who: {} for who in ACCOUNTS}  # client id -> order id
    acked_cancels: dict[str, set[int]] = {who: set() for who in ACCOUNTS}  # order ids
    lost_places: dict[str, set[int]] = {who: set() for who in ACCOUNTS}  # client ids
    cancelling: dict[str, set[int]] = {who: set() for who in ACCOUNTS}  # this round's
    lost_total = 0

    async def requests(client, who: str, n: int) -> list:
        """``n`` requests without waiting for their answers: resting orders that never cross (buys below 50,
        sells above 60), now and then a cancel of one acknowledged before, or a batch of three orders."""
        out = []
        for _ in range(n):
            open_ids = sorted(set(acked_places[who].values()) - acked_cancels[who] - cancelling[who])
            if open_ids and rng.random() < 0.25:
                order_id = rng.choice(open_ids)
                cancelling[who].add(order_id)
                out.append(("cancel", order_id, asyncio.ensure_future(client.cancel_order(order_id))))
                continue
            specs = []
            for _ in range(3 if rng.random() < 0.2 else 1):
                side = rng.choice(("buy", "sell"))
                price = rng.randint(1, 49) if side == "buy" else rng.randint(61, 100)
                specs.append(dict(symbol="BTC/USD", side=side, amount=rng.randint(1, 5), price=price,
                                  params={"clientOrderId": next_id[who]}))
                next_id[who] += 1
            if len(specs) == 1:
                s = specs[0]
                out.append(("place", s["params"]["clientOrderId"], asyncio.ensure_future(
                    client.create_order(s["symbol"], "limit", s["side"], s["amount"], s["price"], s["params"]))))
            else:
                out.append(("batch", [s["params"]["clientOrderId"] for s in specs],
                            asyncio.ensure_future(client.create_orders(specs))))
            if rng.random() < 0.3:
                await asyncio.sleep(0)  # let some go out alone, some together
        return out

    def settle(who: str, kind: str, ident, result) -> int:
        """Book one answer; returns 1 for a COMMAND_LOST."""
        if kind == "batch":
            return sum(settle(who, "place", cid, r if r.get("status") != "rejected" else r["error"])
                       for cid, r in zip(ident, result))
        if isinstance(result, GatewayError):
            assert result.name == "COMMAND_LOST", (who, kind, ident, result)
            if kind == "place":
                lost_places[who].add(ident)
            return 1
        assert not isinstance(result, BaseException), (who, kind, ident, result)
        if kind == "place":
            assert result["clientOrderId"] == str(ident) and result["status"] == "open"
            acked_places[who][ident] = int(result["id"])
        else:
            assert result["status"] == "canceled"
            acked_cancels[who].add(ident)
        return 0

    async def scenario():
        nonlocal lost_total
        clients = dict(zip(ACCOUNTS, await connected(engine, *ACCOUNTS, timeout_s=30)))
        for _ in range(ROUNDS):
            sent = []
            for pending in cancelling.values():
                pending.clear()
            for who, client in clients.items():  # answered before the stop, or waiting in the ring after it
                sent += [(who, *r) for r in await requests(client, who, rng.randint(5, 40))]
            await asyncio.sleep(rng.random() * 0.02)
            os.kill(engine.sup.procs["matcher"].pid, signal.SIGSTOP)
            for who, client in clients.items():
                sent += [(who, *r) for r in await requests(client, who, rng.randint(0, 120))]
            await asyncio.sleep(0.3)  # forwarded into the command ring
            await kill_stopped_matcher(engine, take=rng.randint(0, 200))
            answers = await asyncio.wait_for(asyncio.gather(*(f for *_, f in sent), return_exceptions=True), 30)
            lost_total += sum(settle(who, kind, ident, a) for (who, kind, ident, _), a in zip(sent, answers))
        journal = engine.journal()
        for who, account in ACCOUNTS.items():
            mine = journal[journal["account"] == account]
            placed = mine["id"][mine["kind"] == Cmd.PLACE].tolist()
            assert len(placed) == len(set(placed))  # none twice
            assert set(acked_places[who]) <= set(placed)
            assert not lost_places[who] & set(placed)
            open_now = {int(o["id"]) for o in await clients[who].fetch_open_orders()}
            assert open_now == set(acked_places[who].values()) - acked_cancels[who]
        for client in clients.values():
            await client.close()

    try:
        asyncio.run(asyncio.wait_for(scenario(), 300))
    finally:
        engine.stop()
    assert lost_total > 0  # the seed does lose some: the marks were exercised
    assert sum(map(len, acked_places.values())) > 100
