"""Pipeline benchmark: the matcher workload through the whole engine as processes.

    python -m bench.pipeline --config A --json pipeline.json
    python -m bench.pipeline --config A --journal --json pipeline-journal.json

The engine runs as ``xos run`` does (supervisor, matcher stage, settlement,
margin and risk workers, shared-memory ring) on a private name and a
temporary data directory.  This process is the producer: it pushes the
seeded ``bench.orders`` workload into the matcher's ZeroMQ input in batches.
Setup and prefill go in first, untimed; the timed part is the stream, from
the first send until the matcher has taken every command and every worker
has applied every event.

Without ``--journal`` the journal is off; with it, the journal is on with the
safe fsync policy (one fsync per batch), and the same run also measures
journaling off, so the ratio compares two runs of one invocation.

Latency: each worker records, per batch it applies, the time from the
matcher stamping the batch's oldest command at intake to the worker having
applied it (HdrHistogram); the figures are the worst worker's, over the timed
part alone (its heartbeat's counts less those before the stream: config B's
800,000 setup deposits take the settlement worker seconds).  Each worker's
checkpoints (count, total time, the last one's) and each process's CPU seconds
are those of the timed part too.
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import process_cpu_s
from bench.orders import CONFIGS, generate
from engine.config import load
from engine.process import WORKERS, InputClient, percentiles_between, read_heartbeats
from engine.ring import ring_status
from engine.supervisor import Supervisor

SEND_BATCH = 4096
LATENCY_NAMES = (("p50", 50), ("p99", 99), ("p999", 99.9))
NO_COUNTS = {"index": [], "count": []}  # histogram_counts of an empty histogram


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def write_config(directory: Path, journal: bool, ring_capacity: int, engine_kwargs: dict) -> Path:
    name = f"xos-bench-{os.getpid()}-{'j' if journal else 'n'}"
    lines = [
        "gateway.enabled = false\nmarketdata.enabled = false",  # the pipeline alone: no ring readers but the workers
        "[engine]",
        f'name = "{name}"',
        f'data_dir = "{directory / "data"}"',
        f"ring_capacity = {ring_capacity}",
        "batch_max = 8192",
        f"journal = {'true' if journal else 'false'}",
        'fsync = "always"',
        f"max_orders = {engine_kwargs['max_orders']}",
        f"max_accounts = {engine_kwargs['max_accounts']}",
        f"max_markets = {engine_kwargs['max_markets']}",
        f"max_assets = {engine_kwargs['max_assets']}",
        "[risk]",
        "move_bps = 10000",  # the benchmark's prices wander; no halts in the timed part
        "[workers]",
        "heartbeat_s = 0.05",  # how the benchmark sees the workers finish
        "checkpoint_s = 1.0",
        "stale_after_s = 30.0",
    ]
    path = directory / "xos.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def caught_up(cfg, n_commands: int) -> tuple[bool, dict]:
    beats = read_heartbeats(cfg)
    m = beats.get("matcher", {})
    done = m.get("cmd_seq", 0) >= n_commands and all(
        beats.get(w, {}).get("cursor") == m.get("event_seq") for w in WORKERS
    )
    return done, beats


def wait_caught_up(sup, cfg, n_commands: int, timeout_s: float, lag_seen: list[int]) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        done, beats = caught_up(cfg, n_commands)
        if done:
            return beats
        if time.monotonic() > deadline:
            raise SystemExit(f"the engine did not catch up within {timeout_s:.0f} s: {beats}")
        sup.check()
        lag_seen.append(max((c["lag"] for c in ring_status(cfg.ring_name)["consumers"]), default=0))
        time.sleep(0.01)  # polling costs CPU the engine needs on 2 cores


def events_a_take(before: dict, after: dict) -> float:
    """A worker's events per take from the ring between two heartbeats (from its start if it was restarted)."""
    if before["pid"] != after["pid"]:
        before = {"applied": 0, "batches": 0}
    return (after["applied"] - before["applied"]) / max(1, after["batches"] - before["batches"])


def one_run(wl, journal: bool, ring_capacity: int, timeout_s: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="xos-pipeline-") as tmp:
        path = write_config(Path(tmp), journal, ring_capacity, wl.engine_kwargs)
        cfg = load(path)
        sup = Supervisor(cfg, str(path), log=_log)
        sup.start()
        try:
            client = InputClient(cfg.input_address)
            lag_seen: list[int] = []
            head = np.concatenate([wl.setup, wl.prefill])
            for i in range(0, len(head), SEND_BATCH):
                client.send(head[i : i + SEND_BATCH])
            wait_caught_up(sup, cfg, len(head), timeout_s, lag_seen)
            before = read_heartbeats(cfg)
            cpu = {role: process_cpu_s(p.pid) for role, p in sup.procs.items()}
            lag_seen.clear()
            stream = wl.stream
            t0 = time.perf_counter_ns()
            for i in range(0, len(stream), SEND_BATCH):
                client.send(stream[i : i + SEND_BATCH])
                if i % (SEND_BATCH * 64) == 0:
                    lag_seen.append(max((c["lag"] for c in ring_status(cfg.ring_name)["consumers"]), default=0))
            beats = wait_caught_up(sup, cfg, len(head) + len(stream), timeout_s, lag_seen)
            t1 = time.perf_counter_ns()
            cpu = {role: process_cpu_s(p.pid) - cpu[role] for role, p in sup.procs.items()}
            client.close()
            restarts = dict(sup.restarts)
        finally:
            sup.stop()
    seconds = (t1 - t0) / 1e9
    workers = {w: beats[w] for w in WORKERS}
    # a worker restarted in the timed part counts from its start
    latency = {w: percentiles_between(before[w]["latency_counts"] if before[w]["pid"] == b["pid"] else NO_COUNTS,
                                      b["latency_counts"], [p for _, p in LATENCY_NAMES])
               for w, b in workers.items()}
    return {
        "journal": journal,
        "commands": len(stream),
        "events": beats["matcher"]["event_seq"] - before["matcher"]["event_seq"],
        "seconds": seconds,
        "commands_per_s": len(stream) / seconds,
        "worker_lag_max": max(lag_seen, default=0),
        **{f"{name}_ns": max(by_p.get(p, 0) for by_p in latency.values()) for name, p in LATENCY_NAMES},
        # each worker's latency and checkpoints in the timed part
        "workers": {w: {"applied": b["applied"], "cursor": b["cursor"],
                        **{f"latency_{name}_ns": latency[w].get(p, 0) for name, p in LATENCY_NAMES},
                        **{k: b[k] - before[w].get(k, 0) for k in ("checkpoints", "checkpoint_ms_total", "views",
                                                                   "views_ms_total") if k in b},
                        # events a take from the ring in the timed part (each take: a wake-up, a pass of the core)
                        "events_a_take": events_a_take(before[w], b),
                        **({"checkpoint_ms": b["checkpoint_ms"]} if "checkpoint_ms" in b else {})}
                    for w, b in workers.items()},
        "matcher": {k: v for k, v in beats["matcher"].items()
                    if k in ("cmd_seq", "event_seq", "durable_seq", "malformed", "ring_wait_ns")
                    or k.startswith("journal_")},
        "restarts": restarts,
        "cpu_s": cpu,  # each process's CPU seconds in the timed part
    }


def summarise(runs: list[dict]) -> dict:
    best = sorted(runs, key=lambda r: r["commands_per_s"])[len(runs) // 2]
    return {
        "commands_per_s": statistics.median(r["commands_per_s"] for r in runs),
        "p50_ns": best["p50_ns"],
        "p99_ns": best["p99_ns"],
        "p999_ns": best["p999_ns"],
        "worker_lag_max": max(r["worker_lag_max"] for r in runs),
        "runs": runs,
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__.splitlines()[0])
    p.add_argument("--config", choices=sorted(CONFIGS), default="A")
    p.add_argument("--commands", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--journal", action="store_true", help="journal on (fsync per batch), compared with off")
    p.add_argument("--ring-capacity", type=int, default=1 << 20)
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    cfg = CONFIGS[args.config].replace(commands=args.commands, seed=args.seed)
    _log(f"generating config {args.config} workload ({args.commands:,} commands) ...")
    wl = generate(cfg)
    modes = (True, False) if args.journal else (False,)
    results = {}
    for journal in modes:
        runs = []
        for k in range(args.runs):
            r = one_run(wl, journal, args.ring_capacity, args.timeout)
            _log(f"  journal {'on ' if journal else 'off'} run {k + 1}/{args.runs}: {r['commands_per_s']:,.0f} commands/s, "
                 f"worker lag max {r['worker_lag_max']:,}, intake->worker p50 {r['p50_ns'] / 1e3:,.0f} us "
                 f"p99 {r['p99_ns'] / 1e3:,.0f} us")
            _log("    CPU s in the timed part (%.2f s): %s" % (r["seconds"], ", ".join(
                f"{role} {s:.2f}" for role, s in r["cpu_s"].items())))
            _log("    events a take from the ring: %s" % ", ".join(
                f"{w} {b['events_a_take']:,.0f}" for w, b in r["workers"].items()))
            for w, b in r["workers"].items():
                if b.get("checkpoints"):
                    views = (f"; {b['views']} with views, which took {b['views_ms_total'] / 1e3:.2f} s"
                             if "views" in b else "")
                    _log(f"    {w}: {b['checkpoints']} checkpoints in the timed part, "
                         f"{b['checkpoint_ms_total'] / 1e3:.2f} s in all (the last {b['checkpoint_ms']:.1f} ms){views}")
            runs.append(r)
        results["journal_on" if journal else "journal_off"] = summarise(runs)
    head = results["journal_on" if args.journal else "journal_off"]
    out = {
        "benchmark": "pipeline",
        "config": args.config,
        "commands": args.commands,
        "seed": args.seed,
        "runs": args.runs,
        "commands_per_s": head["commands_per_s"],
        "p50_ns": head["p50_ns"],
        "p99_ns": head["p99_ns"],
        "p999_ns": head["p999_ns"],
        "worker_lag_max": head["worker_lag_max"],
        "mix": wl.type_counts(),
        "modes": results,
    }
    if args.journal:
        out["journal_ratio"] = results["journal_on"]["commands_per_s"] / results["journal_off"]["commands_per_s"]
    print(f"pipeline config {args.config}: {out['commands_per_s']:,.0f} commands/s (median of {args.runs}), "
          f"intake->worker p50 {out['p50_ns'] / 1e3:,.0f} us, p99 {out['p99_ns'] / 1e3:,.0f} us, "
          f"p99.9 {out['p999_ns'] / 1e3:,.0f} us, worker lag max {out['worker_lag_max']:,} events")
    if args.journal:
        print(f"journal on / off: {out['journal_ratio']:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
