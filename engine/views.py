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


class MarketRiskView(NamedTuple):
    """A perpetual market's risk parameters (MarketRisk)."""
    market_id: int
    max_leverage: int  # orders hold ceil(price / max_leverage) per lot, positions that much margin
    maintenance_bps: int  # maintenance margin, in bps of the initial margin
    impact_lots: int  # the size (lots) whose fill prices on each side make the impact mid
    liquidation_slice: int  # the most lots one liquidation IOC order closes (0: the whole position)
    mark: int  # the mark price now (0: none yet); ARCHITECTURE, "Liquidation, insurance and ADL"


class FundingView(NamedTuple):
    """A perpetual market's funding configuration and schedule (FundingConfig, ApplyFunding; rates in 1e-8)."""
    market_id: int
    interval: int  # ns of engine clock between fundings
    sample_interval: int  # ns of engine clock between premium samples
    interest: int  # interest rate per interval
    clamp: int  # the interest term is clamp(interest - premium, -clamp, +clamp)
    cap: int  # the rate is capped at +-cap per interval
    next_sample: int  # engine clock of the next premium sample
    next_funding: int  # engine clock from which ApplyFunding is accepted
    premium_sum: int  # sum of the premiums sampled since the last funding
    samples: int  # how many


class MarginTiersView(NamedTuple):
    """A perpetual market's notional brackets (MarginTiers): ((floor, max leverage), ...), the first (0, MarketRisk's
    max leverage)."""
    market_id: int
    brackets: tuple


class AssetView(NamedTuple):
    asset_id: int
    symbol: str
    decimals: int


class VenueView(NamedTuple):
    venue_id: int
    operator: int  # 0 for venue 0 (the protocol's: the admin changes it)
    insurance_account: int
    status: int  # records.VenueStatus
    access: int  # records.VenueAccess
    pool: int  # its orders' matching pool (0..63)
    accepts: int  # bit mask of the pools its orders may trade with (unsigned)
    blocked_regions: int  # bit mask of region tags that may not place orders (unsigned)
    stake: int  # bonded
    unbonding: int  # requested, still locked until unbond_at
    unbond_at: int  # engine clock (ns); 0 when nothing is unbonding
    open_orders: int


class VenueParamsView(NamedTuple):
    admin: int  # 0 until VenueParams has run: no venue can launch
    protocol_account: int
    stake_asset: int
    min_stake: int
    unbond_period: int  # ns of engine clock


class VenueFeesView(NamedTuple):
    maker_bps: int  # tier 0 (no volume); venue 0 charges each market's own fees instead
    taker_bps: int
    operator_bps: int  # split of swept fees; the protocol gets the rest and the rounding remainder
    insurance_bps: int
    tier_asset: int  # fills in markets quoted in this asset count towards tiers
    tier_epoch: int  # ns of engine clock; an order's tier comes from the previous epoch's volume
    tiers: tuple  # ((min_volume, maker_bps, taker_bps), ...) ascending


class PositionView(NamedTuple):
    account: int
    market: int  # a perpetual market
    size: int  # signed, base units: > 0 long, < 0 short
    entry_value: int  # quote: what the open size cost (sum of price x lots, less the closed parts' shares)
    margin: int  # quote held for it (in the account's held quote balance)
    realised: int  # quote: PnL realised into the free quote balance so far (signed)


class OracleView(NamedTuple):
    venue: int
    market: int
    feed_id: int  # the feed allowed to update it (OracleConfig)
    feed_account: int  # the account its OraclePrice commands must come from
    timeout: int  # ns of engine clock without a price before it is stale
    price: int  # the latest accepted price (0: none yet)
    source_ts: int  # that price's source time (the feed's clock)
    sources: int  # how many sources that price is the median of
    updated_at: int  # engine clock of that price (of the configuration before the first)
    stale: bool


class OutcomeView(NamedTuple):
    market: int  # an outcome market with an OutcomeConfig
    state: int  # records.OutcomeState: 1 open, 2 resolution proposed, 3 final (4 final by the admin)
    outcome: int  # proposed or final: 1 YES won, 0 NO won (0 while open)
    payout: int  # quote per lot a winning share pays (price ticks; prices lie strictly between 0 and it)
    resolver: int  # the account whose Resolve proposes the outcome
    dispute_window: int  # ns of engine clock a proposal waits for the admin before it is final (0: final at once)
    event: int  # the multi-outcome event it belongs to (0: standalone)
    finalize_at: int  # engine clock when the proposed resolution becomes final (0 unless proposed)
    collateral: int  # quote locked for its shares: payout x YES lots outstanding = payout x NO lots
    event_no: int  # NO shares (base units) held by its event from converts (counted in NO outstanding)


class OutcomeEventView(NamedTuple):
    event: int
    markets: int  # how many outcome markets belong to it
    converted: int  # base units of NO converted into YES so far
    advance: int  # quote the engine advanced to mint converts' YES shares, repaid at the final resolution


class CollateralAssetView(NamedTuple):
    """An asset counted in unified equity (CollateralAsset)."""

    asset: int
    price_market: int  # base = the asset, quote = the valuation asset; 0: the valuation asset itself
    max_weight_bps: int  # the protocol bound on every venue's weight (10000 - the smallest haircut)


class VenueCollateralView(NamedTuple):
    """A venue's own weight for a collateral asset (VenueCollateral), at most the protocol bound."""

    venue: int
    asset: int
    weight_bps: int


class VenueMarketRiskView(NamedTuple):
    """A venue's own risk settings and open interest in one market (VenueMarketRisk, VenueMarketHalt)."""

    venue: int
    market: int
    band_bps: int  # its orders' price band around the last trade (0: the market's own band)
    oi_cap: int  # perpetual markets: bound on each side's open interest, base units (0: none)
    breaker_move_bps: int  # circuit breaker for the risk worker (0: none)
    breaker_window_ms: int
    breaker_cooldown_ms: int
    halted: bool  # its new orders in this market are refused
    long_oi: int  # long size its orders' fills opened less the long size they closed
    short_oi: int
    open_buy: int  # remaining size of its open orders, per side (perpetual markets)
    open_sell: int
