"""Result codes, in bands by the stage that produces them.

0 is success; 1xx validation, 2xx risk, 3xx matching, 4xx venue/admin,
5xx system.  Numbers and names are stable: they travel in events, the
journal and client replies.  ``includes/codes.h`` is generated from this
table's numbers by hand and a test keeps the two equal.
"""
from __future__ import annotations

import enum


class ResultCode(enum.IntEnum):
    OK = 0
    # 1xx validation: the command is malformed or names something unknown
    UNKNOWN_COMMAND = 101
    INVALID_SIDE = 102
    INVALID_ORDER_TYPE = 103
    INVALID_TIF = 104
    INVALID_STP = 105
    PRICE_NOT_POSITIVE = 106
    PRICE_OFF_TICK = 107
    PRICE_TOO_LARGE = 108
    QTY_NOT_POSITIVE = 109
    QTY_OFF_LOT = 110
    QTY_BELOW_MIN = 111
    QTY_TOO_LARGE = 112
    UNKNOWN_MARKET = 113
    UNKNOWN_ACCOUNT = 114
    UNKNOWN_ORDER = 115
    ORDER_CLOSED = 116
    DUPLICATE_CLIENT_ID = 117
    INVALID_CLIENT_ID = 118
    UNKNOWN_ASSET = 119
    AMOUNT_NOT_POSITIVE = 120
    EXPIRED_ON_ARRIVAL = 121
    INVALID_EXPIRY = 122
    ASSET_EXISTS = 123
    MARKET_EXISTS = 124
    INVALID_ASSET_ID = 125
    INVALID_DECIMALS = 126
    INVALID_MARKET_ID = 127
    INVALID_MARKET_KIND = 128
    INVALID_TICK_SIZE = 129
    INVALID_LOT_SIZE = 130
    INVALID_MIN_SIZE = 131
    INVALID_FEES = 132
    INVALID_PRICE_BAND = 133
    SAME_BASE_AND_QUOTE = 134
    INVALID_ACCOUNT_ID = 135
    UNKNOWN_VENUE = 136
    INVALID_FLAGS = 137
    MARKET_KIND_NOT_TRADABLE = 138
    MARKET_STATUS_UNCHANGED = 139
    # 2xx risk: well formed, but the account or market cannot take it
    INSUFFICIENT_BALANCE = 201
    INSUFFICIENT_FREE_BALANCE = 202
    PRICE_OUTSIDE_BAND = 203
    BALANCE_OVERFLOW = 204
    MARKET_HALTED = 205
    ORACLE_STALE = 206
    REDUCE_ONLY_WOULD_INCREASE = 207
    INSUFFICIENT_MARGIN = 208  # the account's initial margin at mark would exceed its equity
    NOT_LIQUIDATABLE = 209  # Liquidate: the target's equity is at or above its maintenance requirement
    NOTHING_TO_LIQUIDATE = 210  # Liquidate: no open position in the venue's markets quoted in the asset
    INSURANCE_FUND_ACCOUNT = 211  # Liquidate: the target is the venue's insurance fund
    INVALID_RISK_SIZE = 212  # MarketRisk: impact size or liquidation slice (lots) negative
    FUNDING_NOT_DUE = 213  # ApplyFunding: before the market's next funding time
    NO_FUNDING_ACCOUNT = 214  # ApplyFunding: the listing venue has no insurance fund account for the remainder
    COLLATERAL_PRICE_MISSING = 215  # unified check: an asset the account owes (or must margin in) has no price
    COLLATERAL_NOT_DECLARED = 216  # VenueCollateral: the asset has no CollateralAsset (no protocol bound)
    # 220-229: outcome markets
    OUTCOME_PRICE_OUT_OF_RANGE = 220
    OUTCOME_RESOLVING = 221
    OUTCOME_RESOLVED = 222
    NO_SHARES_TO_CONVERT = 223
    INVALID_LEG_COUNT = 230  # MultiLeg: the leg count (qty) is not 2..4
    LEGS_INCOMPLETE = 231  # MultiLeg: fewer Leg records than its count follow it in the batch
    LEG_WITHOUT_HEADER = 232  # a Leg record that no MultiLeg header counts
    LEG_ACCOUNT_MISMATCH = 233  # a leg names another account than its header
    DUPLICATE_LEG_MARKET = 234  # two legs of one multi-leg order in the same market
    LEG_NOT_FILLABLE = 235  # a leg cannot fill in full at its limit: the whole order is rejected
    EXPOSURE_CAP_EXCEEDED = 236  # the margin used in the order's risk group would pass the account's cap there
    INVALID_EXPOSURE_CAP = 237  # SetExposureCap: the cap is not 0..10000 bps
    ISOLATED_MARGIN_SHORT = 238  # IsolatedMargin: the removal would leave the position below its initial margin
    POSITION_OPEN = 239  # MarginMode: the account has an open position in the market
    # 3xx matching: the order was accepted and the book ended it
    POST_ONLY_WOULD_CROSS = 301
    FOK_NOT_FILLABLE = 302
    SELF_TRADE_PREVENTED = 303
    IOC_NOT_FILLED = 304
    # 4xx venue/admin: who may act on a venue, staking, access
    NOT_VENUE_OPERATOR = 401
    NOT_ADMIN = 402
    STAKING_NOT_CONFIGURED = 403
    VENUE_EXISTS = 404
    INVALID_VENUE_ID = 405
    STAKE_BELOW_MINIMUM = 406
    INSUFFICIENT_STAKE_BALANCE = 407
    VENUE_NOT_LIVE = 408
    MARKET_NOT_OFFERED = 409
    ACCOUNT_NOT_ALLOWED = 410
    REGION_BLOCKED = 411
    VENUE_HAS_OPEN_ORDERS = 412
    UNBOND_PENDING = 413
    UNBOND_BELOW_MINIMUM = 414
    VENUE_RETIRED = 415
    INVALID_VENUE_STATUS = 416
    INVALID_VENUE_POLICY = 417
    SLASH_EXCEEDS_STAKE = 418
    INVALID_REGION = 419
    VENUE_OFFER_UNCHANGED = 420
    ACCESS_UNCHANGED = 421
    INVALID_STAKING_PARAMS = 422
    STAKE_ASSET_LOCKED = 423
    INVALID_INSURANCE_ACCOUNT = 424
    VENUE_STATUS_UNCHANGED = 425
    UNBOND_EXCEEDS_STAKE = 426
    PROTOCOL_VENUE = 427
    INVALID_VENUE_FEES = 428
    INVALID_FEE_TIER = 429
    NOTHING_TO_SWEEP = 430
    INVALID_FEED_ID = 431
    INVALID_FEED_ACCOUNT = 432
    INVALID_ORACLE_TIMEOUT = 433
    ORACLE_NOT_CONFIGURED = 434
    WRONG_FEED = 435
    WRONG_FEED_ACCOUNT = 436
    ORACLE_TIME_NOT_NEWER = 437
    INVALID_SOURCE_COUNT = 438
    INVALID_LEVERAGE = 439
    INVALID_MAINTENANCE_MARGIN = 440
    MARKET_HAS_OPEN_ORDERS = 441
    INVALID_VENUE_BAND = 442
    INVALID_OI_CAP = 443
    INVALID_BREAKER = 444
    VENUE_OI_CAP_REACHED = 445
    VENUE_MARKET_HALTED = 446
    # 450-459: outcome markets' listing and resolution
    OUTCOME_NOT_CONFIGURED = 450
    OUTCOME_CONFIGURED = 451
    INVALID_PAYOUT = 452
    INVALID_RESOLVER = 453
    INVALID_DISPUTE_WINDOW = 454
    INVALID_EVENT = 455
    NOT_RESOLVER = 456
    INVALID_OUTCOME = 457
    NOT_IN_EVENT = 458
    RESOLUTION_PENDING = 459
    INVALID_FUNDING_INTERVAL = 460  # FundingConfig: intervals not positive or the sample interval past the funding's
    INVALID_FUNDING_RATE = 461  # FundingConfig: interest, clamp or cap out of range
    INVALID_MARGIN_TIER = 462  # MarginTiers: brackets not increasing, leverage not 1..100 non-increasing
    INVALID_MARGIN_MODE = 470  # MarginMode: qty is not 0 (cross) or 1 (isolated)
    ORDERS_OPEN = 471  # MarginMode: the account has open orders in the market
    MARGIN_MODE_UNCHANGED = 472  # MarginMode: the position is already in that mode
    NO_ISOLATED_POSITION = 473  # IsolatedMargin: the account has no open isolated position in the market
    INVALID_MARGIN_AMOUNT = 474  # IsolatedMargin: the amount is 0 or beyond the money range
    INVALID_COLLATERAL_WEIGHT = 475  # CollateralAsset / VenueCollateral: weight not 0..10000 bps
    VALUATION_ASSET_EXISTS = 476  # CollateralAsset: another asset is already the valuation asset
    NO_VALUATION_ASSET = 477  # CollateralAsset with a price market before any valuation asset
    INVALID_PRICE_MARKET = 478  # CollateralAsset: the price market's base is not the asset or its quote not the valuation asset
    COLLATERAL_WEIGHT_ABOVE_BOUND = 479  # VenueCollateral: the venue's weight exceeds the protocol bound
    # 5xx system
    ORDER_CAPACITY = 501
    ACCOUNT_CAPACITY = 502
    MARKET_CAPACITY = 503
    ASSET_CAPACITY = 504
    OUT_OF_MEMORY = 505
    # 55x gateway/session: rejected at the gateway, never reach the matcher
    RATE_LIMITED = 550
    NOT_AUTHENTICATED = 551
    MALFORMED_MESSAGE = 552
    UNKNOWN_MESSAGE = 553
    MESSAGE_TOO_LARGE = 554
    BATCH_TOO_LARGE = 555
    INVALID_REQUEST = 556
    GATEWAY_STOPPING = 557
    COMMAND_LOST = 558
    GATEWAY_INTERNAL_ERROR = 559  # the gateway failed on this request (a bug): the others go on


MESSAGES: dict[ResultCode, str] = {
    ResultCode.OK: "ok",
    ResultCode.UNKNOWN_COMMAND: "unknown command kind",
    ResultCode.INVALID_SIDE: "side must be buy (0) or sell (1)",
    ResultCode.INVALID_ORDER_TYPE: "order type must be limit (0) or market (1)",
    ResultCode.INVALID_TIF: "time in force must be GTC, IOC or FOK (market orders: IOC or FOK)",
    ResultCode.INVALID_STP: "unknown self-trade prevention mode",
    ResultCode.PRICE_NOT_POSITIVE: "price must be positive",
    ResultCode.PRICE_OFF_TICK: "price is not a multiple of the market's tick size",
    ResultCode.PRICE_TOO_LARGE: "price times size overflows the money range",
    ResultCode.QTY_NOT_POSITIVE: "size must be positive",
    ResultCode.QTY_OFF_LOT: "size is not a multiple of the market's lot size",
    ResultCode.QTY_BELOW_MIN: "size is below the market's minimum size",
    ResultCode.QTY_TOO_LARGE: "size is beyond the engine's range",
    ResultCode.UNKNOWN_MARKET: "no such market",
    ResultCode.UNKNOWN_ACCOUNT: "no such account (deposit first)",
    ResultCode.UNKNOWN_ORDER: "no such order for this account",
    ResultCode.ORDER_CLOSED: "the order is already filled or cancelled",
    ResultCode.DUPLICATE_CLIENT_ID: "client order id is already used by an open order of this account",
    ResultCode.INVALID_CLIENT_ID: "client order id must be positive",
    ResultCode.UNKNOWN_ASSET: "no such asset",
    ResultCode.AMOUNT_NOT_POSITIVE: "amount must be positive",
    ResultCode.EXPIRED_ON_ARRIVAL: "expire-at is not after the engine clock",
    ResultCode.INVALID_EXPIRY: "expire-at is only allowed on GTC orders and must not be negative",
    ResultCode.ASSET_EXISTS: "an asset with this id is already listed",
    ResultCode.MARKET_EXISTS: "a market with this id is already listed",
    ResultCode.INVALID_ASSET_ID: "asset id must be in 1..capacity",
    ResultCode.INVALID_DECIMALS: "decimals must be in 0..18",
    ResultCode.INVALID_MARKET_ID: "market id must be in 1..capacity",
    ResultCode.INVALID_MARKET_KIND: "the market's kind does not fit: a listing's is spot, perpetual or outcome; "
                                    "margin, funding and market-risk commands need a perpetual, outcome ones an "
                                    "outcome market",
    ResultCode.INVALID_TICK_SIZE: "tick size must be positive",
    ResultCode.INVALID_LOT_SIZE: "lot size must be positive",
    ResultCode.INVALID_MIN_SIZE: "minimum size must be a positive multiple of the lot size",
    ResultCode.INVALID_FEES: "fees must satisfy -1000 <= maker <= taker <= 1000 bps and maker + taker >= 0",
    ResultCode.INVALID_PRICE_BAND: "price band must be in 0..10000 bps (0 = off)",
    ResultCode.SAME_BASE_AND_QUOTE: "base and quote asset must differ",
    ResultCode.INVALID_ACCOUNT_ID: "account id must be positive",
    ResultCode.UNKNOWN_VENUE: "no such venue",
    ResultCode.INVALID_FLAGS: "flags not valid for this command",
    ResultCode.MARKET_KIND_NOT_TRADABLE: "this market kind is not tradable yet",
    ResultCode.REDUCE_ONLY_WOULD_INCREASE: "a reduce-only order must be smaller than the position and on its closing side",
    ResultCode.INSUFFICIENT_MARGIN: "the account's equity at mark would not cover the initial margin of its positions",
    ResultCode.NOT_LIQUIDATABLE: "the target's equity at mark is not below its maintenance margin: it cannot be liquidated",
    ResultCode.NOTHING_TO_LIQUIDATE: "the target has no open position in the venue's perpetual markets quoted in this asset",
    ResultCode.INSURANCE_FUND_ACCOUNT: "the target is the venue's insurance fund: it is not liquidated",
    ResultCode.INVALID_RISK_SIZE: "impact size and liquidation slice (lots) must not be negative",
    ResultCode.INVALID_LEG_COUNT: "a multi-leg order has 2..4 legs (the MultiLeg header's qty)",
    ResultCode.LEGS_INCOMPLETE: "fewer Leg records than the MultiLeg header counts follow it in the batch (the input must never split one)",
    ResultCode.LEG_WITHOUT_HEADER: "a Leg record is only valid right after its MultiLeg header, within its count",
    ResultCode.LEG_ACCOUNT_MISMATCH: "a leg's account must be its MultiLeg header's",
    ResultCode.DUPLICATE_LEG_MARKET: "two legs of one multi-leg order name the same market",
    ResultCode.LEG_NOT_FILLABLE: "the leg cannot fill in full at its limit price: the multi-leg order is rejected whole",
    ResultCode.EXPOSURE_CAP_EXCEEDED: "the margin the account's positions and orders in this venue's risk group would use exceeds its exposure cap there",
    ResultCode.INVALID_EXPOSURE_CAP: "an exposure cap is 1..10000 bps of the account's equity (0 removes it)",
    ResultCode.ISOLATED_MARGIN_SHORT: "removing this margin would leave the isolated position's equity below its initial margin (or its margin below 0)",
    ResultCode.POSITION_OPEN: "the margin mode of a position can only change while it is flat",
    ResultCode.MARKET_STATUS_UNCHANGED: "the market is already in that state (halted or live)",
    ResultCode.MARKET_HALTED: "the market is halted: only cancels are taken",
    ResultCode.ORACLE_STALE: "the venue's oracle for this market is stale: only cancels and size-reducing amends are taken",
    ResultCode.INSUFFICIENT_BALANCE: "free balance cannot cover the order's hold",
    ResultCode.INSUFFICIENT_FREE_BALANCE: "withdrawal exceeds the free balance",
    ResultCode.PRICE_OUTSIDE_BAND:
        "price is outside the market's band around the last trade (an untraded perpetual: its mark)",
    ResultCode.BALANCE_OVERFLOW: "the balance would overflow",
    ResultCode.POST_ONLY_WOULD_CROSS: "post-only order would have crossed the book",
    ResultCode.FOK_NOT_FILLABLE: "fill-or-kill order could not be filled in full",
    ResultCode.SELF_TRADE_PREVENTED: "self-trade prevention",
    ResultCode.IOC_NOT_FILLED: "immediate-or-cancel remainder",
    ResultCode.NOT_VENUE_OPERATOR: "only the venue's operator account or the admin may change this venue",
    ResultCode.NOT_ADMIN: 'only the admin account may do this',
    ResultCode.STAKING_NOT_CONFIGURED: 'venue staking parameters are not set yet (VenueParams)',
    ResultCode.VENUE_EXISTS: 'a venue with this id already exists',
    ResultCode.INVALID_VENUE_ID: 'venue id must be in 1..max_venues-1',
    ResultCode.STAKE_BELOW_MINIMUM: 'the stake is below the configured minimum stake',
    ResultCode.INSUFFICIENT_STAKE_BALANCE: "the stake exceeds the account's free balance of the stake asset",
    ResultCode.VENUE_NOT_LIVE: 'the venue is halted, winding down or retired: it takes no new orders or amends',
    ResultCode.MARKET_NOT_OFFERED: "the order's venue does not offer this market",
    ResultCode.ACCOUNT_NOT_ALLOWED: "the account is not on the venue's allow-list",
    ResultCode.REGION_BLOCKED: "the venue blocks the account's region",
    ResultCode.VENUE_HAS_OPEN_ORDERS: 'the venue still has open orders: it cannot retire',
    ResultCode.UNBOND_PENDING: 'an unbonding request of this venue is already pending',
    ResultCode.UNBOND_BELOW_MINIMUM: 'a venue that is not retired must keep at least the minimum stake',
    ResultCode.VENUE_RETIRED: 'the venue is retired: only unbonding is possible',
    ResultCode.INVALID_VENUE_STATUS: 'venue status must be live, halted, winding down or retired',
    ResultCode.INVALID_VENUE_POLICY: "access mode must be 0 or 1, pool in 0..63 and the accepted pools must include the venue's own",
    ResultCode.SLASH_EXCEEDS_STAKE: "the slash exceeds the venue's locked stake",
    ResultCode.INVALID_REGION: 'region tag must be in 0..63',
    ResultCode.VENUE_OFFER_UNCHANGED: 'the venue already offers (or does not offer) this market',
    ResultCode.ACCESS_UNCHANGED: 'the account is already allowed (or not allowed) by the venue',
    ResultCode.INVALID_STAKING_PARAMS: 'minimum stake and protocol and admin accounts must be positive, unbond period not negative',
    ResultCode.STAKE_ASSET_LOCKED: 'the stake asset cannot change while any venue holds stake',
    ResultCode.INVALID_INSURANCE_ACCOUNT: "insurance account must be positive, not the operator or protocol account, and no other venue's",
    ResultCode.VENUE_STATUS_UNCHANGED: 'the venue is already in that status',
    ResultCode.UNBOND_EXCEEDS_STAKE: "the unbond amount exceeds the venue's bonded stake",
    ResultCode.PROTOCOL_VENUE: "venue 0 is the protocol's venue: it has no stake and cannot retire",
    ResultCode.INVALID_VENUE_FEES: 'venue fees must satisfy -1000 <= maker <= taker <= 1000 bps and maker + taker >= 0, split bps summing to at most 10000',
    ResultCode.INVALID_FEE_TIER: "tier must be 1..4 with a minimum volume above the previous tier's and below the next's, and a positive epoch",
    ResultCode.NOTHING_TO_SWEEP: 'the venue has collected no fees in this asset',
    ResultCode.INVALID_FEED_ID: "feed id must be positive",
    ResultCode.INVALID_FEED_ACCOUNT: "feed account must be positive",
    ResultCode.INVALID_ORACLE_TIMEOUT: "oracle staleness timeout must be positive (ns of engine clock)",
    ResultCode.ORACLE_NOT_CONFIGURED: "no oracle is configured for this venue and market",
    ResultCode.WRONG_FEED: "the feed id is not the one configured for this venue and market's oracle",
    ResultCode.WRONG_FEED_ACCOUNT: "the sender is not the feed account configured for this venue and market's oracle",
    ResultCode.ORACLE_TIME_NOT_NEWER: "the source time is not after that of the oracle's last accepted price",
    ResultCode.INVALID_SOURCE_COUNT: "the number of sources behind an oracle price must be positive",
    ResultCode.INVALID_LEVERAGE: "max leverage must be 1..100",
    ResultCode.INVALID_MAINTENANCE_MARGIN: "maintenance margin must be 1..10000 bps of the initial margin",
    ResultCode.MARKET_HAS_OPEN_ORDERS: "a market's risk parameters change only while it has no open orders",
    ResultCode.INVALID_VENUE_BAND: "a venue's price band must be in 0..10000 bps (0 = the market's own band)",
    ResultCode.INVALID_OI_CAP: "an open-interest cap must be >= 0 (0 = none), and 0 in a market that is not perpetual",
    ResultCode.INVALID_BREAKER: "breaker move must be 0..10000 bps with a positive window (ms), or 0 with window and cool-down 0 (off)",
    ResultCode.VENUE_OI_CAP_REACHED: "the venue's open interest on this side plus its open orders there and this one would pass its cap",
    ResultCode.VENUE_MARKET_HALTED: "the venue has halted this market: only cancels, size reductions and reduce-only orders are taken",
    ResultCode.OUTCOME_PRICE_OUT_OF_RANGE: "an outcome market's price must be below its payout per lot",
    ResultCode.OUTCOME_RESOLVING: "the outcome market's resolution is proposed (dispute window): only cancels are taken",
    ResultCode.OUTCOME_RESOLVED: "the outcome market is resolved and closed",
    ResultCode.NO_SHARES_TO_CONVERT: "the account holds fewer NO shares (short position) in the market than the convert size",
    ResultCode.OUTCOME_NOT_CONFIGURED: "the outcome market has no OutcomeConfig (payout, resolver) yet",
    ResultCode.OUTCOME_CONFIGURED: "the outcome market is already configured",
    ResultCode.INVALID_PAYOUT: "payout must be a multiple of the tick size, at least 2 ticks and at most 2^62",
    ResultCode.INVALID_RESOLVER: "resolver account must be positive",
    ResultCode.INVALID_DISPUTE_WINDOW: "dispute window must not be negative (ns of engine clock)",
    ResultCode.INVALID_EVENT: "event id must not be negative; an event's markets share quote asset, payout, resolver and dispute window, and it takes no market after a convert or a resolution",
    ResultCode.NOT_RESOLVER: "only the market's resolver may resolve it (and only the admin may overturn a proposed resolution)",
    ResultCode.INVALID_OUTCOME: "outcome must be 1 (YES) or 0 (NO); a market of an event resolves by naming the winner (YES)",
    ResultCode.NOT_IN_EVENT: "convert needs an outcome market in an event of at least 2 markets",
    ResultCode.RESOLUTION_PENDING: "a resolution is already proposed: only the admin may overturn it during the dispute window",
    ResultCode.FUNDING_NOT_DUE: "the market's next funding time has not come yet",
    ResultCode.NO_FUNDING_ACCOUNT: "the listing venue has no insurance fund account to take funding remainders",
    ResultCode.INVALID_FUNDING_INTERVAL: "funding and sample intervals must be positive, the sample interval at most the funding interval",
    ResultCode.INVALID_FUNDING_RATE: "interest must be within +-1e8, clamp 0..1e8 and cap 1..1e8 (units of 1e-8)",
    ResultCode.INVALID_MARGIN_TIER: "margin tiers need increasing positive notional brackets with leverage 1..100, non-increasing",
    ResultCode.INVALID_MARGIN_MODE: "margin mode must be 0 (cross) or 1 (isolated)",
    ResultCode.ORDERS_OPEN: "the margin mode of a position can only change without open orders in its market",
    ResultCode.MARGIN_MODE_UNCHANGED: "the position is already in that margin mode",
    ResultCode.NO_ISOLATED_POSITION: "the account has no open isolated position in this market",
    ResultCode.INVALID_MARGIN_AMOUNT: "the margin amount must be non-zero and within the money range",
    ResultCode.COLLATERAL_PRICE_MISSING: "an asset the account owes or must margin in has no price (its price market has no mark or fresh oracle): the unified check cannot pass",
    ResultCode.COLLATERAL_NOT_DECLARED: "the asset is not a collateral asset (CollateralAsset sets its protocol bound first)",
    ResultCode.INVALID_COLLATERAL_WEIGHT: "a collateral weight must be in 0..10000 bps",
    ResultCode.VALUATION_ASSET_EXISTS: "another asset is already the valuation asset (there is only one)",
    ResultCode.NO_VALUATION_ASSET: "declare the valuation asset (CollateralAsset with price market 0) before other collateral",
    ResultCode.INVALID_PRICE_MARKET: "the price market must be a spot or perpetual market with base = the asset and quote = the valuation asset (0 only for the valuation asset itself)",
    ResultCode.COLLATERAL_WEIGHT_ABOVE_BOUND: "a venue's collateral weight may not exceed the protocol bound (CollateralAsset's max weight)",
    ResultCode.ORDER_CAPACITY: "the engine's order pool is full",
    ResultCode.ACCOUNT_CAPACITY: "the engine's account table is full",
    ResultCode.MARKET_CAPACITY: "the engine's market table is full",
    ResultCode.ASSET_CAPACITY: "the engine's asset table is full",
    ResultCode.OUT_OF_MEMORY: "the engine could not allocate memory",
    ResultCode.RATE_LIMITED: "the account's order rate limit is exhausted (token bucket): slow down and retry",
    ResultCode.NOT_AUTHENTICATED: "the session's key is not (or no longer) registered for an account",
    ResultCode.MALFORMED_MESSAGE: "the message is not a valid request (MessagePack with the request's fields and types)",
    ResultCode.UNKNOWN_MESSAGE: "unknown request type",
    ResultCode.MESSAGE_TOO_LARGE: "the message exceeds the gateway's max_message_bytes",
    ResultCode.BATCH_TOO_LARGE: "the batch holds more requests than the gateway's max_batch",
    ResultCode.INVALID_REQUEST: "the request's fields are out of range or contradict each other",
    ResultCode.GATEWAY_STOPPING: "the gateway is shutting down and takes no new requests",
    ResultCode.COMMAND_LOST: "not executed: the matcher stopped before the command reached its journal",
    ResultCode.GATEWAY_INTERNAL_ERROR: "the gateway failed on this request and did not forward it; its other requests go on",
}

BANDS = {1: "validation", 2: "risk", 3: "matching", 4: "venue", 5: "system"}


def band(code: int) -> str:
    """The stage a code belongs to ("ok" for 0)."""
    return "ok" if code == 0 else BANDS[code // 100]


def message(code: int) -> str:
    return MESSAGES[ResultCode(code)]


def describe(code: int) -> str:
    """``NAME (code): message`` for logs and error replies."""
    rc = ResultCode(code)
    return f"{rc.name} ({int(rc)}): {MESSAGES[rc]}"


class EngineError(Exception):
    """A command was rejected; raised only at the Python edge."""

    def __init__(self, code: int):
        self.code = ResultCode(code)
        super().__init__(describe(code))
