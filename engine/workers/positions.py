"""Perpetual positions of the margin worker: sparse, revalued per market, vectorised.

One slot per (account row, market) that ever had a position (kept when flat, as in the matcher),
in arrays indexed by slot; ``IntTable.ids_of`` maps ``row * MARKET_SPAN + market`` to the slot.
Each slot keeps the matcher's ``size`` (signed base units), ``entry`` (entry value, quote units) and
``margin`` (from ``Position`` events), its margin mode (``isolated`` 1/0, from MarginMode's echo) and,
at its market's current mark, its unrealised PnL and its maintenance requirement.  Per (row, quote
asset) the caller keeps the sums of both over the cross slots (``upnl_sum``, ``maint_sum``, dense like
the balances, and the cross margins ``margin_sum``), so an account's cross equity in an asset, the
matcher's ``free + margins + unrealised``, is ``total - held + margin_sum + upnl_sum`` without walking
its positions; an isolated slot is in none of the sums and is checked alone.

A mark change in market ``m`` revalues only the slots of ``m`` (one numpy pass over its holders,
found through a per-market slot list) and moves the sums by the differences: the cost is the
market's holders, never all accounts.

The rules (exact integers, the matcher's; ARCHITECTURE "Perpetual markets"):

    lots        = |size| / lot
    notional    = mark * lots
    unrealised  = notional - entry (long), entry - notional (short)
    initial     = ceil(notional / max_leverage), or with margin tiers the sum over the notional brackets
                  of ceil(part / the bracket's leverage) (ARCHITECTURE, "Margin tiers")
    maintenance = ceil(initial * maintenance_bps / 10000)
"""
from __future__ import annotations

import numpy as np

from ..workercore import IntTable, revalue_positions

MARKET_SPAN = 1 << 24  # market ids are below this: the slot key is row * MARKET_SPAN + market
_COLUMNS = ("row", "market", "quote", "lot", "size", "entry", "margin", "upnl", "maint", "isolated")
MIN_SLOTS = 16  # the slots a book restored from a checkpoint has room for, at least


class PositionBook:
    """Positions by slot; see the module docstring."""

    def __init__(self, capacity: int = 1024):
        self.slots = IntTable(1)
        for name in _COLUMNS:
            setattr(self, name, np.zeros(capacity, np.int64))
        self.by_market: dict[int, list[np.ndarray]] = {}  # market -> its slots, in chunks as they came
        self._market_slots: dict[int, np.ndarray] = {}  # the chunks joined (cache)

    def __getstate__(self) -> dict:
        """The checkpoint: the columns cut to the slots in use (``__setstate__`` gives the room back)."""
        state = self.__dict__.copy()
        n = len(self.slots)
        for name in _COLUMNS:
            if name in state:  # (a book made as an older one was, in the tests of old checkpoints, lacks some)
                state[name] = state[name][:n]
        return state

    def __setstate__(self, state: dict) -> None:
        """Unpickle a checkpoint (its columns cut to the slots in use, or whole as before), also one from
        before margin modes (every position cross)."""
        self.__dict__.update(state)
        if "isolated" not in state:
            self.isolated = np.zeros(len(self.row), np.int64)
        if len(self.row) <= len(self.slots):
            self._resize(max(MIN_SLOTS, 2 * len(self.slots)))

    def __len__(self) -> int:
        return len(self.slots)

    def _grow(self, need: int) -> None:
        cap = len(self.row)
        if need <= cap:
            return
        while cap < need:
            cap *= 2
        self._resize(cap)

    def _resize(self, cap: int) -> None:
        for name in _COLUMNS:
            old = getattr(self, name)
            new = np.zeros(cap, np.int64)
            new[: len(old)] = old
            setattr(self, name, new)

    def slots_of(self, market: int) -> np.ndarray:
        """The slots of ``market`` (int64, in order of first position)."""
        got = self._market_slots.get(market)
        chunks = self.by_market.get(market)
        if chunks is None:
            return np.zeros(0, np.int64)
        if got is None or len(chunks) > 1:
            got = chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
            self.by_market[market] = [got]
            self._market_slots[market] = got
        return got

    def slots_for(self, rows: np.ndarray, markets: np.ndarray, quotes: np.ndarray, lots: np.ndarray) -> np.ndarray:
        """The slots of (rows[i], markets[i]), a new one (flat, cross) for a pair seen first."""
        before = len(self.slots)
        slots = self.slots.ids_of(rows * MARKET_SPAN + markets)
        after = len(self.slots)
        if after > before:
            self._grow(after)
            fresh = slots >= before
            fs = slots[fresh]
            self.row[fs], self.market[fs], self.quote[fs], self.lot[fs] = rows[fresh], markets[fresh], quotes[fresh], lots[fresh]
            fm = markets[fresh]
            order = np.argsort(fm, kind="stable")
            fm, fs = fm[order], fs[order]
            cuts = np.flatnonzero(np.diff(fm)) + 1
            for m, chunk in zip(fm[np.r_[0, cuts]].tolist(), np.split(fs, cuts)):
                self.by_market.setdefault(m, []).append(chunk)
        return slots

    def update(self, rows: np.ndarray, markets: np.ndarray, quotes: np.ndarray, lots: np.ndarray,
               sizes: np.ndarray, entries: np.ndarray, margins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Set the positions of (rows[i], markets[i]) (each pair at most once) to the matcher's
        size, entry value and margin; returns their slots and the margins they had (0 for a new
        one).  Unrealised PnL and maintenance are left for ``revalue`` (the caller revalues the
        slots at their marks)."""
        slots = self.slots_for(rows, markets, quotes, lots)
        margin_before = self.margin[slots]
        self.size[slots], self.entry[slots], self.margin[slots] = sizes, entries, margins
        return slots, margin_before

    def revalue(self, slots: np.ndarray, mark: np.ndarray, leverage: np.ndarray, maintenance_bps: np.ndarray,
                tier_floors: np.ndarray, tier_leverages: np.ndarray, upnl_sum: np.ndarray, maint_sum: np.ndarray,
                total: np.ndarray, held: np.ndarray, margin_sum: np.ndarray) -> np.ndarray:
        """Revalue ``slots`` at their market's ``mark`` (arrays by market id; 0 = no mark yet: valued
        at entry), ``leverage``, ``maintenance_bps`` and margin tiers, moving the per-(row, quote) cross
        sums by the changes (one C pass, ``workercore.revalue_positions``); returns the distinct
        ``(row, asset, market)`` found under maintenance among them, int64[k, 3]: market 0 for a
        (row, asset) whose cross equity ``total - held + margin_sum + upnl_sum`` is below ``maint_sum``,
        the market for an isolated position whose ``margin + unrealised`` is below its maintenance."""
        under = revalue_positions(np.ascontiguousarray(slots, np.int64), self, mark, leverage, maintenance_bps,
                                  tier_floors, tier_leverages, upnl_sum, maint_sum, total, held, margin_sum)
        return np.unique(under, axis=0) if len(under) > 1 else under

    def open_slots(self) -> np.ndarray:
        """Slots with a non-zero size."""
        n = len(self.slots)
        return np.flatnonzero(self.size[:n] != 0)


__all__ = ["MARKET_SPAN", "PositionBook"]
