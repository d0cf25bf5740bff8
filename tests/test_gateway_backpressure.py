"""The gateway against a full command ring: with the matcher paused, a market maker's row messages fill the
ring (65,536 slots); the forward that does not fit waits whole in the gateway (``MatcherFeed``'s backlog, made
from its ``ForwardBatch``) and the gateway reads no more requests until it is in.  Once the matcher runs again,
every command is journaled in the order sent and answered once, none lost."""
from __future__ import annotations

import asyncio
import os
import signal

import numpy as np
from gateway_harness import GatewayEngine, connected, funded, run, unit_market

from engine.cmdring import command_ring_status
from engine.codes import ResultCode
from engine.records import Cmd, CmdFlag
from gateway import messages as m

MESSAGES, ROWS = 300, 256  # 76,800 commands: more than the ring holds


def test_a_full_command_ring_holds_the_forward_back_and_loses_nothing(tmp_path):
    engine = GatewayEngine(tmp_path, {"alice": 7}, {
        "assets": [dict(id=1, symbol="USD", decimals=2), dict(id=2, symbol="BTC", decimals=8)],
        "markets": [unit_market(1, "BTC", "USD")],
        "accounts": funded([7], USD=1000000),
        "gateway": dict(rate_per_s=10_000_000, burst=10_000_000, max_batch=ROWS, push_batch=1024),
    })
    try:
        capacity = engine.cfg.command_ring_capacity
        assert MESSAGES * ROWS > capacity

        async def scenario():
            (alice,) = await connected(engine, "alice")
            matcher = engine.sup.procs["matcher"]
            rows = np.zeros(MESSAGES * ROWS, m.COMMAND_ROW_DTYPE)  # cancels of orders never placed: each rejected
            rows["kind"], rows["flags"], rows["market"] = Cmd.CANCEL, CmdFlag.BY_CLIENT_ID, 1
            rows["id"] = np.arange(1, len(rows) + 1) + 10**9
            os.kill(matcher.pid, signal.SIGSTOP)
            try:
                sent = asyncio.gather(*(alice.send_order_rows(rows[k * ROWS:(k + 1) * ROWS]) for k in range(MESSAGES)))
                for _ in range(200):
                    await asyncio.sleep(0.05)
                    status = command_ring_status(engine.cfg.command_ring_name)
                    if status["full"]:
                        break
                assert status["full"] and status["lag"] <= capacity and not sent.done()
            finally:
                os.kill(matcher.pid, signal.SIGCONT)
            replies = [r for part in await asyncio.wait_for(sent, 20) for r in part]
            assert len(replies) == len(rows)
            assert all(type(r) is m.Reject and r.code == ResultCode.UNKNOWN_ORDER for r in replies)
            await alice.close()

        run(scenario())
        journaled = engine.journal()
        cancels = journaled[journaled["kind"] == Cmd.CANCEL]
        assert cancels["id"].tolist() == (np.arange(1, MESSAGES * ROWS + 1) + 10**9).tolist()  # once each, in order
    finally:
        engine.stop()
