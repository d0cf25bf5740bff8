"""Seeded benchmark workloads, modelled on exchange-core's ``TestOrdersGenerator``.

A workload is three ``COMMAND_DTYPE`` arrays, processed in this order:

* ``setup``: AddAsset, AddMarket, then Deposits that fund every account in
  every asset it trades, generously enough that no hold ever fails;
* ``prefill``: GTC orders building every book to its target depth (bids
  below and asks above the market's start price, so nothing trades);
* ``stream``: the measured commands.

The stream follows exchange-core's generator.  For each command a market is
drawn (Pareto-weighted when there are several), then a side, then ``q``:

* while the chosen side of the book holds fewer orders than its target,
  ``q`` is drawn from 2 (far below target) or 10 values and ``q < 2`` places
  a GTC order near the last trade price;
* otherwise ``q`` is drawn from 40: 2 immediate orders (IOC and FOK, 31:1,
  at the market's protection price), 1 cancel, 1 size reduction, and 36
  price moves of an open order 1% of the way toward the last trade price.

Cancels and amends name orders that are open when they are processed.  The
generator knows which ones are because it drives a real engine with what it
generates: commands are collected in chunks, and a chunk is processed as
soon as a command that may trade is added (an immediate order, or a GTC
order or a move whose price reaches a bound on the opposite best price).
Commands that cannot trade change only the order they name, so the model
applies them directly; everything else is learnt from the chunk's events.
Within a chunk no order is named after it may have left the book, so the
stream needs no rejects (``Workload.gen_rejects`` counts any).

Unlike exchange-core, the order to cancel or amend is drawn uniformly from
all of the market's open orders (exchange-core draws from the oldest 512),
and a reduction always leaves at least one lot (an order of one lot is not
reduced; another order is drawn, a few times at most, else it is moved).
"""
from __future__ import annotations

import bisect
import dataclasses
import math
import random
import time

import numpy as np

from engine.records import (
    COMMAND_DTYPE,
    Cmd,
    EvFlag,
    MarketKind,
    Side,
    Tif,
    pack_market_assets,
    pack_market_params,
    pack_symbol,
)

MAX_MONEY = 1 << 62

# command types of the stream (``Workload.types``)
GTC, IOC, FOK, CANCEL, REDUCE, MOVE = range(6)
TYPE_NAMES = ("place_gtc", "place_ioc", "place_fok", "cancel", "amend_reduce", "amend_move")

CENTRAL_MOVE_ALPHA = 0.01  # a move goes 1% of the way to the last trade price
FAST_FILL_THRESHOLD = 512  # exchange-core's CHECK_ORDERBOOK_STAT_EVERY_NTH_COMMAND
MAX_CHUNK = 512  # commands per driver call at most
TICK_SIZE = 1
LOT_SIZE = 100
MAKER_BPS = 1
TAKER_BPS = 5
FUNDING = 10**14  # per account and asset, less where the asset's holders would overflow


@dataclasses.dataclass(frozen=True)
class Config:
    name: str
    markets: int
    commands: int
    orders: int  # target resting orders, all markets together
    accounts: int
    seed: int = 1

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


CONFIGS = {
    # exchange-core's single pair exchange benchmark
    "A": Config("A", markets=1, commands=3_000_000, orders=1_000, accounts=2_000),
    # many markets with Pareto-weighted activity
    "B": Config("B", markets=1_000, commands=3_000_000, orders=100_000, accounts=100_000),
}


@dataclasses.dataclass
class MarketSpec:
    market_id: int
    base: int
    quote: int
    weight: float
    start_price: int
    deviation: int
    min_price: int
    max_price: int
    target: int  # resting orders, both sides
    users: np.ndarray  # account ids that hold both assets


@dataclasses.dataclass
class Workload:
    config: Config
    markets: list[MarketSpec]
    setup: np.ndarray
    prefill: np.ndarray
    stream: np.ndarray
    types: np.ndarray  # uint8 per stream command, index into TYPE_NAMES
    engine_kwargs: dict
    gen_seconds: float = 0.0
    gen_chunks: int = 0
    gen_rejects: int = 0
    driver: str = ""

    def type_counts(self) -> dict[str, int]:
        counts = np.bincount(self.types, minlength=len(TYPE_NAMES))
        return {name: int(c) for name, c in zip(TYPE_NAMES, counts)}


def pareto_weights(n: int, rng: np.random.Generator) -> np.ndarray:
    """exchange-core's ``createWeightedDistribution``: Pareto(scale 0.001, shape 1.5), normalised."""
    if n == 1:
        return np.ones(1)
    raw = 0.001 * (1.0 + rng.pareto(1.5, n))
    return raw / raw.sum()


def default_engine_cls():
    """The compiled engine when it is built, else the reference model."""
    try:
        from engine.matcher import Engine
    except ImportError:
        from engine.reference import ReferenceEngine as Engine
    return Engine


def _asset_layout(n_markets: int) -> tuple[list[int], list[int]]:
    n_quote = min(20, max(1, round(math.sqrt(n_markets / 2.5))))
    n_base = math.ceil(n_markets / n_quote)
    quotes = list(range(1, n_quote + 1))
    bases = list(range(n_quote + 1, n_quote + n_base + 1))
    return quotes, bases


def build_universe(cfg: Config, rng: np.random.Generator, pyrand: random.Random):
    """Assets, markets, which account holds which asset, and the setup commands."""
    quotes, bases = _asset_layout(cfg.markets)
    pairs = [(b, q) for q in quotes for b in bases]
    order = rng.permutation(len(pairs))[: cfg.markets]
    pairs = [pairs[i] for i in sorted(order)]
    n_assets = len(quotes) + len(bases)
    accounts = np.arange(1, cfg.accounts + 1, dtype=np.int64)

    # which account holds which asset (exchange-core gives users a few currencies each)
    holds = np.zeros((cfg.accounts, n_assets + 1), dtype=bool)
    if cfg.markets == 1:
        holds[:, 1:] = True
    else:
        # each account: 1 or 2 quote assets and 3..10 base assets, drawn without replacement
        for group, low, high in ((quotes, 1, 3), (bases, 3, 11)):
            k = np.minimum(len(group), rng.integers(low, high, size=cfg.accounts))
            rank = rng.random((cfg.accounts, len(group))).argsort(axis=1).argsort(axis=1)
            holds[:, group] = rank < k[:, None]

    weights = pareto_weights(cfg.markets, rng)
    markets: list[MarketSpec] = []
    for k, (base, quote) in enumerate(pairs):
        users = np.flatnonzero(holds[:, base] & holds[:, quote])
        if len(users) < 2:  # small worlds: make sure every market has traders
            extra = rng.choice(cfg.accounts, size=min(cfg.accounts, 8), replace=False)
            holds[extra, base] = True
            holds[extra, quote] = True
            users = np.flatnonzero(holds[:, base] & holds[:, quote])
        price = int(10 ** (3.3 + pyrand.random() * 1.5 + pyrand.random() * 1.5))
        price -= price % TICK_SIZE
        dev = min(int(price * 0.05), 10_000)
        markets.append(
            MarketSpec(
                market_id=k + 1,
                base=base,
                quote=quote,
                weight=float(weights[k]),
                start_price=price,
                deviation=dev,
                min_price=price - dev * 5,
                max_price=price + dev * 5,
                target=max(2, int(cfg.orders * weights[k])),
                users=accounts[users],
            )
        )

    rows = []
    for asset in range(1, n_assets + 1):
        lo, hi = pack_symbol(("Q" if asset in quotes else "B") + str(asset))
        rows.append((Cmd.ADD_ASSET, 0, 0, 0, 0, 0, 0, asset, 0, 0, 8, 0, lo, hi))
    aux = pack_market_params(MAKER_BPS, TAKER_BPS, 0)
    for m in markets:
        rows.append(
            (Cmd.ADD_MARKET, MarketKind.SPOT, 0, 0, 0, 0, 0, m.market_id, 0,
             pack_market_assets(m.base, m.quote), TICK_SIZE, LOT_SIZE, LOT_SIZE, aux)
        )
    holders = holds.sum(axis=0)
    amount = [min(FUNDING, (MAX_MONEY // 2) // max(1, int(h))) for h in holders]
    acc_idx, asset_idx = np.nonzero(holds)
    for a, asset in zip(acc_idx.tolist(), asset_idx.tolist()):
        rows.append((Cmd.DEPOSIT, 0, 0, 0, 0, 0, 0, asset, 0, a + 1, 0, amount[asset], 0, 0))
    setup = np.array(rows, dtype=COMMAND_DTYPE)
    return markets, setup, int(holds.sum())


class _Book:
    """What the generator knows of one market."""

    __slots__ = ("spec", "ids", "n", "pending", "last", "direction", "bid_hi", "ask_lo", "half", "fast",
                 "users", "n_users", "mid")

    def __init__(self, spec: MarketSpec):
        self.spec = spec
        self.ids: list[int] = []  # open order ids, for uniform picks (swap-remove)
        self.n = [0, 0]  # open orders per side (buy, sell)
        self.pending = [0, 0]  # GTC orders generated in the current chunk, not yet accepted
        self.last = spec.start_price
        self.direction = 0
        self.bid_hi = 0  # an upper bound on the best bid (0: none)
        self.ask_lo = 1 << 62  # a lower bound on the best ask
        self.half = max(1, spec.target // 2)
        self.fast = min(FAST_FILL_THRESHOLD, self.half * 3 // 4)
        self.users = spec.users.tolist()
        self.n_users = len(self.users)
        self.mid = spec.market_id


def _reaches(book: "_Book", side: int, price: int) -> bool:
    """Whether an order at ``price`` may reach the other side's best; widens this side's bound."""
    if side == Side.BUY:
        if price > book.bid_hi:
            book.bid_hi = price
        return price >= book.ask_lo
    if price < book.ask_lo:
        book.ask_lo = price
    return price <= book.bid_hi


def _gtc_price(rr, book: _Book, side: int) -> int:
    """exchange-core's limit price: around the last trade, bids at or below it, asks at or above."""
    dev = 1 + int(rr() ** 2 * book.spec.deviation)
    p = int(rr() * dev) + int(rr() * dev) + int(rr() * dev) + int(rr() * dev)
    p = p // 4 * 2 - dev
    if (p > 0) != (side == Side.SELL):
        p = -p
    return max(TICK_SIZE, (book.last + p) // TICK_SIZE * TICK_SIZE)


def generate(cfg: Config, engine_cls=None, progress=None) -> Workload:
    """Build the workload for ``cfg``; ``engine_cls`` drives the generation (default: the fastest built)."""
    t0 = time.perf_counter()
    engine_cls = engine_cls or default_engine_cls()
    rng = np.random.default_rng(cfg.seed)
    pyrand = random.Random(cfg.seed)
    rr = pyrand.random
    markets, setup, _ = build_universe(cfg, rng, pyrand)
    books = [_Book(m) for m in markets]
    total_target = sum(m.target for m in markets)
    engine_kwargs = dict(
        max_orders=max(1 << 16, 1 << math.ceil(math.log2(4 * total_target + 4096))),
        max_accounts=max(1 << 12, 1 << math.ceil(math.log2(cfg.accounts + 1))),
        max_markets=max(64, cfg.markets),
        max_assets=max(64, int(setup["market"][setup["kind"] == Cmd.ADD_ASSET].max())),
    )
    ts = 1000
    client_id = 0

    # --- prefill: every book to its target depth, nothing crosses
    slots = np.repeat(np.arange(len(books)), [b.half * 2 for b in books])
    rng.shuffle(slots)
    sides = {}
    prefill = np.zeros(len(slots), dtype=COMMAND_DTYPE)
    for i, k in enumerate(slots.tolist()):
        book = books[k]
        got = sides.setdefault(k, [0, 0])
        side = Side.BUY if got[0] < book.half and (got[1] >= book.half or rr() < 0.5) else Side.SELL
        got[side] += 1
        price = _gtc_price(rr, book, side)
        if side == Side.BUY:
            price = min(price, book.last - TICK_SIZE)
        else:
            price = max(price, book.last + TICK_SIZE)
        lots = 1 + int(rr() * 6) * int(rr() * 6) * int(rr() * 6)
        client_id += 1
        acct = book.users[int(rr() * book.n_users)]
        prefill[i] = (Cmd.PLACE, side, Tif.GTC, 0, 0, 0, 0, book.mid, ts, acct, price, lots * LOT_SIZE, client_id, 0)
        ts += 1000

    driver = engine_cls(**engine_kwargs)
    driver.process(setup)
    ev = driver.process(prefill)

    info: dict[int, list] = {}  # order id -> [book, side, price, remaining lots, slot in book.ids, account]
    stats = {"rejects": 0}

    def add(book, oid, side, price, lots, account):
        info[oid] = [book, side, price, lots, len(book.ids), account]
        book.ids.append(oid)
        book.n[side] += 1

    def remove(oid):
        rec = info.pop(oid, None)
        if rec is None:
            return
        book = rec[0]
        ids = book.ids
        slot = rec[4]
        last = ids.pop()
        if last != oid:
            ids[slot] = last
            info[last][4] = slot
        book.n[rec[1]] -= 1

    def apply(events):
        e = events[events["kind"] != 6]  # BookLevel events say nothing about single orders
        if len(e) == 0:
            return
        fields = ("kind", "flags", "market", "order_id", "side", "price", "qty", "remaining", "maker_order", "account")
        cols = [e[f].tolist() for f in fields]
        for kind, flags, market, oid, side, price, qty, rem, maker, account in zip(*cols):
            if kind == 3:  # Fill
                if flags & EvFlag.MAKER_DONE:
                    remove(maker)
                else:
                    info[maker][3] -= qty // LOT_SIZE
                if flags & EvFlag.TAKER_DONE:
                    remove(oid)
                else:
                    info[oid][3] = rem // LOT_SIZE
                book = books[market - 1]
                spec = book.spec
                book.last = min(spec.max_price, max(spec.min_price, price))
                if price <= spec.min_price:
                    book.direction = 1
                elif price >= spec.max_price:
                    book.direction = -1
            elif kind == 4:  # Cancelled
                if rem == 0:
                    remove(oid)
                elif oid in info:
                    info[oid][3] = rem // LOT_SIZE
            elif kind == 5:  # Amended (absent when a later command of the chunk cancelled it)
                rec = info.get(oid)
                if rec is not None:
                    rec[2] = price
                    rec[3] = rem // LOT_SIZE
            elif kind == 1:  # Accepted (only placements reach the driver)
                add(books[market - 1], oid, side, price, qty // LOT_SIZE, account)
            elif kind == 2:
                stats["rejects"] += 1

    apply(ev)
    for book in books:
        book.bid_hi = driver.best_bid(book.mid)
        book.ask_lo = driver.best_ask(book.mid) or (1 << 62)

    # --- the stream
    n = cfg.commands
    stream = np.zeros(n, dtype=COMMAND_DTYPE)
    types = np.zeros(n, dtype=np.uint8)
    cum = np.cumsum([b.spec.weight for b in books]).tolist()
    total_weight = cum[-1]
    cum[-1] = float("inf")
    single = len(books) == 1
    chunk_start = 0
    chunks = 0
    touched: list[_Book] = []  # books with pending GTC orders
    report_every = max(1, n // 20)
    next_report = report_every
    i = 0
    while i < n:
        book = books[0] if single else books[bisect.bisect_right(cum, rr() * total_weight)]
        side = Side.BUY if int(rr() * 4) + book.direction >= 2 else Side.SELL
        lack = book.half - book.n[side] - book.pending[side]
        if lack > 0:
            q = int(rr() * (2 if lack > book.fast else 10))
        else:
            q = int(rr() * 40)
        crosses = False
        if q < 2:
            acct = book.users[int(rr() * book.n_users)]
            lots = 1 + int(rr() * 6) * int(rr() * 6) * int(rr() * 6)
            client_id += 1
            if lack > 0:
                tif = Tif.GTC
                price = _gtc_price(rr, book, side)
                crosses = _reaches(book, side, price)
                if not book.pending[0] and not book.pending[1]:
                    touched.append(book)
                book.pending[side] += 1
                types[i] = GTC
            else:
                tif = Tif.FOK if int(rr() * 32) == 0 else Tif.IOC
                price = book.spec.max_price if side == Side.BUY else book.spec.min_price
                crosses = True
                types[i] = FOK if tif == Tif.FOK else IOC
            stream[i] = (Cmd.PLACE, side, tif, 0, 0, 0, 0, book.mid, ts, acct, price, lots * LOT_SIZE, client_id, 0)
        else:
            ids = book.ids
            if not ids:
                continue
            oid = ids[int(rr() * len(ids))]
            rec = info[oid]
            if q == 3:
                tries = 0
                while rec[3] < 2 and tries < 4:
                    oid = ids[int(rr() * len(ids))]
                    rec = info[oid]
                    tries += 1
                if rec[3] < 2:
                    q = 4
            _, oside, oprice, olots, _, acct = rec
            if q == 2:
                stream[i] = (Cmd.CANCEL, 0, 0, 0, 0, 0, 0, 0, ts, acct, 0, 0, oid, 0)
                remove(oid)
                types[i] = CANCEL
            elif q == 3:
                new_lots = 1 + int(rr() * (olots - 1))
                stream[i] = (Cmd.AMEND, 0, 0, 0, 0, 0, 0, 0, ts, acct, 0, new_lots * LOT_SIZE, oid, 0)
                rec[3] = new_lots
                types[i] = REDUCE
            else:
                last = book.last
                if oprice > last:
                    move = math.floor((last - oprice) // TICK_SIZE * CENTRAL_MOVE_ALPHA)
                elif oprice < last:
                    move = math.ceil((last - oprice) // TICK_SIZE * CENTRAL_MOVE_ALPHA)
                else:
                    move = int(rr() * 2) * 2 - 1
                price = max(TICK_SIZE, oprice + move * TICK_SIZE)
                crosses = _reaches(book, oside, price)
                stream[i] = (Cmd.AMEND, 0, 0, 0, 0, 0, 0, 0, ts, acct, price, olots * LOT_SIZE, oid, 0)
                rec[2] = price
                types[i] = MOVE
        ts += 1000
        i += 1
        if crosses or i - chunk_start >= MAX_CHUNK or i == n:
            apply(driver.process(stream[chunk_start:i]))
            chunks += 1
            chunk_start = i
            for b in touched:
                b.pending[0] = b.pending[1] = 0
            touched.clear()
            if crosses:  # the only command that may have traded: learn its book's best prices again
                book.bid_hi = driver.best_bid(book.mid)
                book.ask_lo = driver.best_ask(book.mid) or (1 << 62)
        if progress is not None and i >= next_report:
            progress(i, n)
            next_report += report_every

    return Workload(
        config=cfg,
        markets=markets,
        setup=setup,
        prefill=prefill,
        stream=stream,
        types=types,
        engine_kwargs=engine_kwargs,
        gen_seconds=time.perf_counter() - t0,
        gen_chunks=chunks,
        gen_rejects=stats["rejects"],
        driver=f"{engine_cls.__module__}.{engine_cls.__name__}",
    )
