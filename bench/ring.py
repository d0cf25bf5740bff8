"""Event ring benchmark: one producer process, 1..8 consumer processes, over shared memory.

    python -m bench.ring --consumers 3 --events 10000000 --json bench-ring.json

Steps (every run on a fresh ring; consumer processes attach before the clock starts):

1. throughput: the producer publishes ``--events`` events in batches of ``--batch`` from C
   (``EventRing.publish_pattern``: seq, a payload that is a function of seq, and a CLOCK_MONOTONIC
   stamp in ``ts``); every consumer consumes all of them from C in batches of up to
   ``--consumer-batch`` (``RingConsumer.consume_checksum``), checking each event's seq and payload.
   Time = from just before the first publish to the last consumer's last commit (CLOCK_MONOTONIC,
   shared by the processes).  ``--runs`` runs; the median events/s is reported.
2. latency: one-hop latency (consumer's clock when it reads the event − the producer's stamp) in
   an HdrHistogram, (a) from the throughput runs (a saturated ring: includes queueing behind a full
   ring) and (b) from a paced run, ``--latency-rate`` events/s in batches of ``--latency-batch``.

The workload is deterministic (seq → payload); ``--seed`` is recorded for the report format.
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import multiprocessing as mp
import platform
import statistics
import sys
import time

import numpy as np
from hdrh.histogram import HdrHistogram

from engine.ring import EventRing, RingConsumer, pattern

HIST_MAX_NS = 60_000_000_000
PERCENTILES = (("p50_ns", 50.0), ("p90_ns", 90.0), ("p99_ns", 99.0), ("p999_ns", 99.9), ("p9999_ns", 99.99))


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def expected_checksum(total: int) -> int:
    """Sum over seq = 1..total of seq + price + taker_fee, mod 2^64 (what consume_checksum returns)."""
    acc = np.uint64(0)
    with np.errstate(over="ignore"):
        for lo in range(1, total + 1, 1 << 22):
            seq = np.arange(lo, min(lo + (1 << 22), total + 1), dtype=np.int64)
            price, fee = pattern(seq)
            acc += seq.view(np.uint64).sum(dtype=np.uint64)
            acc += price.view(np.uint64).sum(dtype=np.uint64)
            acc += fee.view(np.uint64).sum(dtype=np.uint64)
    return int(acc)


def _consumer(ring: str, name: str, total: int, batch: int, verify: bool, latency: bool, ready, results) -> None:
    try:
        c = RingConsumer.attach(ring, name)
        lat_v = lat_c = None
        if latency:
            lat_v = np.zeros(total, dtype=np.int64)
            lat_c = np.zeros(total, dtype=np.int64)
        ready.put(name)
        res = c.consume_checksum(total, batch, verify=verify, lat_values=lat_v, lat_counts=lat_c)
        res["stats"] = c.stats
        if latency:
            runs = res["lat_runs"]
            res["lat"] = (lat_v[:runs].copy(), lat_c[:runs].copy())
        c.detach()
        results.put((name, res))
    except BaseException as exc:  # report instead of hanging the parent
        ready.put(name)
        results.put((name, {"error": repr(exc)}))


def run_once(args, run: int, total: int, *, batch: int, period_ns: int = 0, latency: bool = True) -> dict:
    ctx = mp.get_context("fork")
    name = f"/xos-bench-ring-{os.getpid()}-{run}"
    ring = EventRing.create(name, args.capacity)
    try:
        ready, results = ctx.Queue(), ctx.Queue()
        procs = [
            ctx.Process(target=_consumer, args=(name, f"c{i}", total, args.consumer_batch, not args.no_verify,
                                                latency, ready, results), daemon=True)
            for i in range(args.consumers)
        ]
        for p in procs:
            p.start()
        for _ in procs:
            ready.get(timeout=60)
        time.sleep(0.05)  # let the consumers reach their futex sleep
        t0 = time.monotonic_ns()
        ring.publish_pattern(total, batch, stamp=True, period_ns=period_ns)
        out = dict(results.get(timeout=600) for _ in procs)
        for p in procs:
            p.join(timeout=60)
        stats = ring.stats
    finally:
        ring.close()
    errors = [f"{n}: {r['error']}" for n, r in out.items() if "error" in r]
    if errors:
        raise RuntimeError("consumer failed: " + "; ".join(errors))
    end = max(r["end_ns"] for r in out.values())
    return dict(seconds=(end - t0) / 1e9, events_per_s=total / ((end - t0) / 1e9), producer=stats, consumers=out)


def check(res: dict, total: int, want_sum: int | None) -> list[str]:
    problems = []
    for n, r in res["consumers"].items():
        if r["count"] != total:
            problems.append(f"{n} consumed {r['count']} of {total}")
        if r["seq_errors"] or r["payload_errors"]:
            problems.append(f"{n}: {r['seq_errors']} seq errors, {r['payload_errors']} payload errors")
        if want_sum is not None and r["checksum"] != want_sum:
            problems.append(f"{n}: checksum {r['checksum']:#x} != expected {want_sum:#x}")
    return problems


def histogram(results: list[dict]) -> dict:
    h = HdrHistogram(1, HIST_MAX_NS, 3)
    for res in results:
        for r in res["consumers"].values():
            values, counts = r["lat"]
            for v, k in zip(values.tolist(), counts.tolist()):
                h.record_value(min(max(v, 1), HIST_MAX_NS), k)
    out = {key: h.get_value_at_percentile(p) for key, p in PERCENTILES}
    out["max_ns"] = h.get_max_value()
    out["mean_ns"] = round(h.get_mean_value(), 1)
    out["count"] = h.get_total_count()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.ring", description=__doc__.split("\n\n")[0])
    ap.add_argument("--consumers", type=int, default=3, help="consumer processes (1..8)")
    ap.add_argument("--events", type=int, default=10_000_000, help="events per throughput run")
    ap.add_argument("--runs", type=int, default=5, help="throughput runs (median reported)")
    ap.add_argument("--capacity", type=int, default=1 << 16, help="ring slots (power of two)")
    ap.add_argument("--batch", type=int, default=2048, help="producer publish batch")
    ap.add_argument("--consumer-batch", type=int, default=8192, help="most events a consumer reads per commit")
    ap.add_argument("--latency-events", type=int, default=200_000, help="events in the paced latency run (0: skip)")
    ap.add_argument("--latency-rate", type=int, default=200_000, help="paced run: events per second")
    ap.add_argument("--latency-batch", type=int, default=1, help="paced run: events per publish")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-verify", action="store_true", help="consumers skip the per-event seq/payload check")
    ap.add_argument("--json", help="write the report here")
    args = ap.parse_args(argv)
    if not 1 <= args.consumers <= 8:
        ap.error("--consumers must be 1..8")

    want_sum = expected_checksum(args.events)
    runs = []
    for run in range(args.runs):
        res = run_once(args, run, args.events, batch=args.batch)
        problems = check(res, args.events, want_sum)
        if problems:
            _log("FAILED: " + "; ".join(problems))
            return 1
        _log(f"run {run + 1}/{args.runs}: {res['events_per_s'] / 1e6:.2f} M events/s "
             f"({res['seconds']:.3f} s; producer waits {res['producer']['waits']}, "
             f"sleeps {res['producer']['sleeps']}, wakes {res['producer']['wakes']})")
        runs.append(res)
    eps = [r["events_per_s"] for r in runs]
    median_idx = sorted(range(len(runs)), key=lambda i: eps[i])[len(runs) // 2]
    report = {
        "benchmark": "ring",
        "consumers": args.consumers,
        "events": args.events,
        "runs": args.runs,
        "capacity": args.capacity,
        "batch": args.batch,
        "consumer_batch": args.consumer_batch,
        "seed": args.seed,
        "verify": not args.no_verify,
        "events_per_s_median": statistics.median(eps),
        "events_per_s_runs": eps,
        "bytes_per_s_median": statistics.median(eps) * 128,
        "median_run": {
            "seconds": runs[median_idx]["seconds"],
            "producer": runs[median_idx]["producer"],
            "consumers": {n: {"seconds": r["seconds"], "stats": r["stats"]}
                          for n, r in runs[median_idx]["consumers"].items()},
        },
        "latency_saturated": histogram(runs),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
    }
    _log(f"median: {report['events_per_s_median'] / 1e6:.2f} M events/s to {args.consumers} consumer(s)")
    if args.latency_events > 0:
        period = int(1e9 * args.latency_batch / args.latency_rate)
        res = run_once(args, args.runs, args.latency_events, batch=args.latency_batch, period_ns=period)
        problems = check(res, args.latency_events, None)
        if problems:
            _log("FAILED (latency run): " + "; ".join(problems))
            return 1
        report["latency_paced"] = dict(histogram([res]), rate=args.latency_rate, batch=args.latency_batch,
                                       events=args.latency_events)
        lp = report["latency_paced"]
        _log(f"paced latency at {args.latency_rate} ev/s: p50 {lp['p50_ns'] / 1e3:.1f} us, "
             f"p99 {lp['p99_ns'] / 1e3:.1f} us, p99.9 {lp['p999_ns'] / 1e3:.1f} us")
    ls = report["latency_saturated"]
    _log(f"saturated latency: p50 {ls['p50_ns'] / 1e3:.1f} us, p99 {ls['p99_ns'] / 1e3:.1f} us")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    else:
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
