"""Assets and markets as the gateway processes learn them (``engine.workers.Listings``): from a matcher
snapshot's state, then from the listing echoes on the ring (the admin's AddAsset and AddMarket, a venue's
ListMarket: an ``Accepted`` event flagged ``ASSET_LISTING`` or ``MARKET_LISTING`` carrying the whole
definition).  Shared by the market-data publisher and the order-entry gateway."""
from __future__ import annotations

import numpy as np

from engine.records import EvFlag, MarketKind, unpack_symbol
from engine.workers import ASSET_LISTING, MARKET_LISTING, AssetDef, Listings, MarketDef

ASSET_FLAG, MARKET_FLAG = int(EvFlag.ASSET_LISTING), int(EvFlag.MARKET_LISTING)
PERPETUAL_KINDS = (int(MarketKind.PERPETUAL), "perpetual")  # a kind as the matcher and as MarketInfo name it


def market_symbols(markets) -> dict[int, str]:
    """Each market's unified symbol (CCXT's convention), from ``(market id, base symbol, quote symbol, kind)`` in any
    order: ``BASE/QUOTE`` for spot and outcome markets, ``BASE/QUOTE:QUOTE`` for a perpetual (a linear swap settled in
    its quote), so a spot market and its perpetual never share one; a symbol a lower market id already has gets
    ``#ID``. The client, the gateway and market data name markets by this one rule."""
    out: dict[int, str] = {}
    taken: set[str] = set()
    for market, base, quote, kind in sorted(markets):
        symbol = f"{base}/{quote}:{quote}" if kind in PERPETUAL_KINDS else f"{base}/{quote}"
        if symbol in taken:
            symbol = f"{symbol}#{market}"
        taken.add(symbol)
        out[market] = symbol
    return out
LISTING_COLUMNS = ("seq", "flags", "side", "market", "venue", "account", "client_id", "price", "qty", "remaining")


def seed_from_state(listings: Listings, state: dict) -> None:
    """Every asset and market of a snapshot's state (``engine.snapshot``) into ``listings``."""
    for asset, decimals, lo, hi in state["assets"][["asset", "decimals", "symbol_lo", "symbol_hi"]].tolist():
        try:
            symbol = unpack_symbol(lo, hi)
        except (UnicodeDecodeError, OverflowError):  # the matcher takes any 16 bytes; a name is ASCII
            symbol = ""
        listings.assets[asset] = AssetDef(asset, symbol, decimals)
    m = state["markets"]
    for row in m.tolist():
        d = dict(zip(m.dtype.names, row))
        listings.markets[d["market"]] = MarketDef(d["market"], d["venue"], d["kind"], d["base"], d["quote"],
                                                  d["tick_size"], d["lot_size"], d["min_size"], d["maker_bps"],
                                                  d["taker_bps"], d["band_bps"])


def learn_from_events(listings: Listings, accepted: np.ndarray) -> list[int]:
    """The listings among ``accepted`` (Accepted events with no order: listings and MassCancel echoes, which
    carry nothing here) into ``listings``; returns the ids of the markets listed."""
    markets = []
    for seq, flags, side, market, venue, account, client_id, price, qty, remaining in zip(
            *(accepted[name].tolist() for name in LISTING_COLUMNS)):
        if flags & MARKET_FLAG:
            listings.learn(MARKET_LISTING, seq, side, market, venue, account, client_id, price, qty, remaining)
            markets.append(market)
        elif flags & ASSET_FLAG:
            listings.learn(ASSET_LISTING, seq, side, market, venue, account, client_id, price, qty, remaining)
    return markets
