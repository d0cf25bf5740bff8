"""Stalls: how long the machine stops a running process while the engine serves a calm open loop, and which of
those stops the kernel saw (a wait for a CPU) and which it did not (the virtual CPU itself not running).

    python -m bench.stalls --rate 2000 --seconds 6 --json stalls.json

A probe process spins on the clock at ``SCHED_IDLE`` (it runs only on CPU time nothing else wants, so the engine
does not feel it) and notes every gap of more than ``--gap-us`` between two of its clock reads. After each gap it
reads its run-queue wait (``/proc/self/schedstat``, second field): a gap the kernel spent with the probe waiting
for a CPU is a **wait** (other tasks ran: on two cores, the engine); a gap the kernel counted as the probe
running is a **freeze**: the virtual CPU did not run at all, the hypervisor held it. Neither the engine nor the
kernel can see a freeze; every process on that CPU stops for its length.

Phases: the probe alone; then the engine as ``bench.wire`` runs it, one order a message at ``--rate``, with the
journal's fsync always and then off. Each phase prints its freezes and waits (how many, their total and largest,
the median spacing of the freezes, the frozen share of the probe's time) and the open loop's p50 and p99.

Session 29 on the usual 2-core VM (Firecracker, nested): at 2,000 orders/s with fsync always the probe found a
freeze of ~5 ms about every 100 ms (3-4 % of the time, both CPUs at once in ``perf``); with fsync off, or the
probe alone, or the journal's durable writes alone at the same rate, none. An order that meets one waits for it,
so on that machine an order's p99 at calm rates is several ms whatever the engine does: ``bench.wire``'s
``max_rate_p99_under_1ms`` is bounded by the host, and this benchmark is how to tell on another one.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench import CPU_LATENCY_HELP, cpu_latency, wire, write_json
from bench.path import wire_clients

FREEZE_SHARE = 0.5  # a gap whose run-queue wait is under this share of it is a freeze


def run_delay_ns() -> int:
    """This thread's time spent waiting on a run queue (schedstat's second field)."""
    with open("/proc/thread-self/schedstat") as f:
        return int(f.read().split()[1])


def classify(gaps: list[tuple[int, int, int]], spun_ns: int) -> dict:
    """Summarise ``gaps`` ((start, length, run-queue wait during it), ns from the probe's start) of a probe that
    spun ``spun_ns``: freezes (the kernel saw the probe running) and waits (it saw it waiting for a CPU)."""
    freezes = [(at, n) for at, n, waited in gaps if waited < FREEZE_SHARE * n]
    waits = [n for at, n, waited in gaps if waited >= FREEZE_SHARE * n]
    spacing = [b[0] - a[0] for a, b in zip(freezes, freezes[1:])]
    frozen = sum(n for _, n in freezes)
    return {"spun_ms": spun_ns / 1e6,
            "freezes": len(freezes), "frozen_ms": frozen / 1e6,
            "frozen_share": frozen / spun_ns if spun_ns else 0.0,
            "max_freeze_ms": max((n for _, n in freezes), default=0) / 1e6,
            "freeze_spacing_ms": statistics.median(spacing) / 1e6 if spacing else None,
            "waits": len(waits), "waited_ms": sum(waits) / 1e6, "max_wait_ms": max(waits, default=0) / 1e6}


def probe(delay: float, seconds: float, gap_ns: int, idle: bool, out) -> None:
    """After ``delay`` seconds, spin ``seconds`` on the clock, noting each gap longer than ``gap_ns`` with the
    run-queue wait during it; puts ``classify``'s summary on ``out``.  The run-queue wait is read again every
    0.5 ms (a gap's own wait is the wait since the last read, which began within 0.5 ms of the gap)."""
    if idle:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    time.sleep(delay)
    now = time.perf_counter_ns
    gaps = []
    t0 = last = now()
    end = t0 + int(seconds * 1e9)
    base, base_at = run_delay_ns(), t0
    cpu0 = time.thread_time_ns()
    while last < end:
        t = now()
        if t - last > gap_ns:
            waited = run_delay_ns()
            gaps.append((last - t0, t - last, waited - base))
            base, base_at = waited, t
        elif t - base_at > 500_000:
            base, base_at = run_delay_ns(), t
        last = t
    out.put(classify(gaps, time.thread_time_ns() - cpu0))


def probed(delay: float, seconds: float, gap_ns: int, idle: bool, during=None) -> tuple[dict, object]:
    """The probe's summary (``probe``), and what ``during()`` returns when given: it runs meanwhile, from the
    probe's start (the probe spins from ``delay`` seconds after)."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=probe, args=(delay, seconds, gap_ns, idle, out))
    proc.start()
    result = during() if during is not None else None
    summary = out.get(timeout=60 + delay + seconds)
    proc.join(10)
    return summary, result


def report(name: str, s: dict, point: dict | None) -> str:
    spacing = f", every ~{s['freeze_spacing_ms']:.0f} ms" if s["freeze_spacing_ms"] else ""
    line = (f"  {name:<30} freezes {s['freezes']:>3} ({s['frozen_ms']:,.0f} ms, {100 * s['frozen_share']:.1f} % of "
            f"{s['spun_ms']:,.0f} ms spun, largest {s['max_freeze_ms']:.1f} ms{spacing}); "
            f"waits {s['waits']} ({s['waited_ms']:,.0f} ms)")
    if point is not None:
        line += f"; orders p50 {point['p50_us']:,.0f} us, p99 {point['p99_us']:,.0f} us"
    return line


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.stalls", description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=2000.0, help="the open loop's orders per second, one a message")
    p.add_argument("--seconds", type=float, default=6.0, help="per phase")
    p.add_argument("--gap-us", type=int, default=1000, help="the least gap noted")
    p.add_argument("--no-idle", action="store_true", help="the probe at normal priority, not SCHED_IDLE")
    p.add_argument("--cpu-latency-us", type=int, default=-1, help=CPU_LATENCY_HELP)
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    if args.rate <= 0:
        p.error(f"--rate {args.rate:g}: must be positive")
    if args.seconds < 2:
        p.error(f"--seconds {args.seconds:g}: at least 2 (a warm-up, then the probe)")
    if args.gap_us < 1:
        p.error(f"--gap-us {args.gap_us}: must be positive")
    if not os.path.exists("/proc/thread-self/schedstat"):
        p.error("this kernel has no /proc/thread-self/schedstat (CONFIG_SCHED_INFO): waits cannot be told from freezes")
    gap_ns, idle = args.gap_us * 1000, not args.no_idle
    warmup = args.seconds / 4
    out: dict = {"benchmark": "stalls", "rate": args.rate, "seconds": args.seconds, "gap_us": args.gap_us,
                 "probe_sched_idle": idle, "phases": {}}
    with tempfile.TemporaryDirectory(prefix="xos-stalls-") as tmp, cpu_latency(args.cpu_latency_us, out):
        print("stalls (freezes: the CPU did not run; waits: another task did):", file=sys.stderr)
        summary, _ = probed(0, args.seconds - warmup, gap_ns, idle)
        out["phases"]["alone"] = {"probe": summary}
        print(report("the probe alone", summary, None), file=sys.stderr)
        clients = wire_clients(Path(tmp))
        for fsync in ("always", "off"):
            directory = Path(tmp) / f"fsync-{fsync}"
            directory.mkdir()
            engine = wire.Engine(directory, clients, fsync, marketdata=True)
            try:
                # the probe spins while the open loop records: from its warm-up to half a second before its end
                summary, point = probed(warmup + 0.5, args.seconds - warmup - 1.0, gap_ns, idle,
                                        lambda: wire.point(engine, clients, "open", 1, args.rate, args.seconds, warmup))
            finally:
                engine.stop()
            out["phases"][f"fsync_{fsync}"] = {"probe": summary, "p50_us": point["p50_us"], "p99_us": point["p99_us"]}
            print(report(f"engine, fsync {fsync}, {args.rate:,.0f}/s", summary, point), file=sys.stderr)
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
