"""Unified-account benchmarks: revaluation after a mark change, and perpetual against spot matching.

    python -m bench.margin --json margin.json

* ``revalue``: ``--accounts`` accounts (100,000) hold positions in ``--markets`` perpetual markets
  (1,000): every account in market 1, and ``--per-account`` more each, drawn with a seeded
  generator.  The positions are made by the Cython matcher (deposits, then crossing orders between
  pairs of accounts) and the margin worker's core (``MarginBook``) follows the events, untimed.
  Timed: ``MarginBook.apply`` of one event batch holding a trade in market 1 at a new price (the
  mark change: every account's position there is revalued, their sums move, and the accounts under
  maintenance are found), ``--changes`` times at prices drawn around the start.  Reported as
  percentiles (``revalue_ms`` is the median); ``revalue_typical_ms`` is the same for a market with
  an average number of holders.
* ``perp_ratio``: ``bench.orders`` config A with its market listed as perpetual instead of spot,
  both processed by the Cython matcher in the same run (``--runs`` alternating runs each, medians of
  each): ``perp_commands_per_s / spot_commands_per_s``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
from hdrh.histogram import HdrHistogram

from bench import write_json
from bench.matcher import throughput_run
from bench.orders import CONFIGS, generate
from engine.matcher import Engine
from engine.records import (COMMAND_DTYPE, Cmd, Ev, MarketKind, Side, Tif, pack_market_assets, pack_market_params,
                            pack_symbol)
from engine.workers.margin import MarginBook

QUOTE, BASE = 1, 2
LOT, TICK, START_PRICE = 1, 1, 10_000
DEPOSIT = 10**9


def _commands(n: int) -> np.ndarray:
    return np.zeros(n, COMMAND_DTYPE)


def position_setup(accounts: int, markets: int, per_account: int, seed: int) -> np.ndarray:
    """Commands that list ``markets`` perpetual markets, fund ``accounts`` accounts and open positions:
    accounts ``2i`` and ``2i+1`` trade one lot with each other in market 1 and in ``per_account``
    markets drawn per pair."""
    rng = np.random.default_rng(seed)
    parts = []
    assets = _commands(2)
    assets["kind"] = Cmd.ADD_ASSET
    assets["market"] = [QUOTE, BASE]
    assets["id"] = [pack_symbol("USDT")[0], pack_symbol("BTC")[0]]
    parts.append(assets)
    listing = _commands(markets)
    listing["kind"] = Cmd.ADD_MARKET
    listing["market"] = np.arange(1, markets + 1)
    listing["side"] = MarketKind.PERPETUAL
    listing["account"] = pack_market_assets(BASE, QUOTE)
    listing["price"], listing["qty"], listing["id"] = TICK, LOT, LOT
    listing["aux"] = pack_market_params(0, 0, 0)
    parts.append(listing)
    ids = np.arange(1, accounts + 1, dtype=np.int64)
    funding = _commands(accounts)
    funding["kind"] = Cmd.DEPOSIT
    funding["account"] = ids
    funding["market"] = QUOTE
    funding["qty"] = DEPOSIT
    parts.append(funding)
    pairs = accounts // 2
    chosen = np.column_stack([np.ones(pairs, np.int64)] +
                             [rng.integers(2, markets + 1, pairs) for _ in range(per_account)])
    market = chosen.ravel()
    buyer = np.repeat(ids[0::2][:pairs], chosen.shape[1])
    seller = np.repeat(ids[1::2][:pairs], chosen.shape[1])
    price = START_PRICE + rng.integers(-100, 101, len(market))
    trades = _commands(2 * len(market))
    trades["kind"] = Cmd.PLACE
    trades["market"] = np.repeat(market, 2)
    trades["account"] = np.column_stack([buyer, seller]).ravel()
    trades["side"] = np.tile([Side.BUY, Side.SELL], len(market))
    trades["price"] = np.repeat(price, 2)
    trades["qty"] = LOT * rng.integers(1, 20, len(market)).repeat(2)
    trades["tif"] = Tif.GTC
    trades["id"] = np.arange(1, len(trades) + 1)
    parts.append(trades)
    cmds = np.concatenate(parts)
    cmds["ts"] = 1000 + np.arange(len(cmds))
    return cmds


def mark_change(e: Engine, market: int, price: int, ts: int, pair: tuple[int, int]) -> np.ndarray:
    """The events of one trade of one lot in ``market`` at ``price`` between the accounts of ``pair``."""
    cmd = _commands(2)
    cmd["kind"] = Cmd.PLACE
    cmd["market"] = market
    cmd["account"] = pair
    cmd["side"] = [Side.BUY, Side.SELL]
    cmd["price"] = price
    cmd["qty"] = LOT
    cmd["tif"] = [Tif.GTC, Tif.IOC]
    cmd["ts"] = ts
    cmd["id"] = [ts, ts + 1]
    return e.process(cmd)


def bench_revalue(args: argparse.Namespace) -> dict:
    cmds = position_setup(args.accounts, args.markets, args.per_account, args.seed)
    e = Engine(max_orders=1 << 16, max_accounts=1 << int(np.ceil(np.log2(args.accounts + 2))),
               max_markets=args.markets + 1, max_assets=4)
    t0 = time.perf_counter()
    events = e.process(cmds)
    rejected = events[events["kind"] == Ev.REJECTED]
    if len(rejected):
        raise SystemExit(f"setup rejected {len(rejected)} commands, first code {int(rejected['code'][0])}")
    book = MarginBook(accounts=args.accounts + 16, assets=4, markets=args.markets + 1)
    for i in range(0, len(events), 131_072):
        book.apply(events[i:i + 131_072])
    print(f"setup: {args.accounts} accounts, {len(book.perp)} positions in {args.markets} markets "
          f"({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    holders = np.bincount(book.perp.market[:len(book.perp)], minlength=args.markets + 1)
    typical = int(np.argsort(holders[2:])[len(holders[2:]) // 2]) + 2
    rng = np.random.default_rng(args.seed + 1)
    out = {"positions": len(book.perp), "holders_market_1": int(holders[1]), "holders_typical": int(holders[typical])}
    ts = int(cmds["ts"][-1]) + 1
    for name, market in (("revalue", 1), ("revalue_typical", typical)):
        hist = HdrHistogram(1, 10_000_000_000, 3)
        under = 0
        for _ in range(args.changes):
            price = START_PRICE + int(rng.integers(-3000, 3001))
            batch = mark_change(e, market, price, ts, (1, 2))
            ts += 2
            t = time.perf_counter_ns()
            book.apply(batch)
            found = book.take_under()
            hist.record_value(time.perf_counter_ns() - t)
            under = max(under, len(found))
        out[f"{name}_ms"] = hist.get_value_at_percentile(50) / 1e6
        out[f"{name}_p99_ms"] = hist.get_value_at_percentile(99) / 1e6
        out[f"{name}_max_ms"] = hist.get_max_value() / 1e6
        out[f"{name}_under_maintenance_max"] = under
        print(f"{name}: market {market} ({int(holders[market])} holders): p50 {out[f'{name}_ms']:.2f} ms, "
              f"p99 {out[f'{name}_p99_ms']:.2f} ms, max {out[f'{name}_max_ms']:.2f} ms", file=sys.stderr)
    return out


def as_perpetual(wl):
    """The workload with every market listed as perpetual (same commands otherwise)."""
    import dataclasses

    setup = wl.setup.copy()
    setup["side"][setup["kind"] == Cmd.ADD_MARKET] = MarketKind.PERPETUAL
    return dataclasses.replace(wl, setup=setup)


def bench_perp_ratio(args: argparse.Namespace) -> dict:
    cfg = CONFIGS["A"].replace(commands=args.commands, seed=args.seed)
    spot = generate(cfg)
    perp = as_perpetual(spot)
    check = Engine(**perp.engine_kwargs)
    check.process(perp.setup)
    check.process(perp.prefill)
    ev = check.process(perp.stream)
    rejects = int((ev["kind"] == Ev.REJECTED).sum())
    fills = int((ev["kind"] == Ev.FILL).sum())
    if rejects or not (ev["kind"] == Ev.POSITION).any():
        raise SystemExit(f"perpetual stream: {rejects} rejects, {fills} fills: not the spot stream's behaviour")
    rates = {"spot": [], "perp": []}
    for _ in range(args.runs):
        for name, wl in (("spot", spot), ("perp", perp)):
            rates[name].append(len(wl.stream) / (throughput_run(Engine, wl, args.batch) / 1e9))
    ratios = [p / s for p, s in zip(rates["perp"], rates["spot"])]
    out = {"spot_commands_per_s": statistics.median(rates["spot"]),
           "perp_commands_per_s": statistics.median(rates["perp"]),
           "perp_ratio": statistics.median(ratios), "perp_ratio_runs": ratios, "perp_fills": fills}
    print(f"config A, {len(spot.stream)} commands: spot {out['spot_commands_per_s'] / 1e6:.2f} M/s, perpetual "
          f"{out['perp_commands_per_s'] / 1e6:.2f} M/s, ratio {out['perp_ratio']:.3f} (median of {args.runs})",
          file=sys.stderr)
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--accounts", type=int, default=100_000)
    p.add_argument("--markets", type=int, default=1_000)
    p.add_argument("--per-account", type=int, default=9, help="markets besides market 1 per pair of accounts")
    p.add_argument("--changes", type=int, default=200, help="mark changes timed per market")
    p.add_argument("--commands", type=int, default=1_000_000, help="config A stream length for perp_ratio")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--only", choices=("revalue", "perp_ratio"), action="append")
    p.add_argument("--json")
    args = p.parse_args(argv)
    parts = args.only or ["revalue", "perp_ratio"]
    out = {"accounts": args.accounts, "markets": args.markets, "seed": args.seed}
    if "revalue" in parts:
        out.update(bench_revalue(args))
    if "perp_ratio" in parts:
        out.update(bench_perp_ratio(args))
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
