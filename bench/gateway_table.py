"""The gateway's order table: what each query and each history write costs the gateway's loop, by table size.

    python -m bench.gateway_table [--rows 16384 131072 1048576] [--open 0.9] [--accounts 100] [--runs 21]
                                  [--seed 1] [--json PATH]

Setup (not timed): a seeded table of ``--rows`` orders over ``--accounts`` accounts, a share ``--open`` of them
open, each account's client ids reused only once its earlier order under them closed (as the matcher allows).
Timed, ``--runs`` times each, in process, as the gateway's loop calls them (``gateway.server.OrderTable``):

  * ``open_orders``: one account's open orders as OrderInfos (its share of the open rows);
  * ``find_order_id``: an order by its id (a binary search);
  * ``find_client_id_new`` / ``find_client_id_old``: by client id, the account's newest order and its oldest
    (the pass goes from the end: an old order is found last, a client id not in the table after a whole pass);
  * ``closed``: the closed rows kept for the next gateway (every ``gateway.history_s`` on the loop);
  * ``trading``: which of 10 idle sessions' accounts have an open order (``forget_idle_sessions``), one of them
    none (the pass ends early once each has one).

Prints p50 / p99 / max in milliseconds per query and size.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

QUERIES = ("open_orders", "find_order_id", "find_client_id_new", "find_client_id_old", "closed", "trading")


def build_table(rows: int, open_share: float, accounts: int, seed: int):
    """A table as the gateway's would be: order ids ascending, closed_seqs after their orders, client ids unique
    among an account's orders (so every reuse question is the one the lookups answer)."""
    from gateway.server import OPEN, ORDER_ROW_DTYPE, OrderTable

    rng = np.random.default_rng(seed)
    new = np.zeros(rows, ORDER_ROW_DTYPE)
    new["order_id"] = np.arange(1, rows + 1)
    new["account"] = rng.integers(1, accounts + 1, rows)
    new["client_id"] = np.arange(1, rows + 1) * 7
    new["price"] = rng.integers(90_000, 110_000, rows)
    new["qty"] = new["remaining"] = rng.integers(1, 100, rows)
    new["market"] = rng.integers(1, 9, rows)
    new["side"] = rng.integers(0, 2, rows)
    new["status"] = np.where(rng.random(rows) < open_share, OPEN, rng.integers(1, 3, rows))
    new["closed_seq"] = np.where(new["status"] == OPEN, 0, 3 * new["order_id"] + 1)
    table = OrderTable(capacity=rows)
    table.insert(new)
    return table


def time_ms(call, runs: int) -> dict:
    took = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        call()
        took.append(time.perf_counter_ns() - start)
    took = np.array(took) / 1e6
    return {"p50": float(np.percentile(took, 50)), "p99": float(np.percentile(took, 99)), "max": float(took.max())}


def measure(rows: int, open_share: float, accounts: int, runs: int, seed: int) -> dict:
    table = build_table(rows, open_share, accounts, seed)
    live = table.rows[:table.n]
    account = int(live["account"][rows // 2])
    mine = live[live["account"] == account]
    newest, oldest = int(mine["client_id"][-1]), int(mine["client_id"][0])
    # 10 idle accounts, one with no order: the usual case of a session to forget, and a whole pass
    idle = np.arange(accounts - 8, accounts + 2, dtype=np.int64)
    calls = {
        "open_orders": lambda: table.open_orders(account, 0),
        "find_order_id": lambda: table.find(account, int(mine["order_id"][len(mine) // 2]), 0),
        "find_client_id_new": lambda: table.find(account, 0, newest),
        "find_client_id_old": lambda: table.find(account, 0, oldest),
        "closed": table.closed,
        "trading": lambda: table.trading(idle),
    }
    assert set(calls) == set(QUERIES)
    return {"rows": rows, "open_rows": int((live["status"] == 0).sum()),
            "account_open_orders": len(table.open_orders(account, 0)), "closed_kept": len(table.closed()),
            "ms": {name: time_ms(calls[name], runs) for name in QUERIES}}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.gateway_table", description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, nargs="+", default=[16_384, 131_072, 1_048_576])
    p.add_argument("--open", type=float, default=0.9, help="share of the rows that are open orders")
    p.add_argument("--accounts", type=int, default=100)
    p.add_argument("--runs", type=int, default=21)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", help="write the figures here")
    a = p.parse_args(argv)
    if not 0 <= a.open <= 1 or a.accounts < 1 or a.runs < 1 or min(a.rows) < 1:
        p.error("--open is a share (0-1); --accounts, --runs and each --rows must be positive")
    out = {"open_share": a.open, "accounts": a.accounts, "runs": a.runs, "seed": a.seed, "sizes": []}
    print(f"{'rows':>9} {'query':<19} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for rows in a.rows:
        figures = measure(rows, a.open, a.accounts, a.runs, a.seed)
        out["sizes"].append(figures)
        for name, ms in figures["ms"].items():
            print(f"{rows:>9} {name:<19} {ms['p50']:>8.3f} {ms['p99']:>8.3f} {ms['max']:>8.3f}", flush=True)
        print(f"{'':>9} (open rows {figures['open_rows']}, one account's open orders "
              f"{figures['account_open_orders']}, closed rows kept {figures['closed_kept']})")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)
    return out


if __name__ == "__main__":
    main()
