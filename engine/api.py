"""Command builders shared by the Cython engine and the reference model.

Each call builds one command record, hands it to ``self.process`` and
returns that command's events.  Keeping this in one mixin means the two
implementations differ only in ``process`` and the queries.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .records import (
    COMMAND_DTYPE,
    MAX_MARGIN_TIERS,
    Cmd,
    CmdFlag,
    MarketKind,
    OrdType,
    Stp,
    Tif,
    VenueAccess,
    pack_breaker_windows,
    pack_listing,
    pack_market_assets,
    pack_funding_limits,
    pack_market_params,
    pack_symbol,
    pack_tier_leverage,
    pack_venue_fees,
)


MAX_LEGS = 4  # legs of a multi-leg order (the matcher's and the reference's)


class Leg(NamedTuple):
    """One leg of a multi-leg order: a limit FOK order of the header's account (ARCHITECTURE, Multi-leg orders)."""

    market: int
    side: int
    price: int
    qty: int
    client_id: int
    venue: int = 0
    stp: int = Stp.CANCEL_TAKER
    reduce_only: bool = False


def multi_leg_commands(account: int, client_id: int, legs, ts: int = 0) -> np.ndarray:
    """A MultiLeg header (``id`` = the parent client id, ``qty`` = the leg count) and one Leg record per leg,
    as consecutive records: they must reach the matcher in one batch (the input never splits them)."""
    cmds = np.zeros(1 + len(legs), dtype=COMMAND_DTYPE)
    cmds[0] = (Cmd.MULTI_LEG, 0, 0, 0, 0, 0, 0, 0, ts, account, 0, len(legs), client_id, 0)
    for k, leg in enumerate(legs, start=1):
        flags = CmdFlag.REDUCE_ONLY if leg.reduce_only else 0
        cmds[k] = (Cmd.LEG, leg.side, Tif.FOK, OrdType.LIMIT, leg.stp, flags, leg.venue, leg.market, ts, account,
                   leg.price, leg.qty, leg.client_id, 0)
    return cmds



def whole_units(commands: np.ndarray, k: int) -> int:
    """The largest cut at most ``k`` into ``commands`` that splits no multi-leg order (a MultiLeg header with a
    count of 2..MAX_LEGS and the records after it), so an input that batches commands never splits one: the
    matcher takes a header whose legs are not all in its batch as LEGS_INCOMPLETE.  Only the last MAX_LEGS
    records before the cut can hold a header that reaches past it."""
    kinds, counts = commands["kind"], commands["qty"]
    for h in range(max(0, k - MAX_LEGS), k):
        if kinds[h] == Cmd.MULTI_LEG and 2 <= counts[h] <= MAX_LEGS and h + 1 + counts[h] > k:
            return h
    return k


class CommandAPI:
    """Convenience commands on top of the engine's ``process(commands) -> events``."""

    def submit(self, kind: int, **fields) -> np.ndarray:
        cmd = np.zeros(1, dtype=COMMAND_DTYPE)
        cmd["kind"] = kind
        for name, value in fields.items():
            cmd[name] = value
        return self.process(cmd)

    def add_asset(self, asset_id: int, symbol: str, decimals: int, ts: int = 0) -> np.ndarray:
        lo, hi = pack_symbol(symbol)
        return self.submit(Cmd.ADD_ASSET, market=asset_id, price=decimals, id=lo, aux=hi, ts=ts)

    def add_market(
        self,
        market_id: int,
        base: int,
        quote: int,
        *,
        tick_size: int,
        lot_size: int,
        min_size: int,
        maker_bps: int = 0,
        taker_bps: int = 0,
        band_bps: int = 0,
        kind: int = MarketKind.SPOT,
        venue: int = 0,
        ts: int = 0,
    ) -> np.ndarray:
        return self.submit(
            Cmd.ADD_MARKET,
            market=market_id,
            venue=venue,
            side=kind,
            account=pack_market_assets(base, quote),
            price=tick_size,
            qty=lot_size,
            id=min_size,
            aux=pack_market_params(maker_bps, taker_bps, band_bps),
            ts=ts,
        )

    def list_market(
        self,
        account: int,
        venue: int,
        market_id: int,
        base: int,
        quote: int,
        *,
        tick_size: int,
        lot_size: int,
        min_size: int,
        maker_bps: int = 0,
        taker_bps: int = 0,
        band_bps: int = 0,
        kind: int = MarketKind.SPOT,
        ts: int = 0,
    ) -> np.ndarray:
        """ListMarket, from ``venue``'s operator or the admin (a live staked venue other than 0): AddMarket's
        market, which the venue then offers; asset ids up to 65535 (``pack_listing`` raises ValueError)."""
        flags, aux = pack_listing(base, quote, maker_bps, taker_bps, band_bps)
        return self.submit(Cmd.LIST_MARKET, account=account, venue=venue, market=market_id, side=kind, flags=flags,
                           price=tick_size, qty=lot_size, id=min_size, aux=aux, ts=ts)

    def deposit(self, account: int, asset: int, amount: int, ts: int = 0) -> np.ndarray:
        return self.submit(Cmd.DEPOSIT, account=account, market=asset, qty=amount, ts=ts)

    def withdraw(self, account: int, asset: int, amount: int, ts: int = 0) -> np.ndarray:
        return self.submit(Cmd.WITHDRAW, account=account, market=asset, qty=amount, ts=ts)

    def place(
        self,
        account: int,
        market: int,
        side: int,
        price: int,
        qty: int,
        client_id: int,
        *,
        tif: int = Tif.GTC,
        ord_type: int = OrdType.LIMIT,
        stp: int = Stp.CANCEL_TAKER,
        post_only: bool = False,
        reduce_only: bool = False,
        expire_at: int = 0,
        venue: int = 0,
        ts: int = 0,
    ) -> np.ndarray:
        return self.submit(
            Cmd.PLACE,
            account=account,
            market=market,
            side=side,
            price=price,
            qty=qty,
            id=client_id,
            tif=tif,
            ord_type=ord_type,
            stp=stp,
            flags=(CmdFlag.POST_ONLY if post_only else 0) | (CmdFlag.REDUCE_ONLY if reduce_only else 0),
            aux=expire_at,
            venue=venue,
            ts=ts,
        )

    def multi_leg(self, account: int, client_id: int, legs, ts: int = 0) -> np.ndarray:
        """An all-or-none order of 2..4 ``Leg``s (see ``multi_leg_commands``), processed as one batch."""
        return self.process(multi_leg_commands(account, client_id, legs, ts))

    def set_exposure_cap(self, account: int, venue: int, cap_bps: int, ts: int = 0) -> np.ndarray:
        """Cap the margin ``account``'s positions and orders in ``venue``'s risk group may use at ``cap_bps`` of
        its equity (0 removes the cap)."""
        return self.submit(Cmd.SET_EXPOSURE_CAP, account=account, venue=venue, qty=cap_bps, ts=ts)

    def set_collateral_asset(self, account: int, asset: int, price_market: int, max_weight_bps: int,
                             ts: int = 0) -> np.ndarray:
        """Admin: ``asset`` counts towards unified equity at the price of ``price_market`` (base = the asset, quote =
        the valuation asset), weighted at most ``max_weight_bps`` (the protocol bound); price market 0 declares the
        valuation asset itself, which turns the unified account on."""
        return self.submit(Cmd.COLLATERAL_ASSET, account=account, market=asset, id=price_market, qty=max_weight_bps,
                           ts=ts)

    def set_venue_collateral(self, account: int, venue: int, asset: int, weight_bps: int, ts: int = 0) -> np.ndarray:
        """A venue's operator (or the admin): the venue's weight for a collateral asset, at most the protocol bound."""
        return self.submit(Cmd.VENUE_COLLATERAL, account=account, venue=venue, market=asset, qty=weight_bps, ts=ts)

    def halt(self, market: int, account: int = 0, ts: int = 0) -> np.ndarray:
        """Stop new orders and amends in the market (cancels still work); ``account`` names who asked."""
        return self.submit(Cmd.HALT, market=market, account=account, ts=ts)

    def resume(self, market: int, account: int = 0, ts: int = 0) -> np.ndarray:
        return self.submit(Cmd.RESUME, market=market, account=account, ts=ts)

    @staticmethod
    def _target(order_id: int | None, client_id: int | None) -> tuple[int, int]:
        if (order_id is None) == (client_id is None):
            raise ValueError("give exactly one of order_id and client_id")
        if order_id is not None:
            return order_id, 0
        return client_id, int(CmdFlag.BY_CLIENT_ID)

    def cancel(self, account: int, *, order_id: int | None = None, client_id: int | None = None, ts: int = 0) -> np.ndarray:
        ident, flags = self._target(order_id, client_id)
        return self.submit(Cmd.CANCEL, account=account, id=ident, flags=flags, ts=ts)

    def amend(
        self,
        account: int,
        *,
        order_id: int | None = None,
        client_id: int | None = None,
        price: int = 0,
        qty: int,
        ts: int = 0,
    ) -> np.ndarray:
        ident, flags = self._target(order_id, client_id)
        return self.submit(Cmd.AMEND, account=account, id=ident, flags=flags, price=price, qty=qty, ts=ts)

    def mass_cancel(self, account: int, market: int | None = None, ts: int = 0, venue: int | None = None) -> np.ndarray:
        """Cancel the account's open orders in ``market`` (None: every market), only those placed through ``venue``
        when one is named."""
        flags = (CmdFlag.ALL_MARKETS if market is None else 0) | (CmdFlag.BY_VENUE if venue is not None else 0)
        return self.submit(Cmd.MASS_CANCEL, account=account, market=market or 0, venue=venue or 0, flags=flags, ts=ts)

    # ---------------------------------------------------------------- venues
    # ``account`` is who sends the command: the venue's operator, or the admin (the gateway
    # authenticates it; the matcher checks it against the venue).

    def set_venue_params(self, account: int, *, stake_asset: int, min_stake: int, unbond_period: int,
                     protocol_account: int, admin: int, ts: int = 0) -> np.ndarray:
        """Admin: the stake asset, minimum stake, unbond period (ns of engine clock), protocol
        account and admin.  The first one (the bootstrap) may come from any account."""
        return self.submit(Cmd.VENUE_PARAMS, account=account, market=stake_asset, qty=min_stake,
                           price=unbond_period, id=protocol_account, aux=admin, ts=ts)

    def launch_venue(self, account: int, venue: int, stake: int, *, insurance_account: int,
                     access: int = VenueAccess.PERMISSIONLESS, ts: int = 0) -> np.ndarray:
        """Lock ``stake`` from the operator ``account``'s free balance and create ``venue``."""
        return self.submit(Cmd.LAUNCH_VENUE, account=account, venue=venue, qty=stake, id=insurance_account,
                           side=access, ts=ts)

    def add_stake(self, account: int, venue: int, amount: int, ts: int = 0) -> np.ndarray:
        return self.submit(Cmd.ADD_STAKE, account=account, venue=venue, qty=amount, ts=ts)

    def unbond(self, account: int, venue: int, amount: int, ts: int = 0) -> np.ndarray:
        return self.submit(Cmd.UNBOND, account=account, venue=venue, qty=amount, ts=ts)

    def set_venue_status(self, account: int, venue: int, status: int, ts: int = 0) -> np.ndarray:
        return self.submit(Cmd.VENUE_STATUS, account=account, venue=venue, side=status, ts=ts)

    def set_venue_access(self, account: int, venue: int, access: int, blocked_regions: int = 0,
                         ts: int = 0) -> np.ndarray:
        """Access mode and the bit mask of blocked region tags (bit r blocks region r)."""
        return self.submit(Cmd.VENUE_ACCESS, account=account, venue=venue, side=access,
                           qty=_as_i64(blocked_regions), ts=ts)

    def set_venue_policy(self, account: int, venue: int, pool: int, accepts: int, ts: int = 0) -> np.ndarray:
        """The venue's matching pool and the bit mask of pools its orders may trade with."""
        return self.submit(Cmd.VENUE_POLICY, account=account, venue=venue, side=pool, aux=_as_i64(accepts), ts=ts)

    def set_venue_fees(self, account: int, venue: int, *, maker_bps: int, taker_bps: int, operator_bps: int = 0,
                       insurance_bps: int = 0, ts: int = 0) -> np.ndarray:
        """Fees of orders placed through the venue from now on (tier 0) and the split of what it
        collects: operator and insurance fund shares in bps, the protocol gets the rest."""
        return self.submit(Cmd.VENUE_FEES, account=account, venue=venue,
                           aux=pack_venue_fees(maker_bps, taker_bps, operator_bps, insurance_bps), ts=ts)

    def set_fee_tier(self, account: int, venue: int, tier: int, *, min_volume: int, maker_bps: int = 0,
                     taker_bps: int = 0, asset: int = 0, epoch_ns: int = 0, ts: int = 0) -> np.ndarray:
        """Tier 1..4: orders of an account whose volume (notional in ``asset``) on the venue in the
        previous ``epoch_ns`` epoch reached ``min_volume`` pay these fees; min_volume 0 removes the
        tier and those above it."""
        return self.submit(Cmd.VENUE_FEE_TIER, account=account, venue=venue, side=tier, market=asset,
                           price=min_volume, qty=epoch_ns, aux=pack_venue_fees(maker_bps, taker_bps), ts=ts)

    def sweep_fees(self, account: int, venue: int, asset: int, ts: int = 0) -> np.ndarray:
        """Pay the venue's collected fees in ``asset`` out by its split."""
        return self.submit(Cmd.SWEEP_FEES, account=account, venue=venue, market=asset, ts=ts)

    def offer_market(self, account: int, venue: int, market: int, ts: int = 0) -> np.ndarray:
        return self.submit(Cmd.OFFER_MARKET, account=account, venue=venue, market=market, ts=ts)

    def withdraw_market(self, account: int, venue: int, market: int, ts: int = 0) -> np.ndarray:
        return self.submit(Cmd.WITHDRAW_MARKET, account=account, venue=venue, market=market, ts=ts)

    def allow(self, account: int, venue: int, target: int, ts: int = 0) -> np.ndarray:
        return self.submit(Cmd.ALLOW, account=account, venue=venue, id=target, ts=ts)

    def deny(self, account: int, venue: int, target: int, ts: int = 0) -> np.ndarray:
        return self.submit(Cmd.DENY, account=account, venue=venue, id=target, ts=ts)

    def set_region(self, account: int, target: int, region: int, ts: int = 0) -> np.ndarray:
        """Admin: ``target``'s region tag (0..63)."""
        return self.submit(Cmd.SET_REGION, account=account, id=target, side=region, ts=ts)

    def slash(self, account: int, venue: int, amount: int, *, shortfall: int = 0, reason: int = 0,
              ts: int = 0) -> np.ndarray:
        """Admin: take ``amount`` of the venue's stake; its insurance fund gets up to ``shortfall``
        first, the protocol account the rest.  ``reason`` is echoed in the Venue event."""
        return self.submit(Cmd.SLASH, account=account, venue=venue, qty=amount, price=shortfall, aux=reason, ts=ts)

    def configure_oracle(self, account: int, venue: int, market: int, *, feed_id: int, feed_account: int,
                         timeout_ns: int, ts: int = 0) -> np.ndarray:
        """Operator or admin: the venue's oracle for ``market`` takes prices from feed ``feed_id``
        sent by ``feed_account``, and is stale after ``timeout_ns`` of engine clock without one."""
        return self.submit(Cmd.ORACLE_CONFIG, account=account, venue=venue, market=market, id=feed_id,
                           aux=feed_account, qty=timeout_ns, ts=ts)

    def market_risk(self, account: int, market: int, *, max_leverage: int, maintenance_bps: int,
                    impact_lots: int = 0, liquidation_slice: int = 0, ts: int = 0) -> np.ndarray:
        """Admin or the listing venue's operator: a perpetual market's max leverage (1..100, orders hold
        ceil(price / leverage) per lot), maintenance margin in bps of the initial margin, the impact size of
        its mark's impact mid (lots, 0: 1 lot) and the most lots one liquidation order closes (0: no limit);
        refused while the market has open orders."""
        return self.submit(Cmd.MARKET_RISK, account=account, market=market, price=max_leverage,
                           qty=maintenance_bps, id=impact_lots, aux=liquidation_slice, ts=ts)

    def apply_funding(self, account: int, market: int, ts: int = 0) -> np.ndarray:
        """Any account (a scheduler): pay a perpetual market's funding for the interval that is due."""
        return self.submit(Cmd.APPLY_FUNDING, account=account, market=market, ts=ts)

    def funding_config(self, account: int, market: int, *, interval_ns: int, sample_interval_ns: int,
                       interest: int = 0, clamp: int = 0, cap: int, ts: int = 0) -> np.ndarray:
        """Admin or the listing venue's operator: a perpetual market's funding interval and premium sample interval
        (ns of engine clock), interest rate per interval, premium clamp and cap per interval (1e-8 units); the
        schedule restarts from now and the samples so far are dropped."""
        return self.submit(Cmd.FUNDING_CONFIG, account=account, market=market, price=interval_ns,
                           qty=sample_interval_ns, id=interest, aux=pack_funding_limits(clamp, cap), ts=ts)

    def set_margin_tiers(self, account: int, market: int, brackets, ts: int = 0) -> np.ndarray:
        """Admin or the listing venue's operator: up to 3 notional brackets ``[(floor, max leverage), ...]`` above
        the first (0 .. first floor at MarketRisk's max leverage); ``[]`` removes them."""
        brackets = list(brackets)
        if len(brackets) > MAX_MARGIN_TIERS - 1:
            raise ValueError(f"at most {MAX_MARGIN_TIERS - 1} brackets above the first: {brackets}")
        floors = [floor for floor, _ in brackets] + [0] * (MAX_MARGIN_TIERS - 1 - len(brackets))
        return self.submit(Cmd.MARGIN_TIERS, account=account, market=market, price=floors[0], qty=floors[1],
                           id=floors[2], aux=pack_tier_leverage(lev for _, lev in brackets), ts=ts)

    def liquidate(self, account: int, target: int, venue: int, asset: int, isolated_market: int = 0,
                  ts: int = 0) -> np.ndarray:
        """Any account (a keeper): liquidate ``target``'s cross positions quoted in ``asset`` in the perpetual
        markets listed by ``venue`` (its risk group), if the matcher finds its equity in ``asset`` below its
        maintenance margin; with ``isolated_market``, only its isolated position there, on that position's own
        equity and maintenance."""
        return self.submit(Cmd.LIQUIDATE, account=account, id=target, venue=venue, market=asset, aux=isolated_market,
                           ts=ts)

    def set_margin_mode(self, account: int, market: int, isolated: bool, ts: int = 0) -> np.ndarray:
        """The account's position in perpetual ``market`` is isolated (its own margin, its own liquidation) or
        cross (the default); only while it has no open position or order there."""
        if not isinstance(isolated, bool):
            raise TypeError(f"isolated must be a bool, not {isolated!r}")
        return self.submit(Cmd.MARGIN_MODE, account=account, market=market, qty=int(isolated), ts=ts)

    def add_isolated_margin(self, account: int, market: int, amount: int, ts: int = 0) -> np.ndarray:
        """Move ``amount`` of the quote asset from free into the account's isolated position's margin in
        ``market`` (negative: back out of it to free)."""
        return self.submit(Cmd.ISOLATED_MARGIN, account=account, market=market, qty=amount, ts=ts)

    def configure_outcome(self, account: int, market: int, *, payout: int, resolver: int, dispute_window: int = 0,
                          event: int = 0, ts: int = 0) -> np.ndarray:
        """Admin or the listing venue's operator: an outcome market's payout per lot (its prices lie strictly
        between 0 and it), the account that resolves it, the dispute window (ns of engine clock) and the
        multi-outcome event it belongs to (0: standalone). Until then the market is not tradable."""
        return self.submit(Cmd.OUTCOME_CONFIG, account=account, market=market, price=payout, id=resolver,
                           qty=dispute_window, aux=event, ts=ts)

    def convert(self, account: int, market: int, qty: int, ts: int = 0) -> np.ndarray:
        """Turn ``qty`` (base units) of the account's NO shares in ``market`` into as many YES shares in each
        other market of its event."""
        return self.submit(Cmd.CONVERT, account=account, market=market, qty=qty, ts=ts)

    def resolve(self, account: int, market: int, yes: bool, ts: int = 0) -> np.ndarray:
        """The resolver proposes (the admin overturns in the dispute window) the outcome: YES (1) or NO (0)
        won; a market of an event resolves the whole event by being named the winner (YES)."""
        return self.submit(Cmd.RESOLVE, account=account, market=market, qty=int(bool(yes)), ts=ts)

    def set_venue_risk(self, account: int, venue: int, market: int, *, band_bps: int = 0, oi_cap: int = 0,
                       breaker_move_bps: int = 0, breaker_window_ms: int = 0, breaker_cooldown_ms: int = 0,
                       ts: int = 0) -> np.ndarray:
        """VenueMarketRisk, from the venue's operator or the admin: the venue's price band in bps around the
        last trade (0: the market's own), its open-interest cap per side in base units (perpetual markets,
        0: none) and its circuit breaker (move bps within window ms, then cool-down ms; 0: none), which the
        matcher stores and echoes and the risk worker applies."""
        return self.submit(Cmd.VENUE_MARKET_RISK, account=account, venue=venue, market=market, price=band_bps,
                           qty=oi_cap, id=breaker_move_bps,
                           aux=pack_breaker_windows(breaker_window_ms, breaker_cooldown_ms), ts=ts)

    def venue_halt(self, account: int, venue: int, market: int, ts: int = 0) -> np.ndarray:
        """Stop the venue's new orders in the market (its cancels, size reductions and reduce-only orders go
        on; other venues' orders in the same book are untouched)."""
        return self.submit(Cmd.VENUE_MARKET_HALT, account=account, venue=venue, market=market, ts=ts)

    def venue_resume(self, account: int, venue: int, market: int, ts: int = 0) -> np.ndarray:
        return self.submit(Cmd.VENUE_MARKET_RESUME, account=account, venue=venue, market=market, ts=ts)

    def oracle_price(self, account: int, venue: int, market: int, price: int, *, feed_id: int, source_ts: int,
                     sources: int = 1, ts: int = 0) -> np.ndarray:
        """A feed's OraclePrice: ``price`` in ticks' units (a multiple of the tick size), the
        source time ``source_ts`` (ns, the feed's clock) and how many sources it is the median of."""
        return self.submit(Cmd.ORACLE_PRICE, account=account, venue=venue, market=market, price=price, qty=sources,
                           id=feed_id, aux=source_ts, ts=ts)


def _as_i64(mask: int) -> int:
    """A 64-bit mask (0..2^64-1, or -1 for all bits) as the int64 a command field holds."""
    if not -(1 << 63) <= mask < 1 << 64:
        raise ValueError(f"bit mask out of 64-bit range: {mask}")
    return mask - (1 << 64) if mask >= 1 << 63 else mask
