"""Journal benchmark: append + commit throughput, durable-write latency, replay speed.

    python -m bench.journal --json bench-journal.json
    python -m bench.journal --runs 7 --commands 1000000 --dir /mnt/nvme/tmp

Steps (commands are seeded random ``COMMAND_DTYPE`` records, generated untimed: random accounts, markets and
prices, which pack to ~15.5 bytes a command against ~10 for the matcher's quoting batches; ``bytes_per_command``):

1. append + commit: for ``fsync`` in (always, off) and each batch size, a
   fresh journal directory (writer opened untimed), then the engine's path
   timed in C (``engine.journal.append_commit_loop``: ``append`` one batch,
   ``group_commit``, repeat); ``--runs`` runs, median commands/s.  With
   fsync="always" every commit is one durable write (O_DSYNC), so the run is
   capped at ``--max-fsyncs`` commits; each one's time (reported as "fsync")
   goes into an HdrHistogram per batch size (all runs).  Closing the writer
   (its final sync) is not timed.  The spare segments are filled while the
   runs go on, as in the engine.
2. calm: fsync="always", one command a commit, commits ``--calm-gaps-us`` apart
   (a lone order at a calm pace: the device and the CPUs idle in between);
   each commit's whole time (append, write, sync) into an HdrHistogram.
3. in flight: durable writes of one block (what most of the engine's commits
   are) into a zero-filled file, as the journal writes them (O_DIRECT and
   O_DSYNC where the file system takes O_DIRECT), back to back from 1 and then
   from ``--in-flight`` threads at once, each on its own blocks: writes/s and
   each write's time.  A journal that writes the next batch while the last is
   still in flight gains only what the device does with two writes at once.
4. replay: a journal of ``--read-commands`` commands in batches of 64 is
   written (untimed), then ``JournalReader.read_all`` (one array, every frame's
   CRC checked) and ``read_from`` (one array per batch) are timed; the files are
   in the page cache, so this is CPU speed, not disk speed.
5. CRC32C: GB/s of the hardware and software implementations on 16 MiB.
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import mmap
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
from hdrh.histogram import HdrHistogram

from bench import write_json
from engine import journal as J
from engine.records import COMMAND_DTYPE

BATCHES = (1, 64, 1024, 4096)
PERCENTILES = (("p50_ns", 50.0), ("p90_ns", 90.0), ("p99_ns", 99.0), ("p999_ns", 99.9))
HIST_MAX_NS = 60_000_000_000


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def make_commands(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = np.zeros(n, dtype=COMMAND_DTYPE)
    a["kind"] = rng.choice([1, 2, 3], n, p=[0.6, 0.3, 0.1])
    a["side"] = rng.integers(0, 2, n)
    a["market"] = rng.integers(1, 100, n)
    a["ts"] = np.arange(n, dtype=np.int64) * 1000 + 1_700_000_000_000_000_000
    a["account"] = rng.integers(1, 100_000, n)
    a["price"] = rng.integers(1, 1_000_000, n)
    a["qty"] = rng.integers(1, 10_000, n)
    a["id"] = np.arange(1, n + 1)
    return a


def fs_type(path: str) -> str:
    try:
        out = subprocess.run(["df", "-T", path], capture_output=True, text=True, timeout=5).stdout.split("\n")
        return out[1].split()[1]
    except Exception:  # pragma: no cover
        return "?"


def bench_append(commands: np.ndarray, base: str, fsync: str, batch: int, runs: int, max_fsyncs: int):
    n = len(commands)
    if fsync == "always":
        n = min(n, batch * max_fsyncs)
    work = commands[:n]
    nb = (n + batch - 1) // batch
    hist = HdrHistogram(1, HIST_MAX_NS, 3)
    rates, fsyncs, written = [], 0, 0
    for run in range(runs):
        d = os.path.join(base, f"append-{fsync}-{batch}-{run}")
        w = J.JournalWriter(d, fsync=fsync)
        lat = np.zeros(nb, dtype=np.int64)
        ns = J.append_commit_loop(w, work, batch, lat)
        fsyncs += w.fsyncs
        written = w.bytes_written  # the frames' bytes (packed commands, headers): the same each run
        w.close()
        shutil.rmtree(d)
        rates.append(n / (ns / 1e9))
        if fsync == "always":
            for v in lat:
                hist.record_value(max(1, int(v)))
    out = {
        "commands": n,
        "commits": nb,
        "commands_per_s": statistics.median(rates),
        "commits_per_s": statistics.median(rates) / batch,
        "bytes_per_command": written / n,
        "mb_per_s": statistics.median(rates) * written / n / 1e6,
        "runs_commands_per_s": rates,
    }
    if fsync == "always":
        out["fsyncs"] = fsyncs
        out["fsync_latency"] = {name: hist.get_value_at_percentile(p) for name, p in PERCENTILES}
        out["fsync_latency"]["max_ns"] = hist.get_max_value()
        out["fsync_latency"]["mean_ns"] = hist.get_mean_value()
    return out


def bench_calm(commands: np.ndarray, base: str, gap_us: int, commits: int) -> dict:
    """Commits of one command, ``gap_us`` apart, each timed whole (from Python: ~5 us of it)."""
    d = os.path.join(base, f"calm-{gap_us}")
    hist = HdrHistogram(1, HIST_MAX_NS, 3)
    with J.JournalWriter(d, fsync="always") as w:
        for i in range(commits):
            t0 = time.perf_counter_ns()
            w.append_array(commands[i:i + 1])
            w.commit()
            hist.record_value(max(1, time.perf_counter_ns() - t0))
            time.sleep(gap_us / 1e6)
    shutil.rmtree(d)
    out = {name: hist.get_value_at_percentile(p) for name, p in PERCENTILES}
    out["commits"] = commits
    return out


def bench_in_flight(base: str, writers: int, writes: int, runs: int) -> dict:
    """``writers`` threads, each writing ``writes`` single blocks durably, back to back, at once."""
    block = 4096
    path = os.path.join(base, f"in-flight-{writers}")
    size = writers * writes * block
    with open(path, "wb") as f:  # zero-filled and synced first, as the journal's segments are
        f.write(bytes(size))
        f.flush()
        os.fsync(f.fileno())
    direct = J.direct_io_works(base)
    fd = os.open(path, os.O_WRONLY | os.O_DSYNC | (os.O_DIRECT if direct else 0))
    data = mmap.mmap(-1, block)  # page-aligned, as O_DIRECT needs
    data.write(b"\xa5" * block)
    hist = HdrHistogram(1, HIST_MAX_NS, 3)
    rates = []

    def write(first: int, lat: np.ndarray, start: threading.Barrier) -> None:
        start.wait()
        for j in range(writes):  # the threads' blocks interleave, as consecutive commits' would
            t0 = time.perf_counter_ns()
            os.pwrite(fd, data, ((j * writers) + first) * block)
            lat[j] = time.perf_counter_ns() - t0

    try:
        for _ in range(runs):
            lats = [np.zeros(writes, np.int64) for _ in range(writers)]
            start = threading.Barrier(writers + 1)
            threads = [threading.Thread(target=write, args=(i, lats[i], start)) for i in range(writers)]
            for t in threads:
                t.start()
            start.wait()
            t0 = time.perf_counter_ns()
            for t in threads:
                t.join()
            rates.append(writers * writes / ((time.perf_counter_ns() - t0) / 1e9))
            for v in np.concatenate(lats).tolist():
                hist.record_value(max(1, v))
    finally:
        os.close(fd)
        data.close()
        os.unlink(path)
    out = {name: hist.get_value_at_percentile(p) for name, p in PERCENTILES}
    out.update(writers=writers, writes=writers * writes, direct=direct, writes_per_s=statistics.median(rates),
               runs_writes_per_s=rates)
    return out


def bench_read(commands: np.ndarray, base: str, runs: int):
    d = os.path.join(base, "read")
    with J.JournalWriter(d, fsync="off") as w:
        for i in range(0, len(commands), 64):
            w.append_array(commands[i:i + 64])
            if i % (64 * 1024) == 0:
                w.commit()
    nbytes = sum(os.path.getsize(p) for _, p in J.list_segments(d))
    J.JournalReader(d).read_all()  # warm the page cache
    all_rates, batch_rates = [], []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        r = J.JournalReader(d)
        first, arr = r.read_all()
        t1 = time.perf_counter_ns()
        assert first == 1 and len(arr) == len(commands) and not r.report
        all_rates.append(len(arr) / ((t1 - t0) / 1e9))
        t0 = time.perf_counter_ns()
        count = 0
        for _, b in J.JournalReader(d).read_from(1):
            count += len(b)
        t1 = time.perf_counter_ns()
        assert count == len(commands)
        batch_rates.append(count / ((t1 - t0) / 1e9))
    assert np.array_equal(arr, commands)
    shutil.rmtree(d)
    return {
        "commands": len(commands),
        "batch": 64,
        "bytes": nbytes,
        "read_all_commands_per_s": statistics.median(all_rates),
        "read_all_gb_per_s": statistics.median(all_rates) * nbytes / len(commands) / 1e9,
        "read_from_commands_per_s": statistics.median(batch_rates),
        "runs_read_all": all_rates,
        "runs_read_from": batch_rates,
        "page_cache": "warm",
    }


def bench_crc(runs: int, seed: int):
    buf = np.random.default_rng(seed).integers(0, 256, 16 << 20, dtype=np.uint8).tobytes()
    out = {}
    impls = [("sw", J.crc32c_sw)] + ([("hw", J.crc32c_hw)] if J.CRC32C_HW else [])
    for name, fn in impls:
        times = []
        for _ in range(runs):
            t0 = time.perf_counter_ns()
            fn(buf)
            times.append(time.perf_counter_ns() - t0)
        out[f"{name}_gb_per_s"] = len(buf) / statistics.median(times)
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench.journal", description=__doc__.split("\n")[0])
    ap.add_argument("--json", metavar="PATH", help="write the results here")
    ap.add_argument("--commands", type=int, default=1 << 18, help="commands per append run (fsync off)")
    ap.add_argument("--max-fsyncs", type=int, default=1000, help="commits per run with fsync=always")
    ap.add_argument("--read-commands", type=int, default=1 << 20)
    ap.add_argument("--batches", default=",".join(map(str, BATCHES)))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--dir", default=None, help="where the journals are written (default: a temp dir)")
    ap.add_argument("--calm-gaps-us", default="1000,5000", help="pauses between the calm commits (empty: none)")
    ap.add_argument("--calm-commits", type=int, default=400)
    ap.add_argument("--in-flight", type=int, default=2, help="threads writing at once, measured against one (0: skip)")
    ap.add_argument("--in-flight-writes", type=int, default=1000, help="durable writes per thread per run")
    args = ap.parse_args(argv)
    if args.in_flight < 0:
        ap.error(f"--in-flight {args.in_flight}: the threads writing at once cannot be negative (0 skips the step)")
    if args.in_flight_writes < 1:
        ap.error(f"--in-flight-writes {args.in_flight_writes}: each thread needs at least one write")
    batches = [int(b) for b in args.batches.split(",")]

    commands = make_commands(max(args.commands, args.read_commands), args.seed)
    base = tempfile.mkdtemp(prefix="xos-journal-bench-", dir=args.dir)
    result = {
        "meta": {
            "benchmark": "journal",
            "seed": args.seed,
            "runs": args.runs,
            "statistic": "median",
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "directory": base,
            "filesystem": fs_type(base),
            "crc32c_hw": J.CRC32C_HW,
            "path": "engine.journal.append_commit_loop (cdef append + group_commit, timed in C)",
        },
        "append": {},
    }
    try:
        for fsync in ("always", "off"):
            result["append"][fsync] = {}
            for batch in batches:
                r = bench_append(commands[:args.commands], base, fsync, batch, args.runs, args.max_fsyncs)
                result["append"][fsync][str(batch)] = r
                lat = r.get("fsync_latency")
                _log(f"fsync={fsync:6s} batch={batch:5d}: {r['commands_per_s']:14,.0f} commands/s"
                     f" {r['commits_per_s']:12,.0f} commits/s {r['bytes_per_command']:5.1f} B/command"
                     + (f"  fsync p50 {lat['p50_ns'] / 1e3:.0f} us p99 {lat['p99_ns'] / 1e3:.0f} us" if lat else ""))
        result["calm"] = {}
        for gap in [int(g) for g in args.calm_gaps_us.split(",") if g]:
            r = result["calm"][str(gap)] = bench_calm(commands, base, gap, args.calm_commits)
            _log(f"calm: a commit of 1 command every {gap} us: p50 {r['p50_ns'] / 1e3:.0f} us  "
                 f"p90 {r['p90_ns'] / 1e3:.0f} us  p99 {r['p99_ns'] / 1e3:.0f} us")
        if args.in_flight:
            result["in_flight"] = {}
            for writers in sorted({1, args.in_flight}):
                r = result["in_flight"][str(writers)] = bench_in_flight(base, writers, args.in_flight_writes,
                                                                         args.runs)
                _log(f"in flight: {writers} durable 4 KiB writes at once: {r['writes_per_s']:,.0f} writes/s  "
                     f"each p50 {r['p50_ns'] / 1e3:.0f} us  p99 {r['p99_ns'] / 1e3:.0f} us")
        result["read"] = bench_read(commands[:args.read_commands], base, args.runs)
        _log(f"replay: read_all {result['read']['read_all_commands_per_s']:,.0f} commands/s "
             f"({result['read']['read_all_gb_per_s']:.2f} GB/s), read_from "
             f"{result['read']['read_from_commands_per_s']:,.0f} commands/s")
        result["crc32c"] = bench_crc(args.runs, args.seed)
        _log("crc32c: " + ", ".join(f"{k} {v:.2f}" for k, v in result["crc32c"].items()))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
