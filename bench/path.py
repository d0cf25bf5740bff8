"""Where a lone order's time goes: a calm open loop, each order timed from its planned send to its ack and
split at the gateway's and the matcher's calls around it.

    python -m bench.path --rate 1000 --seconds 8 --runs 3 --json path.json

The engine runs as ``bench.wire`` runs it (fsync always, market data on), one order per message. Its gateway
and matcher time five calls: ``GatewayStage.on_readable``, ``on_events`` and ``look_for_requests`` (called as
a batch's replies have been sent: its start is when the ack's send ended), ``MatcherStage.wait_input`` and
``run_batch``. A ``sitecustomize`` that this benchmark puts first on the
engine processes' ``PYTHONPATH`` wraps them and, as each process exits, writes every call's start and end
(``perf_counter_ns``, the load client's clock too) to a file; the engine's own code is not changed. The load
client keeps each timed order's planned send and its ack's arrival. Each order is then matched to the first
``on_readable`` that begins after its send, the first batch that begins after that, the wait that ended before
the batch, the first ``on_events`` that begins after the batch began (the batch publishes before it returns,
so the gateway may wake first) and the first send in it: at one order a millisecond an order's calls do not
overlap the next one's, and orders whose calls do not fit inside their own send and ack are left out
(counted). The steps add up to the total; the two calls' own wall times are shown beside them.

Prints, per run, each step's p50 / p90 / p99 and, over the runs, the median of each step's p50; ``--json``
writes them.  The hooks cost each timed call ~1 us.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench import CPU_LATENCY_HELP, cpu_latency, wire, write_json

HOOKS = {"gateway": ("gateway.server", "GatewayStage", ("on_readable", "on_events", "look_for_requests")),
         "matcher": ("engine.process", "MatcherStage", ("wait_input", "run_batch"))}

SITECUSTOMIZE = '''"""bench.path's call timing, loaded by the engine's processes (see bench/path.py)."""
import atexit
import importlib
import os
import sys
import time
import warnings

# importing engine.process here, before ``-m engine.process`` runs it, is safe: its __main__ runs the package's copy
warnings.filterwarnings("ignore", message="'engine.process' found in sys.modules", category=RuntimeWarning)

HOOKS = {hooks!r}


def _install() -> None:
    out = os.environ.get("XOS_PATH_CALLS")
    argv = sys.orig_argv
    if not out or "engine.process" not in argv:
        return
    role = argv[argv.index("engine.process") + 1]
    if role not in HOOKS:
        return
    module, cls, names = HOOKS[role]
    owner = getattr(importlib.import_module(module), cls)
    calls = {{name: [] for name in names}}

    def timed(name, f):
        log = calls[name].append
        clock = time.perf_counter_ns

        def call(*args, **kwargs):
            t0 = clock()
            try:
                return f(*args, **kwargs)
            finally:
                log((t0, clock()))
        return call

    for name in names:
        setattr(owner, name, timed(name, getattr(owner, name)))

    def dump() -> None:
        import numpy as np

        for name, times in calls.items():
            np.save(os.path.join(out, f"{{role}}.{{name}}.npy"), np.array(times, np.int64).reshape(-1, 2))
    atexit.register(dump)


_install()
'''

# an order's path, step by step (they add up to the total), then two of the calls' own wall times
STEPS = (
    ("zeromq_in", "client's send -> the gateway's on_readable begins (ZeroMQ in)"),
    ("to_matcher", "on_readable begins -> the matcher's wait ends (the doorbell)"),
    ("matcher_wake_to_batch", "the matcher's wait ends -> its batch begins"),
    ("batch_to_gateway", "the batch begins -> on_events begins (durable write ... wake-up)"),
    ("on_events", "on_events begins -> its send of the ack ends"),
    ("zeromq_out", "the ack's send ends -> the client has it (ZeroMQ out)"),
    ("total", "total"),
    ("on_readable", "  (on_readable's own wall time)"),
    ("batch", "  (the batch's own wall time: stamp, durable write, match, publish)"),
)


def split(orders: np.ndarray, calls: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
    """Each order's steps (ns) from ``orders`` (planned send, ack arrival) and the calls' (start, end) rows;
    returns the steps of the orders that could be matched, and how many could not."""
    send, ack = orders
    order = np.argsort(send)
    send, ack = send[order], ack[order]
    rd, ev, sent, wait, batch = (calls[k][np.argsort(calls[k][:, 0])] for k in ("on_readable", "on_events",
                                                                                "look_for_requests", "wait_input",
                                                                                "run_batch"))

    def first_after(rows: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        i = np.searchsorted(rows[:, 0], t)
        return np.minimum(i, len(rows) - 1), i < len(rows)

    r, ok_r = first_after(rd, send)
    b, ok_b = first_after(batch, rd[r, 0])
    w = np.maximum(np.searchsorted(wait[:, 1], batch[b, 0], side="right") - 1, 0)
    e, ok_e = first_after(ev, batch[b, 0])  # the batch publishes before it returns: the gateway may wake first
    a, ok_a = first_after(sent, ev[e, 0])  # the ack sent (the client may have it before on_events returns)
    ok = ok_r & ok_b & ok_e & ok_a & (rd[r, 0] < ack) & (sent[a, 0] <= ack) & (sent[a, 0] < ev[e, 1])
    steps = {
        "zeromq_in": rd[r, 0] - send, "to_matcher": wait[w, 1] - rd[r, 0],
        "matcher_wake_to_batch": batch[b, 0] - wait[w, 1], "batch_to_gateway": ev[e, 0] - batch[b, 0],
        "on_events": sent[a, 0] - ev[e, 0], "zeromq_out": ack - sent[a, 0], "total": ack - send,
        "on_readable": rd[r, 1] - rd[r, 0], "batch": batch[b, 1] - batch[b, 0]}
    return {k: v[ok] for k, v in steps.items()}, int((~ok).sum())


def one_run(directory: Path, clients: list[dict], args) -> dict:
    calls_dir = directory / "calls"
    calls_dir.mkdir()
    os.environ["XOS_PATH_CALLS"] = str(calls_dir)
    engine = wire.Engine(directory, clients, "always", marketdata=True)
    try:
        wire.point(engine, [dict(c, orders_to=str(directory / "orders.npy")) for c in clients], "open", 1,
                   args.rate, args.seconds, args.warmup)
    finally:
        engine.stop()  # the processes write their calls as they exit
    calls = {name: np.load(calls_dir / f"{role}.{name}.npy") for role, (_, _, names) in HOOKS.items()
             for name in names}
    steps, unmatched = split(np.load(directory / "orders.npy"), calls)
    if not len(steps["total"]):
        raise RuntimeError("no order could be matched to its calls")
    return {"orders": len(steps["total"]), "unmatched": unmatched,
            "steps_us": {k: {f"p{q}": float(np.percentile(v, q)) / 1e3 for q in (50, 90, 99)}
                         for k, v in steps.items()}}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=1000.0, help="orders per second offered, one per message")
    p.add_argument("--seconds", type=float, default=8.0, help="per run")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of each run not timed")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--cpu-latency-us", type=int, default=-1, help=CPU_LATENCY_HELP)
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    if args.rate <= 0 or args.seconds <= args.warmup or args.runs < 1:
        p.error("--rate must be positive, --seconds more than --warmup, --runs at least 1")
    out: dict = {"benchmark": "path", "rate": args.rate, "seconds": args.seconds, "runs": []}
    with tempfile.TemporaryDirectory(prefix="xos-path-") as tmp, cpu_latency(args.cpu_latency_us, out):
        hooks = Path(tmp) / "hooks"
        hooks.mkdir()
        (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE.format(hooks=HOOKS))
        saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "XOS_PATH_CALLS")}
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(hooks), saved["PYTHONPATH"] or ""]))
        try:
            clients = wire_clients(Path(tmp))
            for k in range(args.runs):
                run_dir = Path(tmp) / f"run{k}"
                run_dir.mkdir()
                r = one_run(run_dir, clients, args)
                out["runs"].append(r)
                print(f"run {k + 1}: {r['orders']:,} orders matched ({r['unmatched']:,} not)", file=sys.stderr)
                for key, label in STEPS:
                    s = r["steps_us"][key]
                    print(f"  {label:<64} p50 {s['p50']:>7,.0f} us  p90 {s['p90']:>7,.0f}  p99 {s['p99']:>7,.0f}",
                          file=sys.stderr)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    out["p50_us_median"] = {key: statistics.median(r["steps_us"][key]["p50"] for r in out["runs"]) for key, _ in STEPS}
    print("path: p50 medians over the runs: " + ", ".join(f"{k} {v:,.0f} us" for k, v in out["p50_us_median"].items()))
    write_json(args.json, out)
    return out


def wire_clients(directory: Path) -> list[dict]:
    """One load client with its key pair, as ``bench.wire`` makes them."""
    from gateway.keys import load_pair, new_pair

    new_pair(directory / "keys", "client0")
    public, secret = load_pair(directory / "keys" / "client0.key_secret")
    return [{"account": 5001, "public": public, "secret": secret, "wire": "rows", "window": 32768}]


if __name__ == "__main__":
    main()
