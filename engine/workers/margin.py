"""Margin: the unified account view, dense and vectorised with numpy.

State (rows = accounts in order of first appearance, ``index`` maps account id -> row; columns =
asset ids, ``0`` unused):

- ``total[row, asset]`` int64: free + held, the same arithmetic as settlement (deposits and
  withdrawals from ``Balance`` events; fills: buyer ``+qty`` base and ``-(notional + fee)`` quote,
  seller ``-qty`` base and ``+(notional - fee)`` quote).
- ``held[row, asset]`` int64: the holds of the account's open orders, tracked per order from
  ``Accepted`` / ``Fill`` / ``Cancelled`` / ``Amended`` (buy: ``lots * (price + fee_per_lot)`` in the
  quote asset; sell: ``remaining`` base), so it equals the matcher's ``held``.
- ``positions[row, market]`` int64: signed position per market.  Spot markets never use it (a spot
  trade moves balances); perpetual and outcome markets will book their positions here and value
  them at the market's mark (``pnl = position * (mark - entry)``), next to the balances.
- ``marks[market]``: the latest mark price per market, for now the last trade price (``Fill``).

Valuation (all money int64, no floats).  Each asset ``a`` gets a weight: the value of one smallest
unit of ``a`` in smallest units of the valuation asset ``V``, times ``(10000 - haircut_bps[a]) /
10000``.  The exact rational weight comes from the marks along a route of markets from ``a`` to
``V`` (breadth first from ``V`` over markets that have a mark, lowest market id first; through a
market with base ``B``, quote ``Q`` and lot ``L`` at price ``p``, one unit of ``B`` is ``p / L``
units of ``Q``); an asset without a route is worth 0.  The weight is then floor-rounded to 31
significant bits: ``weight ~ w[a] / 2**s[a]`` with ``2**30 <= w[a] < 2**31`` (or ``w[a] = 0``).
The rule:

    equity[i]      = sum over a of floor(total[i, a] * w[a] / 2**s[a])
    margin_used[i] = sum over a of floor(held[i, a]  * w[a] / 2**s[a])

Each product is computed exactly in int64 by splitting the balance into 31-bit halves
(``revalue``), so the only rounding is the weight's (relative error < 2**-30) and one floor per
asset.  ``revalue`` refuses (``OverflowError``) when the assets' outstanding totals times their
weights could exceed 2**62, so no account's equity can overflow.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from ..records import Ev, Side
from . import ASSET_LISTING, MARKET_LISTING, Listings, buy_hold, fresh_events, rows

WEIGHT_BITS = 31
_LOW31 = (1 << 31) - 1


@dataclass
class MarginConfig:
    """``valuation_asset``: asset id or symbol (``""``/``0``: the quote asset of the first listed market).
    ``haircut_bps``: asset id or symbol -> haircut in basis points (0..10000); others get the default."""

    valuation_asset: int | str = 0
    haircut_bps: dict = field(default_factory=dict)
    default_haircut_bps: int = 0


def weight_bits(weight: Fraction) -> tuple[int, int]:
    """``weight`` floor-rounded to ``(w, s)``, ``w / 2**s``, with ``2**30 <= w < 2**31`` (``(0, 0)`` for 0)."""
    if weight <= 0:
        return 0, 0
    # s such that 2**30 <= weight * 2**s < 2**31
    s = WEIGHT_BITS - 1 - (weight.numerator.bit_length() - weight.denominator.bit_length())
    while True:
        w = (weight.numerator << s) // weight.denominator if s >= 0 else weight.numerator // (weight.denominator << -s)
        if w >= 1 << WEIGHT_BITS:
            s -= 1
        elif w < 1 << (WEIGHT_BITS - 1):
            s += 1
        else:
            return w, s


def value_of(amount: int, w: int, s: int) -> int:
    """``floor(amount * w / 2**s)`` with Python integers: the reference for one cell."""
    return (amount * w) >> s if s >= 0 else (amount * w) << -s


class MarginBook:
    """Dense account x asset book; see the module docstring."""

    def __init__(self, config: MarginConfig | None = None, *, accounts: int = 1024, assets: int = 16,
                 markets: int = 16, start_anywhere: bool = False):
        self.config = config or MarginConfig()
        self.start_anywhere = start_anywhere
        self.listings = Listings()
        self.index: dict[int, int] = {}
        self.account_ids = np.zeros(accounts, np.int64)
        self.total = np.zeros((accounts, assets), np.int64)
        self.held = np.zeros((accounts, assets), np.int64)
        self.positions = np.zeros((accounts, markets), np.int64)  # perpetual / outcome markets (to come)
        self.outstanding: dict[int, int] = {}  # asset -> sum of all balances (Python int), for the overflow bound
        self.marks: dict[int, int] = {}
        self.orders: dict[int, list] = {}  # order id -> [row, market, side, price, remaining]
        self._cursor = 0
        self._weights_key = None
        self.w = np.zeros(assets, np.int64)
        self.s = np.zeros(assets, np.int64)

    @property
    def cursor(self) -> int:
        return self._cursor

    @property
    def n_accounts(self) -> int:
        return len(self.index)

    # ----------------------------------------------------------------------------- storage

    def _row(self, account: int) -> int:
        r = self.index.get(account)
        if r is None:
            r = len(self.index)
            if r == len(self.account_ids):
                n = 2 * r
                self.account_ids = np.resize(self.account_ids, n)
                for name in ("total", "held", "positions"):
                    old = getattr(self, name)
                    new = np.zeros((n, old.shape[1]), np.int64)
                    new[:r] = old
                    setattr(self, name, new)
            self.index[account] = r
            self.account_ids[r] = account
        return r

    def _ensure_columns(self, asset: int, market: int = 0) -> None:
        if asset >= self.total.shape[1]:
            n = max(asset + 1, 2 * self.total.shape[1])
            for name in ("total", "held"):
                old = getattr(self, name)
                new = np.zeros((old.shape[0], n), np.int64)
                new[:, : old.shape[1]] = old
                setattr(self, name, new)
            self.w = np.zeros(n, np.int64)
            self.s = np.zeros(n, np.int64)
            self._weights_key = None
        if market >= self.positions.shape[1]:
            n = max(market + 1, 2 * self.positions.shape[1])
            new = np.zeros((self.positions.shape[0], n), np.int64)
            new[:, : self.positions.shape[1]] = self.positions
            self.positions = new

    # ----------------------------------------------------------------------------- apply

    def apply(self, events: np.ndarray) -> int:
        """Apply a batch (EVENT_DTYPE, seq order): skips seq <= cursor, raises on a gap; returns how
        many events were new.  Balance and fill amounts are added with one ``np.add.at``; holds
        follow each order."""
        if self._cursor == 0 and self.start_anywhere and len(events):
            self._cursor = int(events["seq"][0]) - 1
        new = fresh_events(events, self._cursor)
        if len(new) == 0:
            return 0
        listings = self.listings
        markets = listings.markets
        orders = self.orders
        r_idx, a_idx, amounts = [], [], []

        def add(row, asset, amount):
            r_idx.append(row)
            a_idx.append(asset)
            amounts.append(amount)
            self.outstanding[asset] = self.outstanding.get(asset, 0) + amount

        def hold_of(m, side, price, remaining):
            return buy_hold(remaining // m.lot_size, price, m.taker_bps) if side == Side.BUY else remaining

        def rehold(o, price, remaining):
            """Order ``o`` now has ``price`` and ``remaining``: move its hold."""
            m = markets[o[1]]
            asset = m.quote if o[2] == Side.BUY else m.base
            self.held[o[0], asset] += hold_of(m, o[2], price, remaining) - hold_of(m, o[2], o[3], o[4])
            o[3] = price
            o[4] = remaining

        for (seq, kind, code, flags, side, reason, market, venue, ts, order_id, account, client_id, price, qty,
             remaining, maker_order, maker_account, maker_fee, taker_fee) in rows(new):
            if kind == Ev.FILL:
                m = markets[market]
                notional = price * (qty // m.lot_size)
                if side == Side.BUY:
                    buyer, seller, bfee, sfee = account, maker_account, taker_fee, maker_fee
                else:
                    buyer, seller, bfee, sfee = maker_account, account, maker_fee, taker_fee
                b, s_ = self._row(buyer), self._row(seller)
                add(b, m.base, qty)
                add(s_, m.base, -qty)
                add(b, m.quote, -(notional + bfee))
                add(s_, m.quote, notional - sfee)
                self.marks[market] = price
                o = orders.get(order_id)
                if o is not None:
                    rehold(o, o[3], remaining)
                    if remaining == 0:
                        del orders[order_id]
                k = orders.get(maker_order)
                if k is not None:
                    rehold(k, k[3], k[4] - qty)
                    if k[4] == 0:
                        del orders[maker_order]
            elif kind == Ev.ACCEPTED:
                if order_id > 0:
                    row = self._row(account)
                    o = [row, market, side, price, 0]
                    orders[order_id] = o
                    rehold(o, price, qty)
                else:
                    what = listings.classify(kind, flags, side, market, venue, order_id, account, client_id, price,
                                             qty, remaining)
                    if what in (ASSET_LISTING, MARKET_LISTING):
                        d = listings.learn(what, seq, side, market, venue, account, client_id, price, qty, remaining)
                        if what == ASSET_LISTING:
                            self._ensure_columns(d.asset_id)
                        else:
                            self._ensure_columns(max(d.base, d.quote), d.market_id)
            elif kind == Ev.CANCELLED or kind == Ev.AMENDED:
                o = orders.get(order_id)
                if o is not None:
                    rehold(o, price, remaining)
                    if remaining == 0:
                        del orders[order_id]
            elif kind == Ev.BALANCE:
                listings.accounts.add(account)
                if market >= self.total.shape[1]:
                    self._ensure_columns(market)
                add(self._row(account), market, qty)
        if amounts:
            np.add.at(self.total, (np.array(r_idx, np.intp), np.array(a_idx, np.intp)), np.array(amounts, np.int64))
        self._cursor = int(new["seq"][-1])
        return len(new)

    # ----------------------------------------------------------------------------- queries

    def balance(self, account: int, asset: int) -> tuple[int, int]:
        """``(total, held)``; ``(0, 0)`` for an unknown account or asset."""
        r = self.index.get(account)
        if r is None or asset >= self.total.shape[1]:
            return 0, 0
        return int(self.total[r, asset]), int(self.held[r, asset])

    def balances(self, account: int) -> dict[int, tuple[int, int]]:
        """``{asset: (total, held)}`` for the assets where either is non-zero."""
        r = self.index.get(account)
        if r is None:
            return {}
        nz = np.flatnonzero((self.total[r] != 0) | (self.held[r] != 0))
        return {int(a): (int(self.total[r, a]), int(self.held[r, a])) for a in nz}

    def valuation_asset(self) -> int:
        v = self.config.valuation_asset
        if isinstance(v, str) and v:
            return self._asset_id(v)
        if v:
            return int(v)
        if self.listings.markets:
            return self.listings.markets[min(self.listings.markets)].quote
        return 1

    def _asset_id(self, key) -> int:
        if isinstance(key, str):
            for a in self.listings.assets.values():
                if a.symbol == key:
                    return a.asset_id
            return -1
        return int(key)

    def haircut(self, asset: int) -> int:
        cuts = {self._asset_id(k): v for k, v in self.config.haircut_bps.items()}
        return int(cuts.get(asset, self.config.default_haircut_bps))

    def rates(self) -> dict[int, Fraction]:
        """Exact value of one unit of each reachable asset in units of the valuation asset (no haircut)."""
        v = self.valuation_asset()
        rate = {v: Fraction(1)}
        frontier = [v]
        by_id = sorted(self.listings.markets.values(), key=lambda m: m.market_id)
        while frontier:
            nxt = []
            for a in frontier:
                for m in by_id:
                    p = self.marks.get(m.market_id, 0)
                    if p <= 0:
                        continue
                    if m.quote == a and m.base not in rate:  # 1 base = p / L quote
                        rate[m.base] = rate[a] * Fraction(p, m.lot_size)
                        nxt.append(m.base)
                    elif m.base == a and m.quote not in rate:  # 1 quote = L / p base
                        rate[m.quote] = rate[a] * Fraction(m.lot_size, p)
                        nxt.append(m.quote)
            frontier = nxt
        return rate

    def weights(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-asset ``(w, s)`` (see the module docstring), recomputed when marks or listings changed."""
        key = (tuple(sorted(self.marks.items())), len(self.listings.markets), len(self.listings.assets),
               self.total.shape[1])
        if key != self._weights_key:
            w = np.zeros(self.total.shape[1], np.int64)
            s = np.zeros(self.total.shape[1], np.int64)
            for asset, rate in self.rates().items():
                if 0 <= asset < len(w):
                    cut = min(max(self.haircut(asset), 0), 10000)
                    w[asset], s[asset] = weight_bits(rate * Fraction(10000 - cut, 10000))
            self.w, self.s = w, s
            self._weights_key = key
        return self.w, self.s

    def _check_bound(self, w: np.ndarray, s: np.ndarray) -> None:
        bound = 0
        for asset, amount in self.outstanding.items():
            if asset < len(w) and w[asset]:
                bound += value_of(abs(amount), int(w[asset]), int(s[asset])) + 1
        if bound >= 1 << 62:
            raise OverflowError(f"valuations could exceed int64 (bound {bound})")

    def revalue(self, amounts: np.ndarray | None = None, chunk: int = 8192) -> np.ndarray:
        """Equity of every account (int64, by row), one vectorised pass over ``amounts`` (default
        ``total``) in row chunks: ``sum_a floor(x[i, a] * w[a] / 2**s[a])``, exact in int64."""
        w, s = self.weights()
        x = self.total if amounts is None else amounts
        n = self.n_accounts if amounts is None else len(x)
        if amounts is None:
            self._check_bound(w, s)  # held <= total, so this bounds the held valuation too
        return revalue_dense(x[:n], w, s, chunk)

    def snapshot(self) -> np.ndarray:
        """Per account: ``account``, ``equity``, ``margin_used`` (held amounts valued), ``available``."""
        n = self.n_accounts
        equity = self.revalue()
        used = self.revalue(self.held[:n])
        out = np.zeros(n, dtype=[("account", "<i8"), ("equity", "<i8"), ("margin_used", "<i8"), ("available", "<i8")])
        out["account"] = self.account_ids[:n]
        out["equity"] = equity
        out["margin_used"] = used
        out["available"] = equity - used
        return out


def revalue_dense(x: np.ndarray, w: np.ndarray, s: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """``sum over columns of floor(x * w / 2**s)`` per row, exact for |x| < 2**62, ``0 <= w < 2**31``.

    With ``x = hi * 2**31 + lo`` (``hi = x >> 31`` floors, ``0 <= lo < 2**31``), ``X = hi * w`` and
    ``Y = lo * w`` both fit in int64 and ``floor(x * w / 2**s) = ((X << B) + (Y >> C)) >> A`` with
    ``A = max(s - 31, 0)``, ``B = max(31 - s, 0)``, ``C = min(s, 31)``; for a weight of 2**31 or
    more ``s`` is negative and ``Y`` is shifted left by ``D = -s`` as well."""
    a = np.maximum(s - 31, 0)
    b = np.maximum(31 - s, 0)
    c = np.clip(s, 0, 31)
    d = np.maximum(-s, 0) if (s < 0).any() else None
    out = np.empty(len(x), np.int64)
    for i in range(0, len(x), chunk):
        blk = x[i:i + chunk]
        hi = blk >> 31
        hi *= w
        hi <<= b
        lo = blk & _LOW31
        lo *= w
        lo >>= c
        if d is not None:
            lo <<= d
        hi += lo
        hi >>= a
        hi.sum(axis=1, out=out[i:i + chunk])
    return out


def bench_revalue(n_accounts: int = 100_000, n_assets: int = 70, repeat: int = 5, seed: int = 1) -> dict:
    """Time one full revaluation of ``n_accounts x n_assets`` balances; returns seconds (best, median)."""
    rng = np.random.default_rng(seed)
    total = rng.integers(0, 1 << 40, size=(n_accounts, n_assets), dtype=np.int64)
    w = rng.integers(1 << 30, 1 << 31, size=n_assets, dtype=np.int64)
    s = rng.integers(20, 60, size=n_assets, dtype=np.int64)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        revalue_dense(total, w, s)
        times.append(time.perf_counter() - t0)
    times.sort()
    return {"accounts": n_accounts, "assets": n_assets, "best_s": times[0], "median_s": times[len(times) // 2]}


__all__ = ["MarginBook", "MarginConfig", "bench_revalue", "revalue_dense", "value_of", "weight_bits"]
