"""Pure-Python reference model of the matcher (docs/ARCHITECTURE.md, "Engine semantics").

The Cython engine (``engine.matcher.Engine``) and this model are compared
event for event and state for state, so this file favours being obviously
right over being fast: plain dicts, lists, ``heapq``, Python ints (no
overflow anywhere, so the spec's bounds are checked explicitly).

Interpretation choices
======================
Where docs/ARCHITECTURE.md leaves room, this model does the following (the
Cython engine must do the same):

1.  Event order of one command: expiry ``Cancelled(EXPIRED)`` events (step 2)
    come first, then the command's own events (``Rejected`` for a failed
    command), then its Mark events.  So "a failed command starts with
    Rejected" means the command's *own* events; expiries triggered by the
    command's ts precede it.  Expiry runs for every command kind, rejected and
    unknown ones included.  The ``BookLevel`` events come once per batch
    (``process``), after all its commands: one per level the batch changed, in
    order of first touch, with the level's aggregate at the batch's end.
2.  Result codes of ``Cancelled`` events: USER, EXPIRED and MASS carry code 0
    (OK); STP (maker and taker side, all four modes) SELF_TRADE_PREVENTED;
    IOC IOC_NOT_FILLED; FOK FOK_NOT_FILLABLE; POST_ONLY POST_ONLY_WOULD_CROSS.
3.  Fields not named by the spec are 0.  Per event kind:
    - Accepted (place): order_id, account, client_id, side, price, qty,
      remaining=qty, market, venue (the order's); for an order of a venue other
      than 0, maker_fee / taker_fee = the order's fee rates in bps.
    - Accepted (mass cancel): account, qty = count, market = the command's
      market, or 0 with ALL_MARKETS; venue 0.
    - Accepted (add asset / add market): the listing itself, so that event
      consumers need no other source: market = the new id, and the command's
      side, venue, account, price, qty, id (in client_id) and aux (in
      remaining); all else 0.
    - Rejected: code, and from the command account, market, venue, side,
      price, qty, client_id = cmd.id (verbatim, e.g. AddMarket's packed
      account); all else 0 (reason, flags, order_id, remaining, ...).
    - Fill: side/venue/order_id/account of the taker, client_id = maker's
      venue, price = maker's price, qty, remaining = taker's remaining after,
      maker_order, maker_account, maker_fee, taker_fee, market, flags.
    - Cancelled / Amended: order_id, account, client_id, side, price (the
      order's, for Amended the new one), qty, remaining, market, venue,
      reason (Cancelled), code, flags (Amended).
    - BookLevel: market, venue (the market's), side, price, qty = aggregate
      open qty, remaining = order count; all else 0.
    - Balance: account, market = asset, qty = +amount / -amount,
      remaining = free after, taker_fee = held after; all else 0.
4.  Cancel / amend by order id: an id in ``1..last_order_id`` that is not an
    open order is ORDER_CLOSED whatever account placed it (closed orders are
    not remembered by account); an open order of another account is
    UNKNOWN_ORDER; an id outside the range UNKNOWN_ORDER.  By client id only
    open orders are searched (any miss, including client id <= 0, is
    UNKNOWN_ORDER).
5.  Client ids are unique per account across all markets (among open orders).
    An incoming order only becomes "open" (order(), l3, duplicate check,
    cancel) when it rests; ids of orders that never rest are closed at once.
6.  ``OrderView.qty`` is always ``filled + remaining``: the size as placed,
    after an amend ``filled + new remaining``, and an STP DECREMENT_BOTH
    decrement comes off it as it comes off ``remaining``; ``filled`` counts
    fills only.
7.  Amend: "size increases" means new qty > current remaining.  The order
    keeps priority iff (price == 0 or price == current price) and new qty <=
    remaining; a no-op amend still emits Amended (flags 0) and touches the
    level.  The band check applies only when price != 0 and differs from the
    current price.  "The hold bound" is read as PlaceOrder's two bounds, in
    the same place: new qty <= MAX_MONEY (QTY_TOO_LARGE), then
    ``new_lots * (new_price + fpl(new_price)) <= MAX_MONEY`` for either side
    (PRICE_TOO_LARGE), both after QTY_BELOW_MIN and before the band.  The extra hold is new hold - current hold
    of the remaining (buy: lots x (price + fpl), sell: qty); only a positive
    extra must fit free.  On losing priority the order leaves its level (first
    touch: the old level), its hold is reset to the new hold, Amended
    (PRIORITY_LOST) is emitted, then post-only check (if the order is
    post-only), matching with the order's own STP mode as taker, then rest
    at the back of its (new) level.  expire_at is kept; the expiry heap keeps
    its one (expire_at, order_id) entry.
8.  The price band check applies to market orders too (their protection
    price); "has traded" means last price > 0.  last price is per market and
    set by every fill (STP decrements are not trades).  A perpetual that has
    not traded is banded around its mark when it has one (mark > 0).
9.  ORDER_CAPACITY compares the number of resting (open) orders with
    max_orders; ACCOUNT_CAPACITY the number of accounts with max_accounts.
    ASSET_CAPACITY / MARKET_CAPACITY are unreachable (ids are range-checked).
10. Commands' unused fields and flags are ignored; Deposit, Withdraw,
    AddAsset and AddMarket do not check flags.  Venue is checked only by
    PlaceOrder (against the market's) and AddMarket (must be 0).  The AddAsset
    symbol is not validated: it is stored as the (id, aux) pair and shown via
    ``unpack_symbol`` (latin-1 if the bytes are not ASCII).
11. The FOK pre-check stops as soon as the sum reaches the order's qty
    (equivalent to the full walk).  A FOK order that passes always fills
    completely, so no FOK remainder can be left (an IOC-style cancel would be
    used, but it is unreachable).
12. MassCancel's Accepted count and Cancelled events cover the account's
    resting orders (in the market, or all with ALL_MARKETS) in order id order.
    The market must exist unless ALL_MARKETS, whatever its kind.
13. Deposit creates the balance entry (and the account).  An accepted order
    creates the account's base and quote entries of its market (at (0, 0)
    if absent; so fills never need to create one).  Rejected commands create
    nothing.  ``balances()`` lists every asset with an entry, (0, 0) ones
    included, in asset id order.
14. The maker's hold per lot uses the fpl computed from ITS price (and its own taker
    fee, fixed when it was placed) when it was placed/amended, both for release
    on fills and on cancels.
15. AddMarket: base unknown or quote unknown is UNKNOWN_ASSET before
    SAME_BASE_AND_QUOTE; min size <= 0 or not a multiple of lot is
    INVALID_MIN_SIZE; fees are checked before the band.  Assets and markets
    are listed in id order by ``assets()`` / ``markets()``.
"""
from __future__ import annotations

import heapq
from bisect import bisect_left, insort
from collections import OrderedDict
from fractions import Fraction
from typing import NamedTuple

import numpy as np

from .api import MAX_LEGS, CommandAPI
from .codes import ResultCode as RC
from .records import (
    EVENT_DTYPE,
    RATE_SCALE,
    CancelReason,
    Cmd,
    CmdFlag,
    Deleverage,
    Ev,
    EvFlag,
    MarketKind,
    OrdType,
    OutcomeChange,
    OutcomeState,
    Side,
    Stp,
    Tif,
    Transfer,
    VenueAccess,
    VenueStatus,
    pack_market_assets,
    pack_market_params,
    unpack_breaker_windows,
    unpack_funding_limits,
    unpack_listing,
    unpack_market_assets,
    unpack_market_params,
)
from .views import (AssetView, CollateralAssetView, FundingView, MarginTiersView, MarketRiskView, MarketView, OracleView, OrderView, OutcomeEventView, OutcomeView, PositionView,
                    VenueCollateralView, VenueFeesView, VenueMarketRiskView, VenueParamsView, VenueView)

MAX_MONEY = 1 << 62
MAX_LEVERAGE = 100  # MarketRisk: a perpetual market's max leverage is 1..MAX_LEVERAGE (1 until set)
DEFAULT_MAINTENANCE_BPS = 5000  # maintenance margin, in bps of the initial margin, until MarketRisk sets it
DEFAULT_IMPACT_LOTS = 1  # a perpetual market's impact size (lots) for its mark's impact mid, until MarketRisk sets it
INT64_MAX = (1 << 63) - 1
INT64_MIN = -(1 << 63)
WITHDRAW_WEIGHTS = -1  # the unified check of a Withdraw (no venue): the lowest weight of the account's risk groups
DEFAULT_FUNDING_INTERVAL = 3_600_000_000_000  # ns of engine clock between fundings until FundingConfig (1 h)
DEFAULT_SAMPLE_INTERVAL = 60_000_000_000  # ns of engine clock between premium samples (1 min)
DEFAULT_FUNDING_CAP = 1_000_000  # the rate's cap per interval in 1e-8 (1 %); interest and clamp start at 0

# plain ints for speed in the hot loops
_BUY = int(Side.BUY)
_SELL = int(Side.SELL)
_GTC, _IOC, _FOK = int(Tif.GTC), int(Tif.IOC), int(Tif.FOK)
_LIMIT, _MARKET = int(OrdType.LIMIT), int(OrdType.MARKET)
_STP_CT, _STP_CM, _STP_CB, _STP_DB = (int(Stp.CANCEL_TAKER), int(Stp.CANCEL_MAKER),
                                      int(Stp.CANCEL_BOTH), int(Stp.DECREMENT_BOTH))
_F_POST_ONLY = int(CmdFlag.POST_ONLY)
_F_BY_CLIENT_ID = int(CmdFlag.BY_CLIENT_ID)
_F_ALL_MARKETS = int(CmdFlag.ALL_MARKETS)
_F_REDUCE_ONLY = int(CmdFlag.REDUCE_ONLY)
_F_BY_VENUE = int(CmdFlag.BY_VENUE)
_EV_ACCEPTED, _EV_REJECTED, _EV_FILL, _EV_CANCELLED, _EV_AMENDED, _EV_BOOK_LEVEL, _EV_BALANCE = (
    int(Ev.ACCEPTED), int(Ev.REJECTED), int(Ev.FILL), int(Ev.CANCELLED), int(Ev.AMENDED),
    int(Ev.BOOK_LEVEL), int(Ev.BALANCE))
_MAKER_DONE, _TAKER_DONE, _PRIORITY_LOST = (int(EvFlag.MAKER_DONE), int(EvFlag.TAKER_DONE),
                                            int(EvFlag.PRIORITY_LOST))
_R_USER, _R_IOC, _R_FOK, _R_STP, _R_POST_ONLY, _R_EXPIRED, _R_MASS = (
    int(CancelReason.USER), int(CancelReason.IOC), int(CancelReason.FOK), int(CancelReason.STP),
    int(CancelReason.POST_ONLY), int(CancelReason.EXPIRED), int(CancelReason.MASS))
_SPOT, _PERP, _OUTCOME = int(MarketKind.SPOT), int(MarketKind.PERPETUAL), int(MarketKind.OUTCOME)
_OS_OPEN, _OS_PROPOSED, _OS_FINAL, _OS_OVERTURNED = (int(OutcomeState.OPEN), int(OutcomeState.PROPOSED),
                                                     int(OutcomeState.FINAL), int(OutcomeState.OVERTURNED))
_OC_FILL, _OC_CONVERT, _OC_SETTLE = int(OutcomeChange.FILL), int(OutcomeChange.CONVERT), int(OutcomeChange.SETTLE)
_OC_COLLATERAL = int(OutcomeChange.COLLATERAL)
_EV_OC_POSITION, _EV_OC_STATUS, _EV_OC_CONVERT = (int(Ev.OUTCOME_POSITION), int(Ev.OUTCOME_STATUS),
                                                  int(Ev.OUTCOME_CONVERT))
_EV_POSITION = int(Ev.POSITION)
_EV_VENUE = int(Ev.VENUE)
_LIVE, _HALTED, _WINDING_DOWN, _RETIRED = (int(VenueStatus.LIVE), int(VenueStatus.HALTED),
                                          int(VenueStatus.WINDING_DOWN), int(VenueStatus.RETIRED))
_ALLOW_LIST = int(VenueAccess.ALLOW_LIST)
_ALL_POOLS = (1 << 64) - 1
_U64 = (1 << 64) - 1
_STP_CODE = int(RC.SELF_TRADE_PREVENTED)
_R_LIQUIDATION = int(CancelReason.LIQUIDATION)
_F_LIQUIDATION = int(EvFlag.LIQUIDATION)
_D_INSURANCE, _D_ADL, _D_SHORTFALL = int(Deleverage.INSURANCE), int(Deleverage.ADL), int(Deleverage.SHORTFALL)
_X_INSURANCE, _X_ADL = int(Transfer.INSURANCE_SHORTFALL), int(Transfer.ADL_SHORTFALL)
_X_COLLATERAL_SOLD, _X_COLLATERAL_PAID = int(Transfer.COLLATERAL_SOLD), int(Transfer.COLLATERAL_PAID)
_X_FUNDING, _X_FUNDING_REMAINDER = int(Transfer.FUNDING), int(Transfer.FUNDING_REMAINDER)
_CMD_PLACE, _CMD_MULTI_LEG, _CMD_LEG = int(Cmd.PLACE), int(Cmd.MULTI_LEG), int(Cmd.LEG)


def _s16(x: int) -> int:
    return x - 0x10000 if x >= 0x8000 else x


def _clamp64(x: int) -> int:
    """An exact amount as an int64 event field (unified sums can pass int64 only in extreme states)."""
    return max(INT64_MIN, min(INT64_MAX, x))


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def fee_ceil(notional: int, bps: int) -> int:
    """ceil(notional * bps / 10000), rounded towards +infinity (also for negative bps)."""
    return -((-notional * bps) // 10000)


class _Order:
    __slots__ = ("order_id", "account", "client_id", "market", "venue", "side", "price", "qty",
                 "filled", "remaining", "expire_at", "stp", "post_only", "fpl", "resting", "maker_bps",
                 "taker_bps", "no_hold")

    def view(self) -> OrderView:
        return OrderView(self.order_id, self.account, self.client_id, self.market, self.venue,
                         self.side, self.price, self.qty, self.filled, self.remaining,
                         self.expire_at, self.stp, self.post_only)


class _Admission(NamedTuple):
    """What PlaceOrder's checks found (``_admit``), for ``_afford`` and ``_accept``."""

    maker_bps: int
    taker_bps: int
    fpl: int  # worst-case taker fee per lot
    asset: int  # the asset the order takes from free
    amount: int  # how much: its hold (quote) or a spot sell's size (base)


class _Level:
    __slots__ = ("orders", "qty")

    def __init__(self):
        self.orders: OrderedDict[int, _Order] = OrderedDict()  # time priority
        self.qty = 0  # aggregate open qty


class _BookSide:
    """One side of a book: price -> level, plus the prices sorted ascending."""

    __slots__ = ("is_bid", "prices", "levels")

    def __init__(self, is_bid: bool):
        self.is_bid = is_bid
        self.prices: list[int] = []
        self.levels: dict[int, _Level] = {}

    def best(self) -> int:
        """Best price, 0 when empty."""
        if not self.prices:
            return 0
        return self.prices[-1] if self.is_bid else self.prices[0]

    def prices_best_first(self):
        return reversed(self.prices) if self.is_bid else iter(self.prices)


class _Market:
    __slots__ = ("market_id", "venue", "kind", "base", "quote", "tick", "lot", "min_size",
                 "maker_bps", "taker_bps", "band_bps", "last", "books", "halted", "leverage", "maint_bps",
                 "impact_lots", "slice_lots", "mark", "payout", "funding_interval", "sample_interval", "interest",
                 "clamp", "cap", "next_sample", "next_funding", "premium_sum", "samples", "tiers")

    def view(self) -> MarketView:
        return MarketView(self.market_id, self.venue, self.kind, self.base, self.quote, self.tick,
                          self.lot, self.min_size, self.maker_bps, self.taker_bps, self.band_bps,
                          self.halted)

    def leg(self, side: int, price: int) -> int:
        """What an order on ``side`` pays per lot at ``price``: the price, except a sell in an outcome market,
        which buys NO at payout - price."""
        return self.payout - price if self.kind == _OUTCOME and side == _SELL else price

    def per_lot(self, price: int, fpl: int) -> int:
        """An order's hold per lot: price + fpl; a perpetual order's ceil(price / max leverage) + fpl."""
        return (-(-price // self.leverage) if self.kind == _PERP else price) + fpl


class _Venue:
    __slots__ = ("venue_id", "operator", "insurance", "status", "access", "pool", "accepts", "blocked",
                 "stake", "unbonding", "unbond_at", "offers", "maker_bps", "taker_bps", "operator_bps",
                 "insurance_bps", "tier_asset", "tier_epoch", "tiers")

    def __init__(self, venue_id: int, operator: int, insurance: int, access: int, stake: int):
        self.venue_id = venue_id
        self.operator = operator
        self.insurance = insurance
        self.status = _LIVE
        self.access = access
        self.pool = access  # permissionless venues share pool 0, allow-list venues start in pool 1
        self.accepts = _ALL_POOLS
        self.blocked = 0
        self.stake = stake
        self.unbonding = 0
        self.unbond_at = 0
        self.offers: set[int] = set()
        self.maker_bps = self.taker_bps = self.operator_bps = self.insurance_bps = 0
        self.tier_asset = self.tier_epoch = 0
        self.tiers: list[tuple[int, int, int]] = []  # (min_volume, maker_bps, taker_bps) ascending

    def match_mask(self) -> int:
        """The pools its resting orders may trade with: none while halted or retired."""
        return self.accepts if self.status in (_LIVE, _WINDING_DOWN) else 0


class _Oracle:
    """A venue's oracle for one market (fields as ``views.OracleView``)."""

    __slots__ = ("venue", "market", "feed_id", "feed_account", "timeout", "price", "source_ts", "sources",
                 "updated_at", "stale")

    def __init__(self, venue: int, market: int, now: int):
        self.venue, self.market = venue, market
        self.feed_id = self.feed_account = self.timeout = 0
        self.price = self.source_ts = self.sources = 0
        self.updated_at = now  # a new oracle has its timeout to get a first price
        self.stale = False

    def stale_at(self) -> int:
        return min(self.updated_at + self.timeout, INT64_MAX)

    def view(self) -> OracleView:
        return OracleView(self.venue, self.market, self.feed_id, self.feed_account, self.timeout, self.price,
                          self.source_ts, self.sources, self.updated_at, self.stale)


class _Outcome:
    """An outcome market's resolution state (fields as ``views.OutcomeView``)."""

    __slots__ = ("market", "state", "outcome", "payout", "resolver", "window", "event", "finalize_at", "collateral",
                 "event_no")

    def view(self) -> OutcomeView:
        return OutcomeView(self.market, self.state, self.outcome, self.payout, self.resolver, self.window, self.event,
                           self.finalize_at, self.collateral, self.event_no)


class _OutcomeEvent:
    __slots__ = ("event", "markets", "converted", "advance")

    def __init__(self, event: int):
        self.event = event
        self.markets: list[int] = []  # in configuration order
        self.converted = self.advance = 0


class _VenueRisk:
    """A venue's own risk settings and open interest in one market (fields as ``views.VenueMarketRiskView``)."""

    __slots__ = ("venue", "market", "band_bps", "oi_cap", "move_bps", "window_ms", "cooldown_ms", "halted",
                 "long_oi", "short_oi", "open_buy", "open_sell")

    def __init__(self, venue: int, market: int):
        self.venue, self.market = venue, market
        self.band_bps = self.oi_cap = self.move_bps = self.window_ms = self.cooldown_ms = 0
        self.halted = False
        self.long_oi = self.short_oi = self.open_buy = self.open_sell = 0

    def view(self) -> VenueMarketRiskView:
        return VenueMarketRiskView(self.venue, self.market, self.band_bps, self.oi_cap, self.move_bps, self.window_ms,
                                   self.cooldown_ms, self.halted, self.long_oi, self.short_oi, self.open_buy,
                                   self.open_sell)


def _crosses(taker_side: int, taker_price: int, best: int) -> bool:
    """best is the opposite side's best price (0 = empty)."""
    if best == 0:
        return False
    return best <= taker_price if taker_side == _BUY else best >= taker_price


class ReferenceEngine(CommandAPI):
    """The matcher's semantics in plain Python (see the module docstring)."""

    def __init__(self, max_orders: int = 1 << 20, max_accounts: int = 1 << 20,
                 max_markets: int = 4096, max_assets: int = 1024, max_venues: int = 1024):
        self.max_orders = max_orders
        self.max_venues = max_venues
        self._venues: dict[int, _Venue] = {0: _Venue(0, 0, 0, 0, 0)}
        self._allowed: set[tuple[int, int]] = set()  # (account, venue)
        self._regions: dict[int, int] = {}  # account -> region tag (absent = 0)
        self._admin = 0
        self._protocol = 0
        self._stake_asset = 0
        self._min_stake = 0
        self._unbond_period = 0
        self._venue_fees: dict[tuple[int, int], int] = {}  # (venue, asset) -> collected, not swept
        self._volumes: dict[tuple[int, int], list[int]] = {}  # (account, venue) -> [epoch, current, previous]
        self._oracles: dict[tuple[int, int], _Oracle] = {}  # (venue, market), in configuration order
        self._venue_risks: dict[tuple[int, int], _VenueRisk] = {}  # (venue, market)
        self._positions: dict[tuple[int, int], list[int]] = {}  # (account, market) -> [size, entry, margin, realised]
        self._account_positions: dict[int, list[int]] = {}  # account -> its positions' markets, in order of first fill
        self._outcomes: dict[int, _Outcome] = {}  # market -> its outcome state, in configuration order
        self._outcome_events: dict[int, _OutcomeEvent] = {}  # event id -> its markets, in configuration order
        self._caps: dict[tuple[int, int], int] = {}  # (account, venue) -> exposure cap (bps of equity) in its risk group
        self._isolated: set[tuple[int, int]] = set()  # (account, perpetual market) whose position is isolated margin
        self._valuation = 0  # the valuation asset (0: none, every margin rule is per quote asset)
        self._collateral: dict[int, tuple[int, int]] = {}  # asset -> (price market, max weight bps); valuation: (0, w)
        self._venue_weights: dict[tuple[int, int], int] = {}  # (venue, asset) -> the venue's weight (bps)
        self.max_accounts = max_accounts
        self.max_markets = max_markets
        self.max_assets = max_assets
        self._cmd_seq = 0
        self._event_seq = 0
        self._last_order_id = 0
        self._now = 0
        self._assets: dict[int, tuple[int, int, int]] = {}  # id -> (sym_lo, sym_hi, decimals)
        self._markets: dict[int, _Market] = {}
        self._outstanding: dict[int, int] = {}  # asset -> deposits - withdrawals
        self._fees: dict[int, int] = {}  # asset -> collected
        self._bal: dict[int, dict[int, list[int]]] = {}  # account -> asset -> [free, held]
        self._orders: dict[int, _Order] = {}  # open (resting) orders
        self._by_client: dict[tuple[int, int], _Order] = {}  # (account, client id) -> open order
        self._acct_orders: dict[int, dict[int, _Order]] = {}  # account -> open orders
        self._expiry: list[tuple[int, int]] = []  # heap of (expire_at, order_id)
        self._out: list[tuple] = []
        self._touched: dict[tuple[int, int, int], None] = {}  # levels the batch changed
        self._unit_seq = 0  # cmd_seq of the batch's last unit
        self._dirty_marks: set[int] = set()  # perpetual markets whose mark inputs (other than the book) changed
        self._handlers = {
            int(Cmd.PLACE): self._place,
            int(Cmd.CANCEL): self._cancel_cmd,
            int(Cmd.AMEND): self._amend,
            int(Cmd.MASS_CANCEL): self._mass_cancel,
            int(Cmd.DEPOSIT): self._deposit,
            int(Cmd.WITHDRAW): self._withdraw,
            int(Cmd.ADD_ASSET): self._add_asset,
            int(Cmd.ADD_MARKET): self._add_market,
            int(Cmd.HALT): self._market_status,
            int(Cmd.RESUME): self._market_status,
            int(Cmd.VENUE_PARAMS): self._venue_params,
            int(Cmd.LAUNCH_VENUE): self._launch_venue,
            int(Cmd.ADD_STAKE): self._stake,
            int(Cmd.UNBOND): self._stake,
            int(Cmd.VENUE_STATUS): self._venue_status,
            int(Cmd.VENUE_ACCESS): self._venue_config,
            int(Cmd.VENUE_POLICY): self._venue_config,
            int(Cmd.OFFER_MARKET): self._venue_config,
            int(Cmd.WITHDRAW_MARKET): self._venue_config,
            int(Cmd.ALLOW): self._venue_config,
            int(Cmd.DENY): self._venue_config,
            int(Cmd.SET_REGION): self._set_region,
            int(Cmd.SLASH): self._slash,
            int(Cmd.VENUE_FEES): self._venue_fees_cmd,
            int(Cmd.VENUE_FEE_TIER): self._venue_fees_cmd,
            int(Cmd.SWEEP_FEES): self._sweep_fees,
            int(Cmd.ORACLE_CONFIG): self._oracle_config,
            int(Cmd.MARKET_RISK): self._market_risk,
            int(Cmd.LIQUIDATE): self._liquidate,
            int(Cmd.APPLY_FUNDING): self._apply_funding,
            int(Cmd.FUNDING_CONFIG): self._funding_config,
            int(Cmd.VENUE_MARKET_RISK): self._venue_market_risk,
            int(Cmd.VENUE_MARKET_HALT): self._venue_market_status,
            int(Cmd.VENUE_MARKET_RESUME): self._venue_market_status,
            int(Cmd.MARGIN_TIERS): self._margin_tiers,
            int(Cmd.LIST_MARKET): self._list_market_cmd,
            int(Cmd.ORACLE_PRICE): self._oracle_price,
            int(Cmd.OUTCOME_CONFIG): self._outcome_config,
            int(Cmd.CONVERT): self._convert,
            int(Cmd.RESOLVE): self._resolve,
            _CMD_LEG: self._stray_leg,
            int(Cmd.SET_EXPOSURE_CAP): self._set_exposure_cap,
            int(Cmd.MARGIN_MODE): self._margin_mode,
            int(Cmd.ISOLATED_MARGIN): self._isolated_margin,
            int(Cmd.COLLATERAL_ASSET): self._collateral_asset,
            int(Cmd.VENUE_COLLATERAL): self._venue_collateral,
        }

    # ------------------------------------------------------------------ batch API
    def process(self, commands: np.ndarray) -> np.ndarray:
        rows = np.atleast_1d(np.asarray(commands)).tolist()
        out: list[tuple] = []
        self._out = out
        self._touched = {}
        i = 0
        while i < len(rows):
            i += self._step(rows, i)
        # the batch's book levels, in order of first touch, each with its aggregate at the batch's end and the
        # seq of the batch's last unit (a multi-leg order's events carry its header's)
        last_seq, self._cmd_seq = self._cmd_seq, self._unit_seq
        for (mid, side, price) in self._touched:
            m = self._markets[mid]
            level = m.books[side].levels.get(price)
            if level is None:
                self._ev(_EV_BOOK_LEVEL, 0, side, 0, 0, mid, m.venue, 0, 0, 0, price, 0, 0)
            else:
                self._ev(_EV_BOOK_LEVEL, 0, side, 0, 0, mid, m.venue, 0, 0, 0, price, level.qty,
                         len(level.orders))
        self._cmd_seq = last_seq
        self._touched = {}
        self._out = []
        if not out:
            return np.zeros(0, dtype=EVENT_DTYPE)
        return np.array(out, dtype=EVENT_DTYPE)

    def _step(self, rows: list, i: int) -> int:
        """Run the command ``rows[i]``; returns the records it used: 1, or a multi-leg order's header and legs,
        whose sequence numbers it takes after its events."""
        row = rows[i]
        used = 1
        # step 1
        self._cmd_seq += 1
        ts = row[8]
        if ts > self._now:
            self._now = ts
        # step 2: expiry
        heap = self._expiry
        now = self._now
        while heap and heap[0][0] <= now:
            expire_at, oid = heapq.heappop(heap)
            o = self._orders.get(oid)
            if o is not None and o.expire_at == expire_at:
                self._cancel_order(o, o.remaining, _R_EXPIRED, 0)
        # step 2b: unbonding stake whose period is over goes back to its operator (venue id order)
        for v in sorted(self._venues.values(), key=lambda v: v.venue_id):
            if v.unbonding and v.unbond_at <= now:
                amount, v.unbonding, v.unbond_at = v.unbonding, 0, 0
                self._stake_transfer(int(Transfer.STAKE_RELEASE), v, v.operator, amount)
        # step 2c: fresh oracles whose timeout passed without a price go stale (configuration order)
        for o in self._oracles.values():
            if not o.stale and o.stale_at() <= now:
                o.stale = True
                self._oracle_status(o)
                self._dirty_if_perp(o.market)
        # step 2d: proposed resolutions whose dispute window is over become final (configuration order)
        for oc in self._outcomes.values():
            if oc.state == _OS_PROPOSED and oc.finalize_at <= now:
                self._finalize(oc, _OS_FINAL, 0)
        # step 2e: premium samples of the perpetual markets whose next sample time has come (market order)
        for mid in sorted(self._markets):
            m = self._markets[mid]
            if m.kind == _PERP and m.next_sample <= now:
                self._sample_premium(m)
        # step 3: the command
        if row[0] == _CMD_MULTI_LEG:
            used = self._multi_leg(rows, i)
            code = 0  # it emits its own Rejected, naming the leg
        else:
            handler = self._handlers.get(row[0])
            code = handler(row) if handler is not None else int(RC.UNKNOWN_COMMAND)
        if code:
            (kind, side, tif, ord_type, stp, flags, venue, market, ts, account, price, qty,
             cid, aux) = row
            self._ev(_EV_REJECTED, code, side, 0, kind, market, venue, 0, account, cid, price, qty, 0)
        # step 5: marks of the perpetual markets whose book, last trade or oracle changed, in market order (step
        # 4, the BookLevel events of the levels the command changed, comes at the end of its batch: ``process``)
        dirty = self._dirty_marks
        if dirty:
            for mid in sorted(dirty):
                self._update_mark(self._markets[mid])
            dirty.clear()
        self._unit_seq = self._cmd_seq
        self._cmd_seq += used - 1
        return used

    # ------------------------------------------------------------------ events
    def _ev(self, kind, code, side, reason, flags, market, venue, order_id, account, client_id,
            price, qty, remaining, maker_order=0, maker_account=0, maker_fee=0, taker_fee=0):
        self._event_seq += 1
        self._out.append((kind, code, side, reason, flags, market, venue, self._event_seq,
                          self._cmd_seq, 0, self._now, order_id, account, client_id, price, qty,
                          remaining, maker_order, maker_account, maker_fee, taker_fee))

    def _ev_order(self, kind, code, reason, flags, o: _Order, qty, remaining):
        self._ev(kind, code, o.side, reason, flags, o.market, o.venue, o.order_id, o.account,
                 o.client_id, o.price, qty, remaining)

    # ------------------------------------------------------------------ helpers
    def _hold_of(self, o: _Order, qty: int, m: _Market) -> int:
        """The hold for `qty` of order o (buy, or any perpetual order: lots x (price + fpl) in quote;
        spot sell: qty in base; a liquidation's order: none)."""
        if o.no_hold:
            return 0
        if o.side == _BUY or m.kind != _SPOT:
            return (qty // m.lot) * m.per_lot(m.leg(o.side, o.price), o.fpl)
        return qty

    def _release(self, o: _Order, qty: int, m: _Market) -> None:
        amount = self._hold_of(o, qty, m)
        b = self._bal[o.account][m.quote if o.side == _BUY or m.kind != _SPOT else m.base]
        b[1] -= amount
        b[0] += amount

    def _touch(self, market: int, side: int, price: int) -> None:
        key = (market, side, price)
        if key not in self._touched:
            self._touched[key] = None
        if self._markets[market].kind == _PERP:
            self._dirty_marks.add(market)

    def _rest(self, o: _Order, m: _Market) -> None:
        """Put o at the back of its price level."""
        book = m.books[o.side]
        level = book.levels.get(o.price)
        if level is None:
            level = book.levels[o.price] = _Level()
            insort(book.prices, o.price)
        level.orders[o.order_id] = o
        level.qty += o.remaining
        o.resting = True
        self._orders[o.order_id] = o
        self._by_client[(o.account, o.client_id)] = o
        self._acct_orders.setdefault(o.account, {})[o.order_id] = o
        self._touch(o.market, o.side, o.price)

    def _unrest(self, o: _Order, m: _Market) -> None:
        """Take o out of the book (its remaining is left as is)."""
        book = m.books[o.side]
        level = book.levels[o.price]
        del level.orders[o.order_id]
        level.qty -= o.remaining
        if not level.orders:
            del book.levels[o.price]
            del book.prices[bisect_left(book.prices, o.price)]
        o.resting = False
        del self._orders[o.order_id]
        del self._by_client[(o.account, o.client_id)]
        del self._acct_orders[o.account][o.order_id]
        self._touch(o.market, o.side, o.price)

    def _cancel_order(self, o: _Order, take: int, reason: int, code: int) -> None:
        """Take `take` off o (resting or incoming), release its hold, emit Cancelled."""
        m = self._markets[o.market]
        self._release(o, take, m)
        if m.kind == _PERP and o.client_id:  # a placed order (a pseudo order has client id 0)
            self._venue_open(o, -take)
        o.qty -= take
        if o.resting:
            if take == o.remaining:
                self._unrest(o, m)
                o.remaining = 0
            else:
                o.remaining -= take
                m.books[o.side].levels[o.price].qty -= take
                self._touch(o.market, o.side, o.price)
        else:
            o.remaining -= take
        self._ev_order(_EV_CANCELLED, code, reason, 0, o, take, o.remaining)

    def _account_code(self, account: int) -> int:
        if account <= 0:
            return int(RC.INVALID_ACCOUNT_ID)
        if account not in self._bal:
            return int(RC.UNKNOWN_ACCOUNT)
        return 0

    def _find(self, account: int, flags: int, ident: int):
        """(order, 0) or (None, code): the checks and lookup shared by cancel and amend."""
        if flags & ~_F_BY_CLIENT_ID:
            return None, int(RC.INVALID_FLAGS)
        code = self._account_code(account)
        if code:
            return None, code
        if flags & _F_BY_CLIENT_ID:
            o = self._by_client.get((account, ident))
            if o is None:
                return None, int(RC.UNKNOWN_ORDER)
            return o, 0
        if ident < 1 or ident > self._last_order_id:
            return None, int(RC.UNKNOWN_ORDER)
        o = self._orders.get(ident)
        if o is None:
            return None, int(RC.ORDER_CLOSED)
        if o.account != account:
            return None, int(RC.UNKNOWN_ORDER)
        return o, 0

    # ------------------------------------------------------------------ matching
    def _eligible(self, taker_venue: int, maker_venue: int) -> bool:
        """Each venue accepts the other's pool, and the maker's venue lets its orders trade."""
        if taker_venue == maker_venue:
            return True
        a, b = self._venues[taker_venue], self._venues[maker_venue]
        return bool((a.match_mask() >> b.pool) & (b.match_mask() >> a.pool) & 1)

    def _next_maker(self, o: _Order, opp: _BookSide) -> _Order | None:
        """The oldest order at the best crossing price that o's venue may trade with; the
        others are passed over and keep their place."""
        for price in opp.prices_best_first():
            if not _crosses(o.side, o.price, price):
                return None
            for mk in opp.levels[price].orders.values():
                if self._eligible(o.venue, mk.venue):
                    return mk
        return None

    def _fok_fillable(self, o: _Order, opp: _BookSide) -> bool:
        need = o.remaining
        total = 0
        for price in opp.prices_best_first():
            if not _crosses(o.side, o.price, price):
                break
            for mk in opp.levels[price].orders.values():
                if not self._eligible(o.venue, mk.venue):
                    continue
                if mk.account == o.account:
                    if o.stp == _STP_CM:
                        continue
                    return total >= need
                total += mk.remaining
                if total >= need:
                    return True
        return total >= need

    def _execute(self, o: _Order, m: _Market, tif: int, new: bool) -> None:
        """Post-only check, FOK pre-check, matching, then rest or cancel the remainder."""
        opp = m.books[1 - o.side]
        if o.post_only and self._next_maker(o, opp) is not None:
            self._cancel_order(o, o.remaining, _R_POST_ONLY, int(RC.POST_ONLY_WOULD_CROSS))
            return
        if tif == _FOK and not self._fok_fillable(o, opp):
            self._cancel_order(o, o.remaining, _R_FOK, int(RC.FOK_NOT_FILLABLE))
            return
        self._match(o, m, opp)
        if o.remaining > 0:
            if tif == _GTC:
                self._rest(o, m)
                if new and o.expire_at > 0:
                    heapq.heappush(self._expiry, (o.expire_at, o.order_id))
            else:
                self._cancel_order(o, o.remaining, _R_IOC, int(RC.IOC_NOT_FILLED))

    def _match(self, o: _Order, m: _Market, opp: _BookSide) -> None:
        bal = self._bal
        while o.remaining > 0:
            maker = self._next_maker(o, opp)
            if maker is None:
                return
            level = opp.levels[maker.price]
            if maker.account == o.account:
                mode = o.stp
                if mode == _STP_CT:
                    self._cancel_order(o, o.remaining, _R_STP, _STP_CODE)
                    return
                if mode == _STP_CM:
                    self._cancel_order(maker, maker.remaining, _R_STP, _STP_CODE)
                    continue
                if mode == _STP_CB:
                    self._cancel_order(maker, maker.remaining, _R_STP, _STP_CODE)
                    self._cancel_order(o, o.remaining, _R_STP, _STP_CODE)
                    return
                d = min(o.remaining, maker.remaining)  # DECREMENT_BOTH
                self._cancel_order(maker, d, _R_STP, _STP_CODE)
                self._cancel_order(o, d, _R_STP, _STP_CODE)
                continue
            # a fill of q at the maker's price
            q = min(o.remaining, maker.remaining)
            lots = q // m.lot
            price = maker.price
            notional = price * lots
            if m.kind == _OUTCOME:  # each side's fee is on what it pays: YES at price, NO at payout - price
                taker_fee = fee_ceil(m.leg(o.side, price) * lots, o.taker_bps)
                maker_fee = max(fee_ceil(m.leg(maker.side, price) * lots, maker.maker_bps), -taker_fee)
            else:
                taker_fee = fee_ceil(notional, o.taker_bps)
                maker_fee = max(fee_ceil(notional, maker.maker_bps), -taker_fee)  # rebates come out of the taker fee
            o.remaining -= q
            o.filled += q
            maker.remaining -= q
            maker.filled += q
            level.qty -= q
            self._touch(m.market_id, maker.side, price)
            if o.side == _BUY:
                buyer, seller, buyer_fee, seller_fee = o, maker, taker_fee, maker_fee
            else:
                buyer, seller, buyer_fee, seller_fee = maker, o, maker_fee, taker_fee
            quote = m.quote
            oc_moves = ()
            if m.kind == _PERP:
                moves = (self._perp_fill(o, m, q, price, taker_fee), self._perp_fill(maker, m, q, price, maker_fee))
            elif m.kind == _OUTCOME:
                moves = ()
                oc_moves = (self._outcome_fill(o, m, q, price, taker_fee), self._outcome_fill(maker, m, q, price, maker_fee))
            else:
                moves = ()
                self._spot_fill(bal, m, q, lots, notional, buyer, seller, buyer_fee, seller_fee)
            self._collect(o.venue, quote, taker_fee + min(maker_fee, 0))
            self._collect(maker.venue, quote, max(maker_fee, 0))
            for side in (o, maker):
                if self._venues[side.venue].tiers:
                    self._add_volume(side, quote, notional)
            m.last = price
            flags = (_MAKER_DONE if maker.remaining == 0 else 0) | (_TAKER_DONE if o.remaining == 0 else 0)
            self._ev(_EV_FILL, 0, o.side, 0, flags, m.market_id, o.venue, o.order_id, o.account,
                     maker.venue, price, q, o.remaining, maker.order_id, maker.account, maker_fee,
                     taker_fee)
            for order, pos, pnl in moves:
                self._emit_position(order, m, pos, price, pnl)
            for order, pos, cash in oc_moves:
                self._outcome_event(order.account, m, order.side, _OC_FILL, order.venue, order.order_id, price, pos, cash)
            if maker.remaining == 0:
                self._unrest(maker, m)  # subtracts its remaining (now 0) from the level

    def _emit_position(self, order: _Order, m: _Market, pos: list, price: int, pnl: int) -> None:
        b = self._bal[order.account][m.quote]
        self._ev(_EV_POSITION, 0, order.side, 0, 0, m.market_id, order.venue, order.order_id, order.account,
                 pos[2], price, pos[0], pos[1], b[0], b[1], pnl, pos[3])

    @staticmethod
    def _spot_fill(bal, m: _Market, q, lots, notional, buyer: _Order, seller: _Order, buyer_fee, seller_fee) -> None:
        """The buyer's hold pays notional + its fee and it gets the base; the seller's held base leaves
        and the proceeds less its fee arrive."""
        quote, base = m.quote, m.base
        bb = bal[buyer.account]
        release = lots * (buyer.price + buyer.fpl)
        bq = bb[quote]
        bq[1] -= release
        bq[0] += release - notional - buyer_fee
        bbase = bb.get(base)
        if bbase is None:
            bbase = bb[base] = [0, 0]
        bbase[0] += q
        sb = bal[seller.account]
        sb[base][1] -= q
        squote = sb.get(quote)
        if squote is None:
            squote = sb[quote] = [0, 0]
        squote[0] += notional - seller_fee

    def _perp_fill(self, o: _Order, m: _Market, q: int, price: int, fee: int) -> tuple:
        """One side of a perpetual fill of q at price (ARCHITECTURE, "Perpetual markets"): the order's
        hold for these lots is released and pays the fee; the closed part of the position gives back its
        share of entry value and margin and realises its PnL into free; the opened part takes
        min(its notional, what the hold left after the fee) as margin. Returns (o, position, pnl)."""
        lot = m.lot
        b = self._bal[o.account][m.quote]
        pos = self._positions.get((o.account, m.market_id))
        if pos is None:
            pos = self._positions[(o.account, m.market_id)] = [0, 0, 0, 0]
            self._account_positions.setdefault(o.account, []).append(m.market_id)
        size, entry, margin = pos[0], pos[1], pos[2]
        released = 0 if o.no_hold else (q // lot) * m.per_lot(o.price, o.fpl)
        b[1] -= released
        b[0] += released - fee
        left = released - fee
        delta = q if o.side == _BUY else -q
        pnl = 0
        closed = min(q, abs(size)) if size * delta < 0 else 0
        if closed:
            closed_entry = entry * closed // abs(size)
            closed_margin = margin * closed // abs(size)
            exit_value = price * (closed // lot)
            pnl = exit_value - closed_entry if size > 0 else closed_entry - exit_value
            entry -= closed_entry
            margin -= closed_margin
            b[1] -= closed_margin
            b[0] += closed_margin + pnl
        opened = q - closed
        if opened:
            add = min(-(-price * (opened // lot) // m.leverage), max(left, 0))
            entry += price * (opened // lot)
            margin += add
            b[0] -= add
            b[1] += add
        pos[0], pos[1], pos[2], pos[3] = size + delta, entry, margin, pos[3] + pnl
        # every position change is some venue's (a liquidation's and a transfer's: the listing venue's); a pseudo
        # order (client id 0: a liquidation's IOC order, a position transfer) was never in the open sizes
        r = self._venue_risk(o.venue, m.market_id)
        placed = q if o.client_id else 0
        if o.side == _BUY:
            r.open_buy -= placed
            r.long_oi += opened
            r.short_oi -= closed
        else:
            r.open_sell -= placed
            r.short_oi += opened
            r.long_oi -= closed
        return o, pos, pnl

    # ------------------------------------------------------------------ commands
    def _place(self, row) -> int:
        adm = self._admit(row)
        if isinstance(adm, int):
            return adm
        code = self._afford(row, adm, 0, 0, 0)
        if code:
            return code
        o = self._accept(row, adm)
        self._execute(o, self._markets[o.market], row[2], True)
        return 0

    def _admit(self, row) -> int | _Admission:
        """PlaceOrder's checks up to the price bands and the venue's risk limits: the first failing one's code, or what
        they found."""
        (kind, side, tif, ord_type, stp, flags, venue, market, ts, account, price, qty,
         cid, aux) = row
        if side != _BUY and side != _SELL:
            return int(RC.INVALID_SIDE)
        if ord_type != _LIMIT and ord_type != _MARKET:
            return int(RC.INVALID_ORDER_TYPE)
        if tif not in (_GTC, _IOC, _FOK) or (ord_type == _MARKET and tif == _GTC):
            return int(RC.INVALID_TIF)
        if not 0 <= stp <= 3:
            return int(RC.INVALID_STP)
        if (flags & ~(_F_POST_ONLY | _F_REDUCE_ONLY) or (flags & _F_POST_ONLY and not (ord_type == _LIMIT and tif == _GTC))
                or (flags & _F_REDUCE_ONLY and tif == _GTC)):
            return int(RC.INVALID_FLAGS)
        m = self._markets.get(market)
        if m is None:
            return int(RC.UNKNOWN_MARKET)
        if m.kind == _OUTCOME and market not in self._outcomes:
            return int(RC.OUTCOME_NOT_CONFIGURED)
        if flags & _F_REDUCE_ONLY and m.kind != _PERP:
            return int(RC.INVALID_FLAGS)
        v = self._venues.get(venue)
        if v is None:
            return int(RC.UNKNOWN_VENUE)
        if market not in v.offers:
            return int(RC.MARKET_NOT_OFFERED)
        if v.status != _LIVE:
            return int(RC.VENUE_NOT_LIVE)
        if account <= 0:
            return int(RC.INVALID_ACCOUNT_ID)
        balances = self._bal.get(account)
        if balances is None:
            return int(RC.UNKNOWN_ACCOUNT)
        if v.access == _ALLOW_LIST and (account, venue) not in self._allowed:
            return int(RC.ACCOUNT_NOT_ALLOWED)
        if (v.blocked >> self._regions.get(account, 0)) & 1:
            return int(RC.REGION_BLOCKED)
        if cid <= 0:
            return int(RC.INVALID_CLIENT_ID)
        if price <= 0:
            return int(RC.PRICE_NOT_POSITIVE)
        if price % m.tick:
            return int(RC.PRICE_OFF_TICK)
        if qty <= 0:
            return int(RC.QTY_NOT_POSITIVE)
        if qty % m.lot:
            return int(RC.QTY_OFF_LOT)
        if qty < m.min_size:
            return int(RC.QTY_BELOW_MIN)
        if qty > MAX_MONEY:
            return int(RC.QTY_TOO_LARGE)
        if m.kind == _OUTCOME and price >= m.payout:
            return int(RC.OUTCOME_PRICE_OUT_OF_RANGE)
        maker_bps, taker_bps = self._order_fees(m, v, account)
        leg = m.leg(side, price)
        fpl = fee_ceil(leg, max(taker_bps, 0))
        if (qty // m.lot) * (leg + fpl) > MAX_MONEY:  # the notional, whatever the leverage
            return int(RC.PRICE_TOO_LARGE)
        hold = (qty // m.lot) * m.per_lot(leg, fpl)
        if aux < 0 or (aux > 0 and tif != _GTC):
            return int(RC.INVALID_EXPIRY)
        if aux != 0 and aux <= self._now:
            return int(RC.EXPIRED_ON_ARRIVAL)
        if (account, cid) in self._by_client:
            return int(RC.DUPLICATE_CLIENT_ID)
        if m.halted:
            return int(RC.MARKET_HALTED)
        if m.kind == _OUTCOME and self._outcomes[market].state != _OS_OPEN:
            return int(self._outcome_closed_code(self._outcomes[market]))
        reduce_only = flags & _F_REDUCE_ONLY
        if reduce_only:
            size = self._positions.get((account, market), (0,))[0]
            if not (size < 0 if side == _BUY else size > 0) or qty > abs(size):
                return int(RC.REDUCE_ONLY_WOULD_INCREASE)
        if not reduce_only and self._oracle_stale(venue, market):  # a reduce-only order takes on no risk
            return int(RC.ORACLE_STALE)
        code = self._check_venue_risk(self._venue_risks.get((venue, market)), m, side, price, True, qty,
                                      bool(reduce_only))
        if code:
            return code
        if side == _SELL and m.kind == _SPOT:
            return _Admission(maker_bps, taker_bps, fpl, m.base, qty)
        # a reduce-only order holds nothing: its fill frees the closed margin and PnL and pays its fee from them, so a
        # position can always be closed, even with no free balance left
        return _Admission(maker_bps, taker_bps, fpl, m.quote, 0 if reduce_only else hold)

    def _afford(self, row, adm: _Admission, committed: int, group_committed: int, slots_committed: int,
                earlier: tuple = ()) -> int:
        """PlaceOrder's last checks (balance, margin, exposure cap, order capacity).  ``committed`` of the order's
        asset, ``group_committed`` of it in holds of perpetual orders of its market's risk group and
        ``slots_committed`` order slots are already taken by earlier legs of the same multi-leg order (0 for a
        PlaceOrder), ``earlier`` their admissions, so the legs are checked together.  With a valuation asset a
        perpetual order may take its free balance below zero (a loan against the other collateral) when the unified
        check passes."""
        account = row[9]
        m = self._markets[row[7]]
        b = self._bal[account].get(adm.asset)
        reduce_only = row[5] & _F_REDUCE_ONLY
        beyond_free = adm.amount > 0 and (b[0] if b is not None else 0) - committed < adm.amount
        if beyond_free and not (self._valuation and m.kind == _PERP):
            return int(RC.INSUFFICIENT_BALANCE)
        if self._valuation:
            # a reduce-only order (IOC / FOK: its hold is back by the end of the command) only lowers the requirement
            if not reduce_only and (beyond_free or earlier or self._may_owe(account)):
                takes: dict[int, int] = {}
                for a in (*earlier, adm):
                    takes[a.asset] = takes.get(a.asset, 0) + a.amount
                code = self._unified_code(account, row[6], takes)
                if code:
                    return code
        elif not reduce_only and self._margin_short(account, adm.asset, committed + adm.amount):
            return int(RC.INSUFFICIENT_MARGIN)
        if (not row[5] & _F_REDUCE_ONLY and self._caps and m.kind == _PERP
                and self._over_cap(account, m, adm.amount + group_committed)):
            return int(RC.EXPOSURE_CAP_EXCEEDED)
        if len(self._orders) + slots_committed >= self.max_orders:
            return int(RC.ORDER_CAPACITY)
        return 0

    def _accept(self, row, adm: _Admission, leg_number: int = 0, parent: int = 0, n_legs: int = 0) -> _Order:
        """An admitted order gets the next order id, its hold moves from free to held and ``Accepted`` is
        emitted (a multi-leg order's leg: ``reason`` its number, ``maker_order`` the parent id, ``maker_account``
        the leg count); it is not in the book yet."""
        (kind, side, tif, ord_type, stp, flags, venue, market, ts, account, price, qty,
         cid, aux) = row
        m = self._markets[market]
        balances = self._bal[account]
        maker_bps, taker_bps, fpl = adm.maker_bps, adm.taker_bps, adm.fpl
        self._last_order_id += 1
        o = _Order()
        o.order_id = self._last_order_id
        o.account = account
        o.client_id = cid
        o.market = market
        o.venue = venue
        o.side = side
        o.price = price
        o.qty = qty
        o.filled = 0
        o.remaining = qty
        o.expire_at = aux
        o.stp = stp
        o.post_only = bool(flags & _F_POST_ONLY)
        o.fpl = fpl
        o.maker_bps, o.taker_bps = maker_bps, taker_bps
        o.resting = False
        o.no_hold = bool(flags & _F_REDUCE_ONLY)
        if m.base not in balances:
            balances[m.base] = [0, 0]
        if m.quote not in balances:
            balances[m.quote] = [0, 0]
        b = balances[adm.asset]
        b[0] -= adm.amount
        b[1] += adm.amount
        if m.kind == _PERP:
            self._venue_open(o, qty)
        # the order's fees (bps) for event consumers when its venue is not 0 (venue 0's are the market's)
        self._ev(_EV_ACCEPTED, 0, o.side, leg_number, 0, o.market, o.venue, o.order_id, o.account, o.client_id, o.price,
                 qty, qty, maker_order=parent, maker_account=n_legs, maker_fee=maker_bps if venue else 0,
                 taker_fee=taker_bps if venue else 0)
        return o

    # ------------------------------------------------------------------ multi-leg orders
    def _multi_leg(self, rows: list, i: int) -> int:
        """A MultiLeg header ``rows[i]`` and the Leg records after it: every leg checked as a limit FOK
        PlaceOrder of the header's account, the holds of all legs together, in leg order; then one Accepted
        per leg and the legs' matching, in leg order; or one Rejected naming the leg.  Returns the records
        used: the header alone when its legs are not there."""
        header = rows[i]
        n, account, parent = header[11], header[9], header[12]
        if not 2 <= n <= MAX_LEGS:
            self._reject_leg(header, header, int(RC.INVALID_LEG_COUNT), 0)
            return 1
        records = rows[i + 1 : i + 1 + n]
        if len(records) < n or any(r[0] != _CMD_LEG for r in records):
            self._reject_leg(header, header, int(RC.LEGS_INCOMPLETE), 0)
            return 1
        if parent <= 0:
            self._reject_leg(header, header, int(RC.INVALID_CLIENT_ID), 0)
            return n + 1
        legs: list[tuple] = []
        admissions: list[_Admission] = []
        for k, rec in enumerate(records):
            leg = (_CMD_PLACE,) + tuple(rec[1:])
            side, tif, ord_type, stp, venue, market, price, qty, cid = (
                leg[1], leg[2], leg[3], leg[4], leg[6], leg[7], leg[10], leg[11], leg[12])
            code = 0
            if leg[9] != account:
                code = int(RC.LEG_ACCOUNT_MISMATCH)
            elif ord_type != _LIMIT:
                code = int(RC.INVALID_ORDER_TYPE)
            elif tif != _FOK:
                code = int(RC.INVALID_TIF)
            elif any(other[7] == market for other in legs):
                code = int(RC.DUPLICATE_LEG_MARKET)
            if not code:
                adm = self._admit(leg)
                if isinstance(adm, int):
                    code = adm
            if not code and any(other[12] == cid for other in legs):
                code = int(RC.DUPLICATE_CLIENT_ID)
            if not code:
                committed = sum(a.amount for a in admissions if a.asset == adm.asset)
                group = self._markets[market].venue
                group_committed = sum(a.amount for other, a in zip(legs, admissions) if a.asset == adm.asset
                                      and self._markets[other[7]].kind == _PERP
                                      and self._markets[other[7]].venue == group)
                code = self._afford(leg, adm, committed, group_committed, k, tuple(admissions))
            if not code:
                probe = _Order()
                probe.side, probe.price, probe.remaining, probe.venue, probe.account, probe.stp = (
                    side, price, qty, venue, account, stp)
                if not self._fok_fillable(probe, self._markets[market].books[1 - side]):
                    code = int(RC.LEG_NOT_FILLABLE)
            if code:
                self._reject_leg(header, rec, code, k + 1)
                return n + 1
            legs.append(leg)
            admissions.append(adm)
        # legs are in distinct markets: filling one leaves the others' books, and so their checks, as they were
        orders = [self._accept(leg, adm, k + 1, parent, n) for k, (leg, adm) in enumerate(zip(legs, admissions))]
        for o in orders:
            self._execute(o, self._markets[o.market], _FOK, True)
        return n + 1

    def _reject_leg(self, header, rec, code: int, leg: int) -> None:
        """A multi-leg order's one Rejected: the failing record's fields (the header itself when the header is
        at fault, leg 0), the header's account, ``reason`` the leg number, ``maker_order`` the parent id."""
        self._ev(_EV_REJECTED, code, rec[1], leg, header[0], rec[7], rec[6], 0, header[9], rec[12], rec[10], rec[11], 0,
                 maker_order=header[12])

    def _stray_leg(self, row) -> int:
        return int(RC.LEG_WITHOUT_HEADER)

    # ------------------------------------------------------------------ exposure caps
    def _set_exposure_cap(self, row) -> int:
        """An account caps the margin its positions and orders in a venue's risk group may use, in bps of its
        equity (``qty``; 0 removes the cap).  It limits new orders only."""
        account, venue, cap = row[9], row[6], row[11]
        code = self._account_code(account)
        if code:
            return code
        if venue not in self._venues:
            return int(RC.UNKNOWN_VENUE)
        if not 0 <= cap <= 10000:
            return int(RC.INVALID_EXPOSURE_CAP)
        if cap:
            self._caps[(account, venue)] = cap
        else:
            self._caps.pop((account, venue), None)
        self._echo(_EV_VENUE, row)
        return 0

    def _over_cap(self, account: int, m: _Market, amount: int) -> bool:
        """Would ``amount`` more of held quote in perpetual market ``m`` take the margin the account uses in m's
        risk group past its cap there?  Used: the initial margin at mark of its positions in the group's perpetual
        markets quoted in the same asset + the holds of its open orders there + ``amount``; refused when used x
        10000 > cap x equity, equity = free + held of the asset + the unrealised PnL at mark of all its positions
        quoted in it (any venue).  Isolated positions are outside it: neither their initial margin nor their margin
        (taken out of held) nor their unrealised PnL count."""
        cap = self._caps.get((account, m.venue))
        if cap is None:
            return False
        free, held = self._bal[account].get(m.quote, (0, 0))
        equity, used = free + held, amount
        for market in self._account_positions.get(account, ()):
            pm = self._markets[market]
            size, entry, margin = self._positions[(account, market)][:3]
            if pm.kind != _PERP or pm.quote != m.quote or size == 0:
                continue  # outcome positions are fully paid: no margin, no mark
            if (account, market) in self._isolated:
                equity -= margin
                continue
            value = pm.mark * (abs(size) // pm.lot)
            equity += value - entry if size > 0 else entry - value
            if pm.venue == m.venue:
                used += self._initial_margin(pm, value)
        for o in self._acct_orders.get(account, {}).values():
            om = self._markets[o.market]
            if om.kind == _PERP and om.venue == m.venue and om.quote == m.quote:
                used += self._hold_of(o, o.remaining, om)
        if self._valuation:  # the unified account: against its unified equity, holds included, in valuation units
            equity, _, missing = self._unified(account, m.venue, {}, False, with_holds=True)
            price = self._collateral_price(m.quote)
            if missing or price is None:
                return True  # a price is missing: nothing can show the cap holds
            return -(-used * price[0] // price[1]) * 10000 > cap * _clamp64(equity)
        return used * 10000 > cap * equity

    def exposure_caps(self) -> list[tuple[int, int, int]]:
        """Every account's exposure caps: sorted ``(account, venue, cap_bps)``."""
        return sorted((account, venue, cap) for (account, venue), cap in self._caps.items())

    # ------------------------------------------------------------------ unified account (collateral)
    def _collateral_asset(self, row) -> int:
        """Admin: an asset's price market and protocol bound (max weight); price market 0 declares the valuation
        asset (only one), which turns the unified account on.  Echoed as a Venue event (flags 130)."""
        asset, account, price_market, max_weight = row[7], row[9], row[12], row[11]
        if account <= 0:
            return int(RC.INVALID_ACCOUNT_ID)
        if account != self._admin:
            return int(RC.NOT_ADMIN)
        if asset not in self._assets:
            return int(RC.UNKNOWN_ASSET)
        if not 0 <= max_weight <= 10000:
            return int(RC.INVALID_COLLATERAL_WEIGHT)
        if price_market == 0:
            if self._valuation and self._valuation != asset:
                return int(RC.VALUATION_ASSET_EXISTS)
        else:
            if not self._valuation:
                return int(RC.NO_VALUATION_ASSET)
            m = self._markets.get(price_market)
            if (m is None or m.kind == _OUTCOME or asset == self._valuation or m.base != asset
                    or m.quote != self._valuation):
                return int(RC.INVALID_PRICE_MARKET)
        if price_market == 0:
            self._valuation = asset
        self._collateral[asset] = (price_market, max_weight)
        self._echo(_EV_VENUE, row)
        return 0

    def _venue_collateral(self, row) -> int:
        """A venue's operator or the admin: the venue's weight for a collateral asset, at most the protocol bound.
        Echoed as a Venue event (flags 131)."""
        venue, asset, account, weight = row[6], row[7], row[9], row[11]
        code = self._operator_code(venue, account)
        if code:
            return code
        if asset not in self._assets:
            return int(RC.UNKNOWN_ASSET)
        if asset not in self._collateral:
            return int(RC.COLLATERAL_NOT_DECLARED)
        if not 0 <= weight <= 10000:
            return int(RC.INVALID_COLLATERAL_WEIGHT)
        if weight > self._collateral[asset][1]:
            return int(RC.COLLATERAL_WEIGHT_ABOVE_BOUND)
        self._venue_weights[(venue, asset)] = weight
        self._echo(_EV_VENUE, row)
        return 0

    def collateral_assets(self) -> list[CollateralAssetView]:
        """The collateral assets (the valuation asset with price market 0), in asset order."""
        return [CollateralAssetView(a, pm, w) for a, (pm, w) in sorted(self._collateral.items())]

    def venue_collaterals(self) -> list[VenueCollateralView]:
        """Every venue's own collateral weights, in (venue, asset) order."""
        return [VenueCollateralView(v, a, w) for (v, a), w in sorted(self._venue_weights.items())]

    def _collateral_price(self, asset: int) -> tuple[int, int] | None:
        """(price, lot) of an asset in valuation units: x base units are worth x x price / lot.  The valuation asset
        is (1, 1); another collateral asset's is its price market's mark if perpetual, else the market's listing
        venue's fresh oracle price; None when there is none (or the asset is no collateral)."""
        if asset == self._valuation:
            return 1, 1
        c = self._collateral.get(asset)
        if c is None:
            return None
        m = self._markets[c[0]]
        if m.kind == _PERP:
            price = m.mark
        else:
            o = self._oracles.get((m.venue, m.market_id))
            price = o.price if o is not None and not o.stale else 0
        return (price, m.lot) if price > 0 else None

    def _collateral_weight(self, asset: int, venue: int) -> int:
        """The venue's weight for the asset (its own, else the protocol bound; never above the bound); 0 for an
        asset that is no collateral."""
        c = self._collateral.get(asset)
        if c is None:
            return 0
        return min(self._venue_weights.get((venue, asset), c[1]), c[1])

    @staticmethod
    def _outcome_mark(m: _Market) -> int:
        """An outcome market's mark (YES price): the median of its best bid, best ask and last trade when all three
        exist, else 0 (its shares then count nothing)."""
        bid, ask, last = m.books[_BUY].best(), m.books[_SELL].best(), m.last
        return sorted((bid, ask, last))[1] if bid and ask and last else 0

    def _unified(self, account: int, venue: int, takes: dict[int, int], maintenance: bool,
                 with_holds: bool = False) -> tuple[int, int, bool]:
        """(unified equity, requirement, a price missing) of the account in valuation units, with ``takes``
        (asset -> amount) taken from its free balances first, at ``venue``'s weights (WITHDRAW_WEIGHTS: per asset
        the lowest weight of the risk groups it has open perpetual positions in, the protocol bound without any).
        Per asset a it holds: eq_a = free + margin + unrealised at mark of its perpetual positions quoted in a + its
        outcome positions at the outcome mark (YES lots x mark, NO lots x (payout - mark)); the requirement is the
        initial (or maintenance) margins of those perpetual positions.  A positive eq_a is worth floor(eq_a x price
        / lot) x weight / 10000 (down), a negative one -ceil(-eq_a x price / lot) at full weight, the requirement
        ceil(r x price / lot) at full weight.  An asset with eq_a < 0 or a requirement and no price: missing."""
        eq = {a: b[0] for a, b in self._bal[account].items()}
        for a, amount in takes.items():
            eq[a] = eq.get(a, 0) - amount
        if with_holds:  # the open orders' holds count as the account's own (an exposure cap's equity)
            for o in self._acct_orders.get(account, {}).values():
                m = self._markets[o.market]
                a = m.quote if o.side == _BUY or m.kind != _SPOT else m.base
                eq[a] = eq.get(a, 0) + self._hold_of(o, o.remaining, m)
        req: dict[int, int] = {}
        groups: set[int] = set()
        for market in self._account_positions.get(account, ()):
            m = self._markets[market]
            size, entry, margin, _ = self._positions[(account, market)]
            if size == 0 or (account, market) in self._isolated:  # an isolated position counts only for itself
                continue
            lots = abs(size) // m.lot
            if m.kind == _PERP:
                value = m.mark * lots
                eq[m.quote] = eq.get(m.quote, 0) + margin + (value - entry if size > 0 else entry - value)
                initial = self._initial_margin(m, value)
                req[m.quote] = req.get(m.quote, 0) + (fee_ceil(initial, m.maint_bps) if maintenance else initial)
                groups.add(m.venue)
            elif m.kind == _OUTCOME:
                mark = self._outcome_mark(m)
                if mark:
                    eq[m.quote] = eq.get(m.quote, 0) + lots * (mark if size > 0 else m.payout - mark)
        equity = requirement = 0
        missing = False
        for a, e in eq.items():
            r = req.get(a, 0)
            if e == 0 and r == 0:
                continue
            price = self._collateral_price(a)
            if price is None:
                missing = missing or e < 0 or r > 0
                continue
            p, lot = price
            if e > 0:
                if venue == WITHDRAW_WEIGHTS:  # a priced asset is a collateral asset
                    weight = min((self._collateral_weight(a, v) for v in groups), default=self._collateral[a][1])
                else:
                    weight = self._collateral_weight(a, venue)
                equity += e * p // lot * weight // 10000
            else:
                equity += e * p // lot  # floor: a debt rounds away from zero
            requirement += -(-r * p // lot)
        return equity, requirement, missing

    def _unified_code(self, account: int, venue: int, takes: dict[int, int]) -> int:
        """The unified pre-trade check: COLLATERAL_PRICE_MISSING, INSUFFICIENT_MARGIN or 0."""
        equity, requirement, missing = self._unified(account, venue, takes, False)
        if missing:
            return int(RC.COLLATERAL_PRICE_MISSING)
        return int(RC.INSUFFICIENT_MARGIN) if equity < requirement else 0

    def _may_owe(self, account: int) -> bool:
        """Only an account with a position (even flat) or an open perpetual order can have a negative balance: the
        unified check of any other one passes while the command itself takes no more than its free balance."""
        return account in self._account_positions or any(
            self._markets[o.market].kind == _PERP for o in self._acct_orders.get(account, {}).values())

    def _cancel_cmd(self, row) -> int:
        flags, account, ident = row[5], row[9], row[12]
        o, code = self._find(account, flags, ident)
        if code:
            return code
        self._cancel_order(o, o.remaining, _R_USER, 0)
        return 0

    def _amend(self, row) -> int:
        flags, account, price, qty, ident = row[5], row[9], row[10], row[11], row[12]
        o, code = self._find(account, flags, ident)
        if code:
            return code
        m = self._markets[o.market]
        if price < 0:
            return int(RC.PRICE_NOT_POSITIVE)
        new_price = price if price != 0 else o.price
        if new_price % m.tick:
            return int(RC.PRICE_OFF_TICK)
        if qty <= 0:
            return int(RC.QTY_NOT_POSITIVE)
        if qty % m.lot:
            return int(RC.QTY_OFF_LOT)
        if qty > o.remaining and qty < m.min_size:
            return int(RC.QTY_BELOW_MIN)
        if qty > MAX_MONEY:
            return int(RC.QTY_TOO_LARGE)
        if m.kind == _OUTCOME and new_price >= m.payout:
            return int(RC.OUTCOME_PRICE_OUT_OF_RANGE)
        new_leg = m.leg(o.side, new_price)
        new_fpl = fee_ceil(new_leg, max(o.taker_bps, 0))
        if (qty // m.lot) * (new_leg + new_fpl) > MAX_MONEY:
            return int(RC.PRICE_TOO_LARGE)
        new_hold = (qty // m.lot) * m.per_lot(new_leg, new_fpl)
        if m.halted:
            return int(RC.MARKET_HALTED)
        if m.kind == _OUTCOME and self._outcomes[o.market].state != _OS_OPEN:
            return int(self._outcome_closed_code(self._outcomes[o.market]))
        if self._venues[o.venue].status != _LIVE:
            return int(RC.VENUE_NOT_LIVE)
        if (new_price != o.price or qty > o.remaining) and self._oracle_stale(o.venue, o.market):
            return int(RC.ORACLE_STALE)
        code = self._check_venue_risk(self._venue_risks.get((o.venue, o.market)), m, o.side, new_price,
                                      new_price != o.price, qty - o.remaining, False)
        if code:
            return code
        old_hold = self._hold_of(o, o.remaining, m)
        if o.side == _SELL and m.kind == _SPOT:
            new_hold = qty
            b = self._bal[account][m.base]
        else:
            b = self._bal[account][m.quote]
        extra = new_hold - old_hold
        asset = m.base if o.side == _SELL and m.kind == _SPOT else m.quote
        if extra > 0 and extra > b[0] and not (self._valuation and m.kind == _PERP):  # unified: perpetuals may borrow
            return int(RC.INSUFFICIENT_BALANCE)
        if extra > 0 and self._valuation:
            code = self._unified_code(account, o.venue, {asset: extra}) if extra > b[0] or self._may_owe(account) else 0
            if code:
                return code
        elif extra > 0 and self._margin_short(account, asset, extra):
            return int(RC.INSUFFICIENT_MARGIN)
        if extra > 0 and self._caps and m.kind == _PERP and self._over_cap(account, m, extra):
            return int(RC.EXPOSURE_CAP_EXCEEDED)
        # accepted
        if m.kind == _PERP:
            self._venue_open(o, qty - o.remaining)
        if new_price == o.price and qty <= o.remaining:
            diff = o.remaining - qty
            if diff:
                self._release(o, diff, m)
                o.remaining = qty
                m.books[o.side].levels[o.price].qty -= diff
            o.qty = o.filled + qty
            self._touch(o.market, o.side, o.price)
            self._ev_order(_EV_AMENDED, 0, 0, 0, o, qty, qty)
            return 0
        self._unrest(o, m)
        b[0] += old_hold - new_hold
        b[1] += new_hold - old_hold
        o.price = new_price
        o.fpl = new_fpl
        o.remaining = qty
        o.qty = o.filled + qty
        self._ev_order(_EV_AMENDED, 0, 0, _PRIORITY_LOST, o, qty, qty)
        self._execute(o, m, _GTC, False)
        return 0

    def _mass_cancel(self, row) -> int:
        flags, venue, market, account = row[5], row[6], row[7], row[9]
        if flags & ~(_F_ALL_MARKETS | _F_BY_VENUE):
            return int(RC.INVALID_FLAGS)
        code = self._account_code(account)
        if code:
            return code
        all_markets = bool(flags & _F_ALL_MARKETS)
        if not all_markets and market not in self._markets:
            return int(RC.UNKNOWN_MARKET)
        by_venue = bool(flags & _F_BY_VENUE)
        if by_venue and venue not in self._venues:
            return int(RC.UNKNOWN_VENUE)
        mine = self._acct_orders.get(account, {})
        ids = sorted(oid for oid, o in mine.items()
                     if (all_markets or o.market == market) and (not by_venue or o.venue == venue))
        self._ev(_EV_ACCEPTED, 0, 0, 0, 0, 0 if all_markets else market, venue if by_venue else 0,
                 0, account, 0, 0, len(ids), 0)
        for oid in ids:
            o = mine[oid]
            self._cancel_order(o, o.remaining, _R_MASS, 0)
        return 0

    def _deposit(self, row) -> int:
        asset, account, amount = row[7], row[9], row[11]
        if account <= 0:
            return int(RC.INVALID_ACCOUNT_ID)
        if asset not in self._assets:
            return int(RC.UNKNOWN_ASSET)
        if amount <= 0:
            return int(RC.AMOUNT_NOT_POSITIVE)
        if self._outstanding[asset] + amount > MAX_MONEY:
            return int(RC.BALANCE_OVERFLOW)
        balances = self._bal.get(account)
        if balances is None:
            if len(self._bal) >= self.max_accounts:
                return int(RC.ACCOUNT_CAPACITY)
            balances = self._bal[account] = {}
        b = balances.get(asset)
        if b is None:
            b = balances[asset] = [0, 0]
        b[0] += amount
        self._outstanding[asset] += amount
        self._ev(_EV_BALANCE, 0, 0, 0, 0, asset, 0, 0, account, 0, 0, amount, b[0], taker_fee=b[1])
        return 0

    def _withdraw(self, row) -> int:
        asset, account, amount = row[7], row[9], row[11]
        if account <= 0:
            return int(RC.INVALID_ACCOUNT_ID)
        balances = self._bal.get(account)
        if balances is None:
            return int(RC.UNKNOWN_ACCOUNT)
        if asset not in self._assets:
            return int(RC.UNKNOWN_ASSET)
        if amount <= 0:
            return int(RC.AMOUNT_NOT_POSITIVE)
        b = balances.get(asset)
        if b is None or amount > b[0]:
            return int(RC.INSUFFICIENT_FREE_BALANCE)
        if self._valuation:
            code = self._unified_code(account, WITHDRAW_WEIGHTS, {asset: amount}) if self._may_owe(account) else 0
            if code:
                return code
        elif self._margin_short(account, asset, amount):
            return int(RC.INSUFFICIENT_MARGIN)
        b[0] -= amount
        self._outstanding[asset] -= amount
        self._ev(_EV_BALANCE, 0, 0, 0, 0, asset, 0, 0, account, 0, 0, -amount, b[0], taker_fee=b[1])
        return 0

    def _market_status(self, row) -> int:
        kind, market_id, account = row[0], row[7], row[9]
        m = self._markets.get(market_id)
        if m is None:
            return int(RC.UNKNOWN_MARKET)
        halt = kind == int(Cmd.HALT)
        if m.halted == halt:
            return int(RC.MARKET_STATUS_UNCHANGED)
        m.halted = halt
        self._ev(int(Ev.MARKET_STATUS), 0, 0, 0, 0, market_id, m.venue, 0, account, 0, 0, int(halt), 0)
        return 0

    def _add_asset(self, row) -> int:
        asset, decimals, lo, hi = row[7], row[10], row[12], row[13]
        if not 1 <= asset <= self.max_assets:
            return int(RC.INVALID_ASSET_ID)
        if asset in self._assets:
            return int(RC.ASSET_EXISTS)
        if not 0 <= decimals <= 18:
            return int(RC.INVALID_DECIMALS)
        self._assets[asset] = (lo, hi, decimals)
        self._outstanding[asset] = 0
        self._fees[asset] = 0
        side, venue, account, qty = row[1], row[6], row[9], row[11]
        self._ev(_EV_ACCEPTED, 0, side, 0, int(EvFlag.ASSET_LISTING), asset, venue, 0, account, lo, decimals,
                 qty, hi)
        return 0

    def _add_market(self, row) -> int:
        packed, params = row[9], row[13]
        base, quote = unpack_market_assets(packed)
        maker, taker, band = unpack_market_params(params)
        return self._list_market(row, base, quote, maker, taker, band, sender=0)

    def _list_market_cmd(self, row) -> int:
        """ListMarket: AddMarket from a live venue's operator (or the admin), the assets packed beside the fees."""
        flags, venue, account, aux = row[5], row[6], row[9], row[13]
        code = self._operator_code(venue, account)
        if code:
            return code
        if venue == 0:
            return int(RC.PROTOCOL_VENUE)
        base, quote, maker, taker, band = unpack_listing(flags, aux)
        return self._list_market(row, base, quote, maker, taker, band, sender=account)

    def _list_market(self, row, base: int, quote: int, maker: int, taker: int, band: int, sender: int) -> int:
        """AddMarket's checks and listing; ``sender`` > 0: a ListMarket's, whose venue must hold the minimum
        stake, echoed in the listing's ``maker_account``."""
        kind, venue, market_id = row[1], row[6], row[7]
        tick, lot, min_size = row[10], row[11], row[12]
        if not 1 <= market_id <= self.max_markets:
            return int(RC.INVALID_MARKET_ID)
        if market_id in self._markets:
            return int(RC.MARKET_EXISTS)
        lister = self._venues.get(venue)
        if lister is None:
            return int(RC.UNKNOWN_VENUE)
        if lister.status != _LIVE:
            return int(RC.VENUE_NOT_LIVE)
        if sender and lister.stake < self._min_stake:
            return int(RC.STAKE_BELOW_MINIMUM)
        if not 0 <= kind <= 2:
            return int(RC.INVALID_MARKET_KIND)
        if base not in self._assets or quote not in self._assets:
            return int(RC.UNKNOWN_ASSET)
        if base == quote:
            return int(RC.SAME_BASE_AND_QUOTE)
        if tick <= 0:
            return int(RC.INVALID_TICK_SIZE)
        if lot <= 0:
            return int(RC.INVALID_LOT_SIZE)
        if min_size <= 0 or min_size % lot:
            return int(RC.INVALID_MIN_SIZE)
        if not (-1000 <= maker <= taker <= 1000 and maker + taker >= 0):
            return int(RC.INVALID_FEES)
        if band > 10000:
            return int(RC.INVALID_PRICE_BAND)
        m = _Market()
        m.market_id = market_id
        m.venue = venue
        m.kind = kind
        m.base = base
        m.quote = quote
        m.tick = tick
        m.lot = lot
        m.min_size = min_size
        m.maker_bps = maker
        m.taker_bps = taker
        m.band_bps = band
        m.leverage, m.maint_bps = 1, DEFAULT_MAINTENANCE_BPS
        m.impact_lots, m.slice_lots, m.mark = DEFAULT_IMPACT_LOTS, 0, 0
        m.payout = 0
        m.funding_interval, m.sample_interval = DEFAULT_FUNDING_INTERVAL, DEFAULT_SAMPLE_INTERVAL
        m.interest, m.clamp, m.cap = 0, 0, DEFAULT_FUNDING_CAP
        m.tiers = []  # (notional floor, max leverage) of brackets 1..3 (MarginTiers)
        self._schedule_funding(m)
        m.last = 0
        m.halted = False
        m.books = (_BookSide(True), _BookSide(False))  # indexed by side: BUY = bids, SELL = asks
        self._markets[market_id] = m
        lister.offers.add(market_id)  # the listing venue offers it
        self._ev(_EV_ACCEPTED, 0, kind, 0, int(EvFlag.MARKET_LISTING), market_id, venue, 0,
                 pack_market_assets(base, quote), min_size, tick, lot, pack_market_params(maker, taker, band),
                 maker_account=sender)
        return 0

    # ------------------------------------------------------------------ venues
    def _venue_echo(self, row) -> None:
        self._echo(int(Ev.VENUE), row)

    def _echo(self, event_kind: int, row) -> None:
        (kind, side, tif, ord_type, stp, flags, venue, market, ts, account, price, qty, cid, aux) = row
        self._ev(event_kind, 0, side, 0, kind, market, venue, 0, account, cid, price, qty, aux)

    # ------------------------------------------------------------------ mark price
    def _dirty_if_perp(self, market: int) -> None:
        if self._markets[market].kind == _PERP:
            self._dirty_marks.add(market)

    def _impact_price(self, m: _Market, side: int) -> int:
        """The price of the last level a taker of the impact size (``impact_lots`` lots) reaches on ``side``
        of the book (the whole book, every venue's orders): 0 when that side holds less."""
        need = m.impact_lots * m.lot
        book = m.books[side]
        for price in book.prices_best_first():
            need -= book.levels[price].qty
            if need <= 0:
                return price
        return 0

    def _mark_inputs(self, m: _Market) -> tuple[int, int, int, int]:
        """(oracle, impact mid, impact bid, impact ask) now, 0 = missing: the listing venue's fresh oracle price and
        floor((impact bid + impact ask) / 2) down to the tick."""
        o = self._oracles.get((m.venue, m.market_id))
        oracle = o.price if o is not None and not o.stale else 0
        bid, ask = self._impact_price(m, _BUY), self._impact_price(m, _SELL)
        impact = (bid + ask) // 2 // m.tick * m.tick if bid and ask else 0
        return oracle, impact, bid, ask

    def _update_mark(self, m: _Market) -> None:
        """The mark (ARCHITECTURE, "Liquidation, insurance and ADL"): the median of the listing venue's fresh
        oracle price, the impact mid and the last trade when all three exist; otherwise the oracle, else the last
        trade, else the impact mid, else 0. A change is published as a Mark event."""
        oracle, impact, bid, ask = self._mark_inputs(m)
        last = m.last
        mark = sorted((oracle, impact, last))[1] if oracle and impact and last else oracle or last or impact
        if mark != m.mark:
            m.mark = mark
            self._ev(int(Ev.MARK), 0, 0, 0, 0, m.market_id, m.venue, 0, 0, last, mark, oracle, impact, bid, ask)

    # ------------------------------------------------------------------ margin

    def _margin_short(self, account: int, asset: int, amount: int) -> bool:
        """Taking ``amount`` more of ``asset`` from free would leave less than the initial margin at mark of
        the account's positions quoted in it: free - amount + sum(margin + unrealised - initial) < 0.
        Walks only the account's own positions (none: no cost for spot-only accounts)."""
        if account not in self._account_positions:
            return False
        return self._margin_excess(account, asset) - amount < 0

    def _margin_excess(self, account: int, asset: int) -> int:
        """free + sum(margin + unrealised - initial margin) at mark over the account's cross positions quoted in
        asset (an isolated position's margin and PnL count only for itself)."""
        excess = self._bal[account].get(asset, [0, 0])[0]
        for market in self._account_positions.get(account, ()):
            m = self._markets[market]
            size, entry, margin, _ = self._positions[(account, market)]
            if m.kind != _PERP or m.quote != asset or size == 0 or (account, market) in self._isolated:
                continue
            value = m.mark * (abs(size) // m.lot)
            unrealised = value - entry if size > 0 else entry - value
            excess += margin + unrealised - self._initial_margin(m, value)
        return excess

    @staticmethod
    def _initial_margin(m: _Market, value: int) -> int:
        """The tiered initial margin of a position of notional ``value`` (ARCHITECTURE, "Margin tiers"): each
        bracket's part of the notional over its leverage, rounded up per bracket; a bracket's leverage is at most the
        ones below it (MarketRisk's max leverage for the first)."""
        margin, floor, leverage = 0, 0, m.leverage
        for next_floor, next_leverage in m.tiers:
            if value <= next_floor:
                break
            margin += -(-(next_floor - floor) // leverage)
            floor, leverage = next_floor, min(leverage, next_leverage)
        return margin + -(-(value - floor) // leverage)

    # ------------------------------------------------------------------ liquidation
    def _fund(self, venue: int) -> int:
        """A venue's insurance fund account: its own; venue 0's is the protocol account (0 until VenueParams)."""
        return self._venues[venue].insurance if venue else self._protocol

    def _equity(self, account: int, asset: int) -> tuple[int, int]:
        """(equity, maintenance requirement) of the account in ``asset``, cross margin: free + the margin and
        unrealised PnL at mark of all its perpetual positions quoted in it (outcome positions are fully paid and
        have no mark), and the sum of their maintenance margins ceil(ceil(mark x lots / L) x maintenance_bps /
        10000)."""
        b = self._bal[account].get(asset)
        equity, maintenance = (b[0] if b else 0), 0
        for market in self._account_positions.get(account, ()):
            m = self._markets[market]
            if m.kind != _PERP or m.quote != asset or (account, market) in self._isolated:
                continue
            own, own_maintenance = self._position_equity(account, m)
            equity += own
            maintenance += own_maintenance
        return equity, maintenance

    def _position_equity(self, account: int, m: _Market) -> tuple[int, int]:
        """(margin + unrealised PnL at mark, maintenance requirement) of the account's position in perpetual market m
        alone: an isolated position's equity (0, 0 when flat)."""
        size, entry, margin, _ = self._positions[(account, m.market_id)]
        if size == 0:
            return 0, 0
        value = m.mark * (abs(size) // m.lot)
        return (margin + (value - entry if size > 0 else entry - value),
                fee_ceil(self._initial_margin(m, value), m.maint_bps))

    @staticmethod
    def _bankruptcy_price(m: _Market, size: int, equity: int) -> int:
        """The price at which closing all of ``size`` leaves the account's equity (its other positions at mark)
        at 0: mark - equity / lots for a long (rounded up to the tick), mark + equity / lots for a short (down),
        within one tick .. MAX_MONEY. A close at a better price than it never takes the equity below 0."""
        lots = abs(size) // m.lot
        value = m.mark * lots
        if size > 0:
            price = -(-(-(-(value - equity) // lots)) // m.tick) * m.tick
        else:
            price = (value + equity) // lots // m.tick * m.tick
        return min(max(price, m.tick), MAX_MONEY // m.tick * m.tick)

    def _pseudo_order(self, account: int, m: _Market, venue: int, side: int, price: int, holds: bool) -> _Order:
        """An order that is never in the book: a liquidation's IOC order, or one side of a position transfer. Without
        ``holds`` it holds nothing (a fill releases nothing); with it, ceil(price / L) per lot like a placed order."""
        o = _Order()
        o.order_id = o.client_id = o.filled = o.expire_at = 0
        o.account, o.market, o.venue, o.side, o.price = account, m.market_id, venue, side, price
        o.qty = o.remaining = 0
        o.stp, o.post_only, o.fpl, o.maker_bps, o.taker_bps, o.resting = _STP_CT, False, 0, 0, 0, False
        o.no_hold = not holds
        return o

    def _transfer_position(self, reason: int, m: _Market, venue: int, target: int, side: int, counterparty: int,
                           q: int, price: int, holds: bool) -> None:
        """``q`` of the target's position (closed on ``side``) to the counterparty at ``price``, without fees:
        a Deleverage event, then both Position events (the target's first)."""
        t = self._pseudo_order(target, m, venue, side, price, False)
        c = self._pseudo_order(counterparty, m, venue, 1 - side, price, holds)
        if holds:  # the fund takes over like a placed order: its hold becomes the new position's margin
            b = self._bal[counterparty].setdefault(m.quote, [0, 0])
            hold = (q // m.lot) * m.per_lot(price, 0)
            b[0] -= hold
            b[1] += hold
        moves = (self._perp_fill(t, m, q, price, 0), self._perp_fill(c, m, q, price, 0))
        self._ev(int(Ev.DELEVERAGE), 0, side, reason, 0, m.market_id, venue, 0, target, 0, price, q, 0, 0, counterparty)
        for order, pos, pnl in moves:
            self._emit_position(order, m, pos, price, pnl)

    def _adl_ranking(self, markets: list[int], account: int, sign: int) -> list[tuple[int, int]]:
        """(account, market) of the positions in ``markets`` of sign ``sign`` (+1 long, -1 short, 0 either) with
        ``account`` left out, best first: unrealised PnL at mark per unit of margin (profit / entry x entry /
        margin: profit times leverage), descending, margin taken as at least 1; ties by account, then market."""
        ranked = []
        for market in markets:
            m = self._markets[market]
            for (a, mk), (size, entry, margin, _) in self._positions.items():
                if mk != market or a == account or size == 0 or (sign and (size > 0) != (sign > 0)):
                    continue
                value = m.mark * (abs(size) // m.lot)
                profit = value - entry if size > 0 else entry - value
                ranked.append((-Fraction(profit, max(margin, 1)), a, market))
        ranked.sort()
        return [(a, market) for _, a, market in ranked]

    def _liquidate(self, row) -> int:
        venue, asset, sender, target, isolated = row[6], row[7], row[9], row[12], row[13]
        if sender <= 0:
            return int(RC.INVALID_ACCOUNT_ID)
        if venue not in self._venues:
            return int(RC.UNKNOWN_VENUE)
        if asset not in self._assets:
            return int(RC.UNKNOWN_ASSET)
        code = self._account_code(target)
        if code:
            return code
        fund = self._fund(venue)
        if target == fund:
            return int(RC.INSURANCE_FUND_ACCOUNT)
        if isolated:  # only that isolated position, if it is open in the venue's group in the asset
            m = self._markets.get(isolated)
            group = [isolated] if ((target, isolated) in self._isolated and self._positions[(target, isolated)][0]
                                   and m.venue == venue and m.quote == asset) else []
        else:  # every open cross position in the venue's group in the asset
            group = sorted(mk for mk in self._account_positions.get(target, ()) if self._positions[(target, mk)][0]
                           and self._markets[mk].kind == _PERP and self._markets[mk].venue == venue
                           and self._markets[mk].quote == asset and (target, mk) not in self._isolated)
        # a loan with no position left (a closed loss, a debt the fund could not buy out) is liquidated too: its
        # collateral is what stands behind it
        loan = not isolated and asset == self._valuation != 0 and self._bal[target].get(asset, [0, 0])[0] < 0
        if not group and not loan:
            return int(RC.NOTHING_TO_LIQUIDATE)
        if isolated:
            equity, maintenance = self._position_equity(target, self._markets[isolated])
        elif self._valuation:  # the unified equity at the group's weights against the unified maintenance
            equity, maintenance, missing = self._unified(target, venue, {}, True)
            if missing:
                return int(RC.COLLATERAL_PRICE_MISSING)
        else:
            equity, maintenance = self._equity(target, asset)
        if equity >= maintenance:
            return int(RC.NOT_LIQUIDATABLE)
        self._ev(int(Ev.LIQUIDATION), 0, 0, 0, 0, asset, venue, 0, target, sender, _clamp64(equity),
                 _clamp64(maintenance), 0, maker_order=isolated)
        mine = self._acct_orders.get(target, {})
        for oid in sorted(oid for oid, o in mine.items()
                          if (o.market == isolated if isolated else self._markets[o.market].venue == venue)):
            o = mine[oid]
            self._cancel_order(o, o.remaining, _R_LIQUIDATION, 0)
        # an isolated position's equity is its own plus what its closed parts realised into free from here on
        base_free = self._bal[target][asset][0] if isolated else 0

        def equity_now() -> int:
            """The equity a bankruptcy price brings to 0 (an isolated position's own; else ``_liquidation_equity``)."""
            if isolated:
                return self._position_equity(target, self._markets[isolated])[0] + self._bal[target][asset][0] - base_free
            return self._liquidation_equity(target, venue, asset)

        for market in group:
            m = self._markets[market]
            pos = self._positions[(target, market)]
            side = _SELL if pos[0] > 0 else _BUY
            while pos[0] and not m.halted:  # the book, in slices, never past the bankruptcy price
                size = abs(pos[0])
                qty = min(size, m.slice_lots * m.lot) if m.slice_lots else size
                price = self._bankruptcy_price(m, pos[0], equity_now())
                o = self._pseudo_order(target, m, venue, side, price, False)
                self._last_order_id += 1
                o.order_id, o.qty, o.remaining = self._last_order_id, qty, qty
                self._ev(_EV_ACCEPTED, 0, side, 0, _F_LIQUIDATION, market, venue, o.order_id, target, 0, price, qty,
                         qty)
                self._execute(o, m, _IOC, True)
                if abs(pos[0]) != size - qty:  # the book took less than the slice
                    break
            if not pos[0]:
                continue
            size = abs(pos[0])
            price = self._bankruptcy_price(m, pos[0], equity_now())
            hold = (size // m.lot) * m.per_lot(price, 0)
            if fund and self._bal[fund].get(asset, [0, 0])[0] >= hold and not (
                    self._unified_code(fund, venue, {asset: hold}) if self._valuation
                    else self._margin_short(fund, asset, hold)):
                self._transfer_position(_D_INSURANCE, m, venue, target, side, fund, size, price, True)
                continue
            for account, _ in self._adl_ranking([market], target, -1 if side == _SELL else 1):
                if not pos[0]:
                    break
                other = self._positions[(account, market)]
                self._transfer_position(_D_ADL, m, venue, target, side, account, min(abs(pos[0]), abs(other[0])), price,
                                        False)
        sold = self._sell_collateral(target, fund, venue, asset) if self._valuation and fund and not isolated else 0
        equity = equity_now() if isolated else self._equity(target, asset)[0]
        if equity < 0 and not isolated and asset == self._valuation:
            # a debt the account's other collateral still backs stays a loan: only what it cannot back is a shortfall
            equity = max(equity, self._liquidation_equity(target, venue, asset))
        paid = covered = 0
        if equity < 0 and fund:  # the fund pays what its own margin leaves free
            paid = min(-equity, max(0, min(self._bal[fund].get(asset, [0, 0])[0], self._margin_excess(fund, asset))))
            if paid:
                v = self._venues[venue]
                self._transfer(_X_INSURANCE, v, fund, asset, -paid, 0)
                self._transfer(_X_INSURANCE, v, target, asset, paid, 0)
        if equity + paid < 0:  # then ADL: the most profitable (per margin) positions' profits are haircut
            for account, market in self._adl_ranking([mk for mk in sorted(self._markets) if self._markets[mk].kind == _PERP
                                                      and self._markets[mk].venue == venue
                                                      and self._markets[mk].quote == asset], target, 0):
                m = self._markets[market]
                pos = self._positions[(account, market)]
                value = m.mark * (abs(pos[0]) // m.lot)
                profit = value - pos[1] if pos[0] > 0 else pos[1] - value
                cut = min(-(equity + paid + covered), profit)
                if cut <= 0:
                    break
                pos[1] += cut if pos[0] > 0 else -cut
                covered += cut
                self._ev(int(Ev.DELEVERAGE), 0, 0, _D_SHORTFALL, 0, market, venue, 0, target, 0, 0, 0, 0, 0, account,
                         cut)
                o = self._pseudo_order(account, m, venue, _BUY if pos[0] > 0 else _SELL, 0, False)
                self._emit_position(o, m, pos, 0, 0)
                if equity + paid + covered >= 0:
                    break
            if covered:
                self._transfer(_X_ADL, self._venues[venue], target, asset, covered, 0)
        self._ev(int(Ev.LIQUIDATED), 0, 0, 0, 0, asset, venue, 0, target, -min(equity + paid + covered, 0),
                 equity + paid + covered, paid, covered, maker_order=isolated, maker_fee=sold)
        return 0

    # ------------------------------------------------------------------ isolated margin
    def _perp_market_code(self, account: int, market: int) -> int:
        """MarginMode's and IsolatedMargin's first checks: a known account, a perpetual market."""
        return self._account_code(account) or self._market_kind_code(account, market, _PERP)

    def _margin_mode(self, row) -> int:
        """The account's position in a perpetual market becomes isolated (``qty`` 1) or cross (0), only without
        exposure there: no open position, no open order.  An isolated mode creates the (flat) position that carries
        it."""
        market, account, mode = row[7], row[9], row[11]
        code = self._perp_market_code(account, market)
        if code:
            return code
        if mode not in (0, 1):
            return int(RC.INVALID_MARGIN_MODE)
        key = (account, market)
        if (key in self._isolated) == bool(mode):
            return int(RC.MARGIN_MODE_UNCHANGED)
        if self._positions.get(key, (0,))[0]:
            return int(RC.POSITION_OPEN)
        if any(o.market == market for o in self._acct_orders.get(account, {}).values()):
            return int(RC.ORDERS_OPEN)
        if mode:
            if key not in self._positions:
                self._positions[key] = [0, 0, 0, 0]
                self._account_positions.setdefault(account, []).append(market)
            self._isolated.add(key)
        else:
            self._isolated.discard(key)
        self._echo(_EV_VENUE, row)
        return 0

    def _isolated_margin(self, row) -> int:
        """Move ``qty`` (signed) of quote between free and an open isolated position's margin (in held).  Adding
        needs it in free; removing must leave margin >= 0 and margin + unrealised at mark >= the tiered initial
        margin.  A Position event (flags ISOLATED_MARGIN) carries the margin and free / held after."""
        market, account, amount = row[7], row[9], row[11]
        code = self._perp_market_code(account, market)
        if code:
            return code
        if amount == 0 or abs(amount) > MAX_MONEY:
            return int(RC.INVALID_MARGIN_AMOUNT)
        key = (account, market)
        pos = self._positions.get(key)
        if key not in self._isolated or not pos[0]:
            return int(RC.NO_ISOLATED_POSITION)
        m = self._markets[market]
        if amount > self._bal[account].get(m.quote, (0, 0))[0]:
            return int(RC.INSUFFICIENT_FREE_BALANCE)
        if amount < 0:
            equity = self._position_equity(account, m)[0]
            if pos[2] + amount < 0 or equity + amount < self._initial_margin(m, m.mark * (abs(pos[0]) // m.lot)):
                return int(RC.ISOLATED_MARGIN_SHORT)
        b = self._bal[account].setdefault(m.quote, [0, 0])
        pos[2] += amount
        b[0] -= amount
        b[1] += amount
        self._margin_position_event(account, m, pos, int(Cmd.ISOLATED_MARGIN))
        return 0

    def _margin_position_event(self, account: int, m: _Market, pos: list, flags: int) -> None:
        """The Position event of an isolated position whose margin moved without a fill (``flags``: the command that
        moved it, IsolatedMargin or ApplyFunding)."""
        b = self._bal[account][m.quote]
        self._ev(_EV_POSITION, 0, 0, 0, flags, m.market_id, m.venue, 0, account, pos[2], 0, pos[0], pos[1], b[0], b[1],
                 0, pos[3])

    def margin_modes(self) -> list[tuple[int, int]]:
        """Every isolated position's (account, market), sorted; every other position is cross margin."""
        return sorted(self._isolated)

    def _liquidation_equity(self, target: int, venue: int, asset: int) -> int:
        """The equity a bankruptcy price brings to 0: with the valuation asset liquidated, the unified equity at the
        group's weights (the account's other collateral stands behind its positions: ``_sell_collateral`` then turns
        it into the shortfall it leaves in the asset); otherwise the equity in the asset."""
        if self._valuation and asset == self._valuation:
            return _clamp64(self._unified(target, venue, {}, False)[0])
        return self._equity(target, asset)[0]

    def _sell_collateral(self, target: int, fund: int, venue: int, asset: int) -> int:
        """Liquidate's collateral step (before the fund's payment and ADL haircuts): while the target's equity in the
        valuation asset ``asset`` is below 0, the venue's fund buys its other collateral (free balances of assets
        with a price and a weight > 0 at the venue, in asset id order) at the weighted price, as far as the fund's
        free balance of ``asset`` goes: for a shortfall s it takes the fewest units x whose weighted value
        floor(floor(x x price / lot) x weight / 10000) covers s (all it has if fewer) and pays min(s, that value).
        Two VenueTransfer pairs per asset (COLLATERAL_SOLD: x of it, target - / fund +, ``price`` the payment;
        COLLATERAL_PAID: the payment, fund - / target +, ``price`` x).  Returns the total paid."""
        if asset != self._valuation:
            return 0  # prices are in valuation units: another liquidated asset would need a cross rate
        v = self._venues[venue]
        total = 0
        for a in sorted(self._bal[target]):
            shortfall = -self._equity(target, asset)[0]
            fund_free = self._bal[fund].get(asset, [0, 0])[0]
            if shortfall <= 0 or fund_free <= 0:
                break
            price = self._collateral_price(a)
            weight = self._collateral_weight(a, venue)
            have = self._bal[target][a][0]
            if a == asset or price is None or weight == 0 or have <= 0:
                continue
            p, lot = price
            want = min(shortfall, fund_free)
            x = min(have, _ceil_div(_ceil_div(want * 10000, weight) * lot, p))  # the fewest units worth want
            pay = min(want, x * p // lot * weight // 10000)
            if pay <= 0:
                continue
            self._transfer(_X_COLLATERAL_SOLD, v, target, a, -x, pay)
            self._transfer(_X_COLLATERAL_SOLD, v, fund, a, x, pay)
            self._transfer(_X_COLLATERAL_PAID, v, fund, asset, -pay, x)
            self._transfer(_X_COLLATERAL_PAID, v, target, asset, pay, x)
            total += pay
        return total + self._sell_outcome_shares(target, fund, venue, asset)

    def _sell_outcome_shares(self, target: int, fund: int, venue: int, asset: int) -> int:
        """Then its outcome shares quoted in ``asset`` (open markets with an outcome mark, market id order): the fund
        takes the fewest whole lots whose weighted value covers the shortfall, as far as its free balance goes, at
        the weighted leg per lot (YES: mark, NO: payout - mark, x the asset's weight at the venue, down), moved like a
        fill between the two (OutcomePosition events, reason COLLATERAL, ``price`` the YES price); returns what the
        fund paid."""
        weight = self._collateral_weight(asset, venue)  # outcome shares count at their quote's weight
        total = 0
        for market in sorted(mk for mk in self._account_positions.get(target, ())
                             if self._markets[mk].kind == _OUTCOME and self._markets[mk].quote == asset):
            shortfall = -self._equity(target, asset)[0]
            fund_free = self._bal[fund].get(asset, [0, 0])[0]
            if shortfall <= 0 or fund_free <= 0:
                break
            m, oc, size = self._markets[market], self._outcomes.get(market), self._positions[(target, market)][0]
            mark = self._outcome_mark(m)
            if oc is None or oc.state != _OS_OPEN or size == 0 or not mark:
                continue
            per_lot = (mark if size > 0 else oc.payout - mark) * weight // 10000
            if per_lot <= 0:
                continue
            lots = min(abs(size) // m.lot, _ceil_div(shortfall, per_lot), fund_free // per_lot)
            if lots <= 0:
                continue
            sign = 1 if size > 0 else -1  # the target gives up its side, the fund takes it
            price = per_lot if size > 0 else oc.payout - per_lot
            for account, delta in ((target, -sign * lots * m.lot), (fund, sign * lots * m.lot)):
                pos, cash = self._outcome_move(account, m, oc, delta, price)
                self._outcome_event(account, m, 0, _OC_COLLATERAL, m.venue, 0, price, pos, cash)
            total += lots * per_lot
        return total

    def _market_kind_code(self, account: int, market: int, kind: int) -> int:
        """A market command's first checks, in order: a sender, the market, its kind."""
        if account <= 0:
            return int(RC.INVALID_ACCOUNT_ID)
        m = self._markets.get(market)
        if m is None:
            return int(RC.UNKNOWN_MARKET)
        if m.kind != kind:
            return int(RC.INVALID_MARKET_KIND)
        return 0

    def _market_operator_check(self, account: int, market: int, kind: int) -> int:
        """The first checks of a market's configuration (MarketRisk, FundingConfig, MarginTiers, OutcomeConfig):
        ``_market_kind_code``, then the sender the admin or the listing venue's operator."""
        code = self._market_kind_code(account, market, kind)
        if code:
            return code
        if account != self._admin and account != self._venues[self._markets[market].venue].operator:
            return int(RC.NOT_VENUE_OPERATOR)
        return 0

    def _market_risk(self, row) -> int:
        market, account, leverage, maint_bps = row[7], row[9], row[10], row[11]
        code = self._market_operator_check(account, market, _PERP)
        if code:
            return code
        m = self._markets[market]
        if not 1 <= leverage <= MAX_LEVERAGE:
            return int(RC.INVALID_LEVERAGE)
        if not 1 <= maint_bps <= 10000:
            return int(RC.INVALID_MAINTENANCE_MARGIN)
        impact_lots, slice_lots = row[12], row[13]
        if impact_lots < 0 or slice_lots < 0:
            return int(RC.INVALID_RISK_SIZE)
        if m.books[0].prices or m.books[1].prices:
            return int(RC.MARKET_HAS_OPEN_ORDERS)
        m.leverage, m.maint_bps = leverage, maint_bps
        m.impact_lots, m.slice_lots = impact_lots or DEFAULT_IMPACT_LOTS, slice_lots
        self._echo(_EV_VENUE, row)
        self._dirty_marks.add(market)
        return 0

    # ------------------------------------------------------------------ outcome markets
    @staticmethod
    def _outcome_closed_code(oc: _Outcome) -> RC:
        return RC.OUTCOME_RESOLVING if oc.state == _OS_PROPOSED else RC.OUTCOME_RESOLVED

    def _outcome_members(self, oc: _Outcome) -> list[_Outcome]:
        """The markets that resolve together: its event's (configuration order), or itself."""
        if oc.event == 0:
            return [oc]
        return [self._outcomes[mk] for mk in self._outcome_events[oc.event].markets]

    def _outcome_move(self, account: int, m: _Market, oc: _Outcome, delta: int, price: int) -> tuple[list, int]:
        """Move the account's YES position by ``delta`` (base units) at the YES price ``price``: the side's leg
        is ``price`` for a buy (delta > 0) and ``payout - price`` for a sell; the opened part pays its leg per lot
        into the collateral, the closed part is paid ``payout - leg`` per lot out of it (a sale of YES held, or
        a merge of NO held with YES bought). Returns (position, cash into the account's free quote)."""
        leg = price if delta > 0 else oc.payout - price
        pos = self._positions.get((account, m.market_id))
        if pos is None:
            pos = self._positions[(account, m.market_id)] = [0, 0, 0, 0]
            self._account_positions.setdefault(account, []).append(m.market_id)
        size, entry = pos[0], pos[1]
        closed = min(abs(delta), abs(size)) if size * delta < 0 else 0
        cash = 0
        if closed:
            closed_entry = entry * closed // abs(size)
            proceeds = (oc.payout - leg) * (closed // m.lot)
            pos[3] += proceeds - closed_entry
            entry -= closed_entry
            cash += proceeds
        opened = abs(delta) - closed
        if opened:
            cost = leg * (opened // m.lot)
            entry += cost
            cash -= cost
        pos[0], pos[1] = size + delta, entry
        self._bal[account][m.quote][0] += cash
        oc.collateral -= cash
        return pos, cash

    def _outcome_fill(self, o: _Order, m: _Market, q: int, price: int, fee: int) -> tuple:
        """One side of an outcome fill: the order's hold for these lots is released and pays the fee, then the
        position moves at the order's leg price (buy: YES at price; sell: NO at payout - price)."""
        b = self._bal[o.account][m.quote]
        released = (q // m.lot) * m.per_lot(m.leg(o.side, o.price), o.fpl)
        b[1] -= released
        b[0] += released - fee
        oc = self._outcomes[m.market_id]
        pos, cash = self._outcome_move(o.account, m, oc, q if o.side == _BUY else -q, price)
        return o, pos, cash

    def _outcome_event(self, account: int, m: _Market, side: int, reason: int, venue: int, order_id: int, price: int,
                       pos: list, cash: int) -> None:
        b = self._bal[account][m.quote]
        self._ev(_EV_OC_POSITION, 0, side, reason, 0, m.market_id, venue, order_id, account, pos[3], price, pos[0],
                 pos[1], b[0], b[1], cash, self._outcomes[m.market_id].collateral)

    def _outcome_status(self, oc: _Outcome, reason: int, account: int) -> None:
        self._ev(_EV_OC_STATUS, 0, 0, reason, 0, oc.market, self._markets[oc.market].venue, oc.resolver, account,
                 oc.event, oc.payout, oc.outcome, oc.finalize_at, oc.window, 0, 0, oc.collateral)

    def _outcome_config(self, row) -> int:
        market, account, payout, window, resolver, event = row[7], row[9], row[10], row[11], row[12], row[13]
        code = self._market_operator_check(account, market, _OUTCOME)
        if code:
            return code
        m = self._markets[market]
        if market in self._outcomes:
            return int(RC.OUTCOME_CONFIGURED)
        if payout % m.tick or payout < 2 * m.tick or payout > MAX_MONEY:
            return int(RC.INVALID_PAYOUT)
        if resolver <= 0:
            return int(RC.INVALID_RESOLVER)
        if window < 0:
            return int(RC.INVALID_DISPUTE_WINDOW)
        if event < 0:
            return int(RC.INVALID_EVENT)
        ev = self._outcome_events.get(event) if event else None
        if ev is not None:
            first = self._outcomes[ev.markets[0]]
            if (ev.converted or any(self._outcomes[mk].state != _OS_OPEN for mk in ev.markets)
                    or self._markets[first.market].quote != m.quote or first.payout != payout
                    or first.resolver != resolver or first.window != window):
                return int(RC.INVALID_EVENT)
        oc = _Outcome()
        oc.market, oc.state, oc.outcome, oc.payout, oc.resolver, oc.window, oc.event = (
            market, _OS_OPEN, 0, payout, resolver, window, event)
        oc.finalize_at = oc.collateral = oc.event_no = 0
        self._outcomes[market] = oc
        m.payout = payout
        if event:
            if ev is None:
                ev = self._outcome_events[event] = _OutcomeEvent(event)
            ev.markets.append(market)
        self._outcome_status(oc, _OS_OPEN, account)
        return 0

    def _outcome_code(self, market: int) -> tuple[_Outcome | None, int]:
        """The configured outcome market, or the code that says why not."""
        m = self._markets.get(market)
        if m is None:
            return None, int(RC.UNKNOWN_MARKET)
        if m.kind != _OUTCOME:
            return None, int(RC.INVALID_MARKET_KIND)
        oc = self._outcomes.get(market)
        if oc is None:
            return None, int(RC.OUTCOME_NOT_CONFIGURED)
        return oc, 0

    def _convert(self, row) -> int:
        market, account, qty = row[7], row[9], row[11]
        code = self._account_code(account)
        if code:
            return code
        oc, code = self._outcome_code(market)
        if code:
            return code
        if oc.event == 0 or len(self._outcome_events[oc.event].markets) < 2:
            return int(RC.NOT_IN_EVENT)
        if oc.state != _OS_OPEN:
            return int(self._outcome_closed_code(oc))
        m = self._markets[market]
        if qty <= 0:
            return int(RC.QTY_NOT_POSITIVE)
        if qty % m.lot:
            return int(RC.QTY_OFF_LOT)
        size = self._positions.get((account, market), (0,))[0]
        if -size < qty:
            return int(RC.NO_SHARES_TO_CONVERT)
        ev = self._outcome_events[oc.event]
        others = [self._outcomes[mk] for mk in ev.markets if mk != market]
        mint = oc.payout * (qty // m.lot)  # collateral each other market gains: new YES/NO pairs
        if (ev.advance + mint * len(others) > MAX_MONEY
                or any(other.collateral + mint > MAX_MONEY for other in others)):
            return int(RC.BALANCE_OVERFLOW)
        ev.converted += qty
        ev.advance += mint * len(others)
        self._ev(_EV_OC_CONVERT, 0, 0, 0, 0, market, m.venue, 0, account, oc.event, oc.payout, qty, ev.converted,
                 taker_fee=ev.advance)
        # the NO shares go to the event (no cash: leg = payout); their cost basis is realised as spent
        pos, cash = self._outcome_move(account, m, oc, qty, oc.payout)
        oc.event_no += qty
        self._outcome_event(account, m, _BUY, _OC_CONVERT, 0, 0, 0, pos, cash)
        for other in others:  # each other market mints qty pairs: YES to the account, NO to the event
            om = self._markets[other.market]
            self._bal[account].setdefault(om.quote, [0, 0])
            other.collateral += mint
            other.event_no += qty
            pos, cash = self._outcome_move(account, om, other, qty, 0)
            self._outcome_event(account, om, _BUY, _OC_CONVERT, 0, 0, 0, pos, cash)
        return 0

    def _resolve(self, row) -> int:
        market, account, outcome = row[7], row[9], row[11]
        if account <= 0:
            return int(RC.INVALID_ACCOUNT_ID)
        oc, code = self._outcome_code(market)
        if code:
            return code
        if oc.state == _OS_FINAL:
            return int(RC.OUTCOME_RESOLVED)
        if outcome not in (0, 1) or (oc.event and outcome != 1):
            return int(RC.INVALID_OUTCOME)
        if oc.state == _OS_OPEN:
            if account != oc.resolver:
                return int(RC.NOT_RESOLVER)
        elif account != self._admin:
            return int(RC.RESOLUTION_PENDING if account == oc.resolver else RC.NOT_RESOLVER)
        members = self._outcome_members(oc)
        for member in members:  # an event's named market wins, the others lose
            member.outcome = outcome if member is oc else 0
        if oc.state == _OS_PROPOSED:  # the admin overturns (or confirms): final at once
            for member in members:
                self._finalize(member, _OS_OVERTURNED, account)
        elif oc.window == 0:
            for member in members:
                self._finalize(member, _OS_FINAL, account)
        else:
            for member in members:
                member.state = _OS_PROPOSED
                member.finalize_at = min(self._now + oc.window, INT64_MAX)
                self._outcome_status(member, _OS_PROPOSED, account)
        return 0

    def _finalize(self, oc: _Outcome, reason: int, account: int) -> None:
        """Final resolution: cancel the market's open orders (order id order), pay ``payout`` per winning share
        (positions in order of first fill), repay the event's advance from the NO shares it holds, close it."""
        m = self._markets[oc.market]
        for oid in sorted(oid for oid, o in self._orders.items() if o.market == oc.market):
            o = self._orders[oid]
            self._cancel_order(o, o.remaining, _R_MASS, int(RC.OUTCOME_RESOLVED))
        for (account_id, market), pos in self._positions.items():
            if market != oc.market or pos[0] == 0:
                continue
            wins = (pos[0] > 0) == (oc.outcome == 1)
            cash = oc.payout * (abs(pos[0]) // m.lot) if wins else 0
            self._bal[account_id][m.quote][0] += cash
            oc.collateral -= cash
            pos[3] += cash - pos[1]
            pos[0] = pos[1] = 0
            self._outcome_event(account_id, m, _BUY, _OC_SETTLE, m.venue, 0, oc.payout if wins else 0, pos, cash)
        if oc.event_no:
            if oc.outcome == 0:
                repaid = oc.payout * (oc.event_no // m.lot)
                oc.collateral -= repaid
                self._outcome_events[oc.event].advance -= repaid
            oc.event_no = 0
        oc.state = _OS_FINAL
        oc.finalize_at = 0
        self._outcome_status(oc, reason, account)

    def outcomes(self) -> list[OutcomeView]:
        """Configured outcome markets in market id order."""
        return [self._outcomes[mk].view() for mk in sorted(self._outcomes)]

    def outcome(self, market: int) -> OutcomeView | None:
        oc = self._outcomes.get(market)
        return oc.view() if oc is not None else None

    def outcome_events(self) -> list[OutcomeEventView]:
        return [OutcomeEventView(e.event, len(e.markets), e.converted, e.advance)
                for _, e in sorted(self._outcome_events.items())]

    # ------------------------------------------------------------------ venue risk
    def _venue_risk(self, venue: int, market: int) -> _VenueRisk:
        r = self._venue_risks.get((venue, market))
        if r is None:
            r = self._venue_risks[(venue, market)] = _VenueRisk(venue, market)
        return r

    def _venue_open(self, o: _Order, delta: int) -> None:
        """A perpetual order's remaining changed by ``delta``: its venue's open size on that side follows."""
        r = self._venue_risk(o.venue, o.market)
        if o.side == _BUY:
            r.open_buy += delta
        else:
            r.open_sell += delta

    @staticmethod
    def _check_venue_risk(r: _VenueRisk | None, m: _Market, side: int, price: int, new_price: bool, added: int,
                          reduce_only: bool) -> int:
        """The venue's halt (all but reduce-only orders and pure size reductions), its band (else the
        market's) on a new price around the last trade (a perpetual not yet traded: its mark), its open-interest
        cap on added size (ARCHITECTURE, "Venues")."""
        band = m.band_bps
        ref = m.last or (m.mark if m.kind == _PERP else 0)
        if r is not None:
            if r.halted and not reduce_only and (new_price or added > 0):
                return int(RC.VENUE_MARKET_HALTED)
            if r.band_bps > 0:
                band = r.band_bps
        if new_price and band > 0 and ref > 0 and abs(price - ref) * 10000 > band * ref:
            return int(RC.PRICE_OUTSIDE_BAND)
        if r is not None and r.oi_cap > 0 and not reduce_only and added > 0:
            oi, open_size = (r.long_oi, r.open_buy) if side == _BUY else (r.short_oi, r.open_sell)
            if oi + open_size + added > r.oi_cap:
                return int(RC.VENUE_OI_CAP_REACHED)
        return 0

    def _venue_market_risk(self, row) -> int:
        venue, market, account, band, cap, move, windows = row[6], row[7], row[9], row[10], row[11], row[12], row[13]
        code = self._operator_code(venue, account)
        if code:
            return code
        v = self._venues[venue]
        if v.status == _RETIRED:
            return int(RC.VENUE_RETIRED)
        m = self._markets.get(market)
        if m is None:
            return int(RC.UNKNOWN_MARKET)
        if market not in v.offers:
            return int(RC.MARKET_NOT_OFFERED)
        if not 0 <= band <= 10000:
            return int(RC.INVALID_VENUE_BAND)
        if cap < 0 or (cap > 0 and m.kind != _PERP):
            return int(RC.INVALID_OI_CAP)
        window_ms, cooldown_ms = unpack_breaker_windows(windows)
        if not 0 <= move <= 10000 or (move == 0 and windows != 0) or (move > 0 and window_ms == 0):
            return int(RC.INVALID_BREAKER)
        r = self._venue_risk(venue, market)
        r.band_bps, r.oi_cap, r.move_bps, r.window_ms, r.cooldown_ms = band, cap, move, window_ms, cooldown_ms
        self._echo(_EV_VENUE, row)
        return 0

    def _venue_market_status(self, row) -> int:
        """VenueMarketHalt / Resume from the venue's operator, the admin or an internal worker (account < 0)."""
        kind, venue, market, account = row[0], row[6], row[7], row[9]
        if account == 0:
            return int(RC.INVALID_ACCOUNT_ID)
        v = self._venues.get(venue)
        if v is None:
            return int(RC.UNKNOWN_VENUE)
        if account > 0 and account != v.operator and account != self._admin:
            return int(RC.NOT_VENUE_OPERATOR)
        if market not in self._markets:
            return int(RC.UNKNOWN_MARKET)
        if market not in v.offers:
            return int(RC.MARKET_NOT_OFFERED)
        halt = kind == int(Cmd.VENUE_MARKET_HALT)
        r = self._venue_risks.get((venue, market))
        if (r is not None and r.halted) == halt:
            return int(RC.MARKET_STATUS_UNCHANGED)
        self._venue_risk(venue, market).halted = halt
        self._ev(int(Ev.MARKET_STATUS), 0, 0, 0, kind, market, venue, 0, account, 0, 0, int(halt), 0)
        return 0

    def venue_market_risks(self) -> list[VenueMarketRiskView]:
        return sorted(r.view() for r in self._venue_risks.values())

    def venue_market_risk(self, venue: int, market: int) -> VenueMarketRiskView | None:
        r = self._venue_risks.get((venue, market))
        return r.view() if r is not None else None

    # ------------------------------------------------------------------ funding
    def _schedule_funding(self, m: _Market) -> None:
        """The next sample and funding times: the first multiples of their intervals after now; no samples yet."""
        m.next_sample = (self._now // m.sample_interval + 1) * m.sample_interval
        m.next_funding = (self._now // m.funding_interval + 1) * m.funding_interval
        m.premium_sum = m.samples = 0

    def _sample_premium(self, m: _Market) -> None:
        """Step 2e: the premium (impact mid - oracle) / oracle in 1e-8, floored and at most +100 %, with the book
        before this command and the oracle after step 2c; no sample when either is missing. Missed sample times are
        not made up: the next is the first multiple of the sample interval after now."""
        oracle, impact, _, _ = self._mark_inputs(m)
        if oracle and impact:
            m.premium_sum += min((impact - oracle) * RATE_SCALE // oracle, RATE_SCALE)
            m.samples += 1
        m.next_sample = (self._now // m.sample_interval + 1) * m.sample_interval

    def _funding_rate(self, m: _Market) -> tuple[int, int]:
        """(rate, average premium) in 1e-8: premium + clamp(interest - premium, +-clamp), capped at +-cap; 0 without
        a sample."""
        if not m.samples:
            return 0, 0
        premium = m.premium_sum // m.samples
        rate = premium + min(max(m.interest - premium, -m.clamp), m.clamp)
        return min(max(rate, -m.cap), m.cap), premium

    def _apply_funding(self, row) -> int:
        market, account = row[7], row[9]
        code = self._market_kind_code(account, market, _PERP)
        if code:
            return code
        m = self._markets[market]
        if self._now < m.next_funding:
            return int(RC.FUNDING_NOT_DUE)
        fund = self._fund(m.venue)
        if not fund:
            return int(RC.NO_FUNDING_ACCOUNT)
        rate, premium = self._funding_rate(m)
        v = self._venues[m.venue]
        paid = received = 0
        if rate and m.mark:  # payers (longs when rate > 0) pay ceil, receivers get floor of notional x |rate|
            for (a, mk), pos in self._positions.items():  # in order of first fill
                if mk != market or not pos[0]:
                    continue
                product = m.mark * (abs(pos[0]) // m.lot) * abs(rate)
                if (pos[0] > 0) == (rate > 0):
                    amount = -(-product // RATE_SCALE)
                    paid += amount
                    amount = -amount
                else:
                    amount = product // RATE_SCALE
                    received += amount
                if amount and (a, mk) in self._isolated:  # into or out of the position's own margin; free only past it
                    margin = amount if amount > 0 else -min(pos[2], -amount)
                    pos[2] += margin
                    self._transfer(_X_FUNDING, v, a, m.quote, amount, market, margin)
                    self._margin_position_event(a, m, pos, int(Cmd.APPLY_FUNDING))
                elif amount:
                    self._transfer(_X_FUNDING, v, a, m.quote, amount, market)
            if paid != received:
                self._transfer(_X_FUNDING_REMAINDER, v, fund, m.quote, paid - received, market)
        due = m.next_funding
        m.next_funding = (self._now // m.funding_interval + 1) * m.funding_interval
        self._ev(int(Ev.FUNDING), 0, 0, 0, 0, market, m.venue, due, fund, m.mark, rate, premium, m.samples, paid,
                 m.next_funding, received, paid - received)
        m.premium_sum = m.samples = 0
        return 0

    def _funding_config(self, row) -> int:
        market, account, interval, sample, interest, limits = row[7], row[9], row[10], row[11], row[12], row[13]
        code = self._market_operator_check(account, market, _PERP)
        if code:
            return code
        m = self._markets[market]
        if interval <= 0 or sample <= 0 or sample > interval:
            return int(RC.INVALID_FUNDING_INTERVAL)
        clamp, cap = unpack_funding_limits(limits)
        if not (-RATE_SCALE <= interest <= RATE_SCALE and clamp <= RATE_SCALE and 1 <= cap <= RATE_SCALE):
            return int(RC.INVALID_FUNDING_RATE)
        m.funding_interval, m.sample_interval, m.interest, m.clamp, m.cap = interval, sample, interest, clamp, cap
        self._schedule_funding(m)
        self._echo(_EV_VENUE, row)
        return 0

    def _margin_tiers(self, row) -> int:
        market, account, aux = row[7], row[9], row[13]
        code = self._market_operator_check(account, market, _PERP)
        if code:
            return code
        m = self._markets[market]
        if aux < 0 or aux >> 24:
            return int(RC.INVALID_MARGIN_TIER)
        tiers, floor, leverage = [], 0, MAX_LEVERAGE
        for k, next_floor in enumerate((row[10], row[11], row[12])):  # used brackets first, then unused (0, 0)
            next_leverage = (aux >> (8 * k)) & 0xFF
            if next_floor == 0 and next_leverage == 0:
                floor = MAX_MONEY  # nothing may follow an unused bracket
                continue
            if not (floor < next_floor <= MAX_MONEY and 1 <= next_leverage <= leverage):
                return int(RC.INVALID_MARGIN_TIER)
            tiers.append((next_floor, next_leverage))
            floor, leverage = next_floor, next_leverage
        m.tiers = tiers
        self._echo(_EV_VENUE, row)
        return 0

    def margin_tiers(self) -> list[MarginTiersView]:
        """Every perpetual market's notional brackets ((floor, max leverage), ...), the first (0, MarketRisk's), in
        market order."""
        return [MarginTiersView(i, ((0, m.leverage),) + tuple(m.tiers))
                for i, m in sorted(self._markets.items()) if m.kind == _PERP]

    def fundings(self) -> list[FundingView]:
        """Every perpetual market's funding configuration and schedule, in market order."""
        return [FundingView(i, m.funding_interval, m.sample_interval, m.interest, m.clamp, m.cap, m.next_sample,
                            m.next_funding, m.premium_sum, m.samples)
                for i, m in sorted(self._markets.items()) if m.kind == _PERP]

    # ------------------------------------------------------------------ oracles
    def _oracle_stale(self, venue: int, market: int) -> bool:
        o = self._oracles.get((venue, market))
        return o is not None and o.stale

    def _oracle_status(self, o: _Oracle) -> None:
        self._ev(int(Ev.ORACLE_STATUS), 0, 0, 0, 0, o.market, o.venue, 0, o.feed_account, o.feed_id, o.price,
                 int(o.stale), o.updated_at)

    def _oracle_config(self, row) -> int:
        venue, market, account, timeout, feed_id, feed_account = row[6], row[7], row[9], row[11], row[12], row[13]
        code = self._operator_code(venue, account)
        if code:
            return code
        v = self._venues[venue]
        if v.status == _RETIRED:
            return int(RC.VENUE_RETIRED)
        if market not in self._markets:
            return int(RC.UNKNOWN_MARKET)
        if market not in v.offers:
            return int(RC.MARKET_NOT_OFFERED)
        if feed_id <= 0:
            return int(RC.INVALID_FEED_ID)
        if feed_account <= 0:
            return int(RC.INVALID_FEED_ACCOUNT)
        if timeout <= 0:
            return int(RC.INVALID_ORACLE_TIMEOUT)
        o = self._oracles.get((venue, market))
        if o is None:
            o = self._oracles[(venue, market)] = _Oracle(venue, market, self._now)
        o.feed_id, o.feed_account, o.timeout = feed_id, feed_account, timeout
        self._echo(int(Ev.ORACLE_CONFIG), row)
        return 0

    def _oracle_price(self, row) -> int:
        venue, market, account, price, sources, feed_id, source_ts = row[6], row[7], row[9], row[10], row[11], \
            row[12], row[13]
        if venue not in self._venues:
            return int(RC.UNKNOWN_VENUE)
        m = self._markets.get(market)
        if m is None:
            return int(RC.UNKNOWN_MARKET)
        o = self._oracles.get((venue, market))
        if o is None:
            return int(RC.ORACLE_NOT_CONFIGURED)
        if feed_id != o.feed_id:
            return int(RC.WRONG_FEED)
        if account != o.feed_account:
            return int(RC.WRONG_FEED_ACCOUNT)
        if price <= 0:
            return int(RC.PRICE_NOT_POSITIVE)
        if price % m.tick:
            return int(RC.PRICE_OFF_TICK)
        if price > MAX_MONEY:
            return int(RC.PRICE_TOO_LARGE)
        if sources <= 0:
            return int(RC.INVALID_SOURCE_COUNT)
        if source_ts <= o.source_ts:
            return int(RC.ORACLE_TIME_NOT_NEWER)
        o.price, o.source_ts, o.sources, o.updated_at = price, source_ts, sources, self._now
        self._echo(int(Ev.ORACLE), row)
        self._dirty_if_perp(market)
        if o.stale:
            o.stale = False
            self._oracle_status(o)
        return 0

    def market_risks(self) -> list[MarketRiskView]:
        """Every perpetual market's risk parameters, in market order."""
        return [MarketRiskView(i, m.leverage, m.maint_bps, m.impact_lots, m.slice_lots, m.mark)
                for i, m in sorted(self._markets.items()) if m.kind == _PERP]

    def positions(self) -> list[PositionView]:
        """Every (account, perpetual market) that has traded, flat ones included, in (account, market) order."""
        return [PositionView(a, mk, *pos) for (a, mk), pos in sorted(self._positions.items())]

    def position(self, account: int, market: int) -> PositionView | None:
        pos = self._positions.get((account, market))
        return None if pos is None else PositionView(account, market, *pos)

    def oracles(self) -> list[OracleView]:
        return [o.view() for o in self._oracles.values()]

    def oracle(self, venue: int, market: int) -> OracleView | None:
        o = self._oracles.get((venue, market))
        return None if o is None else o.view()

    def _transfer(self, reason: int, v: _Venue, account: int, asset: int, amount: int, bucket_after: int,
                  into_held: int = 0) -> None:
        """amount of the asset into (> 0) or out of (< 0) the account's balance, against a bucket of the venue (its
        locked stake or its fee pool, already updated; bucket_after is its size): ``into_held`` of it into (or out of)
        held (an isolated position's margin, moved by the caller), the rest free."""
        b = self._bal[account].setdefault(asset, [0, 0])
        b[0] += amount - into_held
        b[1] += into_held
        self._ev(int(Ev.VENUE_TRANSFER), 0, 0, reason, 0, asset, v.venue_id, 0, account, 0, bucket_after, amount,
                 b[0], taker_fee=b[1])

    def _stake_transfer(self, reason: int, v: _Venue, account: int, amount: int) -> None:
        self._transfer(reason, v, account, self._stake_asset, amount, v.stake + v.unbonding)

    def _operator_code(self, venue: int, account: int) -> int:
        if account <= 0:
            return int(RC.INVALID_ACCOUNT_ID)
        v = self._venues.get(venue)
        if v is None:
            return int(RC.UNKNOWN_VENUE)
        if account != v.operator and account != self._admin:
            return int(RC.NOT_VENUE_OPERATOR)
        return 0

    def _new_account_code(self, account: int) -> int:
        """ACCOUNT_CAPACITY when creating ``account`` would not fit, else 0."""
        if account not in self._bal and len(self._bal) >= self.max_accounts:
            return int(RC.ACCOUNT_CAPACITY)
        return 0

    def _venue_params(self, row) -> int:
        asset, account, period, min_stake, protocol, admin = row[7], row[9], row[10], row[11], row[12], row[13]
        if account <= 0:
            return int(RC.INVALID_ACCOUNT_ID)
        if self._admin and account != self._admin:
            return int(RC.NOT_ADMIN)
        if asset not in self._assets:
            return int(RC.UNKNOWN_ASSET)
        if min_stake <= 0 or period < 0 or protocol <= 0 or admin <= 0:
            return int(RC.INVALID_STAKING_PARAMS)
        code = self._new_account_code(protocol)
        if code:
            return code
        if self._stake_asset and asset != self._stake_asset and any(
                v.stake or v.unbonding for v in self._venues.values()):
            return int(RC.STAKE_ASSET_LOCKED)
        self._stake_asset, self._min_stake, self._unbond_period = asset, min_stake, period
        self._protocol, self._admin = protocol, admin
        self._bal.setdefault(protocol, {})
        self._venue_echo(row)
        return 0

    def _launch_venue(self, row) -> int:
        access, venue, account, stake, insurance = row[1], row[6], row[9], row[11], row[12]
        if not self._admin:
            return int(RC.STAKING_NOT_CONFIGURED)
        code = self._account_code(account)
        if code:
            return code
        if not 1 <= venue < self.max_venues:
            return int(RC.INVALID_VENUE_ID)
        if venue in self._venues:
            return int(RC.VENUE_EXISTS)
        if access > _ALLOW_LIST:
            return int(RC.INVALID_VENUE_POLICY)
        if insurance <= 0 or insurance in (account, self._protocol):
            return int(RC.INVALID_INSURANCE_ACCOUNT)
        if stake < self._min_stake:
            return int(RC.STAKE_BELOW_MINIMUM)
        if stake > self._bal[account].get(self._stake_asset, [0, 0])[0]:
            return int(RC.INSUFFICIENT_STAKE_BALANCE)
        code = self._new_account_code(insurance)
        if code:
            return code
        if any(v.insurance == insurance for vid, v in self._venues.items() if vid):
            return int(RC.INVALID_INSURANCE_ACCOUNT)
        v = self._venues[venue] = _Venue(venue, account, insurance, access, stake)
        self._bal.setdefault(insurance, {})
        self._venue_echo(row)
        self._stake_transfer(int(Transfer.STAKE_LOCK), v, account, -stake)
        return 0

    def _stake(self, row) -> int:
        kind, venue, account, amount = row[0], row[6], row[9], row[11]
        code = self._operator_code(venue, account)
        if code:
            return code
        v = self._venues[venue]
        if venue == 0:
            return int(RC.PROTOCOL_VENUE)
        if amount <= 0:
            return int(RC.AMOUNT_NOT_POSITIVE)
        if kind == int(Cmd.ADD_STAKE):
            if v.status == _RETIRED:
                return int(RC.VENUE_RETIRED)
            if amount > self._bal[v.operator].get(self._stake_asset, [0, 0])[0]:
                return int(RC.INSUFFICIENT_STAKE_BALANCE)
            self._venue_echo(row)
            v.stake += amount
            self._stake_transfer(int(Transfer.STAKE_LOCK), v, v.operator, -amount)
            return 0
        if v.unbonding:
            return int(RC.UNBOND_PENDING)
        if amount > v.stake:
            return int(RC.UNBOND_EXCEEDS_STAKE)
        if v.status != _RETIRED and v.stake - amount < self._min_stake:
            return int(RC.UNBOND_BELOW_MINIMUM)
        self._venue_echo(row)
        v.stake -= amount
        v.unbonding = amount
        v.unbond_at = min(self._now + self._unbond_period, (1 << 63) - 1)
        return 0

    def _venue_status(self, row) -> int:
        status, venue, account = row[1], row[6], row[9]
        code = self._operator_code(venue, account)
        if code:
            return code
        v = self._venues[venue]
        if not _LIVE <= status <= _RETIRED:
            return int(RC.INVALID_VENUE_STATUS)
        if v.status == _RETIRED:
            return int(RC.VENUE_RETIRED)
        if status == v.status:
            return int(RC.VENUE_STATUS_UNCHANGED)
        if venue == 0 and status >= _WINDING_DOWN:
            return int(RC.PROTOCOL_VENUE)
        if status == _RETIRED and any(o.venue == venue for o in self._orders.values()):
            return int(RC.VENUE_HAS_OPEN_ORDERS)
        v.status = status
        self._venue_echo(row)
        return 0

    def _venue_config(self, row) -> int:
        """VenueAccess, VenuePolicy, OfferMarket / WithdrawMarket, Allow / Deny."""
        kind, side, venue, market, account, qty, target, aux = row[0], row[1], row[6], row[7], row[9], row[11], row[12], row[13]
        code = self._operator_code(venue, account)
        if code:
            return code
        v = self._venues[venue]
        if v.status == _RETIRED:
            return int(RC.VENUE_RETIRED)
        if kind == int(Cmd.VENUE_ACCESS):
            if side > _ALLOW_LIST:
                return int(RC.INVALID_VENUE_POLICY)
            v.access, v.blocked = side, qty & _U64
        elif kind == int(Cmd.VENUE_POLICY):
            accepts = aux & _U64
            if side > 63 or not (accepts >> side) & 1:
                return int(RC.INVALID_VENUE_POLICY)
            v.pool, v.accepts = side, accepts
        elif kind in (int(Cmd.OFFER_MARKET), int(Cmd.WITHDRAW_MARKET)):
            if market not in self._markets:
                return int(RC.UNKNOWN_MARKET)
            offer = kind == int(Cmd.OFFER_MARKET)
            if (market in v.offers) == offer:
                return int(RC.VENUE_OFFER_UNCHANGED)
            if offer:
                v.offers.add(market)
            else:
                v.offers.discard(market)
        else:
            allow = kind == int(Cmd.ALLOW)
            if target <= 0:
                return int(RC.INVALID_ACCOUNT_ID)
            if ((target, venue) in self._allowed) == allow:
                return int(RC.ACCESS_UNCHANGED)
            if allow:
                self._allowed.add((target, venue))
            else:
                self._allowed.discard((target, venue))
        self._venue_echo(row)
        return 0

    def _set_region(self, row) -> int:
        region, account, target = row[1], row[9], row[12]
        if account <= 0:
            return int(RC.INVALID_ACCOUNT_ID)
        if account != self._admin:
            return int(RC.NOT_ADMIN)
        code = self._account_code(target)
        if code:
            return code
        if region > 63:
            return int(RC.INVALID_REGION)
        self._regions[target] = region
        self._venue_echo(row)
        return 0

    def _slash(self, row) -> int:
        venue, account, shortfall, amount = row[6], row[9], row[10], row[11]
        if account <= 0:
            return int(RC.INVALID_ACCOUNT_ID)
        if account != self._admin:
            return int(RC.NOT_ADMIN)
        v = self._venues.get(venue)
        if v is None:
            return int(RC.UNKNOWN_VENUE)
        if venue == 0:
            return int(RC.PROTOCOL_VENUE)
        if amount <= 0 or shortfall < 0:
            return int(RC.AMOUNT_NOT_POSITIVE)
        if amount > v.stake + v.unbonding:
            return int(RC.SLASH_EXCEEDS_STAKE)
        from_bonded = min(amount, v.stake)
        v.stake -= from_bonded
        v.unbonding -= amount - from_bonded
        if not v.unbonding:
            v.unbond_at = 0
        to_insurance = min(amount, shortfall)
        self._venue_echo(row)
        if to_insurance:
            self._stake_transfer(int(Transfer.SLASH_INSURANCE), v, v.insurance, to_insurance)
        if amount > to_insurance:
            self._stake_transfer(int(Transfer.SLASH_PROTOCOL), v, self._protocol, amount - to_insurance)
        return 0

    def _collect(self, venue: int, asset: int, amount: int) -> None:
        """Fees into the venue's pool; venue 0's pool is the protocol's (``fees(asset)``)."""
        if venue == 0:
            self._fees[asset] += amount
        elif amount:
            self._venue_fees[(venue, asset)] = self._venue_fees.get((venue, asset), 0) + amount

    def _add_volume(self, o: _Order, quote: int, notional: int) -> None:
        v = self._venues[o.venue]
        if quote != v.tier_asset:
            return
        epoch = self._now // v.tier_epoch
        vol = self._volumes.setdefault((o.account, o.venue), [0, 0, 0])
        if vol[0] != epoch:
            vol[:] = [epoch, 0, vol[1] if vol[0] == epoch - 1 else 0]
        vol[1] = min(vol[1] + notional, MAX_MONEY)

    def _order_fees(self, m: _Market, v: _Venue, account: int) -> tuple[int, int]:
        """Venue 0: the market's fees; another venue: its own at the account's tier (the highest
        whose minimum its volume there in the previous epoch reaches)."""
        if v.venue_id == 0:
            return m.maker_bps, m.taker_bps
        fees = (v.maker_bps, v.taker_bps)
        vol = self._volumes.get((account, v.venue_id))
        last = 0
        if vol is not None and v.tiers:
            epoch = self._now // v.tier_epoch
            last = vol[2] if vol[0] == epoch else vol[1] if vol[0] == epoch - 1 else 0
        for min_volume, maker, taker in v.tiers:
            if last >= min_volume:
                fees = (maker, taker)
        return fees

    def _venue_fees_cmd(self, row) -> int:
        """VenueFees (base fees and the split) and VenueFeeTier (a volume tier)."""
        kind, tier, venue, asset, account, min_volume, epoch, packed = (row[0], row[1], row[6], row[7], row[9],
                                                                       row[10], row[11], row[13])
        code = self._operator_code(venue, account)
        if code:
            return code
        v = self._venues[venue]
        u = packed & _U64
        maker, taker = _s16(u & 0xFFFF), _s16((u >> 16) & 0xFFFF)
        op_bps, ins_bps = (u >> 32) & 0xFFFF, (u >> 48) & 0xFFFF
        fees_ok = -1000 <= maker <= taker <= 1000 and maker + taker >= 0
        if venue == 0:
            return int(RC.PROTOCOL_VENUE)
        if v.status == _RETIRED:
            return int(RC.VENUE_RETIRED)
        if kind == int(Cmd.VENUE_FEES):
            if not fees_ok or op_bps + ins_bps > 10000:
                return int(RC.INVALID_VENUE_FEES)
            v.maker_bps, v.taker_bps, v.operator_bps, v.insurance_bps = maker, taker, op_bps, ins_bps
            self._venue_echo(row)
            return 0
        t = tier - 1
        n = len(v.tiers)
        if not 0 <= t <= min(n, 3) or min_volume < 0 or (min_volume > 0 and (
                epoch <= 0 or (t > 0 and min_volume <= v.tiers[t - 1][0])
                or (t + 1 < n and min_volume >= v.tiers[t + 1][0]))):
            return int(RC.INVALID_FEE_TIER)
        if min_volume > 0 and asset not in self._assets:
            return int(RC.UNKNOWN_ASSET)
        if min_volume > 0 and not fees_ok:
            return int(RC.INVALID_VENUE_FEES)
        if min_volume == 0:
            del v.tiers[t:]
        else:
            if t == n:
                v.tiers.append((min_volume, maker, taker))
            else:
                v.tiers[t] = (min_volume, maker, taker)
            v.tier_asset, v.tier_epoch = asset, epoch
        self._venue_echo(row)
        return 0

    def _sweep_fees(self, row) -> int:
        venue, asset, account = row[6], row[7], row[9]
        code = self._operator_code(venue, account)
        if code:
            return code
        if venue == 0:
            return int(RC.PROTOCOL_VENUE)
        if asset not in self._assets:
            return int(RC.UNKNOWN_ASSET)
        pool = self._venue_fees.get((venue, asset), 0)
        if not pool:
            return int(RC.NOTHING_TO_SWEEP)
        v = self._venues[venue]
        to_operator = pool * v.operator_bps // 10000
        to_insurance = pool * v.insurance_bps // 10000
        del self._venue_fees[(venue, asset)]
        self._venue_echo(row)
        left = pool - to_operator
        if to_operator:
            self._transfer(int(Transfer.FEE_OPERATOR), v, v.operator, asset, to_operator, left)
        left -= to_insurance
        if to_insurance:
            self._transfer(int(Transfer.FEE_INSURANCE), v, v.insurance, asset, to_insurance, left)
        if left:
            self._transfer(int(Transfer.FEE_PROTOCOL), v, self._protocol, asset, left, 0)
        return 0

    def venue_fee_schedule(self, venue_id: int) -> VenueFeesView:
        if venue_id not in self._venues:
            raise KeyError(f"unknown venue {venue_id!r}")
        v = self._venues[venue_id]
        return VenueFeesView(v.maker_bps, v.taker_bps, v.operator_bps, v.insurance_bps, v.tier_asset, v.tier_epoch,
                             tuple(v.tiers))

    def venue_fees(self, venue_id: int) -> dict[int, int]:
        return {asset: n for (vid, asset), n in sorted(self._venue_fees.items()) if vid == venue_id and n}

    def volumes(self) -> list[tuple]:
        return sorted((account, venue, *vol) for (account, venue), vol in self._volumes.items())

    def venues(self) -> list[VenueView]:
        return [self.venue(vid) for vid in sorted(self._venues)]

    def venue(self, venue_id: int) -> VenueView | None:
        v = self._venues.get(venue_id)
        if v is None:
            return None
        open_orders = sum(1 for o in self._orders.values() if o.venue == venue_id)
        return VenueView(venue_id, v.operator, v.insurance, v.status, v.access, v.pool, v.accepts, v.blocked,
                         v.stake, v.unbonding, v.unbond_at, open_orders)

    def venue_markets(self, venue_id: int) -> list[int]:
        if venue_id not in self._venues:
            raise KeyError(f"unknown venue {venue_id!r}")
        return sorted(self._venues[venue_id].offers)

    def allowed(self, venue_id: int) -> list[int]:
        return sorted(a for a, v in self._allowed if v == venue_id)

    def region(self, account: int) -> int:
        return self._regions.get(account, 0)

    def venue_params(self) -> VenueParamsView:
        return VenueParamsView(self._admin, self._protocol, self._stake_asset, self._min_stake, self._unbond_period)

    # ------------------------------------------------------------------ queries
    def l2(self, market: int, depth: int = 10, venue: int | None = None):
        m = self._markets.get(market)
        if m is None:
            return [], []
        if venue is not None and venue not in self._venues:
            raise KeyError(f"unknown venue {venue!r}")
        out = []
        for book in m.books:
            levels = []
            for price in book.prices_best_first():
                if len(levels) >= depth:
                    break
                lv = book.levels[price]
                if venue is None:
                    levels.append((price, lv.qty, len(lv.orders)))
                    continue
                mine = [o.remaining for o in lv.orders.values() if self._eligible(venue, o.venue)]
                if mine:
                    levels.append((price, sum(mine), len(mine)))
            out.append(levels)
        return out[0], out[1]

    def l3(self, market: int) -> list[OrderView]:
        m = self._markets.get(market)
        if m is None:
            return []
        views = []
        for book in m.books:
            for price in book.prices_best_first():
                views.extend(o.view() for o in book.levels[price].orders.values())
        return views

    def order(self, order_id: int) -> OrderView | None:
        o = self._orders.get(order_id)
        return None if o is None else o.view()

    def balance(self, account: int, asset: int) -> tuple[int, int]:
        b = self._bal.get(account, {}).get(asset)
        return (0, 0) if b is None else (b[0], b[1])

    def balances(self, account: int) -> dict[int, tuple[int, int]]:
        return {asset: (b[0], b[1]) for asset, b in sorted(self._bal.get(account, {}).items())}

    def accounts(self) -> list[int]:
        return sorted(self._bal)

    def fees(self, asset: int) -> int:
        return self._fees.get(asset, 0)

    def best_bid(self, market: int) -> int:
        m = self._markets.get(market)
        return 0 if m is None else m.books[_BUY].best()

    def best_ask(self, market: int) -> int:
        m = self._markets.get(market)
        return 0 if m is None else m.books[_SELL].best()

    def last_price(self, market: int) -> int:
        m = self._markets.get(market)
        return 0 if m is None else m.last

    def markets(self) -> list[MarketView]:
        return [self._markets[k].view() for k in sorted(self._markets)]

    def assets(self) -> list[AssetView]:
        out = []
        for asset_id in sorted(self._assets):
            lo, hi, decimals = self._assets[asset_id]
            raw = lo.to_bytes(8, "little", signed=True) + hi.to_bytes(8, "little", signed=True)
            raw = raw.rstrip(b"\0")
            try:
                symbol = raw.decode("ascii")
            except UnicodeDecodeError:
                symbol = raw.decode("latin-1")
            out.append(AssetView(asset_id, symbol, decimals))
        return out

    @property
    def cmd_seq(self) -> int:
        return self._cmd_seq

    @property
    def event_seq(self) -> int:
        return self._event_seq

    @property
    def last_order_id(self) -> int:
        return self._last_order_id

    @property
    def now(self) -> int:
        return self._now

    @property
    def open_orders(self) -> int:
        return len(self._orders)
