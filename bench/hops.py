"""ZeroMQ's round-trip floor on this machine: what one request and its reply cost with nothing else.

    python -m bench.hops --count 2000 --gaps-ms 5 0.5 0 --json hops.json

A DEALER in this process sends a 100-byte message to a ROUTER in another process over tcp loopback,
which sends it straight back; the round trip is timed in the sender.  With ``--gaps-ms`` the
sender waits that long between round trips (0: back to back), as an order flow of that rate
would; ``--curve`` does the same over CurveZMQ, as the gateway's sessions run.  An order's path
through xos has three such hops (client -> gateway, gateway -> matcher, gateway -> client) plus the
ring's wake-up, so these figures bound ``bench.wire``'s latency from below.  Prints p50 / p99 /
p99.9 per gap (HdrHistogram); ``--json`` writes them.  ``--cpu-latency-us 0`` measures the floor with
idle CPUs kept awake (``engine.cpu_latency_us``).
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import time

import numpy as np
import zmq

from bench import CPU_LATENCY_HELP, cpu_latency, write_json

MESSAGE = b"x" * 100
STOP = b"stop"


def echo_server(address: str, server_secret: bytes | None, ready) -> None:
    """A ROUTER that sends every message back to its sender until STOP."""
    ctx = zmq.Context()
    s = ctx.socket(zmq.ROUTER)
    if server_secret is not None:
        s.curve_server = True
        s.curve_secretkey = server_secret
    port = s.bind_to_random_port(address)
    ready.put(port)
    while True:
        routing_id, msg = s.recv_multipart()
        s.send_multipart([routing_id, msg])
        if msg == STOP:
            break
    s.close(linger=1000)
    ctx.term()


def round_trips(count: int, gaps_ms: list[float], curve: bool) -> dict:
    """``{gap: (p50, p99, p99.9) in us}`` of ``count`` timed round trips per gap (after 100 untimed)."""
    from hdrh.histogram import HdrHistogram

    server_public = server_secret = None
    if curve:
        server_public, server_secret = zmq.curve_keypair()
    ready = mp.get_context("spawn").Queue()
    server = mp.get_context("spawn").Process(target=echo_server, args=("tcp://127.0.0.1", server_secret, ready))
    server.start()
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    try:
        if curve:
            s.curve_serverkey = server_public
            s.curve_publickey, s.curve_secretkey = zmq.curve_keypair()
        s.connect(f"tcp://127.0.0.1:{ready.get(timeout=30)}")
        for _ in range(100):  # connection and handshake, untimed
            s.send(MESSAGE)
            s.recv()
        out = {}
        for gap in gaps_ms:
            times = np.zeros(count, np.int64)
            for i in range(count):
                t = time.perf_counter_ns()
                s.send(MESSAGE)
                s.recv()
                times[i] = time.perf_counter_ns() - t
                if gap:
                    time.sleep(gap / 1000)
            hist = HdrHistogram(1, 10**10, 3)
            for value in times.tolist():
                hist.record_value(value)
            p = hist.get_percentile_to_value_dict([50, 99, 99.9])
            out[gap] = tuple(round(p[q] / 1000, 1) for q in (50, 99, 99.9))
        s.send(STOP)
        s.recv()
    finally:
        s.close(linger=0)
        ctx.term()
        server.join(timeout=10)
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=2000, help="timed round trips per gap")
    p.add_argument("--gaps-ms", type=float, nargs="+", default=[5.0, 0.5, 0.0],
                   help="pause between round trips (0: back to back)")
    p.add_argument("--curve", action="store_true", help="over CurveZMQ, as the gateway's sessions")
    p.add_argument("--cpu-latency-us", type=int, default=-1, help=CPU_LATENCY_HELP)
    p.add_argument("--json")
    args = p.parse_args(argv)
    result = {"count": args.count, "curve": args.curve, "message_bytes": len(MESSAGE), "round_trip_us": {}}
    with cpu_latency(args.cpu_latency_us, result):
        trips = round_trips(args.count, args.gaps_ms, args.curve)
    for gap, (p50, p99, p999) in trips.items():
        result["round_trip_us"][str(gap)] = {"p50": p50, "p99": p99, "p999": p999}
        print(f"hops: gap {gap:g} ms, {'CurveZMQ' if args.curve else 'plain'} round trip p50 {p50:,.1f} us  "
              f"p99 {p99:,.1f} us  p99.9 {p999:,.1f} us", flush=True)
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
