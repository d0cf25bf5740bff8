"""Matcher benchmark: throughput, latency percentiles and a check against the reference model.

    python -m bench.matcher --config A --json bench-a.json
    python -m bench.matcher --config B --commands 1000000 --runs 3

Steps, each on a fresh engine that first processes the workload's setup and
prefill untimed:

1. generation (``bench.orders``), untimed;
2. throughput: the stream through ``Engine.process`` in batches
   (``--batch``), wall time by ``time.perf_counter_ns``; ``--runs`` runs,
   the median is reported;
3. latency: per command, from ``Engine.process_timed`` (time measured inside
   the engine) when the engine has it, else by timing ``process`` on one
   command at a time from Python (which adds the call overhead; the output
   says which), into one HdrHistogram per command type;
4. check: the stream again, in batches, counting the command mix and its
   outcomes from the events and, unless ``--no-verify``, running the same
   batches through ``engine.reference.ReferenceEngine``: every event array
   must be equal and so must the final ``engine.state.state_hash``.
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # idle BLAS threads would spin on the other core

import argparse
import gc
import platform
import statistics
import sys
import time

import numpy as np

from bench import write_json
from bench.orders import CONFIGS, TYPE_NAMES, Workload, generate

HIST_MAX_NS = 60_000_000_000
PERCENTILES = (("p50_ns", 50.0), ("p90_ns", 90.0), ("p99_ns", 99.0), ("p999_ns", 99.9), ("p9999_ns", 99.99))
CANCEL_REASONS = {1: "user", 2: "ioc", 3: "fok", 4: "stp", 5: "post_only", 6: "expired", 7: "mass"}


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def engine_class(name: str):
    """The engine to time; a missing compiled engine is an error, never a silent fallback."""
    if name == "cython":
        try:
            from engine.matcher import Engine
        except ImportError as exc:
            raise SystemExit(
                f"the compiled engine is not importable ({exc}); install with `pip install .` "
                "and run `xos bench matcher`, or pass --engine reference"
            ) from exc
        return Engine, "cython"
    from engine.reference import ReferenceEngine

    return ReferenceEngine, "reference"


def fresh_engine(cls, wl: Workload):
    """A new engine with the workload's setup and prefill processed (untimed)."""
    e = cls(**wl.engine_kwargs)
    e.process(wl.setup)
    e.process(wl.prefill)
    return e


def throughput_run(cls, wl: Workload, batch: int) -> int:
    """Wall time in ns of processing the whole stream in batches of ``batch`` commands."""
    e = fresh_engine(cls, wl)
    stream = wl.stream
    n = len(stream)
    starts = range(0, n, batch)
    # The Cython engine leaves a batch's events in its own buffer (where the ring
    # will publish them from); the reference model only has process().
    process = getattr(e, "process_count", e.process)
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter_ns()
        for s in starts:
            process(stream[s : s + batch])
        t1 = time.perf_counter_ns()
    finally:
        gc.enable()
    return t1 - t0


def latency_pass(cls, wl: Workload, batch: int, limit: int | None) -> tuple[np.ndarray, str]:
    """Per-command durations (ns) of the first ``limit`` stream commands, and how they were measured."""
    e = fresh_engine(cls, wl)
    stream = wl.stream if limit is None else wl.stream[:limit]
    n = len(stream)
    durations = np.zeros(n, dtype=np.int64)
    gc.collect()
    gc.disable()
    try:
        if hasattr(e, "process_timed"):
            for s in range(0, n, batch):
                _, d = e.process_timed(stream[s : s + batch])
                durations[s : s + len(d)] = d
            return durations, "process_timed (in-engine clock per command)"
        clock = time.perf_counter_ns
        process = e.process
        for i in range(n):
            one = stream[i : i + 1]
            t0 = clock()
            process(one)
            durations[i] = clock() - t0
        return durations, "per_call (process() of one command timed from Python; includes call overhead)"
    finally:
        gc.enable()


def _histogram():
    from hdrh.histogram import HdrHistogram

    return HdrHistogram(1, HIST_MAX_NS, 3)


def percentiles(durations: np.ndarray, types: np.ndarray) -> tuple[dict, dict]:
    """(all commands, per command type) percentile tables from HdrHistograms."""

    def table(values: np.ndarray) -> dict:
        h = _histogram()
        vals, counts = np.unique(np.clip(values, 1, HIST_MAX_NS), return_counts=True)
        for v, c in zip(vals.tolist(), counts.tolist()):
            h.record_value(v, c)
        out = {"count": int(h.get_total_count())}
        if out["count"]:
            for key, p in PERCENTILES:
                out[key] = int(h.get_value_at_percentile(p))
            out["mean_ns"] = round(float(h.get_mean_value()), 1)
            out["max_ns"] = int(h.get_max_value())
        return out

    overall = table(durations)
    per_type = {name: table(durations[types == t]) for t, name in enumerate(TYPE_NAMES)}
    return overall, per_type


class MixCounter:
    """Command mix and outcomes, counted from the stream's events."""

    def __init__(self, wl: Workload, seq0: int):
        self.types = wl.types
        self.seq0 = seq0
        k = len(TYPE_NAMES)
        self.fills = np.zeros(k, np.int64)
        self.filled = np.zeros(k, np.int64)
        self.rejects = np.zeros(k, np.int64)
        self.amended = np.zeros(k, np.int64)
        self.cancels = np.zeros((k, 8), np.int64)
        self.reject_codes: dict[int, int] = {}

    def add(self, events: np.ndarray) -> None:
        k = len(TYPE_NAMES)
        t = self.types[events["cmd_seq"] - self.seq0 - 1].astype(np.int64)
        kind = events["kind"]
        fill = kind == 3
        self.fills += np.bincount(t[fill], minlength=k)
        cmd_with_fill = np.unique(events["cmd_seq"][fill])
        self.filled += np.bincount(self.types[cmd_with_fill - self.seq0 - 1], minlength=k)
        rej = kind == 2
        self.rejects += np.bincount(t[rej], minlength=k)
        for code in events["code"][rej].tolist():
            self.reject_codes[code] = self.reject_codes.get(code, 0) + 1
        self.amended += np.bincount(t[kind == 5], minlength=k)
        canc = kind == 4
        self.cancels += np.bincount(t[canc] * 8 + events["reason"][canc], minlength=k * 8).reshape(k, 8)

    def result(self) -> dict:
        counts = np.bincount(self.types, minlength=len(TYPE_NAMES))
        total = int(counts.sum())
        mix = {}
        for t, name in enumerate(TYPE_NAMES):
            mix[name] = {
                "count": int(counts[t]),
                "share": round(int(counts[t]) / total, 5) if total else 0.0,
                "per_40": round(40 * int(counts[t]) / total, 3) if total else 0.0,
                "fills": int(self.fills[t]),
                "commands_with_fills": int(self.filled[t]),
                "rejects": int(self.rejects[t]),
                "cancelled": {r: int(self.cancels[t, c]) for c, r in CANCEL_REASONS.items() if self.cancels[t, c]},
            }
        mix["total"] = {
            "count": total,
            "fills": int(self.fills.sum()),
            "commands_with_fills": int(self.filled.sum()),
            "rejects": int(self.rejects.sum()),
            "reject_codes": {str(c): n for c, n in sorted(self.reject_codes.items())},
        }
        return mix


def check_pass(cls, wl: Workload, verify: bool, batch: int) -> dict:
    """The stream once more: the mix from the events and, if ``verify``, equality with the reference."""
    from engine.state import state_hash

    e = cls(**wl.engine_kwargs)
    ref = None
    events_equal = True
    first_diff = None
    if verify:
        from engine.reference import ReferenceEngine

        ref = ReferenceEngine(**wl.engine_kwargs)
    for name, cmds in (("setup", wl.setup), ("prefill", wl.prefill)):
        a = e.process(cmds)
        if ref is not None:
            r = ref.process(cmds)
            if not np.array_equal(a, r):
                events_equal = False
                first_diff = first_diff or name
    resting_start = e.open_orders
    mix = MixCounter(wl, e.cmd_seq)
    n = len(wl.stream)
    t0 = time.perf_counter()
    next_report = 0.1
    for s in range(0, n, batch):
        cmds = wl.stream[s : s + batch]
        a = e.process(cmds)
        mix.add(a)
        if ref is not None:
            r = ref.process(cmds)
            if events_equal and not np.array_equal(a, r):
                events_equal = False
                first_diff = f"stream batch at command {s}"
            done = min(n, s + batch) / n
            if done >= next_report:
                el = time.perf_counter() - t0
                _log(f"  verify {done:6.1%}  {el:7.1f} s elapsed, about {el / done - el:6.1f} s left")
                next_report += 0.1
    out = {"mix": mix.result(), "resting_orders_start": resting_start, "resting_orders_end": e.open_orders}
    if ref is not None:
        h_engine, h_ref = state_hash(e), state_hash(ref)
        out.update(
            state_ok=bool(events_equal and h_engine == h_ref),
            events_equal=bool(events_equal),
            first_difference=first_diff,
            state_hash=h_engine,
            reference_state_hash=h_ref,
            verify_seconds=round(time.perf_counter() - t0, 2),
        )
    else:
        out.update(state_ok=None, state_hash=state_hash(e))
    return out


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.matcher", description=__doc__.split("\n")[0])
    p.add_argument("--config", choices=sorted(CONFIGS), default="A")
    p.add_argument("--commands", type=int, help="stream length (default: the config's)")
    p.add_argument("--markets", type=int, help="override the config's market count")
    p.add_argument("--accounts", type=int, help="override the config's account count")
    p.add_argument("--orders", type=int, help="override the config's target resting orders")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--runs", type=int, default=5, help="throughput runs (median reported)")
    p.add_argument("--batch", type=int, default=4096, help="commands per process() call")
    p.add_argument("--latency-commands", type=int, help="time only the first N commands individually")
    p.add_argument("--engine", choices=("cython", "reference"), default="cython")
    p.add_argument("--no-verify", action="store_true", help="skip the check against the reference model")
    p.add_argument("--json", metavar="PATH", help="write the results here")
    return p.parse_args(argv)


def _fmt_ns(v) -> str:
    return "-" if v is None else f"{v:,}"


def run(args: argparse.Namespace) -> dict:
    cfg = CONFIGS[args.config].replace(
        commands=args.commands, markets=args.markets, accounts=args.accounts, orders=args.orders, seed=args.seed
    )
    cls, engine_name = engine_class(args.engine)
    _log(
        f"config {cfg.name}: {cfg.commands:,} commands, {cfg.markets:,} markets, {cfg.orders:,} resting orders, "
        f"{cfg.accounts:,} accounts, seed {cfg.seed}; engine {engine_name}"
    )
    if engine_name != "cython":
        _log("  engine.matcher is not built: timing the pure-Python reference model")

    def progress(i, n):
        _log(f"  generated {i:,} / {n:,}")

    wl = generate(cfg, cls, progress=progress if cfg.commands >= 500_000 else None)
    _log(
        f"generated in {wl.gen_seconds:.1f} s: setup {len(wl.setup):,}, prefill {len(wl.prefill):,}, "
        f"stream {len(wl.stream):,} commands ({wl.gen_chunks:,} driver chunks, {wl.gen_rejects} rejects)"
    )

    walls = []
    for r in range(args.runs):
        ns = throughput_run(cls, wl, args.batch)
        walls.append(ns)
        _log(f"  run {r + 1}/{args.runs}: {len(wl.stream) / ns * 1e9:,.0f} commands/s ({ns / 1e9:.3f} s)")
    per_run = [len(wl.stream) / ns * 1e9 for ns in walls]
    cps = statistics.median(per_run) if per_run else 0.0

    _log("latency pass ...")
    durations, method = latency_pass(cls, wl, args.batch, args.latency_commands)
    overall, per_type = percentiles(durations, wl.types[: len(durations)])

    _log("check pass" + (" against the reference model ..." if not args.no_verify else " (no verify) ..."))
    check = check_pass(cls, wl, not args.no_verify, max(args.batch, 65536))

    result = {
        "config": cfg.name,
        "commands": len(wl.stream),
        "markets": cfg.markets,
        "accounts": cfg.accounts,
        "target_resting_orders": cfg.orders,
        "seed": cfg.seed,
        "engine": engine_name,
        "runs": args.runs,
        "batch": args.batch,
        "commands_per_s": round(cps, 1),
        "per_run_commands_per_s": [round(x, 1) for x in per_run],
        "per_run_wall_ns": walls,
        "p50_ns": overall.get("p50_ns"),
        "p99_ns": overall.get("p99_ns"),
        "p999_ns": overall.get("p999_ns"),
        "latency_method": method,
        "latency": {"all": overall, **per_type},
        "mix": check["mix"],
        "state_ok": check["state_ok"],
        "verify": {k: v for k, v in check.items() if k not in ("mix", "state_ok")},
        "generation": {
            "seconds": round(wl.gen_seconds, 2),
            "driver": wl.driver,
            "chunks": wl.gen_chunks,
            "rejects": wl.gen_rejects,
            "setup_commands": len(wl.setup),
            "prefill_commands": len(wl.prefill),
        },
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    report(result)
    write_json(args.json, result)
    return result


def report(r: dict) -> None:
    print(f"config {r['config']}  engine {r['engine']}  {r['commands']:,} commands  batch {r['batch']}")
    runs = ", ".join(f"{x:,.0f}" for x in r["per_run_commands_per_s"])
    print(f"throughput: {r['commands_per_s']:,.0f} commands/s (median of {r['runs']}: {runs})")
    print(f"latency ({r['latency_method']}):")
    print(f"  {'type':<14}{'count':>10}{'p50 ns':>10}{'p99 ns':>10}{'p99.9 ns':>10}{'max ns':>12}")
    for name, t in r["latency"].items():
        if t["count"]:
            print(
                f"  {name:<14}{t['count']:>10,}{_fmt_ns(t['p50_ns']):>10}{_fmt_ns(t['p99_ns']):>10}"
                f"{_fmt_ns(t['p999_ns']):>10}{_fmt_ns(t['max_ns']):>12}"
            )
    print("mix:")
    print(f"  {'type':<14}{'count':>10}{'per 40':>8}{'fills':>10}{'w/ fills':>10}{'rejects':>8}  cancelled")
    for name in TYPE_NAMES:
        m = r["mix"][name]
        canc = " ".join(f"{k}={v}" for k, v in m["cancelled"].items())
        print(
            f"  {name:<14}{m['count']:>10,}{m['per_40']:>8.2f}{m['fills']:>10,}{m['commands_with_fills']:>10,}"
            f"{m['rejects']:>8,}  {canc}"
        )
    v = r["verify"]
    print(f"resting orders: {v['resting_orders_start']:,} after prefill, {v['resting_orders_end']:,} at the end")
    if r["state_ok"] is None:
        print("state_ok: not checked (--no-verify)")
    else:
        print(f"state_ok: {r['state_ok']} (events equal: {v['events_equal']}, state hash {v['state_hash'][:16]}...)")


def main(argv=None) -> dict:
    return run(parse_args(argv))


if __name__ == "__main__":
    res = main()
    sys.exit(0 if res["state_ok"] in (True, None) else 1)
