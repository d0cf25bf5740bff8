"""The order-entry wire protocol: msgspec MessagePack Structs, one message per ZeroMQ frame.

A client (DEALER) sends one request per message; the gateway (ROUTER) answers each request that
carries a request id ``rid`` with exactly one reply of the same ``rid`` (Ack, Reject, a query
result or Error), and pushes ExecutionReports (fills, cancels, amends) to every session of the
order's account.  Several replies for one session may travel together in one ``Replies``.

Structs are encoded as arrays whose first element is the tag (``array_like``): compact and fast
to decode.  Prices and sizes are int64 engine units (price in quote units per lot, size in base
units, see docs/ARCHITECTURE.md "Units"); never floats.  The account is never in a message: the
gateway takes it from the session's authenticated CurveZMQ key.
"""
from __future__ import annotations

import re
import typing
from typing import Annotated, ClassVar, Literal, Union

import msgspec
import numpy as np

from engine.api import MAX_LEGS
from engine.records import (LISTING_ASSET_MAX, Cmd, OrdType, Side, Stp, Tif, pack_breaker_windows, pack_listing,
                            pack_venue_fees, unpack_breaker_windows, unpack_listing)
from engine.rowpack import PACK_TOO_MANY_ROWS, PackedRowsError, RowPacking

I64 = Annotated[int, msgspec.Meta(ge=-(1 << 63), le=(1 << 63) - 1)]  # every integer fits the engine's int64
MarketId = Annotated[int, msgspec.Meta(ge=0, le=(1 << 32) - 1)]  # the command's u32 field
VenueId = Annotated[int, msgspec.Meta(ge=0, le=(1 << 32) - 1)]  # the command's u32 field (also assets)
Positive = Annotated[int, msgspec.Meta(ge=1, le=(1 << 63) - 1)]
NonNegative = Annotated[int, msgspec.Meta(ge=0, le=(1 << 63) - 1)]


class _Msg(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True, tag_field="t", gc=False):
    """Messages hold values, never themselves: untracked by the cyclic GC (``gc=False``), so the
    gateway's stream of them does not set off collections."""


# ------------------------------------------------------------------ requests: commands


class PlaceOrder(_Msg, tag="place"):
    rid: I64
    market: MarketId
    side: Side
    price: I64  # limit price, or a market order's protection price
    qty: I64
    client_id: I64  # unique among the account's open orders (the matcher rejects DUPLICATE_CLIENT_ID)
    tif: Tif = Tif.GTC
    ord_type: OrdType = OrdType.LIMIT
    stp: Stp = Stp.CANCEL_TAKER
    post_only: bool = False
    expire_at: I64 = 0  # engine clock ns, 0 = none (GTC only)
    venue: VenueId = 0  # the venue the order goes through (its access rule, fees and matching pool)


class CancelOrder(_Msg, tag="cancel"):
    rid: I64
    order_id: I64 = 0  # exactly one of order_id and client_id
    client_id: I64 = 0


class AmendOrder(_Msg, tag="amend"):
    rid: I64
    qty: I64  # the new open (remaining) size
    price: I64 = 0  # 0 = keep the price
    order_id: I64 = 0  # exactly one of order_id and client_id
    client_id: I64 = 0


class MassCancel(_Msg, tag="mass_cancel"):
    rid: I64
    market: MarketId = 0  # 0 = every market
    venue: VenueId | None = None  # only the orders placed through this venue; None = every venue


Command = Union[PlaceOrder, CancelOrder, AmendOrder, MassCancel]


class OrderLeg(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    """One leg of a MultiLegOrder: a limit fill-or-kill order of the session's account."""

    market: MarketId
    side: Side
    price: I64  # the limit (an outcome leg's: a YES price, as for its PlaceOrder)
    qty: I64
    client_id: I64  # the leg's own client id (its order's), unlike the other legs' and the account's open orders'
    venue: VenueId = 0
    stp: Stp = Stp.CANCEL_TAKER
    reduce_only: bool = False


class MultiLegOrder(_Msg, tag="multi_leg"):
    """2..4 legs in distinct markets (any products and venues), filled all together in full at their limits or
    not at all (docs/ARCHITECTURE.md "Multi-leg orders").  Answered by one Ack (``client_id`` the parent id,
    ``order_id`` the first leg's order: leg k's is ``order_id + k - 1``) or one Reject naming the leg at fault
    (``leg``); the legs' fills come as execution reports of their orders."""

    rid: I64
    client_id: Positive  # the parent id, echoed by every leg's Accepted and by the Reject
    legs: Annotated[list[OrderLeg], msgspec.Meta(min_length=2, max_length=MAX_LEGS)]

# Market makers' batch path: commands as little-endian records, read by the gateway in C (no
# Python object per command).  kind: 1 place, 2 cancel, 3 amend, 4 mass cancel (the engine's Cmd
# numbers); flags: 1 post-only (place), 2 ``id`` is a client id (cancel, amend); ``id``: the client
# id of a place, the order (or client) id of a cancel or amend; a mass cancel uses only ``market``
# (0 = every market); ``venue``: a place's venue (0 for the others).  Each row is answered under its
# own ``rid``.  Formats: FIXED_ROWS, the 54-byte records as they lie in memory (format 2 added
# ``venue``; format 1, 50 bytes without it, is refused by name, never read as format 2); PACKED_ROWS,
# each row as a presence map and varints (``engine.rowpack``, ``pack_rows``): ~8 bytes a row of a
# market maker's flow instead of 54.  A session's acks and execution reports come in the format of
# its latest OrderRows.
FIXED_ROWS = 2
PACKED_ROWS = 3
ROW_FORMATS = (FIXED_ROWS, PACKED_ROWS)
COMMAND_ROW_DTYPE = np.dtype([("kind", "u1"), ("side", "u1"), ("tif", "u1"), ("ord_type", "u1"), ("stp", "u1"),
                              ("flags", "u1"), ("market", "<u4"), ("venue", "<u4"), ("rid", "<i8"), ("price", "<i8"),
                              ("qty", "<i8"), ("id", "<i8"), ("expire_at", "<i8")])
COMMAND_PACKING = RowPacking(COMMAND_ROW_DTYPE, deltas=("rid", "price", "id", "expire_at"))


class OrderRows(_Msg, tag="rows"):
    """Up to ``gateway.max_batch`` commands as ``COMMAND_ROW_DTYPE`` rows in ``format`` (FIXED_ROWS:
    ``rows.tobytes()``; PACKED_ROWS: ``pack_rows``; a message without one is format 1, refused).  A
    session that sends one gets its acks and execution reports as rows (AckRows, ReportRows) in that
    format from then on.  A bad row refuses the whole message with an Error naming it."""

    rid: I64
    rows: bytes
    format: I64 = 1


class Batch(_Msg, tag="batch"):
    """Up to ``gateway.max_batch`` commands in one message; each is answered under its own rid
    (``rid`` is answered only by an Error that refuses the whole batch)."""

    rid: I64
    requests: list[Command]


# ------------------------------------------------------------------ requests: session and queries


class Heartbeat(_Msg, tag="heartbeat"):
    rid: I64


class SetDeadman(_Msg, tag="deadman"):
    """Arm the dead-man switch: no message for ``timeout_ms`` cancels all the account's orders.
    0 disarms it."""

    rid: I64
    timeout_ms: I64


class OpenOrders(_Msg, tag="open_orders"):
    rid: I64
    market: MarketId = 0  # 0 = every market


class ClosedOrders(_Msg, tag="closed_orders"):
    """The account's closed orders the gateway keeps (at least its newest 1,000), oldest closed first."""
    rid: I64
    market: MarketId = 0  # 0 = every market
    since: NonNegative = 0  # only those placed at or after (engine clock ns); 0 = all
    limit: NonNegative = 0  # only the newest closed this many; 0 = all kept


class OrderStatus(_Msg, tag="order_status"):
    rid: I64
    client_id: I64 = 0  # exactly one of client_id and order_id
    order_id: I64 = 0


class Balances(_Msg, tag="balances"):
    rid: I64


class Markets(_Msg, tag="markets"):
    rid: I64


class MyTrades(_Msg, tag="my_trades"):
    """The account's fills, newest first, as the settlement worker's ledger holds them."""
    rid: I64
    market: MarketId = 0  # 0 = every market
    since: NonNegative = 0  # only those at or after (engine clock ns); 0 = all
    limit: NonNegative = 0  # the newest this many, at most 1,000 (gateway.server.TRADES_MAX); 0: 1,000


class Positions(_Msg, tag="positions"):
    """The session's account's open perpetual positions, as the margin worker last valued them."""

    rid: I64


# ------------------------------------------------------------------ requests: venue operator commands
# The sender of each is the session's account (the venue's operator, or the admin); the matcher
# refuses anyone else (NOT_VENUE_OPERATOR).  Field meanings: docs/ARCHITECTURE.md "Venues".
# Admin-only commands (VenueParams, SetRegion, Slash, AddAsset, AddMarket) have no message here; an operator
# lists its venue's markets with ListMarket.

Small = Annotated[int, msgspec.Meta(ge=0, le=255)]  # the command's u8 ``side`` field
Bps = Annotated[int, msgspec.Meta(ge=-(1 << 15), le=(1 << 15) - 1)]  # packed as int16
ShareBps = Annotated[int, msgspec.Meta(ge=0, le=(1 << 16) - 1)]  # packed as uint16
Mask = I64  # a 64-bit mask as the int64 the command holds (bit 63 is the sign bit; -1 = every bit)


class VenueCommand(_Msg):
    """A command other than an order (a venue's, an outcome market's, a Liquidate): ``command_fields`` maps the COMMAND_DTYPE fields it sets (besides kind and
    account) to its own; ``packed_fees`` are the fields packed into ``aux`` (pack_venue_fees order)."""

    kind: ClassVar[int]
    command_fields: ClassVar[dict[str, str]]
    packed_fees: ClassVar[tuple[str, ...]] = ()

    def fields(self) -> dict:
        out = {c: getattr(self, f) for c, f in self.command_fields.items()}
        if self.packed_fees:
            out["aux"] = pack_venue_fees(*(getattr(self, f) for f in self.packed_fees))
        return out

    @classmethod
    def values_of(cls, cmd) -> dict:
        """This message's fields (all but rid) from a COMMAND_DTYPE record (tools that build records)."""
        values = {f: int(cmd[c]) for c, f in cls.command_fields.items()}
        aux = int(cmd["aux"]) & ((1 << 64) - 1)
        for i, f in enumerate(cls.packed_fees):
            v = aux >> (16 * i) & 0xFFFF
            values[f] = v - 0x10000 if i < 2 and v >= 0x8000 else v  # maker and taker are signed
        return values


class OfVenue(VenueCommand):
    """A command about one venue (all but MarketRisk): its request id, then the venue."""

    rid: I64
    venue: VenueId


class LaunchVenue(OfVenue, tag="launch_venue"):
    """Create ``venue`` with the sender as operator, locking ``stake`` of the stake asset."""

    kind = Cmd.LAUNCH_VENUE
    command_fields = dict(venue="venue", qty="stake", id="insurance_account", side="access")
    stake: I64
    insurance_account: I64
    access: Small = 0  # 0 permissionless, 1 allow-list


class AddStake(OfVenue, tag="add_stake"):
    kind = Cmd.ADD_STAKE
    command_fields = dict(venue="venue", qty="amount")
    amount: I64


class Unbond(AddStake, tag="unbond"):
    kind = Cmd.UNBOND


class VenueStatus(OfVenue, tag="venue_status"):
    kind = Cmd.VENUE_STATUS
    command_fields = dict(venue="venue", side="status")
    status: Small  # 1 live, 2 halted, 3 winding down, 4 retired


class VenueAccess(OfVenue, tag="venue_access"):
    kind = Cmd.VENUE_ACCESS
    command_fields = dict(venue="venue", side="access", qty="blocked_regions")
    access: Small  # 0 permissionless, 1 allow-list
    blocked_regions: Mask = 0  # bit r blocks region tag r


class VenuePolicy(OfVenue, tag="venue_policy"):
    kind = Cmd.VENUE_POLICY
    command_fields = dict(venue="venue", side="pool", aux="accepts")
    pool: Small  # 0..63
    accepts: Mask = -1  # bit p: its orders may trade with pool p's


class VenueFees(OfVenue, tag="venue_fees"):
    kind = Cmd.VENUE_FEES
    command_fields = dict(venue="venue")
    packed_fees = ("maker_bps", "taker_bps", "operator_bps", "insurance_bps")
    maker_bps: Bps
    taker_bps: Bps
    operator_bps: ShareBps = 0  # shares of the collected fees; the protocol gets the rest
    insurance_bps: ShareBps = 0


class VenueFeeTier(OfVenue, tag="venue_fee_tier"):
    kind = Cmd.VENUE_FEE_TIER
    command_fields = dict(venue="venue", side="tier", price="min_volume", market="asset", qty="epoch_ns")
    packed_fees = ("maker_bps", "taker_bps")
    tier: Small  # 1..4
    min_volume: I64  # 0 removes the tier and those above it
    maker_bps: Bps = 0
    taker_bps: Bps = 0
    asset: VenueId = 0  # the asset volume is counted in
    epoch_ns: I64 = 0


class OfferMarket(OfVenue, tag="offer_market"):
    kind = Cmd.OFFER_MARKET
    command_fields = dict(venue="venue", market="market")
    market: MarketId


class WithdrawMarket(OfferMarket, tag="withdraw_market"):
    kind = Cmd.WITHDRAW_MARKET


class Allow(OfVenue, tag="allow"):
    kind = Cmd.ALLOW
    command_fields = dict(venue="venue", id="account")
    account: I64  # the account put on (Deny: taken off) the allow-list


class Deny(Allow, tag="deny"):
    kind = Cmd.DENY


class SweepFees(OfVenue, tag="sweep_fees"):
    kind = Cmd.SWEEP_FEES
    command_fields = dict(venue="venue", market="asset")
    asset: VenueId


class OracleConfig(OfVenue, tag="oracle_config"):
    kind = Cmd.ORACLE_CONFIG
    command_fields = dict(venue="venue", market="market", id="feed_id", aux="feed_account", qty="timeout_ns")
    market: MarketId
    feed_id: I64
    feed_account: I64
    timeout_ns: I64


class MarketRisk(VenueCommand, tag="market_risk"):
    kind = Cmd.MARKET_RISK
    command_fields = dict(market="market", price="max_leverage", qty="maintenance_bps", id="impact_lots",
                          aux="liquidation_slice")
    rid: I64
    market: MarketId
    max_leverage: I64  # 1..100
    maintenance_bps: I64  # of the initial margin, 1..10000
    impact_lots: I64 = 0  # the impact size of the mark's impact mid (0: 1 lot)
    liquidation_slice: I64 = 0  # the most lots one liquidation order closes (0: no limit)


U32 = Annotated[int, msgspec.Meta(ge=0, le=(1 << 32) - 1)]


class VenueMarketRisk(OfVenue, tag="venue_market_risk"):
    """The venue's own risk settings in a market it offers: price band (0: the market's), open-interest cap
    per side in base units (perpetual markets; 0: none), circuit breaker for the risk worker (0: none)."""

    kind = Cmd.VENUE_MARKET_RISK
    command_fields = dict(venue="venue", market="market", price="band_bps", qty="oi_cap", id="breaker_move_bps")
    market: MarketId
    band_bps: I64 = 0  # 0..10000
    oi_cap: I64 = 0
    breaker_move_bps: I64 = 0  # 0..10000, with a positive window
    breaker_window_ms: U32 = 0  # packed with the cool-down into ``aux``
    breaker_cooldown_ms: U32 = 0

    def fields(self) -> dict:
        return super().fields() | {"aux": pack_breaker_windows(self.breaker_window_ms, self.breaker_cooldown_ms)}

    @classmethod
    def values_of(cls, cmd) -> dict:
        window_ms, cooldown_ms = unpack_breaker_windows(int(cmd["aux"]))
        return super().values_of(cmd) | {"breaker_window_ms": window_ms, "breaker_cooldown_ms": cooldown_ms}


class VenueMarketHalt(OfVenue, tag="venue_market_halt"):
    """Stop the venue's new orders in one market it offers (cancels, size-only amends and reduce-only orders
    go on; the other venues' orders in the same book are untouched)."""

    kind = Cmd.VENUE_MARKET_HALT
    command_fields = dict(venue="venue", market="market")
    market: MarketId


class VenueMarketResume(OfVenue, tag="venue_market_resume"):
    """Lift the venue's halt in one market."""

    kind = Cmd.VENUE_MARKET_RESUME
    command_fields = dict(venue="venue", market="market")
    market: MarketId


ListingAsset = Annotated[int, msgspec.Meta(ge=0, le=LISTING_ASSET_MAX)]  # u16 in ListMarket: larger ids are AddMarket's
ListingBand = Annotated[int, msgspec.Meta(ge=0, le=(1 << 16) - 1)]  # u16 in ListMarket; the matcher allows 0..10000


class ListMarket(OfVenue, tag="list_market"):
    """List a new market (AddMarket's definition) for the venue, which then offers it: from the venue's operator
    (or the admin), a live staked venue other than 0; any venue may offer it afterwards (OfferMarket)."""

    kind = Cmd.LIST_MARKET
    command_fields = dict(venue="venue", market="market", side="market_kind", price="tick_size", qty="lot_size",
                          id="min_size")
    market: MarketId  # the new market's id
    base: ListingAsset
    quote: ListingAsset
    tick_size: I64
    lot_size: I64
    min_size: I64  # a positive multiple of the lot size
    maker_bps: Bps = 0
    taker_bps: Bps = 0
    band_bps: ListingBand = 0  # 0: no price band
    market_kind: Small = 0  # 0 spot, 1 perpetual, 2 outcome

    def fields(self) -> dict:
        flags, aux = pack_listing(self.base, self.quote, self.maker_bps, self.taker_bps, self.band_bps)
        return super().fields() | {"flags": flags, "aux": aux}

    @classmethod
    def values_of(cls, cmd) -> dict:
        base, quote, maker, taker, band = unpack_listing(int(cmd["flags"]), int(cmd["aux"]))
        return super().values_of(cmd) | dict(base=base, quote=quote, maker_bps=maker, taker_bps=taker, band_bps=band)


VENUE_COMMANDS = (LaunchVenue, AddStake, Unbond, VenueStatus, VenueAccess, VenuePolicy, VenueFees, VenueFeeTier,
                  OfferMarket, WithdrawMarket, Allow, Deny, SweepFees, OracleConfig, MarketRisk, VenueMarketRisk, VenueMarketHalt,
                  VenueMarketResume, ListMarket)
VENUE_COMMAND_OF_KIND = {int(cls.kind): cls for cls in VENUE_COMMANDS}


# ------------------------------------------------------------------ requests: outcome markets and liquidation
# Sent as the session's account like the venue commands; the matcher checks who may (docs/ARCHITECTURE.md
# "Outcome markets", "Liquidation, insurance and ADL").


class OutcomeConfig(VenueCommand, tag="outcome_config"):
    """The admin or the listing venue's operator: an outcome market's payout per lot, the account that
    resolves it, its dispute window and the multi-outcome event it belongs to (0: standalone)."""

    kind = Cmd.OUTCOME_CONFIG
    command_fields = dict(market="market", price="payout", id="resolver", qty="dispute_window_ns", aux="event")
    rid: I64
    market: MarketId
    payout: Positive  # quote units per lot; the market's prices lie strictly between 0 and it
    resolver: Positive  # the account whose Resolve proposes the outcome
    dispute_window_ns: NonNegative = 0  # engine clock; 0: a resolution is final at once
    event: NonNegative = 0


class Resolve(VenueCommand, tag="resolve"):
    """The market's resolver proposes the outcome (the admin overturns it in the dispute window); a
    market of an event resolves the whole event by being named the winner (outcome 1)."""

    kind = Cmd.RESOLVE
    command_fields = dict(market="market", qty="outcome")
    rid: I64
    market: MarketId
    outcome: Annotated[int, msgspec.Meta(ge=0, le=1)]  # 1 YES won, 0 NO won


class Convert(VenueCommand, tag="convert"):
    """``qty`` (base units) of the account's NO shares in ``market`` into as many YES shares in each
    other market of its event."""

    kind = Cmd.CONVERT
    command_fields = dict(market="market", qty="qty")
    rid: I64
    market: MarketId
    qty: Positive


class Liquidate(VenueCommand, tag="liquidate"):
    """Any account as a keeper: liquidate ``target``'s positions quoted in ``asset`` in the perpetual
    markets ``venue`` listed, if the matcher finds it below maintenance (it re-checks with its own state);
    with ``isolated_market`` only the target's isolated position there, on its own equity."""

    kind = Cmd.LIQUIDATE
    command_fields = dict(id="target", venue="venue", market="asset", aux="isolated_market")
    rid: I64
    target: Positive
    venue: VenueId
    asset: VenueId
    isolated_market: MarketId = 0  # 0: the cross positions


class SetMarginMode(VenueCommand, tag="set_margin_mode"):
    """The account's position in perpetual ``market`` becomes isolated (``isolated``) or cross margin; the matcher
    takes it only while the account has no position and no order there (docs/ARCHITECTURE.md "Isolated margin")."""

    kind = Cmd.MARGIN_MODE
    command_fields = dict(market="market", qty="isolated")
    rid: I64
    market: MarketId
    isolated: bool


class IsolatedMargin(VenueCommand, tag="isolated_margin"):
    """Move ``amount`` of quote from free into the account's isolated position in ``market`` (negative: back to free,
    as long as the position keeps its initial margin)."""

    kind = Cmd.ISOLATED_MARGIN
    command_fields = dict(market="market", qty="amount")
    rid: I64
    market: MarketId
    amount: I64


class CollateralAsset(VenueCommand, tag="collateral_asset"):
    """The admin: ``asset`` counts as collateral at most at ``max_weight_bps`` (10000 - its haircut), priced by
    ``price_market`` (base the asset, quote the valuation asset); price market 0 declares the valuation asset itself
    (docs/ARCHITECTURE.md "Unified account")."""

    kind = Cmd.COLLATERAL_ASSET
    command_fields = dict(market="asset", id="price_market", qty="max_weight_bps")
    rid: I64
    asset: VenueId
    price_market: MarketId
    max_weight_bps: I64


class VenueCollateral(OfVenue, tag="venue_collateral"):
    """A venue's own weight for a collateral asset (at most the protocol's bound): its orders and liquidations
    value the asset at it."""

    kind = Cmd.VENUE_COLLATERAL
    command_fields = dict(venue="venue", market="asset", qty="weight_bps")
    asset: VenueId
    weight_bps: I64


class SetExposureCap(OfVenue, tag="set_exposure_cap"):
    """Cap the margin the account's positions and orders in ``venue``'s risk group (the perpetual markets it
    listed) may use at ``cap_bps`` of its equity; 0 removes the cap (docs/ARCHITECTURE.md "Exposure caps").  The
    matcher checks the range (INVALID_EXPOSURE_CAP) and the venue (UNKNOWN_VENUE)."""

    kind = Cmd.SET_EXPOSURE_CAP
    command_fields = dict(venue="venue", qty="cap_bps")
    cap_bps: I64  # 1..10000, 0: none


OUTCOME_COMMANDS = (OutcomeConfig, Resolve, Convert)
# every request that is one command record sent as the session's account, its fields mapped by command_fields
MARGIN_COMMANDS = (SetMarginMode, IsolatedMargin, CollateralAsset, VenueCollateral)
FIELD_COMMANDS = VENUE_COMMANDS + OUTCOME_COMMANDS + MARGIN_COMMANDS + (Liquidate, SetExposureCap)

Request = Union[PlaceOrder, CancelOrder, AmendOrder, MassCancel, Batch, OrderRows, Heartbeat, SetDeadman, OpenOrders,
                ClosedOrders, OrderStatus, Balances, Markets, Positions, MyTrades, LaunchVenue, AddStake, Unbond,
                VenueStatus, VenueAccess, VenuePolicy, VenueFees, VenueFeeTier, OfferMarket, WithdrawMarket, Allow,
                Deny, SweepFees, OracleConfig, MarketRisk, VenueMarketRisk, VenueMarketHalt, VenueMarketResume,
                ListMarket, OutcomeConfig, Resolve, Convert, Liquidate, SetExposureCap, SetMarginMode, IsolatedMargin,
                CollateralAsset, VenueCollateral, MultiLegOrder]
COMMANDS = (PlaceOrder, CancelOrder, AmendOrder, MassCancel)

# ------------------------------------------------------------------ replies


class Ack(_Msg, tag="ack"):
    """The command is in the journal (durable) and the matcher took it."""

    rid: I64
    order_id: I64  # the order it made or acted on (0 for a mass cancel)
    client_id: I64
    cmd_seq: I64
    durable_seq: I64  # the journal was durable up to here when the event was published (>= cmd_seq)
    count: I64 = 0  # mass cancel: orders cancelled
    ts: I64 = 0  # engine clock ns


class Reject(_Msg, tag="reject"):
    rid: I64
    code: I64  # engine/codes.py: stable numbers
    name: str  # the code's stable name, e.g. "INSUFFICIENT_BALANCE"
    reason: str  # readable
    client_id: I64 = 0  # an order's; a multi-leg order's parent id
    cmd_seq: I64 = 0  # 0 when the gateway rejected it (55x) and the matcher never saw it
    leg: I64 = 0  # a multi-leg order's leg at fault (1..4; 0: the order as a whole)


class Error(_Msg, tag="error"):
    """A message that is not a valid request (malformed, unknown, oversized); rid 0 if unreadable."""

    rid: I64
    code: I64
    name: str
    reason: str


ExecKind = Literal["fill", "cancel", "amend"]


class ExecutionReport(_Msg, tag="exec"):
    kind: ExecKind
    order_id: I64
    client_id: I64  # 0 for an order the gateway has not seen placed (before it started)
    market: MarketId
    side: Side
    price: I64  # fill: the execution price; cancel/amend: the order's price
    qty: I64  # fill: executed size; cancel: size taken off; amend: new open size
    remaining: I64  # the order's open size after this
    fee: I64 = 0  # fill: this side's fee (quote units; negative = rebate)
    liquidity: Literal["maker", "taker", ""] = ""
    reason: I64 = 0  # cancel: engine CancelReason
    code: I64 = 0  # cancel by matching (IOC, FOK, STP, post-only): its result code
    seq: I64 = 0  # event seq
    cmd_seq: I64 = 0
    ts: I64 = 0  # engine clock ns
    venue: VenueId = 0  # the order's venue


class HeartbeatAck(_Msg, tag="heartbeat_ack"):
    rid: I64
    server_ns: I64


class DeadmanSet(_Msg, tag="deadman_set"):
    rid: I64
    timeout_ms: I64


class OrderInfo(msgspec.Struct, array_like=True, frozen=True):
    order_id: I64
    client_id: I64
    market: MarketId
    side: Side
    price: I64
    qty: I64  # original size (filled + remaining)
    filled: I64
    remaining: I64
    status: Literal["open", "filled", "cancelled"]
    ts: I64  # when placed (engine clock ns)
    venue: VenueId = 0


class OrdersResult(_Msg, tag="orders"):
    rid: I64
    orders: list[OrderInfo]


class OrderStatusResult(_Msg, tag="order_status_result"):
    rid: I64
    order: Union[OrderInfo, None]  # None: no order known under that id to the gateway


class BalanceInfo(msgspec.Struct, array_like=True, frozen=True):
    asset: I64
    symbol: str
    total: I64
    held: I64  # part of total held by open orders


class BalancesResult(_Msg, tag="balances_result"):
    rid: I64
    balances: list[BalanceInfo]
    as_of_seq: I64  # the margin worker's last checkpoint these figures come from
    equity: I64 = 0  # the margin view (valuation asset units)
    margin_used: I64 = 0
    available: I64 = 0
    maintenance: I64 = 0  # the positions' maintenance requirement (equity below it: liquidatable)
    valued: bool = True  # False: the margin worker could not value the account (past int64); figures 0


class PositionInfo(msgspec.Struct, array_like=True, frozen=True):
    """One open perpetual position (the margin worker's ``POSITIONS_VIEW_DTYPE`` row, less the account)."""

    market: MarketId
    size: I64  # signed base units: > 0 long
    entry: I64  # entry value (quote): what the open size cost
    margin: I64  # quote held for it
    mark: I64  # the mark price it is valued at
    upnl: I64  # unrealised PnL at the mark
    maintenance: I64  # its maintenance requirement at the mark
    liquidation_price: I64  # the mark at which the account becomes liquidatable (0: none)
    adl_rank: I64  # its place in the market's auto-deleveraging queue for its side (1 = first)
    isolated: I64 = 0  # 1: isolated margin (liquidated alone on its own margin), 0: cross


class TradeInfo(msgspec.Struct, array_like=True, frozen=True):
    seq: I64  # the fill's event seq: its id
    order_id: I64  # the account's order that filled
    market: MarketId
    side: Side  # the account's side
    price: I64
    qty: I64
    fee: I64  # quote units, negative a rebate
    liquidity: Literal["maker", "taker"]
    ts: I64  # engine clock ns


class TradesResult(_Msg, tag="trades_result"):
    rid: I64
    trades: list[TradeInfo]  # newest first
    as_of_seq: I64  # the settlement ledger's cursor: every fill up to this event seq is in it


class PositionsResult(_Msg, tag="positions_result"):
    rid: I64
    positions: list[PositionInfo]
    as_of_seq: I64  # the margin worker's checkpoint these figures come from


class MarketInfo(msgspec.Struct, array_like=True, frozen=True):
    market: MarketId
    base: str
    quote: str
    base_decimals: I64
    quote_decimals: I64
    tick_size: I64
    lot_size: I64
    min_size: I64
    kind: str = "spot"  # spot, perpetual or outcome
    venue: VenueId = 0  # the venue that listed it (0: the admin)
    maker_bps: I64 = 0  # the market's fees: what orders of venue 0 pay (another venue's orders pay its own)
    taker_bps: I64 = 0


class MarketsResult(_Msg, tag="markets_result"):
    rid: I64
    markets: list[MarketInfo]


# Row replies for sessions that send OrderRows (in their latest OrderRows' format; packed rows delta the
# ids, sequence numbers, prices and times).  Report kind: 1 fill, 2 cancel, 3 amend; liquidity: 0 none,
# 1 maker, 2 taker; the other fields as in Ack and ExecutionReport.
ACK_ROW_DTYPE = np.dtype([("rid", "<i8"), ("order_id", "<i8"), ("client_id", "<i8"), ("cmd_seq", "<i8"),
                          ("durable_seq", "<i8"), ("count", "<i8"), ("ts", "<i8")])
REPORT_ROW_DTYPE = np.dtype([("kind", "u1"), ("side", "u1"), ("liquidity", "u1"), ("reason", "u1"), ("code", "<u2"),
                             ("market", "<u4"), ("venue", "<u4"), ("order_id", "<i8"), ("client_id", "<i8"),
                             ("price", "<i8"),
                             ("qty", "<i8"), ("remaining", "<i8"), ("fee", "<i8"), ("seq", "<i8"),
                             ("cmd_seq", "<i8"), ("ts", "<i8")])
REPORT_KINDS = ("", "fill", "cancel", "amend")  # by the row's kind
LIQUIDITY = ("", "maker", "taker")
ACK_PACKING = RowPacking(ACK_ROW_DTYPE, deltas=("rid", "order_id", "client_id", "cmd_seq", "durable_seq", "ts"))
REPORT_PACKING = RowPacking(REPORT_ROW_DTYPE, deltas=("order_id", "client_id", "price", "seq", "cmd_seq", "ts"))
PACKINGS = {p.dtype: p for p in (COMMAND_PACKING, ACK_PACKING, REPORT_PACKING)}


class AckRows(_Msg, tag="acks"):
    rows: bytes  # ACK_ROW_DTYPE records in ``format``
    format: I64 = FIXED_ROWS


class ReportRows(_Msg, tag="reports"):
    rows: bytes  # REPORT_ROW_DTYPE records in ``format``
    format: I64 = FIXED_ROWS


def pack_rows(rows: np.ndarray, row_format: int) -> bytes:
    """Command, ack or report rows (by their dtype) as the bytes of ``row_format``."""
    if row_format == PACKED_ROWS:
        return PACKINGS[rows.dtype].pack(rows)
    if row_format == FIXED_ROWS:
        return np.ascontiguousarray(rows).tobytes()
    raise ValueError(f"row format {row_format}: rows are format {FIXED_ROWS} or {PACKED_ROWS}")


class TooManyRows(ValueError):
    """More rows than the reader takes."""


def unpack_rows(data: bytes, dtype: np.dtype, row_format: int, max_rows: int = -1) -> np.ndarray:
    """The ``dtype`` rows of ``data`` in ``row_format`` (at most ``max_rows`` when it is not negative, else
    TooManyRows, without reading, or making room for, more); raises ValueError (rowpack.PackedRowsError for
    packed rows) naming what is wrong."""
    if row_format == PACKED_ROWS:
        try:
            return PACKINGS[dtype].unpack(data, max_rows)
        except PackedRowsError as exc:
            if exc.code == PACK_TOO_MANY_ROWS:
                raise TooManyRows(f"more than {max_rows} rows") from None
            raise
    if row_format != FIXED_ROWS:
        raise ValueError(f"row format {row_format}: rows are format {FIXED_ROWS} or {PACKED_ROWS}")
    if len(data) % dtype.itemsize:
        raise ValueError(f"rows of {len(data)} bytes, not a multiple of the {dtype.itemsize}-byte row")
    if 0 <= max_rows < len(data) // dtype.itemsize:
        raise TooManyRows(f"more than {max_rows} rows")
    return np.frombuffer(data, dtype)


def ack_rows(msg: AckRows) -> np.ndarray:
    return unpack_rows(msg.rows, ACK_ROW_DTYPE, msg.format)


def report_rows(msg: ReportRows) -> np.ndarray:
    return unpack_rows(msg.rows, REPORT_ROW_DTYPE, msg.format)


def execution_report(r: tuple) -> ExecutionReport:
    """The ExecutionReport of a ``REPORT_ROW_DTYPE`` row (as a tuple)."""
    (kind, side, liquidity, reason, code, market, venue, order_id, client_id, price, qty, remaining, fee, seq, cmd_seq,
     ts) = r
    return ExecutionReport(kind=REPORT_KINDS[kind], order_id=order_id, client_id=client_id, market=market, side=side,
                           price=price, qty=qty, remaining=remaining, fee=fee, liquidity=LIQUIDITY[liquidity],
                           reason=reason, code=code, seq=seq, cmd_seq=cmd_seq, ts=ts, venue=venue)


Reply = Union[Ack, Reject, Error, ExecutionReport, AckRows, ReportRows, HeartbeatAck, DeadmanSet, OrdersResult, OrderStatusResult,
              BalancesResult, PositionsResult, MarketsResult, TradesResult]


class Replies(_Msg, tag="replies"):
    items: list[Reply]


Incoming = Union[Ack, Reject, Error, ExecutionReport, AckRows, ReportRows, HeartbeatAck, DeadmanSet, OrdersResult, OrderStatusResult,
                 BalancesResult, PositionsResult, MarketsResult, TradesResult, Replies]

REQUEST_TYPES = {cls.__struct_config__.tag: cls for cls in Request.__args__}
REQUEST_TAGS = frozenset(REQUEST_TYPES)
_PATH = re.compile(r"at `\$((?:\[\d+\])+)`")


def field_path(cls: type, path: list[int]) -> str:
    """The field names along a msgspec error path into an array-like struct (a tagged one's element 0 is its
    tag; a list's element is its index), as far as they go: ``legs[1].price``."""
    out, tp = "", cls
    for i in path:
        while typing.get_origin(tp) is Annotated:
            tp = typing.get_args(tp)[0]
        if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
            fields = msgspec.structs.fields(tp)
            k = i - (tp.__struct_config__.tag is not None)
            if not 0 <= k < len(fields):
                break
            out += ("." if out else "") + fields[k].name
            tp = fields[k].type
        elif typing.get_origin(tp) is list:
            out += f"[{i}]"
            tp = typing.get_args(tp)[0]
        else:
            break
    return out


def explain(exc: Exception, raw) -> str:
    """msgspec's error with the field it is about named (``multi_leg.legs[1].side: ...``)."""
    text = str(exc)
    at = _PATH.search(text)
    cls = REQUEST_TYPES.get(raw[0]) if isinstance(raw, list) and raw and isinstance(raw[0], str) else None
    name = field_path(cls, [int(i) for i in re.findall(r"\d+", at.group(1))]) if at and cls else ""
    return f"{raw[0]}.{name}: {text}" if name else text

# One encoder and one decoder of each kind, created once (decoders compile their schema).
encoder = msgspec.msgpack.Encoder()
request_decoder = msgspec.msgpack.Decoder(Request)
reply_decoder = msgspec.msgpack.Decoder(Incoming)
raw_decoder = msgspec.msgpack.Decoder()  # untyped: to tell an unknown tag from a malformed message
# What decoding bytes that are not a request raises: msgspec's DecodeError (ValidationError is one), and
# for a string that is not UTF-8, before msgspec 0.23, UnicodeDecodeError as it is.
UNDECODABLE = (msgspec.DecodeError, UnicodeDecodeError)


def encode(msg) -> bytes:
    return encoder.encode(msg)
