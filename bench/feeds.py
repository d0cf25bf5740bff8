"""Oracle feeds benchmark: OraclePrice updates into the running matcher, and the matcher's order
throughput while they flow compared with a run without them.

    python -m bench.feeds --json feeds.json [--markets 1000] [--interval 0.01] [--commands 300000]

The engine runs as ``xos run`` does (supervisor, matcher, settlement, margin and risk workers) on a
private name and a temporary data directory, journal off as in ``bench.pipeline``.  The config
lists ``--markets`` oracle markets (ids from 2001), each fed by three seeded simulated sources,
quorum 2, one aggregation round per ``--interval``; the feeds process is the real one
(``python -m engine.process feeds``), started by this benchmark so it can run the same engine
with and without it.

Two runs, one seeded ``bench.orders`` workload (config A) each, setup and prefill untimed:
  * without: the order stream alone;
  * with: the feeds process is started first; once it has run ``--warmup`` seconds the matcher's
    intake is measured over ``--measure`` seconds (every command it takes then is an oracle
    update: ``oracle_updates_per_s``), then the order stream is sent while the feed goes on.
The stream is timed from its first send until the matcher has taken all of it, read from the
heartbeats (every ``HEARTBEAT_S``), so the end is known to within one beat: in the with-run, the
order count taken is the matcher's count minus the oracle updates the feed reports sent.  After
the with-run the feed is stopped and the benchmark checks that the matcher took exactly the
stream plus every update the feed sent.

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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.orders import CONFIGS, generate
from engine.config import load
from engine.process import InputClient
from engine.supervisor import Supervisor

SEND_BATCH = 4096
HEARTBEAT_S = 0.02
FIRST_MARKET = 2001
SOURCES = ("sim-a", "sim-b", "sim-c")


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def write_config(directory: Path, markets: int, interval_s: float, engine_kwargs: dict, tag: str) -> Path:
    ids = range(FIRST_MARKET, FIRST_MARKET + markets)
    lines = [
        "[engine]", f'name = "xos-bench-feeds-{os.getpid()}-{tag}"', f'data_dir = "{directory / "data"}"',
        f'input = "ipc://{directory}/input"', "ring_capacity = 1048576", "batch_max = 8192", "journal = false",
        f"max_orders = {engine_kwargs['max_orders']}", f"max_accounts = {engine_kwargs['max_accounts']}",
        "max_markets = 4096", "max_assets = 1024",
        "[[assets]]", "id = 1000", 'symbol = "ORQ"', "decimals = 6",
        "[[assets]]", "id = 1001", 'symbol = "ORB"', "decimals = 8",
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


def one_run(wl, args, with_feed: bool) -> dict:
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="xos-bench-feeds-") as tmp:
        path = write_config(Path(tmp), args.markets, args.interval, wl.engine_kwargs, "f" if with_feed else "n")
        cfg = load(path)
        sup = Supervisor(cfg, str(path), log=_log)
        sup.start()
        feed = None
        f0: dict = {}
        try:
            client = InputClient(cfg.input_address)
            bootstrap = 2 + args.markets + 1 + args.markets  # assets, markets, VenueParams, OracleConfigs
            head = np.concatenate([wl.setup, wl.prefill])
            for i in range(0, len(head), SEND_BATCH):
                client.send(head[i : i + SEND_BATCH])
            base = idle_cmd_seq(sup, cfg, bootstrap + len(head), args.timeout)
            if with_feed:
                feed = subprocess.Popen([sys.executable, "-P", "-m", "engine.process", "feeds", "--config", str(path)])
                wait_until(sup, "first oracle updates", lambda: beat(cfg, "feeds").get("sent", 0) > 0, args.timeout)
                time.sleep(args.warmup)
                a = beat(cfg, "matcher")
                time.sleep(args.measure)
                b = beat(cfg, "matcher")
                out["oracle_updates_per_s"] = (b["cmd_seq"] - a["cmd_seq"]) / (b["time"] - a["time"])
                f0 = beat(cfg, "feeds")
            stream = wl.stream
            before = beat(cfg, "matcher")["cmd_seq"]
            t0 = time.perf_counter()
            for i in range(0, len(stream), SEND_BATCH):
                client.send(stream[i : i + SEND_BATCH])

            def orders_taken() -> bool:
                oracles = beat(cfg, "feeds").get("sent", 0) - f0["sent"] if with_feed else 0
                return beat(cfg, "matcher").get("cmd_seq", 0) - before - oracles >= len(stream)

            wait_until(sup, "the order stream taken", orders_taken, args.timeout)
            seconds = time.perf_counter() - t0
            out["commands_per_s"] = len(stream) / seconds
            out["seconds"] = seconds
            if with_feed:
                f1 = beat(cfg, "feeds")
                out["oracle_updates_per_s_during_orders"] = (f1["sent"] - f0["sent"]) / (f1["time"] - f0["time"])
                feed.send_signal(signal.SIGTERM)
                if feed.wait(timeout=30) != 0:
                    raise SystemExit(f"bench.feeds: the feeds process exited {feed.returncode}")
                final = beat(cfg, "feeds")
                expected = base + len(stream) + final["sent"]
                taken = idle_cmd_seq(sup, cfg, expected, args.timeout)
                if taken != expected:
                    raise SystemExit(f"bench.feeds: the matcher took {taken} commands, expected {expected}")
                out["oracle_updates_sent"] = final["sent"]
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
    p.add_argument("--interval", type=float, default=0.01, help="aggregation round (and simulation step), s")
    p.add_argument("--commands", type=int, default=300_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--measure", type=float, default=3.0)
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    _log(f"generating config A workload ({args.commands:,} commands) ...")
    wl = generate(CONFIGS["A"].replace(commands=args.commands, seed=args.seed))
    without = one_run(wl, args, with_feed=False)
    _log(f"  without oracles: {without['commands_per_s']:,.0f} commands/s")
    with_ = one_run(wl, args, with_feed=True)
    _log(f"  with oracles: {with_['commands_per_s']:,.0f} commands/s; oracle updates "
         f"{with_['oracle_updates_per_s']:,.0f}/s alone, {with_['oracle_updates_per_s_during_orders']:,.0f}/s during orders")
    out = {
        "benchmark": "feeds",
        "markets": args.markets,
        "sources_per_market": len(SOURCES),
        "interval_s": args.interval,
        "commands": args.commands,
        "seed": args.seed,
        "oracle_updates_per_s": with_["oracle_updates_per_s"],
        "oracle_updates_per_s_during_orders": with_["oracle_updates_per_s_during_orders"],
        "commands_per_s_with_oracles": with_["commands_per_s"],
        "commands_per_s_without": without["commands_per_s"],
        "ratio": with_["commands_per_s"] / without["commands_per_s"],
        "runs": {"with": with_, "without": without},
    }
    print(f"feeds: {out['oracle_updates_per_s']:,.0f} oracle updates/s into the matcher ({args.markets} markets x "
          f"{len(SOURCES)} sources, round {args.interval * 1e3:.0f} ms); orders {out['commands_per_s_with_oracles']:,.0f}"
          f"/s with them vs {out['commands_per_s_without']:,.0f}/s without (ratio {out['ratio']:.3f})")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
