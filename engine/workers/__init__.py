"""Worker cores: pure logic that consumes the matcher's events (numpy ``EVENT_DTYPE`` arrays, in
event-seq order) and never touches engine state.  The ring and process plumbing live elsewhere;
these classes are driven by ``apply(events)`` and are testable without any ring.

- ``settlement.SettlementLedger``: durable double-entry ledger in SQLite, exactly once.
- ``margin.MarginBook``: dense numpy account x asset balances, vectorised valuation.
- ``risk.RiskMonitor``: circuit breakers, band watch, order rates, open interest; returns
  Halt / Resume commands to be fed back through the matcher's input.

Shared here: the sequence rule every worker applies and its choice of event kinds (``select_fresh``) and the inference of
listings from ``Accepted`` events (``Listings``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..workercore import KEEP_ALL, KEEP_ORDERLESS, select_fresh as _select_fresh
from ..records import EVENT_DTYPE, Ev, EvFlag, unpack_market_assets, unpack_market_params, unpack_symbol

EVFLAG_ASSET_LISTING = int(EvFlag.ASSET_LISTING)
EVFLAG_MARKET_LISTING = int(EvFlag.MARKET_LISTING)


class SequenceGapError(RuntimeError):
    """An event batch does not continue the worker's cursor (events were lost or reordered)."""


def kind_mask(*kinds: int, orderless: tuple[int, ...] = ()) -> np.ndarray:
    """The ``keep`` argument of ``select_fresh`` and ``RingConsumer.take_kinds``: the event kinds a core
    follows, every event of ``kinds`` and only those of no order (``order_id`` 0) of ``orderless``."""
    both = sorted({int(k) for k in kinds} & {int(k) for k in orderless})
    if both:
        raise ValueError(f"kinds {both} are both followed whole and orderless")
    keep = np.zeros(max(int(k) for k in kinds + orderless) + 1, np.uint8)
    keep[[int(k) for k in kinds]] = KEEP_ALL
    keep[[int(k) for k in orderless]] = KEEP_ORDERLESS
    return keep


ALL_KINDS = np.ones(1 << 16, np.uint8)  # every uint16 kind, also ones this code does not know
KIND_SLOTS = max(Ev) + 1  # a batch's count of each event kind: ``np.bincount(kinds, minlength=KIND_SLOTS)``


def select_fresh(events: np.ndarray, cursor: int, keep: np.ndarray = ALL_KINDS) -> tuple[np.ndarray, int]:
    """``(chosen, last_seq)``: the events after ``cursor`` whose kind ``keep`` marks (a copy, in
    order; events with ``seq <= cursor`` were applied already and are skipped: replay is
    idempotent) and the seq the core's cursor moves to (``cursor`` if nothing is new).  Raises
    ``SequenceGapError`` unless what is new starts at ``cursor + 1`` and is contiguous."""
    if events.dtype != EVENT_DTYPE:
        raise TypeError(f"expected EVENT_DTYPE events, got {events.dtype}")
    chosen, last, gap_at = _select_fresh(np.ascontiguousarray(events), cursor, keep)
    if gap_at > 0:
        seq = events["seq"]
        raise SequenceGapError(f"events not contiguous: seq {int(seq[gap_at - 1])} is followed by {int(seq[gap_at])}")
    if gap_at == 0:
        raise SequenceGapError(f"gap: cursor is {cursor}, next event in the batch is seq {int(events['seq'][0])} "
                               f"(expected {cursor + 1})")
    return chosen, last


class EventCore:
    """The sequence rule every worker core shares.  A core names the event kinds it follows in
    ``FOLLOWED`` (``kind_mask``) and applies them in ``_apply(chosen, last)``: ``chosen`` are the
    new events of those kinds, in order, and ``last`` is the seq its cursor moves to.  It is fed
    either whole batches (``apply``) or what a ring consumer's ``take_kinds(n, FOLLOWED)`` chose
    (``apply_taken``); either way events at or before the cursor are skipped and a gap raises
    ``SequenceGapError``.  With ``start_anywhere`` a fresh core starts at its first event."""

    FOLLOWED = ALL_KINDS
    start_anywhere = False
    _cursor = 0

    @property
    def cursor(self) -> int:
        """Seq of the last event applied (0 before any)."""
        return self._cursor

    def _apply(self, chosen: np.ndarray, last: int):
        raise NotImplementedError

    def apply(self, events: np.ndarray):
        """Apply a batch (EVENT_DTYPE, seq order)."""
        if self._cursor == 0 and self.start_anywhere and len(events):
            self._cursor = int(events["seq"][0]) - 1
        return self._apply(*select_fresh(events, self._cursor, self.FOLLOWED))

    def apply_taken(self, chosen: np.ndarray, first: int, last: int):
        """Apply the events of kinds ``FOLLOWED`` among seqs ``first .. last`` (``chosen``)."""
        if last < first:  # nothing taken
            return self._apply(chosen[:0], self._cursor)
        if self._cursor == 0 and self.start_anywhere:
            self._cursor = first - 1
        cursor = self._cursor
        if first > cursor + 1:
            raise SequenceGapError(f"gap: cursor is {cursor}, next event taken is seq {first} (expected {cursor + 1})")
        if last <= cursor:
            return self._apply(chosen[:0], cursor)
        if first <= cursor:
            chosen = chosen[chosen["seq"] > cursor]
        return self._apply(chosen, last)


@dataclass(frozen=True)
class AssetDef:
    asset_id: int
    symbol: str
    decimals: int
    seq: int = 0  # event seq of the listing


@dataclass(frozen=True)
class MarketDef:
    market_id: int
    venue: int
    kind: int
    base: int
    quote: int
    tick_size: int
    lot_size: int
    min_size: int
    maker_bps: int
    taker_bps: int
    band_bps: int
    seq: int = 0


ORDER, MASS_CANCEL, ASSET_LISTING, MARKET_LISTING, UNKNOWN = "order", "mass_cancel", "asset", "market", "unknown"


class Listings:
    """Assets, markets and known accounts as learned from events.

    An ``Accepted`` event with ``order_id > 0`` is an order's; a listing's carries the
    ``ASSET_LISTING`` or ``MARKET_LISTING`` flag and echoes the definition; any other is a
    MassCancel's.
    """

    def __init__(self) -> None:
        self.assets: dict[int, AssetDef] = {}
        self.markets: dict[int, MarketDef] = {}
        self.accounts: set[int] = set()

    def classify(self, kind, flags, side, market, venue, order_id, account, client_id, price, qty, remaining) -> str:
        if kind != Ev.ACCEPTED:
            return UNKNOWN
        if order_id > 0:
            return ORDER
        if flags & EVFLAG_ASSET_LISTING:
            return ASSET_LISTING
        if flags & EVFLAG_MARKET_LISTING:
            return MARKET_LISTING
        return MASS_CANCEL

    def learn(self, what, seq, side, market, venue, account, client_id, price, qty, remaining):
        """Record a listing classified by ``classify``; returns the new definition."""
        if what == ASSET_LISTING:
            try:
                symbol = unpack_symbol(client_id, remaining)
            except (UnicodeDecodeError, OverflowError):
                symbol = ""
            d = AssetDef(market, symbol, price, seq)
            self.assets[market] = d
            return d
        base, quote = unpack_market_assets(account)
        maker, taker, band = unpack_market_params(remaining)
        d = MarketDef(market, venue, side, base, quote, price, qty, client_id, maker, taker, band, seq)
        self.markets[market] = d
        return d


# the event columns the workers read, in this order, as Python lists (fast iteration)
COLUMNS = ("seq", "kind", "code", "flags", "side", "reason", "market", "venue", "ts", "order_id", "account",
           "client_id", "price", "qty", "remaining", "maker_order", "maker_account", "maker_fee", "taker_fee")


def rows(events: np.ndarray):
    """Iterate ``events`` as tuples in ``COLUMNS`` order."""
    return zip(*(events[name].tolist() for name in COLUMNS))


def fee_per_lot(price: int, taker_bps: int) -> int:
    """Worst-case taker fee per lot: ``ceil(price * max(taker_bps, 0) / 10000)``."""
    return -((-price * max(taker_bps, 0)) // 10000)


def buy_hold(lots: int, price: int, taker_bps: int) -> int:
    """A buy order's hold in the quote asset: ``lots * (price + fee_per_lot)``."""
    return lots * (price + fee_per_lot(price, taker_bps))


def make_core(role: str, cfg):
    """The worker core for ``role`` ("settlement", "margin", "risk") from an ``engine.config.Config``.

    Settlement is durable on its own (its cursor commits with each batch); margin and risk are
    in memory and the worker process checkpoints them (``engine.process.WorkerStage``).
    """
    if role == "settlement":
        from .settlement import SettlementLedger

        cfg.data_path.mkdir(parents=True, exist_ok=True)
        return SettlementLedger(cfg.ledger_path)
    if role == "margin":
        from .margin import MarginBook, MarginConfig

        m = cfg.margin
        return MarginBook(MarginConfig(valuation_asset=m.valuation_asset, haircut_bps=dict(m.haircuts_bps)))
    if role == "risk":
        from .risk import RiskConfig, RiskMonitor

        r = cfg.risk
        return RiskMonitor(RiskConfig(move_bps=r.move_bps, window_s=r.window_s, cooldown_s=r.cooldown_s),
                           start_anywhere=False)
    raise ValueError(f"unknown worker role {role!r}")


__all__ = [
    "AssetDef",
    "make_core",
    "EVFLAG_ASSET_LISTING",
    "EVFLAG_MARKET_LISTING",
    "Listings",
    "MarketDef",
    "SequenceGapError",
    "buy_hold",
    "fee_per_lot",
    "EventCore",
    "kind_mask",
    "select_fresh",
    "rows",
]
