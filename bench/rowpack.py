"""Packed rows: what packing, counting and reading a row costs, through the codec compiled for each of the engine's
layouts and through the generic one, on the wire benchmark's flow.

    python -m bench.rowpack [--rows 65536] [--runs 15] [--seed 1] [--json PATH]

Setup (not timed): ``--rows`` of the wire benchmark's commands (``bench.wire.Traffic``: places resting below the
market, cancels by client id), and the rows the engine makes of them: the acks, the cancels' execution reports and
the journal's commands (one account, a ``ts`` a batch of 8,192).  Timed, ``--runs`` times each, in process: each
layout's ``RowPacking`` (``gateway.messages``' three, ``engine.journal.COMMAND_PACKING``) against the same layout
with ``specialize=False``: ``pack_groups`` in the messages the engine packs (16 rows for the wire, 8,192 for the
journal), ``count`` and ``unpack`` of one message.  Prints p50 / p99 in ns a row and, per run, the generic time
over the compiled one (median of the runs' ratios: the two alternate, so the host's drift falls on both).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from bench import write_json

OPERATIONS = ("pack", "count", "unpack")
LAYOUTS = ("wire command", "wire ack", "wire report", "journal command")
WIRE_MESSAGE_ROWS, JOURNAL_BATCH = 16, 8192


def flows(rows: int, seed: int) -> dict:
    """Each layout's rows for ``rows`` of the wire benchmark's commands."""
    from bench.wire import BASE_PRICE, Traffic
    from engine.records import COMMAND_DTYPE
    from gateway import messages as m

    rng = np.random.default_rng(seed)
    commands = Traffic(1, "rows", WIRE_MESSAGE_ROWS).make(int(rng.integers(0, 1 << 20)), rows)
    seq = 1_000_000 + np.arange(rows, dtype=np.int64)
    ts = 1_764_600_000_000_000_000 + (np.arange(rows) // JOURNAL_BATCH) * 2_000_000
    acks = np.zeros(rows, m.ACK_ROW_DTYPE)
    acks["rid"], acks["client_id"], acks["cmd_seq"], acks["count"], acks["ts"] = \
        commands["rid"], commands["id"], seq, 1, ts
    acks["order_id"] = np.where(commands["kind"] == 1, 5_000_000 + np.cumsum(commands["kind"] == 1), 0)
    acks["durable_seq"] = seq | (JOURNAL_BATCH - 1)
    cancels = commands["kind"] != 1
    reports = np.zeros(int(cancels.sum()), m.REPORT_ROW_DTYPE)
    reports["kind"], reports["reason"], reports["market"], reports["venue"] = 2, 1, 1, 0
    reports["order_id"] = 5_000_000 + rng.integers(0, rows, len(reports)).cumsum() % rows
    reports["client_id"], reports["qty"], reports["cmd_seq"], reports["ts"] = \
        commands["id"][cancels], 1, seq[cancels], ts[cancels]
    reports["price"] = BASE_PRICE - (commands["id"][cancels] & 63)
    reports["seq"] = 3 * seq[cancels]
    journal = np.zeros(rows, COMMAND_DTYPE)
    for name in ("kind", "side", "flags", "market", "price", "qty", "id"):
        journal[name] = commands[name]
    journal["ts"], journal["account"] = ts, 5001
    return {"wire command": commands, "wire ack": acks, "wire report": reports, "journal command": journal}


def packings() -> dict:
    from engine import journal
    from gateway import messages as m

    return {"wire command": m.COMMAND_PACKING, "wire ack": m.ACK_PACKING, "wire report": m.REPORT_PACKING,
            "journal command": journal.COMMAND_PACKING}


def ns_a_row(call, rows: int) -> float:
    start = time.perf_counter_ns()
    call()
    return (time.perf_counter_ns() - start) / rows


def measure(rows: int, runs: int, seed: int) -> dict:
    from engine.rowpack import RowPacking

    out = {}
    for name, data in flows(rows, seed).items():
        compiled = packings()[name]
        generic = RowPacking(compiled.dtype, compiled.deltas, specialize=False)
        assert compiled.kernels == name and generic.kernels == "generic", (compiled.kernels, generic.kernels)
        group = JOURNAL_BATCH if name == "journal command" else WIRE_MESSAGE_ROWS
        blob = compiled.pack(data)
        assert blob == generic.pack(data) and compiled.unpack(blob).tobytes() == data.tobytes()
        calls = {
            kernels: {"pack": lambda p=p: p.pack_groups(data, group), "count": lambda p=p: p.count(blob),
                      "unpack": lambda p=p: p.unpack(blob)}
            for kernels, p in (("compiled", compiled), ("generic", generic))}
        took = {kernels: {op: [] for op in OPERATIONS} for kernels in calls}
        for _ in range(runs):
            for op in OPERATIONS:  # alternating, so each run's ratio sees one host
                for kernels in calls:
                    took[kernels][op].append(ns_a_row(calls[kernels][op], len(data)))
        out[name] = {
            "rows": len(data), "bytes_a_row": len(blob) / len(data), "group": group,
            "ns_a_row": {kernels: {op: {"p50": float(np.percentile(t, 50)), "p99": float(np.percentile(t, 99))}
                                   for op, t in ops.items()} for kernels, ops in took.items()},
            "generic_over_compiled": {op: float(np.median(np.array(took["generic"][op]) /
                                                          np.array(took["compiled"][op]))) for op in OPERATIONS}}
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.rowpack", description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=65_536, help="the wire benchmark's commands the rows are made of")
    p.add_argument("--runs", type=int, default=15)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", help="write the figures here")
    a = p.parse_args(argv)
    if a.rows < WIRE_MESSAGE_ROWS or a.runs < 1:
        p.error(f"--rows must be at least {WIRE_MESSAGE_ROWS} and --runs positive")
    out = {"rows": a.rows, "runs": a.runs, "seed": a.seed, "layouts": measure(a.rows, a.runs, a.seed)}
    print(f"{'layout':<16} {'bytes':>5} {'op':<7} {'compiled p50 / p99 ns':>22} {'generic p50 / p99 ns':>21} "
          f"{'generic/compiled':>16}")
    for name, figures in out["layouts"].items():
        for op in OPERATIONS:
            c, g = figures["ns_a_row"]["compiled"][op], figures["ns_a_row"]["generic"][op]
            print(f"{name:<16} {figures['bytes_a_row']:>5.1f} {op:<7} {c['p50']:>11.1f} / {c['p99']:>7.1f} "
                  f"{g['p50']:>11.1f} / {g['p99']:>7.1f} {figures['generic_over_compiled'][op]:>15.2f}x", flush=True)
    write_json(a.json, out)
    return out


if __name__ == "__main__":
    main()
