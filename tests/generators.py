"""Seeded adversarial command streams for differential and invariant tests.

``StreamGenerator`` writes numpy ``COMMAND_DTYPE`` arrays that exercise the whole engine contract
(docs/ARCHITECTURE.md): several assets and markets (assorted tick / lot / min size, fees including
negative maker rebates and the extreme -1000/+1000 pair, price bands, a non-tradable outcome market,
a market whose quote asset holds amounts near ``MAX_MONEY``), deposits and withdrawals (some over
the free balance, some overflowing), a handful of accounts (so self-trades are common), GTC / IOC /
FOK / market orders, post-only, every STP mode, expiries that fire as the clock advances, cancels
and amends by order id and by client id aimed at live, dead and bogus orders, amends down / up /
across the book, mass cancels, duplicate client ids, and about 5 % garbage.

The generator learns from the engine's events (``observe``) which orders are open, their sizes and
prices, the last trade price of each market and each account's free balance, so cancels and amends
mostly hit real orders and prices follow the market.  Typical use::

    gen = StreamGenerator(seed=1)
    for commands, events in run_stream(engine, gen, n_commands=100_000, chunk=500):
        ...

Everything is deterministic for a seed and the engine's events.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from engine.codes import ResultCode
from engine.records import (
    COMMAND_DTYPE,
    EVENT_DTYPE,
    Cmd,
    CmdFlag,
    Ev,
    EvFlag,
    RATE_SCALE,
    MarketKind,
    OrdType,
    Tif,
    pack_breaker_windows,
    pack_funding_limits,
    pack_listing,
    pack_market_assets,
    pack_market_params,
    pack_symbol,
    pack_tier_leverage,
    pack_venue_fees,
    unpack_market_assets,
    unpack_market_params,
)

MAX_MONEY = 1 << 62
I64_MAX = (1 << 63) - 1
I64_MIN = -(1 << 63)
U32_MAX = (1 << 32) - 1

# Engine sizes the streams are written for (tests construct engines with these).
ENGINE_KWARGS = dict(max_orders=1 << 14, max_accounts=64, max_markets=16, max_assets=8)
# Small tables, to reach ORDER_CAPACITY / ACCOUNT_CAPACITY.
SMALL_ENGINE_KWARGS = dict(max_orders=40, max_accounts=7, max_markets=16, max_assets=8)

FIELDS = COMMAND_DTYPE.names  # kind side tif ord_type stp flags venue market ts account price qty id aux
_F = {name: i for i, name in enumerate(FIELDS)}


def _row(kind: int, ts: int, **kw) -> tuple:
    row = [0] * len(FIELDS)
    row[_F["kind"]] = kind
    row[_F["ts"]] = ts
    for name, value in kw.items():
        row[_F[name]] = value
    return tuple(row)


@dataclass
class MarketSpec:
    market_id: int
    base: int
    quote: int
    tick: int
    lot: int
    min_size: int
    maker_bps: int
    taker_bps: int
    band_bps: int
    mid_ticks: int  # price scale, in ticks
    spread_ticks: int  # how far from the mid orders usually go
    max_lots: int
    kind: int = MarketKind.SPOT

    @property
    def min_lots(self) -> int:
        return self.min_size // self.lot


@dataclass
class OpenOrder:
    account: int
    market: int
    side: int
    price: int
    client_id: int
    remaining: int


@dataclass
class StreamGenerator:
    """Adversarial command streams; see the module docstring."""

    seed: int
    n_accounts: int = 6
    garbage: float = 0.05
    max_open: int = 400
    depth: int = 1  # spreads prices over this many times more levels (deep books)
    limits: dict = field(default_factory=lambda: dict(ENGINE_KWARGS))

    def __post_init__(self) -> None:
        self.max_open = min(self.max_open, self.limits["max_orders"] * 3 // 4)
        self.rng = random.Random(self.seed)
        self.ts = 1_000_000_000
        self.n_commands = 0  # commands handed out so far (= cmd_seq of the last one)
        self.n_observed = 0  # commands whose events were observed
        self.open: dict[int, OpenOrder] = {}
        self.by_client: dict[tuple[int, int], int] = {}
        self.closed: list[int] = []
        self.closed_clients: list[tuple[int, int]] = []
        self.last_order_id = 0
        self.free: dict[tuple[int, int], int] = {}
        self.next_client: dict[int, int] = {}
        self.pending: list[tuple] = []
        self._build_universe()

    # ---------------------------------------------------------------- universe ----------------

    def _build_universe(self) -> None:
        r = self.rng
        self.assets = {1: ("USD", 6), 2: ("BTC", 8), 3: ("ETH", 18), 4: ("SOL", 0), 5: ("BIG", 0)}
        big_acct = r.choice([I64_MAX, 1 << 40, 123456789012])
        self.accounts = [1, 2, 3, 7, 1000, big_acct][: max(2, self.n_accounts)]
        while len(self.accounts) < self.n_accounts:
            self.accounts.append(10_000 + len(self.accounts))
        for a in self.accounts:
            self.next_client[a] = 1
        self.newcomers = [5000 + i for i in range(6)]  # accounts that appear mid-stream
        self.joined: set[int] = set()

        def fees() -> tuple[int, int]:
            maker = r.choice([0, 0, -2, -5, 1, 10, -100, -1000, 3])
            lo = max(maker, -maker)
            taker = r.choice([lo, min(1000, lo + r.randint(0, 40)), 1000 if maker == -1000 else lo + 7])
            return maker, min(taker, 1000)

        def spec(mid, base, quote, tick, lot, min_lots, band, mid_ticks, spread, max_lots, kind=MarketKind.SPOT):
            maker, taker = fees()
            return MarketSpec(mid, base, quote, tick, lot, lot * min_lots, maker, taker, band, mid_ticks, spread, max_lots, kind)

        self.markets: dict[int, MarketSpec] = {}
        specs = [
            spec(1, 2, 1, r.choice([100, 25, 1]), r.choice([1000, 10, 1]), r.randint(1, 3), 0, r.randint(300, 3000), 12, 20),
            spec(2, 3, 1, r.choice([1, 5]), 1, 1, r.choice([0, 300]), r.randint(500, 5000), 15, 30),
            spec(3, 4, 2, r.choice([5, 10]), r.choice([10, 100]), r.randint(1, 2), r.choice([200, 1000]), r.randint(800, 4000), 10, 15),
            spec(4, 3, 2, 1, 1, 1, r.choice([0, 50]), r.randint(2000, 20000), 25, 10),
            # quote asset with amounts near MAX_MONEY: fees and holds need 128-bit intermediates
            spec(7, 4, 5, 1 << 20, 1, 1, 0, 1 << 32, 40, 40),
            # base asset with huge lots
            spec(8, 5, 1, 1, 1 << 30, 1, 0, 50, 5, 1 << 16),
        ]
        specs[4].maker_bps, specs[4].taker_bps = r.choice([(-1000, 1000), (0, 1000), (-999, 1000)])
        for s in specs:
            self.markets[s.market_id] = s
        # listed later in the stream
        self.late_market = spec(11, 2, 3, 1, 1, 1, r.choice([0, 100]), r.randint(100, 1000), 8, 10)
        self.untradable = spec(9, 2, 1, 1, 1, 1, 0, 100, 5, 5, kind=MarketKind.OUTCOME)
        if self.depth > 1:
            for s in specs + [self.late_market]:
                s.spread_ticks *= self.depth
                s.mid_ticks = max(s.mid_ticks, 4 * s.spread_ticks)
        self.mid = {m: s.mid_ticks for m, s in self.markets.items()}
        self.tradable = list(self.markets)

    def _deposit_amount(self, asset: int) -> int:
        r = self.rng
        if asset == 5:
            return r.choice([1 << 57, 1 << 58, r.randint(1, 1 << 56)])
        if asset == 1:
            return r.choice([10**9, 10**10, 10**11, r.randint(1, 10**8)])
        if asset == 2:
            return r.choice([10**7, 10**8, r.randint(1, 10**6)])
        return r.choice([10**6, 10**8, r.randint(1, 10**5)])

    def _setup(self) -> list[tuple]:
        r = self.rng
        ts = self.ts
        rows = []
        lim = self.limits
        for aid, (sym, dec) in self.assets.items():
            lo, hi = pack_symbol(sym)
            rows.append(_row(Cmd.ADD_ASSET, ts, market=aid, price=dec, id=lo, aux=hi))
        lo, hi = pack_symbol("BAD")
        rows += [
            _row(Cmd.ADD_ASSET, ts, market=1, price=2, id=lo, aux=hi),  # ASSET_EXISTS
            _row(Cmd.ADD_ASSET, ts, market=0, price=2, id=lo, aux=hi),  # INVALID_ASSET_ID
            _row(Cmd.ADD_ASSET, ts, market=lim["max_assets"] + 1, price=2, id=lo, aux=hi),
            _row(Cmd.ADD_ASSET, ts, market=6, price=19, id=lo, aux=hi),  # INVALID_DECIMALS
            _row(Cmd.ADD_ASSET, ts, market=6, price=-1, id=lo, aux=hi),
        ]

        def add_market(s: MarketSpec, **over) -> tuple:
            kw = dict(
                market=s.market_id,
                side=s.kind,
                account=pack_market_assets(s.base, s.quote),
                price=s.tick,
                qty=s.lot,
                id=s.min_size,
                aux=pack_market_params(s.maker_bps, s.taker_bps, s.band_bps),
            )
            kw.update(over)
            return _row(Cmd.ADD_MARKET, ts, **kw)

        for s in self.markets.values():
            rows.append(add_market(s))
        rows.append(add_market(self.untradable))
        m1 = self.markets[1]
        rows += [
            add_market(m1),  # MARKET_EXISTS
            add_market(m1, market=0),  # INVALID_MARKET_ID
            add_market(m1, market=lim["max_markets"] + 1),
            add_market(m1, market=12, venue=1),  # UNKNOWN_VENUE
            add_market(m1, market=12, side=3),  # INVALID_MARKET_KIND
            add_market(m1, market=12, account=pack_market_assets(2, 6)),  # UNKNOWN_ASSET
            add_market(m1, market=12, account=pack_market_assets(2, 2)),  # SAME_BASE_AND_QUOTE
            add_market(m1, market=12, price=0),  # INVALID_TICK_SIZE
            add_market(m1, market=12, price=-5),
            add_market(m1, market=12, qty=0),  # INVALID_LOT_SIZE
            add_market(m1, market=12, qty=10, id=15),  # INVALID_MIN_SIZE
            add_market(m1, market=12, id=0),
            add_market(m1, market=12, aux=pack_market_params(5, 4, 0)),  # INVALID_FEES
            add_market(m1, market=12, aux=pack_market_params(-6, 5, 0)),
            add_market(m1, market=12, aux=pack_market_params(0, 1001, 0)),
            add_market(m1, market=12, aux=pack_market_params(-1001, 1001, 0)),
            add_market(m1, market=12, aux=pack_market_params(0, 5, 10001)),  # INVALID_PRICE_BAND
        ]
        for a in self.accounts:
            poor = r.random() < 0.2
            for asset in (1, 2, 3, 4, 5):
                amount = self._deposit_amount(asset)
                if poor:
                    amount = max(1, amount // 1000)
                if asset == 5:
                    amount = min(amount, MAX_MONEY // (2 * len(self.accounts)))
                rows.append(_row(Cmd.DEPOSIT, ts, account=a, market=asset, qty=amount))
        return rows

    # ---------------------------------------------------------------- helpers ----------------

    def _tick(self) -> int:
        r = self.rng
        x = r.random()
        if x < 0.01:
            self.ts += r.randint(50_000, 500_000)  # a jump: many expiries fire at once
        elif x < 0.02:
            return max(0, self.ts - r.randint(1, 10_000))  # out of order: the engine keeps max(now, ts)
        elif x < 0.3:
            pass  # same timestamp
        else:
            self.ts += r.randint(1, 2_000)
        return self.ts

    def _client_id(self, account: int) -> int:
        r = self.rng
        x = r.random()
        if x < 0.04:
            live = [c for (a, c) in self._sample_clients(account)]
            if live:
                return r.choice(live)  # DUPLICATE_CLIENT_ID
        elif x < 0.07 and self.closed_clients:
            a, c = r.choice(self.closed_clients[-200:])
            if a == account:
                return c  # reuse of a closed order's client id is fine
        cid = self.next_client.get(account, 1)  # a venue's insurance fund, given a position by a takeover, may trade
        self.next_client[account] = cid + r.choice([1, 1, 1, 2, 1000])
        return cid

    def _sample_clients(self, account: int, k: int = 8) -> list[tuple[int, int]]:
        keys = [key for key in list(self.by_client)[:200] if key[0] == account]
        return keys[:k]

    def _price(self, s: MarketSpec, side: int, aggressive: float = 0.4) -> int:
        r = self.rng
        mid = self.mid[s.market_id]
        off = r.randint(0, s.spread_ticks)
        if r.random() < aggressive:
            off = -off  # crosses the mid: likely to trade
        ticks = mid - off if side == 0 else mid + off
        if r.random() < 0.03:
            ticks = mid + r.randint(-5 * s.spread_ticks, 5 * s.spread_ticks)  # may be outside the band
        return max(1, ticks) * s.tick

    def _qty(self, s: MarketSpec) -> int:
        r = self.rng
        x = r.random()
        if x < 0.2:
            lots = s.min_lots
        elif x < 0.25:
            lots = max(1, s.min_lots - 1)  # maybe QTY_BELOW_MIN
        else:
            lots = r.randint(s.min_lots, max(s.min_lots, s.max_lots))
        return lots * s.lot

    def _pick_open(self) -> tuple[int, OpenOrder] | None:
        if not self.open:
            return None
        # older orders have survived matching, so are likelier to be open still
        ids = list(self.open.keys())
        r = self.rng
        i = r.randrange(len(ids))
        if r.random() < 0.2:
            i = len(ids) - 1 - min(len(ids) - 1, int(r.expovariate(1 / 10)))
        oid = ids[i]
        return oid, self.open[oid]

    def _bogus_order_id(self) -> int:
        r = self.rng
        return r.choice([0, -1, -(1 << 40), self.last_order_id + r.randint(1, 1000), I64_MAX, I64_MIN])

    # ---------------------------------------------------------------- commands ---------------

    def _place(self, ts: int, rest: bool = False) -> tuple:
        r = self.rng
        account = r.choice(self.accounts)
        s = self.markets[r.choice(self.tradable)]
        side = r.randint(0, 1)
        x = r.random()
        ord_type = OrdType.LIMIT
        if x < 0.55 or rest:
            tif = Tif.GTC
        elif x < 0.75:
            tif = Tif.IOC
        elif x < 0.9:
            tif = Tif.FOK
        else:
            tif = r.choice([Tif.IOC, Tif.FOK])
            ord_type = OrdType.MARKET
        if ord_type == OrdType.MARKET:
            mid = self.mid[s.market_id]
            band = s.band_bps * mid // 10000 if s.band_bps else 4 * s.spread_ticks
            ticks = mid + band if side == 0 else mid - band
            price = max(1, ticks) * s.tick
        else:
            price = self._price(s, side, aggressive=0.6 if tif != Tif.GTC else 0.15)
        qty = self._qty(s)
        stp = r.randint(0, 3)
        flags = 0
        if tif == Tif.GTC and ord_type == OrdType.LIMIT and r.random() < 0.12:
            flags = CmdFlag.POST_ONLY
        expire_at = 0
        if tif == Tif.GTC and r.random() < 0.2:
            y = r.random()
            if y < 0.9:
                expire_at = self.ts + r.randint(1, 60_000)
            elif y < 0.95:
                expire_at = self.ts  # EXPIRED_ON_ARRIVAL (unless the clock is behind)
            else:
                expire_at = max(1, self.ts - r.randint(1, 1000))
        return _row(
            Cmd.PLACE, ts, side=side, tif=tif, ord_type=ord_type, stp=stp, flags=flags,
            market=s.market_id, account=account, price=price, qty=qty,
            id=self._client_id(account), aux=expire_at,
        )

    def _target(self) -> tuple[int, int, int, OpenOrder | None]:
        """(account, id, flags, order) for a cancel or amend."""
        r = self.rng
        x = r.random()
        by_client = r.random() < 0.3
        flags = int(CmdFlag.BY_CLIENT_ID) if by_client else 0
        picked = self._pick_open() if x < 0.78 else None
        if picked is not None:
            oid, o = picked
            account = o.account
            if r.random() < 0.06:
                account = r.choice(self.accounts)  # maybe another account's order: UNKNOWN_ORDER
            return account, (o.client_id if by_client else oid), flags, o
        account = r.choice(self.accounts)
        if x < 0.92 and self.closed:
            if by_client and self.closed_clients:
                a, c = r.choice(self.closed_clients[-300:])
                return a, c, flags, None
            return account, r.choice(self.closed[-300:]), flags, None  # ORDER_CLOSED (or UNKNOWN_ORDER)
        return account, self._bogus_order_id(), flags, None

    def _cancel(self, ts: int) -> tuple:
        account, ident, flags, _ = self._target()
        return _row(Cmd.CANCEL, ts, account=account, id=ident, flags=flags)

    def _amend(self, ts: int) -> tuple:
        r = self.rng
        account, ident, flags, o = self._target()
        if o is None:
            s = self.markets[r.choice(self.tradable)]
            return _row(Cmd.AMEND, ts, account=account, id=ident, flags=flags, price=0, qty=self._qty(s))
        s = self.markets[o.market]
        lots = max(1, o.remaining // s.lot)
        x = r.random()
        price = 0
        if x < 0.3:
            qty = max(1, lots - r.randint(1, max(1, lots))) * s.lot  # down (may stay the same at 1 lot)
        elif x < 0.5:
            qty = (lots + r.randint(1, 5)) * s.lot  # up: loses priority, needs more hold
        elif x < 0.6:
            qty = o.remaining
            price = o.price  # same price, same size: keeps its place
        elif x < 0.85:
            qty = r.choice([o.remaining, lots * s.lot, (lots + 1) * s.lot])
            price = max(s.tick, o.price + r.randint(-3, 3) * s.tick)  # price move
        else:
            qty = o.remaining
            # across the book: matches as a taker
            mid = self.mid[o.market]
            ticks = mid + r.randint(0, s.spread_ticks) if o.side == 0 else mid - r.randint(0, s.spread_ticks)
            price = max(1, ticks) * s.tick
        return _row(Cmd.AMEND, ts, account=account, id=ident, flags=flags, price=price, qty=qty)

    def _mass_cancel(self, ts: int) -> tuple:
        r = self.rng
        account = r.choice(self.accounts)
        if r.random() < 0.3:
            return _row(Cmd.MASS_CANCEL, ts, account=account, flags=CmdFlag.ALL_MARKETS,
                        market=r.choice([0, 1, 9999]))
        return _row(Cmd.MASS_CANCEL, ts, account=account, market=r.choice(self.tradable + [9]))

    def _deposit(self, ts: int) -> tuple:
        r = self.rng
        account = r.choice(self.accounts)
        if r.random() < 0.03 and self.newcomers:
            account = self.newcomers.pop()  # a new account (ACCOUNT_CAPACITY with small tables)
            self.accounts.append(account)
            self.joined.add(account)
            self.next_client[account] = 1
        asset = r.choice([1, 1, 2, 3, 4, 5])
        amount = self._deposit_amount(asset)
        if asset == 5 and r.random() < 0.5:
            amount = r.choice([1 << 61, MAX_MONEY, r.randint(1, 1 << 59)])  # may be BALANCE_OVERFLOW
        return _row(Cmd.DEPOSIT, ts, account=account, market=asset, qty=amount)

    def _withdraw(self, ts: int) -> tuple:
        r = self.rng
        account = r.choice(self.accounts)
        asset = r.choice([1, 2, 3, 4, 5])
        free = self.free.get((account, asset), 0)
        x = r.random()
        if x < 0.6 and free > 0:
            amount = r.randint(1, free)
        elif x < 0.7 and free > 0:
            amount = free  # everything
        else:
            amount = free + r.randint(1, 1000)  # over free: INSUFFICIENT_FREE_BALANCE
        return _row(Cmd.WITHDRAW, ts, account=account, market=asset, qty=amount)

    def _admin(self, ts: int) -> tuple:
        s = self.late_market
        if s.market_id not in self.markets and self.rng.random() < 0.5:
            self.markets[s.market_id] = s
            self.mid[s.market_id] = s.mid_ticks
            self.tradable.append(s.market_id)
        else:
            s = self.rng.choice(list(self.markets.values()))  # MARKET_EXISTS
        return _row(
            Cmd.ADD_MARKET, ts, market=s.market_id, side=s.kind, account=pack_market_assets(s.base, s.quote),
            price=s.tick, qty=s.lot, id=s.min_size, aux=pack_market_params(s.maker_bps, s.taker_bps, s.band_bps),
        )

    def _garbage(self, ts: int) -> tuple:
        """A malformed or hopeless command: mostly one bad field in an otherwise good command."""
        r = self.rng
        x = r.random()
        if x < 0.08:  # unknown command kind
            return _row(r.choice([0, 5, 15, 18, 31, 34, 255, 999, 65535]), ts, account=r.choice(self.accounts),
                        market=1, price=100, qty=1, id=1)
        if x < 0.13:  # random record
            return (
                r.randint(0, 40), r.randint(0, 255), r.randint(0, 255), r.randint(0, 255), r.randint(0, 255),
                r.randint(0, 65535), r.choice([0, 0, 1, U32_MAX]), r.choice([0, 1, 2, 9, U32_MAX]), ts,
                r.choice(self.accounts + [0, -1]), r.randint(I64_MIN, I64_MAX), r.randint(I64_MIN, I64_MAX),
                r.randint(I64_MIN, I64_MAX), r.randint(I64_MIN, I64_MAX),
            )
        if x < 0.25:
            row = list(self._cancel(ts) if r.random() < 0.5 else self._amend(ts))
            y = r.random()
            if y < 0.25:
                row[_F["flags"]] = r.choice([1, 4, 8, 3, 0xFFFF])
            elif y < 0.45:
                row[_F["account"]] = r.choice([0, -1, I64_MIN, 424242])
            elif row[_F["kind"]] == Cmd.AMEND:
                if y < 0.7:
                    row[_F["qty"]] = r.choice([0, -1, 1 << 62, I64_MAX, row[_F["qty"]] + 1])
                else:
                    row[_F["price"]] = r.choice([-1, 1 << 62, I64_MAX, row[_F["price"]] + 1, I64_MIN])
            return tuple(row)
        if x < 0.37:  # balance commands
            kind = r.choice([Cmd.DEPOSIT, Cmd.WITHDRAW])
            return _row(kind, ts, account=r.choice(self.accounts + [0, -5, 777777]),
                        market=r.choice([0, 1, 2, 5, 6, self.limits["max_assets"] + 1, U32_MAX]),
                        qty=r.choice([0, -1, I64_MIN, 1, MAX_MONEY, I64_MAX, 10**6]))
        if x < 0.42:
            return _row(Cmd.MASS_CANCEL, ts, account=r.choice([0, -1, 888888, self.accounts[0]]),
                        market=r.choice([0, 9999, 12]), flags=r.choice([0, 1, 2, 8]))
        if x < 0.46:
            lo, hi = pack_symbol("ZZZ")
            return _row(Cmd.ADD_ASSET, ts, market=r.choice([1, 0, 6, 99]), price=r.choice([-1, 0, 19, 255]),
                        id=lo, aux=hi)
        row = list(self._place(ts))
        s = self.markets.get(row[_F["market"]])
        tick = s.tick if s else 1
        lot = s.lot if s else 1
        field_name, value = r.choice(
            [
                ("side", r.choice([2, 3, 255])),
                ("tif", r.choice([3, 4, 255])),
                ("ord_type", r.choice([2, 255])),
                ("stp", r.choice([4, 5, 255])),
                ("flags", r.choice([2, 4, 8, 0x8000, 0xFFFF])),
                ("flags", 1),  # post-only, maybe on IOC / market: INVALID_FLAGS
                ("tif", Tif.GTC),  # GTC market order if ord_type is market
                ("ord_type", OrdType.MARKET),
                ("market", r.choice([0, 5, 9, 12, 9999, U32_MAX])),  # 9 is an outcome market: not tradable yet
                ("venue", r.choice([1, 7, U32_MAX])),
                ("account", r.choice([0, -1, I64_MIN, 999999])),
                ("id", r.choice([0, -1, I64_MIN])),
                ("price", r.choice([0, -tick, I64_MIN, row[_F["price"]] + 1 if tick > 1 else 0])),
                ("price", r.choice([MAX_MONEY, MAX_MONEY - MAX_MONEY % tick, I64_MAX, (1 << 61) // tick * tick])),
                ("qty", r.choice([0, -lot, I64_MIN, row[_F["qty"]] + 1 if lot > 1 else 0])),
                ("qty", r.choice([MAX_MONEY, MAX_MONEY + lot - MAX_MONEY % lot, I64_MAX, (1 << 61) // lot * lot])),
                ("aux", r.choice([-1, I64_MIN, self.ts + 5])),  # bad expiry (or expiry on IOC/FOK)
                ("aux", r.choice([1, self.ts])),  # EXPIRED_ON_ARRIVAL
            ]
        )
        row[_F[field_name]] = value
        return tuple(row)

    def _interleave(self, chunk: np.ndarray, extra) -> np.ndarray:
        """``chunk`` with the rows ``extra(ts)`` returns after each of its rows (a subclass's own commands
        between the stream's, at the stream's times), counted in ``n_commands``."""
        out = []
        for row in (tuple(x) for x in chunk.tolist()):
            out.append(row)
            out.extend(extra(row[_F["ts"]]))
        self.n_commands += len(out) - len(chunk)
        return np.array(out, dtype=COMMAND_DTYPE)

    # ---------------------------------------------------------------- public -----------------

    def next_chunk(self, n: int) -> np.ndarray:
        """The next ``n`` commands (the first chunk also starts with the listings and deposits)."""
        r = self.rng
        rows: list[tuple] = []
        if self.n_commands == 0:
            rows.extend(self._setup())
        crowded = len(self.open) > self.max_open
        thin = len(self.open) < self.max_open // 4
        while len(rows) < n or (self.n_commands == 0 and len(rows) < n + 5):
            ts = self._tick()
            x = r.random()
            if x < self.garbage:
                rows.append(self._garbage(ts))
                continue
            x = r.random()
            if crowded:
                x = x * 0.6 + 0.4  # fewer placements while the books are crowded
            elif thin and r.random() < 0.3:
                x = 0.0  # more placements while they are thin
            if x < 0.55:
                rows.append(self._place(ts, rest=thin))
            elif x < 0.69:
                rows.append(self._cancel(ts))
            elif x < 0.83:
                rows.append(self._amend(ts))
            elif x < 0.837:
                rows.append(self._mass_cancel(ts))
            elif x < 0.842:  # halts and resumes, some of them redundant (MARKET_STATUS_UNCHANGED)
                kind = Cmd.HALT if r.random() < 0.15 else Cmd.RESUME
                rows.append(_row(kind, ts, market=r.choice(self.tradable + [9999]), account=r.randint(0, 3)))
            elif x < 0.92:
                rows.append(self._deposit(ts))
            elif x < 0.995:
                rows.append(self._withdraw(ts))
            else:
                rows.append(self._admin(ts))
            if r.random() < 0.01:  # the mid drifts
                m = r.choice(self.tradable)
                self.mid[m] = max(self.markets[m].spread_ticks + 2, self.mid[m] + r.randint(-3, 3))
        self.n_commands += len(rows)
        return np.array(rows, dtype=COMMAND_DTYPE)

    def observe(self, commands: np.ndarray, events: np.ndarray) -> None:
        """Learn open orders, last prices and free balances from the events of ``commands``."""
        first = self.n_observed + 1
        self.n_observed += len(commands)
        kinds = events["kind"]
        wanted = (kinds == Ev.ACCEPTED) | (kinds == Ev.FILL) | (kinds == Ev.CANCELLED) | (kinds == Ev.AMENDED) | (
            kinds == Ev.BALANCE
        ) | ((kinds == Ev.REJECTED) & (events["code"] == ResultCode.ACCOUNT_CAPACITY))
        sub = events[wanted]
        cmd_kinds = commands["kind"].tolist()
        cols = [sub[name].tolist() for name in
                ("kind", "flags", "market", "cmd_seq", "order_id", "account", "client_id", "price", "qty",
                 "remaining", "maker_order")]
        open_ = self.open
        for kind, flags, market, cmd_seq, oid, account, client_id, price, qty, remaining, maker in zip(*cols):
            if kind == Ev.ACCEPTED:
                i = cmd_seq - first
                if 0 <= i < len(cmd_kinds) and cmd_kinds[i] == Cmd.PLACE and oid > 0:
                    side = int(commands["side"][i])
                    open_[oid] = OpenOrder(account, market, side, price, client_id, remaining)
                    self.by_client[(account, client_id)] = oid
                    self.last_order_id = max(self.last_order_id, oid)
            elif kind == Ev.FILL:
                if market in self.mid:
                    self.mid[market] = max(self.markets[market].spread_ticks + 2, price // self.markets[market].tick)
                o = open_.get(maker)
                if o is not None:
                    o.remaining -= qty
                    if flags & EvFlag.MAKER_DONE or o.remaining <= 0:
                        self._close(maker)
                o = open_.get(oid)
                if o is not None:
                    o.remaining = remaining
                    if remaining <= 0:
                        self._close(oid)
            elif kind == Ev.CANCELLED or kind == Ev.AMENDED:
                o = open_.get(oid)
                if o is not None:
                    o.remaining = remaining
                    if kind == Ev.AMENDED:
                        o.price = price
                    if remaining <= 0:
                        self._close(oid)
            elif kind == Ev.BALANCE:
                self.free[(account, market)] = remaining
            elif kind == Ev.REJECTED:
                if flags == 0 and account in self.joined and account in self.accounts:
                    self.accounts.remove(account)  # its first deposit met a full account table

    def _close(self, oid: int) -> None:
        o = self.open.pop(oid)
        key = (o.account, o.client_id)
        if self.by_client.get(key) == oid:
            del self.by_client[key]
        self.closed.append(oid)
        self.closed_clients.append(key)
        if len(self.closed) > 2000:
            del self.closed[:1000]
            del self.closed_clients[:1000]


def run_stream(engine, gen: StreamGenerator, n_commands: int, chunk: int = 200) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Generate about ``n_commands`` commands in chunks, process each through ``engine`` and feed its
    events back into ``gen``; yields ``(commands, events)`` per chunk."""
    done = 0
    while done < n_commands:
        cmds = gen.next_chunk(min(chunk, n_commands - done))
        events = engine.process(cmds)
        gen.observe(cmds, events)
        done += len(cmds)
        yield cmds, events


def check_batch_book_levels(engine, events: np.ndarray) -> None:
    """A batch's BookLevel events, as ``process`` just returned them with ``events``: after all its other
    events, one per level it changed, each with the level's aggregate in ``engine``'s book now (0 and 0 for
    an emptied level)."""
    is_level = events["kind"] == Ev.BOOK_LEVEL
    if not is_level.any():
        return
    levels = events[is_level]
    assert is_level[int(np.argmax(is_level)):].all(), "BookLevel events end their batch"
    keys = list(zip(levels["market"].tolist(), levels["side"].tolist(), levels["price"].tolist()))
    assert len(set(keys)) == len(keys), "one BookLevel a level a batch"
    books = {}
    for (market, side, price), qty, count in zip(keys, levels["qty"].tolist(), levels["remaining"].tolist()):
        if market not in books:
            bids, asks = engine.l2(market, depth=1 << 30)
            books[market] = ({p: (q, c) for p, q, c in bids}, {p: (q, c) for p, q, c in asks})
        assert books[market][side].get(price, (0, 0)) == (qty, count), (market, side, price)


def same_but_book_levels(a: np.ndarray, b: np.ndarray) -> bool:
    """The same events in two batchings of one stream: all but the BookLevels, equal but for their seqs
    (the BookLevels before them moved)."""
    a, b = a[a["kind"] != Ev.BOOK_LEVEL].copy(), b[b["kind"] != Ev.BOOK_LEVEL].copy()
    a["seq"] = b["seq"] = 0
    return len(a) == len(b) and np.array_equal(a, b)


def generate_commands(engine, seed: int, n_commands: int, chunk: int = 200, **opts) -> np.ndarray:
    """A whole stream as one array (processed through ``engine`` on the way)."""
    gen = StreamGenerator(seed, **opts)
    return np.concatenate([c for c, _ in run_stream(engine, gen, n_commands, chunk)])


class VenueStreamGenerator(StreamGenerator):
    """``StreamGenerator``'s streams spread over many venues with mixed policies (issue 7).

    After the listings, VenueParams and launches of ``n_venues`` venues: permissionless and
    allow-list ones, some restricted to their own pool, random accepted-pool masks, random offers
    of the markets, allow-lists, region tags and blocked regions.  Orders name a random venue
    (mostly one that offers the market and lets the account in).  Between the base stream's
    commands come venue commands: status changes (halts, resumes, winding down, retire attempts),
    policy and access changes, offers and withdrawals, allow / deny, add stake, unbond (released
    as the clock passes the short unbond period), slashes, region tags, and bad ones (wrong
    operator, unknown venue, out-of-range fields).

    Oracles (issue 8): about half the venues (and the admin for venue 0) configure an oracle on
    some of their markets; OraclePrice updates for a random oracle come between the commands,
    mostly good, some bad (wrong feed or account, off tick, not positive, an old source time,
    unknown or unconfigured venue and market), and some OracleConfig changes, good and bad. The
    timeout is a few hundred commands of engine clock, so oracles go stale (the clock's jumps,
    gaps between updates) and fresh again, and places and amends meet stale oracles."""

    FEED_ACCOUNT = 31_000
    ORACLE_TIMEOUT = 200_000  # ns of engine clock

    ADMIN = 424_242
    PROTOCOL = 777
    STAKE_ASSET = 4
    MIN_STAKE = 500
    UNBOND_PERIOD = 40_000  # ns: a few dozen commands of engine clock

    def __init__(self, seed: int, n_venues: int = 12, venue_share: float = 0.08, oracle_share: float = 0.05,
                 venue_mass_cancels: bool = False, **kw):
        self.n_venues = n_venues
        self.venue_mass_cancels = venue_mass_cancels  # half the MassCancels filter one venue (CmdFlag.BY_VENUE)
        self.venue_share = venue_share
        self.oracle_share = oracle_share
        super().__init__(seed, **kw)

    def _build_universe(self) -> None:
        super()._build_universe()
        self.venue_ids = list(range(1, self.n_venues + 1))
        self.operator = {v: self.accounts[v % len(self.accounts)] for v in self.venue_ids}
        # learned from Venue events (observe): what each venue offers and whether it is live
        self.offers: dict[int, set[int]] = {0: set(self.markets) | {self.untradable.market_id}}
        self.live: set[int] = {0}
        self.oracle_feed: dict[tuple[int, int], int] = {}  # (venue, market) -> feed id, as configured
        self.source_ts: dict[tuple[int, int], int] = {}  # the last source time sent per oracle

    def _setup(self) -> list[tuple]:
        r = self.rng
        ts = self.ts
        rows = super()._setup()
        rows.append(_row(Cmd.VENUE_PARAMS, ts, account=self.ADMIN, market=self.STAKE_ASSET, qty=self.MIN_STAKE,
                         price=self.UNBOND_PERIOD, id=self.PROTOCOL, aux=self.ADMIN))
        for a in self.accounts:  # enough stake asset for every operator
            rows.append(_row(Cmd.DEPOSIT, ts, account=a, market=self.STAKE_ASSET, qty=10**7))
        for v in self.venue_ids:
            access = int(r.random() < 0.4)
            rows.append(_row(Cmd.LAUNCH_VENUE, ts, account=self.operator[v], venue=v, side=access,
                             qty=self.MIN_STAKE + r.randint(0, 5000), id=9000 + v))
            for m in list(self.markets) + [self.untradable.market_id]:
                if r.random() < 0.7:
                    rows.append(_row(Cmd.OFFER_MARKET, ts, account=self.operator[v], venue=v, market=m))
            if access:
                for a in r.sample(self.accounts, r.randint(1, len(self.accounts))):
                    rows.append(_row(Cmd.ALLOW, ts, account=self.operator[v], venue=v, id=a))
            if r.random() < 0.5:
                rows.append(self._policy(ts, v))
            if r.random() < 0.8:
                rows.append(self._fees(ts, v, valid=True))
            if r.random() < 0.4:
                rows.append(self._fee_tier(ts, v, 1))
            if r.random() < 0.5:
                offered = [row[_F["market"]] for row in rows if row[_F["kind"]] == Cmd.OFFER_MARKET
                           and row[_F["venue"]] == v]
                for m in r.sample(offered, min(len(offered), 2)):
                    rows.append(self._oracle_config(ts, self.operator[v], v, m))
        for m in r.sample(self.tradable, 2):  # venue 0 lists every market: its oracles are the admin's
            rows.append(self._oracle_config(ts, self.ADMIN, 0, m))
        for a in self.accounts:
            if r.random() < 0.4:
                rows.append(_row(Cmd.SET_REGION, ts, account=self.ADMIN, id=a, side=r.randint(0, 3)))
        return rows

    def _policy(self, ts: int, v: int) -> tuple:
        r = self.rng
        pool = r.choice([0, 0, 1, 1, 2, 3])
        accepts = r.choice([-1, 1 << pool, (1 << pool) | 1, (1 << pool) | 0b110, r.getrandbits(4) | (1 << pool)])
        return _row(Cmd.VENUE_POLICY, ts, account=self.operator[v], venue=v, side=pool, aux=accepts)

    def _fees(self, ts: int, v: int, valid: bool = False) -> tuple:
        r = self.rng
        maker = r.choice([0, 1, -1, -5, -1000, 3, 20])
        lowest = max(maker, -maker)
        taker = r.choice([lowest, lowest + r.randint(0, 30), 1000] + ([] if valid else [maker - 1]))
        split = r.choice([(0, 0), (5000, 2000), (10000, 0), (3333, 3333), (9000, 2000)])
        return _row(Cmd.VENUE_FEES, ts, account=self.operator[v], venue=v, aux=pack_venue_fees(maker, taker, *split))

    def _fee_tier(self, ts: int, v: int, tier: int) -> tuple:
        r = self.rng
        maker = r.choice([0, -2, -1000, 1])
        taker = max(-maker, r.choice([0, 2, 5]))
        return _row(Cmd.VENUE_FEE_TIER, ts, account=self.operator[v], venue=v, side=tier,
                    market=r.choice([1, 1, 2, 9]), price=r.choice([1, 10**4, 10**6, 10**8, 0]) * tier,
                    qty=r.choice([10**6, 10**5, 0]), aux=pack_venue_fees(maker, taker, 0, 0))

    def _oracle_config(self, ts: int, sender: int, v: int, m: int) -> tuple:
        feed = self.rng.randint(1, 3)
        self.oracle_feed[(v, m)] = feed
        return _row(Cmd.ORACLE_CONFIG, ts, account=sender, venue=v, market=m, id=feed, aux=self.FEED_ACCOUNT,
                    qty=self.ORACLE_TIMEOUT)

    def _oracle_command(self, ts: int) -> tuple:
        """Mostly a good OraclePrice for a configured oracle; else a bad one or a config change."""
        r = self.rng
        if not self.oracle_feed:
            return _row(Cmd.ORACLE_PRICE, ts, account=self.FEED_ACCOUNT, venue=1, market=1, price=1, qty=1, id=1, aux=1)
        v, m = key = r.choice(sorted(self.oracle_feed))
        spec = self.markets.get(m, self.untradable)
        src = self.source_ts.get(key, 0) + r.randint(1, 1000)
        fields = dict(account=self.FEED_ACCOUNT, venue=v, market=m, id=self.oracle_feed[key], qty=r.randint(1, 5),
                      price=spec.tick * max(1, spec.mid_ticks + r.randint(-spec.spread_ticks, spec.spread_ticks)),
                      aux=src)
        x = r.random()
        if x < 0.8:
            self.source_ts[key] = src
        elif x < 0.83:
            fields["id"] += 1
        elif x < 0.86:
            fields["account"] = r.choice(self.accounts)
        elif x < 0.88:
            fields["price"] += 1 if spec.tick > 1 else -fields["price"]
        elif x < 0.9:
            fields["price"] = r.choice([0, -spec.tick, MAX_MONEY + spec.tick])
        elif x < 0.92:
            fields["aux"] = self.source_ts.get(key, 0) - r.randint(0, 3)
        elif x < 0.93:
            fields["qty"] = 0
        elif x < 0.95:
            fields["venue"], fields["market"] = r.choice([(v, 12), (U32_MAX, m), (self.n_venues + 1, m), (0, 4)])
        elif x < 0.97:
            op = self.operator.get(v, self.ADMIN)
            return self._oracle_config(ts, r.choice([op, self.ADMIN]), v, m)
        else:
            return _row(Cmd.ORACLE_CONFIG, ts, account=r.choice([self.ADMIN, self.accounts[0], 0]),
                        venue=r.choice([v, U32_MAX]), market=r.choice([m, 12, 0]),
                        id=r.choice([self.oracle_feed[key], 0, -1]),
                        aux=r.choice([self.FEED_ACCOUNT, 0]), qty=r.choice([self.ORACLE_TIMEOUT, 0, -5]))
        return _row(Cmd.ORACLE_PRICE, ts, **fields)

    def _venue_command(self, ts: int) -> tuple:
        r = self.rng
        v = r.choice(self.venue_ids)
        op = self.operator[v]
        if r.random() < 0.1:  # someone else, or a venue that does not exist
            op = r.choice(self.accounts + [self.ADMIN, 0, -3])
            v = r.choice([v, 0, self.n_venues + 1, U32_MAX])
        x = r.random()
        if x < 0.2:
            status = r.choice([1, 1, 1, 1, 1, 2, 3, 4, 0, 5])
            return _row(Cmd.VENUE_STATUS, ts, account=op, venue=v, side=status)
        if x < 0.3:
            return self._policy(ts, v) if op == self.operator.get(v) else _row(
                Cmd.VENUE_POLICY, ts, account=op, venue=v, side=r.choice([0, 1, 64, 255]), aux=r.getrandbits(63))
        if x < 0.38:
            return _row(Cmd.VENUE_ACCESS, ts, account=op, venue=v, side=r.choice([0, 1, 1, 2]),
                        qty=r.choice([0, 0, 1 << r.randint(0, 3), -1]))
        if x < 0.5:
            kind = r.choice([Cmd.OFFER_MARKET, Cmd.WITHDRAW_MARKET, Cmd.OFFER_MARKET])
            return _row(kind, ts, account=op, venue=v, market=r.choice(self.tradable + [9, 12, 0]))
        if x < 0.65:
            kind = r.choice([Cmd.ALLOW, Cmd.ALLOW, Cmd.DENY])
            return _row(kind, ts, account=op, venue=v, id=r.choice(self.accounts + [0, 31337]))
        if x < 0.73:
            return _row(Cmd.ADD_STAKE, ts, account=op, venue=v, qty=r.choice([1, 100, 10**6, 10**9, 0]))
        if x < 0.85:
            return _row(Cmd.UNBOND, ts, account=op, venue=v, qty=r.choice([1, 100, 1000, 5000, 10**6, 0]))
        if x < 0.86:
            y = r.random()
            if y < 0.2:
                return self._fees(ts, v) if v in self.operator else _row(Cmd.VENUE_FEES, ts, account=op, venue=v)
            if y < 0.4 and v in self.operator:
                return self._fee_tier(ts, v, r.randint(1, 5))
            return _row(Cmd.SWEEP_FEES, ts, account=op, venue=v, market=r.choice([1, 1, 2, 3, 9]))
        if x < 0.9:
            return _row(Cmd.SLASH, ts, account=r.choice([self.ADMIN, self.ADMIN, op]), venue=v,
                        qty=r.choice([1, 50, 400, 10**6]), price=r.choice([0, 30, 10**6, -1]), aux=r.randint(0, 9))
        if x < 0.94:
            return _row(Cmd.SET_REGION, ts, account=r.choice([self.ADMIN, op]), id=r.choice(self.accounts + [31337]),
                        side=r.choice([0, 1, 2, 3, 64]))
        if x < 0.97:
            return _row(Cmd.LAUNCH_VENUE, ts, account=r.choice(self.accounts), venue=r.choice(self.venue_ids + [0, 99]),
                        side=r.choice([0, 1, 2]), qty=r.choice([self.MIN_STAKE - 1, self.MIN_STAKE, 10**9]),
                        id=r.choice([9001, 9999, self.PROTOCOL, 0]))
        return _row(Cmd.VENUE_PARAMS, ts, account=r.choice([self.ADMIN, op]), market=r.choice([self.STAKE_ASSET, 1, 9]),
                    qty=r.choice([self.MIN_STAKE, 0]), price=self.UNBOND_PERIOD, id=self.PROTOCOL, aux=self.ADMIN)

    def next_chunk(self, n: int) -> np.ndarray:
        r = self.rng
        chunk = super().next_chunk(n)
        rows = [tuple(x) for x in chunk.tolist()]
        out = []
        venue_col, kind_col, ts_col = _F["venue"], _F["kind"], _F["ts"]
        for row in rows:
            if row[kind_col] == Cmd.PLACE and row[venue_col] == 0 and r.random() < 0.85:
                market = row[_F["market"]]
                fitting = [v for v in self.live if market in self.offers.get(v, ())]
                row = list(row)
                row[venue_col] = r.choice(fitting) if fitting and r.random() < 0.9 else r.choice(self.venue_ids)
                row = tuple(row)
            elif self.venue_mass_cancels and row[kind_col] == Cmd.MASS_CANCEL and row[ts_col] % 2:  # one venue's orders (sometimes unknown),
                row = list(row)                                             # chosen without drawing from the rng
                row[_F["flags"]] |= CmdFlag.BY_VENUE
                row[venue_col] = row[ts_col] // 2 % (self.n_venues + 2)
                row = tuple(row)
            out.append(row)
            if r.random() < self.venue_share:
                out.append(self._venue_command(row[ts_col]))
            if r.random() < self.oracle_share:
                out.append(self._oracle_command(row[ts_col]))
        self.n_commands += len(out) - len(rows)
        return np.array(out, dtype=COMMAND_DTYPE)

    def observe(self, commands: np.ndarray, events: np.ndarray) -> None:
        super().observe(commands, events)
        for e in events[events["kind"] == Ev.VENUE].tolist():
            kind, side, venue, market = e[4], e[2], e[6], e[5]  # flags, side, venue, market
            if kind == Cmd.LAUNCH_VENUE:
                self.live.add(venue)
                self.offers[venue] = set()
            elif kind == Cmd.VENUE_STATUS:
                (self.live.add if side == 1 else self.live.discard)(venue)
            elif kind == Cmd.OFFER_MARKET:
                self.offers.setdefault(venue, set()).add(market)
            elif kind == Cmd.WITHDRAW_MARKET:
                self.offers.setdefault(venue, set()).discard(market)


class PerpStreamGenerator(VenueStreamGenerator):
    """``VenueStreamGenerator``'s streams with two perpetual markets traded like the spot ones (issue 9):
    positions opened, grown, reduced, closed and flipped by every order type, fees and rebates, STP,
    amends and expiries; plus reduce-only IOC/FOK orders on the closing side of a known position (some
    too large, some on the wrong side, some while the venue's oracle is stale, some on spot markets)."""

    PERP_MARKETS = (13, 14)

    def __init__(self, seed: int, reduce_share: float = 0.06, **kw):
        self.reduce_share = reduce_share
        super().__init__(seed, **kw)

    def _build_universe(self) -> None:
        super()._build_universe()
        r = self.rng
        maker, taker = r.choice([(0, 5), (-2, 7), (10, 10), (-1000, 1000)])
        specs = [
            MarketSpec(13, 2, 1, 1, 1, 1, maker, taker, r.choice([0, 500]), r.randint(1000, 3000), 12, 20,
                       MarketKind.PERPETUAL),
            MarketSpec(14, 4, 2, 5, 10, 10, 0, 3, 0, r.randint(800, 4000), 10, 15, MarketKind.PERPETUAL),
        ]
        for s in specs:
            self.markets[s.market_id] = s
            self.mid[s.market_id] = s.mid_ticks
            self.tradable.append(s.market_id)
            self.offers[0].add(s.market_id)
        self.positions: dict[tuple[int, int], int] = {}  # (account, market) -> size, from Position events

    def _reduce_only(self, ts: int) -> tuple:
        r = self.rng
        open_ = [(key, size) for key, size in self.positions.items() if size]
        if not open_ or r.random() < 0.15:  # no position (or a spot market): rejected
            account, market = r.choice(self.accounts), r.choice(self.tradable)
            side, qty = r.randint(0, 1), self._qty(self.markets[market])
        else:
            (account, market), size = r.choice(open_)
            s = self.markets[market]
            side = 1 if size > 0 else 0
            qty = max(s.lot, (abs(size) // s.lot) * s.lot // r.choice([1, 1, 2, 3]))
            if r.random() < 0.1:
                qty = abs(size) + s.lot  # larger than the position
            elif r.random() < 0.1:
                side = 1 - side  # would increase it
        s = self.markets[market]
        price = self._price(s, side, aggressive=0.9)
        venue = r.choice([v for v in self.live if market in self.offers.get(v, ())] or [0])
        return _row(Cmd.PLACE, ts, side=side, tif=r.choice([Tif.IOC, Tif.FOK]), stp=r.randint(0, 3),
                    flags=CmdFlag.REDUCE_ONLY, venue=venue, market=market, account=account, price=price, qty=qty,
                    id=self._client_id(account))

    def next_chunk(self, n: int) -> np.ndarray:
        r = self.rng
        return self._interleave(super().next_chunk(n),
                                lambda ts: [self._reduce_only(ts)] if r.random() < self.reduce_share else [])

    def observe(self, commands: np.ndarray, events: np.ndarray) -> None:
        super().observe(commands, events)
        pos = events[events["kind"] == Ev.POSITION]
        for account, market, size in zip(pos["account"].tolist(), pos["market"].tolist(), pos["qty"].tolist()):
            self.positions[(account, market)] = size


class LeveragedPerpStreamGenerator(PerpStreamGenerator):
    """``PerpStreamGenerator``'s streams with 2-20x leverage on both perpetual markets (issue 9, step 2):
    holds of ceil(price / L) per lot, initial margins, the pre-trade margin check, and MarketRisk commands
    (mostly refused), and keepers' Liquidate commands (refused: its accounts are deep, so healthy, or the venue,
    asset or target is wrong; accepted liquidations are in tests/test_liquidation.py's random crash streams).  A subclass so the workers' tests, which follow holds at 1x, keep their streams."""

    liquidate_share = 0.01

    def _setup(self) -> list[tuple]:
        """Leverage on both perpetual markets (step 2: holds of ceil(price / L) per lot, initial margin),
        set by the admin (venue 0 lists them) before any order, after a few refused attempts."""
        r = self.rng
        ts = self.ts
        rows = super()._setup()
        for market in self.PERP_MARKETS:
            rows.append(self._market_risk(ts, market))
            rows.append(_row(Cmd.MARKET_RISK, ts, account=self.ADMIN, market=market, price=r.randint(2, 20),
                             qty=r.randint(1, 10000), id=r.choice([0, 1, 2, 5]), aux=r.choice([0, 1, 3])))
        return rows

    def _market_risk(self, ts: int, market: int) -> tuple:
        """A MarketRisk command, mostly refused: bad leverage or maintenance, a spot or unknown market, not
        the admin, or (once orders rest) open orders."""
        r = self.rng
        account = r.choice([self.ADMIN, self.ADMIN, self.accounts[0], 0])
        market = r.choice([market, market, market, 1, 99])
        return _row(Cmd.MARKET_RISK, ts, account=account, market=market, price=r.choice([1, 5, 0, 101]),
                    qty=r.choice([2500, 0, 10001]), id=r.choice([0, 2, -1]), aux=r.choice([0, 4, -1]))

    def _liquidate(self, ts: int) -> tuple:
        """A keeper's Liquidate: mostly of an account with an open position in its market's listing venue (venue 0)
        and quote asset, refused unless prices moved it under maintenance; some with a wrong venue, asset or
        target, or naming the protocol account (venue 0's insurance fund)."""
        r = self.rng
        open_ = sorted(key for key, size in self.positions.items() if size)
        if open_ and r.random() < 0.85:
            target, market = r.choice(open_)
            venue, asset = 0, self.markets[market].quote
        else:
            target, market = r.choice(self.accounts + [self.PROTOCOL, 0, 31337]), r.choice(self.PERP_MARKETS)
            venue, asset = r.choice([0, 1, self.n_venues + 1]), r.choice([1, 2, 9])
        return _row(Cmd.LIQUIDATE, ts, account=r.choice(self.accounts + [0]), id=target, venue=venue, market=asset)

    def next_chunk(self, n: int) -> np.ndarray:
        r = self.rng

        def extra(ts: int) -> list[tuple]:
            rows = [self._market_risk(ts, r.choice(self.PERP_MARKETS))] if r.random() < 0.002 else []
            return rows + [self._liquidate(ts)] if r.random() < self.liquidate_share else rows

        return self._interleave(super().next_chunk(n), extra)


class OutcomeStreamGenerator(PerpStreamGenerator):
    """``PerpStreamGenerator``'s streams (spot, perps, venues, oracles) with outcome markets (issues 9 and 8): a
    standalone binary market and an event of three, traded like the others (YES bids and NO asks minting,
    transferring and merging shares, every order type, prices at and past the payout refused); Converts of
    known NO positions (some too large, on a standalone market, off lot); OutcomeConfig attempts (refused:
    configured, bad payout, not the admin); Resolve commands (wrong sender, bad outcome, the resolver's
    proposals that the clock makes final or the admin overturns), so markets resolve mid-stream and every
    later order there is refused. A subclass so that the other generators keep their streams."""

    BINARY, EVENT_MARKETS, EVENT = 10, (5, 6, 15), 5  # ids free in every generator's 16-market table
    RESOLVER = 71_717
    WINDOW = 30_000  # ns of engine clock: a few dozen commands

    def __init__(self, seed: int, outcome_share: float = 0.02, resolve_after: int = 6_000, **kw):
        self.outcome_share = outcome_share
        self.resolve_after = resolve_after
        super().__init__(seed, **kw)

    def _build_universe(self) -> None:
        super()._build_universe()
        r = self.rng
        maker, taker = r.choice([(0, 0), (0, 10), (-5, 20), (10, 10)])
        self.payout = {self.BINARY: 5000}  # 1000 ticks of 5
        specs = [MarketSpec(self.BINARY, 4, 1, 5, r.choice([1, 10]), 10, maker, taker, 0, r.randint(200, 800), 120, 25,
                            MarketKind.OUTCOME)]
        for m in self.EVENT_MARKETS:
            self.payout[m] = 400
            specs.append(MarketSpec(m, 3, 1, 1, 1, 1, 0, r.choice([0, 5]), 0, r.randint(60, 300), 50, 12,
                                    MarketKind.OUTCOME))
        specs[-1].min_size = 1
        for spec in specs:
            spec.min_size = max(spec.min_size, spec.lot)
            self.markets[spec.market_id] = spec
            self.mid[spec.market_id] = spec.mid_ticks
            self.tradable.append(spec.market_id)
            self.offers[0].add(spec.market_id)
        self.windows = {self.BINARY: self.WINDOW}
        self.windows.update({m: r.choice([0, self.WINDOW]) for m in self.EVENT_MARKETS[:1]})
        for m in self.EVENT_MARKETS[1:]:
            self.windows[m] = self.windows[self.EVENT_MARKETS[0]]
        self.no_held: dict[tuple[int, int], int] = {}  # (account, market) -> NO shares, from OutcomePosition

    def _outcome_config(self, ts: int, market: int, **over) -> tuple:
        kw = dict(account=self.ADMIN, market=market, price=self.payout.get(market, 1000), id=self.RESOLVER,
                  qty=self.windows.get(market, 0), aux=self.EVENT if market in self.EVENT_MARKETS else 0)
        kw.update(over)
        return _row(Cmd.OUTCOME_CONFIG, ts, **kw)

    def _setup(self) -> list[tuple]:
        ts = self.ts
        rows = super()._setup()
        rows += [
            self._outcome_config(ts, self.BINARY, account=self.accounts[0]),  # NOT_VENUE_OPERATOR
            self._outcome_config(ts, self.BINARY, price=7),  # INVALID_PAYOUT (off tick)
            self._outcome_config(ts, self.BINARY),
            self._outcome_config(ts, self.BINARY),  # OUTCOME_CONFIGURED
        ]
        for m in self.EVENT_MARKETS:
            rows.append(self._outcome_config(ts, m))
        rows.append(self._outcome_config(ts, 1))  # INVALID_MARKET_KIND
        return rows

    def _outcome_command(self, ts: int) -> tuple:
        r = self.rng
        x = r.random()
        if x < 0.6:  # Convert: mostly a known NO position of an event market
            held = [(key, n) for key, n in self.no_held.items() if n > 0 and key[1] in self.EVENT_MARKETS]
            if held and r.random() < 0.85:
                (account, market), n = r.choice(held)
                qty = r.choice([n, max(1, n // 2), 1, n + 1])
            else:
                account, market = r.choice(self.accounts), r.choice([self.BINARY, *self.EVENT_MARKETS, 1, 9])
                qty = r.choice([0, 1, 3])
            return _row(Cmd.CONVERT, ts, account=account, market=market, qty=qty)
        if x < 0.7:
            return self._outcome_config(ts, r.choice([self.BINARY, self.EVENT_MARKETS[1], 1]),
                                        qty=r.choice([-1, 0, self.WINDOW]))
        market = r.choice([self.BINARY, *self.EVENT_MARKETS])
        late = self.n_commands > self.resolve_after
        sender = r.choice([self.RESOLVER, self.ADMIN, self.accounts[1]] if late else [self.accounts[1], self.ADMIN, 0])
        outcome = r.choice([1, 1, 0, 2])
        return _row(Cmd.RESOLVE, ts, account=sender, market=market, qty=outcome)

    def next_chunk(self, n: int) -> np.ndarray:
        r = self.rng
        listed = self.n_commands > 0  # the first chunk starts with the listings: none before they are done
        return self._interleave(super().next_chunk(n), lambda ts: [self._outcome_command(ts)]
                                if listed and r.random() < self.outcome_share else [])

    def observe(self, commands: np.ndarray, events: np.ndarray) -> None:
        super().observe(commands, events)
        pos = events[events["kind"] == Ev.OUTCOME_POSITION]
        for account, market, size in zip(pos["account"].tolist(), pos["market"].tolist(), pos["qty"].tolist()):
            self.no_held[(account, market)] = -size if size < 0 else 0

class VenueRiskStreamGenerator(LeveragedPerpStreamGenerator):
    """``LeveragedPerpStreamGenerator``'s streams with each venue's own risk settings (issue 7, risk groups):
    VenueMarketRisk on spot and perpetual markets (bands tighter and wider than the market's, open-interest
    caps small enough to bind, breaker settings) set up front and changed between the commands, good and bad
    (wrong sender, unknown venue or market, not offered, out-of-range band, cap or breaker, a cap on a spot
    market), and VenueMarketHalt / Resume from operators, the admin, the risk worker's account and strangers,
    so places, amends and reduce-only orders meet venue halts, venue bands and caps."""

    RISK_ACCOUNT = -1001  # the risk worker's default account

    def __init__(self, seed: int, risk_share: float = 0.03, **kw):
        self.risk_share = risk_share
        super().__init__(seed, **kw)

    def _setup(self) -> list[tuple]:
        rows = super()._setup()
        r = self.rng
        for v in self.venue_ids:
            for m in self.tradable:
                if r.random() < 0.35:
                    rows.append(self._venue_risk(self.ts, v, m, valid=True))
        return rows

    def _venue_risk(self, ts: int, v: int, m: int, valid: bool = False) -> tuple:
        r = self.rng
        perp = m in self.PERP_MARKETS
        s = self.markets[m]
        fields = dict(account=self.operator.get(v, self.ADMIN) if r.random() < 0.9 else self.ADMIN, venue=v, market=m,
                      price=r.choice([0, 0, 30, 200, 1000, 5000]),
                      qty=r.choice([0, 10, 30, 100]) * s.lot if perp else 0,
                      id=0, aux=0)
        if r.random() < 0.5:
            fields["id"] = r.choice([50, 500, 3000])
            fields["aux"] = pack_breaker_windows(r.choice([1, 100, 5000]), r.choice([0, 10, 1000]))
        if valid:
            return _row(Cmd.VENUE_MARKET_RISK, ts, **fields)
        x = r.random()
        if x < 0.1:
            fields["account"] = r.choice(self.accounts + [0])
        elif x < 0.15:
            fields["venue"] = r.choice([self.n_venues + 1, U32_MAX])
        elif x < 0.2:
            fields["market"] = r.choice([0, 12, 99])
        elif x < 0.3:
            fields["price"] = r.choice([-1, 10_001])
        elif x < 0.4:
            fields["qty"] = -s.lot if perp else r.choice([s.lot, -1])
        elif x < 0.5:
            fields["id"], fields["aux"] = r.choice([(-1, 0), (10_001, 0), (0, 5), (100, 0),
                                                     (100, pack_breaker_windows(0, 10))])
        return _row(Cmd.VENUE_MARKET_RISK, ts, **fields)

    def _venue_halt(self, ts: int) -> tuple:
        r = self.rng
        v = r.choice(self.venue_ids + [0])
        m = r.choice(self.tradable + ([12] if r.random() < 0.05 else []))
        sender = r.choice([self.operator.get(v, self.ADMIN), self.ADMIN, self.RISK_ACCOUNT, self.RISK_ACCOUNT,
                           self.accounts[0], 0])
        kind = Cmd.VENUE_MARKET_HALT if r.random() < 0.5 else Cmd.VENUE_MARKET_RESUME
        return _row(kind, ts, account=sender, venue=r.choice([v] * 9 + [U32_MAX]), market=m)

    def next_chunk(self, n: int) -> np.ndarray:
        r = self.rng

        def extra(ts: int) -> list[tuple]:
            if r.random() >= self.risk_share:
                return []
            if r.random() < 0.5:
                return [self._venue_halt(ts)]
            return [self._venue_risk(ts, r.choice(self.venue_ids + [0]), r.choice(self.tradable))]

        return self._interleave(super().next_chunk(n), extra)


class MultiLegMixin:
    """Multi-leg orders (issue 9) added to a generator's streams: 2-4 legs over distinct markets (every tradable kind
    the generator lists) and venues, priced to cross (so many fill all together) or not (one thin leg rejects the
    whole), with every STP mode, reduce-only legs and sizes the account may not afford together; plus malformed
    units: a bad leg count, too few legs, a leg of another account or not limit FOK, two legs in one market,
    duplicate leg client ids, a parent id of 0 and stray Leg records.  A unit never straddles chunks (the input
    never splits one).  And SetExposureCap commands (some refused), whose caps on venue 0 (the perpetual markets'
    risk group) bind often."""

    multi_leg_share = 0.03
    cap_share = 0.004

    def _exposure_cap(self, ts: int) -> tuple:
        r = self.rng
        return _row(Cmd.SET_EXPOSURE_CAP, ts, account=r.choice(self.accounts + [0, 31337]),
                    venue=r.choice([0, 0, 0, 1, 2, self.n_venues + 1]),
                    qty=r.choice([0, 300, 1000, 3000, 10000, -1, 10001, r.randint(1, 10000)]))

    def _multi_leg(self, ts: int) -> list[tuple]:
        r = self.rng
        account = r.choice(self.accounts)
        n = r.choice([2, 2, 2, 3, 4])
        markets = r.sample(self.tradable, min(n, len(self.tradable)))
        legs = []
        for market in markets:
            s = self.markets[market]
            side = r.randint(0, 1)
            venue = 0
            if r.random() < 0.3:
                venue = r.choice([v for v in self.live if market in self.offers.get(v, ())] or [0])
            flags = 0
            if s.kind == MarketKind.PERPETUAL and r.random() < 0.1:
                flags = CmdFlag.REDUCE_ONLY
            if r.random() < 0.6:  # through the spread: likely fillable when the size is small
                ticks = self.mid[market] + (2 * s.spread_ticks if side == 0 else -2 * s.spread_ticks)
                price = max(1, ticks) * s.tick
            else:
                price = self._price(s, side, aggressive=r.choice([0.9, 0.5]))
            qty = s.min_lots * s.lot if r.random() < 0.6 else self._qty(s)
            legs.append(_row(Cmd.LEG, ts, side=side, tif=Tif.FOK, ord_type=OrdType.LIMIT, stp=r.randint(0, 3),
                             flags=flags, venue=venue, market=market, account=account, price=price, qty=qty,
                             id=self._client_id(account)))
        header = dict(account=account, qty=len(legs), id=r.randint(1, 10**6))
        x = r.random()
        if x < 0.03:
            header["qty"] = r.choice([0, 1, 5, -1])  # bad count: the legs that follow are strays
        elif x < 0.06:
            legs.pop()  # fewer legs than the count
        elif x < 0.07:
            header["id"] = 0
        elif x < 0.12:
            k = r.randrange(len(legs))
            what = r.randint(0, 4)
            field_, value = [("account", account ^ 1), ("tif", Tif.IOC), ("ord_type", OrdType.MARKET),
                             ("market", legs[0][_F["market"]]), ("id", legs[0][_F["id"]])][what]
            if k > 0 or what < 3:
                row = list(legs[k])
                row[_F[field_]] = value
                legs[k] = tuple(row)
        elif x < 0.13:
            return [legs[0]]  # a stray leg
        return [_row(Cmd.MULTI_LEG, ts, **header)] + legs

    def next_chunk(self, n: int) -> np.ndarray:
        r = self.rng

        def extra(ts: int) -> list[tuple]:
            rows = list(self._multi_leg(ts)) if r.random() < self.multi_leg_share else []
            return rows + [self._exposure_cap(ts)] if r.random() < self.cap_share else rows

        return self._interleave(super().next_chunk(n), extra)


class MultiLegStreamGenerator(MultiLegMixin, LeveragedPerpStreamGenerator):
    """``LeveragedPerpStreamGenerator``'s streams (spot and perpetuals at 2-20x) with multi-leg orders and caps."""


class OutcomeMultiLegStreamGenerator(MultiLegMixin, OutcomeStreamGenerator):
    """``OutcomeStreamGenerator``'s streams (spot, perpetuals at 1x, outcome markets) with multi-leg orders and caps."""


class FundingPerpStreamGenerator(LeveragedPerpStreamGenerator):
    """``LeveragedPerpStreamGenerator``'s streams with funding (issue 9): venue 0's oracles on both perpetual
    markets, a FundingConfig each with a funding interval of a few dozen commands of engine clock (premium samples every
    few commands), and between the commands a scheduler's ApplyFunding (any account, mostly for a perpetual market,
    often before it is due), refused ones (sender 0, spot, unknown market) and FundingConfig changes, mostly refused;
    margin tiers (issue 9): a valid MarginTiers on each perpetual market at setup and, between the commands, some more
    (good and bad). A subclass, so the other generators' streams are unchanged."""

    funding_share = 0.03

    def _setup(self) -> list[tuple]:
        ts = self.ts
        rows = super()._setup()
        for market in self.PERP_MARKETS:
            rows.append(self._oracle_config(ts, self.ADMIN, 0, market))
            rows.append(self._funding_config(ts, market, valid=True))
            rows.append(self._margin_tiers(ts, market, valid=True))
        return rows

    def _margin_tiers(self, ts: int, market: int, valid: bool = False) -> tuple:
        """The admin's MarginTiers: 1-3 brackets from a few thousand of notional, leverage 1-10 non-increasing; unless
        ``valid``, mostly with a bad field."""
        r = self.rng
        floors = sorted(r.sample(range(500, 40_000, 500), 3))[:r.randint(1, 3)]
        leverages = sorted((r.randint(1, 10) for _ in floors), reverse=True)
        fields = dict(account=self.ADMIN, market=market)
        x = 1.0 if valid else r.random()
        if x < 0.15:
            fields["account"] = r.choice(self.accounts + [0])
        elif x < 0.3:
            floors = floors[::-1] if len(floors) > 1 else [0]
        elif x < 0.45:
            leverages = [r.choice([0, 101])] + leverages[1:]
        elif x < 0.55:
            leverages = leverages[::-1] if len(leverages) > 1 and leverages[0] != leverages[-1] else [101]
        elif x < 0.65:
            fields["market"] = r.choice([1, 99])
        elif x < 0.7:
            floors, leverages = [], []  # removes them
        floors = floors + [0] * (3 - len(floors))
        return _row(Cmd.MARGIN_TIERS, ts, price=floors[0], qty=floors[1], id=floors[2],
                    aux=pack_tier_leverage(leverages), **fields)

    def _funding_config(self, ts: int, market: int, valid: bool = False) -> tuple:
        """The admin's FundingConfig for a perpetual market; unless ``valid``, mostly one with a bad field."""
        r = self.rng
        interval = r.randint(20_000, 60_000)
        fields = dict(account=self.ADMIN, market=market, price=interval, qty=r.randint(1_000, 5_000),
                      id=r.randint(-20_000, 20_000),
                      aux=pack_funding_limits(r.randint(0, 50_000), r.choice([50_000, 1_000_000, RATE_SCALE])))
        x = 1.0 if valid else r.random()
        if x < 0.2:
            fields["account"] = r.choice(self.accounts + [0])
        elif x < 0.35:
            fields["qty"] = r.choice([interval + 1, 0])
        elif x < 0.45:
            fields["price"] = r.choice([0, -interval])
        elif x < 0.6:
            fields["id"] = r.choice([RATE_SCALE + 1, -RATE_SCALE - 1])
        elif x < 0.75:
            fields["aux"] = r.choice([pack_funding_limits(0, 0), pack_funding_limits(RATE_SCALE + 1, 1),
                                      pack_funding_limits(0, RATE_SCALE + 1), -1])
        elif x < 0.85:
            fields["market"] = r.choice([1, 99])
        return _row(Cmd.FUNDING_CONFIG, ts, **fields)

    def _funding(self, ts: int) -> tuple:
        r = self.rng
        x = r.random()
        if x < 0.85:
            return _row(Cmd.APPLY_FUNDING, ts, account=r.choice(self.accounts), market=r.choice(self.PERP_MARKETS))
        if x < 0.93:
            return _row(Cmd.APPLY_FUNDING, ts, account=r.choice([0, self.accounts[0]]), market=r.choice([0, 1, 99]))
        if x < 0.965:
            return self._funding_config(ts, r.choice(self.PERP_MARKETS))
        return self._margin_tiers(ts, r.choice(self.PERP_MARKETS))

    def next_chunk(self, n: int) -> np.ndarray:
        r = self.rng
        return self._interleave(super().next_chunk(n),
                                lambda ts: [self._funding(ts)] if r.random() < self.funding_share else [])


class IsolatedMarginStreamGenerator(FundingPerpStreamGenerator):
    """``FundingPerpStreamGenerator``'s streams with isolated margin (issue 9): at setup some accounts make their
    position in one perpetual market isolated (before any order); between the commands MarginMode (mostly refused:
    an open position or order, unchanged, a bad mode, market or account; accepted while flat), IsolatedMargin on known
    isolated positions (adding, removing down to and past the initial margin, bad amounts, cross positions) and
    keepers' isolated Liquidate (``aux`` = the market; some naming a cross position, a wrong market, venue or asset).
    A subclass, so the other generators' streams are unchanged."""

    isolated_share = 0.04

    def _setup(self) -> list[tuple]:
        r = self.rng
        rows = super()._setup()
        self.isolated: set[tuple[int, int]] = set()  # (account, market), from the MarginMode echoes
        for account in self.accounts:
            if r.random() < 0.5:
                rows.append(_row(Cmd.MARGIN_MODE, self.ts, account=account, market=r.choice(self.PERP_MARKETS), qty=1))
        return rows

    def _margin_mode(self, ts: int) -> tuple:
        r = self.rng
        account, market, mode = r.choice(self.accounts), r.choice(self.PERP_MARKETS), r.randint(0, 1)
        x = r.random()
        if x < 0.1:
            account = r.choice([0, 31337])
        elif x < 0.2:
            market = r.choice([1, 99])
        elif x < 0.25:
            mode = r.choice([2, -1])
        return _row(Cmd.MARGIN_MODE, ts, account=account, market=market, qty=mode)

    def _isolated_margin(self, ts: int) -> tuple:
        r = self.rng
        open_ = sorted(key for key in self.isolated if self.positions.get(key))
        if open_ and r.random() < 0.8:
            account, market = r.choice(open_)
            amount = r.choice([1, -1]) * r.choice([1, 10, 100, 1_000, 10_000, 100_000])
        else:
            account, market = r.choice(self.accounts + [0]), r.choice(self.PERP_MARKETS + (1, 99))
            amount = r.choice([0, (1 << 62) + 1, 50, -50])
        return _row(Cmd.ISOLATED_MARGIN, ts, account=account, market=market, qty=amount)

    def _isolated_liquidate(self, ts: int) -> tuple:
        r = self.rng
        open_ = sorted(key for key in self.isolated if self.positions.get(key))
        if open_ and r.random() < 0.8:
            target, market = r.choice(open_)
        else:
            target, market = r.choice(self.accounts), r.choice(self.PERP_MARKETS + (1, 99, -3))
        venue, asset = 0, self.markets[market].quote if market in self.markets else 1
        if r.random() < 0.1:
            venue, asset = r.choice([(1, asset), (0, 9)])
        return _row(Cmd.LIQUIDATE, ts, account=r.choice(self.accounts), id=target, venue=venue, market=asset,
                    aux=market)

    def next_chunk(self, n: int) -> np.ndarray:
        r = self.rng

        def extra(ts: int) -> list[tuple]:
            if r.random() >= self.isolated_share:
                return []
            x = r.random()
            if x < 0.3:
                return [self._margin_mode(ts)]
            if x < 0.8:
                return [self._isolated_margin(ts)]
            return [self._isolated_liquidate(ts)]

        return self._interleave(super().next_chunk(n), extra)

    def observe(self, commands: np.ndarray, events: np.ndarray) -> None:
        super().observe(commands, events)
        for key in [key for key in self.positions if key[0] not in self.accounts]:
            del self.positions[key]  # the fund's, taken over in an isolated liquidation: it sends no orders
        modes = events[(events["kind"] == Ev.VENUE) & (events["flags"] == Cmd.MARGIN_MODE)]
        for account, market, mode in zip(modes["account"].tolist(), modes["market"].tolist(), modes["qty"].tolist()):
            (self.isolated.add if mode else self.isolated.discard)((account, market))

class CollateralStreamGenerator(FundingPerpStreamGenerator):
    """``FundingPerpStreamGenerator``'s streams with the unified account (issue 9): after refused attempts, USD is
    declared the valuation asset, BTC collateral priced by the BTC/USD perpetual's mark or the BTC/USD spot market's
    oracle, ETH by the ETH/USD spot market's oracle (venue 0's oracles on both spot markets, so prices come and go
    stale); venues set their own weights.  Between the commands: VenueCollateral and CollateralAsset changes (good and
    bad) and collateral price moves (OraclePrice on those markets, up to +-40 % of the mid), so perpetual orders
    borrow against BTC and ETH, the unified check refuses some (INSUFFICIENT_MARGIN, COLLATERAL_PRICE_MISSING) and
    keepers' Liquidate meets the unified trigger.  A subclass, so the other generators' streams are unchanged."""

    collateral_share = 0.02
    USD, BTC, ETH = 1, 2, 3
    PRICE_MARKETS = {2: (13, 1), 3: (2,)}  # asset -> the markets that may price it (base = it, quote = USD)

    def _setup(self) -> list[tuple]:
        r = self.rng
        ts = self.ts
        rows = super()._setup()
        rows.append(self._oracle_config(ts, self.ADMIN, 0, 1))
        rows.append(self._oracle_config(ts, self.ADMIN, 0, 2))
        rows.append(_row(Cmd.COLLATERAL_ASSET, ts, account=self.accounts[0], market=self.USD, qty=10_000))  # NOT_ADMIN
        rows.append(_row(Cmd.COLLATERAL_ASSET, ts, account=self.ADMIN, market=self.BTC, id=13, qty=8_000))  # none yet
        rows.append(_row(Cmd.COLLATERAL_ASSET, ts, account=self.ADMIN, market=self.USD, qty=r.choice([10_000, 9_500])))
        rows.append(_row(Cmd.COLLATERAL_ASSET, ts, account=self.ADMIN, market=self.BTC, id=r.choice([13, 1]),
                         qty=r.randint(5_000, 9_500)))
        rows.append(_row(Cmd.COLLATERAL_ASSET, ts, account=self.ADMIN, market=self.ETH, id=2, qty=r.randint(0, 9_000)))
        for v in r.sample(self.venue_ids, 4):
            rows.append(_row(Cmd.VENUE_COLLATERAL, ts, account=self.operator[v], venue=v,
                             market=r.choice([self.BTC, self.ETH]), qty=r.randint(0, 5_000)))
        return rows

    def _collateral_command(self, ts: int) -> tuple:
        r = self.rng
        x = r.random()
        if x < 0.35:  # a venue's weight: mostly its operator's, some above the bound or otherwise bad
            v = r.choice(self.venue_ids + [0])
            sender = self.operator.get(v, self.ADMIN) if r.random() < 0.85 else r.choice([self.ADMIN, 0, 31337])
            return _row(Cmd.VENUE_COLLATERAL, ts, account=sender, venue=r.choice([v, v, v, self.n_venues + 1]),
                        market=r.choice([self.BTC, self.BTC, self.ETH, self.USD, 4, 9]),
                        qty=r.choice([r.randint(0, 10_000), r.randint(0, 5_000), -1, 10_001]))
        if x < 0.5:  # the protocol bound: mostly a good change, some bad
            asset = r.choice([self.BTC, self.ETH, self.USD, 4])
            market = r.choice(self.PRICE_MARKETS.get(asset, (0,)) + (3, 14, 99, 0))
            if r.random() < 0.6:
                market = r.choice(self.PRICE_MARKETS.get(asset, (0,)))
            return _row(Cmd.COLLATERAL_ASSET, ts, account=r.choice([self.ADMIN] * 5 + [self.accounts[1]]),
                        market=asset, id=market, qty=r.choice([r.randint(0, 10_000), r.randint(3_000, 9_000), 10_001]))
        # a collateral price move: a good OraclePrice of venue 0 on a price market, far from the mid at times
        m = r.choice([1, 2, 13])
        key = (0, m)
        if key not in self.oracle_feed:
            return self._oracle_command(ts)
        spec = self.markets[m]
        src = self.source_ts.get(key, 0) + r.randint(1, 1000)
        self.source_ts[key] = src
        ticks = max(1, spec.mid_ticks * r.randint(60, 140) // 100)
        return _row(Cmd.ORACLE_PRICE, ts, account=self.FEED_ACCOUNT, venue=0, market=m, id=self.oracle_feed[key],
                    qty=r.randint(1, 5), price=spec.tick * ticks, aux=src)

    def next_chunk(self, n: int) -> np.ndarray:
        r = self.rng
        listed = self.n_commands > 0
        return self._interleave(super().next_chunk(n), lambda ts: [self._collateral_command(ts)]
                                if listed and r.random() < self.collateral_share else [])


class IsolatedCollateralStreamGenerator(CollateralStreamGenerator, IsolatedMarginStreamGenerator):
    """Both at once: the unified account (collateral, loans, collateral price moves) with isolated positions, which
    stay outside the unified equity (ARCHITECTURE, "Unified account"); each parent interleaves its own commands."""


class CollateralMultiLegStreamGenerator(MultiLegMixin, CollateralStreamGenerator):
    """The unified account with multi-leg orders and exposure caps: caps measured against the unified equity."""


class OutcomeCollateralStreamGenerator(CollateralStreamGenerator, OutcomeStreamGenerator):
    """The unified account with outcome markets: outcome shares count in the unified equity at the outcome mark
    (median of best bid, best ask and last trade), next to loans, collateral and perpetuals."""

class VenueListingStreamGenerator(VenueStreamGenerator):
    """``VenueStreamGenerator``'s streams with venues listing their own markets (issue 7): ListMarket commands
    between the others, mostly from the venue's operator for a new market id (spot or perpetual, assorted tick,
    lot, fees and band), some from the admin, some bad (another account, venue 0 or an unknown venue,
    a halted or retired one, an existing or out-of-range market id, and each of AddMarket's field checks).  A
    listing the engine accepts becomes tradable (learned from its echo) and offered by its venue, so orders,
    offers by other venues and withdrawals follow.  A subclass so the other generators keep their streams."""

    def __init__(self, seed: int, listing_share: float = 0.01, **kw):
        self.listing_share = listing_share
        super().__init__(seed, **kw)
        # market ids the other streams leave free (5 and 12 stay unknown, 11 is the admin's late listing, 13-14
        # the perpetual streams'): ENGINE_KWARGS' max_markets leaves 4, a larger table more
        self.listable = [m for m in range(1, self.limits["max_markets"] + 1)
                         if m not in self.markets and m not in (5, 9, 11, 12, 13, 14)]

    def _listing(self, ts: int) -> tuple:
        r = self.rng
        free = [m for m in self.listable if m not in self.markets]
        x = r.random()  # about half are bad in one field (the sender, venue and market id may be too)
        # a good one takes a free id half the time (so ids last), a bad one always (so its check is reached)
        mid = r.choice(free) if free and (x < 0.45 or r.random() < 0.5) else r.choice(
            self.listable + [0, self.limits["max_markets"] + 1, 1])
        base, quote = r.sample(sorted(self.assets), 2)
        tick, lot = r.choice([1, 5, 100]), r.choice([1, 10])
        maker, taker = r.choice([(0, 0), (-2, 5), (3, 3), (-1000, 1000)])
        kind = r.choice([MarketKind.SPOT] * 4 + [MarketKind.PERPETUAL])
        v = r.choice(self.venue_ids)
        sender = self.operator[v] if r.random() < 0.8 else r.choice([self.ADMIN, self.ADMIN, 0, -5] + self.accounts)
        fields = dict(account=sender, venue=v, market=mid, side=kind, price=tick, qty=lot, id=lot * r.randint(1, 3))
        listing = dict(base=base, quote=quote, maker_bps=maker, taker_bps=taker, band_bps=r.choice([0, 0, 300]))
        if x < 0.06:
            fields["venue"] = r.choice([0, self.n_venues + 1, U32_MAX])
        elif x < 0.1:
            fields["side"] = r.choice([3, 255])
        elif x < 0.16:
            listing[r.choice(["base", "quote"])] = r.choice([0, 6, 7, 0xFFFF])
        elif x < 0.2:
            listing["quote"] = base
        elif x < 0.28:
            fields[r.choice(["price", "qty", "id"])] = r.choice([0, -1])
        elif x < 0.32:
            fields["qty"], fields["id"] = 10, r.choice([15, 25])
        elif x < 0.4:
            listing["maker_bps"], listing["taker_bps"] = r.choice([(5, 4), (-6, 5), (0, 1001), (-1001, 1001)])
        elif x < 0.45:
            listing["band_bps"] = r.choice([10_001, 0xFFFF])
        flags, aux = pack_listing(**listing)
        return _row(Cmd.LIST_MARKET, ts, flags=flags, aux=aux, **fields)

    def next_chunk(self, n: int) -> np.ndarray:
        r = self.rng
        return self._interleave(super().next_chunk(n),
                                lambda ts: [self._listing(ts)] if r.random() < self.listing_share else [])

    def observe(self, commands: np.ndarray, events: np.ndarray) -> None:
        super().observe(commands, events)
        listed = events[(events["kind"] == Ev.ACCEPTED) & (events["flags"] == EvFlag.MARKET_LISTING)
                        & (events["maker_account"] != 0)]
        for market, venue, kind, assets, tick, lot, min_size, params in zip(
                *(listed[f].tolist() for f in ("market", "venue", "side", "account", "price", "qty", "client_id",
                                               "remaining"))):
            base, quote = unpack_market_assets(assets)
            maker, taker, band = unpack_market_params(params)
            s = MarketSpec(market, base, quote, tick, lot, min_size, maker, taker, band, 400 + 100 * market, 10, 12,
                           kind)
            self.markets[market] = s
            self.mid[market] = s.mid_ticks
            self.tradable.append(market)
            self.offers.setdefault(venue, set()).add(market)


__all__ = [
    "ENGINE_KWARGS",
    "SMALL_ENGINE_KWARGS",
    "EVENT_DTYPE",
    "StreamGenerator",
    "VenueStreamGenerator",
    "PerpStreamGenerator",
    "LeveragedPerpStreamGenerator",
    "OutcomeStreamGenerator",
    "VenueRiskStreamGenerator",
    "MultiLegStreamGenerator",
    "OutcomeMultiLegStreamGenerator",
    "FundingPerpStreamGenerator",
    "VenueListingStreamGenerator",
    "generate_commands",
    "run_stream",
]
