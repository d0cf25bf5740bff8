"""Writes the recorded sample price file shipped with xos (feeds/data/sample_prices.csv).

    python scripts/make_sample_prices.py [--seed 8] [--seconds 300] [--out PATH]

Seeded, nothing downloaded: one geometric random walk per market of the built-in config (BTC,
ETH and OKB against USDT; the BTC perpetual, market 4, gets BTC's prices: its index) observed by three "exchanges" (``exch-a``, ``exch-b``, ``exch-c``)
once a second each, a third of a second apart, each with its own small noise.  Two incidents are
recorded on purpose, so a demo shows the guards at work: exch-c is silent from 120 s to 150 s
(longer than the default staleness timeout) and exch-b quotes 5 % too high from 200 s to 205 s
(beyond the default deviation bound).  Columns: ts_ns, market, price, source.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

START_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
MARKETS = {1: (65_000.0, 2), 2: (3_400.0, 2), 3: (48.0, 3)}  # market id: (first price, decimals shown)
INDEX_OF = {4: 1}  # the BTC perpetual's oracle is the BTC index: each exchange's BTC price, also under market 4
SOURCES = ("exch-a", "exch-b", "exch-c")
VOL_PER_S = 4e-4  # one second's log-return standard deviation
NOISE = 1e-4  # each source's own deviation from the common price
OUTAGE = ("exch-c", 120, 150)
SPIKE = ("exch-b", 200, 205, 1.05)


INDEX_OF_REVERSED = {index: [m for m, i in INDEX_OF.items() if i == index] for index in set(INDEX_OF.values())}


def rows(seed: int, seconds: int) -> list[tuple[int, int, str, str]]:
    rng = np.random.default_rng(seed)
    out = []
    for market, (first, shown) in MARKETS.items():
        path = first * np.exp(np.cumsum(rng.normal(0.0, VOL_PER_S, seconds)))
        for k, source in enumerate(SOURCES):
            noise = np.exp(rng.normal(0.0, NOISE, seconds))
            for t in range(seconds):
                if source == OUTAGE[0] and OUTAGE[1] <= t < OUTAGE[2]:
                    continue
                price = path[t] * noise[t]
                if source == SPIKE[0] and SPIKE[1] <= t < SPIKE[2]:
                    price *= SPIKE[3]
                ts = START_NS + t * 1_000_000_000 + k * 333_333_333
                out.extend((ts, m, f"{price:.{shown}f}", source) for m in (market, *INDEX_OF_REVERSED.get(market, ())))
    out.sort()
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=8)
    p.add_argument("--seconds", type=int, default=300)
    p.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "feeds" / "data" / "sample_prices.csv"))
    args = p.parse_args(argv)
    data = rows(args.seed, args.seconds)
    with open(args.out, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(("ts_ns", "market", "price", "source"))
        w.writerows(data)
    print(f"wrote {len(data)} rows to {args.out}")


if __name__ == "__main__":
    main()
