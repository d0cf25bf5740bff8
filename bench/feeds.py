"""Oracle feeds benchmark: OraclePrice updates into the running matcher, and the matcher's order
throughput while they flow compared with runs without them.

    python -m bench.feeds --json feeds.json [--markets 1000] [--interval 0.008] [--commands 300000] [--repeat 3]

The engine runs as ``xos run`` does (supervisor, matcher, settlement, margin and risk workers) on a
private name and a temporary data directory, journal off as in ``bench.pipeline``.  The config
lists ``--markets`` oracle markets (ids from 2001), each fed by three seeded simulated sources,
quorum 2, one aggregation round per ``--interval``; the feeds process is the real one
(``python -m engine.process feeds``), started by this benchmark so it can run the same engine
with and without it.

``--repeat`` pairs of runs, alternating which of the pair goes first, each on a fresh engine with
the same seeded ``bench.orders`` workload (config A) and the same timeline:
  1. setup and prefill sent, untimed; wait until the matcher is idle and every worker has applied
     every event;
  2. ``--warmup`` + ``--measure`` seconds: with oracles the feeds process runs and the matcher's
     intake over the last ``--measure`` seconds (only oracle updates then) is
     ``oracle_updates_per_s``; without, the engine idles as long;
  3. the order stream, timed from its first send until the matcher has taken all of it, the feed
     going on in the with-run.
The end of the stream is interpolated between the heartbeats (every ``HEARTBEAT_S``) around it; in
the with-run the orders taken are the matcher's command count minus the oracle updates the feed
sent meanwhile (its heartbeats, interpolated the same way).  After a with-run the feed is stopped
and the benchmark checks that the matcher took exactly the stream plus every update the feed sent.
The figures are medians over the runs; every run is in ``runs``, with where the CPU went: each
process's CPU (``/proc/PID/stat``, all its threads; ``bench`` is this process, the producer and
supervisor) and ``other`` (the rest of the machine's busy time, from ``/proc/stat``), in cores,
during the oracle-only window and during the stream.  On a machine shared with other work the
order rate follows the CPU the others leave, so the runs also report the engine's CPU per order
during the stream (all its processes, the feed's included, over the orders): ``cpu_ratio`` is
that without oracles over that with them, what ``ratio`` would be where the engine had the
machine to itself and used all of it.

The bootstrap configures each market's oracle (venue 0, feed id = market id, the feed's account),
so the matcher applies every update (keeps the price, emits an Oracle event the workers read)
and the venue-0 orders of the fed markets would be refused while their oracle is stale (the
order workload trades other markets).
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.orders import CONFIGS, generate
from engine.config import load
from engine.process import WORKERS, InputClient
from engine.supervisor import Supervisor

SEND_BATCH = 4096
HEARTBEAT_S = 0.05
FIRST_MARKET = 2001
ORACLE_QUOTE = 3  # asset id of the oracle markets' quote (their base is the next)
SOURCES = ("sim-a", "sim-b", "sim-c")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def write_config(directory: Path, markets: int, interval_s: float, engine_kwargs: dict, tag: str) -> Path:
    ids = range(FIRST_MARKET, FIRST_MARKET + markets)
    lines = [
        "[engine]", f'name = "xos-bench-feeds-{os.getpid()}-{tag}"', f'data_dir = "{directory / "data"}"',
        f'input = "ipc://{directory}/input"', "ring_capacity = 1048576", "batch_max = 8192", "journal = false",
        f"max_orders = {engine_kwargs['max_orders']}", f"max_accounts = {engine_kwargs['max_accounts']}",
        "max_markets = 4096", f"max_assets = {engine_kwargs['max_assets']}",
        # asset ids next to the workload's (1, 2): the margin worker's book is dense in asset ids, and
        # ids in the thousands made its once-a-second checkpoint (oracle events keep it busy) 131 MB
        "[[assets]]", f"id = {ORACLE_QUOTE}", 'symbol = "ORQ"', "decimals = 6",
        "[[assets]]", f"id = {ORACLE_QUOTE + 1}", 'symbol = "ORB"', "decimals = 8",
    ]
    for m in ids:
        lines += ["[[markets]]", f"id = {m}", 'base = "ORB"', 'quote = "ORQ"', "tick_size = 100",
                  "lot_size = 100000", "min_size = 100000"]
    lines += ["[risk]", "move_bps = 10000", "[workers]", f"heartbeat_s = {HEARTBEAT_S}", "checkpoint_s = 1.0",
              "stale_after_s = 30.0", "[gateway]", "enabled = false", "[marketdata]", "enabled = false",
              "[venues]", "admin = 9000", "protocol_account = 9002", 'stake_asset = "ORQ"', "min_stake = 1",
              "[feeds]", "enabled = false", "account = 9001"]  # started by the benchmark, not the supervisor
    prices = ", ".join(f"{m} = {100.0 + (m % 97):.1f}" for m in ids)
    for seed, name in enumerate(SOURCES, 1):
        lines += ["[[feeds.sources]]", 'kind = "simulated"', f'name = "{name}"', f"seed = {seed}",
                  f"step_s = {interval_s}", "vol_bps = 2.0", f"start_prices = {{ {prices} }}"]
    for m in ids:
        lines += ["[[feeds.markets]]", f"id = {m}", f"market = {m}", f"sources = {json.dumps(list(SOURCES))}",
                  "quorum = 2", "max_deviation_bps = 500", "stale_after_s = 5.0", f"interval_s = {interval_s}"]
    path = directory / "xos.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def beat(cfg, role: str) -> dict:
    try:
        return json.loads((cfg.data_path / "run" / f"{role}.json").read_text())
    except (OSError, ValueError):
        return {}


class BeatLog:
    """One counter of one process's heartbeats, every distinct beat read, so its value at any time
    between beats can be interpolated (the engine's processes beat every ``HEARTBEAT_S``)."""

    def __init__(self, cfg, role: str, key: str):
        self.cfg, self.role, self.key = cfg, role, key
        self.times: list[float] = []
        self.values: list[int] = []

    def read(self) -> None:
        b = beat(self.cfg, self.role)
        if self.key in b and (not self.times or b["time"] > self.times[-1]):
            self.times.append(b["time"])
            self.values.append(b[self.key])

    def at(self, t: float) -> float:
        return float(np.interp(t, self.times, self.values))


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, all its threads (``/proc/PID/stat``)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU time the whole machine spent on anything but idling (``/proc/stat``, all cores)."""
    with open("/proc/stat") as fh:
        ticks = [int(x) for x in fh.readline().split()[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / CLOCK_TICKS  # minus idle and iowait


class CpuMeter:
    """Where the CPU went between two samples, per process and the rest of the machine."""

    def __init__(self, pids: dict[str, int]):
        self.pids = pids

    def sample(self) -> dict:
        return {"time": time.monotonic(), "machine": machine_busy_seconds(),
                **{role: cpu_seconds(pid) for role, pid in self.pids.items()}}

    @staticmethod
    def cores(a: dict, b: dict) -> dict:
        wall = b["time"] - a["time"]
        out = {role: round((b[role] - a[role]) / wall, 3) for role in a if role not in ("time", "machine")}
        out["other"] = round((b["machine"] - a["machine"]) / wall - sum(out.values()), 3)
        return out


def wait_until(sup, what: str, predicate, timeout_s: float):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"bench.feeds: {what} did not happen within {timeout_s:.0f} s")
        sup.check()
        time.sleep(HEARTBEAT_S / 2)  # polling costs CPU the engine needs on 2 cores


def idle_cmd_seq(sup, cfg, at_least: int, timeout_s: float) -> int:
    """The matcher's command count once it has taken ``at_least`` and stopped moving."""
    last = [-1]

    def settled():
        seq = beat(cfg, "matcher").get("cmd_seq", 0)
        done = seq >= at_least and seq == last[0]
        last[0] = seq
        if not done:
            time.sleep(HEARTBEAT_S * 2)
        return seq if done else None

    return wait_until(sup, "matcher idle", settled, timeout_s)


def workers_caught_up(sup, cfg, timeout_s: float) -> None:
    """Every worker has applied every event the (idle) matcher published."""
    def done():
        events = beat(cfg, "matcher").get("event_seq", 0)
        return all(beat(cfg, w).get("cursor", -1) >= events for w in WORKERS)

    wait_until(sup, "the workers catching up", done, timeout_s)


def stream_end(matcher: BeatLog, feed: BeatLog | None, t0: float, base: int, count: int, slack: int) -> float | None:
    """When the matcher had taken the ``count`` orders sent from ``t0`` on, interpolated between
    the two beats around it; None until a beat (and, with a feed, a feed beat) after it was read.

    Before the stream the matcher had taken ``base`` commands, and every command after those is an
    order or an oracle update, so the orders taken by a beat are its command count less ``base``
    and less the updates the feed had sent by then (its beats, interpolated).  An update sent is
    taken a moment later, so that count runs up to about a round ahead: with a feed, the stream
    counts as taken once at most ``slack`` (one round's updates) seem missing."""
    target = count - (slack if feed else 0)

    def orders(t: float, seq: int) -> float:
        return seq - base - (feed.at(t) if feed else 0.0)

    prev_t, prev_n = t0, 0.0
    for t, seq in zip(matcher.times, matcher.values):
        if t <= t0:
            continue
        if feed and feed.times[-1] < t:
            return None  # the updates sent by t are not known yet
        n = orders(t, seq)
        if n >= target:
            return prev_t + (t - prev_t) * (target - prev_n) / (n - prev_n)
        prev_t, prev_n = t, max(n, 0.0)
    return None


def one_run(wl, args, with_feed: bool) -> dict:
    out: dict = {"with_oracles": with_feed}
    with tempfile.TemporaryDirectory(prefix="xos-bench-feeds-") as tmp:
        path = write_config(Path(tmp), args.markets, args.interval, wl.engine_kwargs, "f" if with_feed else "n")
        cfg = load(path)
        sup = Supervisor(cfg, str(path), log=_log)
        sup.start()
        feed = None
        try:
            client = InputClient(cfg.input_address)
            bootstrap = 2 + args.markets + 1 + args.markets  # assets, markets, VenueParams, OracleConfigs
            head = np.concatenate([wl.setup, wl.prefill])
            for i in range(0, len(head), SEND_BATCH):
                client.send(head[i : i + SEND_BATCH])
            base = idle_cmd_seq(sup, cfg, bootstrap + len(head), args.timeout)
            workers_caught_up(sup, cfg, args.timeout)
            pids = {role: p.pid for role, p in sup.procs.items()} | {"bench": os.getpid()}
            matcher = BeatLog(cfg, "matcher", "cmd_seq")
            sent = BeatLog(cfg, "feeds", "sent") if with_feed else None
            if with_feed:
                feed = subprocess.Popen([sys.executable, "-P", "-m", "engine.process", "feeds", "--config", str(path)])
                pids["feeds"] = feed.pid
                wait_until(sup, "first oracle updates", lambda: beat(cfg, "feeds").get("sent", 0) > 0, args.timeout)
            meter = CpuMeter(pids)
            time.sleep(args.warmup)
            matcher.read()
            ta, ca = matcher.times[-1], meter.sample()
            time.sleep(args.measure)
            matcher.read()
            tb, cb = matcher.times[-1], meter.sample()
            if with_feed:
                out["oracle_updates_per_s"] = (matcher.at(tb) - matcher.at(ta)) / (tb - ta)
                out["cpu_cores_oracles_alone"] = CpuMeter.cores(ca, cb)
                sent.read()
            stream = wl.stream
            c0 = meter.sample()
            t0 = time.time()
            for i in range(0, len(stream), SEND_BATCH):
                client.send(stream[i : i + SEND_BATCH])

            def ended():
                matcher.read()
                if sent:
                    sent.read()
                return stream_end(matcher, sent, t0, base, len(stream), args.markets)

            t_end = wait_until(sup, "the order stream taken", ended, args.timeout)
            out["cpu_cores_stream"] = cores = CpuMeter.cores(c0, meter.sample())
            out["seconds"] = t_end - t0
            out["commands_per_s"] = len(stream) / (t_end - t0)
            out["engine_cpu_us_per_order"] = sum(v for k, v in cores.items() if k != "other") * (t_end - t0) \
                / len(stream) * 1e6
            if with_feed:
                out["oracle_updates_per_s_during_orders"] = (sent.at(t_end) - sent.at(t0)) / (t_end - t0)
                feed.send_signal(signal.SIGTERM)
                if feed.wait(timeout=30) != 0:
                    raise SystemExit(f"bench.feeds: the feeds process exited {feed.returncode}")
                final = beat(cfg, "feeds")
                expected = base + len(stream) + final["sent"]
                taken = idle_cmd_seq(sup, cfg, expected, args.timeout)
                if taken != expected:
                    raise SystemExit(f"bench.feeds: the matcher took {taken} commands, expected {expected}")
                out["oracle_updates_sent"] = final["sent"]
                out["feed_rounds"] = final["rounds"]
                out["feed_markets_fresh"] = final["markets_fresh"]
            client.close()
        finally:
            if feed is not None and feed.poll() is None:
                feed.kill()
                feed.wait()
            sup.stop()
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.feeds", description=__doc__.splitlines()[0])
    p.add_argument("--markets", type=int, default=1000)
    # 8 ms: 125,000 updates/s offered, the 100,000/s with room for rounds a busy machine delays
    p.add_argument("--interval", type=float, default=0.008, help="aggregation round (and simulation step), s")
    p.add_argument("--commands", type=int, default=300_000)
    p.add_argument("--repeat", type=int, default=3, help="pairs of runs (with and without oracles)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--measure", type=float, default=2.0)
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    _log(f"generating config A workload ({args.commands:,} commands) ...")
    wl = generate(CONFIGS["A"].replace(commands=args.commands, seed=args.seed))
    runs = []
    for r in range(args.repeat):
        for with_feed in ((False, True) if r % 2 == 0 else (True, False)):
            run = one_run(wl, args, with_feed)
            runs.append(run)
            if with_feed:
                _log(f"  with oracles: {run['commands_per_s']:,.0f} commands/s; oracle updates "
                     f"{run['oracle_updates_per_s']:,.0f}/s alone, "
                     f"{run['oracle_updates_per_s_during_orders']:,.0f}/s during orders")
            else:
                _log(f"  without oracles: {run['commands_per_s']:,.0f} commands/s")
    with_ = [r for r in runs if r["with_oracles"]]
    without = [r for r in runs if not r["with_oracles"]]

    def median(rs, key):
        return statistics.median(r[key] for r in rs)

    out = {
        "benchmark": "feeds",
        "markets": args.markets,
        "sources_per_market": len(SOURCES),
        "interval_s": args.interval,
        "nominal_updates_per_s": args.markets / args.interval,
        "commands": args.commands,
        "seed": args.seed,
        "repeat": args.repeat,
        "oracle_updates_per_s": median(with_, "oracle_updates_per_s"),
        "oracle_updates_per_s_during_orders": median(with_, "oracle_updates_per_s_during_orders"),
        "commands_per_s_with_oracles": median(with_, "commands_per_s"),
        "commands_per_s_without": median(without, "commands_per_s"),
        "engine_cpu_us_per_order_with_oracles": median(with_, "engine_cpu_us_per_order"),
        "engine_cpu_us_per_order_without": median(without, "engine_cpu_us_per_order"),
        "runs": runs,
    }
    out["ratio"] = out["commands_per_s_with_oracles"] / out["commands_per_s_without"]
    # CPU is counted in clock ticks (10 ms): a tiny run may see none
    out["cpu_ratio"] = (out["engine_cpu_us_per_order_without"] / out["engine_cpu_us_per_order_with_oracles"]
                        if out["engine_cpu_us_per_order_with_oracles"] else float("nan"))
    print(f"feeds: {out['oracle_updates_per_s']:,.0f} oracle updates/s into the matcher ({args.markets} markets x "
          f"{len(SOURCES)} sources, round {args.interval * 1e3:g} ms, {out['nominal_updates_per_s']:,.0f}/s nominal), "
          f"{out['oracle_updates_per_s_during_orders']:,.0f}/s during orders; orders "
          f"{out['commands_per_s_with_oracles']:,.0f}/s with them vs {out['commands_per_s_without']:,.0f}/s without "
          f"(ratio {out['ratio']:.3f}; medians of {args.repeat} runs each); the engine's CPU per order "
          f"{out['engine_cpu_us_per_order_with_oracles']:.2f} us with them vs {out['engine_cpu_us_per_order_without']:.2f} "
          f"us without (ratio {out['cpu_ratio']:.3f})")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
