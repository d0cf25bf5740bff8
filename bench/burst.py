"""The matcher's steady order flow before and after a burst of open orders.

    python -m bench.burst --burst 1000000 --runs 5 --json burst.json

One account keeps ``--resting`` buys open and then pairs each new buy with the cancel (by client id)
of its oldest one, as ``bench.wire``'s load clients do.  That flow is timed through
``Engine.process_count`` in batches of ``--batch`` commands, ``--runs`` times; then a second account
places ``--burst`` resting buys and mass-cancels them (timed, once); then the flow is timed again.
The order-id and client-id indexes grow with the burst and shrink back after it
(``Engine.index_slots``, printed at each step); were they left at their peak, each lookup of the
flow's few hundred orders would miss the cache somewhere in megabytes (195 -> 489 ns a command
after a burst of 1,000,000 before they shrank: see ARCHITECTURE's *Order book*).  Prints the median
ns per command of each phase and their ratio, measured in the same run; ``--json`` writes them.
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # idle BLAS threads would spin on the other core

import argparse
import gc
import statistics
import sys
import time

import numpy as np

from bench import write_json

BASE, QUOTE, MARKET, LOT, MID = 1, 2, 1, 100, 100_000
FLOW, BURST = 1, 2  # accounts
LEVELS = 64  # the flow's prices: MID - (client id & 63)
BURST_LEVELS = 500  # the burst's: below the flow's


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def flow_commands(first: int, n: int, resting: int) -> np.ndarray:
    """Commands ``first .. first + n - 1`` of the flow (0-based) as engine commands: ``bench.wire``'s
    client flow (``flow_commands`` there)."""
    from bench.wire import flow_commands as wire_flow
    from engine.records import COMMAND_DTYPE, Cmd, CmdFlag, Side

    cancel, cid = wire_flow(first, n, resting)
    c = np.zeros(n, COMMAND_DTYPE)
    c["kind"] = np.where(cancel, Cmd.CANCEL, Cmd.PLACE)
    c["flags"] = np.where(cancel, int(CmdFlag.BY_CLIENT_ID), 0)
    c["account"] = FLOW
    c["market"] = np.where(cancel, 0, MARKET)
    c["side"] = Side.BUY
    c["price"] = np.where(cancel, 0, MID - (cid & (LEVELS - 1)))
    c["qty"] = np.where(cancel, 0, LOT)
    c["id"] = cid
    return c


def burst_commands(n: int) -> np.ndarray:
    from engine.records import COMMAND_DTYPE, Cmd, Side

    c = np.zeros(n, COMMAND_DTYPE)
    c["kind"] = Cmd.PLACE
    c["account"] = BURST
    c["market"] = MARKET
    c["side"] = Side.BUY
    c["price"] = MID - 1000 - np.arange(n) % BURST_LEVELS
    c["qty"] = LOT
    c["id"] = np.arange(1, n + 1)
    return c


def run_batches(engine, commands: np.ndarray, batch: int) -> int:
    """Wall ns to process ``commands`` in batches (garbage collection off)."""
    process = engine.process_count
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter_ns()
        for s in range(0, len(commands), batch):
            process(commands[s:s + batch])
        return time.perf_counter_ns() - t0
    finally:
        gc.enable()


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.burst", description=__doc__.split("\n\n")[0])
    p.add_argument("--burst", type=int, default=1_000_000, help="open orders placed, then mass-cancelled")
    p.add_argument("--resting", type=int, default=500, help="the flow's open orders")
    p.add_argument("--commands", type=int, default=200_000, help="flow commands per timed run (even)")
    p.add_argument("--runs", type=int, default=5, help="timed runs before and after the burst (medians reported)")
    p.add_argument("--batch", type=int, default=4096, help="commands per process_count() call")
    p.add_argument("--json", metavar="PATH", help="write the results here")
    args = p.parse_args(argv)
    for name in ("burst", "resting", "commands", "runs", "batch"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    if args.commands % 2:
        p.error("--commands must be even (cancel + place pairs)")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    from engine.matcher import Engine
    from engine.records import EVENT_DTYPE, Ev

    engine = Engine(max_orders=args.burst + args.resting + 1, max_accounts=16, max_markets=4, max_assets=4)
    engine.add_asset(BASE, "BTC", 8)
    engine.add_asset(QUOTE, "USD", 2)
    engine.add_market(MARKET, BASE, QUOTE, tick_size=1, lot_size=LOT, min_size=LOT)
    for account in (FLOW, BURST):
        engine.deposit(account, QUOTE, 10**17)
    engine.process(flow_commands(0, args.resting, args.resting))
    done = args.resting
    out: dict = {"burst": args.burst, "resting": args.resting, "commands": args.commands, "runs": args.runs,
                 "batch": args.batch}

    def phase(name: str) -> float:
        nonlocal done
        ns = []
        for _ in range(args.runs):
            commands = flow_commands(done, args.commands, args.resting)  # made outside the timed part
            ns.append(run_batches(engine, commands, args.batch) / args.commands)
            done += args.commands
        if engine.open_orders != args.resting:
            raise SystemExit(f"the flow left {engine.open_orders} open orders, not {args.resting}: a command failed")
        median = statistics.median(ns)
        out[name] = {"ns_per_command": median, "runs_ns_per_command": ns, "index_slots": list(engine.index_slots)}
        _log(f"  {name:6}: {median:7.1f} ns a command (runs: {', '.join(f'{x:.0f}' for x in ns)}), "
             f"index slots {engine.index_slots[0]:,}")
        return median

    _log(f"flow of {args.resting} open orders, {args.runs} runs of {args.commands:,} commands, batches of {args.batch}")
    before = phase("before")
    burst = burst_commands(args.burst)
    placed_ns = run_batches(engine, burst, args.batch)
    peak = engine.index_slots
    t0 = time.perf_counter_ns()
    events = engine.mass_cancel(BURST)
    cancel_ns = time.perf_counter_ns() - t0
    cancelled = int(np.count_nonzero(events["kind"] == Ev.CANCELLED))
    if cancelled != args.burst or events.dtype != EVENT_DTYPE:
        raise SystemExit(f"the mass cancel cancelled {cancelled} of the burst's {args.burst} orders")
    out["burst_place_ns_per_command"] = placed_ns / args.burst
    out["burst_cancel_ms"] = cancel_ns / 1e6
    out["peak_index_slots"] = list(peak)
    _log(f"  burst : {args.burst:,} placed ({placed_ns / args.burst:.0f} ns each, index slots {peak[0]:,}), "
         f"mass-cancelled in {cancel_ns / 1e6:.1f} ms")
    after = phase("after")
    out["after_over_before"] = after / before
    print(f"burst: {before:.1f} ns a command before a burst of {args.burst:,} open orders, {after:.1f} after "
          f"(x{after / before:.2f}); index slots {peak[0]:,} at the peak, {out['after']['index_slots'][0]:,} after")
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
