"""Venue benchmark: the matcher benchmark's workloads spread over many venues sharing the markets.

    python -m bench.venues --json bench-venues.json
    python -m bench.venues --configs A --venues 1000 --commands 500000 --runs 3

For each config (``bench.orders``: A, one market; B, many markets), the same generated workload
is timed two ways in this process, runs alternating:

* **single venue**: as generated, every order on venue 0 (the protocol venue);
* **many venues**: ``--venues`` venues launched in an untimed setup (VenueParams, a staked launch
  per venue, every venue offering every market, allow-lists), every account given a home venue
  through which all its orders go (the prefill's and the stream's).  Eligibility is mixed:
  70 % of the venues are permissionless (pool 0, trading with everyone), 20 % allow-list venues
  that trade with everyone (pool 1), 10 % allow-list venues restricted to pool 1, so their
  orders and pool 0's pass each other over.  Venue fees equal the markets' (maker 1, taker 5 bps),
  so both runs pay the same fees but the many-venue run books them into venue pools.

The stream was generated against one venue, so in the many-venue run some orders do not trade
where they did, and a few cancels and amends then name orders already gone (counted as
``rejects``).  Throughput: median of ``--runs`` wall times of the whole stream through
``process_count`` in batches; ``ratio_to_single_venue`` = many-venue / single-venue median.
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import dataclasses
import platform
import statistics
import sys

import numpy as np

from bench import write_json
from bench.matcher import fresh_engine, throughput_run
from bench.orders import CONFIGS, MAKER_BPS, TAKER_BPS, Workload, generate
from engine.records import COMMAND_DTYPE, Cmd, Ev, VenueAccess, pack_venue_fees

ADMIN = 1 << 40
PROTOCOL = ADMIN + 1
OPERATORS = ADMIN + 1_000  # operator of venue v: OPERATORS + v; its insurance fund: INSURANCE + v
INSURANCE = ADMIN + 100_000
STAKE = 10**6
RESTRICTED_POOL = 1
# share of venues per kind: (access, pool, accepts mask)
KINDS = ((0.7, VenueAccess.PERMISSIONLESS, 0, -1), (0.2, VenueAccess.ALLOW_LIST, 1, -1),
         (0.1, VenueAccess.ALLOW_LIST, RESTRICTED_POOL, 1 << RESTRICTED_POOL))


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _rows(kind: int, n: int, **columns) -> np.ndarray:
    out = np.zeros(n, dtype=COMMAND_DTYPE)
    out["kind"] = kind
    for name, value in columns.items():
        out[name] = value
    return out


def spread_over_venues(wl: Workload, n_venues: int, seed: int) -> tuple[Workload, dict]:
    """The workload with ``n_venues`` venues (see the module docstring) and its venue layout."""
    rng = np.random.default_rng(seed)
    venues = np.arange(1, n_venues + 1)
    kind_of = rng.choice(len(KINDS), size=n_venues, p=[k[0] for k in KINDS])
    access = np.array([KINDS[k][1] for k in kind_of])
    stake_asset = int(wl.setup["market"][wl.setup["kind"] == Cmd.ADD_ASSET].min())
    markets = wl.setup["market"][wl.setup["kind"] == Cmd.ADD_MARKET]
    accounts = np.unique(wl.setup["account"][wl.setup["kind"] == Cmd.DEPOSIT])
    home = rng.choice(venues, size=len(accounts))  # every account trades through one venue

    operators = OPERATORS + venues
    parts = [
        _rows(Cmd.VENUE_PARAMS, 1, account=ADMIN, market=stake_asset, qty=STAKE, price=0, id=PROTOCOL, aux=ADMIN),
        _rows(Cmd.DEPOSIT, n_venues, account=operators, market=stake_asset, qty=STAKE),
        _rows(Cmd.LAUNCH_VENUE, n_venues, account=operators, venue=venues, qty=STAKE, id=INSURANCE + venues,
              side=access),
        _rows(Cmd.VENUE_POLICY, n_venues, account=operators, venue=venues, side=[KINDS[k][2] for k in kind_of],
              aux=[KINDS[k][3] for k in kind_of]),
        _rows(Cmd.VENUE_FEES, n_venues, account=operators, venue=venues, aux=pack_venue_fees(MAKER_BPS, TAKER_BPS)),
        _rows(Cmd.OFFER_MARKET, n_venues * len(markets), account=np.repeat(operators, len(markets)),
              venue=np.repeat(venues, len(markets)), market=np.tile(markets, n_venues)),
    ]
    listed = access[home - 1] == VenueAccess.ALLOW_LIST
    parts.append(_rows(Cmd.ALLOW, int(listed.sum()), account=OPERATORS + home[listed], venue=home[listed],
                       id=accounts[listed]))
    venue_of = dict(zip(accounts.tolist(), home.tolist()))

    def route(commands: np.ndarray) -> np.ndarray:
        out = commands.copy()
        places = out["kind"] == Cmd.PLACE
        out["venue"][places] = [venue_of[a] for a in out["account"][places].tolist()]
        return out

    kwargs = dict(wl.engine_kwargs, max_venues=max(1024, n_venues + 1),
                  max_accounts=wl.engine_kwargs["max_accounts"] + 2 * n_venues + 2)
    spread = dataclasses.replace(wl, setup=np.concatenate([wl.setup] + parts), prefill=route(wl.prefill),
                                 stream=route(wl.stream), engine_kwargs=kwargs)
    layout = {"venues": n_venues, "venue_kinds": {name: int((kind_of == i).sum()) for i, name in
                                                  enumerate(("permissionless", "allow_list_open", "allow_list_restricted"))},
              "setup_commands": len(spread.setup), "allow_list_entries": int(listed.sum())}
    return spread, layout


def outcome(cls, wl: Workload, batch: int) -> dict:
    """Fills, rejects and cross-venue fills of one untimed pass (to show what was timed)."""
    e = fresh_engine(cls, wl)
    rejects = fills = cross = 0
    for s in range(0, len(wl.stream), batch):
        ev = e.process(wl.stream[s: s + batch])
        f = ev[ev["kind"] == Ev.FILL]
        fills += len(f)
        cross += int(np.count_nonzero(f["venue"] != f["client_id"]))
        rejects += int(np.count_nonzero(ev["kind"] == Ev.REJECTED))
    return {"fills": fills, "cross_venue_fills": cross, "rejects": rejects, "resting_orders_after": e.open_orders}


def measure(cls, config: str, args) -> dict:
    cfg = CONFIGS[config].replace(commands=args.commands, markets=args.markets, accounts=args.accounts,
                                  orders=args.orders, seed=args.seed)
    _log(f"config {config}: generating {cfg.commands:,} commands over {cfg.markets:,} markets ...")
    single = generate(cfg, cls)
    many, layout = spread_over_venues(single, args.venues, args.seed)
    setup_events = cls(**many.engine_kwargs).process(many.setup)  # untimed: the venue setup is accepted whole
    if np.any(setup_events["kind"] == Ev.REJECTED):
        raise SystemExit(f"venue setup rejected: codes {sorted(set(setup_events['code'][setup_events['kind'] == Ev.REJECTED].tolist()))}")
    walls = {"single": [], "many": []}
    for r in range(args.runs):
        for name, wl in (("single", single), ("many", many)):
            ns = throughput_run(cls, wl, args.batch)
            walls[name].append(ns)
            _log(f"  run {r + 1}/{args.runs} {name:6s}: {len(wl.stream) / ns * 1e9:,.0f} commands/s")
    rates = {k: [len(single.stream) / ns * 1e9 for ns in v] for k, v in walls.items()}
    single_cps, many_cps = statistics.median(rates["single"]), statistics.median(rates["many"])
    return {
        "commands": len(single.stream),
        "markets": cfg.markets,
        "accounts": cfg.accounts,
        "commands_per_s": round(many_cps, 1),
        "single_venue_commands_per_s": round(single_cps, 1),
        "ratio_to_single_venue": round(many_cps / single_cps, 4),
        "per_run_commands_per_s": {k: [round(x, 1) for x in v] for k, v in rates.items()},
        "layout": layout,
        "outcome": {"single": outcome(cls, single, args.batch), "many": outcome(cls, many, args.batch)},
    }


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", default="A,B", help="comma-separated bench.orders configs")
    p.add_argument("--venues", type=int, default=1000)
    p.add_argument("--commands", type=int, help="stream length (default: each config's)")
    p.add_argument("--markets", type=int, help="override the configs' market count")
    p.add_argument("--accounts", type=int, help="override the configs' account count")
    p.add_argument("--orders", type=int, help="override the configs' target resting orders")
    p.add_argument("--runs", type=int, default=3, help="timed runs per variant (median reported)")
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", metavar="PATH")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    from engine.matcher import Engine

    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        raise SystemExit(f"unknown config(s) {unknown}; choose from {sorted(CONFIGS)}")
    per_config = {c: measure(Engine, c, args) for c in configs}
    result = {
        "venues": args.venues,
        "commands_per_s": {c: r["commands_per_s"] for c, r in per_config.items()},
        "ratio_to_single_venue": {c: r["ratio_to_single_venue"] for c, r in per_config.items()},
        "configs": per_config,
        "runs": args.runs,
        "batch": args.batch,
        "seed": args.seed,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    for c, r in per_config.items():
        o = r["outcome"]["many"]
        print(f"config {c}: {args.venues} venues {r['commands_per_s']:,.0f} commands/s, one venue "
              f"{r['single_venue_commands_per_s']:,.0f} commands/s, ratio {r['ratio_to_single_venue']:.3f} "
              f"({o['fills']:,} fills, {o['cross_venue_fills']:,} across venues, {o['rejects']:,} rejects; "
              f"one venue: {r['outcome']['single']['fills']:,} fills)")
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
