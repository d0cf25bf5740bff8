"""Micro-benchmarks of single commands through ``process``: add, cancel and match.

    pytest tests/test_bench_micro.py --benchmark-enable

Each benchmark works on a seeded book of about 1,000 resting orders; the
command is built and any order it needs is placed in the untimed setup of
``benchmark.pedantic``, so a round times one ``process`` call of one command
(Python call overhead and the events array included).  In the normal suite
benchmarks are disabled and every test runs its command once and checks it.
"""
from __future__ import annotations

import random

import numpy as np
import pytest

from engine.records import COMMAND_DTYPE, Cmd, EvFlag, Side, Tif

ENGINES = ["cython", "reference"]
ROUNDS = {"cython": 2000, "reference": 500}
BASE, QUOTE, MARKET = 1, 2, 1
LOT = 100
MID = 100_000
MAKER, TAKER = 1, 2  # accounts
TRADERS = range(10, 60)


def _engine_cls(name):
    if name == "cython":
        matcher = pytest.importorskip("engine.matcher")
        return matcher.Engine
    from engine.reference import ReferenceEngine

    return ReferenceEngine


def _cmd(kind, **fields):
    c = np.zeros(1, dtype=COMMAND_DTYPE)
    c["kind"] = kind
    for k, v in fields.items():
        c[k] = v
    return c


class Book:
    """An engine with one market and a seeded book: bids below ``MID``, asks above ``MID + 1000``."""

    def __init__(self, name, depth=1000, seed=7):
        self.e = _engine_cls(name)(max_orders=1 << 16, max_accounts=1 << 10, max_markets=16, max_assets=16)
        e = self.e
        e.add_asset(BASE, "BTC", 8)
        e.add_asset(QUOTE, "USD", 2)
        e.add_market(MARKET, BASE, QUOTE, tick_size=1, lot_size=LOT, min_size=LOT, maker_bps=1, taker_bps=2)
        for account in (MAKER, TAKER, *TRADERS):
            e.deposit(account, BASE, 10**14)
            e.deposit(account, QUOTE, 10**14)
        rnd = random.Random(seed)
        rows = []
        for i in range(depth):
            side = i % 2
            price = MID - rnd.randrange(1, 2000) if side == Side.BUY else MID + 1000 + rnd.randrange(1, 2000)
            rows.append((Cmd.PLACE, side, Tif.GTC, 0, 0, 0, 0, MARKET, 0, rnd.choice(TRADERS), price,
                         LOT * rnd.randrange(1, 20), i + 1, 0))
        e.process(np.array(rows, dtype=COMMAND_DTYPE))
        self.client_id = depth
        self.rnd = rnd

    def next_client_id(self):
        self.client_id += 1
        return self.client_id

    def place(self, account, side, price, qty, tif=Tif.GTC):
        return _cmd(Cmd.PLACE, side=side, tif=tif, market=MARKET, account=account, price=price, qty=qty,
                    id=self.next_client_id())


def _run(benchmark, name, target, setup):
    return benchmark.pedantic(target, setup=setup, rounds=ROUNDS[name], iterations=1, warmup_rounds=10)


@pytest.mark.parametrize("name", ENGINES)
def test_add(benchmark, name):
    """A resting GTC order inside the spread's far side: no match."""
    book = Book(name)
    out = []

    def setup():
        side = book.rnd.randrange(2)
        price = MID - book.rnd.randrange(1, 2000) if side == Side.BUY else MID + 1000 + book.rnd.randrange(1, 2000)
        return (book.place(TAKER, side, price, LOT * book.rnd.randrange(1, 20)),), {}

    def target(cmd):
        out.append(book.e.process(cmd))

    _run(benchmark, name, target, setup)
    ev = out[-1]
    assert ev["kind"][0] == 1 and ev["remaining"][0] == ev["qty"][0]
    assert not (ev["kind"] == 3).any()


@pytest.mark.parametrize("name", ENGINES)
def test_cancel(benchmark, name):
    """Cancel by order id of an order placed (untimed) just before."""
    book = Book(name)
    out = []

    def setup():
        price = MID - book.rnd.randrange(1, 2000)
        ev = book.e.process(book.place(TAKER, Side.BUY, price, LOT))
        return (_cmd(Cmd.CANCEL, account=TAKER, id=int(ev["order_id"][0])),), {}

    def target(cmd):
        out.append(book.e.process(cmd))

    _run(benchmark, name, target, setup)
    ev = out[-1]
    assert ev["kind"][0] == 4 and ev["remaining"][0] == 0


@pytest.mark.parametrize("name", ENGINES)
def test_match(benchmark, name):
    """An IOC buy that fills exactly one resting sell, placed (untimed) at the top of the book."""
    book = Book(name)
    out = []

    def setup():
        qty = LOT * book.rnd.randrange(1, 20)
        book.e.process(book.place(MAKER, Side.SELL, MID + 500, qty))
        return (book.place(TAKER, Side.BUY, MID + 500, qty, tif=Tif.IOC),), {}

    def target(cmd):
        out.append(book.e.process(cmd))

    _run(benchmark, name, target, setup)
    ev = out[-1]
    fills = ev[ev["kind"] == 3]
    assert len(fills) == 1
    assert fills["flags"][0] == EvFlag.MAKER_DONE | EvFlag.TAKER_DONE
    assert fills["price"][0] == MID + 500
    assert book.e.best_ask(MARKET) > MID + 1000
