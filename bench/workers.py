"""Worker-core benchmark: each core (settlement, margin, risk) alone on the matcher workload's events.

    python -m bench.workers --config A --commands 200000 --runs 5 --json workers.json

The seeded ``bench.orders`` workload (setup, prefill, stream) goes through the Cython matcher once,
untimed; its events are then fed to a fresh core of each role (``engine.workers.make_core``, a
fresh data directory each run) in batches of ``--batch`` events, as the worker processes take them
from the ring.  Reported per role: events per second on one core, median (and best) of ``--runs``.

Then the checkpoint of each core that has one (margin, risk), as its worker makes it after the whole stream:
the views published (``engine.process.publish_views``), the core pickled and fsynced (``Checkpoint.save``),
and the restart's load; milliseconds, median of ``--runs``, and the checkpoint's size.  Config B's margin
book (100,000 accounts) shows what its dense account x asset arrays cost.

Then the cores' order table (``engine.workercore.IntTable``) alone: ``--lookups`` seeded lookups of
present keys at each ``--table-keys`` count of live keys, in one C loop (``ids_of``); nanoseconds
per lookup, median (and best) of ``--runs``.  At a million keys the table no longer fits the cache.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import write_json
from bench.orders import CONFIGS, generate
from engine.config import Config, EngineSection
from engine.matcher import Engine
from engine.process import DURABLE_ROLES, Checkpoint, publish_views
from engine.records import Ev
from engine.workercore import IntTable
from engine.workers import make_core

ROLES = ("settlement", "margin", "risk")


def events_of(config: str, commands: int | None, seed: int) -> np.ndarray:
    cfg = CONFIGS[config]
    cfg = cfg.replace(commands=commands or cfg.commands, seed=seed)
    wl = generate(cfg)
    e = Engine(**wl.engine_kwargs)
    return np.concatenate([e.process(wl.setup), e.process(wl.prefill), e.process(wl.stream)])


def time_core(role: str, events: np.ndarray, batch: int) -> float:
    with tempfile.TemporaryDirectory() as d:
        core = make_core(role, Config(engine=EngineSection(data_dir=d)))
        t0 = time.perf_counter()
        for i in range(0, len(events), batch):
            core.apply(events[i:i + batch])
        dt = time.perf_counter() - t0
        assert core.cursor == int(events["seq"][-1])
        getattr(core, "close", lambda: None)()
    return dt


def time_checkpoint(role: str, events: np.ndarray, batch: int, runs: int) -> dict:
    """What a checkpoint of the core costs once it has applied ``events``: its views, its save, its load (ms, the
    median of ``runs`` each), its size, and how many views could not be made (their values overflow)."""
    with tempfile.TemporaryDirectory() as d:
        core = make_core(role, Config(engine=EngineSection(data_dir=d)))
        for i in range(0, len(events), batch):
            core.apply(events[i:i + batch])
        run = Path(d) / "run"
        run.mkdir(exist_ok=True)
        checkpoint = Checkpoint(run / f"{role}.ckpt")
        views, saves, loads = [], [], []
        for _ in range(runs):
            t0 = time.perf_counter()
            not_made = len(publish_views(core, run, role))
            t1 = time.perf_counter()
            checkpoint.save(core)
            t2 = time.perf_counter()
            assert checkpoint.load().cursor == core.cursor
            loads.append(time.perf_counter() - t2)
            views.append(t1 - t0)
            saves.append(t2 - t1)
        size = checkpoint.path.stat().st_size
        getattr(core, "close", lambda: None)()
    return {"views_ms": statistics.median(views) * 1e3, "save_ms": statistics.median(saves) * 1e3,
            "load_ms": statistics.median(loads) * 1e3, "bytes": size, "views_not_made": not_made}


def time_lookups(live: int, lookups: int, runs: int, seed: int) -> list[float]:
    """Nanoseconds per lookup of a present key in a table of ``live`` random keys, one per run."""
    rng = np.random.default_rng(seed)
    keys = rng.integers(1, 1 << 40, live)
    table = IntTable(1)
    table.ids_of(keys)
    queries = rng.choice(keys, lookups)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        table.ids_of(queries)
        times.append((time.perf_counter() - t0) / lookups * 1e9)
    assert len(table) == len(np.unique(keys))  # every query found its key
    return times


def run(args: argparse.Namespace) -> dict:
    events = events_of(args.config, args.commands, args.seed)
    kinds = np.bincount(events["kind"], minlength=len(Ev) + 1)
    mix = {Ev(k).name.lower(): int(kinds[k]) for k in range(1, len(kinds)) if kinds[k]}
    print(f"{len(events)} events ({', '.join(f'{k} {v}' for k, v in mix.items())})", file=sys.stderr)
    out = {"config": args.config, "commands": args.commands, "seed": args.seed, "events": len(events),
           "batch": args.batch, "runs": args.runs, "kinds": mix, "roles": {}}
    for role in args.roles:
        rates = [len(events) / time_core(role, events, args.batch) for _ in range(args.runs)]
        med = statistics.median(rates)
        out["roles"][role] = {"events_per_s": med, "best_events_per_s": max(rates), "all": rates}
        print(f"{role:>10}: {med / 1e6:6.2f} M events/s per core (median of {args.runs}, best {max(rates) / 1e6:.2f})")
    out["checkpoints"] = {}
    for role in args.roles:
        if role in DURABLE_ROLES:  # its store commits with each batch: no checkpoint
            continue
        c = out["checkpoints"][role] = time_checkpoint(role, events, args.batch, args.runs)
        skipped = f" ({c['views_not_made']} views not made)" if c["views_not_made"] else ""
        print(f"{role:>10} checkpoint: {c['bytes'] / 1e6:.1f} MB; views {c['views_ms']:.1f} ms{skipped}, save "
              f"{c['save_ms']:.1f} ms, load {c['load_ms']:.1f} ms (medians of {args.runs})")
    out["table_lookups"] = {}
    for live in args.table_keys:
        ns = time_lookups(live, args.lookups, args.runs, args.seed)
        out["table_lookups"][str(live)] = {"ns_per_lookup": statistics.median(ns), "best_ns": min(ns), "all": ns}
        print(f"order table, {live:>9} keys: {statistics.median(ns):6.1f} ns per lookup (median of {args.runs}, "
              f"best {min(ns):.1f})")
    return out


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.workers", description=__doc__.split("\n")[0])
    p.add_argument("--config", choices=sorted(CONFIGS), default="A")
    p.add_argument("--commands", type=int, default=200_000, help="stream length")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--runs", type=int, default=5, help="timed runs per role (median reported)")
    p.add_argument("--batch", type=int, default=8192, help="events per apply() call")
    p.add_argument("--roles", nargs="+", choices=ROLES, default=list(ROLES))
    p.add_argument("--table-keys", type=int, nargs="*", default=[1_000, 100_000, 1_000_000],
                   help="live keys of each order-table lookup run (none: skip them)")
    p.add_argument("--lookups", type=int, default=2_000_000, help="timed lookups per order-table run")
    p.add_argument("--json", metavar="PATH", help="write the results here")
    args = p.parse_args(argv)
    if args.runs < 1 or args.batch < 1 or args.lookups < 1 or any(k < 1 for k in args.table_keys):
        p.error("--runs, --batch, --lookups and each --table-keys must be at least 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    write_json(args.json, run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
