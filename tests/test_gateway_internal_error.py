"""A gateway handler that fails (a bug) costs only its own requests: they get GATEWAY_INTERNAL_ERROR
naming the exception, and the rest of the burst, before and after, is served.  In process: the
gateway's loop step (``on_readable``) over its real ROUTER, a CurveZMQ client on a real socket."""
from __future__ import annotations

import asyncio
import os
import time

import tomli_w
import zmq

from engine.codes import ResultCode
from engine.config import load
from gateway import messages as m
from gateway.keys import load_pair, new_pair, server_pair
from gateway.server import GatewayStage
from gateway_harness import order_rows


def test_a_failing_handler_answers_its_requests_with_an_internal_error_and_the_burst_goes_on(tmp_path):
    new_pair(tmp_path / "keys", "mm")
    public, secret = load_pair(tmp_path / "keys" / "mm.key_secret")
    path = tmp_path / "xos.toml"
    path.write_text(tomli_w.dumps({
        "engine": {"name": f"xos-internal-{os.getpid()}", "data_dir": str(tmp_path / "data")},
        "gateway": {"address": f"ipc://{tmp_path / 'gw'}", "keys": [{"account": 7, "public_key": public.decode()}]},
    }))
    cfg = load(path)
    stage = GatewayStage(cfg)
    stage.loop = asyncio.new_event_loop()  # on_readable may queue a call on it; nothing runs it here
    stage.seeded = True  # no matcher here: its order table is as rebuilt as it gets
    ctx = zmq.Context()
    client = ctx.socket(zmq.DEALER)
    try:
        client.curve_serverkey = server_pair(cfg)[0]
        client.curve_publickey, client.curve_secretkey = public, secret
        client.connect(cfg.gateway.address)

        def boom(*args):
            raise ZeroDivisionError("a bug")

        stage.take_rows = boom  # an OrderRows message's handler
        joined = []
        on_rows = stage.on_rows
        stage.on_rows = lambda s, heads, *rest: joined.append(heads[:, 0].tolist()) or on_rows(s, heads, *rest)
        stage.handlers[m.CancelOrder] = boom
        rows = order_rows({"kind": 1, "market": 1, "side": 0, "price": 100, "qty": 1, "rid": 11})
        replies = {}

        def exchange(requests: list) -> None:
            for request in requests:
                client.send(m.encode(request))
            deadline = time.monotonic() + 10
            while not all(r.rid in replies for r in requests) and time.monotonic() < deadline:
                if stage.router.poll(100):
                    stage.on_readable()
                while client.poll(0):
                    msg = m.reply_decoder.decode(client.recv())
                    for item in msg.items if type(msg) is m.Replies else (msg,):
                        replies[item.rid] = item

        exchange([m.Heartbeat(rid=1)])  # the session begins: its next OrderRows are joined in C (on_rows)
        exchange([m.OrderRows(rid=2, rows=rows.tobytes(), format=m.FIXED_ROWS), m.CancelOrder(rid=3, order_id=5),
                  m.Heartbeat(rid=4)])
        assert sorted(replies) == [1, 2, 3, 4]
        for rid in (2, 3):
            assert type(replies[rid]) is m.Error and replies[rid].code == ResultCode.GATEWAY_INTERNAL_ERROR
            assert replies[rid].name == "GATEWAY_INTERNAL_ERROR" and "ZeroDivisionError: a bug" in replies[rid].reason
        assert all(type(replies[rid]) is not m.Error for rid in (1, 4))
        assert joined == [[2]]  # the OrderRows went the C way
        assert stage.counters["internal_errors"] == 2 and stage.failure is None
        assert len(stage.next_forward) == 0 and not stage.fifo  # nothing of the failed requests was collected
    finally:
        client.close(linger=0)
        ctx.term()
        stage.loop.close()
        stage.close()
