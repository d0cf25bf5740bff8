"""Venues in the matcher (issue 7): staking and the life cycle, access, offers, shared books with
per-venue eligibility, slashing, snapshots.  Every test runs against the Cython engine and the
reference model (``engine_cls``); events are checked field by field where they are specified."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from engine import records
from engine.codes import ResultCode as RC
from engine.records import Cmd, Ev, Side, Tif, Transfer, VenueAccess, VenueStatus
from engine.state import canonical_state

USD, BTC, OKB = 1, 2, 4
MKT = 1
ADMIN, PROTOCOL = 99, 800
OP1, OP2 = 10, 11  # operators of venue 1 (permissionless) and 2 (allow-list)
INS1, INS2 = 901, 902  # their insurance fund accounts
T1, T2, T3 = 21, 22, 23  # traders
MIN_STAKE = 1_000
WEEK = 7 * 86_400 * 10**9
FUND = 10**9
BUY, SELL = int(Side.BUY), int(Side.SELL)


def codes(events) -> list[int]:
    return [int(e["code"]) for e in events if e["kind"] == Ev.REJECTED]


def kinds(events) -> list[str]:
    return [Ev(int(e["kind"])).name for e in events]


def ok(events) -> np.ndarray:
    assert not codes(events), f"rejected: {[RC(c).name for c in codes(events)]}"
    return events


def state(e) -> tuple:
    """Everything but the counters (a rejected command still advances cmd_seq and event_seq)."""
    return canonical_state(e)[:-1] + (e.last_order_id, e.open_orders)


def conserved(e, asset: int) -> bool:
    """Every unit of the asset is in some account's balance, a venue's stake or the fee pool."""
    in_accounts = sum(sum(e.balance(a, asset)) for a in e.accounts())
    staked = sum(v.stake + v.unbonding for v in e.venues()) if e.venue_params().stake_asset == asset else 0
    deposits = sum(int(ev["qty"]) for ev in e.history if ev["kind"] == Ev.BALANCE and ev["market"] == asset)
    collected = sum(e.venue_fees(v.venue_id).get(asset, 0) for v in e.venues())
    return in_accounts + staked + e.fees(asset) + collected == deposits


class Recorder:
    """Wraps an engine and keeps every event it emitted (for conservation checks)."""

    def __init__(self, engine):
        self.engine = engine
        self.history = []
        original = engine.process

        def process(commands):
            events = original(commands)
            self.history.extend(events)
            return events

        engine.process = process
        engine.history = self.history


def make(engine_cls, *, params: bool = True):
    e = engine_cls(max_orders=1000, max_accounts=100, max_markets=16, max_assets=8, max_venues=16)
    Recorder(e)
    ok(e.add_asset(USD, "USD", 6))
    ok(e.add_asset(BTC, "BTC", 8))
    ok(e.add_asset(OKB, "OKB", 8))
    ok(e.add_market(MKT, BTC, USD, tick_size=1, lot_size=1, min_size=1))
    for account in (OP1, OP2, T1, T2, T3):
        for asset in (USD, BTC, OKB):
            ok(e.deposit(account, asset, FUND))
    if params:
        ok(e.set_venue_params(ADMIN, stake_asset=OKB, min_stake=MIN_STAKE, unbond_period=WEEK,
                              protocol_account=PROTOCOL, admin=ADMIN))
    return e


def two_venues(engine_cls):
    """Venue 1 permissionless, venue 2 allow-list (T2 allowed), both offering MKT."""
    e = make(engine_cls)
    ok(e.launch_venue(OP1, 1, 5_000, insurance_account=INS1))
    ok(e.launch_venue(OP2, 2, 3_000, insurance_account=INS2, access=VenueAccess.ALLOW_LIST))
    ok(e.offer_market(OP1, 1, MKT))
    ok(e.offer_market(OP2, 2, MKT))
    ok(e.allow(OP2, 2, T2))
    return e


# ------------------------------------------------------------------ headers


@pytest.mark.parametrize("prefix, enum_cls", [("XOS_VSTATUS_", VenueStatus), ("XOS_ACCESS_", VenueAccess),
                                              ("XOS_XFER_", Transfer)])
def test_venue_enums_match_the_header(prefix, enum_cls):
    text = re.sub(r"/\*.*?\*/", "", (Path(records.__file__).parent / "includes" / "records.h").read_text(), flags=re.S)
    header = {n: int(v) for n, v in re.findall(r"\b%s(\w+)\s*=\s*(\d+)" % prefix, text)}
    assert header == {m.name: int(m) for m in enum_cls}


# ------------------------------------------------------------------ staking and the life cycle


def test_venue_zero_is_the_protocols_permissionless_venue(engine_cls):
    e = make(engine_cls, params=False)
    (v0,) = e.venues()
    assert (v0.venue_id, v0.status, v0.access, v0.pool, v0.stake) == (0, VenueStatus.LIVE, 0, 0, 0)
    assert e.venue_markets(0) == [MKT]  # markets listed by the admin (venue 0) are offered there
    ok(e.place(T1, MKT, BUY, 100, 5, 1))  # existing clients keep working with venue 0


def test_launch_locks_the_stake_from_the_operators_free_balance(engine_cls):
    e = make(engine_cls)
    ev = ok(e.launch_venue(OP1, 1, 5_000, insurance_account=INS1))
    assert kinds(ev) == ["VENUE", "VENUE_TRANSFER"]
    echo, lock = ev
    assert (echo["flags"], echo["venue"], echo["account"], echo["qty"], echo["client_id"]) == (
        Cmd.LAUNCH_VENUE, 1, OP1, 5_000, INS1)
    assert (lock["reason"], lock["venue"], lock["market"], lock["account"], lock["qty"], lock["remaining"],
            lock["taker_fee"], lock["price"]) == (Transfer.STAKE_LOCK, 1, OKB, OP1, -5_000, FUND - 5_000, 0, 5_000)
    assert e.balance(OP1, OKB) == (FUND - 5_000, 0)
    v = e.venue(1)
    assert (v.operator, v.insurance_account, v.status, v.access, v.pool, v.stake) == (
        OP1, INS1, VenueStatus.LIVE, VenueAccess.PERMISSIONLESS, 0, 5_000)
    assert INS1 in e.accounts() and PROTOCOL in e.accounts()
    assert conserved(e, OKB)


def test_add_stake_and_unbond_release_on_the_engine_clock(engine_cls):
    e = make(engine_cls)
    ok(e.launch_venue(OP1, 1, 5_000, insurance_account=INS1, ts=1_000))
    ev = ok(e.add_stake(OP1, 1, 2_000, ts=2_000))
    assert kinds(ev) == ["VENUE", "VENUE_TRANSFER"] and ev[1]["price"] == 7_000
    ev = ok(e.unbond(OP1, 1, 6_000, ts=3_000))
    assert kinds(ev) == ["VENUE"]
    v = e.venue(1)
    assert (v.stake, v.unbonding, v.unbond_at) == (1_000, 6_000, 3_000 + WEEK)
    assert codes(e.unbond(OP1, 1, 1, ts=4_000)) == [RC.UNBOND_PENDING]
    # still locked one nanosecond before the period ends, whatever commands arrive
    ok(e.deposit(T1, USD, 1, ts=3_000 + WEEK - 1))
    assert e.balance(OP1, OKB) == (FUND - 7_000, 0)
    # the first command at or after unbond_at releases it, before its own events
    ev = ok(e.deposit(T1, USD, 1, ts=3_000 + WEEK))
    assert kinds(ev) == ["VENUE_TRANSFER", "BALANCE"]
    assert (ev[0]["reason"], ev[0]["account"], ev[0]["qty"], ev[0]["price"]) == (Transfer.STAKE_RELEASE, OP1, 6_000, 1_000)
    assert e.balance(OP1, OKB) == (FUND - 1_000, 0)
    v = e.venue(1)
    assert (v.stake, v.unbonding, v.unbond_at) == (1_000, 0, 0)
    assert conserved(e, OKB)


def test_full_unbond_only_once_retired(engine_cls):
    e = make(engine_cls)
    ok(e.launch_venue(OP1, 1, 1_500, insurance_account=INS1))
    ok(e.offer_market(OP1, 1, MKT))
    assert codes(e.unbond(OP1, 1, 501)) == [RC.UNBOND_BELOW_MINIMUM]
    ok(e.unbond(OP1, 1, 500))  # the part above the minimum may go at any time
    ok(e.place(T1, MKT, BUY, 100, 5, 1, venue=1))
    assert codes(e.set_venue_status(OP1, 1, VenueStatus.RETIRED)) == [RC.VENUE_HAS_OPEN_ORDERS]
    ok(e.cancel(T1, client_id=1))
    ok(e.set_venue_status(OP1, 1, VenueStatus.RETIRED, ts=WEEK))  # releases the first unbond too
    assert e.venue(1).unbonding == 0
    ok(e.unbond(OP1, 1, 1_000, ts=WEEK + 1))
    ok(e.deposit(T1, USD, 1, ts=2 * WEEK + 1))
    assert e.venue(1).stake == 0 and e.balance(OP1, OKB) == (FUND, 0)
    assert codes(e.offer_market(OP1, 1, MKT)) == [RC.VENUE_RETIRED]
    assert codes(e.set_venue_status(OP1, 1, VenueStatus.LIVE)) == [RC.VENUE_RETIRED]
    assert codes(e.place(T1, MKT, BUY, 100, 5, 2, venue=1)) == [RC.VENUE_NOT_LIVE]
    assert conserved(e, OKB)


def test_slash_pays_the_insurance_fund_first_then_the_protocol(engine_cls):
    e = make(engine_cls)
    ok(e.launch_venue(OP1, 1, 5_000, insurance_account=INS1))
    ok(e.unbond(OP1, 1, 3_000))  # unbonding stake is still slashable
    ev = ok(e.slash(ADMIN, 1, 4_500, shortfall=700, reason=42))
    assert kinds(ev) == ["VENUE", "VENUE_TRANSFER", "VENUE_TRANSFER"]
    assert (ev[0]["flags"], ev[0]["qty"], ev[0]["price"], ev[0]["remaining"]) == (Cmd.SLASH, 4_500, 700, 42)
    assert [(int(x["reason"]), int(x["account"]), int(x["qty"]), int(x["price"])) for x in ev[1:]] == [
        (Transfer.SLASH_INSURANCE, INS1, 700, 500), (Transfer.SLASH_PROTOCOL, PROTOCOL, 3_800, 500)]
    v = e.venue(1)
    assert (v.stake, v.unbonding) == (0, 500)  # bonded stake goes first
    assert e.balance(INS1, OKB) == (700, 0) and e.balance(PROTOCOL, OKB) == (3_800, 0)
    ev = ok(e.slash(ADMIN, 1, 500, shortfall=10_000))  # all of it to the insurance fund
    assert [int(x["reason"]) for x in ev[1:]] == [Transfer.SLASH_INSURANCE]
    assert e.venue(1).unbond_at == 0
    assert conserved(e, OKB)


def test_only_the_operator_or_the_admin_changes_a_venue(engine_cls):
    e = two_venues(engine_cls)
    before = state(e)
    for ev in (e.set_venue_status(OP2, 1, VenueStatus.HALTED), e.allow(OP1, 2, T1), e.add_stake(T1, 1, 1_000),
               e.unbond(OP2, 1, 100), e.offer_market(OP1, 2, MKT), e.set_venue_policy(T3, 1, 0, -1)):
        assert codes(ev) == [RC.NOT_VENUE_OPERATOR]
    assert state(e) == before
    ok(e.set_venue_status(ADMIN, 1, VenueStatus.HALTED))  # the admin may
    ok(e.set_venue_status(OP1, 1, VenueStatus.LIVE))


# ------------------------------------------------------------------ bad input: each its own code, nothing changes


BAD = [
    ("stake below the minimum", lambda e: e.launch_venue(T1, 5, MIN_STAKE - 1, insurance_account=905), RC.STAKE_BELOW_MINIMUM),
    ("stake above the free balance", lambda e: e.launch_venue(T1, 5, FUND + 1, insurance_account=905),
     RC.INSUFFICIENT_STAKE_BALANCE),
    ("order on an unknown venue", lambda e: e.place(T1, MKT, BUY, 100, 5, 1, venue=7), RC.UNKNOWN_VENUE),
    ("operator command for an unknown venue", lambda e: e.add_stake(OP1, 7, 100), RC.UNKNOWN_VENUE),
    ("operator changing another's venue", lambda e: e.withdraw_market(OP2, 1, MKT), RC.NOT_VENUE_OPERATOR),
    ("market not offered", lambda e: e.place(T1, 2, BUY, 100, 5, 1, venue=1), RC.MARKET_NOT_OFFERED),
    ("account not allowed", lambda e: e.place(T1, MKT, BUY, 100, 5, 1, venue=2), RC.ACCOUNT_NOT_ALLOWED),
    ("retiring with open orders", lambda e: e.set_venue_status(OP1, 1, VenueStatus.RETIRED), RC.VENUE_HAS_OPEN_ORDERS),
    ("unbonding twice", lambda e: e.unbond(OP2, 2, 100), RC.UNBOND_PENDING),
    ("venue id taken", lambda e: e.launch_venue(T1, 1, MIN_STAKE, insurance_account=905), RC.VENUE_EXISTS),
    ("venue id out of range", lambda e: e.launch_venue(T1, 16, MIN_STAKE, insurance_account=905), RC.INVALID_VENUE_ID),
    ("venue id 0", lambda e: e.launch_venue(T1, 0, MIN_STAKE, insurance_account=905), RC.INVALID_VENUE_ID),
    ("insurance account is another venue's", lambda e: e.launch_venue(T1, 5, MIN_STAKE, insurance_account=INS1),
     RC.INVALID_INSURANCE_ACCOUNT),
    ("insurance account is the operator", lambda e: e.launch_venue(T1, 5, MIN_STAKE, insurance_account=T1),
     RC.INVALID_INSURANCE_ACCOUNT),
    ("bad access mode", lambda e: e.launch_venue(T1, 5, MIN_STAKE, insurance_account=905, access=2),
     RC.INVALID_VENUE_POLICY),
    ("launch from an unknown account", lambda e: e.launch_venue(4242, 5, MIN_STAKE, insurance_account=905),
     RC.UNKNOWN_ACCOUNT),
    ("params from a non-admin", lambda e: e.set_venue_params(T1, stake_asset=OKB, min_stake=1, unbond_period=0,
                                                             protocol_account=PROTOCOL, admin=T1), RC.NOT_ADMIN),
    ("params with no minimum", lambda e: e.set_venue_params(ADMIN, stake_asset=OKB, min_stake=0, unbond_period=0,
                                                            protocol_account=PROTOCOL, admin=ADMIN),
     RC.INVALID_STAKING_PARAMS),
    ("stake asset change while staked", lambda e: e.set_venue_params(ADMIN, stake_asset=USD, min_stake=1,
                                                                     unbond_period=0, protocol_account=PROTOCOL,
                                                                     admin=ADMIN), RC.STAKE_ASSET_LOCKED),
    ("region from a non-admin", lambda e: e.set_region(OP1, T1, 3), RC.NOT_ADMIN),
    ("region out of range", lambda e: e.set_region(ADMIN, T1, 64), RC.INVALID_REGION),
    ("region of an unknown account", lambda e: e.set_region(ADMIN, 4242, 3), RC.UNKNOWN_ACCOUNT),
    ("region-blocked account", lambda e: e.place(T3, MKT, BUY, 100, 5, 1, venue=1), RC.REGION_BLOCKED),
    ("order on a halted venue", lambda e: e.place(T1, MKT, BUY, 100, 5, 1, venue=3), RC.VENUE_NOT_LIVE),
    ("amend on a halted venue", lambda e: e.amend(T1, client_id=77, qty=1), RC.VENUE_NOT_LIVE),
    ("unbond below the minimum", lambda e: e.unbond(OP1, 1, 4_001), RC.UNBOND_BELOW_MINIMUM),
    ("unbond above the stake", lambda e: e.unbond(OP1, 1, 5_001), RC.UNBOND_EXCEEDS_STAKE),
    ("unbond nothing", lambda e: e.unbond(OP1, 1, 0), RC.AMOUNT_NOT_POSITIVE),
    ("bad status", lambda e: e.set_venue_status(OP1, 1, 5), RC.INVALID_VENUE_STATUS),
    ("same status", lambda e: e.set_venue_status(OP1, 1, VenueStatus.LIVE), RC.VENUE_STATUS_UNCHANGED),
    ("pool outside the accepted pools", lambda e: e.set_venue_policy(OP1, 1, 5, 1), RC.INVALID_VENUE_POLICY),
    ("pool out of range", lambda e: e.set_venue_policy(OP1, 1, 64, -1), RC.INVALID_VENUE_POLICY),
    ("offer an offered market", lambda e: e.offer_market(OP1, 1, MKT), RC.VENUE_OFFER_UNCHANGED),
    ("offer an unknown market", lambda e: e.offer_market(OP1, 1, 9), RC.UNKNOWN_MARKET),
    ("allow an allowed account", lambda e: e.allow(OP2, 2, T2), RC.ACCESS_UNCHANGED),
    ("deny an account not allowed", lambda e: e.deny(OP2, 2, T1), RC.ACCESS_UNCHANGED),
    ("slash by a non-admin", lambda e: e.slash(OP1, 1, 100), RC.NOT_ADMIN),
    ("slash above the stake", lambda e: e.slash(ADMIN, 1, 5_001), RC.SLASH_EXCEEDS_STAKE),
    ("slash the protocol venue", lambda e: e.slash(ADMIN, 0, 1), RC.PROTOCOL_VENUE),
    ("retire the protocol venue", lambda e: e.set_venue_status(ADMIN, 0, VenueStatus.RETIRED), RC.PROTOCOL_VENUE),
    ("stake on the protocol venue", lambda e: e.add_stake(ADMIN, 0, 1), RC.PROTOCOL_VENUE),
    ("change a retired venue", lambda e: e.allow(T1, 4, T2), RC.VENUE_RETIRED),
    ("maker fee above taker fee", lambda e: e.set_venue_fees(OP1, 1, maker_bps=6, taker_bps=5), RC.INVALID_VENUE_FEES),
    ("rebate larger than the taker fee", lambda e: e.set_venue_fees(OP1, 1, maker_bps=-6, taker_bps=5),
     RC.INVALID_VENUE_FEES),
    ("fee split above 100%", lambda e: e.set_venue_fees(OP1, 1, maker_bps=0, taker_bps=5, operator_bps=6000,
                                                         insurance_bps=4001), RC.INVALID_VENUE_FEES),
    ("fee tier with a gap", lambda e: e.set_fee_tier(OP1, 1, 2, min_volume=100, asset=USD, epoch_ns=10),
     RC.INVALID_FEE_TIER),
    ("fee tier without an epoch", lambda e: e.set_fee_tier(OP1, 1, 1, min_volume=100, asset=USD), RC.INVALID_FEE_TIER),
    ("sweep with nothing collected", lambda e: e.sweep_fees(OP1, 1, USD), RC.NOTHING_TO_SWEEP),
    ("sweep an unknown asset", lambda e: e.sweep_fees(OP1, 1, 9), RC.UNKNOWN_ASSET),
    ("market listing by a halted venue", lambda e: e.add_market(5, BTC, OKB, tick_size=1, lot_size=1, min_size=1,
                                                                 venue=3), RC.VENUE_NOT_LIVE),
]


def bad_world(engine_cls):
    e = two_venues(engine_cls)
    ok(e.add_market(2, OKB, USD, tick_size=1, lot_size=1, min_size=1))  # venue 0 only
    ok(e.place(T1, MKT, BUY, 90, 5, 1, venue=1))  # venue 1 has an open order
    ok(e.unbond(OP2, 2, 1_000))  # venue 2 has a pending unbond
    ok(e.set_region(ADMIN, T3, 5))
    ok(e.set_venue_access(OP1, 1, VenueAccess.PERMISSIONLESS, blocked_regions=1 << 5))
    ok(e.launch_venue(T1, 3, MIN_STAKE, insurance_account=903))  # venue 3: halted, with an order of T1
    ok(e.offer_market(T1, 3, MKT))
    ok(e.place(T1, MKT, BUY, 80, 5, 77, venue=3))
    ok(e.set_venue_status(T1, 3, VenueStatus.HALTED))
    ok(e.launch_venue(T1, 4, MIN_STAKE, insurance_account=904))  # venue 4: retired
    ok(e.set_venue_status(T1, 4, VenueStatus.RETIRED))
    return e


@pytest.mark.parametrize("what, command, code", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_rejected_with_its_code_and_changes_nothing(engine_cls, what, command, code):
    e = bad_world(engine_cls)
    before = state(e)
    ev = command(e)
    assert kinds(ev) == ["REJECTED"] and codes(ev) == [code], what
    assert state(e) == before


def test_launch_before_staking_is_configured(engine_cls):
    e = make(engine_cls, params=False)
    assert codes(e.launch_venue(OP1, 1, 5_000, insurance_account=INS1)) == [RC.STAKING_NOT_CONFIGURED]
    assert codes(e.slash(ADMIN, 1, 1)) == [RC.NOT_ADMIN]


def test_every_venue_code_is_distinct_in_the_bad_input_list():
    issue_list = {RC.STAKE_BELOW_MINIMUM, RC.INSUFFICIENT_STAKE_BALANCE, RC.UNKNOWN_VENUE, RC.NOT_VENUE_OPERATOR,
                  RC.MARKET_NOT_OFFERED, RC.ACCOUNT_NOT_ALLOWED, RC.VENUE_HAS_OPEN_ORDERS, RC.UNBOND_PENDING}
    assert len(issue_list) == 8 and issue_list <= {code for _, _, code in BAD}
    from test_oracles import BAD_CONFIGS, BAD_PRICES  # the oracle codes have their own lists
    from test_perp import BAD_RISK  # and MarketRisk's
    from test_outcome import REJECTS  # and the outcome markets'
    from test_venue_market_risk import BAD_VENUE_RISK  # and the venues' own risk settings and halts
    from test_funding import BAD_FUNDING  # and funding's
    from test_margin_tiers import BAD_TIERS  # and margin tiers'
    from test_isolated_margin import BAD_MARGIN, BAD_MODE  # and isolated margin's
    from test_collateral import CA_BAD, VC_BAD  # and the collateral commands'

    covered = {code for _, _, code in BAD + BAD_CONFIGS + BAD_PRICES + BAD_RISK + BAD_VENUE_RISK + BAD_FUNDING
               + BAD_TIERS + BAD_MODE + BAD_MARGIN + CA_BAD + VC_BAD}
    covered |= {code for code, _, _ in REJECTS} | {RC.RESOLUTION_PENDING}  # the last: test_outcome's scenario
    covered.add(RC.NO_VALUATION_ASSET)  # test_collateral's own scenario
    assert {c for c in RC if 400 <= c < 500} - covered == {RC.STAKING_NOT_CONFIGURED}  # below


# ------------------------------------------------------------------ access and offers


def test_allow_list_and_deny(engine_cls):
    e = two_venues(engine_cls)
    ok(e.place(T2, MKT, BUY, 100, 5, 1, venue=2))
    assert codes(e.place(T1, MKT, BUY, 100, 5, 1, venue=2)) == [RC.ACCOUNT_NOT_ALLOWED]
    ok(e.allow(OP2, 2, T1))
    assert e.allowed(2) == [T1, T2]
    ok(e.place(T1, MKT, BUY, 100, 5, 1, venue=2))
    ok(e.deny(OP2, 2, T1))
    assert codes(e.place(T1, MKT, BUY, 100, 5, 2, venue=2)) == [RC.ACCOUNT_NOT_ALLOWED]
    assert e.order(2) is not None  # a denied account's resting order stays until cancelled
    ok(e.cancel(T1, order_id=2))


def test_region_tags_and_blocked_regions(engine_cls):
    e = two_venues(engine_cls)
    ok(e.set_region(ADMIN, T1, 7))
    assert e.region(T1) == 7
    ok(e.set_venue_access(OP1, 1, VenueAccess.PERMISSIONLESS, blocked_regions=1 << 7))
    assert codes(e.place(T1, MKT, BUY, 100, 5, 1, venue=1)) == [RC.REGION_BLOCKED]
    ok(e.place(T1, MKT, BUY, 100, 5, 1, venue=0))  # other venues are not affected
    ok(e.place(T3, MKT, BUY, 100, 5, 1, venue=1))  # untagged accounts (region 0) are not blocked


def test_a_venue_lists_its_own_market(engine_cls):
    e = two_venues(engine_cls)
    ok(e.add_market(5, BTC, OKB, tick_size=1, lot_size=1, min_size=1, venue=1))
    assert e.venue_markets(1) == [MKT, 5] and e.venue_markets(0) == [MKT]
    assert codes(e.place(T1, 5, BUY, 10, 1, 1, venue=0)) == [RC.MARKET_NOT_OFFERED]
    ok(e.place(T1, 5, BUY, 10, 1, 1, venue=1))
    ok(e.withdraw_market(OP1, 1, 5))
    assert codes(e.place(T1, 5, BUY, 10, 1, 2, venue=1)) == [RC.MARKET_NOT_OFFERED]


# ------------------------------------------------------------------ shared books and eligibility


def restricted(engine_cls):
    """Venue 2 trades only inside the allow-list pool (1); venue 1 and venue 0 share pool 0."""
    e = two_venues(engine_cls)
    ok(e.set_venue_policy(OP2, 2, 1, 1 << 1))
    return e


def test_ineligible_resting_orders_are_passed_over_and_keep_their_place(engine_cls):
    e = restricted(engine_cls)
    ok(e.place(T2, MKT, SELL, 100, 5, 1, venue=2))  # best ask, but venue 2 trades only with pool 1
    ok(e.place(T1, MKT, SELL, 100, 4, 1, venue=1))  # same price, later
    ok(e.place(T3, MKT, SELL, 101, 6, 1, venue=0))
    ev = ok(e.place(T3, MKT, BUY, 101, 7, 2, venue=0, tif=Tif.IOC))
    fills = [(int(x["maker_order"]), int(x["qty"]), int(x["price"]), int(x["client_id"])) for x in ev if x["kind"] == Ev.FILL]
    assert fills == [(2, 4, 100, 1)]  # T3's own order (3) at 101 is STP: the taker is cancelled
    assert [o.order_id for o in e.l3(MKT)] == [1, 3]  # order 1 kept its place, untouched
    assert e.order(1).remaining == 5


def test_price_time_priority_among_eligible_orders(engine_cls):
    e = restricted(engine_cls)
    ok(e.place(T1, MKT, SELL, 100, 2, 1, venue=1))  # 1
    ok(e.place(T2, MKT, SELL, 100, 2, 1, venue=2))  # 2 (ineligible for pool 0)
    ok(e.place(T3, MKT, SELL, 100, 2, 1, venue=0))  # 3
    ok(e.place(T1, MKT, SELL, 99, 2, 2, venue=1))  # 4: better price
    ok(e.place(T2, MKT, SELL, 98, 2, 2, venue=2))  # 5: best price, ineligible
    ev = ok(e.place(T3, MKT, BUY, 100, 5, 2, venue=0, stp=1))  # CANCEL_MAKER: its own order 3 is cancelled
    trades = [(int(x["maker_order"]), int(x["qty"])) for x in ev if x["kind"] == Ev.FILL]
    assert trades == [(4, 2), (1, 2)]
    cancelled = [int(x["order_id"]) for x in ev if x["kind"] == Ev.CANCELLED]
    assert cancelled == [3]
    assert [o.order_id for o in e.l3(MKT)][:2] == [6, 5]  # the taker's rest (1) bids at 100; asks 5, 2 remain
    assert e.best_bid(MKT) == 100 and e.best_ask(MKT) == 98  # crossed across ineligible venues


def test_crossed_book_views(engine_cls):
    e = restricted(engine_cls)
    ok(e.place(T2, MKT, SELL, 98, 3, 1, venue=2))
    ok(e.place(T1, MKT, BUY, 100, 2, 1, venue=1))  # rests: nothing it may trade with crosses
    assert e.l2(MKT) == ([(100, 2, 1)], [(98, 3, 1)])  # global view: crossed
    assert e.l2(MKT, venue=1) == ([(100, 2, 1)], [])  # what venue 1's takers can reach
    assert e.l2(MKT, venue=2) == ([], [(98, 3, 1)])
    assert e.l2(MKT, venue=0) == e.l2(MKT, venue=1)
    with pytest.raises(KeyError):
        e.l2(MKT, venue=9)


def test_fok_and_post_only_see_only_eligible_orders(engine_cls):
    e = restricted(engine_cls)
    ok(e.place(T2, MKT, SELL, 98, 10, 1, venue=2))
    ok(e.place(T1, MKT, SELL, 100, 3, 1, venue=1))
    ev = ok(e.place(T3, MKT, BUY, 100, 4, 1, venue=0, tif=Tif.FOK))
    assert [int(x["reason"]) for x in ev if x["kind"] == Ev.CANCELLED] == [records.CancelReason.FOK]
    ev = ok(e.place(T3, MKT, BUY, 99, 4, 2, venue=0, post_only=True))  # crosses only venue 2's 98
    assert Ev.CANCELLED not in [int(x["kind"]) for x in ev] and e.order(ev[0]["order_id"]) is not None
    ev = ok(e.place(T3, MKT, BUY, 100, 3, 3, venue=0, tif=Tif.FOK))
    assert [int(x["qty"]) for x in ev if x["kind"] == Ev.FILL] == [3]


def test_a_halted_venue_is_its_own_risk_group(engine_cls):
    e = two_venues(engine_cls)
    ok(e.place(T1, MKT, SELL, 100, 5, 1, venue=1))
    ok(e.place(T2, MKT, SELL, 101, 5, 1, venue=2))
    ok(e.place(T3, MKT, BUY, 90, 5, 1, venue=0))
    ok(e.set_venue_status(OP1, 1, VenueStatus.HALTED))
    before = {a: e.balances(a) for a in (T1, OP1, INS1)}
    assert codes(e.place(T1, MKT, SELL, 100, 5, 2, venue=1)) == [RC.VENUE_NOT_LIVE]
    ev = ok(e.place(T3, MKT, BUY, 101, 5, 2, venue=0))  # passes over the halted venue's order
    assert [(int(x["maker_order"]), int(x["client_id"])) for x in ev if x["kind"] == Ev.FILL] == [(2, 2)]
    assert {a: e.balances(a) for a in (T1, OP1, INS1)} == before and e.order(1).remaining == 5
    ok(e.cancel(T1, order_id=1))  # cancels still work on a halted venue
    ok(e.set_venue_status(OP1, 1, VenueStatus.LIVE))
    ok(e.place(T1, MKT, SELL, 100, 5, 2, venue=1))


def test_winding_down_takes_no_new_orders_but_its_resting_orders_trade(engine_cls):
    e = two_venues(engine_cls)
    ok(e.place(T1, MKT, SELL, 100, 5, 1, venue=1))
    ok(e.set_venue_status(OP1, 1, VenueStatus.WINDING_DOWN))
    assert codes(e.place(T1, MKT, SELL, 100, 5, 2, venue=1)) == [RC.VENUE_NOT_LIVE]
    ev = ok(e.place(T3, MKT, BUY, 100, 5, 1, venue=0))
    assert [int(x["maker_order"]) for x in ev if x["kind"] == Ev.FILL] == [1]
    ok(e.set_venue_status(OP1, 1, VenueStatus.RETIRED))


# ------------------------------------------------------------------ fees per venue

FEE_MKT = 3  # BTC/USD with the protocol venue's fees: maker 1, taker 4


def fee_world(engine_cls):
    e = two_venues(engine_cls)
    ok(e.add_market(FEE_MKT, BTC, USD, tick_size=1, lot_size=1, min_size=1, maker_bps=1, taker_bps=4))
    for venue, op in ((1, OP1), (2, OP2)):
        ok(e.offer_market(op, venue, FEE_MKT))
    ok(e.set_venue_fees(OP1, 1, maker_bps=-2, taker_bps=10, operator_bps=5000, insurance_bps=2000))
    ok(e.set_venue_fees(OP2, 2, maker_bps=3, taker_bps=7, operator_bps=10000))
    return e


def test_each_side_pays_its_own_venues_fees(engine_cls):
    e = fee_world(engine_cls)
    ok(e.place(T1, FEE_MKT, SELL, 10_000, 50, 1, venue=1))  # maker on venue 1: rebate 2 bps
    ok(e.place(T2, FEE_MKT, SELL, 10_000, 50, 1, venue=2))  # maker on venue 2: 3 bps
    ev = ok(e.place(T3, FEE_MKT, BUY, 10_000, 100, 1, venue=0))  # taker on venue 0: the market's 4 bps
    fills = [(int(x["client_id"]), int(x["maker_fee"]), int(x["taker_fee"])) for x in ev if x["kind"] == Ev.FILL]
    assert fills == [(1, -100, 200), (2, 150, 200)]  # notional 500,000 each
    # the taker's venue (0: the protocol pool) keeps its fees net of the rebate it funds
    assert e.fees(USD) == 200 - 100 + 200
    assert e.venue_fees(1) == {} and e.venue_fees(2) == {USD: 150}
    assert e.balance(T1, USD) == (FUND + 500_000 + 100, 0)
    assert e.balance(T3, USD) == (FUND - 1_000_000 - 400, 0)
    assert conserved(e, USD) and conserved(e, BTC)


def test_a_rebate_is_capped_by_the_same_fills_taker_fee(engine_cls):
    e = fee_world(engine_cls)
    ok(e.set_venue_fees(OP2, 2, maker_bps=0, taker_bps=0))
    ok(e.set_venue_fees(OP1, 1, maker_bps=-10, taker_bps=10))
    ok(e.place(T1, FEE_MKT, SELL, 10_000, 50, 1, venue=1))  # rebate 10 bps ...
    ev = ok(e.place(T2, FEE_MKT, BUY, 10_000, 50, 1, venue=2))  # ... against a taker paying nothing
    (fill,) = [x for x in ev if x["kind"] == Ev.FILL]
    assert (fill["maker_fee"], fill["taker_fee"]) == (0, 0)
    assert e.venue_fees(1) == {} and e.venue_fees(2) == {}
    assert conserved(e, USD)


def test_an_order_keeps_the_fees_and_hold_it_was_placed_with(engine_cls):
    e = fee_world(engine_cls)
    ev = ok(e.place(T1, FEE_MKT, BUY, 10_000, 10, 1, venue=1))  # hold 10 x (10,000 + 10)
    assert (ev[0]["kind"], ev[0]["maker_fee"], ev[0]["taker_fee"]) == (Ev.ACCEPTED, -2, 10)  # its rates, for consumers
    assert e.balance(T1, USD)[1] == 10 * 10_010
    ev = ok(e.place(T2, FEE_MKT, SELL, 20_000, 1, 7, venue=0))
    assert (ev[0]["maker_fee"], ev[0]["taker_fee"]) == (0, 0)  # venue 0: the market's, from its listing
    ok(e.set_venue_fees(OP1, 1, maker_bps=50, taker_bps=100))
    ev = ok(e.place(T2, FEE_MKT, SELL, 10_000, 10, 1, venue=1))
    (fill,) = [x for x in ev if x["kind"] == Ev.FILL]
    assert (fill["maker_fee"], fill["taker_fee"]) == (-20, 1000)  # maker at -2 (its own), taker at 100
    assert e.balance(T1, USD) == (FUND - 100_000 + 20, 0)


def test_sweep_splits_exactly_with_the_remainder_to_the_protocol(engine_cls):
    e = fee_world(engine_cls)
    ok(e.place(T1, FEE_MKT, SELL, 9_999, 7, 1, venue=0))
    ok(e.place(T2, FEE_MKT, BUY, 9_999, 7, 1, venue=1))  # taker fee ceil(69,993 x 10 / 10,000) = 70
    assert e.venue_fees(1) == {USD: 70}
    before = {a: e.balance(a, USD)[0] for a in (OP1, INS1, PROTOCOL)}
    ev = ok(e.sweep_fees(OP1, 1, USD))
    assert kinds(ev) == ["VENUE", "VENUE_TRANSFER", "VENUE_TRANSFER", "VENUE_TRANSFER"]
    got = [(int(x["reason"]), int(x["account"]), int(x["market"]), int(x["qty"]), int(x["price"])) for x in ev[1:]]
    assert got == [(Transfer.FEE_OPERATOR, OP1, USD, 35, 35), (Transfer.FEE_INSURANCE, INS1, USD, 14, 21),
                   (Transfer.FEE_PROTOCOL, PROTOCOL, USD, 21, 0)]
    assert {a: e.balance(a, USD)[0] - before[a] for a in before} == {OP1: 35, INS1: 14, PROTOCOL: 21}
    assert e.venue_fees(1) == {} and codes(e.sweep_fees(OP1, 1, USD)) == [RC.NOTHING_TO_SWEEP]
    assert conserved(e, USD)


def test_volume_tiers_on_the_engine_clock(engine_cls):
    e = fee_world(engine_cls)
    epoch = 1_000_000
    ok(e.set_fee_tier(OP1, 1, 1, min_volume=1_000_000, maker_bps=-3, taker_bps=5, asset=USD, epoch_ns=epoch))
    ok(e.set_fee_tier(OP1, 1, 2, min_volume=5_000_000, maker_bps=-4, taker_bps=4, asset=USD, epoch_ns=epoch))
    assert e.venue_fee_schedule(1).tiers == ((1_000_000, -3, 5), (5_000_000, -4, 4))
    ok(e.place(T1, FEE_MKT, SELL, 10_000, 200, 1, venue=0, ts=10))
    ok(e.place(T2, FEE_MKT, BUY, 10_000, 200, 1, venue=1, ts=20))  # 2,000,000 of volume in epoch 0
    assert e.volumes() == [(T2, 1, 0, 2_000_000, 0)]
    ok(e.place(T1, FEE_MKT, SELL, 10_000, 10, 2, venue=0, ts=30))
    ev = ok(e.place(T2, FEE_MKT, BUY, 10_000, 10, 2, venue=1, ts=40))  # same epoch: still tier 0
    assert [int(x["taker_fee"]) for x in ev if x["kind"] == Ev.FILL] == [100]
    ok(e.place(T1, FEE_MKT, SELL, 10_000, 10, 3, venue=0, ts=epoch + 5))
    ev = ok(e.place(T2, FEE_MKT, BUY, 10_000, 10, 3, venue=1, ts=epoch + 6))  # epoch 1: tier 1 from epoch 0
    assert [int(x["taker_fee"]) for x in ev if x["kind"] == Ev.FILL] == [50]
    ok(e.place(T1, FEE_MKT, SELL, 10_000, 10, 4, venue=0, ts=3 * epoch))
    ev = ok(e.place(T2, FEE_MKT, BUY, 10_000, 10, 4, venue=1, ts=3 * epoch + 1))  # epoch 3: epoch 2 was empty
    assert [int(x["taker_fee"]) for x in ev if x["kind"] == Ev.FILL] == [100]
    ok(e.set_fee_tier(OP1, 1, 1, min_volume=0))  # removes both tiers
    assert e.venue_fee_schedule(1).tiers == ()
    assert conserved(e, USD)


# ------------------------------------------------------------------ snapshots


def test_venue_state_survives_export_and_import():
    from engine.matcher import Engine

    e = bad_world(Engine)
    ok(e.set_venue_policy(OP2, 2, 1, 1 << 1))
    restored = Engine.from_state(e.export_state(), max_orders=1000, max_accounts=100, max_markets=16, max_assets=8,
                                 max_venues=16)
    assert canonical_state(restored) == canonical_state(e)
    assert [v.open_orders for v in restored.venues()] == [v.open_orders for v in e.venues()]
    for engine in (e, restored):
        Recorder(engine)
    cmds = [lambda x: x.place(T3, MKT, SELL, 80, 5, 9, venue=0), lambda x: x.deposit(T1, USD, 1, ts=2 * WEEK),
            lambda x: x.set_venue_status(T1, 3, VenueStatus.LIVE), lambda x: x.place(T2, MKT, SELL, 80, 5, 9, venue=2)]
    for cmd in cmds:
        assert cmd(e).tobytes() == cmd(restored).tobytes()
    assert canonical_state(restored) == canonical_state(e)


def test_mass_cancel_by_venue_leaves_the_other_venues_orders(engine_cls):
    """A market maker quoting one book through two venues pulls one venue's quotes (CmdFlag.BY_VENUE)."""
    e = two_venues(engine_cls)
    ok(e.place(T2, MKT, BUY, 90, 1, 1, venue=1))
    ok(e.place(T2, MKT, BUY, 91, 1, 2, venue=2))
    ok(e.place(T2, MKT, SELL, 110, 1, 3, venue=1))
    ok(e.place(T2, MKT, SELL, 111, 1, 4, venue=0))
    ev = ok(e.mass_cancel(T2, MKT, venue=1))
    assert [(Ev(int(x["kind"])).name, int(x["order_id"]), int(x["venue"]), int(x["qty"])) for x in ev
            if x["kind"] != Ev.BOOK_LEVEL] == [
        ("ACCEPTED", 0, 1, 2), ("CANCELLED", 1, 1, 1), ("CANCELLED", 3, 1, 1)]
    assert sorted(o.order_id for o in e.l3(MKT)) == [2, 4]
    ev = ok(e.mass_cancel(T2, venue=0))  # every market, venue 0 only
    assert [int(x["order_id"]) for x in ev if x["kind"] == Ev.CANCELLED] == [4]
    assert [o.order_id for o in e.l3(MKT)] == [2]
    before = state(e)
    assert codes(e.mass_cancel(T2, MKT, venue=9)) == [RC.UNKNOWN_VENUE]
    assert state(e) == before
    assert e.balance(T2, USD) == (FUND - 91, 91)
