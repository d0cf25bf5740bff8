"""Margin: the unified account view, dense and vectorised with numpy.

State (rows = accounts in order of first appearance, ``index`` maps account id -> row; columns =
assets in order of listing, ``col_of`` maps asset id -> column and ``asset_of`` back, so the arrays are
as wide as the assets in use whatever their ids):

- ``total[row, asset]`` int64: free + held, the same arithmetic as settlement (deposits and
  withdrawals from ``Balance`` events; fills: buyer ``+qty`` base and ``-(notional + fee)`` quote,
  seller ``-qty`` base and ``+(notional - fee)`` quote).
- ``held[row, asset]`` int64: the holds of the account's open orders, tracked per order from
  ``Accepted`` / ``Fill`` / ``Cancelled`` / ``Amended`` (buy: ``lots * (price + fee_per_lot)`` in the
  quote asset; sell: ``remaining`` base), so it equals the matcher's ``held``.
- ``perp`` (``positions.PositionBook``): perpetual positions, sparse, one slot per (row, market), with
  their margin mode (MarginMode's echo) and their unrealised PnL and maintenance requirement at the
  market's mark; ``upnl_sum[row, asset]``, ``maint_sum[row, asset]`` and ``margin_sum[row, asset]``
  (dense like ``total``) add up the cross positions' per quote asset, so the matcher's cross equity
  (free + margins + unrealised, order holds left out) is ``total - held + margin_sum + upnl_sum``.
- The unified account's settings (CollateralAsset / VenueCollateral echoes) and the oracle prices
  (Oracle / OracleStatus events): once a valuation asset is declared, Liquidate's trigger is the
  unified one (``unified``).
- ``marks[market]``: the latest mark price per market: the last trade price (``Fill``).

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

Each account's sum is computed exactly (``revalue_cells``, in C: each cell's amounts added, multiplied and
floored, the products added, all in 128 bits, over the cells in use), so the only rounding is the weight's
(relative error < 2**-30) and one floor per asset.  An account whose sum does not fit in int64 is not valued:
``revalue`` refuses (``ValuationOverflow``, naming the accounts), ``snapshot`` marks it (``valued`` False) and
values the others.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import NamedTuple

import numpy as np

from ..records import COMMAND_DTYPE, Cmd, Ev, MarketKind, OutcomeState, Side, join_records, select_records
from ..workercore import (MARGIN_COLUMNS, IntTable, count_kinds, largest_cross_positions, margin_holds, margin_rows,
                          nonzero_cells, revalue_cells)
from . import ASSET_LISTING, KIND_SLOTS, MARKET_LISTING, EventCore, Listings, kind_mask
from ..reference import DEFAULT_FUNDING_INTERVAL
from .positions import MARKET_SPAN, PositionBook

VIEW_DTYPE = np.dtype([("account", "<i8"), ("equity", "<i8"), ("margin_used", "<i8"), ("available", "<i8"),
                       ("maintenance", "<i8"), ("valued", "?")])  # valued False: could not be (figures 0)
POSITIONS_VIEW_DTYPE = np.dtype([("account", "<i8"), ("market", "<i8"), ("size", "<i8"), ("entry", "<i8"),
                                 ("margin", "<i8"), ("mark", "<i8"), ("upnl", "<i8"), ("maintenance", "<i8"),
                                 ("liquidation_price", "<i8"), ("adl_rank", "<i8"), ("isolated", "<i8")])
BALANCES_VIEW_DTYPE = np.dtype([("account", "<i8"), ("asset", "<i8"), ("total", "<i8"), ("held", "<i8")])
DEFAULT_MAINTENANCE_BPS = 5000  # the matcher's default: maintenance = half the initial margin

WEIGHT_BITS = 31
# listings, deposits / withdrawals and venue transfers (an amount into or out of an account's
# free balance, alike), fills, perpetual positions, every change of an order's hold, and the
# venue commands' echoes (a perpetual market's leverage: MarketRisk; margin modes; collateral settings) and the
# oracle prices (the unified account's collateral prices)
FOLLOWED = kind_mask(Ev.ACCEPTED, Ev.FILL, Ev.CANCELLED, Ev.AMENDED, Ev.BALANCE, Ev.VENUE_TRANSFER, Ev.POSITION,
                     Ev.VENUE, Ev.MARK, Ev.OUTCOME_POSITION, Ev.OUTCOME_STATUS, Ev.FUNDING, Ev.ORACLE,
                     Ev.ORACLE_STATUS)
# event kinds as plain ints (an IntEnum member costs a class attribute lookup, per batch, per use)
(_ACCEPTED, _FILL, _BALANCE, _VENUE_TRANSFER, _VENUE, _POSITION, _MARK, _FUNDING, _OUTCOME_POSITION, _OUTCOME_STATUS,
 _ORACLE, _ORACLE_STATUS) = (int(k) for k in (Ev.ACCEPTED, Ev.FILL, Ev.BALANCE, Ev.VENUE_TRANSFER, Ev.VENUE, Ev.POSITION,
                                              Ev.MARK, Ev.FUNDING, Ev.OUTCOME_POSITION, Ev.OUTCOME_STATUS, Ev.ORACLE,
                                              Ev.ORACLE_STATUS))
_BUY = int(Side.BUY)  # a numpy comparison with an IntEnum member takes ~3 us, with an int ~0.7
MARGIN_WORKER_ID = 900_000_001  # default ``account`` (the keeper) of the Liquidate commands the margin worker sends (> 0)
LIQUIDATE_RETRY_NS = 1_000_000_000  # engine time before the same Liquidate (account, asset) or ApplyFunding is sent again
_CELL_LIMIT = 1 << 62  # the unified sums' cells are valued in int64 below this over the number of assets


@dataclass
class MarginConfig:
    """``valuation_asset``: asset id or symbol (``""``/``0``: the quote asset of the first listed market).
    ``haircut_bps``: asset id or symbol -> haircut in basis points (0..10000); others get the default.
    ``account``: the sender of its Liquidate commands."""

    valuation_asset: int | str = 0
    haircut_bps: dict = field(default_factory=dict)
    default_haircut_bps: int = 0
    account: int = MARGIN_WORKER_ID  # the keeper account its Liquidate commands carry


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


ACCOUNT_ARRAYS = ("total", "held", "upnl_sum", "maint_sum", "margin_sum")  # dense: account row x asset column
# the cross slots' sums of these position columns (``positions.py``): a checkpoint leaves them out, a restore adds them
POSITION_SUMS = (("upnl_sum", "upnl"), ("maint_sum", "maint"), ("margin_sum", "margin"))
MIN_ROWS = 16  # the rows a book restored from a checkpoint has room for, at least


class SparseCells(NamedTuple):
    """A dense account x asset array in a checkpoint: its width and its non-zero cells (flat index ``row *
    width + column``, and value).  Whole, config B's 100,000 accounts pickled 523 MB (five arrays of 100,000
    x 128 int64, 6 % of the cells in use) and took ~1.2 s with the fsync, every ``checkpoint_s``."""
    width: int
    cells: np.ndarray
    values: np.ndarray

    @classmethod
    def of(cls, array: np.ndarray, nrows: int, ncols: int) -> "SparseCells":
        cells = nonzero_cells(array, nrows, ncols)
        return cls(array.shape[1], cells, array.reshape(-1)[cells])

    def dense(self, nrows: int) -> np.ndarray:
        array = np.zeros((nrows, self.width), np.int64)
        array.reshape(-1)[self.cells] = self.values
        return array


class MarginBook(EventCore):
    """Dense account x asset book (an asset's column: ``col_of``); see the module docstring."""

    def __init__(self, config: MarginConfig | None = None, *, accounts: int = 1024, assets: int = 16,
                 markets: int = 16, start_anywhere: bool = False):
        self.config = config or MarginConfig()
        self.start_anywhere = start_anywhere
        self.listings = Listings()
        self.index: dict[int, int] = {}
        self.account_ids = np.zeros(accounts, np.int64)
        # asset id -> column of the dense arrays (-1: none yet), and back: columns are given to assets as
        # they are listed, so the arrays stay as narrow as the assets in use whatever their ids
        self.col_of = np.full(16, -1, np.int64)
        self.asset_of = np.zeros(0, np.int64)
        self.total = np.zeros((accounts, assets), np.int64)
        self.held = np.zeros((accounts, assets), np.int64)
        self.perp = PositionBook()
        self.upnl_sum = np.zeros((accounts, assets), np.int64)
        self.maint_sum = np.zeros((accounts, assets), np.int64)
        self.margin_sum = np.zeros((accounts, assets), np.int64)  # the cross positions' margins
        self.leverage: dict[int, int] = {}  # perpetual market -> max leverage (MarketRisk; 1 until set)
        self.maintenance_bps: dict[int, int] = {}  # perpetual market -> maintenance bps (MarketRisk)
        self.margin_tiers: dict[int, list[tuple[int, int]]] = {}  # perpetual market -> [(floor, leverage)] (MarginTiers)
        self.funding_due: dict[int, int] = {}  # perpetual market -> its next funding time (engine clock, ns)
        # perpetual market -> (the funding time its ApplyFunding was sent for, when): a refused one (no insurance
        # fund yet) leaves the time unchanged and is sent again after LIQUIDATE_RETRY_NS
        self.funding_sent: dict[int, tuple[int, int]] = {}
        self.fundings = 0  # ApplyFunding commands sent
        self._risk_arrays = None
        # (row, asset column, market) found under maintenance by the revaluations since the caller last took them
        # (market 0: the row's cross equity in the asset; else that isolated position)
        self.under = np.zeros((0, 3), np.int64)
        self.marks: dict[int, int] = {}  # market -> last trade price (the valuation's routes)
        self.perp_marks: dict[int, int] = {}  # perpetual market -> the matcher's mark (Mark events)
        self.liquidations_sent: dict[tuple[int, int], int] = {}  # (account, asset) -> ts of the last Liquidate
        self.isolated_sent: dict[tuple[int, int], int] = {}  # (account, market) -> ts of the last isolated Liquidate
        # the unified account: the valuation asset (0: none declared, the rule is per quote asset), asset -> (price
        # market, protocol bound), (venue, asset) -> the venue's weight, (venue, market) -> (oracle price, stale)
        self.valuation = 0
        self.collateral: dict[int, tuple[int, int]] = {}
        self.venue_weights: dict[tuple[int, int], int] = {}
        self.oracles: dict[tuple[int, int], tuple[int, int]] = {}
        self.liquidations = 0  # Liquidate commands sent
        self.insurance_funds: set[int] = set()  # accounts never sent to Liquidate
        self.outcome_payout: dict[int, int] = {}  # outcome market -> payout per lot (OutcomeStatus "open")
        self.outcomes = PositionBook()  # outcome positions: size (YES > 0, NO < 0) and cost basis in ``entry``
        self.protocol_account = 0
        # order id -> (row, market index, side, price, remaining, taker bps of its buy hold)
        self.orders = IntTable(MARGIN_COLUMNS)
        self._known = (np.zeros(0, np.int64), np.zeros(0, np.int64))  # account ids sorted, their rows
        self._markets_key = None
        self._marr = None
        self._venues = None  # (markets listed, listing venue by market id): _venue_of_market's cache
        self._cursor = 0
        self._weights_key = None
        self.w = np.zeros(assets, np.int64)
        self.s = np.zeros(assets, np.int64)

    def __getstate__(self) -> dict:
        """The checkpoint: the account ids in use, the balances' and holds' non-zero cells (``SparseCells``), and
        not the position sums, which the slots give again (``POSITION_SUMS``).  Sized for 1,024 accounts with a
        dozen in use, a book pickled ~870 KB once a second, and its fsync held the matcher's durable writes back on
        the disk; ``__setstate__`` gives the room back."""
        state = self.__dict__.copy()
        n, k = len(self.index), len(self.asset_of)
        state["account_ids"] = self.account_ids[:n]
        for name in ("total", "held"):
            state[name] = SparseCells.of(state[name], n, k)
        for name, _ in POSITION_SUMS:
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict) -> None:
        """Unpickle a checkpoint (its dense arrays as non-zero cells, cut to the rows in use, or whole as
        before), also one written before orders moved into an ``IntTable`` or before they kept their own taker
        fee (those are venue 0's: their market's)."""
        room = max(MIN_ROWS, 2 * len(state["index"]))
        for name in ("total", "held"):
            if isinstance(state[name], SparseCells):
                state[name] = state[name].dense(room)
        state.pop("outstanding", None)  # an older checkpoint: the assets' totals, for an overflow bound no longer used
        self.__dict__.update(state)
        if len(self.account_ids) <= len(self.index):
            self._resize_rows(room)
        self._markets_key = None
        self._marr = None
        self._risk_arrays = None
        self._venues = None
        if "col_of" not in state:  # before asset columns: the column was the asset id
            self.col_of = np.arange(self.total.shape[1], dtype=np.int64)
            self.asset_of = self.col_of.copy()
        self.__dict__.setdefault("under", np.zeros((0, 3), np.int64))
        if self.under.shape[1] == 2:  # before isolated positions: every pair a cross one
            self.under = np.column_stack([self.under, np.zeros(len(self.under), np.int64)])
        for name, empty in (("isolated_sent", {}), ("valuation", 0), ("collateral", {}), ("venue_weights", {}),
                            ("oracles", {})):
            self.__dict__.setdefault(name, empty)
        self.__dict__.setdefault("perp_marks", {})
        self.__dict__.setdefault("liquidations_sent", {})
        self.__dict__.setdefault("liquidations", 0)
        self.__dict__.setdefault("insurance_funds", set())
        self.__dict__.setdefault("protocol_account", 0)
        self.__dict__.setdefault("outcome_payout", {})
        self.__dict__.setdefault("margin_tiers", {})
        self.__dict__.setdefault("funding_due", {})
        self.__dict__.setdefault("funding_sent", {})
        self.__dict__.setdefault("fundings", 0)
        self.__dict__.setdefault("outcomes", PositionBook())
        n = len(self.index)
        ids = self.account_ids[:n]
        order = np.argsort(ids, kind="stable")
        self._known = (ids[order], order.astype(np.int64))
        if "leverage" not in state:  # before leverage
            self.leverage = {}
        if "perp" not in state:  # dense positions without entry values (or none: before perpetual markets)
            dense = state.get("positions")
            if dense is not None and dense.any():
                raise ValueError("margin checkpoint from before position entry values holds open positions: "
                                 "it cannot be revalued; remove it so the worker rebuilds from the ring")
            self.__dict__.pop("positions", None)
            self.__dict__.pop("position_margin", None)
            self.perp = PositionBook()
            self.maintenance_bps = {}
        # the sums a checkpoint leaves out (or, before margin modes, lacked: margin_sum, every position cross)
        book, k = self.perp, len(self.perp)
        cross = np.flatnonzero(book.isolated[:k] == 0)
        for name, column in POSITION_SUMS:
            if name not in state:
                sums = np.zeros_like(self.total)
                np.add.at(sums, (book.row[cross], book.quote[cross]), getattr(book, column)[cross])
                setattr(self, name, sums)
        if isinstance(self.orders, dict):  # {order id: [row, market id, side, price, remaining]}
            where = {m: i for i, m in enumerate(self.listings.markets)}
            keys = np.array(list(self.orders), np.int64)
            vals = np.array([[o[0], where[o[1]], o[2], o[3], o[4]] for o in self.orders.values()], np.int64)
        elif self.orders.ncols < MARGIN_COLUMNS:  # [row, market index, side, price, remaining, (taker bps, leverage)]
            keys, vals = self.orders.arrays()
        else:
            return
        # the columns added since, for the orders of then: their market's taker fee, leverage 1, no NO leg
        taker_bps = np.array([m.taker_bps for m in self.listings.markets.values()] or [0], np.int64)
        vals = vals.reshape(len(keys), -1)
        if vals.shape[1] == 5:
            vals = np.column_stack([vals, taker_bps[vals[:, 1]]])
        if vals.shape[1] == 6:
            vals = np.column_stack([vals, np.ones(len(keys), np.int64)])
        table = IntTable(MARGIN_COLUMNS, len(keys))
        if len(keys):
            table.update(keys, np.column_stack([vals, np.zeros(len(keys), np.int64)]))
        self.orders = table

    @property
    def n_accounts(self) -> int:
        return len(self.index)

    # ----------------------------------------------------------------------------- storage

    def _row(self, account: int) -> int:
        r = self.index.get(account)
        if r is None:
            r = len(self.index)
            if r == len(self.account_ids):
                self._resize_rows(2 * r)
            self.index[account] = r
            self.account_ids[r] = account
        return r

    def _resize_rows(self, n: int) -> None:
        """Room for ``n`` account rows in the dense arrays (those a checkpoint from before an array lacks
        are made later, in its shape)."""
        ids = np.zeros(n, np.int64)
        ids[:len(self.account_ids)] = self.account_ids
        self.account_ids = ids
        for name in ACCOUNT_ARRAYS:
            old = self.__dict__.get(name)
            if old is not None and len(old) != n:  # (one restored from its cells already has the room)
                new = np.zeros((n, old.shape[1]), np.int64)
                new[:len(old)] = old
                setattr(self, name, new)

    def _column(self, asset: int) -> int:
        """The column of ``asset`` in the dense arrays, given on first sight (growing them)."""
        if asset < 0:
            raise KeyError(f"asset id {asset}")
        if asset >= len(self.col_of):
            self.col_of = np.concatenate([self.col_of, np.full(max(asset + 1, 2 * len(self.col_of)) - len(self.col_of),
                                                               -1, np.int64)])
        col = int(self.col_of[asset])
        if col >= 0:
            return col
        col = len(self.asset_of)
        self.col_of[asset] = col
        self.asset_of = np.append(self.asset_of, np.int64(asset))
        if col >= self.total.shape[1]:
            n = 2 * self.total.shape[1] or 4
            for name in ACCOUNT_ARRAYS:
                old = getattr(self, name)
                new = np.zeros((old.shape[0], n), np.int64)
                new[:, : old.shape[1]] = old
                setattr(self, name, new)
        self._weights_key = None
        return col

    def _cols(self, assets: np.ndarray) -> np.ndarray:
        """Columns of asset ids (vectorised; an asset seen first here gets one)."""
        assets = assets.astype(np.int64)
        if len(assets) == 0:
            return assets
        top = int(assets.max())
        if top >= len(self.col_of) or (self.col_of[assets] < 0).any():
            for a in np.unique(assets).tolist():
                self._column(a)
        return self.col_of[assets]

    # ----------------------------------------------------------------------------- apply

    FOLLOWED = FOLLOWED

    def _apply(self, new: np.ndarray, last: int) -> np.ndarray:
        """Apply the chosen events (see ``EventCore``); returns the commands to send back through the
        matcher's input (``COMMAND_DTYPE``, possibly empty): Liquidate and ApplyFunding.  Listings are learned first (they only add), then balance
        and fill amounts are added with one ``np.add.at``; holds follow each order in
        ``engine.workercore``; positions are revalued where their mark moved or they changed."""
        # how many of each kind (in C): the rare kinds' selections below are skipped in the many batches without them
        new = np.ascontiguousarray(new)
        present = np.zeros(KIND_SLOTS, np.int64)
        orderless = count_kinds(new, present)
        # listings (rare): in order, before anything that uses them
        listings = self.listings
        listing_at = np.flatnonzero((new["kind"] == _ACCEPTED) & (new["order_id"] == 0)).tolist() if orderless else []
        for i in listing_at:
            self._learn(new[i])
        if present[_VENUE]:
            self._apply_venue_echoes(select_records(new, new["kind"] == _VENUE))
        if present[_OUTCOME_STATUS]:
            configured = select_records(new, (new["kind"] == _OUTCOME_STATUS) & (new["reason"] == OutcomeState.OPEN))
            for market, payout in zip(configured["market"].tolist(), configured["price"].tolist()):
                self.outcome_payout[market] = payout  # before any order there: its sells hold at payout - price
                self._marr = None
        if present[_ORACLE] or present[_ORACLE_STATUS]:
            oracle = select_records(new, (new["kind"] == _ORACLE) | (new["kind"] == _ORACLE_STATUS))
            for kind, venue, market, price, stale in zip(*(oracle[c].tolist() for c in ("kind", "venue", "market",
                                                                                         "price", "qty"))):
                was = self.oracles.get((venue, market), (0, 0))
                self.oracles[venue, market] = (price, was[1]) if kind == _ORACLE else (was[0], stale)
        mine = select_records(new, (new["kind"] != _ACCEPTED) | (new["order_id"] != 0)) if listing_at else new
        if len(mine) == 0:
            self._cursor = last
            return np.zeros(0, COMMAND_DTYPE)
        kind = mine["kind"]  # the counts in ``present`` hold for ``mine`` too, bar the listings' Accepted
        none = np.zeros(len(mine), bool)
        is_fill = kind == _FILL if present[_FILL] else none
        is_balance = (kind == _BALANCE) | (kind == _VENUE_TRANSFER) if present[_BALANCE] or present[_VENUE_TRANSFER] \
            else none
        is_position = kind == _POSITION if present[_POSITION] else none
        is_outcome = kind == _OUTCOME_POSITION if present[_OUTCOME_POSITION] else none
        _, lot, tb, base, quote, nonspot, lev, payout, sorted_ids, order = self._market_arrays()
        # in C: the markets of the orders' Accepted, the fills and the positions, as indexes into the market
        # arrays, and the orders' account rows
        midx, rows = np.empty(len(mine), np.int64), np.empty(len(mine), np.int64)
        bad, fresh = margin_rows(mine, sorted_ids, order, *self._known, midx, rows)
        if bad >= 0:
            raise KeyError(int(mine["market"][bad]))
        fills = select_records(mine, is_fill) if present[_FILL] else mine[:0]
        taker, maker = fills["account"], fills["maker_account"]
        buy = fills["side"] == _BUY
        buyer, seller = np.where(buy, taker, maker), np.where(buy, maker, taker)
        if fresh:  # accounts seen for the first time get rows in order of first appearance (a fill: buyer, seller)
            acct = mine["account"]
            single = ~is_fill & ((kind == _ACCEPTED) | is_balance | is_position | is_outcome)
            if len(fills):
                pos = np.flatnonzero(is_fill)
                acct_pos = np.concatenate([np.flatnonzero(single) * 2, pos * 2, pos * 2 + 1])
                self._rows(np.concatenate([acct[single], buyer, seller])[np.argsort(acct_pos, kind="stable")])
            else:  # already in order
                self._rows(acct[single])
            margin_rows(mine, sorted_ids, order, *self._known, midx, rows)
        rows_of = self._rows_of()
        if is_balance.any():
            bal = select_records(mine, is_balance)
            listings.accounts.update(np.unique(bal["account"]).tolist())
            bal_cols = self._cols(bal["market"])
        # totals: deposits / withdrawals, the four legs of every fill (a perpetual's or an outcome market's
        # move no base and no notional: only its fees), realised PnL (the Position events') and the cash an
        # outcome position's move took from or put into its market's collateral (OutcomePosition's)
        positions = select_records(mine, is_position) if present[_POSITION] else mine[:0]
        cash_moves = select_records(mine, is_position | is_outcome) if len(positions) or present[_OUTCOME_POSITION] \
            else positions
        if is_balance.any() or len(fills) or len(cash_moves):
            fm = midx[is_fill]
            spot = 1 - nonspot[fm]
            notional = fills["price"] * (fills["qty"] // lot[fm]) * spot
            taker_fee, maker_fee = fills["taker_fee"], fills["maker_fee"]
            bfee = np.where(buy, taker_fee, maker_fee)
            sfee = np.where(buy, maker_fee, taker_fee)
            rb, rs = rows_of(buyer), rows_of(seller)
            qty = fills["qty"] * spot
            p_rows, p_quote = rows_of(positions["account"]), quote[midx[is_position]]
            c_rows, c_quote = rows_of(cash_moves["account"]), quote[midx[is_position | is_outcome]]
            r_idx = np.concatenate([rows_of(bal["account"]) if is_balance.any() else rows[:0], rb, rs, rb, rs, c_rows])
            a_idx = np.concatenate([bal_cols if is_balance.any() else rows[:0],
                                    base[fm], base[fm], quote[fm], quote[fm], c_quote])
            amounts = np.concatenate([bal["qty"] if is_balance.any() else rows[:0], qty, -qty,
                                      -(notional + bfee), notional - sfee, cash_moves["maker_fee"]])
            np.add.at(self.total, (r_idx, a_idx), amounts)
        if len(fills):  # the last trade price per market: the valuation routes' rates (weights)
            fmk = fills["market"]
            newest = len(fmk) - 1 - np.unique(fmk[::-1], return_index=True)[1]
            self.marks.update(zip(fmk[newest].tolist(), fills["price"][newest].tolist()))
        moved = np.zeros(0, np.int64)  # perpetual markets whose mark changed in this batch (Mark events)
        if present[_MARK]:
            mark_events = select_records(mine, kind == _MARK)
            mmk = mark_events["market"].astype(np.int64)
            newest = len(mmk) - 1 - np.unique(mmk[::-1], return_index=True)[1]
            moved, prices = mmk[newest], mark_events["price"][newest]
            self.perp_marks.update(zip(moved.tolist(), prices.tolist()))
            if self._risk_arrays is not None:
                self._risk_arrays[0][moved] = prices
        if present[_OUTCOME_POSITION]:  # each outcome position's size and cost basis after the batch (for the view)
            outcome = select_records(mine, is_outcome)
            o_rows, o_market = rows_of(outcome["account"]), outcome["market"].astype(np.int64)
            key = o_rows * (int(o_market.max()) + 1) + o_market
            newest = len(key) - 1 - np.unique(key[::-1], return_index=True)[1]
            self.outcomes.update(o_rows[newest], o_market[newest], quote[midx[is_outcome]][newest],
                                 lot[midx[is_outcome]][newest], outcome["qty"][newest], outcome["remaining"][newest],
                                 np.zeros(len(newest), np.int64))
        touched = np.zeros(0, np.int64)  # position slots changed in this batch
        if len(positions):
            # each position's size, entry and margin after the batch (its last event); the margin
            # moved between the account's free and held quote
            p_market = positions["market"].astype(np.int64)
            key = p_rows * (int(p_market.max()) + 1) + p_market
            newest = len(key) - 1 - np.unique(key[::-1], return_index=True)[1]
            last_pos = select_records(positions, newest)
            r, q = p_rows[newest], p_quote[newest]
            book = self.perp
            touched, margin_before = book.update(r, p_market[newest], q, lot[midx[is_position]][newest],
                                                 last_pos["qty"], last_pos["remaining"], last_pos["client_id"])
            margin_moved = last_pos["client_id"] - margin_before
            np.add.at(self.held, (r, q), margin_moved)
            cross = book.isolated[touched] == 0  # an isolated position's margin is in held, not in the cross sums
            np.add.at(self.margin_sum, (r[cross], q[cross]), margin_moved[cross])
        # holds before the revaluation: the cross equity it checks is free (total - held) + margins + unrealised
        margin_holds(self.orders, mine, rows, midx, self.held, lot, tb, base, quote, nonspot,
                     lev, payout)
        if len(moved) or len(touched):
            self._revalue_positions(moved, touched)
        self._cursor = last
        now = int(mine["ts"][-1])
        if present[_FUNDING]:
            funding = select_records(mine, kind == _FUNDING)
            for market, due in zip(funding["market"].tolist(), funding["maker_account"].tolist()):
                self.funding_due[market] = due  # the Funding event names the next funding time
        liquidate, funding = self._liquidate_commands(now), self._funding_commands(now)
        return join_records([liquidate, funding]) if len(funding) else liquidate

    def _apply_venue_echoes(self, venue: np.ndarray) -> None:
        """The venue commands' echoes (Venue events, ``flags`` the command kind), in this order: insurance
        funds, funding schedules, margin tiers, market risk, margin modes, collateral settings."""
        flags = venue["flags"]
        # insurance funds (the matcher never liquidates one): venues' (LaunchVenue's id), venue 0's the protocol
        # account (VenueParams' id); both echoed with the id in client_id
        funds = select_records(venue, (flags == Cmd.LAUNCH_VENUE) | (flags == Cmd.VENUE_PARAMS))
        for kind, account in zip(funds["flags"].tolist(), funds["client_id"].tolist()):
            if kind == Cmd.VENUE_PARAMS:
                self.insurance_funds.discard(self.protocol_account)
                self.protocol_account = account
            self.insurance_funds.add(account)
        configs = select_records(venue, flags == Cmd.FUNDING_CONFIG)
        for market, ts, interval in zip(*(configs[c].tolist() for c in ("market", "ts", "price"))):
            self._schedule_funding(market, ts, interval)  # a FundingConfig restarts the schedule from now
        tiers = select_records(venue, flags == Cmd.MARGIN_TIERS)
        for market, f1, f2, f3, packed in zip(*(tiers[c].tolist() for c in ("market", "price", "qty", "client_id",
                                                                             "remaining"))):
            # each echo replaces the ladder: floors f1..f3 (0: unused, and none after), leverages packed by the byte
            ladder = []
            for k, floor in enumerate((f1, f2, f3)):
                if floor == 0:
                    break
                ladder.append((floor, (packed >> (8 * k)) & 0xFF))
            self.margin_tiers[market] = ladder
            self._risk_arrays = None
            self._revalue_positions(np.array([market], np.int64), np.zeros(0, np.int64))
        risk = select_records(venue, flags == Cmd.MARKET_RISK)
        for market, leverage, maintenance in zip(risk["market"].tolist(), risk["price"].tolist(),
                                                 risk["qty"].tolist()):
            self.leverage[market] = leverage  # only while the market has no open orders: holds stay exact
            self.maintenance_bps[market] = maintenance
            self._marr = None
            self._risk_arrays = None
            self._revalue_positions(np.array([market], np.int64), np.zeros(0, np.int64))
        modes = select_records(venue, flags == Cmd.MARGIN_MODE)
        for account, market, isolated in zip(*(modes[c].tolist() for c in ("account", "market", "qty"))):
            self._set_margin_mode(account, market, isolated)
        collateral = select_records(venue, (flags == Cmd.COLLATERAL_ASSET) | (flags == Cmd.VENUE_COLLATERAL))
        for kind, venue_id, asset, price_market, weight in zip(*(collateral[c].tolist() for c in (
                "flags", "venue", "market", "client_id", "qty"))):
            if kind == Cmd.VENUE_COLLATERAL:
                self.venue_weights[venue_id, asset] = weight
            else:
                if price_market == 0:  # the valuation asset: the unified account is on from here
                    self.valuation = asset
                self.collateral[asset] = (price_market, weight)

    def _revalue_positions(self, moved: np.ndarray, touched: np.ndarray) -> None:
        """Revalue the positions of the markets whose mark ``moved`` and the ``touched`` slots; the
        (row, asset) pairs found under maintenance are kept in ``self.under`` (see ``apply``)."""
        book = self.perp
        slots = np.concatenate([touched] + [book.slots_of(m) for m in moved.tolist()]) if len(moved) else touched
        mark, lev, mm, floors, tier_lev = self._market_risk_arrays()
        under = book.revalue(slots, mark, lev, mm, floors, tier_lev, self.upnl_sum, self.maint_sum, self.total,
                             self.held, self.margin_sum)
        if len(under):
            self.under = np.unique(np.concatenate([self.under, under]), axis=0) if len(self.under) else under

    def _set_margin_mode(self, account: int, market: int, isolated: int) -> None:
        """A MarginMode echo: the (account, market) slot, created flat if new (the matcher creates the
        position too), leaves or joins the cross sums with what it holds (nothing: a mode changes only
        while flat, but a batch's Position events are applied after its modes)."""
        m = self.listings.markets[market]
        r = self._rows(np.array([account], np.int64))(np.array([account], np.int64))
        q = self._column(m.quote)
        book = self.perp
        s = int(book.slots_for(r, np.array([market], np.int64), np.array([q], np.int64),
                               np.array([m.lot_size], np.int64))[0])
        if book.isolated[s] == isolated:
            return
        sign = -1 if isolated else 1
        row = int(r[0])
        self.upnl_sum[row, q] += sign * book.upnl[s]
        self.maint_sum[row, q] += sign * book.maint[s]
        self.margin_sum[row, q] += sign * book.margin[s]
        book.isolated[s] = isolated

    def _market_risk_arrays(self) -> tuple[np.ndarray, ...]:
        """Mark, leverage and maintenance bps by market id (int64 arrays), and its margin tiers' floors and
        leverages (market id x 3; floor 0: unused); the marks kept current by ``_apply``, the rest rebuilt when
        a listing, MarketRisk or MarginTiers changed them."""
        top = max(self.listings.markets, default=0) + 1
        if self._risk_arrays is None or len(self._risk_arrays[0]) < top:
            mark = np.zeros(top, np.int64)
            lev = np.ones(top, np.int64)
            mm = np.full(top, DEFAULT_MAINTENANCE_BPS, np.int64)
            floors = np.zeros((top, 3), np.int64)
            tier_lev = np.ones((top, 3), np.int64)
            for m, p in self.perp_marks.items():
                if m < top:
                    mark[m] = p
            for m, v in self.leverage.items():
                lev[m] = v
            for m, v in self.maintenance_bps.items():
                mm[m] = v
            for m, tiers in self.margin_tiers.items():
                for k, (floor, leverage) in enumerate(tiers):
                    floors[m, k], tier_lev[m, k] = floor, leverage
            self._risk_arrays = mark, lev, mm, floors, tier_lev
        return self._risk_arrays

    def _outcome_values(self) -> tuple[np.ndarray, np.ndarray]:
        """The outcome shares held at the market's last trade price, YES lots x price, NO lots x (payout - price),
        at their cost basis before any trade: per position, its cell (flat ``row * width + quote column``, like
        ``total``'s) and value."""
        book = self.outcomes
        k = len(book)
        size, markets = book.size[:k], book.market[:k].tolist()
        mark = np.array([self.marks.get(m, 0) for m in markets], np.int64)
        payout = np.array([self.outcome_payout.get(m, 0) for m in markets], np.int64)
        lots = np.abs(size) // book.lot[:k]
        value = np.where(mark > 0, lots * np.where(size > 0, mark, payout - mark), book.entry[:k])
        value[size == 0] = 0
        return book.row[:k] * self.total.shape[1] + book.quote[:k], value

    def _isolated_sums(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The isolated positions' cells (flat, like ``total``'s), unrealised PnL and maintenance, which the cross
        sums leave out (the account view counts them)."""
        book = self.perp
        mine = np.flatnonzero(book.isolated[:len(book)] != 0)
        return book.row[mine] * self.total.shape[1] + book.quote[mine], book.upnl[mine], book.maint[mine]

    def balances_view(self) -> np.ndarray:
        """Every non-zero balance (``BALANCES_VIEW_DTYPE``: total and held, by account then asset), so a reader
        finds an account's by a binary search in the file mapped, not by loading the book (a checkpoint of
        100,000 accounts is hundreds of MB)."""
        n, k = self.n_accounts, len(self.asset_of)
        cells = nonzero_cells(self.total, n, k, self.held)  # by row, then column
        rows, cols = np.divmod(cells, self.total.shape[1])
        # rows and columns are given as accounts and assets come, so usually in id order already; else one sort
        # (a lexsort of rows and columns took 0.33 s at 100,000 accounts)
        ids = self.account_ids[:n]
        if not (np.all(ids[1:] > ids[:-1]) and np.all(self.asset_of[1:] > self.asset_of[:-1])):
            row_rank, col_rank = np.empty(n, np.int64), np.empty(k, np.int64)
            row_rank[np.argsort(ids)], col_rank[np.argsort(self.asset_of)] = np.arange(n), np.arange(k)
            order = np.argsort(row_rank[rows] * k + col_rank[cols])
            cells, rows, cols = cells[order], rows[order], cols[order]
        out = np.zeros(len(cells), BALANCES_VIEW_DTYPE)
        out["account"], out["asset"] = self.account_ids[rows], self.asset_of[cols]
        out["total"], out["held"] = self.total.reshape(-1)[cells], self.held.reshape(-1)[cells]
        return out

    def positions_view(self) -> np.ndarray:
        """Every open perpetual position (``POSITIONS_VIEW_DTYPE``, by account then market): the
        matcher's size, entry value and margin; the mark, unrealised PnL and maintenance requirement
        it is valued at; its liquidation price (``liquidation_prices``: a cross position's from its account's
        cross equity in the quote asset, an isolated one's from its own margin), its ADL rank (``adl_ranks``)
        and its margin mode (``isolated`` 1/0)."""
        book = self.perp
        slots = book.open_slots()
        out = np.zeros(len(slots), POSITIONS_VIEW_DTYPE)
        if len(slots) == 0:
            return out
        mark, lev, mm, _, _ = self._market_risk_arrays()
        rows, quotes, markets = book.row[slots], book.quote[slots], book.market[slots]
        out["account"] = self.account_ids[rows]
        out["market"] = markets
        out["size"], out["entry"], out["margin"] = book.size[slots], book.entry[slots], book.margin[slots]
        out["mark"], out["upnl"], out["maintenance"] = mark[markets], book.upnl[slots], book.maint[slots]
        isolated = book.isolated[slots]
        out["isolated"] = isolated
        # a cross position's account equity in its quote asset (the matcher's: no order holds) and its cross
        # requirement; an isolated position's own margin + unrealised and maintenance (as the terms of the sum,
        # which need not fit in int64)
        cross = isolated == 0
        equity_terms = np.stack([np.where(cross, self.total[rows, quotes], book.margin[slots]),
                                 np.where(cross, -self.held[rows, quotes], book.upnl[slots]),
                                 np.where(cross, self.margin_sum[rows, quotes], 0),
                                 np.where(cross, self.upnl_sum[rows, quotes], 0)])
        requirement = np.where(cross, self.maint_sum[rows, quotes], book.maint[slots])
        out["liquidation_price"] = liquidation_prices(out["size"], book.lot[slots], out["mark"], lev[markets],
                                                      mm[markets], equity_terms, requirement, out["maintenance"])
        out["adl_rank"] = adl_ranks(out["market"], out["size"], out["upnl"], out["margin"], out["account"])
        return out[np.lexsort((out["market"], out["account"]))]  # (a sort by fields took 0.4 s at 400,000)

    def _liquidate_commands(self, now: int) -> np.ndarray:
        """Liquidate commands for what is under maintenance: each isolated position found under (``aux`` its
        market, ``venue`` its listing venue, ``market`` its quote asset); each cross (account, asset) pair
        found under (``take_under``), or with a valuation asset declared each account under the unified rule
        (``unified``) instead, naming the risk group (listing venue) of its position with the largest
        maintenance requirement.  A target already sent less than ``LIQUIDATE_RETRY_NS`` of engine time ago
        (per (account, asset) cross, per (account, market) isolated) is not sent again, nor an insurance fund
        (the matcher re-checks every one: a refused or late one changes nothing)."""
        under = self.take_under()
        if len(under) == 0 and not self.valuation:
            return np.zeros(0, COMMAND_DTYPE)
        isolated = under[under[:, 2] != 0]
        if self.valuation:
            rows, venues, assets = self._unified_under()
        else:
            rows, venues, assets = self._cross_targets(under[under[:, 2] == 0])
        return join_records([
            self._liquidate(now, self.liquidations_sent, rows, venues, assets, assets, np.zeros(len(rows), np.int64)),
            self._liquidate(now, self.isolated_sent, isolated[:, 0], self._venue_of_market()[isolated[:, 2]],
                            isolated[:, 1], isolated[:, 2], isolated[:, 2])])

    def _cross_targets(self, under: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For (row, asset) pairs under maintenance: the rows, the listing venue of each pair's open cross
        position with the largest maintenance requirement, and the assets."""
        book = self.perp
        n = len(book)
        pair_key = under[:, 0] * (1 << 20) + self.col_of[under[:, 1]]
        slot_key = book.row[:n] * (1 << 20) + book.quote[:n]
        mine = np.flatnonzero(np.isin(slot_key, pair_key) & (book.size[:n] != 0) & (book.isolated[:n] == 0))
        order = np.lexsort((-book.maint[mine], slot_key[mine]))
        mine = mine[order]
        first = mine[np.r_[True, slot_key[mine][1:] != slot_key[mine][:-1]]] if len(mine) else mine
        venue_of = self._venue_of_market()
        by_pair = dict(zip(slot_key[first].tolist(), venue_of[book.market[first]].tolist()))
        return under[:, 0], np.array([by_pair[k] for k in pair_key.tolist()], np.int64), under[:, 1]

    def _liquidate(self, now: int, sent: dict, rows: np.ndarray, venues: np.ndarray, assets: np.ndarray,
                   keys: np.ndarray, isolated: np.ndarray) -> np.ndarray:
        """Liquidate(target row, venue, asset, aux ``isolated``) for those due: not an insurance fund, not sent
        for (account, ``keys``) within ``LIQUIDATE_RETRY_NS``."""
        funds = self.insurance_funds
        accounts = self.account_ids[rows]
        due = np.array([a not in funds and now - sent.get((a, k), -LIQUIDATE_RETRY_NS) >= LIQUIDATE_RETRY_NS
                        for a, k in zip(accounts.tolist(), keys.tolist())], bool)
        cmds = np.zeros(int(due.sum()), COMMAND_DTYPE)
        if len(cmds) == 0:
            return cmds
        cmds["kind"] = Cmd.LIQUIDATE
        cmds["account"] = self.config.account
        cmds["id"] = accounts[due]
        cmds["market"] = assets[due]
        cmds["venue"] = venues[due]
        cmds["aux"] = isolated[due]
        cmds["ts"] = now
        for a, k in zip(accounts[due].tolist(), keys[due].tolist()):
            sent[a, k] = now
        self.liquidations += len(cmds)
        return cmds

    def _venue_of_market(self) -> np.ndarray:
        """The listing venue by market id (int64 array; cached while no market is listed)."""
        markets = self.listings.markets
        cached = self._venues
        if cached is None or cached[0] != len(markets):
            venue = np.zeros(max(markets, default=0) + 1, np.int64)
            for m in markets.values():
                venue[m.market_id] = m.venue
            self._venues = cached = (len(markets), venue)
        return cached[1]

    def collateral_prices(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per asset column: ``(price, lot, priced)``, the matcher's rule: x units are worth x x price / lot
        valuation units; the valuation asset (1, 1); a collateral asset its price market's mark if perpetual,
        else that market's listing venue's oracle price while fresh; none (``priced`` False) otherwise."""
        ncol = len(self.asset_of)
        price, lot = np.zeros(ncol, np.int64), np.ones(ncol, np.int64)
        for c, asset in enumerate(self.asset_of.tolist()):
            if asset == self.valuation:
                price[c] = 1
                continue
            setting = self.collateral.get(asset)
            m = None if setting is None else self.listings.markets.get(setting[0])
            if m is None:
                continue
            if m.kind == MarketKind.PERPETUAL:
                p = self.perp_marks.get(m.market_id, 0)
            else:
                p, stale = self.oracles.get((m.venue, m.market_id), (0, 0))
                p = 0 if stale else p
            price[c], lot[c] = p, m.lot_size
        return price, lot, price > 0

    def collateral_weights(self, venues: np.ndarray) -> np.ndarray:
        """Per venue of ``venues`` and asset column: the weight (bps) the matcher uses at that venue, its own
        weight or the protocol bound, never above the bound; 0 for an asset that is no collateral."""
        ncol = len(self.asset_of)
        venues = np.asarray(venues, np.int64)
        table = np.zeros((int(venues.max(initial=0)) + 1, ncol), np.int64)  # by venue id (ids are small)
        distinct = np.flatnonzero(np.bincount(venues, minlength=1)).tolist()
        for c, asset in enumerate(self.asset_of.tolist()):
            setting = self.collateral.get(asset)
            if setting is not None:
                bound = setting[1]
                table[distinct, c] = [min(self.venue_weights.get((v, asset), bound), bound) for v in distinct]
        if len(distinct) == 1:  # one risk group (the common case): a broadcast view, no copy per row
            return np.broadcast_to(table[distinct[0]], (len(venues), ncol))
        return table[venues]

    def unified(self, rows: np.ndarray, venues: np.ndarray) -> tuple[np.ndarray, ...]:
        """The matcher's unified equity and maintenance requirement (valuation units) of ``rows`` at the
        weights of ``venues`` (one per row), and whether a price is missing (an asset with ``eq < 0`` or a
        requirement and no price: the matcher refuses such a Liquidate).  Per asset ``eq = free +`` the cross
        positions' margin and unrealised PnL (``total - held + margin_sum + upnl_sum``; outcome shares count 0:
        the worker does not follow the books' best bid and ask that the outcome mark needs, so it may send
        earlier than the matcher would liquidate, never later); a positive ``eq`` is worth
        ``floor(floor(eq x price / lot) x weight / 10000)``, a negative one ``floor(eq x price / lot)``, the
        requirement ``ceil(maint x price / lot)``.  Vectorised in int64 where every cell is below 2**62 / the
        number of assets; a row with a larger cell is summed exactly with Python integers.  Returns the
        equity and requirement (int64, clamped), ``missing`` and ``under`` (equity < requirement, exact), by row."""
        ncol = len(self.asset_of)

        def gather(a: np.ndarray) -> np.ndarray:  # whole rows first: much faster than a[rows, :ncol]
            return np.take(a, rows, axis=0)[:, :ncol]

        eq = gather(self.total) - gather(self.held) + gather(self.margin_sum) + gather(self.upnl_sum)
        req = gather(self.maint_sum)
        price, lot, priced = self.collateral_prices()
        unpriced = np.flatnonzero(~priced)
        missing = np.zeros(len(rows), bool)
        if len(unpriced):
            missing = ((eq[:, unpriced] < 0) | (req[:, unpriced] > 0)).any(axis=1)
        cols = np.flatnonzero(priced)  # the rest count nothing
        eq, req, price, lot = eq[:, cols], req[:, cols], price[cols], lot[cols]
        weight = self.collateral_weights(venues)[:, cols]
        cap = (_CELL_LIMIT // max(ncol, 1)) // np.maximum(price, 1)
        if len(cols) and (np.abs(eq).max(initial=0) > cap.min() or req.max(initial=0) > cap.min()):
            big = ((np.abs(eq) > cap) | (req > cap)).any(axis=1)
            eq, req = np.where(big[:, None], 0, eq), np.where(big[:, None], 0, req)
        else:
            big = np.zeros(len(rows), bool)
        x = eq * price // lot  # floor: a debt rounds away from zero
        # floor(x * weight / 10000) without the product: x = 10000 q + r
        value = np.where(x > 0, x // 10000 * weight + x % 10000 * weight // 10000, x)
        equity = value.sum(axis=1)
        requirement = (-(-req * price // lot)).sum(axis=1)
        under = equity < requirement
        for i in np.flatnonzero(big).tolist():
            e_sum = r_sum = 0
            for k, c in enumerate(cols.tolist()):
                row = int(rows[i])
                e = (int(self.total[row, c]) - int(self.held[row, c]) + int(self.margin_sum[row, c])
                     + int(self.upnl_sum[row, c]))
                r, pc, lc, w = int(self.maint_sum[row, c]), int(price[k]), int(lot[k]), int(weight[i, k])
                e_sum += e * pc // lc * w // 10000 if e > 0 else e * pc // lc
                r_sum += -(-r * pc // lc)
            under[i] = e_sum < r_sum
            equity[i] = max(min(e_sum, (1 << 63) - 1), -(1 << 63))
            requirement[i] = max(min(r_sum, (1 << 63) - 1), -(1 << 63))
        return equity, requirement, missing, under

    def _unified_under(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The accounts whose unified equity is below the unified maintenance, a price not missing: those with an
        open cross position, at the weights of their risk group (the listing venue of their open cross position
        with the largest maintenance), named with that venue and that position's quote asset; and those with a
        loan but no open cross position (a negative free balance of the valuation asset: the matcher liquidates
        it, its collateral standing behind it), at venue 0's weights, named with venue 0 and the valuation asset.
        Returns their rows, venues and assets."""
        book = self.perp
        n = self.n_accounts
        best = largest_cross_positions(book, n)
        v = int(self.col_of[self.valuation]) if self.valuation < len(self.col_of) else -1
        loan = (best < 0) & (self.total[:n, v] < self.held[:n, v]) if v >= 0 else np.zeros(n, bool)
        rows = np.flatnonzero((best >= 0) | loan)
        first = best[rows]
        has = first >= 0
        first = np.maximum(first, 0)
        venues = np.where(has, self._venue_of_market()[book.market[first]], 0)
        assets = np.where(has, self.asset_of[book.quote[first]], self.valuation)
        _, _, missing, under = self.unified(rows, venues)
        under &= ~missing
        return rows[under], venues[under], assets[under]

    def _schedule_funding(self, market: int, now: int, interval: int) -> None:
        """The matcher's rule: the next funding is the first multiple of the interval after ``now``."""
        self.funding_due[market] = (now // interval + 1) * interval

    def idle(self, now: int) -> np.ndarray:
        """No event for a poll interval: the engine clock is wall time (the matcher stamps each command at intake), so
        a funding time that passes on a quiet engine is due at wall time ``now``; without this a funding would wait
        for the next event."""
        return self._funding_commands(now)

    def _funding_commands(self, now: int) -> np.ndarray:
        """ApplyFunding for each perpetual market whose funding time has passed on the engine clock (the
        events' ts), once per funding time (again after ``LIQUIDATE_RETRY_NS`` if the time has not moved on:
        the matcher refused it): the worker is the funding scheduler.  The matcher checks the time
        itself (FUNDING_NOT_DUE), so an early or repeated one changes nothing; the clock moves with the
        events, and with wall time while none come (``idle``)."""
        sent = self.funding_sent
        due = [m for m, t in self.funding_due.items()
               if t <= now and (m not in sent or sent[m][0] != t or now - sent[m][1] >= LIQUIDATE_RETRY_NS)]
        cmds = np.zeros(len(due), COMMAND_DTYPE)
        if due:
            cmds["kind"] = Cmd.APPLY_FUNDING
            cmds["account"] = self.config.account
            cmds["market"] = due
            cmds["ts"] = now
            for m in due:
                sent[m] = (self.funding_due[m], now)
            self.fundings += len(due)
        return cmds

    def take_under(self) -> np.ndarray:
        """The (row, asset id, market) found under maintenance since the last call (int64[k, 3], distinct):
        market 0 for the row's cross equity in the asset, else that isolated position."""
        under, self.under = self.under, np.zeros((0, 3), np.int64)  # (row, asset column, market)
        return np.column_stack([under[:, 0], self.asset_of[under[:, 1]], under[:, 2]]) if len(under) else under

    def under_maintenance(self, rows: np.ndarray | None = None) -> np.ndarray:
        """``(rows, assets)`` pairs (two int64 arrays) among ``rows`` (default: every account) whose
        cross equity in a quote asset, ``total - held + margin_sum + upnl_sum`` (the matcher's free plus
        the cross positions' margin and unrealised PnL), is below the maintenance requirement of their
        cross positions quoted in it, ``maint_sum`` (the per-asset rule)."""
        if rows is None:
            rows = np.arange(self.n_accounts)
        maint = self.maint_sum[rows]
        r, c = np.nonzero((maint > 0) & (self.cross_equity(rows) < maint))
        return rows[r], self.asset_of[c]

    def cross_equity(self, rows: np.ndarray) -> np.ndarray:
        """Per row of ``rows`` and asset column: the matcher's cross equity, free (``total - held``) plus the
        cross positions' margin and unrealised PnL; order holds do not count."""
        return self.total[rows] - self.held[rows] + self.margin_sum[rows] + self.upnl_sum[rows]

    def _learn(self, e) -> None:
        listings = self.listings
        what = listings.classify(int(e["kind"]), int(e["flags"]), int(e["side"]), int(e["market"]), int(e["venue"]),
                                 int(e["order_id"]), int(e["account"]), int(e["client_id"]), int(e["price"]),
                                 int(e["qty"]), int(e["remaining"]))
        if what in (ASSET_LISTING, MARKET_LISTING):
            d = listings.learn(what, int(e["seq"]), int(e["side"]), int(e["market"]), int(e["venue"]),
                               int(e["account"]), int(e["client_id"]), int(e["price"]), int(e["qty"]),
                               int(e["remaining"]))
            if what == ASSET_LISTING:
                self._column(d.asset_id)
            else:
                self._column(d.base)
                self._column(d.quote)
                self._risk_arrays = None
                if d.kind == MarketKind.PERPETUAL:  # the matcher's funding schedule starts at the listing
                    self._schedule_funding(d.market_id, int(e["ts"]), DEFAULT_FUNDING_INTERVAL)
            self._markets_key = None

    def _market_arrays(self):
        """Per listed market, in listing order (a stable index, which orders keep): id, lot size,
        taker bps, base and quote (their columns), not spot (1/0: a perpetual or outcome market moves no base and holds
        quote on both sides), leverage, outcome payout (0: not an outcome market or not configured);
        plus the ids sorted and the sorting permutation (cached)."""
        markets = self.listings.markets
        if self._markets_key != len(markets) or self._marr is None:
            ms = list(markets.values())
            cols = tuple(np.array(col, np.int64) for col in (
                [m.market_id for m in ms], [m.lot_size for m in ms], [m.taker_bps for m in ms],
                [self._column(m.base) for m in ms], [self._column(m.quote) for m in ms],
                [m.kind != MarketKind.SPOT for m in ms],
                [self.leverage.get(m.market_id, 1) for m in ms],
                [self.outcome_payout.get(m.market_id, 0) for m in ms]))
            order = np.argsort(cols[0], kind="stable").astype(np.int64)
            self._marr = cols + (cols[0][order], order)
            self._markets_key = len(markets)
        return self._marr

    def _rows(self, accounts: np.ndarray):
        """Give every account of ``accounts`` (in this order) a row; returns a mapping function
        (account ids -> rows, vectorised)."""
        known, known_rows = self._known
        if len(accounts):
            i = np.searchsorted(known, accounts)
            hit = np.zeros(len(accounts), bool)
            inside = i < len(known)
            hit[inside] = known[i[inside]] == accounts[inside]
            if not hit.all():
                fresh = accounts[~hit]
                _, first = np.unique(fresh, return_index=True)
                for a in fresh[np.sort(first)].tolist():
                    self._row(a)
                ids = self.account_ids[:len(self.index)]
                order = np.argsort(ids, kind="stable")
                self._known = known, known_rows = ids[order], order.astype(np.int64)

        return self._rows_of()

    def _rows_of(self):
        """The rows of known accounts (vectorised: account ids -> rows)."""
        known, known_rows = self._known

        def rows_of(a: np.ndarray) -> np.ndarray:
            return known_rows[np.searchsorted(known, a)]

        return rows_of

    # ----------------------------------------------------------------------------- queries

    def balance(self, account: int, asset: int) -> tuple[int, int]:
        """``(total, held)``; ``(0, 0)`` for an unknown account or asset."""
        r = self.index.get(account)
        c = int(self.col_of[asset]) if 0 <= asset < len(self.col_of) else -1
        if r is None or c < 0:
            return 0, 0
        return int(self.total[r, c]), int(self.held[r, c])

    def position(self, account: int, market: int) -> dict | None:
        """A perpetual position as this book has it (``None`` if the account never had one there):
        ``size``, ``entry``, ``margin`` (the matcher's) and ``upnl``, ``maintenance`` at ``marks``."""
        r = self.index.get(account)
        key = None if r is None else self.perp.slots.get(r * MARKET_SPAN + market)
        if key is None:
            return None
        i = key[0]
        book = self.perp
        return {"size": int(book.size[i]), "entry": int(book.entry[i]), "margin": int(book.margin[i]),
                "upnl": int(book.upnl[i]), "maintenance": int(book.maint[i])}

    def balances(self, account: int) -> dict[int, tuple[int, int]]:
        """``{asset: (total, held)}`` for the assets where either is non-zero."""
        r = self.index.get(account)
        if r is None:
            return {}
        nz = np.flatnonzero((self.total[r, :len(self.asset_of)] != 0) | (self.held[r, :len(self.asset_of)] != 0))
        return {int(self.asset_of[c]): (int(self.total[r, c]), int(self.held[r, c])) for c in nz}

    def valuation_asset(self) -> int:
        if self.valuation:  # the matcher's unified account: its valuation asset
            return self.valuation
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
        if self.valuation:  # the matcher's unified account: 10000 - venue 0's weight (the protocol bound without one)
            setting = self.collateral.get(asset)
            return 10000 if setting is None else 10000 - min(self.venue_weights.get((0, asset), setting[1]), setting[1])
        cuts = {self._asset_id(k): v for k, v in self.config.haircut_bps.items()}
        return int(cuts.get(asset, self.config.default_haircut_bps))

    def rates(self) -> dict[int, Fraction]:
        """Exact value of one unit of each reachable asset in units of the valuation asset (no haircut): with the
        matcher's unified account on, the collateral prices it values with (``collateral_prices``), so the view shows
        what the matcher counts; otherwise routes over the markets' last trade prices."""
        if self.valuation:
            price, lot, priced = self.collateral_prices()
            return {int(self.asset_of[c]): Fraction(int(price[c]), int(lot[c])) for c in np.flatnonzero(priced)}
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
        if self.valuation:  # the unified account's prices and weights instead of the routes
            key = (self.valuation, tuple(sorted(self.collateral.items())), tuple(sorted(self.venue_weights.items())),
                   tuple(sorted(self.oracles.items())), tuple(sorted(self.perp_marks.items())), self.total.shape[1])
        if key != self._weights_key:
            w = np.zeros(self.total.shape[1], np.int64)
            s = np.zeros(self.total.shape[1], np.int64)
            for asset, rate in self.rates().items():
                c = int(self.col_of[asset]) if 0 <= asset < len(self.col_of) else -1
                if c >= 0:
                    cut = min(max(self.haircut(asset), 0), 10000)
                    w[c], s[c] = weight_bits(rate * Fraction(10000 - cut, 10000))
            self.w, self.s = w, s
            self._weights_key = key
        return self.w, self.s

    def _named(self, exc: ValuationOverflow) -> ValuationOverflow:
        """``exc`` saying which accounts (its rows are this book's)."""
        ids = self.account_ids[exc.rows]
        shown = ", ".join(map(str, ids[:5].tolist())) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
        exc.args = (f"the valuation of account{'s' if len(ids) > 1 else ''} {shown} does not fit in int64",)
        return exc

    def _cells(self, dense: tuple[np.ndarray, ...], sparse: tuple[tuple[np.ndarray, np.ndarray], ...] = ()
               ) -> tuple[np.ndarray, np.ndarray]:
        """The cells (flat ``row * width + column``, ascending) of the accounts in use where one of ``dense``
        (account x asset arrays, at most two) or ``sparse`` (flat cells and amounts, several to a cell) is not
        zero, with their amounts (one from each dense array and each sparse entry, a cell's side by side), for
        ``revalue_cells``.  A book's cells are mostly zero (config B: 11 % of 100,000 accounts x 70 assets)."""
        n, k = self.n_accounts, len(self.asset_of)
        cells = nonzero_cells(dense[0], n, k, *dense[1:])
        amounts = np.stack([array.reshape(-1)[cells] for array in dense], axis=1).reshape(-1)
        cells = np.repeat(cells, len(dense))
        extra = [(flat, amount) for flat, amount in sparse if len(flat)]
        if extra:
            cells = np.concatenate([cells, *(flat for flat, _ in extra)])
            amounts = np.concatenate([amounts, *(amount for _, amount in extra)])
            order = np.argsort(cells, kind="stable")
            cells, amounts = cells[order], amounts[order]
        return cells, amounts

    def _valued(self, dense: tuple[np.ndarray, ...], sparse: tuple[tuple[np.ndarray, np.ndarray], ...] = ()
                ) -> tuple[np.ndarray, np.ndarray]:
        """Per account in use (by row), ``sum_a floor(x[i, a] * w[a] / 2**s[a])`` of ``x`` the sum of ``dense``
        and ``sparse`` (``_cells``), exact, and the rows whose sum does not fit in int64 (their values 0)."""
        w, s = self.weights()
        return revalue_cells(*self._cells(dense, sparse), w, s, self.n_accounts)

    def revalue(self, dense: tuple[np.ndarray, ...], sparse: tuple[tuple[np.ndarray, np.ndarray], ...] = ()
                ) -> np.ndarray:
        """``_valued``'s values, or ``ValuationOverflow`` naming the accounts whose sum does not fit."""
        values, over = self._valued(dense, sparse)
        if len(over):
            raise self._named(ValuationOverflow(over))
        return values

    def snapshot(self) -> np.ndarray:
        """Per account, by account id (a reader finds one by a binary search): ``account``, ``equity`` (balances
        plus perpetual unrealised PnL plus outcome shares at the last trade price, valued),
        ``margin_used`` (held amounts valued: order holds and position margins), ``available``
        (equity - margin used), ``maintenance`` (the positions' maintenance requirement, valued) and ``valued``.
        An account one of whose figures does not fit in int64 is not valued (``valued`` False, figures 0): then
        ``ValuationOverflow`` names them, carrying the view with all the others valued as ``partial``."""
        n = self.n_accounts
        iso_cells, iso_upnl, iso_maint = self._isolated_sums()
        perpetuals = len(self.perp) > 0  # else the position sums are zero: no slot was ever taken (none is given back)
        equity, over = self._valued((self.total, self.upnl_sum) if perpetuals else (self.total,),
                                    ((iso_cells, iso_upnl), self._outcome_values()))
        used, over_used = self._valued((self.held,))
        out = np.zeros(n, dtype=VIEW_DTYPE)
        out["account"] = self.account_ids[:n]
        out["equity"] = equity
        out["margin_used"] = used
        out["available"] = available = equity - used
        wrapped = ((equity ^ used) & (equity ^ available)) < 0  # the difference left int64 (numpy wraps)
        over = np.union1d(np.union1d(over, over_used), np.flatnonzero(wrapped))
        if perpetuals:
            out["maintenance"], over_maint = self._valued((self.maint_sum,), ((iso_cells, iso_maint),))
            over = np.union1d(over, over_maint)
        out["valued"] = True
        for name in ("equity", "margin_used", "available", "maintenance", "valued"):
            out[name][over] = 0
        ids = out["account"]
        view = out if np.all(ids[1:] > ids[:-1]) else out[np.argsort(ids)]  # rows come in id order, usually
        if len(over):
            exc = self._named(ValuationOverflow(over))
            exc.partial = view
            raise exc
        return view


def liquidation_prices(size, lot, mark, leverage, maintenance_bps, equity_terms, maintenance, own_maintenance):
    """Per open position, the mark at which its account's equity in the quote asset would meet the
    maintenance requirement, every other position staying at its mark (int64 price: a long's rounded
    down, a short's up; the mark itself for a position liquidatable now; 0 where no int64 price does
    it: a long that can never be liquidated, a short only past 2**63 - 1).

    With ``n`` lots, ``k = maintenance_bps / (10000 * leverage)``, the account's equity ``E`` now (the
    sum of the rows of ``equity_terms``) and its requirement ``M`` now, a long's requirement at ``x`` is
    about ``M - m + n x k`` and its equity ``E + n (x - mark)``, so ``x = (M - m - E + n mark) / (n (1 -
    k))``; a short's is ``x = (E + n mark - M + m) / (n (1 + k))``.  The ceilings of the exact rule are
    left out: an estimate for the view (the liquidation itself is the exact check).  It is worked out in
    int64 where a bound in float64 shows that nothing can wrap, and in Python integers for the rest
    (huge balances or positions: rare), so no figure is a wrapped one."""
    size, lot, mark = np.asarray(size, np.int64), np.asarray(lot, np.int64), np.asarray(mark, np.int64)
    terms = np.asarray(equity_terms, np.int64).reshape(-1, len(size))
    scale = 10000 * np.asarray(leverage, np.int64)
    mm = np.asarray(maintenance_bps, np.int64)
    maintenance, own_maintenance = np.asarray(maintenance, np.int64), np.asarray(own_maintenance, np.int64)
    long = size > 0
    den = np.where(long, scale - mm, scale + mm)
    lots_f = np.abs(size.astype(np.float64)) / lot
    bound = (np.abs(terms.astype(np.float64)).sum(axis=0) + np.abs(maintenance.astype(np.float64))
             + np.abs(own_maintenance.astype(np.float64)) + lots_f * np.abs(mark.astype(np.float64)))
    # |a| <= bound, the products below <= bound * scale and lots * scale; 2**62 leaves the floats' error room
    exact = (bound * scale >= 2.0 ** 62) | (lots_f * scale >= 2.0 ** 62) | (den <= 0)
    fast = np.flatnonzero(~exact)
    out = np.zeros(len(size), np.int64)
    if len(fast):
        f_long, f_mark, f_scale, f_den = long[fast], mark[fast], scale[fast], den[fast]
        n = np.abs(size[fast]) // lot[fast]
        equity = terms[:, fast].sum(axis=0)
        m_now, m_own = maintenance[fast], own_maintenance[fast]
        a = np.where(f_long, m_now - m_own - equity + n * f_mark, equity + n * f_mark - m_now + m_own)
        safe_n = np.maximum(n, 1)
        per_lot = a // safe_n  # floor, then the remainder's share: floor(a * scale / n) without a wider type
        rem = a - per_lot * safe_n
        x_floor = (per_lot * f_scale + rem * f_scale // safe_n) // f_den
        x = np.where(f_long, np.minimum(x_floor, f_mark), np.maximum(x_floor + 1, f_mark))  # past the mark: now
        out[fast] = np.where((n == 0) | (f_long & (a <= 0)), 0, np.maximum(x, 0))
    for i in np.flatnonzero(exact).tolist():
        out[i] = _liquidation_price(int(size[i]), int(lot[i]), int(mark[i]), int(scale[i]), int(den[i]),
                                    sum(int(t) for t in terms[:, i]), int(maintenance[i]), int(own_maintenance[i]))
    return out


def _liquidation_price(size: int, lot: int, mark: int, scale: int, den: int, equity: int, maintenance: int,
                       own_maintenance: int) -> int:
    """``liquidation_prices``' rule for one position in Python integers."""
    n = abs(size) // lot
    if n == 0:
        return 0
    if size > 0:
        a = maintenance - own_maintenance - equity + n * mark
        if a <= 0:
            return 0
        if den == 0:  # the requirement moves with the price as fast as the equity: under now, under at any price
            return mark
        return max(min(a * scale // (n * den), mark), 0)
    x = max((equity + n * mark - maintenance + own_maintenance) * scale // (n * den) + 1, mark)
    return x if x < 2 ** 63 else 0


def adl_ranks(market, size, upnl, margin, account) -> np.ndarray:
    """Per open position, its place (1 = first) in the matcher's auto-deleveraging order among the
    positions on its side of its market: unrealised PnL per unit of margin (profit x leverage),
    descending, margin taken as at least 1, ties by account (ARCHITECTURE, "Liquidation, insurance
    and ADL").  Sorted by the ratio in float64 first; where float ratios are equal and the fractions are
    not (their reduced forms differ), that run is put in the exact order (Python fractions), so the ranks
    are the matcher's.  Each run used to be sorted exactly: 400,000 positions of which most were at their
    entry price (ratio 0) took 3.3 s."""
    from fractions import Fraction

    side = np.sign(size)
    margin = np.maximum(margin, 1)
    ratio = upnl / margin
    order = np.lexsort((account, -ratio, side, market))
    key = np.column_stack([market[order], side[order], ratio[order]])
    same = np.flatnonzero((key[1:] == key[:-1]).all(axis=1))  # order[i] and order[i + 1]: equal float ratios
    if len(same):
        g = np.gcd(upnl, margin)  # >= 1: margin is
        num, den = upnl // g, margin // g
        a, b = order[same], order[same + 1]
        run = np.cumsum(np.r_[True, np.diff(same) != 1])  # the run of equal float ratios each pair is in
        for r in np.unique(run[(num[a] != num[b]) | (den[a] != den[b])]).tolist():
            pairs = same[run == r]
            at = np.arange(pairs[0], pairs[-1] + 2)
            idx = order[at]
            order[at] = sorted(idx.tolist(), key=lambda i: (-Fraction(int(upnl[i]), int(margin[i])), int(account[i])))
    rank = np.empty(len(order), np.int64)
    group_start = np.r_[0, np.flatnonzero((market[order][1:] != market[order][:-1]) |
                                          (side[order][1:] != side[order][:-1])) + 1]
    starts = np.repeat(group_start, np.diff(np.r_[group_start, len(order)]))
    rank[order] = np.arange(len(order)) - starts + 1
    return rank


class ValuationOverflow(OverflowError):
    """Accounts whose valuation does not fit in int64: ``rows`` (the book's); ``partial``, the view of the others
    (``snapshot``)."""

    def __init__(self, rows: np.ndarray):
        super().__init__(f"the valuations of {len(rows)} rows do not fit in int64")
        self.rows = rows
        self.partial = None


__all__ = ["MarginBook", "MarginConfig", "ValuationOverflow", "adl_ranks", "liquidation_prices",
           "value_of", "weight_bits"]
