"""Replay speed and restart time from a journal of config A commands.

    python -m bench.replay [--commands 10000000] [--snapshot-every 1000000] [--runs 3] [--json PATH]

Setup (not timed): the seeded config A workload is generated, run through a live engine and
written to a journal (fsync off, 4,096 commands per frame, 64 MiB segments), with a snapshot
written by ``SnapshotWriter`` every ``--snapshot-every`` commands, placed so that the newest is one
interval before the journal's end: the restart replays a whole interval's suffix (the worst case
for a matcher that snapshots at that interval).

Timed, median of ``--runs``:
  * full replay: read + verify every frame and run every command through ``process_count``
    (commands/s; target >= 2,000,000/s);
  * restart: load the newest valid snapshot + ``Engine.from_state`` + replay the suffix
    (``engine.replay.replay(verify=False)``), the matcher's recovery path without the ring
    (target < 10 s after 10,000,000 journaled commands).
The state hashes of the live run, the full replay and the restart are compared.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

FRAME = 4096


def build(directory: Path, commands: int, snapshot_every: int, seed: int) -> dict:
    from bench.orders import CONFIGS, generate
    from engine.journal import JournalWriter
    from engine.matcher import Engine
    from engine.snapshot import SnapshotWriter
    from engine.state import state_hash

    t0 = time.perf_counter()
    w = generate(CONFIGS["A"].replace(commands=commands, seed=seed))
    gen_s = time.perf_counter() - t0
    stream = np.concatenate([w.setup, w.prefill, w.stream])
    del w.stream
    e = Engine(**w.engine_kwargs)
    t0 = time.perf_counter()
    export_ns = []
    with JournalWriter(directory / "journal", fsync="off") as journal, \
            SnapshotWriter(directory / "snapshots", keep=3, fsync=True) as snaps:
        next_snap = len(stream) % snapshot_every or snapshot_every  # the last one interval before the end
        for i in range(0, len(stream), FRAME):
            batch = stream[i : i + FRAME]
            journal.append_array(batch)
            journal.commit()
            e.process_count(batch)
            if e.cmd_seq >= next_snap and e.cmd_seq < len(stream):
                t1 = time.perf_counter_ns()
                state = e.export_state()
                export_ns.append(time.perf_counter_ns() - t1)
                snaps.submit(state)
                next_snap += snapshot_every
        snaps.wait()
        snap_stats = snaps.stats()
    live_s = time.perf_counter() - t0
    return {"engine_kwargs": w.engine_kwargs, "commands": len(stream), "gen_s": gen_s, "live_s": live_s,
            "live_hash": state_hash(e), "cmd_seq": e.cmd_seq, "event_seq": e.event_seq,
            "open_orders": e.open_orders, "snapshots": snap_stats,
            "export_ms_median": statistics.median(export_ns) / 1e6 if export_ns else None,
            "journal_bytes": sum(p.stat().st_size for p in (directory / "journal").glob("*.journal"))}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.replay", description=__doc__.splitlines()[0])
    p.add_argument("--commands", type=int, default=10_000_000, help="config A stream commands (default 10M)")
    p.add_argument("--snapshot-every", type=int, default=1_000_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--dir", help="work directory (default: a temporary one, removed after)")
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args(argv)

    from engine.replay import replay

    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="xos-bench-replay-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        print(f"setup: config A, {args.commands:,} stream commands, snapshot every {args.snapshot_every:,} ...",
              flush=True)
        setup = build(work, args.commands, args.snapshot_every, args.seed)
        caps = setup["engine_kwargs"]
        n = setup["commands"]
        print(f"  generated in {setup['gen_s']:.1f} s; live run + journal + snapshots {setup['live_s']:.1f} s; "
              f"journal {setup['journal_bytes'] / 1e6:.0f} MB; export_state median {setup['export_ms_median']} ms",
              flush=True)

        full_runs, restart_runs = [], []
        for r in range(args.runs):
            t0 = time.perf_counter()
            res, _ = replay(work / "journal", capacities=caps, count_events=False, hash_state=False)
            full_runs.append(time.perf_counter() - t0)
            assert res.ok and res.replayed == n, res
            t0 = time.perf_counter()
            rest, engine = replay(work / "journal", work / "snapshots", capacities=caps, count_events=False,
                                  verify=False, hash_state=False)
            restart_runs.append(time.perf_counter() - t0)
            assert rest.ok and rest.snapshot and engine.cmd_seq == n, rest
            suffix, load_s = rest.replayed, rest.load_s
            print(f"  run {r + 1}: full replay {full_runs[-1]:.2f} s ({n / full_runs[-1] / 1e6:.2f} M commands/s); "
                  f"restart {restart_runs[-1]:.2f} s (snapshot load {load_s * 1e3:.0f} ms, suffix {suffix:,})",
                  flush=True)
        from engine.state import state_hash

        full_hash = replay(work / "journal", capacities=caps, count_events=False)[0].state_hash
        restart_hash = state_hash(engine)
        full_s = statistics.median(full_runs)
        out = {
            "config": "A", "seed": args.seed, "commands": n, "snapshot_every": args.snapshot_every, "runs": args.runs,
            "replay_commands_per_s": n / full_s, "replay_s_median": full_s, "replay_s": full_runs,
            "restart_s_median": statistics.median(restart_runs), "restart_s": restart_runs,
            "restart_suffix_commands": suffix, "restart_snapshot_load_s": load_s,
            "hash_equal": setup["live_hash"] == full_hash == restart_hash,
            "export_state_ms_median": setup["export_ms_median"], "snapshot_writer": setup["snapshots"],
            "journal_bytes": setup["journal_bytes"], "open_orders": setup["open_orders"],
            "event_seq": setup["event_seq"],
            "targets": {"replay_commands_per_s": 2_000_000, "restart_s": 10.0},
        }
        print(f"replay {out['replay_commands_per_s'] / 1e6:.2f} M commands/s (median of {args.runs}; target >= 2 M/s)")
        print(f"restart after {n:,} journaled commands: {out['restart_s_median']:.2f} s "
              f"(snapshot + {suffix:,} suffix commands; target < 10 s)")
        print(f"state hash equal (live, full replay, snapshot + suffix): {out['hash_equal']}")
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=2))
        return out
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
