"""Worker cores: pure logic that consumes the matcher's events (numpy ``EVENT_DTYPE`` arrays, in
event-seq order) and never touches engine state.  The ring and process plumbing live elsewhere;
these classes are driven by ``apply(events)`` and are testable without any ring.

- ``settlement.SettlementLedger``: durable double-entry ledger in SQLite, exactly once.
- ``margin.MarginBook``: dense numpy account x asset balances, vectorised valuation.
- ``risk.RiskMonitor``: circuit breakers, band watch, order rates, open interest; returns
  Halt / Resume commands to be fed back through the matcher's input.

Shared here: the sequence rule every worker applies (``fresh_events``) and the inference of
listings from ``Accepted`` events (``Listings``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..records import EVENT_DTYPE, Ev, EvFlag, unpack_market_assets, unpack_market_params, unpack_symbol

EVFLAG_ASSET_LISTING = int(EvFlag.ASSET_LISTING)
EVFLAG_MARKET_LISTING = int(EvFlag.MARKET_LISTING)


class SequenceGapError(RuntimeError):
    """An event batch does not continue the worker's cursor (events were lost or reordered)."""


def fresh_events(events: np.ndarray, cursor: int) -> np.ndarray:
    """The part of ``events`` after ``cursor`` (events with ``seq <= cursor`` were applied already
    and are skipped: replay is idempotent).  Raises ``SequenceGapError`` unless what is left starts
    at ``cursor + 1`` and is contiguous."""
    if events.dtype != EVENT_DTYPE:
        raise TypeError(f"expected EVENT_DTYPE events, got {events.dtype}")
    if len(events) == 0:
        return events
    seq = events["seq"]
    if len(seq) > 1 and not np.all(np.diff(seq) == 1):
        bad = int(np.flatnonzero(np.diff(seq) != 1)[0])
        raise SequenceGapError(f"events not contiguous: seq {int(seq[bad])} is followed by {int(seq[bad + 1])}")
    first = int(seq[0])
    if first > cursor + 1:
        raise SequenceGapError(f"gap: cursor is {cursor}, next event in the batch is seq {first} (expected {cursor + 1})")
    return events[cursor + 1 - first:]


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
        return SettlementLedger(cfg.data_path / "settlement.sqlite")
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
    "fresh_events",
    "rows",
]
