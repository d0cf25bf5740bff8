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
  an average number of holders.  Then USDT is declared the valuation asset and BTC collateral priced by
  market 1's mark (the unified account): ``unified_ms`` is the same batch in market 1 with the unified
  trigger computed for every account with an open cross position (all of them) after it.
* ``revalue_cells``: the exact per-account sums alone (``engine.workercore.revalue_cells``, the C core of every
  revaluation) over ``--accounts`` x ``--assets`` (70) balances of which 11 % are not zero (config B's book),
  drawn with a seeded generator, ``--cell-runs`` times: ``revalue_cells_ms`` (median) and its best.
* ``perp_ratio``: ``bench.orders`` config A with its market listed as perpetual instead of spot,
  both processed by the Cython matcher in the same run (``--runs`` alternating runs each, medians of
  each): ``perp_commands_per_s / spot_commands_per_s``.
* ``cascade``: ``--cascade`` accounts (10,000) hold 10x longs of 10 lots against 100 funded shorts in one
  perpetual market (venue 0, no oracle: the mark is the last trade while the book has no asks), with
  liquidation prices spread by their deposits; 50 market makers bid from 960 down, the insurance fund
  (the protocol account) can take over part of what the book cannot, ADL the rest.  Timed: from one
  seller sweeping the bids down to 930 (the weakest longs' liquidation price) to the cascade fully
  resolved (their liquidation orders sweep the bids further down, which liquidates the next ones), the matcher (Cython) and the margin worker's core in one loop
  as the pipeline runs them (the core's Liquidate commands are the matcher's next input) until the
  core sends none and no account is under maintenance: ``cascade_ms``, with the liquidations, book
  slices, insurance takeovers and ADL closes counted from the events.
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
from engine.records import (COMMAND_DTYPE, Cmd, Ev, EvFlag, MarketKind, Side, Tif, pack_market_assets, pack_market_params,
                            pack_symbol)
from engine.workercore import revalue_cells
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
    admin = args.accounts + 10
    unified = [e.set_venue_params(admin, stake_asset=BASE, min_stake=1, unbond_period=1, protocol_account=admin + 1,
                                  admin=admin, ts=ts),
               e.set_collateral_asset(admin, QUOTE, 0, 10_000, ts=ts),
               e.set_collateral_asset(admin, BASE, 1, 8_000, ts=ts)]
    book.apply(np.concatenate(unified))
    if book.valuation != QUOTE:
        raise SystemExit("the valuation asset was refused")
    hist = HdrHistogram(1, 10_000_000_000, 3)
    for _ in range(args.changes):
        batch = mark_change(e, 1, START_PRICE + int(rng.integers(-3000, 3001)), ts + 1, (1, 2))
        ts += 2
        t = time.perf_counter_ns()
        book.apply(batch)
        hist.record_value(time.perf_counter_ns() - t)
    out["unified_ms"] = hist.get_value_at_percentile(50) / 1e6
    out["unified_p99_ms"] = hist.get_value_at_percentile(99) / 1e6
    print(f"unified: {args.accounts} accounts with cross positions: p50 {out['unified_ms']:.2f} ms, "
          f"p99 {out['unified_p99_ms']:.2f} ms", file=sys.stderr)
    return out


ADMIN, SELLER, FUND = 990_000_001, 990_000_002, 990_000_003


def cascade_setup(longs: int, seed: int) -> tuple[Engine, np.ndarray, dict]:
    """The cascade's engine after its setup, and the setup's events (for the margin core)."""
    rng = np.random.default_rng(seed)
    e = Engine(max_orders=1 << 16, max_accounts=1 << int(np.ceil(np.log2(longs + 4096))), max_markets=8,
               max_assets=4)
    out = [e.add_asset(QUOTE, "USDT", 2), e.add_asset(BASE, "BTC", 8),
           e.add_market(1, BASE, QUOTE, tick_size=1, lot_size=1, min_size=1, kind=MarketKind.PERPETUAL),
           e.set_venue_params(ADMIN, stake_asset=BASE, min_stake=1, unbond_period=1, protocol_account=FUND,
                              admin=ADMIN),
           e.market_risk(ADMIN, 1, max_leverage=10, maintenance_bps=5000, liquidation_slice=5)]
    cmds = []
    long_ids = np.arange(1, longs + 1, dtype=np.int64)
    shorts = np.arange(1_000_001, 1_000_101, dtype=np.int64)
    makers = np.arange(2_000_001, 2_000_051, dtype=np.int64)
    for ids, amount in ((long_ids, 1_100 + rng.integers(0, 400, longs)), (shorts, 10**9), (makers, 10**9),
                        (np.array([FUND]), 300 * longs), (np.array([SELLER]), 10**9)):
        dep = _commands(len(ids))
        dep["kind"], dep["account"], dep["market"], dep["qty"] = Cmd.DEPOSIT, ids, QUOTE, amount
        cmds.append(dep)
    # each short rests an ask of its share, each long lifts 10 lots of it at 1000
    asks = _commands(len(shorts))
    asks["kind"], asks["account"], asks["market"], asks["side"] = Cmd.PLACE, shorts, 1, Side.SELL
    asks["price"], asks["qty"], asks["tif"], asks["id"] = 1000, 10 * longs // len(shorts), Tif.GTC, 1  # all lifted: no ask left
    cmds.append(asks)
    buys = _commands(longs)
    buys["kind"], buys["account"], buys["market"], buys["side"] = Cmd.PLACE, long_ids, 1, Side.BUY
    buys["price"], buys["qty"], buys["tif"], buys["id"] = 1000, 10, Tif.IOC, 1
    cmds.append(buys)
    # market makers' bids from 960 down, thinner than the longs' sizes
    bids = _commands(len(makers))
    bids["kind"], bids["account"], bids["market"], bids["side"] = Cmd.PLACE, makers, 1, Side.BUY
    bids["price"] = 960 - 2 * np.arange(len(makers))
    bids["qty"], bids["tif"], bids["id"] = 2 * longs // len(makers), Tif.GTC, 1
    cmds.append(bids)
    c = np.concatenate(cmds)
    c["ts"] = 100
    out.append(e.process(c))
    events = np.concatenate(out)
    if (events["kind"] == Ev.REJECTED).any():
        bad = events[events["kind"] == Ev.REJECTED][0]
        raise SystemExit(f"cascade setup: a command was rejected with code {int(bad['code'])}")
    return e, events, {"longs": longs, "shorts": len(shorts), "makers": len(makers)}


def bench_cascade(args: argparse.Namespace) -> dict:
    e, events, shape = cascade_setup(args.cascade, args.seed)
    book = MarginBook(accounts=args.cascade + 256, assets=4, markets=2)
    assert len(book.apply(events)) == 0
    # the crash: one seller sweeps the bids down to 930, the last trade and so the mark (no oracle, no asks)
    crash = _commands(1)
    crash["kind"], crash["account"], crash["market"], crash["side"] = Cmd.PLACE, SELLER, 1, Side.SELL
    crash["price"], crash["qty"], crash["tif"], crash["id"], crash["ts"] = 930, 16 * (2 * args.cascade // 50), Tif.IOC, 1, 200
    seen = []
    rounds = 0
    t0 = time.perf_counter_ns()
    out = e.process(crash)
    seen.append(out)
    cmds = book.apply(out)
    while len(cmds):
        rounds += 1
        out = e.process(cmds)
        seen.append(out)
        cmds = book.apply(out)
    elapsed = time.perf_counter_ns() - t0
    rows, _ = book.under_maintenance()
    ev = np.concatenate(seen)
    kind = ev["kind"]
    deleverage = ev[kind == Ev.DELEVERAGE]["reason"]
    result = {**{f"cascade_{k}": v for k, v in shape.items()},
              "cascade_ms": elapsed / 1e6, "cascade_rounds": rounds,
              "cascade_liquidations": int((kind == Ev.LIQUIDATED).sum()),
              "cascade_refused": int((kind == Ev.REJECTED).sum()),
              "cascade_book_orders": int(((kind == Ev.ACCEPTED) & (ev["flags"] & EvFlag.LIQUIDATION != 0)).sum()),
              "cascade_insurance_takeovers": int((deleverage == 1).sum()), "cascade_adl_closes": int((deleverage == 2).sum()),
              "cascade_events": len(ev), "cascade_still_under": len(rows)}
    print(f"cascade: {result['cascade_liquidations']} liquidations of {args.cascade} longs in {result['cascade_ms']:.1f} ms "
          f"({rounds} rounds; {result['cascade_book_orders']} book orders, {result['cascade_insurance_takeovers']} "
          f"insurance takeovers, {result['cascade_adl_closes']} ADL closes; {len(rows)} still under)", file=sys.stderr)
    return result


def as_perpetual(wl):
    """The workload with every market listed as perpetual (same commands otherwise)."""
    import dataclasses

    setup = wl.setup.copy()
    setup["side"][setup["kind"] == Cmd.ADD_MARKET] = MarketKind.PERPETUAL
    return dataclasses.replace(wl, setup=setup)


def bench_revalue_cells(args: argparse.Namespace, density: float = 0.11) -> dict:
    rng = np.random.default_rng(args.seed)
    cells = np.flatnonzero(rng.random(args.accounts * args.assets) < density)
    amounts = rng.integers(0, 1 << 40, size=len(cells), dtype=np.int64)
    weights = rng.integers(1 << 30, 1 << 31, size=args.assets, dtype=np.int64)  # 31-bit mantissas, as weight_bits
    shifts = rng.integers(20, 60, size=args.assets, dtype=np.int64)
    times = []
    for _ in range(args.cell_runs):
        t = time.perf_counter_ns()
        revalue_cells(cells, amounts, weights, shifts, args.accounts)
        times.append(time.perf_counter_ns() - t)
    out = {"revalue_cells": len(cells), "revalue_cells_ms": statistics.median(times) / 1e6,
           "revalue_cells_best_ms": min(times) / 1e6}
    print(f"revalue_cells: {args.accounts} accounts x {args.assets} assets ({len(cells)} cells): median "
          f"{out['revalue_cells_ms']:.2f} ms, best {out['revalue_cells_best_ms']:.2f} ms", file=sys.stderr)
    return out


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
    p.add_argument("--assets", type=int, default=70, help="assets per account for revalue_cells")
    p.add_argument("--cell-runs", type=int, default=20, help="timed revalue_cells calls")
    p.add_argument("--commands", type=int, default=1_000_000, help="config A stream length for perp_ratio")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--cascade", type=int, default=10_000, help="leveraged accounts in the liquidation cascade")
    p.add_argument("--only", choices=("revalue", "revalue_cells", "perp_ratio", "cascade"), action="append")
    p.add_argument("--json")
    args = p.parse_args(argv)
    parts = args.only or ["revalue", "revalue_cells", "perp_ratio", "cascade"]
    out = {"accounts": args.accounts, "markets": args.markets, "seed": args.seed}
    if "revalue" in parts:
        out.update(bench_revalue(args))
    if "revalue_cells" in parts:
        out.update(bench_revalue_cells(args))
    if "perp_ratio" in parts:
        out.update(bench_perp_ratio(args))
    if "cascade" in parts:
        out.update(bench_cascade(args))
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
