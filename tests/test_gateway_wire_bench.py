"""Smoke run of the wire-to-wire benchmark at tiny sizes: every mode produces its figures.
(Slow-marked: it starts the whole engine twice and spawns load-generator processes.)"""
from __future__ import annotations

import json

import pytest

from bench import wire


@pytest.mark.slow
def test_wire_benchmark_smoke(tmp_path, capsys):
    out = wire.main(["--seconds", "0.5", "--warmup", "0.1", "--batches", "1", "16", "--fractions", "0.5",
                     "--rates", "2000", "--settle", "0.2", "--no-marketdata", "--p99-floor", "0",
                     "--json", str(tmp_path / "wire.json")])
    saved = json.loads((tmp_path / "wire.json").read_text())
    assert saved["closed"].keys() == {"1", "16"}
    for batch in ("1", "16"):
        closed = saved["closed"][batch]
        assert closed["orders_per_s"] > 0 and closed["rejected"] == 0 and closed["unanswered"] == 0
        assert closed["ceiling_ratio"] > 0  # the gateway receives in C, past pyzmq: it may beat the bare loop
        assert closed["p50_us"] <= closed["p99_us"] <= closed["p999_us"]
        # the two sides of the matcher's intake, each less than the whole (medians do not add up exactly)
        assert 0 < closed["to_intake_p50_us"] <= closed["p99_us"] and 0 < closed["intake_to_ack_p50_us"] <= closed["p99_us"]
        assert set(closed["cpu_us_per_order"]) >= {"gateway", "matcher", "clients", "total"}
        assert closed["client_stalls"] == 0  # the load clients had room: nothing grew in the timed loop
        host = closed["host"]  # the whole host over the timed window: its CPUs' shares add up
        assert sum(host[f"cpu_{k}_pct"] for k in ("busy", "idle", "iowait", "steal")) == pytest.approx(100)
    assert [p["batch"] for p in saved["open"]] == [1, 1, 16, 16]
    # the bare path at each open-loop point's batch size and rate, its figures beside the point's
    assert [(b["batch"], b["offered_per_s"]) for b in saved["bare"]] == \
        sorted((p["batch"], p["offered_per_s"]) for p in saved["open"])
    bare = {(b["batch"], b["offered_per_s"]): b for b in saved["bare"]}
    for p in saved["open"]:
        b = bare[p["batch"], p["offered_per_s"]]
        assert (p["bare_p50_us"], p["bare_p99_us"]) == (b["p50_us"], b["p99_us"]) and b["unanswered"] == 0
    assert all(p["acked"] > 0 and p["rejected"] == 0 and p["client_stalls"] == 0 for p in saved["open"])
    # an open loop answers about what it is offered: more only by a backlog from before the timed window
    # that drains inside it (a rate over the span of the acks read late acks, then all at once, as 2.6x)
    assert all(0 < p["orders_per_s"] <= 1.25 * p["offered_per_s"] for p in saved["open"])
    # the open loop's own lateness is measured (the closed loop sends when answered: none)
    assert all(0 < p["send_late_p50_us"] <= p["send_late_p99_us"] for p in saved["open"])
    assert saved["closed"]["1"]["send_late_p50_us"] == 0
    assert saved["fsync_off"]["p50_us"] > 0
    assert saved["cpu_latency_us"] == -1  # no --cpu-latency-us: the host's setting
    assert saved["settle_s"] == 0.2  # the pause after the closed loops, and between two batch sizes' open loops
    log = capsys.readouterr().err
    assert "settling 0.2 s after the closed loops" in log and "settling 0.2 s before the 16/msg open loop" in log
    assert saved["journal_io"] in ("o_direct", "page_cache")  # how the acks' durable writes were made
    assert saved["journal_commits"] > 0 and saved["journal_write_mean_us"] > 0
    assert out["max_rate_p99_under_1ms"] == saved["max_rate_p99_under_1ms"]
    assert saved["lowest_rate_tried"] == min(p["offered_per_s"] for p in saved["open"])


@pytest.mark.slow
def test_without_a_rate_under_1ms_lower_rates_are_tried_down_to_the_floor(tmp_path, capsys):
    """An open loop far past what the engine takes: its p99 is far over 1 ms, so rates a quarter lower each are
    tried down to the floor (here 20,000/s), each long enough for 2,000 timed orders, until one keeps p99 under
    1 ms; the highest rate reported is one of those that did, or none."""
    out = wire.main(["--seconds", "0.5", "--warmup", "0.1", "--batches", "1", "--parts", "open", "--rates", "2000000",
                     "--p99-floor", "20000", "--settle", "0", "--no-marketdata", "--json", str(tmp_path / "wire.json")])
    first, *searched = out["open"]
    assert first["p99_us"] > wire.P99_TARGET_US and "p99_search" not in first
    rates = [p["offered_per_s"] for p in searched]
    assert rates and all(p["p99_search"] for p in searched)
    expected = [500_000, 125_000, 31_250, 20_000]
    assert rates == expected[:len(rates)]
    # it stops at the first rate that keeps p99 under 1 ms, or at the floor
    assert all(not wire.p99_met(p) for p in searched[:-1])
    assert wire.p99_met(searched[-1]) or rates[-1] == 20_000
    assert all(p["acked"] >= wire.P99_SEARCH_ORDERS for p in searched)
    good = [p["offered_per_s"] for p in out["open"] if wire.p99_met(p)]
    assert out["max_rate_p99_under_1ms"] == (max(good) if good else 0) and out["lowest_rate_tried"] == rates[-1]
    assert "no rate kept p99 under 1 ms: lower ones, down to 20,000/s" in capsys.readouterr().err


def test_a_negative_p99_floor_is_refused(capsys):
    with pytest.raises(SystemExit):
        wire.main(["--p99-floor", "-5"])
    assert "--p99-floor -5: a rate cannot be negative" in capsys.readouterr().err


def test_a_negative_settle_is_refused_before_anything_starts(capsys):
    with pytest.raises(SystemExit):
        wire.main(["--settle", "-1"])
    assert "--settle -1: the pause cannot be negative" in capsys.readouterr().err


@pytest.mark.parametrize("wire_format", ["rows", "fixed-rows", "structs"])
def test_the_bare_path_answers_each_order_at_each_rate_and_batch_size(tmp_path, capsys, wire_format):
    """``--parts bare`` alone starts no engine: the open-loop clients run against a bare server that acks each
    order at once, at each rate and batch size."""
    out = wire.main(["--parts", "bare", "--wire", wire_format, "--batches", "1", "16", "--rates", "2000", "80000",
                     "--seconds", "0.5", "--warmup", "0.1", "--json", str(tmp_path / "wire.json")])
    saved = json.loads((tmp_path / "wire.json").read_text())
    assert saved == json.loads(json.dumps(out)) and not saved["closed"] and not saved["open"]
    assert [(b["batch"], b["offered_per_s"]) for b in saved["bare"]] == [(1, 2000), (1, 80000), (16, 2000), (16, 80000)]
    for b in saved["bare"]:
        assert b["rejected"] == 0 and b["unanswered"] == 0 and b["client_stalls"] == 0
        assert b["acked"] >= 0.5 * b["offered_per_s"] * 0.9  # every order of the half second, and the mass cancel
        assert 0 < b["orders_per_s"] <= 1.25 * b["offered_per_s"]
        assert 0 < b["p50_us"] <= b["p99_us"] <= b["p999_us"]
        # its acks carry the server's time of receipt: the way in and the way out, each less than the whole
        assert 0 < b["to_intake_p50_us"] <= b["p99_us"] and 0 < b["intake_to_ack_p50_us"] <= b["p99_us"]
    good = [b["offered_per_s"] for b in saved["bare"] if wire.p99_met(b)]
    assert saved["bare_max_rate_p99_under_1ms"] == (max(good) if good else 0)
    log = capsys.readouterr()
    assert "starting the engine" not in log.err and "bare path (no engine),  16/msg at     80,000/s: achieved" in log.err
    assert "wire: bare path (no engine) 1/msg at 2,000/s p50" in log.out


def test_the_bare_server_answers_as_the_gateway_would_and_an_unreadable_message_with_an_error():
    """Each request gets what the gateway would send for it, its acks stamped when read; bytes that are no
    request get a MALFORMED_MESSAGE error and the server goes on."""
    import multiprocessing as mp
    import time

    import numpy as np
    import zmq

    from gateway import messages as m

    server_public, server_secret = zmq.curve_keypair()
    public, secret = zmq.curve_keypair()
    address = f"tcp://127.0.0.1:{wire.free_port()}"
    ctx = mp.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    server = ctx.Process(target=wire.bare_server, args=(address, server_secret, server_public, ready, stop))
    server.start()
    zctx = zmq.Context()
    try:
        assert ready.wait(30)

        def connect():
            return wire.dealer(zctx, {"server_public": server_public, "public": public, "secret": secret,
                                      "address": address})

        def ask(sock, msg: bytes):
            sock.send(msg)
            assert sock.poll(10_000)
            return m.reply_decoder.decode(sock.recv())

        rows = wire.Traffic(1, "rows", 4).make(0, 4)

        def acked_in_order(sock, row_format: int) -> None:
            before = time.time_ns()
            acks = ask(sock, m.encode(m.OrderRows(rid=0, rows=m.pack_rows(rows, row_format), format=row_format)))
            assert type(acks) is m.AckRows and acks.format == row_format
            got = m.ack_rows(acks)
            assert got["rid"].tolist() == [1, 2, 3, 4] and got["client_id"].tolist() == rows["id"].tolist()
            assert np.all(got["order_id"] == 0)  # no engine: no order ids
            assert before <= got["ts"].min() and got["ts"].max() <= time.time_ns() and len(set(got["ts"])) == 1

        fresh, known = connect(), connect()
        acked_in_order(fresh, m.PACKED_ROWS)  # a session's first message: read in Python
        error = ask(known, b"\xc1 not msgpack")
        assert type(error) is m.Error and error.name == "MALFORMED_MESSAGE" and error.rid == 0
        for row_format in m.ROW_FORMATS:  # a known session's rows: read in C
            acked_in_order(known, row_format)
        batch = ask(known, m.encode(m.Batch(rid=9, requests=[
            m.PlaceOrder(rid=5, market=1, side=m.Side.BUY, price=10, qty=1, client_id=7),
            m.CancelOrder(rid=6, client_id=7)])))
        assert type(batch) is m.Replies and [(a.rid, a.client_id) for a in batch.items] == [(5, 7), (6, 7)]
        alone = ask(known, m.encode(m.MassCancel(rid=11)))
        assert type(alone) is m.Ack and alone.rid == 11
        assert type(ask(known, m.encode(m.Heartbeat(rid=12)))) is m.HeartbeatAck
    finally:
        stop.set()
        server.join(10)
        zctx.destroy(linger=0)
    assert server.exitcode == 0
