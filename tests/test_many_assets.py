"""Accounts holding more assets than the engine keeps in one balance block."""
from __future__ import annotations

from engine.records import Ev, Side
from engine.state import canonical_state

N_ASSETS = 20  # more than the Cython engine's BALANCE_BLOCK of 8
QUOTE = N_ASSETS


def build(engine_cls):
    e = engine_cls(max_orders=1000, max_accounts=100, max_markets=64, max_assets=64)
    for a in range(1, N_ASSETS + 1):
        e.add_asset(a, f"A{a}", 6)
    for m in range(1, N_ASSETS):
        e.add_market(m, m, QUOTE, tick_size=1, lot_size=1, min_size=1, taker_bps=10)
    for account in (1, 2):
        for a in range(N_ASSETS, 0, -1):  # newest-first order differs from asset order
            e.deposit(account, a, 1_000_000)
    return e


def test_balances_past_the_block_settle_exactly(engine_cls):
    e = build(engine_cls)
    for m in range(1, N_ASSETS):
        e.place(1, m, Side.SELL, 100 + m, 10, m)
        out = e.place(2, m, Side.BUY, 100 + m, 10, m)
        fills = out[out["kind"] == Ev.FILL]
        assert len(fills) == 1 and int(fills[0]["qty"]) == 10
    fees = 0
    for m in range(1, N_ASSETS):
        fee = -(-(100 + m) * 10 * 10 // 10000)
        fees += fee
        assert e.balance(1, m) == (1_000_000 - 10, 0)
        assert e.balance(2, m) == (1_000_000 + 10, 0)
    proceeds = sum((100 + m) * 10 for m in range(1, N_ASSETS))
    assert e.balance(1, QUOTE) == (1_000_000 + proceeds, 0)
    assert e.balance(2, QUOTE) == (1_000_000 - proceeds - fees, 0)
    assert e.fees(QUOTE) == fees
    assert sorted(e.balances(2)) == list(range(1, N_ASSETS + 1))


def test_many_assets_same_state_in_both_engines():
    from engine.matcher import Engine
    from engine.reference import ReferenceEngine

    engines = [build(Engine), build(ReferenceEngine)]
    for e in engines:
        for m in range(1, N_ASSETS, 3):
            e.place(1, m, Side.BUY, 50, 5, 100 + m)
            e.withdraw(2, m, 999_000)
    assert canonical_state(engines[0]) == canonical_state(engines[1])
