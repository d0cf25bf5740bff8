"""Plain read-only views returned by the engines' query API (tests, tools, CLI)."""
from __future__ import annotations

from typing import NamedTuple


class OrderView(NamedTuple):
    order_id: int
    account: int
    client_id: int
    market: int
    venue: int
    side: int
    price: int
    qty: int
    filled: int
    remaining: int
    expire_at: int
    stp: int
    post_only: bool


class MarketView(NamedTuple):
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
    halted: bool = False


class AssetView(NamedTuple):
    asset_id: int
    symbol: str
    decimals: int
